"""INT8 over FP32 on this host for every model of the curve, and the operator that holds each one back.

    python benchmarks/int8_speedup.py [--rounds 3] [--work DIR] [--calib DIR] [--models a,b,...]

For each model of the latency curve (GhostNet 0.5x/1.0x/1.3x, MobileNetV2 1.0x, MobileNetV3-Large
0.75x/1.0x, MobileNetV3-Small 0.75x/1.0x; MobileNetV3 also with ``--tflite-target x86``), random seeded
weights at 224x224 exported by ``ghostedge export`` (INT8 calibrated on real photos):

1. LiteRT (XNNPACK, 1 thread) p50 of the FP32 and INT8 ``.tflite``, all artifacts in interleaved rounds;
   the speed-up uses each artifact's fastest round (other load only ever adds time);
2. LiteRT's per-operator profile of both files, grouped by operator, and the group that costs the INT8
   model the most time beyond the 1.3x target: ``int8_ms - fp32_ms / 1.3`` (its XNNPACK kernel named);
   when INT8 meets the target, the group with the least gain is shown instead.

Prints one markdown table (and ``--json`` the raw numbers). The CPU is printed with it: XNNPACK's int8
kernels differ between AVX2, AVX512-VNNI and ARM, so the ratios belong to the machine that made them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from side_by_side import add_options, host_rounds, log, parse, write_report  # noqa: E402 (this folder)

MODELS = ("ghostnet_050", "ghostnet_100", "ghostnet_130", "mobilenetv2_100", "mobilenetv3_large_075",
          "mobilenetv3_large_100", "mobilenetv3_small_075", "mobilenetv3_small_100")
TARGET = 1.3


def variants(models: list[str]) -> list[tuple[str, str]]:
    """(model, --tflite-target): every model for ARM (the default); MobileNetV3 (hard-swish) for x86 too."""
    out = [(m, "arm") for m in models]
    out += [(m, "x86") for m in models if m.startswith("mobilenetv3")]
    return out


def export(work: Path, calib: Path, num_calib: int, model: str, target: str) -> dict[str, Path]:
    """FP32 and INT8 ``.tflite`` of ``model`` for ``target``, exported once into ``work`` and reused."""
    from ghostnet_edge.export.pipeline import ExportConfig, export_artifacts

    folder = work / f"{model}-{target}"
    if not (folder / "manifest.json").is_file():
        log(f"exporting {model} (--tflite-target {target}) ...")
        t0 = time.perf_counter()
        export_artifacts(ExportConfig(model=model, calib=calib, out=folder, formats=("tflite",), num_calib=num_calib,
                                      num_verify=8, seed=0, force=True, tflite_target=target))
        log(f"  done in {time.perf_counter() - t0:.0f} s")
    return {p: folder / f"model_{p}.tflite" for p in ("fp32", "int8")}


def by_operator(profile: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    if not profile or "by_op" not in profile:
        return {}
    return {g["name"]: {"ms": g["cost"], "kernels": g["kernels"]} for g in profile["by_op"]}


def limiting_operator(fp32: dict[str, dict[str, Any]], int8: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The operator group whose INT8 time exceeds its FP32 time / 1.3 the most (pure function, tested)."""
    rows = []
    for op in set(fp32) | set(int8):
        f = fp32.get(op, {}).get("ms", 0.0)
        q = int8.get(op, {}).get("ms", 0.0)
        rows.append({"op": op, "fp32_ms": f, "int8_ms": q, "excess_ms": q - f / TARGET,
                     "kernels": int8.get(op, {}).get("kernels") or fp32.get(op, {}).get("kernels") or []})
    return max(rows, key=lambda r: r["excess_ms"]) if rows else None


def cpu_line() -> str:
    """This CPU's model name and the instruction sets XNNPACK's int8 kernels depend on."""
    from ghostnet_edge.utils.cpu import cpu_flags

    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")),
                "unknown CPU")
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")
    have = [f for f in wanted if f in cpu_flags()]
    return f"{name} ({', '.join(have) or 'no AVX2/VNNI/dot-product flags'})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_options(p, "int8-speedup")
    p.add_argument("--models", default=",".join(MODELS))
    p.set_defaults(rounds=3, num_calib=32)
    args = parse(p, argv)

    keys: list[tuple[str, str, str]] = []
    arts: dict[tuple[str, str, str], Path] = {}
    for model, target in variants(args.models.split(",")):
        for precision, path in export(args.work, args.calib, args.num_calib, model, target).items():
            keys.append((model, target, precision))
            arts[(model, target, precision)] = path
    rounds = host_rounds(arts, keys, args, log)

    from ghostnet_edge.runtime.bench import BenchConfig, bench

    log("profiling every artifact once ...")
    cfg = BenchConfig(threads=1, warmup=5, min_runs=5, min_seconds=0.0, remeasure=0, profile=True, profile_runs=30)
    profiles = {k: by_operator(res.profile) for k, res in zip(keys, bench([arts[k] for k in keys], "host", cfg),
                                                              strict=True)}

    print(f"\n{cpu_line()}; {rounds.runtime}; {args.rounds} interleaved rounds, fastest round per artifact")
    print("\n| model | --tflite-target | FP32 ms | INT8 ms | INT8 / FP32 speed | 1.3x | operator holding INT8 back: "
          "FP32 -> INT8 ms (kernel) |")
    print("|---|---|---:|---:|---:|---|---|")
    report: dict[str, Any] = {"cpu": cpu_line(), "runtime": rounds.runtime, "rounds": args.rounds, "models": []}
    for model, target in variants(args.models.split(",")):
        f = min(rounds.p50[(model, target, "fp32")])
        q = min(rounds.p50[(model, target, "int8")])
        lim = limiting_operator(profiles[(model, target, "fp32")], profiles[(model, target, "int8")])
        what = (f"{lim['op']}: {lim['fp32_ms']:.2f} -> {lim['int8_ms']:.2f} ({', '.join(lim['kernels'])})"
                if lim else "no profile")
        print(f"| {model} | {target} | {f:.2f} | {q:.2f} | {f / q:.2f}x | {'met' if f / q >= TARGET else 'missed'} "
              f"| {what} |")
        report["models"].append({"model": model, "tflite_target": target, "fp32_ms": f, "int8_ms": q,
                                 "speedup": f / q, "fp32_rounds": rounds.p50[(model, target, "fp32")],
                                 "int8_rounds": rounds.p50[(model, target, "int8")], "limiting": lim,
                                 "profile_fp32": profiles[(model, target, "fp32")],
                                 "profile_int8": profiles[(model, target, "int8")]})
    write_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
