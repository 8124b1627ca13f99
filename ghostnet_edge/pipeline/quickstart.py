"""The README's main job: the whole pipeline on a built-in default, in a few minutes on 2 cores.

It is :func:`ghostnet_edge.pipeline.curve.run_curve` with a small configuration, not separate code:
train a small GhostNet at two widths (0.35x, 0.5x) on scikit-learn's bundled 8x8 digits (scaled
to 32x32; ships inside an installed package, nothing is downloaded) for a few seeds, export ONNX and
TFLite FP32 + INT8 calibrated on the training split, evaluate every artifact, measure host latency
(and emulated ARM when its sysroot is set up), draw the curve and write ``SUMMARY.md``.

``data``, ``weights`` and ``targets`` swap in real data, real checkpoints and real devices. A re-run
with the same output folder reuses everything already done.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ghostnet_edge.pipeline.curve import CurveConfig, CurveResult, Log, run_curve
from ghostnet_edge.report.points import is_qemu_target
from ghostnet_edge.utils.atomic import atomic_write_text

# Two GhostNet widths make the curve. No MobileNet baseline here, because a few-minute budget cannot
# train one fairly (measured on digits, 4 epochs): MobileNetV3 keeps the TF reference's BatchNorm
# momentum (0.01), so after ~90 steps its running statistics are still far off and it evaluates at
# chance (9.75 %); MobileNetV2 0.5x reached 25-37 %, and its INT8 export then fails the export's
# agreement check. GhostNet 0.5x reached 91 %. The CIFAR-10 sweep trains thousands of steps and
# includes MobileNetV3 Small and Large.
QUICKSTART_MODELS: tuple[str, ...] = ("ghostnet_cifar_035", "ghostnet_cifar_050")
QUICKSTART_SEEDS: tuple[int, ...] = (0, 1, 2)
QUICKSTART_FORMATS: tuple[str, ...] = ("torch", "onnx", "onnx-int8", "tflite", "tflite-int8")
QUICKSTART_EPOCHS = 3
# Emulated ARM counts the TFLite artifacts (the paper's runtime); ONNX Runtime under QEMU doubles the
# emulation time of the job for little extra insight. `ghostedge curve` counts every format.
QUICKSTART_QEMU_FORMATS: tuple[str, ...] = ("tflite", "tflite-int8")
# One training thread: on a busy 2-core machine two OpenMP threads that keep waiting for each other
# trained GhostNet 0.5x at 5 img/s where one thread did 66 img/s (measured here under the same load).
QUICKSTART_TRAIN_THREADS = 1
# ... and instead one run per core at once, each in its own process.
QUICKSTART_TRAIN_JOBS = max(1, min(2, os.cpu_count() or 1))


@dataclass
class QuickstartResult:
    out: Path
    summary: Path
    curve: CurveResult
    seconds: float


def default_targets() -> tuple[str, ...]:
    """``host``, plus ``qemu-aarch64`` when the emulator and its sysroot are installed."""
    from ghostnet_edge.pipeline import stages

    return ("host", "qemu-aarch64") if stages.qemu_available() else ("host",)


def quickstart_config(out: Path | str = "ghostedge-out", data: str = "digits", weights: Path | str | None = None,
                      targets: Sequence[str] | None = None, seeds: Sequence[int] = QUICKSTART_SEEDS,
                      epochs: int = QUICKSTART_EPOCHS, models: Sequence[str] = QUICKSTART_MODELS,
                      formats: Sequence[str] = QUICKSTART_FORMATS, limit_eval: int | None = None,
                      limit_train: int | None = None,
                      train_threads: int | None = QUICKSTART_TRAIN_THREADS) -> CurveConfig:
    """The small sweep the quickstart runs (a pure function so tests can inspect it)."""
    return CurveConfig(
        models=tuple(models), seeds=tuple(seeds), formats=tuple(formats),
        targets=tuple(targets) if targets else default_targets(), data=data, work=Path(out),
        epochs=epochs, limit_train=limit_train, limit_eval=limit_eval, batch_size=64,
        weights=Path(weights) if weights else None, bench_runs=30, bench_seconds=0.5, bench_warmup=5,
        qemu_formats=QUICKSTART_QEMU_FORMATS,
        calib_count=64, train_threads=train_threads, train_jobs=QUICKSTART_TRAIN_JOBS,
        title=f"ghostedge quickstart: accuracy vs latency ({data})",
        command="ghostedge quickstart" + (f" --out {out}" if str(out) != "ghostedge-out" else "")
        + (f" --data {data}" if data != "digits" else "") + (f" --weights {weights}" if weights else "")
        + "".join(f" --target {t}" for t in (targets or ())),
    )


def quickstart(out: Path | str = "ghostedge-out", data: str = "digits", weights: Path | str | None = None,
               targets: Sequence[str] | None = None, seeds: Sequence[int] = QUICKSTART_SEEDS,
               epochs: int = QUICKSTART_EPOCHS, models: Sequence[str] = QUICKSTART_MODELS,
               formats: Sequence[str] = QUICKSTART_FORMATS, log: Log | None = None) -> QuickstartResult:
    """Run the README's main job into ``out`` and write ``out/SUMMARY.md``; re-running reuses finished work."""
    t0 = time.perf_counter()
    cfg = quickstart_config(out=out, data=data, weights=weights, targets=targets, seeds=seeds, epochs=epochs,
                            models=models, formats=formats)
    result = run_curve(cfg, log=log)
    seconds = time.perf_counter() - t0
    summary = Path(cfg.work) / "SUMMARY.md"
    atomic_write_text(summary, summary_markdown(cfg, result, seconds))
    return QuickstartResult(out=Path(cfg.work), summary=summary, curve=result, seconds=seconds)


def summary_markdown(cfg: CurveConfig, result: CurveResult, seconds: float) -> str:
    """Where everything is and the headline numbers, for a person opening the output folder."""
    lines = ["# ghostedge quickstart", "",
             f"Data: `{cfg.data}`; models: {', '.join(cfg.models)}; seeds: {', '.join(map(str, cfg.seeds))}; "
             f"{cfg.epochs} epochs; targets: {', '.join(cfg.targets)}.",
             f"This run took {seconds:.0f} s (steps run now: {_counts(result, 'done')}; "
             f"reused from earlier runs: {_counts(result, 'reused')}).", "",
             "| What | Where |", "|---|---|",
             "| curve (plot) | `curve.png`, `curve.svg` |",
             "| every point (CSV) | `points.csv` |",
             "| tables + INT8 paired differences | `curve.md` |",
             "| checkpoints per seed | `train/<model>/seed_<s>/` |",
             "| ONNX + TFLite FP32/INT8 artifacts, manifest | `export/<model>/seed_<s>/` |",
             "| accuracy of each artifact | `eval/<model>/seed_<s>/<format>.json` |",
             "| latency per target | `bench/<target>/<model>/<format>.json` |",
             "| failed steps (with reasons) | `failures.jsonl` |", "",
             "## Headline", "",
             "| Model | Format | Target | Top-1 % mean ± std (n) | p50 ms / instructions |",
             "|---|---|---|---:|---:|"]
    for p in result.points:
        acc = "–" if p.acc_mean is None else f"{p.acc_mean:.2f} ± {p.acc_std or 0:.2f} ({p.n_seeds})"
        x = ("–" if p.x is None else (f"{p.x / 1e6:.1f} M instr." if is_qemu_target(p.target) else f"{p.x:.3f} ms"))
        lines.append(f"| {p.model} | {p.format} | {p.target} | {acc} | {x} |")
    lines.append("")
    if result.failures:
        lines += [f"{len(result.failures)} step(s) failed; see `failures.jsonl` and the missing points in `curve.md`.", ""]
    if not any(is_qemu_target(t) for t in cfg.targets):
        lines += ["Emulated ARM was not measured: run `bash scripts/setup.sh` (qemu-user + aarch64 sysroot), "
                  "or pass `--target qemu-aarch64`.", ""]
    lines += ["Swap in real inputs: `--data cifar10` or `--data DIR` (class sub-folders), `--weights DIR` "
              "(`<model>/seed_<s>/` checkpoints), `--target ssh://user@board` / `--target adb`.", ""]
    return "\n".join(lines)


def _counts(result: CurveResult, kind: str) -> str:
    items = [f"{k.rsplit('_', 1)[0]} {v}" for k, v in result.counters.items() if k.endswith("_" + kind)]
    return ", ".join(items) or "none"
