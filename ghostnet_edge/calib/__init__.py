"""Choosing, decoding and caching the images INT8 calibration (and verification) sees.

Names are re-exported lazily: the defaults (``calib.defaults``) are read by the CLI and the export's
config, which must not import NumPy.
"""

from __future__ import annotations

from typing import Any

_WHERE = {
    "TensorBatch": "cache", "cache_key": "cache", "cache_root": "cache", "calibration_tensors": "cache",
    "decode_images": "cache", "IMAGE_EXTENSIONS": "sampler", "MIN_RECOMMENDED_CALIB": "sampler",
    "ImageSet": "sampler", "draw": "sampler", "label_of": "sampler", "list_images": "sampler",
    "select_calibration_images": "sampler", "split_calibration_verification": "sampler",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
