"""What `ghostedge export` is asked to do: :class:`ExportConfig` and its defaults.

Only the standard library here: the CLI reads the defaults from this module without importing the
pipeline (numpy, torch, the converters), so `ghostedge --help` stays fast and every default is written
once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ghostnet_edge.calib.defaults import DEFAULT_NUM_CALIB, DEFAULT_NUM_VERIFY  # noqa: F401 (part of this API)

FORMATS = ("onnx", "tflite")
DEFAULT_REPORT_IMAGES = 32  # benchmarks/layer_report.py: worst-5 layers stable at 32 images, not at 8
# ...of 32x32 pixels. What steadies a layer's SQNR is the number of activation values, which grows with
# the image's area, while the report's cost grows with it too: larger inputs use fewer images, as many
# as fit 8 images of 224x224 (still 12x the values of 32 CIFAR images), and never fewer than 4.
REPORT_PIXEL_BUDGET = 8 * 224 * 224
MIN_REPORT_IMAGES = 4
DEFAULT_TOLERANCE = 1e-4          # FP32: max |logit difference| to PyTorch, relative above |logit| 1
DEFAULT_MIN_AGREEMENT = 0.8       # INT8: top-1 agreement with PyTorch on the held-out images
DEFAULT_OUT = Path("ghostedge-export")
DEFAULT_OPSET = 17                # see export/onnx/config.py for why


@dataclass
class ExportConfig:
    """Every option of ``ghostedge export`` (the CLI maps its flags one to one onto these fields)."""

    checkpoint: Path | None = None        # trained weights; None with ``model`` = random init
    model: str | None = None              # a model name (random weights) or the architecture of a bare state_dict
    # Calibration images (also the verification pool): a folder, any data set ``open_dataset`` reads, or,
    # from Python, an ImageDataset or a uint8 (N, H, W, 3) array (see calib/sources.py). So are the
    # other image fields.
    calib: Any = None
    out: Path = DEFAULT_OUT
    formats: tuple[str, ...] = FORMATS
    int8: bool = True
    input_size: int | tuple[int, int] | None = None
    num_calib: int = DEFAULT_NUM_CALIB
    num_verify: int = DEFAULT_NUM_VERIFY
    calib_method: str = "minmax"
    per_channel: bool = True
    io_dtype: str = "int8"                # TFLite INT8 model's input/output type
    tflite_target: str = "arm"            # the CPU the .tflite graphs are shaped for: arm | x86
    act_type: str = "auto"                # ONNX INT8 activations: auto | int8 | uint8
    max_drop: float | None = None         # with val_data: NNCF accuracy control
    val_data: Any = None                  # labelled images for NNCF and accuracy deltas
    verify_data: Any = None               # held-out images; default: drawn from ``calib``
    seed: int = 0
    force: bool = False
    tolerance: float = DEFAULT_TOLERANCE  # FP32 max |logit difference| to PyTorch
    min_agreement: float = DEFAULT_MIN_AGREEMENT  # INT8 top-1 agreement with PyTorch
    report_images: int = DEFAULT_REPORT_IMAGES
    opset: int = DEFAULT_OPSET
    simplify: bool = True                 # onnxsim on the exported ONNX graph
    use_cache: bool = True
    threads: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: paths as strings, images handed over in memory by what they are."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {k: describe_value(v) for k, v in d.items()}


def describe_value(v: Any) -> Any:
    """``v`` as JSON and messages show it: paths as strings, images in memory by what they are."""
    if v is None or isinstance(v, bool | int | float | str):
        return v
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, tuple | list):
        return list(v)
    shape = getattr(v, "shape", None)
    if shape is not None:
        return f"array of shape {list(shape)} ({getattr(v, 'dtype', '')})"
    return f"{type(v).__name__} {getattr(v, 'source', '')}".strip()


def report_image_count(requested: int, input_hw: tuple[int, int], available: int) -> int:
    """Images the per-layer reports use: ``requested``, capped by the pixel budget and by ``available``."""
    h, w = input_hw
    fit = max(MIN_REPORT_IMAGES, REPORT_PIXEL_BUDGET // max(1, h * w))
    return max(1, min(requested, fit, available))
