"""Read a ``.tflite`` file's ops and tensor types, and check that an INT8 model is fully integer.

Reads the flatbuffer directly through the schema bindings (no interpreter, no TensorFlow): the
interpreter's own op list is rewritten by delegates (XNNPACK shows up as DELEGATE nodes), while the
file's operator list is what a phone will execute.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ghostnet_edge.errors import ExportError
from ghostnet_edge.export.tflite.metadata import load_model_bytes, schema

_FLOAT_TYPES = frozenset({"FLOAT32", "FLOAT16", "FLOAT64", "BFLOAT16"})
# Ops that only move or reshape data: allowed to carry any type (none appear with floats in our graphs).
_QUANT_OPS = frozenset({"QUANTIZE", "DEQUANTIZE"})


def _enum_names(enum_cls: Any) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


@dataclass(frozen=True)
class _Tensor:
    index: int
    name: str
    dtype: str
    shape: tuple[int, ...]
    constant: bool
    scale: tuple[float, ...]
    zero_point: tuple[int, ...]


@dataclass(frozen=True)
class _Op:
    name: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


@dataclass
class TfliteGraph:
    """Subgraph 0 of a TFLite model: ops in execution order, tensors, graph inputs/outputs."""

    ops: list[_Op]
    tensors: list[_Tensor]
    inputs: list[int]
    outputs: list[int]


def _read_tensor(model: Any, sg: Any, i: int, type_names: dict[int, str]) -> _Tensor:
    t = sg.Tensors(i)
    buf = model.Buffers(t.Buffer())
    constant = bool(buf is not None and not buf.DataIsNone() and buf.DataLength() > 0)
    q = t.Quantization()
    scale = tuple(float(x) for x in q.ScaleAsNumpy()) if q is not None and q.ScaleLength() else ()
    zp = tuple(int(x) for x in q.ZeroPointAsNumpy()) if q is not None and q.ZeroPointLength() else ()
    return _Tensor(i, (t.Name() or b"").decode(), type_names.get(t.Type(), str(t.Type())),
                   tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else (), constant, scale, zp)


def _data(path_or_bytes: Path | str | bytes) -> bytes:
    return path_or_bytes if isinstance(path_or_bytes, bytes | bytearray) else load_model_bytes(path_or_bytes)


@dataclass(frozen=True)
class TfliteIO:
    """The main subgraph's input and output tensors, in order."""

    inputs: list[_Tensor]
    outputs: list[_Tensor]


def read_io(path_or_bytes: Path | str | bytes) -> TfliteIO:
    """Only the main subgraph's input and output tensors: what the metadata and its checks need, without
    reading every other tensor (GhostNet 1.0x FP32: 0.017 s for :func:`read_graph`, under a millisecond
    for this, ``benchmarks/export_parts.py`` on the project's AMD EPYC)."""
    data = _data(path_or_bytes)
    s = schema()
    model = s.Model.GetRootAs(data, 0)
    sg = model.Subgraphs(0)
    type_names = _enum_names(s.TensorType)
    inputs = [int(x) for x in sg.InputsAsNumpy()] if sg.InputsLength() else []
    outputs = [int(x) for x in sg.OutputsAsNumpy()] if sg.OutputsLength() else []
    return TfliteIO([_read_tensor(model, sg, i, type_names) for i in inputs],
                    [_read_tensor(model, sg, i, type_names) for i in outputs])


def read_graph(path_or_bytes: Path | str | bytes) -> TfliteGraph:
    """Parse the main subgraph of a ``.tflite`` file (path or bytes)."""
    data = _data(path_or_bytes)
    s = schema()
    model = s.Model.GetRootAs(data, 0)
    op_names = _enum_names(s.BuiltinOperator)
    type_names = _enum_names(s.TensorType)
    codes = []
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        # The schema keeps a deprecated int8 code for old files; the real code is the larger of the two.
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        name = op_names.get(code, f"OP_{code}")
        if name == "CUSTOM":
            name = f"CUSTOM:{(oc.CustomCode() or b'').decode()}"
        codes.append(name)
    sg = model.Subgraphs(0)
    tensors = [_read_tensor(model, sg, i, type_names) for i in range(sg.TensorsLength())]
    ops = []
    for i in range(sg.OperatorsLength()):
        op = sg.Operators(i)
        ins = tuple(int(x) for x in op.InputsAsNumpy()) if op.InputsLength() else ()
        outs = tuple(int(x) for x in op.OutputsAsNumpy()) if op.OutputsLength() else ()
        ops.append(_Op(codes[op.OpcodeIndex()], ins, outs))
    inputs = [int(x) for x in sg.InputsAsNumpy()] if sg.InputsLength() else []
    outputs = [int(x) for x in sg.OutputsAsNumpy()] if sg.OutputsLength() else []
    return TfliteGraph(ops, tensors, inputs, outputs)


def tflite_ops(path: Path | str | bytes) -> list[str]:
    """Builtin op names of the main subgraph in execution order (e.g. ``["PAD", "CONV_2D", ...]``)."""
    return [op.name for op in read_graph(path).ops]


def op_counts(path: Path | str | bytes) -> dict[str, int]:
    """How many times each op appears, most frequent first."""
    return dict(Counter(tflite_ops(path)).most_common())


def tensor_types(path: Path | str | bytes) -> dict[str, str]:
    """Tensor name -> element type (``INT8``, ``INT32``, ``FLOAT32``...) for every tensor of the main subgraph."""
    return {t.name or f"tensor_{t.index}": t.dtype for t in read_graph(path).tensors}


def io_quantization(path: Path | str | bytes) -> dict[str, Any]:
    """Type, shape, scale and zero point of the graph's input and output (scale 0 for float I/O)."""
    io = read_io(path)

    def describe(t: _Tensor) -> dict[str, Any]:
        return {"name": t.name, "dtype": t.dtype, "shape": list(t.shape),
                "scale": t.scale[0] if t.scale else 0.0, "zero_point": t.zero_point[0] if t.zero_point else 0}

    return {"input": describe(io.inputs[0]), "output": describe(io.outputs[0])}


@dataclass
class IntegerReport:
    """What :func:`assert_fully_integer` checked."""

    op_counts: dict[str, int]
    num_ops: int
    depthwise_convs: int
    grouped_conv2d: int
    io_dtypes: tuple[str, str]
    violations: list[str] = field(default_factory=list)


def check_fully_integer(path: Path | str | bytes, float_io: bool = False,
                        expected_depthwise: int | None = None) -> IntegerReport:
    """Collect every reason the model is not a clean full-integer graph (see :func:`assert_fully_integer`)."""
    g = read_graph(path)
    graph_in, graph_out = set(g.inputs), set(g.outputs)
    violations: list[str] = []
    in_t, out_t = g.tensors[g.inputs[0]], g.tensors[g.outputs[0]]
    want_float = "FLOAT32"
    for role, t in (("input", in_t), ("output", out_t)):
        if float_io and t.dtype != want_float:
            violations.append(f"graph {role} '{t.name}' is {t.dtype}, expected FLOAT32 (float I/O)")
        if not float_io and t.dtype not in ("INT8", "UINT8"):
            violations.append(f"graph {role} '{t.name}' is {t.dtype}, expected INT8/UINT8")
    depthwise = grouped = 0
    for k, op in enumerate(g.ops):
        where = f"op {k} {op.name}"
        if op.name in _QUANT_OPS:
            at_input = any(i in graph_in for i in op.inputs)
            at_output = any(o in graph_out for o in op.outputs)
            if not (at_input or at_output):
                violations.append(f"{where}: {op.name} inside the graph (a float island or a requantize step)")
            continue
        for i in (*op.inputs, *op.outputs):
            if i < 0:
                continue  # optional input left out
            t = g.tensors[i]
            if t.dtype in _FLOAT_TYPES:
                kind = "constant" if t.constant else "activation"
                violations.append(f"{where}: {kind} tensor '{t.name}' is {t.dtype}")
        if op.name == "DEPTHWISE_CONV_2D":
            depthwise += 1
        if op.name == "CONV_2D" and len(op.inputs) > 1:
            c_in = g.tensors[op.inputs[0]].shape[-1]
            c_filter = g.tensors[op.inputs[1]].shape[-1]
            if c_filter != c_in:
                grouped += 1
                violations.append(f"{where}: grouped CONV_2D ({c_in} input channels, filter reads {c_filter}); "
                                  "a depthwise conv must be DEPTHWISE_CONV_2D")
    if expected_depthwise is not None and depthwise != expected_depthwise:
        violations.append(f"{depthwise} DEPTHWISE_CONV_2D ops, but the model has {expected_depthwise} "
                          "depthwise convolutions")
    counts = dict(Counter(op.name for op in g.ops).most_common())
    return IntegerReport(counts, len(g.ops), depthwise, grouped, (in_t.dtype, out_t.dtype), violations)


def assert_fully_integer(path: Path | str | bytes, float_io: bool = False,
                         expected_depthwise: int | None = None) -> IntegerReport:
    """Raise :class:`ExportError` unless the model computes in integers only.

    Checks: no float tensor on any compute op (this covers the squeeze-excite gate, the residual adds and
    the classifier); QUANTIZE/DEQUANTIZE only at the graph's ends (and only there when ``float_io``);
    graph I/O int8/uint8 (or float32 with ``float_io``); no grouped CONV_2D standing in for a depthwise
    conv; and, when given, exactly ``expected_depthwise`` DEPTHWISE_CONV_2D ops.
    """
    report = check_fully_integer(path, float_io=float_io, expected_depthwise=expected_depthwise)
    if report.violations:
        shown = "; ".join(report.violations[:8])
        more = f" (and {len(report.violations) - 8} more)" if len(report.violations) > 8 else ""
        raise ExportError(f"the TFLite model is not fully integer: {shown}{more}",
                          "convert with a representative dataset and TFLITE_BUILTINS_INT8 "
                          "(convert_onnx_to_tflite does), and check the ONNX graph for unsupported ops")
    return report
