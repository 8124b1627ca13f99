"""The accuracy budget of the TFLite INT8 model (``ghostedge export --max-drop`` with ``--val-data``).

The fully integer model is always written. With a budget, its top-1 on the labelled validation images is
compared with the FP32 TFLite model's; when it loses more than ``max_drop``, the export says so (with the
layers that lose the most signal) and builds the measured remedy LiteRT offers for a whole model: the
16x8 mode (int16 activations, int8 weights), written beside it as ``model_int16x8.tflite`` and labelled
"not fully integer" everywhere it is listed, with its accuracy, size and host latency next to the INT8
model's. Nothing is swapped silently: the INT8 file stays what it is, and the choice is the user's.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

REMEDY_FILE = "model_int16x8.tflite"
REMEDY_LABEL = ("not fully integer: int16 activations with int8 weights (LiteRT's 16x8 mode); runs on LiteRT's "
                "CPU kernels, not on int8-only accelerators (EdgeTPU, many NPUs and DSPs)")
LATENCY_RUNS = 30


@dataclass
class Budget:
    """How the TFLite INT8 model did against ``--max-drop`` (accuracies are fractions)."""

    max_drop: float
    num_images: int
    fp32_top1: float
    int8_top1: float
    drop: float
    met: bool
    worst_layers: list[str]
    remedy: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def judge(fp32_top1: float, int8_top1: float, max_drop: float) -> tuple[float, bool]:
    """``(drop, met)``: the loss in top-1 (a fraction) and whether it is within ``max_drop``.

    A hair of tolerance keeps a drop equal to the budget (one image on 100 with --max-drop 0.01) inside it.
    """
    drop = float(fp32_top1) - float(int8_top1)
    return drop, drop <= float(max_drop) + 1e-9


def host_p50_ms(path: Path, x: np.ndarray, runs: int = LATENCY_RUNS) -> float:
    """Median single-thread latency of one image on this host (LiteRT, default delegates)."""
    from ghostnet_edge.runtime.backends import open_model

    runner = open_model(path, threads=1)
    one = x[:1]
    runner.run(one)  # warm-up: first invoke pays for delegate set-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        runner.run(one)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def message(b: Budget, int8_name: str) -> str:
    """The one warning line an export prints when the budget is missed."""
    pts = 100.0
    text = (f"{int8_name} loses {b.drop * pts:.2f} points of top-1 on {b.num_images} validation images "
            f"(FP32 {b.fp32_top1 * pts:.2f} %, INT8 {b.int8_top1 * pts:.2f} %), more than --max-drop "
            f"{b.max_drop * pts:.2f}; the layers that lose the most signal: {', '.join(b.worst_layers) or '-'}")
    r = b.remedy
    if r is None:
        return text + "; no remedy could be built"
    if "error" in r:
        return text + f"; the 16x8 remedy could not be built ({r['error']})"
    verdict = "within the budget" if r["met"] else "still over the budget"
    return (text + f". Remedy written, {REMEDY_LABEL.split(';')[0]}: {r['file']} scores {r['top1'] * pts:.2f} % "
            f"(drop {r['drop'] * pts:.2f}, {verdict}), {r['bytes'] / 1024:.0f} KiB vs {r['int8_bytes'] / 1024:.0f} KiB, "
            f"host p50 {r['p50_ms']:.2f} ms vs {r['int8_p50_ms']:.2f} ms (1 thread, {LATENCY_RUNS} runs)")


def check_budget(*, onnx_fp32: Path, t_fp32: Path, t_int8: Path, staging: Path, val: tuple[np.ndarray, np.ndarray],
                 max_drop: float, representative: np.ndarray, worst_layers: list[str], labels: list[str],
                 preprocessing: dict[str, Any], threads: int = 1, hard_swish: str = "builtin") -> Budget:
    """Score the INT8 model against the budget and, when it misses, build and measure the 16x8 remedy."""
    from ghostnet_edge.export.checks import accuracy
    from ghostnet_edge.runtime.backends import run_artifact

    vx, vy = val
    fp32_top1 = accuracy(run_artifact(t_fp32, vx, threads), vy)
    int8_top1 = accuracy(run_artifact(t_int8, vx, threads), vy)
    drop, met = judge(fp32_top1, int8_top1, max_drop)
    budget = Budget(max_drop, int(len(vy)), fp32_top1, int8_top1, drop, met, worst_layers)
    if not met:
        budget.remedy = build_remedy(onnx_fp32, staging / REMEDY_FILE, t_fp32, t_int8, val, fp32_top1, max_drop,
                                     representative, labels, preprocessing, threads, hard_swish)
    return budget


def build_remedy(onnx_fp32: Path, out: Path, t_fp32: Path, t_int8: Path, val: tuple[np.ndarray, np.ndarray],
                 fp32_top1: float, max_drop: float, representative: np.ndarray, labels: list[str],
                 preprocessing: dict[str, Any], threads: int, hard_swish: str = "builtin") -> dict[str, Any]:
    """Convert, score and time the 16x8 model; a failed conversion is reported, not raised."""
    from ghostnet_edge.errors import ExportError
    from ghostnet_edge.export.checks import accuracy
    from ghostnet_edge.export.tflite.convert import convert_onnx_to_tflite
    from ghostnet_edge.runtime.backends import run_artifact

    t0 = time.perf_counter()
    try:
        convert_onnx_to_tflite(onnx_fp32, None, out, representative=representative, io_dtype="float32",
                               labels=labels, preprocessing=preprocessing, int16_activations=True,
                               hard_swish=hard_swish)
    except ExportError as exc:
        out.unlink(missing_ok=True)
        return {"error": exc.message}
    convert_s = time.perf_counter() - t0
    vx, vy = val
    top1 = accuracy(run_artifact(out, vx, threads), vy)
    drop, met = judge(fp32_top1, top1, max_drop)
    return {"file": out.name, "label": REMEDY_LABEL, "top1": top1, "drop": drop, "met": met,
            "bytes": out.stat().st_size, "int8_bytes": t_int8.stat().st_size, "fp32_bytes": t_fp32.stat().st_size,
            "p50_ms": host_p50_ms(out, vx), "int8_p50_ms": host_p50_ms(t_int8, vx), "convert_seconds": convert_s}
