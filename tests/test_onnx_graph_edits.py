"""onnxruntime's quantizer with its initializer look-ups and input rewiring done without whole-list scans
(export/onnx/graph_edits.py): the same results, the same INT8 model byte for byte."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ghostnet_edge.export.onnx import graph_edits as ge


def test_first_by_name_is_onnxruntimes_find_by_name() -> None:
    from onnxruntime.quantization.quant_utils import find_by_name

    items = [SimpleNamespace(name=n, i=i) for i, n in enumerate(["a", "b", "a", "c"])]
    for name in ("a", "b", "c", "missing", ""):
        assert ge.first_by_name(name, items) is find_by_name(name, items)
    assert ge.first_by_name("a", []) is None


def test_replace_input_of_all_nodes_is_onnxruntimes() -> None:
    from onnx import helper
    from onnxruntime.quantization.onnx_model import ONNXModel

    def graph() -> ONNXModel:
        nodes = [helper.make_node("Add", ["x", "x"], ["y"]), helper.make_node("Mul", ["y", "x"], ["z"]),
                 helper.make_node("Relu", ["z"], ["w"]), helper.make_node("Sum", ["x", "w", "x", "y"], ["v"])]
        return ONNXModel(helper.make_model(helper.make_graph(nodes, "g", [], [])))

    ours, theirs = graph(), graph()
    for old, new in (("x", "x_q"), ("z", "z_q"), ("absent", "q")):
        ge.replace_input_of_all_nodes(ours, old, new)
        theirs.replace_input_of_all_nodes(old, new)
        assert ours.model.SerializeToString() == theirs.model.SerializeToString()
    assert [list(n.input) for n in ours.model.graph.node][0] == ["x_q", "x_q"]


def test_replacements_apply_and_are_undone() -> None:
    from onnxruntime.quantization import base_quantizer, onnx_model, qdq_quantizer, quant_utils

    find, replace = quant_utils.find_by_name, onnx_model.ONNXModel.replace_input_of_all_nodes
    with ge.linear_graph_edits() as active:
        assert active  # the onnxruntime this project pins: the replacements apply
        for module in (quant_utils, onnx_model, base_quantizer, qdq_quantizer):
            assert module.find_by_name is ge.first_by_name
        assert onnx_model.ONNXModel.replace_input_of_all_nodes is ge.replace_input_of_all_nodes
    with pytest.raises(RuntimeError), ge.linear_graph_edits():
        raise RuntimeError("a failed quantization")
    for module in (quant_utils, onnx_model, base_quantizer, qdq_quantizer):
        assert module.find_by_name is find
    assert onnx_model.ONNXModel.replace_input_of_all_nodes is replace


@pytest.mark.parametrize("name", ["ghostnet_cifar_050", "mobilenetv3_large_cifar_100"])
def test_quantized_model_is_byte_identical(name: str, quantized_both_ways) -> None:
    from ghostnet_edge.export.onnx.quantize import choose_activation_type

    choice = choose_activation_type("int8", machine="x86_64", flags=set())
    for per_channel in (True, False):
        before, now = quantized_both_ways(name, "fast_graph_edits", choice, per_channel)
        assert before == now, per_channel
