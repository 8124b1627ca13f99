"""Graph edits of onnxruntime's quantizer, done without its repeated whole-list scans (same model, byte for
byte).

onnxruntime's QDQ quantizer looks initializers up by name with ``quant_utils.find_by_name`` and
``ONNXModel.get_initializer``, which walk the list from its start each time (most look-ups ask whether a
name is an initializer at all, and walk it to its end); ``ONNXModel.initializer_extend`` re-checks every
initializer already in the model each time it adds one; and it moves each quantized tensor's consumers
onto its Q/DQ output with ``ONNXModel.replace_input_of_all_nodes``, which makes one Python call per node
of the graph. The lists grow as the Q/DQ nodes and their scales are added. For GhostNet 1.0x they run
2,716, 369, 288 and 272 times per quantization; ``benchmarks/export_parts.py`` counts them and times
``quantize_static`` with and without the replacements below (0.97 s against 0.48 s on the project's AMD
EPYC, ``docs/results/export_parts_amd.md``).

* :class:`NameIndex` answers both look-ups from a name -> position index of each list, extended with
  the items appended since the last look-up and rebuilt whenever the list changed in any other way (it
  got shorter, or its last indexed item is no longer where it was). It relies on one property of the
  quantizer, which the byte-identical tests check: an item's name is not changed in place after the item
  is in the list (onnxruntime names its new tensors before adding them).
* :func:`initializer_extend` checks the new initializers, and the old ones only when the model may hold
  a float8 tensor (the only type that check looks at).
* :func:`replace_input_of_all_nodes` asks each node whether it reads the old name (one containment test
  in protobuf's C code) before rewriting its inputs.

An onnxruntime without these functions, or with other signatures, keeps its own; the index is used only
with the onnxruntime versions listed in ``INDEXED_VERSIONS``, whose quantizer was checked for the property
above.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from ghostnet_edge.utils.patching import swapped

# The modules that import find_by_name by name (each holds its own reference to the function).
_FIND_BY_NAME_USERS = ("quant_utils", "onnx_model", "base_quantizer", "qdq_quantizer", "onnx_quantizer",
                       "operators.conv", "operators.gemm", "operators.matmul")
_LOCK = threading.Lock()
# onnxruntime releases whose quantizer names a tensor only before adding it to a list (read in their
# source: base_quantizer, qdq_quantizer, quant_utils, onnx_model) and gives byte-identical models with
# NameIndex (tests/test_onnx_graph_edits.py). Others look names up by scanning, as they do themselves.
INDEXED_VERSIONS = ("1.32.",)
_FLOAT8_TYPES = frozenset({17, 18, 19, 20, 23})  # TensorProto FLOAT8E4M3FN, ..., FLOAT8E5M2FNUZ, FLOAT4E2M1


def first_by_name(item_name: str, item_list: Iterable[Any]) -> Any:
    """The first item of ``item_list`` whose ``name`` is ``item_name``, else None (``find_by_name``)."""
    for item in item_list:
        if item.name == item_name:
            return item
    return None


class _Indexed:
    """What :class:`NameIndex` knows of one list: its items as last seen, the first item of each name, how
    many items have each name, and whether one was float8."""

    def __init__(self, item_list: Any) -> None:
        self.list = item_list
        self.items: list[Any] = []
        self.first: dict[str, Any] = {}
        self.count: dict[str, int] = {}
        self.float8 = False

    def append(self, item: Any) -> None:
        self.items.append(item)
        name = item.name
        self.first.setdefault(name, item)
        self.count[name] = self.count.get(name, 0) + 1
        self.float8 = self.float8 or getattr(item, "data_type", None) in _FLOAT8_TYPES

    def follows(self, item_list: Any, size: int) -> bool:
        """Bring the index up to ``item_list`` when it changed by appends or by the removal of one item;
        False when it changed in another way."""
        items, n = self.items, len(self.items)
        if size >= n and (n == 0 or item_list[n - 1] is items[-1]):
            for i in range(n, size):
                self.append(item_list[i])
            return True
        if size != n - 1:
            return False
        lo, hi = 0, n - 1  # the removed item: the first position whose item is not the one seen there
        while lo < hi:
            mid = (lo + hi) // 2
            if item_list[mid] is items[mid]:
                lo = mid + 1
            else:
                hi = mid
        if lo < size and (item_list[lo] is not items[lo + 1] or item_list[size - 1] is not items[-1]):
            return False
        removed = items.pop(lo)
        name = removed.name
        self.count[name] -= 1
        if self.first.get(name) is removed:
            del self.first[name]
            if self.count[name]:  # the next item of that name is now the first
                self.first[name] = next(it for it in items[lo:] if it.name == name)
        return True


class NameIndex:
    """``find_by_name`` for lists that change by appends and removals (see the module docstring)."""

    def __init__(self) -> None:
        self._lists: dict[int, _Indexed] = {}  # by id(list); each holds its list, so the id stays its own

    def first(self, item_name: str, item_list: Any) -> Any:
        """The first item of ``item_list`` named ``item_name``, else None."""
        if not _is_repeated_message_field(item_list):
            # A Python list (short, built by the quantizer) can also change by item assignment, which the
            # index would not see; an iterator has nothing to index: both are scanned.
            return first_by_name(item_name, item_list)
        item = self._state(item_list).first.get(item_name)
        if item is not None and item.name != item_name:  # renamed in place after it was indexed
            self._lists.pop(id(item_list), None)
            return first_by_name(item_name, item_list)
        return item

    def holds_float8(self, tensors: Any) -> bool:
        """Whether a tensor of the list ``tensors`` is (or, since removed, was) float8."""
        return self._state(tensors).float8

    def _state(self, item_list: Any) -> _Indexed:
        size = len(item_list)
        state = self._lists.get(id(item_list))
        if state is None or state.list is not item_list or not state.follows(item_list, size):
            state = self._lists[id(item_list)] = _Indexed(item_list)
            for i in range(size):
                state.append(item_list[i])
        return state


def _is_repeated_message_field(obj: Any) -> bool:
    """A protobuf repeated message field (a graph's initializers, nodes, inputs): it changes only by
    appends, insertions, removals and clears, never by item assignment."""
    global _REPEATED_TYPES
    if _REPEATED_TYPES is None:
        from onnx import GraphProto

        _REPEATED_TYPES = (type(GraphProto().initializer),)
    return isinstance(obj, _REPEATED_TYPES)


_REPEATED_TYPES: tuple[type, ...] | None = None
_INDEX: NameIndex | None = None  # the index of the quantization running now (under _LOCK)


def _lookup(item_name: str, item_list: Iterable[Any]) -> Any:
    index = _INDEX
    return index.first(item_name, item_list) if index is not None else first_by_name(item_name, item_list)


def indexed_first_by_name(item_name: str, item_list: Iterable[Any]) -> Any:
    """:func:`first_by_name` through the running quantization's :class:`NameIndex`."""
    return _lookup(item_name, item_list)


def get_initializer(self: Any, name: str) -> Any:
    """``ONNXModel.get_initializer``: the first initializer named ``name``, else None (through the same
    index; benchmarks/export_parts.py counts these calls apart from find_by_name's)."""
    return _lookup(name, self.model.graph.initializer)


def initializer_extend(self: Any, inits: Any) -> None:
    """``ONNXModel.initializer_extend``: the initializers already in the model are checked again only when
    one of them, or of ``inits``, is float8 (the only type that check looks at)."""
    if len(inits) == 0:
        raise ValueError("Can add an empty list.")
    index = _INDEX
    if (index is None or index.holds_float8(self.model.graph.initializer)
            or any(init.data_type in _FLOAT8_TYPES for init in inits)):
        for init in self.initializer():
            self._check_init(init, "gain")
    for init in inits:
        self._check_init(init)
        self.model.graph.initializer.append(init)


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


def _indexed_version() -> bool:
    import onnxruntime

    return str(getattr(onnxruntime, "__version__", "")).startswith(INDEXED_VERSIONS)


@contextlib.contextmanager
def linear_graph_edits() -> Iterator[bool]:
    """While active, onnxruntime's quantizer uses the look-ups and edits of this module (see its
    docstring). Yields whether they are in place."""
    global _INDEX
    from onnxruntime.quantization import onnx_model, quant_utils

    model_cls = onnx_model.ONNXModel
    find = getattr(quant_utils, "find_by_name", None)
    methods = {"replace_input_of_all_nodes": (replace_input_of_all_nodes, ("self", "old_input_name", "new_input_name"))}
    indexed = _indexed_version()
    if indexed:
        methods["get_initializer"] = (get_initializer, ("self", "name"))
        methods["initializer_extend"] = (initializer_extend, ("self", "inits"))
    originals = {name: getattr(model_cls, name, None) for name in methods}
    if (find is None or _params(find) != ("item_name", "item_list")
            or any(fn is None or _params(fn) != methods[name][1] for name, fn in originals.items())):
        yield False
        return
    users = []
    for name in _FIND_BY_NAME_USERS:
        with contextlib.suppress(ImportError):
            module = importlib.import_module(f"onnxruntime.quantization.{name}")
            if getattr(module, "find_by_name", None) is find:  # the same function, imported by name
                users.append(module)
    lookup = indexed_first_by_name if indexed else first_by_name
    with _LOCK:
        _INDEX = NameIndex() if indexed else None
        try:
            with swapped(*[(module, "find_by_name", lookup) for module in users],
                         *[(model_cls, name, fn) for name, (fn, _) in methods.items()]):
                yield True
        finally:
            _INDEX = None
