"""onnxruntime's quantizer with its initializer look-ups and input rewiring done without whole-list scans
(export/onnx/graph_edits.py): the same results, the same INT8 model byte for byte."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import pytest

from ghostnet_edge.export.onnx import graph_edits as ge


def test_first_by_name_is_onnxruntimes_find_by_name() -> None:
    from onnxruntime.quantization.quant_utils import find_by_name

    items = [SimpleNamespace(name=n, i=i) for i, n in enumerate(["a", "b", "a", "c"])]
    for name in ("a", "b", "c", "missing", ""):
        assert ge.first_by_name(name, items) is find_by_name(name, items)
    assert ge.first_by_name("a", []) is None


def _tensor(name: str, data_type: int = 1):
    from onnx import TensorProto

    t = TensorProto()
    t.name, t.data_type = name, data_type
    return t


def test_name_index_follows_appends_and_removals_like_a_scan() -> None:
    """Random appends, removals (first, middle, last, duplicates) and clears of a protobuf list: after
    each, every name is found as find_by_name finds it."""
    import random

    from onnx import GraphProto
    from onnxruntime.quantization.quant_utils import find_by_name

    rng = random.Random(0)
    graph = GraphProto()
    inits = graph.initializer
    index = ge.NameIndex()
    names = [f"t{i}" for i in range(12)]
    for step in range(600):
        op = rng.random()
        if op < 0.5 or not len(inits):
            inits.append(_tensor(rng.choice(names)))
        elif op < 0.8:
            inits.remove(inits[rng.randrange(len(inits))])
        elif op < 0.83:
            del inits[:rng.randrange(len(inits) + 1)]
        else:
            k = rng.randrange(len(inits))
            inits.remove(inits[k])
            inits.append(_tensor(rng.choice(names)))
        for name in (*names, "absent"):
            ours, theirs = index.first(name, inits), find_by_name(name, inits)
            if theirs is None:
                assert ours is None, (step, name)
            else:
                assert ours is not None and ours.name == name, (step, name)
                assert ours.SerializeToString() == theirs.SerializeToString(), (step, name)
                assert list(inits).index(ours) == list(inits).index(theirs), (step, name)


def test_name_index_after_an_item_is_renamed_in_place() -> None:
    """The one change the index does not follow: the old name is then looked up by a scan, the new one
    is not found (onnxruntime's quantizer names its tensors before adding them)."""
    from onnx import GraphProto

    graph = GraphProto()
    for name in ("a", "b", "a"):
        graph.initializer.append(_tensor(name))
    index = ge.NameIndex()
    assert index.first("a", graph.initializer) is graph.initializer[0]
    graph.initializer[0].name = "c"
    assert index.first("a", graph.initializer) is graph.initializer[2]


def test_name_index_scans_python_lists_and_iterators() -> None:
    """A Python list can change by item assignment, which an index would not see: it is scanned."""
    items = [SimpleNamespace(name=n) for n in ("a", "b", "a")]
    index = ge.NameIndex()
    assert index.first("a", items) is items[0]
    items[0] = SimpleNamespace(name="c")
    assert index.first("a", items) is items[2] and index.first("c", items) is items[0]
    assert index.first("b", iter(items)) is items[1]
    assert index.first("d", items) is None


def test_float8_flag_of_the_index() -> None:
    from onnx import GraphProto, TensorProto

    graph = GraphProto()
    index = ge.NameIndex()
    graph.initializer.append(_tensor("w"))
    assert not index.holds_float8(graph.initializer)
    graph.initializer.append(_tensor("f8", TensorProto.FLOAT8E4M3FN))
    assert index.holds_float8(graph.initializer)


def test_initializer_extend_checks_float8_as_onnxruntime_does() -> None:
    """With the index active, a float8 initializer holding NaN is refused as onnxruntime refuses it,
    whether it is new or already in the model."""
    from onnx import TensorProto, helper
    from onnxruntime.quantization.onnx_model import ONNXModel

    def nan_f8(name: str) -> TensorProto:
        t = _tensor(name, TensorProto.FLOAT8E4M3FN)
        t.dims.append(1)
        t.raw_data = bytes([0x7F])
        return t

    for mode in ("ours", "theirs"):
        with ge.linear_graph_edits() if mode == "ours" else contextlib.nullcontext():
            model = ONNXModel(helper.make_model(helper.make_graph([], "g", [], [])))
            model.initializer_extend([_tensor("a")])
            with pytest.raises(ValueError, match="nan"):
                model.initializer_extend([nan_f8("b")])
            model.model.graph.initializer.append(nan_f8("c"))
            with pytest.raises(ValueError, match="nan"):
                model.initializer_extend([_tensor("d")])
            with pytest.raises(ValueError, match="empty"):
                model.initializer_extend([])


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
    getter, extend = onnx_model.ONNXModel.get_initializer, onnx_model.ONNXModel.initializer_extend
    with ge.linear_graph_edits() as active:
        assert active  # the onnxruntime this project pins: the replacements apply
        for module in (quant_utils, onnx_model, base_quantizer, qdq_quantizer):
            assert module.find_by_name is ge.indexed_first_by_name
        assert onnx_model.ONNXModel.replace_input_of_all_nodes is ge.replace_input_of_all_nodes
        assert onnx_model.ONNXModel.get_initializer is ge.get_initializer
        assert onnx_model.ONNXModel.initializer_extend is ge.initializer_extend
        assert quant_utils.find_by_name is ge.indexed_first_by_name
    with pytest.raises(RuntimeError), ge.linear_graph_edits():
        raise RuntimeError("a failed quantization")
    for module in (quant_utils, onnx_model, base_quantizer, qdq_quantizer):
        assert module.find_by_name is find
    assert onnx_model.ONNXModel.replace_input_of_all_nodes is replace
    assert onnx_model.ONNXModel.get_initializer is getter
    assert onnx_model.ONNXModel.initializer_extend is extend
    assert ge._INDEX is None


@pytest.mark.parametrize("name", ["ghostnet_cifar_050", "mobilenetv3_large_cifar_100"])
def test_quantized_model_is_byte_identical(name: str, quantized_both_ways) -> None:
    from ghostnet_edge.export.onnx.quantize import choose_activation_type

    choice = choose_activation_type("int8", machine="x86_64", flags=set())
    for per_channel in (True, False):
        before, now = quantized_both_ways(name, "fast_graph_edits", choice, per_channel)
        assert before == now, per_channel
