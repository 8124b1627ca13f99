"""What one export carries from stage to stage (:class:`ExportJob`), and what it reports at the end."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ghostnet_edge.export.artifacts import ARTIFACTS, Artifact
from ghostnet_edge.export.config import ExportConfig


@dataclass
class ArtifactReport:
    name: str                 # file name in the export folder
    format: str               # onnx | tflite
    precision: str            # fp32 | int8
    path: Path
    bytes: int
    check: dict[str, Any]

    def row(self) -> dict[str, Any]:
        c = self.check
        name = f"{self.name} (not fully integer)" if c.get("label", "").startswith("not fully integer") else self.name
        return {"artifact": name, "bytes": self.bytes, "max_abs_diff": c.get("max_abs_diff"),
                "top1_agreement": c.get("top1_agreement"), "accuracy_delta": c.get("accuracy_delta"),
                "path": str(self.path)}


@dataclass
class ExportReport:
    out_dir: Path
    artifacts: list[ArtifactReport]
    timings: dict[str, float]
    warnings: list[str]
    manifest: dict[str, Any]
    files: list[str] = field(default_factory=list)
    cpu_timings: dict[str, float] = field(default_factory=dict)

    wall_seconds: float = 0.0

    @property
    def total_seconds(self) -> float:
        """Wall time of the whole export (stages may overlap, so this is not their sum)."""
        return self.wall_seconds


class Timer:
    """Wall and CPU seconds per stage (CPU time of all threads: on a shared machine wall time alone
    says little, and CPU / wall shows how well a stage used the cores)."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str, cpu: bool = True) -> Iterator[None]:
        """Time a stage; ``cpu=False`` for stages overlapping another thread's work (CPU time is per
        process, so it would include the other thread's)."""
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t0
            if cpu:
                self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - c0


def planned_artifacts(cfg: ExportConfig) -> list[Artifact]:
    """The rows of the artifact table this export writes, in the table's order."""
    return [a for a in ARTIFACTS if a.format in cfg.formats and (a.precision == "fp32" or cfg.int8)]


@dataclass
class ExportJob:
    """The state of one export between its stages (see :mod:`ghostnet_edge.export.steps`)."""

    cfg: ExportConfig
    staging: Path                   # everything is written here, then swapped in for the output folder
    timer: Timer
    warnings: list[str]
    model: Any                      # the network converted (deployed form)
    spec: Any
    meta: dict[str, Any]
    trained: bool
    threads: int
    worker: Any = None              # the TFLite converter process (2+ threads), else None
    prefetch: Any = None            # the process decoding the image sets into the cache (calib/prefetch.py)
    # ---- filled by the stages ----
    reference_model: Any = None     # the network as loaded (before branch folding): PyTorch's reference
    preprocess: Any = None
    labels: list[str] = field(default_factory=list)
    wnids: list[str] | None = None
    labels_source: str = ""
    calib_set: Any = None
    verify_set: Any = None
    calib_batch: Any = None         # TensorBatch of the calibration images
    xv: np.ndarray | None = None    # held-out images (N, C, H, W) and their labels
    xv_file: Path | None = None     # the held-out images' cache entry (.npy), when they have one
    yv: np.ndarray | None = None
    xc: np.ndarray | None = None    # calibration images
    val: tuple[np.ndarray, np.ndarray] | None = None  # labelled validation images (--val-data)
    ref: np.ndarray | None = None   # PyTorch's logits on xv
    float_error: float | None = None  # PyTorch's own float32 error, measured when an artifact needs it
    ranges: Any = None              # TensorRanges of the calibration pass
    tflite_result: Any = None
    tflite_layers: list[dict[str, Any]] | None = None  # the INT8 per-layer report from the converter process
    verify_logits: dict[str, np.ndarray] = field(default_factory=dict)  # from the converter process, by key
    tflite_budget: dict[str, Any] | None = None
    quantization: dict[str, Any] | None = None
    artifacts: list[ArtifactReport] = field(default_factory=list)
    sections: list[dict[str, Any]] = field(default_factory=list)
    n_report: int = 0
    # (CPU s, wall s) when the converter process got this export's job: the overlap's timings
    region: tuple[float, float] | None = None

    @property
    def work(self) -> Path:
        """Scratch space inside the staging folder (removed before the swap)."""
        return self.staging / ".work"

    @property
    def parallel(self) -> bool:
        return self.worker is not None

    @property
    def converting(self) -> bool:
        """The converter process has this export's job and has not answered yet."""
        return self.region is not None and self.tflite_result is None

    @property
    def own_threads(self) -> int:
        """Threads this process may use now: while the converter process works beside it, all but the
        one core it takes (a thread pool sharing that core waits on it at every step), else all (it
        is done, or waits for this process's calibration ranges). Before its job is submitted the
        converter is importing TensorFlow (or has, and the image prefetch decodes), so it counts as busy."""
        busy = self.parallel and (self.region is None or (self.converting and not self.worker.idle()))
        return max(1, self.threads - 1) if busy else self.threads

    def path(self, art: Artifact) -> Path:
        """Where ``art`` is written: the staging folder, or the scratch space for the FP32 ONNX model
        that only feeds the TFLite converter."""
        return (self.staging if art.format in self.cfg.formats else self.work) / art.file

    @property
    def prep_desc(self) -> dict[str, Any]:
        return self.preprocess.describe()
