"""Hard-swish forms side by side: the builtin HARD_SWISH op against the depthwise-conv form, FP32 and INT8.

    python benchmarks/hard_swish.py [--model mobilenetv3_large_100] [--calib DIR] [--work DIR] [--rounds 5]
                                    [--skip-qemu] [--json OUT]

The translator writes ONNX HardSwish in one of two forms (``translate._hard_swish``; ``ghostedge export
--tflite-target`` picks one): ``builtin`` (``arm``, the default), the pattern the converter fuses into
one HARD_SWISH op, whose int8 kernel LiteRT's XNNPACK delegate does not take (NEON code on ARM, scalar
reference code on x86); and ``depthwise`` (``x86``), a 1x1 DEPTHWISE_CONV_2D and a MUL that it takes
in INT8 as in FP32. This script exports the
model once per form with ``ghostedge export`` (random weights, INT8 calibrated on real photos, same
seed and images, so the two exports differ only in the form), then prints:

1. the graph: HARD_SWISH / DEPTHWISE_CONV_2D / MUL ops of each INT8 model, where its calibration ranges
   came from (the manifest's ``calibration.ranges.tflite_int8``), and, from LiteRT's profiler, how many
   XNNPACK partitions and TFLite builtin nodes it runs with and the builtin nodes' share of the time;
2. LiteRT (XNNPACK, 1 thread) p50 of the four files in interleaved rounds (A B C D, A B C D, ...; the
   minimum over rounds is the estimate, as in ``latency.py``), and the ratios: INT8-over-FP32 speed-up
   of each form, and each precision's after-over-before latency;
3. emulated Cortex-A76 guest instructions per inference (qemu-aarch64, when the aarch64 sysroot is
   built), with the same ratios.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from side_by_side import add_options, host_rounds, log, parse, qemu_instructions, write_report  # noqa: E402 (this folder)

FORMS = ("builtin", "depthwise")  # before, after
PRECISIONS = ("fp32", "int8")


def export(model: str, form: str, calib: Path, out: Path, num_calib: int, log: Any) -> dict[str, Any]:
    """``ghostedge export`` of ``model`` with the translator's hard-swish ``form``; reused when present."""
    from ghostnet_edge.export.tflite.translate import TARGET_HARD_SWISH

    target = {f: t for t, f in TARGET_HARD_SWISH.items()}[form]
    manifest = out / "manifest.json"
    if not manifest.is_file():
        log(f"exporting {model} with hard-swish form '{form}' ...")
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", "ghostnet_edge", "export", "--model", model, "--calib", str(calib), "--int8",
               "--formats", "onnx,tflite", "--num-calib", str(num_calib), "--num-verify", "8", "--seed", "0",
               "--out", str(out), "--force", "--tflite-target", target]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not manifest.is_file():
            raise SystemExit(f"export failed ({' '.join(cmd)}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        log(f"  done in {time.perf_counter() - t0:.0f} s")
    return json.loads(manifest.read_text())


def ranges_route(manifest: dict[str, Any]) -> str:
    """The manifest's ``calibration.ranges.tflite_int8`` entry (where the INT8 model's ranges came from)."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "tflite_int8" and isinstance(v, str):
                    found.append(v)
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(manifest.get("calibration", manifest))
    return found[0] if found else "unknown"


def delegation(path: Path) -> dict[str, Any]:
    """Partitions, builtin nodes and their share of the time from LiteRT's profiler (XNNPACK, 1 thread)."""
    import numpy as np

    from ghostnet_edge.export.tflite.inspect import io_quantization
    from ghostnet_edge.runtime.op_profile import profile

    info = io_quantization(path)["input"]
    dtype = {"INT8": np.int8, "UINT8": np.uint8}.get(info["dtype"], np.float32)
    prof = profile(str(path), "litert", 1, True, np.zeros(info["shape"], dtype), 10, 3)
    if "error" in prof:
        return {"error": prof["error"]}
    builtin = collections.Counter(op["tag"] for op in prof["ops"] if op["level"] == "tflite")
    builtin_us = sum(op["total_us"] for op in prof["ops"] if op["level"] == "tflite")
    return {"partitions": max([op["partition"] or 0 for op in prof["ops"]] or [0]), "builtin": dict(builtin),
            "builtin_share": builtin_us / max(prof["reference_us"], 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mobilenetv3_large_100")
    add_options(p, "bench-hard-swish")
    args = parse(p, argv)
    from ghostnet_edge.export.tflite.inspect import op_counts
    from ghostnet_edge.utils.versions import machine_description
    arts: dict[tuple[str, str], Path] = {}
    routes: dict[str, str] = {}
    for form in FORMS:
        folder = args.work / args.model / form
        routes[form] = ranges_route(export(args.model, form, args.calib, folder, args.num_calib, log))
        for pr in PRECISIONS:
            arts[(form, pr)] = folder / f"model_{pr}.tflite"
    keys = [(f, pr) for f in FORMS for pr in PRECISIONS]
    report: dict[str, Any] = {"machine": machine_description(), "model": args.model,
                              "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])])}

    # 1. graph and delegation -------------------------------------------------------------------------
    print(f"\n== {args.model}: INT8 graph of each hard-swish form")
    print(f"{'form':<11}{'HARD_SWISH':>11}{'DW_CONV':>9}{'MUL':>5}{'XNNPACK partitions':>20}{'builtin nodes':>15}"
          f"{'builtin time':>14}  INT8 ranges from")
    report["graph"] = {}
    for form in FORMS:
        counts = op_counts(arts[(form, "int8")])
        dlg = delegation(arts[(form, "int8")])
        report["graph"][form] = {"op_counts": counts, "delegation": dlg, "ranges": routes[form]}
        if "error" in dlg:
            part, nodes, share = "?", "?", dlg["error"][:40]
        else:
            part, nodes = str(dlg["partitions"]), str(sum(dlg["builtin"].values()))
            share = f"{100 * dlg['builtin_share']:.0f} %"
        print(f"{form:<11}{counts.get('HARD_SWISH', 0):>11}{counts.get('DEPTHWISE_CONV_2D', 0):>9}"
              f"{counts.get('MUL', 0):>5}{part:>20}{nodes:>15}{share:>14}  {routes[form].split(' (')[0]}")

    # 2. host latency, interleaved -------------------------------------------------------------------
    host = host_rounds(arts, keys, args, log)
    rounds, runtime = host.p50, host.runtime
    best = {k: min(v) for k, v in rounds.items()}
    med = {k: statistics.median(v) for k, v in rounds.items()}
    load = os.getloadavg()
    mach = report["machine"]
    print(f"\n== host: {mach['cpu']} ({mach['cores']} cores); {runtime}; load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")
    print("p50 ms of each round, their median and minimum")
    print(f"{'form':<11}{'prec':<6}" + "".join(f"{'r' + str(i + 1):>9}" for i in range(args.rounds))
          + f"{'median':>9}{'min':>9}")
    for k in keys:
        print(f"{k[0]:<11}{k[1]:<6}" + "".join(f"{v:>9.3f}" for v in rounds[k]) + f"{med[k]:>9.3f}{best[k]:>9.3f}")
    print("\nratios from the minimum p50 [median p50]:")
    for form in FORMS:
        a, b = (form, "fp32"), (form, "int8")
        print(f"  {form:<10} INT8 over FP32 speed-up = {best[a]:.3f} / {best[b]:.3f} ms = {best[a] / best[b]:.2f}x "
              f"[{med[a] / med[b]:.2f}x]")
    for pr in PRECISIONS:
        a, b = ("depthwise", pr), ("builtin", pr)
        print(f"  {pr.upper()} depthwise over builtin latency = {best[a]:.3f} / {best[b]:.3f} ms = "
              f"{best[a] / best[b]:.3f}x [{med[a] / med[b]:.3f}x]")
    report["host"] = {"runtime": runtime, "loadavg": load,
                      "p50_ms_rounds": {f"{f}/{pr}": rounds[(f, pr)] for f, pr in keys},
                      "p50_ms_min": {f"{f}/{pr}": best[(f, pr)] for f, pr in keys},
                      "int8_speedup": {f: best[(f, "fp32")] / best[(f, "int8")] for f in FORMS}}

    # 3. emulated Cortex-A76 -------------------------------------------------------------------------
    report["qemu"] = None
    counts = qemu_instructions(arts, keys, args, log)
    if counts is not None:
        for k in keys:
            print(f"  {k[0]:<11}{k[1]:<6}{counts[k] / 1e6:>12.1f} M")
        for form in FORMS:
            print(f"  {form:<10} FP32 over INT8 instructions = {counts[(form, 'fp32')] / counts[(form, 'int8')]:.2f}x")
        for pr in PRECISIONS:
            print(f"  {pr.upper()} depthwise over builtin instructions = "
                  f"{counts[('depthwise', pr)] / counts[('builtin', pr)]:.3f}x")
        report["qemu"] = {"cpu": args.qemu_cpu, "instructions": {f"{f}/{pr}": counts[(f, pr)] for f, pr in keys}}

    write_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
