"""Latency benchmark: every ratio measured side by side in one run, on this machine, single thread.

    python benchmarks/latency.py [--calib DIR] [--work DIR] [--rounds 3] [--min-seconds 3] [--json OUT]

Prints:
1. LiteRT (XNNPACK, 1 thread) p50 of GhostNet 1.0x and MobileNetV3-Large 1.0x at 224, FP32 and INT8,
   random weights exported by ``ghostedge export`` (INT8 calibrated on real photos), and the ratios
   INT8-over-FP32 speed-up and GhostNet-over-MobileNetV3 latency.
2. The same two models on emulated Cortex-A76 (qemu-aarch64): guest instructions per inference
   (when the aarch64 sysroot is built; otherwise it says so).
3. The harness's own overhead: the device runner's timed loop against a bare ``invoke()`` loop on a
   tiny model, interleaved.
4. Achieved multiply-accumulates per second against this CPU's FP32 FMA peak (assumption printed).

Each model is measured in ``--rounds`` interleaved rounds (A B C D, A B C D, ...) so slow drift from
other load on the machine hits every model alike; the table shows every round, their median and their
minimum. Ratios use the minimum: other processes can only add time to a run, never take it away, so
the least-disturbed round is the best estimate of the machine's own speed (the reasoning of Python's
``timeit``); the median-based ratios are printed next to them, with the load average, so a reader can
see how much a busy machine moved them. Artifacts are exported once into ``--work`` and reused.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from side_by_side import add_options, host_rounds, log, parse, qemu_instructions, write_report  # noqa: E402 (this folder)

MODELS = ("ghostnet_100", "mobilenetv3_large_100")
PRECISIONS = ("fp32", "int8")


# --------------------------------------------------------------------------------------------- peak


def cpu_peak(cpuinfo: str | None = None) -> dict[str, Any]:
    """FP32 multiply-accumulate peak from /proc/cpuinfo: FMA lanes x FMA units x clock (x cores).

    Assumptions, printed with the result: 2 FMA pipes per core (true for Zen 2-4 and Intel server cores
    since Skylake-SP); 16 FP32 lanes with AVX-512F, 8 with AVX2+FMA, 4 with SSE (mul + add, no FMA);
    the clock is the "cpu MHz" the kernel reports (a VM reports its nominal clock; turbo is ignored).
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    flags = set()
    mhz: list[float] = []
    model = "unknown CPU"
    cores = 0
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "flags" and not flags:
            flags = set(value.split())
        elif key == "cpu MHz":
            mhz.append(float(value))
        elif key == "model name":
            model = value.strip()
        elif key == "processor":
            cores += 1
    if "avx512f" in flags:
        lanes, isa = 16, "AVX-512F"
    elif "avx2" in flags and "fma" in flags:
        lanes, isa = 8, "AVX2+FMA"
    else:
        lanes, isa = 4, "SSE"
    fma_units = 2
    clock_ghz = (max(mhz) / 1000.0) if mhz else float("nan")
    per_core = lanes * fma_units * clock_ghz * 1e9
    return {"cpu": model, "isa": isa, "fp32_lanes": lanes, "fma_units": fma_units, "clock_ghz": clock_ghz,
            "cores": cores or os.cpu_count(), "peak_macs_per_core": per_core,
            "peak_macs_all_cores": per_core * (cores or os.cpu_count() or 1)}


# ------------------------------------------------------------------------------------------ exports


def export_models(work: Path, calib: Path, num_calib: int, log: Any) -> dict[tuple[str, str], Path]:
    """``ghostedge export`` of each model (random init, TFLite FP32 + INT8), reused when present."""
    from ghostnet_edge.export.pipeline import ExportConfig, export_artifacts

    out: dict[tuple[str, str], Path] = {}
    for model in MODELS:
        folder = work / model
        if not (folder / "manifest.json").is_file():
            log(f"exporting {model} (random init, INT8 calibrated on {num_calib} images of {calib}) ...")
            t0 = time.perf_counter()
            export_artifacts(ExportConfig(model=model, calib=calib, out=folder, formats=("onnx", "tflite"),
                                          num_calib=num_calib, num_verify=8, seed=0, force=True))
            log(f"  done in {time.perf_counter() - t0:.0f} s")
        for precision in PRECISIONS:
            path = folder / f"model_{precision}.tflite"
            if not path.is_file():
                raise SystemExit(f"{path} is missing: delete {folder} and run again")
            out[(model, precision)] = path
    return out


def model_macs(model: str) -> int:
    import torch

    from ghostnet_edge.models import create_model
    from ghostnet_edge.models.profile import profile_macs

    torch.set_num_threads(1)
    net = create_model(model, seed=0).eval()
    return int(profile_macs(net, net.spec.input_size).total_macs)


# ------------------------------------------------------------------------------------------ overhead


def harness_overhead(model_path: Path, runs: int, repeats: int) -> dict[str, float]:
    """Per-run cost of the device runner's timed loop over a bare ``invoke()`` loop (ns).

    The two loops run as adjacent pairs (order alternating), and the overhead is the median of the
    per-pair differences: neighbours in time share the same disturbance from other processes, so the
    difference cancels most of it, and the median ignores the pairs a context switch split.
    """
    import numpy as np

    from ghostnet_edge.runtime import device_runner as dr

    model = dr.load_model(str(model_path), "litert", 1, True)
    model.set_input(model.prepare(np.zeros((1, *model.chw_shape()), np.float32)))
    invoke = model.invoke
    for _ in range(200):
        invoke()

    def bare() -> float:
        t0 = time.perf_counter_ns()
        for _ in range(runs):
            invoke()
        return (time.perf_counter_ns() - t0) / runs

    def harness() -> tuple[float, float]:
        t0 = time.perf_counter_ns()
        timing = dr.timed_loop(invoke, warmup=0, min_runs=runs, min_seconds=0.0, max_seconds=600.0)
        wall = (time.perf_counter_ns() - t0 - timing["first_inference_ms"] * 1e6) / runs
        return wall, statistics.mean(timing["latencies_ns"])

    pairs = []
    for i in range(repeats):
        if i % 2:
            h, rep = harness()
            b = bare()
        else:
            b = bare()
            h, rep = harness()
        pairs.append((b, h, rep))
    b_med = statistics.median(p[0] for p in pairs)
    h_med = statistics.median(p[1] for p in pairs)
    diff = statistics.median(p[1] - p[0] for p in pairs)
    return {"bare_invoke_ns": b_med, "timed_loop_ns": h_med, "reported_latency_ns": statistics.median(p[2] for p in pairs),
            "overhead_ns": diff, "overhead_ratio": statistics.median(p[1] / p[0] for p in pairs),
            "runs": runs, "repeats": repeats}


# ----------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_options(p, "bench-latency")
    args = parse(p, argv)
    from ghostnet_edge.runtime.tiny_models import build_tiny_models
    from ghostnet_edge.utils.versions import machine_description, package_versions
    arts = export_models(args.work, args.calib, args.num_calib, log)
    report: dict[str, Any] = {"machine": machine_description(), "versions": package_versions(),
                              "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])])}

    # 1. host, interleaved rounds ------------------------------------------------------------------
    keys = [(m, pr) for m in MODELS for pr in PRECISIONS]
    host = host_rounds(arts, keys, args, log)
    rounds, cvs, fastest, runtime = host.p50, host.cv, host.fastest, host.runtime
    med = {k: statistics.median(v) for k, v in rounds.items()}
    p50 = {k: min(v) for k, v in rounds.items()}
    load = os.getloadavg()
    macs = {m: model_macs(m) for m in MODELS}
    peak = cpu_peak()

    print(f"\n== host: {peak['cpu']} ({peak['isa']}, {peak['cores']} cores), {runtime}; load average "
          f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")
    print("p50 ms of each round, their median and minimum; GMAC/s from the minimum")
    print(f"{'model':<24}{'prec':<6}" + "".join(f"{'r' + str(i + 1):>9}" for i in range(args.rounds))
          + f"{'median':>9}{'min':>9}{'max CV':>8}{'best run':>9}{'MMACs':>9}{'GMAC/s':>8}{'% core peak':>12}")
    for (m, pr) in keys:
        gmacs = macs[m] / (p50[(m, pr)] / 1e3) / 1e9
        print(f"{m:<24}{pr:<6}" + "".join(f"{v:>9.3f}" for v in rounds[(m, pr)]) + f"{med[(m, pr)]:>9.3f}"
              f"{p50[(m, pr)]:>9.3f}{max(cvs[(m, pr)]):>8.3f}{fastest[(m, pr)]:>9.3f}{macs[m] / 1e6:>9.1f}{gmacs:>8.2f}"
              f"{100 * gmacs * 1e9 / peak['peak_macs_per_core']:>11.1f}%")

    def ratio(table: dict[tuple[str, str], float], a: tuple[str, str], b: tuple[str, str]) -> float:
        return table[a] / table[b]

    speed = {m: ratio(p50, (m, "fp32"), (m, "int8")) for m in MODELS}
    vs = {pr: ratio(p50, ("ghostnet_100", pr), ("mobilenetv3_large_100", pr)) for pr in PRECISIONS}
    print("\nratios (same run, same machine) from the minimum p50; [median p50] and {best single run}:")
    for m in MODELS:
        a, b = (m, "fp32"), (m, "int8")
        print(f"  {m}: INT8 over FP32 speed-up = {p50[a]:.3f} / {p50[b]:.3f} ms = {speed[m]:.2f}x  "
              f"[{ratio(med, a, b):.2f}x] {{{ratio(fastest, a, b):.2f}x}}")
    for pr in PRECISIONS:
        a, b = ("ghostnet_100", pr), ("mobilenetv3_large_100", pr)
        print(f"  GhostNet 1.0x over MobileNetV3-Large 1.0x latency, {pr.upper()}: "
              f"{p50[a]:.3f} / {p50[b]:.3f} ms = {vs[pr]:.2f}x  [{ratio(med, a, b):.2f}x] "
              f"{{{ratio(fastest, a, b):.2f}x}}")
    report["host"] = {"runtime": runtime, "loadavg": load,
                      "p50_ms_rounds": {f"{m}/{pr}": rounds[(m, pr)] for m, pr in keys},
                      "p50_ms_min": {f"{m}/{pr}": p50[(m, pr)] for m, pr in keys},
                      "p50_ms_median": {f"{m}/{pr}": med[(m, pr)] for m, pr in keys},
                      "best_run_ms": {f"{m}/{pr}": fastest[(m, pr)] for m, pr in keys}, "macs": macs,
                      "int8_speedup": speed, "ghostnet_over_mnv3": vs}

    # 2. emulated Cortex-A76 ----------------------------------------------------------------------------
    report["qemu"] = None
    counts = qemu_instructions(arts, keys, args, log)
    if counts is not None:
        for key in keys:
            print(f"  {key[0]:<24}{key[1]:<6}{counts[key] / 1e6:>12.1f} M")
        for pr in PRECISIONS:
            r = counts[("ghostnet_100", pr)] / counts[("mobilenetv3_large_100", pr)]
            print(f"  GhostNet over MobileNetV3-Large, {pr.upper()}: {r:.2f}x instructions")
        for m in MODELS:
            print(f"  {m}: FP32 over INT8 instructions = {counts[(m, 'fp32')] / counts[(m, 'int8')]:.2f}x")
        report["qemu"] = {"cpu": args.qemu_cpu, "instructions": {f"{m}/{pr}": counts[(m, pr)] for m, pr in keys}}

    # 3. harness overhead -------------------------------------------------------------------------------
    tiny = build_tiny_models(args.work / "tiny")["tiny_fp32.tflite"]
    oh = harness_overhead(tiny, runs=2000, repeats=40)
    print("\n== harness overhead on a tiny model (3x32x32 conv + fc, LiteRT): 40 adjacent pairs of 2000-run loops, "
          "medians")
    print(f"  bare interpreter.invoke() loop : {oh['bare_invoke_ns'] / 1e3:8.3f} us per run")
    print(f"  device runner timed loop       : {oh['timed_loop_ns'] / 1e3:8.3f} us per run "
          f"(median paired difference {oh['overhead_ns']:+.0f} ns, ratio {oh['overhead_ratio']:.3f}x)")
    print(f"  latency it reports (mean)      : {oh['reported_latency_ns'] / 1e3:8.3f} us")
    gh = p50[("ghostnet_100", "int8")] * 1e6
    print(f"  overhead relative to GhostNet INT8 p50: {100 * oh['overhead_ns'] / gh:.4f} %")
    report["harness_overhead"] = oh

    # 4. peak --------------------------------------------------------------------------------------------
    print("\n== achieved MACs/s against the FP32 FMA peak of one core")
    print(f"  peak = {peak['fp32_lanes']} FP32 lanes ({peak['isa']}) x {peak['fma_units']} FMA units x "
          f"{peak['clock_ghz']:.2f} GHz = {peak['peak_macs_per_core'] / 1e9:.1f} GMAC/s per core, "
          f"{peak['peak_macs_all_cores'] / 1e9:.1f} GMAC/s for all {peak['cores']} cores")
    print("  assumption: 2 FMA pipes per core; clock = /proc/cpuinfo 'cpu MHz' (no turbo); INT8 rows are "
          "compared with the same FP32 peak, so they only show how far from FP32 peak the INT8 kernels run")
    for (m, pr) in keys:
        achieved = macs[m] / (p50[(m, pr)] / 1e3)
        print(f"  {m:<24}{pr:<6}{achieved / 1e9:8.2f} GMAC/s = {100 * achieved / peak['peak_macs_per_core']:5.1f} %"
              " of one core's FP32 peak")
    report["peak"] = peak
    write_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
