"""The ``host`` target: this machine, one fresh subprocess per measurement.

Why a subprocess and not the current process: peak RSS (``ru_maxrss``) is per process and only
grows, so an in-process measurement would report the largest model seen so far, and a runtime's
thread pool or XNNPACK weight cache would leak into the next artifact's numbers. A fresh process per
artifact gives each one its own load time, first inference and peak memory, at ~1 s of start-up cost.

TFLite and ONNX artifacts run through ``device_runner.py`` (the very script copied to boards);
PyTorch checkpoints and model names run through ``torch_runner.py``, which reuses its timed loop.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ghostnet_edge.runtime import protocol
from ghostnet_edge.runtime.config import BenchConfig
from ghostnet_edge.runtime.targets.base import ProgressFn, Session, Target
from ghostnet_edge.utils.paths import module_argv, package_env

if TYPE_CHECKING:
    from ghostnet_edge.runtime.artifacts import ArtifactInfo

# Load + first inference + warm-up get this much time on top of the timed phase's cap.
SETUP_ALLOWANCE_S = 300.0


def runner_env() -> dict[str, str]:
    """The child's environment: quiet TensorFlow logs; the package importable for torch_runner."""
    env = package_env()
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


class HostSession(Session):
    def __init__(self, python: str) -> None:
        self.python = python

    def measure(self, artifact: ArtifactInfo, config: BenchConfig, inputs: Any = None,
                on_progress: ProgressFn | None = None) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="ghostedge-host-") as tmp:
            in_path = out_path = None
            if inputs is not None:
                import numpy as np

                in_path, out_path = os.path.join(tmp, "inputs.npy"), os.path.join(tmp, "outputs.npy")
                np.save(in_path, np.asarray(inputs, dtype=np.float32))
            model = artifact.spec if artifact.path is None else str(artifact.path)
            args = protocol.runner_args(model, config, inputs=in_path, save_outputs=out_path)
            if artifact.format == "torch":
                argv = module_argv("ghostnet_edge.runtime.torch_runner", *args, python=self.python)
            else:
                argv = [self.python, str(protocol.RUNNER_PATH), *args]
            done = protocol.run_streaming(argv, timeout=config.max_seconds + SETUP_ALLOWANCE_S,
                                          on_progress=on_progress, env=runner_env())
            rec = protocol.parse_runner_output(done)
            if out_path and os.path.exists(out_path):
                import numpy as np

                rec["outputs"] = np.load(out_path)
            return rec


class HostTarget(Target):
    """This machine: PyTorch eager, onnxruntime, ai-edge-litert, tflite-runtime when installed."""

    name = "host"
    formats = ("tflite", "onnx", "torch")

    def __init__(self, python: str | None = None) -> None:
        self.python = python or sys.executable

    @contextlib.contextmanager
    def session(self, config: BenchConfig) -> Iterator[Session]:
        yield HostSession(self.python)
