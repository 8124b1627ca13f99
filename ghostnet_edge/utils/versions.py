"""Package versions recorded in checkpoints, manifests and benchmark reports."""

from __future__ import annotations

import platform
from importlib import metadata

_TRACKED = (
    "ghostedge", "torch", "numpy", "pillow", "onnx", "onnxruntime", "onnxsim", "tensorflow",
    "ai-edge-litert", "tflite-runtime", "nncf", "onnx2tf",
)


def package_versions(names: tuple[str, ...] = _TRACKED) -> dict[str, str]:
    """Versions of the installed packages among ``names`` (absent ones are left out)."""
    out: dict[str, str] = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def machine_description() -> dict[str, str]:
    """The CPU and OS a measurement ran on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import os

    return {"machine": platform.machine(), "cpu": cpu, "cores": str(os.cpu_count()),
            "system": f"{platform.system()} {platform.release()}"}
