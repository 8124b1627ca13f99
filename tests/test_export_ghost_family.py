"""GhostNetV2, GhostNetV3 and RepGhostNet through the TFLite route: translator, FP32 and full-integer INT8.

Beyond V1's ops, the deployed V2/V3 graphs hold the DFC attention: AveragePool (2x2, stride 2, floor),
a 1x1 conv and 1x5/5x1 depthwise convs, Sigmoid, and a nearest Resize (asymmetric + floor) back to the
feature map's size (2x, and 3 -> 7 at 224). RepGhostNet's folded graph uses V1's ops without Concat.
The CIFAR forms (32x32) convert in seconds; ``ghostnetv2_100`` at 224 is the slow test (its last stage
pools 7 -> 3 and upsamples 3 -> 7).

Seeded random weights: BatchNorm statistics are first measured in train mode on random inputs (an
untrained GhostNetV3 with the default statistics explodes in eval mode), then V3/RepGhost are folded with
``reparameterize``, as the export does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("tensorflow")

from ghostnet_edge.errors import ExportError  # noqa: E402
from ghostnet_edge.export import checks  # noqa: E402
from ghostnet_edge.export.tflite import inspect as tfl_inspect  # noqa: E402
from ghostnet_edge.export.tflite._testing import count_depthwise_convs, export_onnx_for_tests  # noqa: E402
from ghostnet_edge.export.tflite.convert import convert_onnx_to_tflite  # noqa: E402
from ghostnet_edge.export.tflite.translate import onnx_to_tf_function  # noqa: E402
from ghostnet_edge.runtime.backends import run_artifact  # noqa: E402

DFC_OPS = ("AVERAGE_POOL_2D", "LOGISTIC", "RESIZE_NEAREST_NEIGHBOR")
MIN_INT8_TOP1 = 0.5  # random weights: top-1 hangs on small logit gaps (measured 0.65-0.88)


def _fp32_check(b: dict) -> checks.Check:
    """The export's FP32 check: the one artifact runner, the format-neutral check (1e-4 relative above 1)."""
    check = checks.check_fp32("model_fp32.tflite", b["ref"], run_artifact(b["res"].fp32_path, b["x"]),
                              checks.fp32_tolerance(b["ref"], 1e-4))
    assert check.passed, check.reason
    return check


def _int8_agreement(b: dict) -> float:
    return checks.check_int8("model_int8.tflite", b["ref"], run_artifact(b["res"].int8_path, b["x"])).top1_agreement


def _deployed_model(name: str, size: int, seed: int = 0) -> torch.nn.Module:
    """Seeded ``name`` with BN statistics measured on random inputs, folded, in eval mode."""
    models = pytest.importorskip("ghostnet_edge.models", reason="ghostnet_edge.models is not available")
    torch.manual_seed(seed)
    model = models.create_model(name)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the passes below
    gen = torch.Generator().manual_seed(seed + 1)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(8, 3, size, size, generator=gen))
    return models.reparameterize(model.eval())


def _dfc_count(model: torch.nn.Module) -> int:
    return sum(1 for m in model.modules() if getattr(m, "short_conv", None) is not None)


def _build(name: str, size: int, d: Path, n_rep: int, n_x: int) -> dict:
    model = _deployed_model(name, size)
    onnx_path = export_onnx_for_tests(model, d / f"{name}.onnx", (3, size, size))
    rng = np.random.default_rng(0)
    rep = rng.standard_normal((n_rep, 3, size, size)).astype(np.float32)
    x = rng.standard_normal((n_x, 3, size, size)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    res = convert_onnx_to_tflite(onnx_path, d / f"{name}_fp32.tflite", d / f"{name}_int8.tflite", rep)
    return {"name": name, "model": model, "onnx": onnx_path, "x": x, "ref": ref, "res": res}


@pytest.fixture(scope="module", params=["ghostnetv2_cifar_100", "ghostnetv3_cifar_100", "repghostnet_cifar_100"])
def family(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    return _build(request.param, 32, tmp_path_factory.mktemp(request.param), n_rep=32, n_x=48)


# ------------------------------------------------------------------------------------------------
# checks shared by the CIFAR forms and the 224 test


def _check_translator_matches_onnxruntime(b: dict, n: int = 2) -> None:
    ort = pytest.importorskip("onnxruntime")
    concrete, _ = onnx_to_tf_function(b["onnx"])
    sess = ort.InferenceSession(str(b["onnx"]), providers=["CPUExecutionProvider"])
    for img in b["x"][:n]:
        want = sess.run(None, {"input": img[None]})[0]
        got = concrete(image=img[None].transpose(0, 2, 3, 1))["logits"].numpy()
        assert np.abs(got - want).max() <= 1e-5 * max(1.0, np.abs(want).max())


def _dfc_depthwise(path: Path) -> dict[tuple[int, int], list]:
    """DEPTHWISE_CONV_2D ops with a 1xK or Kx1 filter (TFLite filter layout [1, kh, kw, C]), by (kh, kw)."""
    g = tfl_inspect.read_graph(path)
    out: dict[tuple[int, int], list] = {}
    for op in g.ops:
        if op.name == "DEPTHWISE_CONV_2D":
            _, kh, kw, _ = g.tensors[op.inputs[1]].shape
            if (kh == 1) != (kw == 1):
                out.setdefault((kh, kw), []).append(op)
    return out


def _check_int8(b: dict) -> tfl_inspect.IntegerReport:
    model, res = b["model"], b["res"]
    n_dfc = _dfc_count(model)
    report = tfl_inspect.assert_fully_integer(res.int8_path, expected_depthwise=count_depthwise_convs(model))
    assert "QUANTIZE" not in report.op_counts and "DEQUANTIZE" not in report.op_counts
    assert report.io_dtypes == ("INT8", "INT8") and report.grouped_conv2d == 0
    fp32_counts = tfl_inspect.op_counts(res.fp32_path)
    assert fp32_counts == report.op_counts  # the same graph, quantized op for op
    g = tfl_inspect.read_graph(res.int8_path)
    if n_dfc:
        for op_name in DFC_OPS:
            assert report.op_counts.get(op_name) == n_dfc, op_name
            for op in (o for o in g.ops if o.name == op_name):
                assert all(g.tensors[i].dtype == "INT8" for i in (*op.inputs[:1], *op.outputs)), op_name
        dw = _dfc_depthwise(res.int8_path)
        assert sorted(dw) == [(1, 5), (5, 1)] and all(len(ops) == n_dfc for ops in dw.values())
        assert all(g.tensors[op.inputs[1]].dtype == "INT8" for ops in dw.values() for op in ops)
        assert sorted(_dfc_depthwise(res.fp32_path)) == [(1, 5), (5, 1)]
    else:
        assert not set(DFC_OPS) & set(report.op_counts)
    return report


# ------------------------------------------------------------------------------------------------
# CIFAR forms (32x32)


def test_translator_matches_onnxruntime(family: dict) -> None:
    _check_translator_matches_onnxruntime(family)


def test_fp32_matches_pytorch(family: dict) -> None:
    check = _fp32_check(family)
    assert check.max_abs_diff <= checks.fp32_tolerance(family["ref"], 1e-4)


def test_int8_is_fully_integer_with_integer_dfc_attention(family: dict) -> None:
    model = family["model"]
    if family["name"].startswith("repghostnet"):
        assert _dfc_count(model) == 0
        ops = {n.op_type for n in onnx.load(str(family["onnx"])).graph.node}
        assert "Concat" not in ops and not ops & {"AveragePool", "Sigmoid", "Resize"}
    else:
        assert _dfc_count(model) == 14
    report = _check_int8(family)
    if family["name"].startswith("repghostnet"):
        assert "CONCATENATION" not in report.op_counts


def test_int8_top1_tracks_pytorch(family: dict) -> None:
    assert _int8_agreement(family) >= MIN_INT8_TOP1


# ------------------------------------------------------------------------------------------------
# GhostNetV2 at 224: the DFC attention of the last stage pools 7 -> 3 and upsamples 3 -> 7


@pytest.mark.slow
def test_ghostnetv2_100_at_224(tmp_path: Path) -> None:
    b = _build("ghostnetv2_100", 224, tmp_path, n_rep=16, n_x=32)
    _check_translator_matches_onnxruntime(b, n=1)
    _fp32_check(b)
    _check_int8(b)
    g = tfl_inspect.read_graph(b["res"].int8_path)
    shapes = {(op.name, g.tensors[op.inputs[0]].shape[1:3], g.tensors[op.outputs[0]].shape[1:3]) for op in g.ops}
    assert ("AVERAGE_POOL_2D", (7, 7), (3, 3)) in shapes
    assert ("RESIZE_NEAREST_NEIGHBOR", (3, 3), (7, 7)) in shapes
    assert _int8_agreement(b) >= MIN_INT8_TOP1


# ------------------------------------------------------------------------------------------------
# Resize and AveragePool one by one, against onnxruntime


def _resize_model(in_hw: tuple[int, int], *, sizes: tuple[int, ...] | None = None,
                  scales: tuple[float, ...] | None = None, channels: int = 3, **attrs: str) -> onnx.ModelProto:
    from onnx import TensorProto, helper, numpy_helper

    if sizes is not None:  # inputs: X, roi, scales, sizes ("" leaves one out)
        inits, inputs = [numpy_helper.from_array(np.array(sizes, np.int64), "sizes")], ["input", "", "", "sizes"]
    else:
        inits, inputs = [numpy_helper.from_array(np.array(scales, np.float32), "scales")], ["input", "", "scales"]
    attrs = {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor", **attrs}
    node = helper.make_node("Resize", inputs, ["logits"], name="/gate/Resize", **attrs)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, channels, *in_hw])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _against_onnxruntime(proto: onnx.ModelProto, in_hw: tuple[int, int], channels: int = 3) -> float:
    ort = pytest.importorskip("onnxruntime")
    x = np.random.default_rng(0).standard_normal((1, channels, *in_hw)).astype(np.float32)
    want = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    concrete, _ = onnx_to_tf_function(proto)
    got = concrete(image=x.transpose(0, 2, 3, 1))["logits"].numpy()
    assert got.shape == want.shape
    return float(np.abs(got - want).max())


@pytest.mark.parametrize(("in_hw", "kwargs"), [
    ((3, 3), {"sizes": (1, 3, 7, 7)}),  # GhostNetV2's last stage at 224
    ((4, 4), {"sizes": (1, 3, 8, 8)}),
    ((3, 5), {"sizes": (1, 3, 6, 13)}),
    ((6, 6), {"sizes": (1, 3, 3, 4)}),  # downsampling
    ((3, 3), {"scales": (1.0, 1.0, 2.0, 3.0)}),
    ((3, 3), {"scales": (1.0, 1.0, 2.5, 2.4)}),  # scales that pick the same pixels as 3 -> 7
    ((3, 5), {"sizes": (1, 3, 7, 10), "coordinate_transformation_mode": "half_pixel",
              "nearest_mode": "round_prefer_ceil"}),  # F.interpolate(mode="nearest-exact")
    ((4, 6), {"sizes": (1, 3, 9, 13), "coordinate_transformation_mode": "tf_half_pixel_for_nn"}),
    ((3, 3), {"sizes": (1, 3, 7, 8), "coordinate_transformation_mode": "align_corners",
              "nearest_mode": "round_prefer_ceil"}),
])
def test_nearest_resize_matches_onnxruntime(in_hw: tuple[int, int], kwargs: dict) -> None:
    assert _against_onnxruntime(_resize_model(in_hw, **kwargs), in_hw) == 0.0  # a pure gather: exact


def test_resize_becomes_one_resize_nearest_neighbor_in_int8(tmp_path: Path) -> None:
    class Gate(torch.nn.Module):  # the DFC gate's tail at 224's last stage: pool 7 -> 3, sigmoid, 3 -> 7
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            g = torch.sigmoid(torch.nn.functional.avg_pool2d(x, 2, 2))
            return x * torch.nn.functional.interpolate(g, size=x.shape[-2:], mode="nearest")

    path = export_onnx_for_tests(Gate().eval(), tmp_path / "gate.onnx", (4, 7, 7))
    rng = np.random.default_rng(3)
    rep, x = rng.standard_normal((16, 4, 7, 7)).astype(np.float32), rng.standard_normal((4, 4, 7, 7)).astype(np.float32)
    res = convert_onnx_to_tflite(path, tmp_path / "gate.tflite", tmp_path / "gate_int8.tflite", rep)
    with torch.no_grad():
        ref = Gate()(torch.from_numpy(x)).numpy()
    fp32 = run_artifact(res.fp32_path, x)
    assert np.abs(fp32 - ref).max() <= 1e-5
    report = tfl_inspect.assert_fully_integer(res.int8_path)
    # + one TRANSPOSE: the 4-D graph output goes back to ONNX's NCHW layout
    assert report.op_counts == {"AVERAGE_POOL_2D": 1, "LOGISTIC": 1, "RESIZE_NEAREST_NEIGHBOR": 1, "MUL": 1,
                                "TRANSPOSE": 1}
    q = run_artifact(res.int8_path, x)
    assert np.abs(q - ref).max() <= 0.1 * np.abs(ref).max()


@pytest.mark.parametrize(("in_hw", "kwargs", "match"), [
    ((3, 3), {"sizes": (1, 3, 6, 6), "mode": "linear"}, "mode=linear"),
    ((3, 3), {"sizes": (1, 3, 6, 6), "nearest_mode": "round_prefer_floor"},
     "coordinate_transformation_mode=asymmetric with nearest_mode=round_prefer_floor"),
    ((3, 3), {"sizes": (1, 3, 6, 6), "coordinate_transformation_mode": "tf_crop_and_resize"},
     "coordinate_transformation_mode=tf_crop_and_resize"),
    ((3, 3), {"scales": (1.0, 1.0, 2.2, 2.2)}, "scale 2.2"),  # ONNX maps with 2.2, TFLite with 6/3
    ((3, 3), {"sizes": (1, 6, 6, 6)}, "batch or channel"),
])
def test_unsupported_resize_is_refused_with_the_attribute(in_hw: tuple[int, int], kwargs: dict,
                                                          match: str) -> None:
    with pytest.raises(ExportError, match=match) as err:
        onnx_to_tf_function(_resize_model(in_hw, **kwargs))
    assert "Resize" in err.value.message and "/gate/Resize" in err.value.message
    assert err.value.hint


def test_average_pool_floor_and_refused_ceil() -> None:
    from onnx import TensorProto, helper

    def pool(ceil: int) -> onnx.ModelProto:
        node = helper.make_node("AveragePool", ["input"], ["logits"], name="/dfc/AveragePool", kernel_shape=[2, 2],
                                strides=[2, 2], ceil_mode=ceil, count_include_pad=1)
        graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 7, 7])],
                                  [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    assert _against_onnxruntime(pool(0), (7, 7)) <= 1e-6  # 7 -> 3
    with pytest.raises(ExportError, match="AveragePool.*ceil_mode") as err:
        onnx_to_tf_function(pool(1))
    assert "/dfc/AveragePool" in err.value.message
