"""Two graph edits of onnxruntime's quantizer, done without its repeated whole-list scans (same model, byte
for byte).

onnxruntime's QDQ quantizer looks initializers up by name with ``quant_utils.find_by_name``, which builds
the list of every match before it returns the first, and moves each quantized tensor's consumers onto
its Q/DQ output with ``ONNXModel.replace_input_of_all_nodes``, which makes one Python call per node of the
graph, and both lists grow as the Q/DQ nodes and their scales are added. For GhostNet 1.0x they run 2,716
and 272 times per quantization; ``benchmarks/export_parts.py`` counts them and times ``quantize_static``
with and without the replacements below (0.93 s against 0.74 s on the project's AMD EPYC,
``docs/results/export_parts_amd.md``). :func:`first_by_name` stops at the first match; :func:`replace_input_of_all_nodes` asks each node
whether it reads the old name (one containment test in protobuf's C code) before rewriting its inputs.
Both do exactly what the originals do. An onnxruntime without these functions, or with other
signatures, keeps its own.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import threading
from collections.abc import Iterable, Iterator
from typing import Any

# The modules that import find_by_name by name (each holds its own reference to the function).
_FIND_BY_NAME_USERS = ("quant_utils", "onnx_model", "base_quantizer", "qdq_quantizer", "onnx_quantizer",
                       "operators.conv", "operators.gemm", "operators.matmul")
_LOCK = threading.Lock()


def first_by_name(item_name: str, item_list: Iterable[Any]) -> Any:
    """The first item of ``item_list`` whose ``name`` is ``item_name``, else None (``find_by_name``)."""
    for item in item_list:
        if item.name == item_name:
            return item
    return None


def replace_input_of_all_nodes(self: Any, old_input_name: str, new_input_name: str) -> None:
    """Every node input named ``old_input_name`` is renamed ``new_input_name`` (``ONNXModel``'s method)."""
    assert isinstance(old_input_name, str) and isinstance(new_input_name, str)
    for node in self.model.graph.node:
        if old_input_name in node.input:
            inputs = node.input
            for j in range(len(inputs)):
                if inputs[j] == old_input_name:
                    inputs[j] = new_input_name


def _params(fn: Any) -> tuple[str, ...]:
    try:
        return tuple(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return ()


@contextlib.contextmanager
def linear_graph_edits() -> Iterator[bool]:
    """While active, onnxruntime's quantizer uses :func:`first_by_name` and :func:`replace_input_of_all_nodes`.
    Yields whether they are in place."""
    from onnxruntime.quantization import onnx_model, quant_utils

    find, replace = getattr(quant_utils, "find_by_name", None), getattr(onnx_model.ONNXModel,
                                                                        "replace_input_of_all_nodes", None)
    if (find is None or replace is None or _params(find) != ("item_name", "item_list")
            or _params(replace) != ("self", "old_input_name", "new_input_name")):
        yield False
        return
    users = []
    for name in _FIND_BY_NAME_USERS:
        with contextlib.suppress(ImportError):
            module = importlib.import_module(f"onnxruntime.quantization.{name}")
            if getattr(module, "find_by_name", None) is find:  # the same function, imported by name
                users.append(module)
    with _LOCK:
        for module in users:
            module.find_by_name = first_by_name
        onnx_model.ONNXModel.replace_input_of_all_nodes = replace_input_of_all_nodes
        try:
            yield True
        finally:
            onnx_model.ONNXModel.replace_input_of_all_nodes = replace
            for module in users:
                module.find_by_name = find
