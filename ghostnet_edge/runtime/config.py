"""What a benchmark is asked to do (:class:`BenchConfig`) and what it measured (:class:`BenchResult`).

A config says how to time an artifact: threads, warm-up, the minimum runs and duration, when a result
counts as noisy and how often to measure again, which runtime, and whether to check outputs against a
PyTorch reference or take a per-operator profile. A result is one artifact on one target: the latency
statistics (or guest instruction counts on emulated ARM), load and first-inference times, memory, the
runtime that ran it, parity and profile when asked for, and whether the run was complete. Both are
plain data read by ``bench`` and by every target, so this module imports only the standard library and
the package's own stdlib-only modules, and neither side has to import the other.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ghostnet_edge.errors import GhostEdgeError
from ghostnet_edge.runtime.stats import DEFAULT_CV_THRESHOLD

RUNTIME_CHOICES = ("auto", "litert", "tflite-runtime", "onnxruntime", "torch")


@dataclass
class BenchConfig:
    """How to measure. Defaults follow the paper (one thread) and MLPerf (minimum runs AND duration)."""

    threads: int = 1
    warmup: int = 10
    min_runs: int = 50
    min_seconds: float = 2.0
    max_seconds: float = 60.0
    cv_threshold: float = DEFAULT_CV_THRESHOLD
    remeasure: int = 2
    xnnpack: bool = True
    runtime: str = "auto"
    seed: int = 0
    benchmark_model: str | None = None    # adb: path of TFLite's benchmark_model binary for the phone
    reference: str | None = None          # checkpoint or model name: compare outputs (parity)
    parity_samples: int = 4
    profile: bool = False                 # per-operator profile (time per node; qemu: instructions per symbol)
    profile_runs: int = 20                # inferences in the profiled pass (host, boards)

    def validate(self) -> BenchConfig:
        if self.threads < 1:
            raise GhostEdgeError(f"--threads must be >= 1 (got {self.threads})", "pass --threads 1 (the paper's setting)")
        if self.min_runs < 1:
            raise GhostEdgeError(f"--min-runs must be >= 1 (got {self.min_runs})", "pass e.g. --min-runs 50")
        if self.warmup < 0:
            raise GhostEdgeError(f"--warmup must be >= 0 (got {self.warmup})", "pass e.g. --warmup 10")
        if self.min_seconds < 0 or self.max_seconds <= 0 or self.max_seconds < self.min_seconds:
            raise GhostEdgeError(
                f"need 0 <= --min-seconds <= --max-seconds (got {self.min_seconds} and {self.max_seconds})",
                "e.g. --min-seconds 2 --max-seconds 60")
        if self.cv_threshold <= 0:
            raise GhostEdgeError(f"--cv-threshold must be > 0 (got {self.cv_threshold})", "e.g. --cv-threshold 0.05")
        if self.remeasure < 0:
            raise GhostEdgeError(f"--remeasure must be >= 0 (got {self.remeasure})", "e.g. --remeasure 2")
        if self.profile_runs < 1:
            raise GhostEdgeError(f"--profile-runs must be >= 1 (got {self.profile_runs})", "e.g. --profile-runs 20")
        if self.runtime not in RUNTIME_CHOICES:
            raise GhostEdgeError(f"unknown runtime {self.runtime!r}", f"choose from: {', '.join(RUNTIME_CHOICES)}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BenchResult:
    """One artifact on one target. ``latency_ms`` is None when nothing was timed."""

    artifact: str
    format: str
    precision: str
    model: str
    target: str
    runtime: str | None = None
    runtime_version: str | None = None
    delegate: str | None = None
    threads: int | None = None
    cpu: str | None = None
    input_shape: list[int] | None = None
    size_bytes: int | None = None
    latency_ms: dict[str, float | int] | None = None
    first_inference_ms: float | None = None
    load_ms: float | None = None
    peak_rss_mb: float | None = None
    noisy: bool = False
    remeasured: int = 0
    attempt_cvs: list[float] = field(default_factory=list)
    instructions: dict[str, Any] | None = None
    parity: dict[str, Any] | None = None
    profile: dict[str, Any] | None = None
    status: str = "ok"
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["profile"] is None:  # only results measured with --profile carry the key
            del d["profile"]
        return d
