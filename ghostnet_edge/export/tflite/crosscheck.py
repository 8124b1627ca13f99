"""The second TFLite route, onnx2tf, run offline: a cross-check of our translator, not the product path.

onnx2tf 1.29.24 has two habits that break it here, both worked around for the duration of one call:

* during every conversion it fetches ``calibration_image_sample_data_20x128x128x3_float32.npy`` from
  GitHub (``download_test_image_data``, used to compare ONNX and TF outputs), even for FP32 and even when
  given calibration data. We replace that function with seeded images of the same shape and make any
  other HTTP request raise, so a hidden download fails loudly instead of hanging offline.
* it shells out to an ``onnxsim`` executable on PATH. Our ONNX files are already simplified by the
  ONNX stage, so we pass ``not_use_onnxsim=True``.

It also refuses ONNX node names that TF rejects (``/block/Conv``) unless signature defs are written,
hence ``output_signaturedefs=True``.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ghostnet_edge.errors import ExportError, require


@contextlib.contextmanager
def _offline_onnx2tf(seed: int) -> Iterator[object]:
    o2 = require("onnx2tf.onnx2tf", "onnx2tf==1.29.24", "the onnx2tf cross-check")
    import requests

    sample = np.random.default_rng(seed).random((20, 128, 128, 3), dtype=np.float32)

    def no_network(*args: object, **kwargs: object) -> None:
        raise ExportError("onnx2tf tried to download a file", "the cross-check must run offline")

    saved = (o2.download_test_image_data, requests.get)
    o2.download_test_image_data = lambda: sample
    requests.get = no_network
    try:
        yield o2
    finally:
        o2.download_test_image_data, requests.get = saved


def convert_with_onnx2tf(onnx_path: Path | str, out_dir: Path | str, seed: int = 0) -> Path:
    """Convert ``onnx_path`` with onnx2tf (FP32) into ``out_dir``; returns the ``*_float32.tflite`` path."""
    onnx_path, out_dir = Path(onnx_path), Path(out_dir)
    if not onnx_path.is_file():
        raise ExportError(f"ONNX file {onnx_path} does not exist", "export the model to ONNX first")
    with _offline_onnx2tf(seed) as o2, contextlib.redirect_stdout(io.StringIO()):
        try:
            o2.convert(input_onnx_file_path=str(onnx_path), output_folder_path=str(out_dir),
                       not_use_onnxsim=True, non_verbose=True, output_signaturedefs=True)
        except ExportError:
            raise
        except Exception as exc:  # onnx2tf raises bare exceptions or sys.exit()s on failure
            raise ExportError(f"onnx2tf failed on {onnx_path.name}: {exc}", "this is the cross-check route only; "
                              "use convert_onnx_to_tflite") from exc
        except SystemExit as exc:
            raise ExportError(f"onnx2tf exited with status {exc.code} on {onnx_path.name}",
                              "see its log above; this is the cross-check route only") from exc
    out = out_dir / f"{onnx_path.stem}_float32.tflite"
    if not out.is_file():
        raise ExportError(f"onnx2tf wrote no {out.name} into {out_dir}", "see its log; check the ONNX file")
    return out
