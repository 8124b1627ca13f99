"""The one way ghostedge runs an artifact in this process: ``load_runner(artifact) -> Runner``.

``Runner.run(nchw_float_batch) -> float logits`` hides the runtime's layout (NHWC for TFLite), its
integer input/output (quantised and dequantised with the model's own scale and zero point, rounding as
TFLite's QUANTIZE does) and its fixed batch (looped; a dynamic batch is fed in chunks). The TFLite and
ONNX code is the device runner's (``device_runner.Model``), so the export's checks, the per-layer
reports, ``ghostedge eval`` and latency measurement all feed models the same way, with one set of
runtime names (:data:`BACKENDS`); PyTorch uses ``torch_runner``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ghostnet_edge.errors import GhostEdgeError, MissingDependencyError
from ghostnet_edge.runtime import device_runner as dr

BACKENDS = ("auto", "litert", "tflite-runtime", "onnxruntime", "torch")
# Images per call for models with a dynamic batch: bounds the activations' memory at 224x224.
EVAL_BATCH = 16
# pip package -> module, for MissingDependencyError
_MODULES = {"numpy": "numpy", "ai-edge-litert": "ai_edge_litert", "tflite-runtime": "tflite_runtime",
            "onnxruntime": "onnxruntime"}


@dataclass
class Runner:
    """A loaded artifact ready for batches of preprocessed images."""

    model: dr.Model
    artifact: str

    @property
    def input_size(self) -> tuple[int, int, int]:
        """(C, H, W) the model takes."""
        return tuple(int(v) for v in self.model.chw_shape())  # type: ignore[return-value]

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Float32 logits for a float32 NCHW batch (any batch size)."""
        x = np.asarray(batch)
        step = EVAL_BATCH if not self.model.batch_fixed else max(1, len(x))
        try:
            outs = [np.asarray(self.model.run(x[i:i + step]), dtype=np.float32) for i in range(0, len(x), step)]
        except dr.RunnerError as exc:
            raise as_ghostedge_error(exc) from exc
        if not outs:
            raise GhostEdgeError("no images to run", "pass a batch of at least one image")
        return np.concatenate(outs)

    def info(self) -> dict[str, Any]:
        m = self.model
        return {"runtime": m.runtime, "version": m.version, "delegate": m.delegate,
                "threads": getattr(m, "threads", None), "input_shape": list(m.input_shape),
                "input_dtype": m.input_dtype, "layout": m.layout}


def as_ghostedge_error(exc: dr.RunnerError) -> GhostEdgeError:
    if exc.package:
        return MissingDependencyError(_MODULES.get(exc.package, exc.package), exc.package, "running this artifact")
    return GhostEdgeError(exc.message, exc.hint or None)


def default_threads() -> int:
    """Threads for the export's runtimes: ``OMP_NUM_THREADS`` when set (tests pin 1), else all cores."""
    import os

    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "0"))) if os.environ.get("OMP_NUM_THREADS") \
            else max(1, os.cpu_count() or 1)
    except ValueError:
        return max(1, os.cpu_count() or 1)


def open_model(path: str | Path, runtime: str = "auto", threads: int = 1, xnnpack: bool = True,
               keep_intermediates: bool = False) -> Runner:
    """A .tflite or .onnx file opened directly (no manifest or metadata look-up): what the export's
    checks and reports use on files they have just written. ``keep_intermediates`` keeps every tensor
    readable after a run (see ``device_runner.load_model``)."""
    if runtime not in BACKENDS:
        raise GhostEdgeError(f"unknown runtime {runtime!r}", f"choose from: {', '.join(BACKENDS)}")
    try:
        model = dr.load_model(str(path), runtime, threads, xnnpack, keep_intermediates)
    except dr.RunnerError as exc:
        raise as_ghostedge_error(exc) from exc
    model.threads = threads
    return Runner(model=model, artifact=str(path))


def run_artifact(path: str | Path, batch: np.ndarray, threads: int = 1, runtime: str = "auto") -> np.ndarray:
    """Float logits ``(N, classes)`` of a .tflite/.onnx file for a preprocessed NCHW float batch."""
    return open_model(path, runtime, threads).run(batch)


def load_runner(artifact: str | Path, runtime: str = "auto", threads: int = 1, xnnpack: bool = True) -> Runner:
    """Open ``artifact`` (.tflite, .onnx, checkpoint or model name) with ``runtime``.

    A runtime that is not installed raises MissingDependencyError naming the pip package.
    """
    if runtime not in BACKENDS:
        raise GhostEdgeError(f"unknown runtime {runtime!r}", f"choose from: {', '.join(BACKENDS)}")
    from ghostnet_edge.runtime.artifacts import inspect_artifact

    info = inspect_artifact(artifact)
    try:
        if info.format == "torch":
            from ghostnet_edge.runtime.torch_runner import load_torch

            model: dr.Model = load_torch(info.spec, runtime, threads, xnnpack)
        else:
            if runtime == "torch":
                raise GhostEdgeError(f"runtime torch cannot run {info.format} artifacts",
                                     "use --runtime auto")
            model = dr.load_model(str(info.path), runtime, threads, xnnpack)
    except dr.RunnerError as exc:
        raise as_ghostedge_error(exc) from exc
    model.threads = threads
    return Runner(model=model, artifact=str(artifact))
