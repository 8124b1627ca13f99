"""The in-graph MinMax pass (calib/minmax.py) gives exactly the ranges of onnxruntime's MinMax calibrator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ghostnet_edge.calib import minmax as mm
from ghostnet_edge.calib import ranges as cr
from ghostnet_edge.errors import ExportError


@pytest.fixture(scope="module", params=["ghostnet_cifar_050", "mobilenetv3_large_cifar_100"])
def onnx_model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ghostnet_edge.export.onnx.convert import export_onnx
    from ghostnet_edge.models import create_model, get_spec

    out = tmp_path_factory.mktemp("minmax") / "model.onnx"
    export_onnx(create_model(request.param, seed=0).eval(), get_spec(request.param).input_size, out)
    return out


def test_same_ranges_as_onnxruntimes_calibrator(onnx_model: Path) -> None:
    """Every tensor onnxruntime's MinMax calibrator measures, with the identical float32 range; the
    Concat outputs among them derived, not measured."""
    import onnx

    calib = np.random.default_rng(1).standard_normal((20, 3, 32, 32)).astype(np.float32)  # 3 batches, last short
    model = onnx.load(str(onnx_model))
    skipped = cr.activation_inputs(model)
    ours = cr._collect(onnx_model, calib, "minmax", 1)
    theirs = cr._collect_histograms(onnx_model, model, calib, "minmax", 1, set(skipped))
    for name, out in skipped.items():
        if out in theirs:
            theirs[name] = theirs[out]
    assert set(ours) == set(theirs)
    assert ours == theirs  # exact: a minimum does not depend on the order it is taken in


def test_concat_outputs_are_derived_from_their_inputs(onnx_model: Path) -> None:
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(str(onnx_model)))
    names, ranks = mm.calibrated_tensors(model)
    derived = mm.derived_concats(model, names)
    concats = [n.output[0] for n in model.graph.node if n.op_type == "Concat"]
    if "ghostnet" in str(onnx_model.parent):
        assert concats and set(derived) == set(concats)  # every Ghost module's concatenation
    assert all(ranks[n] >= 0 for n in names)


def _concat_model(opset: int) -> bytes:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2, 3, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 6, 3, 3])
    nodes = [helper.make_node("Neg", ["x"], ["n"]), helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Concat", ["n", "r"], ["c"], axis=1),
             helper.make_node("Concat", ["c", "x"], ["y"], axis=1)]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


@pytest.mark.parametrize("opset", [13, 18])  # ReduceMin's axes: an attribute before opset 18, an input since
def test_ranges_of_a_small_graph_by_hand(opset: int) -> None:
    model = _concat_model(opset)
    x = np.random.default_rng(2).standard_normal((5, 2, 3, 3)).astype(np.float32)
    got = mm.collect_minmax(model, x, "x", skip=(), threads=1, batch=2)
    f32 = lambda v: float(np.float32(v))  # noqa: E731
    assert got["x"] == (f32(x.min()), f32(x.max()))
    assert got["n"] == (f32(-x.max()), f32(-x.min()))
    assert got["r"] == (0.0, f32(x.max()))
    union = lambda a, b: (min(a[0], b[0]), max(a[1], b[1]))  # noqa: E731
    assert got["c"] == union(got["n"], got["r"]) == (f32(-x.max()), f32(max(x.max(), -x.min())))  # derived
    assert got["y"] == union(got["c"], got["x"])  # a concat of a concat
    assert set(mm.derived_concats(model, ["x", "n", "r", "c", "y"])) == {"c", "y"}


def test_a_model_that_computes_nan_is_a_clear_error() -> None:
    x = np.full((2, 2, 3, 3), np.nan, np.float32)
    with pytest.raises(ExportError, match="no finite value"):
        mm.collect_minmax(_concat_model(13), x, "x", skip=(), threads=1, batch=2)
