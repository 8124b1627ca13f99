"""What the latency benchmarks share: their options, host latency in interleaved rounds, and emulated
Cortex-A76 instruction counts (``latency.py`` and ``hard_swish.py`` import it from this folder).

Each artifact is measured once per round, every round in the same order (A B C D, A B C D, ...), so slow
drift from other load on the machine hits every artifact alike; callers take the minimum over rounds as
the estimate (other processes can only add time to a run) and print the medians beside it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def add_options(p: argparse.ArgumentParser, work: str) -> None:
    """The options every latency benchmark takes; ``work`` names its folder under ~/.cache/ghostedge."""
    p.add_argument("--calib", type=Path, default=ROOT.parent / "shared" / "data" / "imagenet-samples",
                   help="folder of real photos for INT8 calibration (default: ../shared/data/imagenet-samples)")
    p.add_argument("--work", type=Path, default=Path.home() / ".cache" / "ghostedge" / work)
    p.add_argument("--num-calib", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--min-runs", type=int, default=50)
    p.add_argument("--min-seconds", type=float, default=2.0)
    p.add_argument("--qemu-cpu", default="cortex-a76")
    p.add_argument("--skip-qemu", action="store_true")
    p.add_argument("--json", type=Path)


def log(msg: str) -> None:
    """Progress, on stderr (the tables go to stdout)."""
    import sys

    print(msg, file=sys.stderr, flush=True)


def parse(p: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """The options, with the calibration folder checked and TensorFlow's start-up logging quieted."""
    import os

    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if not args.calib.is_dir():
        raise SystemExit(f"calibration folder {args.calib} not found: pass --calib DIR (any folder of photos)")
    return args


@dataclass
class HostRounds:
    p50: dict[Any, list[float]]      # per artifact key: the p50 (ms) of each round
    cv: dict[Any, list[float]]       # ... and each round's coefficient of variation
    fastest: dict[Any, float]        # the fastest single run over all rounds (ms)
    runtime: str                     # "litert 2.3.0, delegate xnnpack, 1 thread"


def host_rounds(arts: dict[Any, Path], keys: Sequence[Any], args: argparse.Namespace,
                log: Callable[[str], None]) -> HostRounds:
    """LiteRT (1 thread, default delegate) p50 of every artifact in ``args.rounds`` interleaved rounds."""
    from ghostnet_edge.runtime.bench import BenchConfig, bench

    cfg = BenchConfig(threads=1, warmup=10, min_runs=args.min_runs, min_seconds=args.min_seconds, remeasure=1)
    out = HostRounds({k: [] for k in keys}, {k: [] for k in keys}, {k: float("inf") for k in keys}, "")
    for rnd in range(args.rounds):
        log(f"host round {rnd + 1}/{args.rounds} ...")
        for key, res in zip(keys, bench([arts[k] for k in keys], "host", cfg), strict=True):
            if res.latency_ms is None:
                raise SystemExit(f"{arts[key]}: {res.status}: {res.error}")
            out.p50[key].append(res.latency_ms["p50"])
            out.cv[key].append(res.latency_ms["cv"])
            out.fastest[key] = min(out.fastest[key], res.latency_ms["min"])
            out.runtime = f"{res.runtime} {res.runtime_version}, delegate {res.delegate}, {res.threads} thread"
    return out


def qemu_instructions(arts: dict[Any, Path], keys: Sequence[Any], args: argparse.Namespace,
                      log: Callable[[str], None]) -> dict[Any, int] | None:
    """Guest instructions per inference on ``args.qemu_cpu``, or None (skipped or no sysroot: printed)."""
    print(f"\n== emulated {args.qemu_cpu} (qemu-aarch64): guest instructions per inference")
    try:
        from ghostnet_edge.runtime.targets import qemu
    except ImportError:
        qemu = None
    if args.skip_qemu:
        print("  skipped (--skip-qemu)")
        return None
    if qemu is None or not qemu.available():
        print("  the aarch64 sysroot is missing (build it with: bash scripts/build_sysroot.sh); not measured")
        return None
    counts = {}
    for key in keys:
        log(f"counting {' '.join(key)} on {args.qemu_cpu} ...")
        counts[key] = qemu.count_instructions(arts[key], cpu=args.qemu_cpu)["per_inference"]
    return counts


def write_report(path: Path | None, report: dict[str, Any]) -> None:
    """The whole report as JSON (``--json``), written atomically."""
    if path is not None:
        from ghostnet_edge.utils.atomic import atomic_write_json

        atomic_write_json(path, report)
        log(f"wrote {path}")
