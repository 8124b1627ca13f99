"""The contract every benchmark target implements (host, ssh, adb, and qemu-aarch64 in ``qemu.py``).

A target opens a *session* (copy the runner once, check the device once), measures artifacts in it
any number of times (a noisy result is re-measured without copying again), and cleans up when the
session closes, whatever happened. ``Session.measure`` returns a runner record: the device runner's
JSON (see ``device_runner.py``) or an equivalent dict, with at least::

    status ("ok" | "partial" | "failed"), error, latencies_ms (list), runtime, runtime_version,
    delegate, threads, cpu, load_ms, first_inference_ms, peak_rss_mb, input_shape,
    and optionally instructions (qemu), outputs (parity: an np.ndarray brought back from the device).

A target that cannot be used at all (unreachable, wrong key, no Python) raises TargetError from
``session()``; a run that dies midway comes back as a record with status "partial".
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ghostnet_edge.runtime.config import BenchConfig

if TYPE_CHECKING:
    from ghostnet_edge.runtime.artifacts import ArtifactInfo

ProgressFn = Callable[[int], None]


class Session(ABC):
    """An open connection to a target; measure() may be called many times."""

    def check(self, artifacts: Sequence[ArtifactInfo], config: BenchConfig) -> None:
        """Refuse up front what this device cannot run (e.g. no interpreter); default: accept."""
        return None

    @abstractmethod
    def measure(self, artifact: ArtifactInfo, config: BenchConfig, inputs: Any = None,
                on_progress: ProgressFn | None = None) -> dict[str, Any]:
        """Time one artifact; ``inputs`` (float32 NCHW array) asks for outputs back (parity)."""


class Target(ABC):
    """A place to run artifacts: parsed from a string by ``parse_target``."""

    #: the string it was parsed from, as written into results ("host", "ssh://pi@board", ...)
    name: str = ""
    #: formats this target can run
    formats: tuple[str, ...] = ("tflite", "onnx")

    @abstractmethod
    def session(self, config: BenchConfig) -> contextlib.AbstractContextManager[Session]:
        """Open the target (check it, copy what every run needs); closing it cleans the device."""

    def check_artifact(self, artifact: ArtifactInfo) -> None:
        """Refuse formats this target cannot run, before connecting."""
        from ghostnet_edge.errors import TargetError

        if artifact.format not in self.formats:
            raise TargetError(f"target {self.name} cannot run {artifact.format} artifacts ({artifact.label})",
                              f"it runs {', '.join(self.formats)}; measure PyTorch models on --target host")

