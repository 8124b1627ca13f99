"""Second route: the same ONNX through onnx2tf 1.29.24 (offline) must give the same FP32 logits as ours."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tensorflow")
pytest.importorskip("onnx2tf", reason="onnx2tf (the cross-check route, extra 'crosscheck') is not installed")

from ghostnet_edge.errors import ExportError  # noqa: E402
from ghostnet_edge.export.tflite import inspect as tfl_inspect  # noqa: E402
from ghostnet_edge.export.tflite import verify  # noqa: E402
from ghostnet_edge.export.tflite._testing import (  # noqa: E402
    count_depthwise_convs,
    export_onnx_for_tests,
    tiny_ghostnet,
)
from ghostnet_edge.export.tflite.convert import convert_onnx_to_tflite  # noqa: E402
from ghostnet_edge.export.tflite.crosscheck import convert_with_onnx2tf  # noqa: E402


@pytest.mark.slow
def test_onnx2tf_and_our_translator_agree_on_fp32_logits(tmp_path: Path) -> None:
    model = tiny_ghostnet(seed=3)
    onnx_path = export_onnx_for_tests(model, tmp_path / "tiny.onnx", (3, 32, 32))
    ours = convert_onnx_to_tflite(onnx_path, tmp_path / "ours_fp32.tflite", None).fp32_path
    theirs = convert_with_onnx2tf(onnx_path, tmp_path / "onnx2tf", seed=0)

    # Both take NHWC images; run_tflite transposes our NCHW batch for each.
    assert tfl_inspect.io_quantization(theirs)["input"]["shape"] == [1, 32, 32, 3]
    x = np.random.default_rng(7).standard_normal((8, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    a = verify.run_tflite(ours, x)
    b = verify.run_tflite(theirs, x)
    scale = max(1.0, float(np.abs(ref).max()))
    assert np.abs(a - b).max() <= 1e-4 * scale
    assert np.abs(a - ref).max() <= 1e-4 * scale and np.abs(b - ref).max() <= 1e-4 * scale

    # Ours keeps every depthwise conv as DEPTHWISE_CONV_2D; onnx2tf may turn some into grouped CONV_2D.
    n_dw = count_depthwise_convs(model)
    assert tfl_inspect.op_counts(ours)["DEPTHWISE_CONV_2D"] == n_dw
    assert tfl_inspect.op_counts(theirs).get("DEPTHWISE_CONV_2D", 0) <= n_dw
    # The workaround for onnx2tf's download is scoped to the call: the real function is back.
    import onnx2tf.onnx2tf as o2

    assert o2.download_test_image_data.__module__.startswith("onnx2tf")


def test_onnx2tf_route_reports_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="does not exist"):
        convert_with_onnx2tf(tmp_path / "none.onnx", tmp_path / "out")
