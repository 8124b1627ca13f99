"""Calibrate the TFLite converter with ranges collected elsewhere, instead of its own interpreter pass.

TensorFlow's post-training quantization is two steps: a *calibrator* runs the float ``.tflite`` model
over the representative images and writes each activation tensor's min/max into the flatbuffer
(``QuantizationParameters.min/max``), then the MLIR quantizer turns that calibrated flatbuffer into the
integer model. The first step is the slow one (a single-threaded logging interpreter: 37 s for GhostNet
1.0x at 224x224 on 256 images, 25 times one forward pass). Here it is replaced by writing the ranges
that :mod:`ghostnet_edge.calib.ranges` collected on the FP32 ONNX model into the same fields; the MLIR
quantizer and everything after it are TensorFlow's own, unchanged. Written with TensorFlow's own
ranges, this path gives the same model (every op, tensor, scale and weight; tested), so the only change
is where the numbers come from, and the float graph is converted once instead of twice.

Which ONNX tensor a TFLite tensor holds follows from names: the translator builds every ONNX node
under a TF name scope made from the node's name (:func:`translate._scope`), and the converter names
each tensor after the TF op that produced it (the first of the ';'-joined names when ops were fused).
Ops that only move values (reshape, transpose, concatenation, zero padding) take the union of their
inputs' ranges, exactly what a calibrator would record. A tensor that cannot be placed (an op the
translator emits inside one ONNX node that no exact rule covers, a name the converter invented) makes
:func:`tflite_stats`
return the unplaced names, and the caller falls back to TensorFlow's own calibration.

Hard-swish is written by the translator as ``a = x / 6``, ``r = relu6(6 a + 3)`` (a 1x1 depthwise conv)
and ``y = a * r`` (``translate._hard_swish``), and the converter folds ``/ 6`` into the op that makes
``x``, which keeps that op's name: ``a`` and ``r`` are placed by :func:`hard_swish_stats` from the range
of the HardSwish node's input, exactly (``a`` is ``x`` scaled, ``r`` is ``x`` shifted and clamped).

The ranges also differ from the calibrator's in one respect, measured on GhostNet: TFLite runs ADD and
MUL in place, and its calibrator's logging then records a tensor consumed by one of them with the
values written over it (a ghost module's concatenation recorded with the range of the residual sum
after it; a squeeze-excite gate's ReLU6 with the range of the gate divided by 6 after it). Ranges from
the ONNX pass are each tensor's own values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Ops whose output holds only values of their activation inputs (PAD: and the zero padding).
_VALUE_MOVING = frozenset({"RESHAPE", "TRANSPOSE", "SQUEEZE", "EXPAND_DIMS", "CONCATENATION", "PAD"})
_FLOAT32 = 0  # TensorType.FLOAT32 in the TFLite schema


@dataclass
class StatsPlan:
    """Ranges for the float model's activation tensors (by tensor index), and what could not be placed."""

    stats: dict[int, tuple[float, float]] = field(default_factory=dict)
    unplaced: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.unplaced


def _name(t: Any) -> str:
    n = t.name
    return n.decode() if isinstance(n, bytes) else str(n or "")


def tensor_scope(tensor_name: str) -> str:
    """The TF name scope of the op that produced a tensor: ``a/b/Relu/Relu;a/b/Conv/BiasAdd`` -> ``a/b/Relu``."""
    first = tensor_name.split(";")[0]
    first = first.rsplit(":", 1)[0] if ":" in first.rsplit("/", 1)[-1] else first
    return first.rsplit("/", 1)[0] if "/" in first else ""


def onnx_scopes(onnx_proto: Any) -> dict[str, str | None]:
    """TF scope -> the ONNX tensor its node computes (None where two nodes share a scope)."""
    from ghostnet_edge.export.tflite.translate import _node_label, _scope

    out: dict[str, str | None] = {}
    for i, node in enumerate(onnx_proto.graph.node):
        outputs = [o for o in node.output if o]
        scope = _scope(_node_label(node, i))
        out[scope] = outputs[0] if len(outputs) == 1 and scope not in out else None
    return out


def onnx_hard_swish_inputs(onnx_proto: Any) -> dict[str, str]:
    """TF scope of each ONNX HardSwish node -> the ONNX tensor it reads (for :func:`hard_swish_stats`)."""
    from ghostnet_edge.export.tflite.translate import _node_label, _scope

    out: dict[str, str] = {}
    seen: set[str] = set()
    for i, node in enumerate(onnx_proto.graph.node):
        scope = _scope(_node_label(node, i))
        if scope in seen:
            out.pop(scope, None)  # two nodes in one scope: their tensors cannot be told apart
        elif node.op_type == "HardSwish" and node.input and node.input[0]:
            out[scope] = node.input[0]
        seen.add(scope)
    return out


def tflite_stats(model_t: Any, op_names: list[str], scopes: Mapping[str, str | None],
                 ranges: Mapping[str, tuple[float, float]], onnx_inputs: list[str],
                 onnx_outputs: list[str], hard_swish: Mapping[str, str] | None = None) -> StatsPlan:
    """Place ``ranges`` (ONNX tensor -> (lo, hi)) on the activation tensors of a float TFLite model.

    ``model_t`` is the flatbuffer's object tree (``ModelT``), ``op_names[i]`` the builtin name of
    ``model_t.operatorCodes[i]``, ``scopes`` from :func:`onnx_scopes`, ``hard_swish`` from
    :func:`onnx_hard_swish_inputs` (without it, a hard-swish written as a depthwise conv stays unplaced).
    """
    sg = model_t.subgraphs[0]
    tensors = sg.tensors
    plan = StatsPlan()
    inputs, outputs = list(sg.inputs), list(sg.outputs)
    producer: dict[int, tuple[str, list[int]]] = {}
    for op in sg.operators:
        kind = op_names[op.opcodeIndex]
        for o in op.outputs:
            producer[int(o)] = (kind, [int(i) for i in op.inputs if i >= 0])

    def scope_of(idx: int) -> str:
        return tensor_scope(_name(tensors[idx]))

    # A tensor is an intermediate of one ONNX node when an op of the same scope consumes it.
    inner: set[int] = set()
    for op in sg.operators:
        if op_names[op.opcodeIndex] in _VALUE_MOVING:
            continue
        out_scopes = {scope_of(int(o)) for o in op.outputs}
        for i in op.inputs:
            if i >= 0 and int(i) in producer and scope_of(int(i)) in out_scopes:
                inner.add(int(i))

    def place(idx: int, rng: tuple[float, float] | None, why: str) -> None:
        if rng is None:
            plan.unplaced.append(f"{_name(tensors[idx])} ({why})")
        else:
            plan.stats[idx] = (float(rng[0]), float(rng[1]))

    pending: dict[int, str] = {}   # tensors inside one ONNX node, placed last (see _place_inner)
    exact = hard_swish_stats(model_t, op_names, scope_of, hard_swish or {}, ranges)
    for k, idx in enumerate(inputs):
        name = onnx_inputs[k] if k < len(onnx_inputs) else None
        place(idx, ranges.get(name) if name else None, "graph input")
    for op in sg.operators:
        kind = op_names[op.opcodeIndex]
        for o in op.outputs:
            idx = int(o)
            if tensors[idx].type != _FLOAT32:
                continue
            if idx in exact:  # before the name: the op that makes a hard-swish's x / 6 is named after x
                plan.stats[idx] = exact[idx]
                continue
            if idx in outputs and len(outputs) == len(onnx_outputs):
                place(idx, ranges.get(onnx_outputs[outputs.index(idx)]), "graph output")
                continue
            if kind in _VALUE_MOVING:
                srcs = [plan.stats.get(i) for i in producer[idx][1] if i in plan.stats or i in producer]
                if srcs and all(s is not None for s in srcs):
                    lo = min(s[0] for s in srcs)  # type: ignore[index]
                    hi = max(s[1] for s in srcs)  # type: ignore[index]
                    place(idx, (min(lo, 0.0), max(hi, 0.0)) if kind == "PAD" else (lo, hi), kind)
                    continue
            if idx in inner:
                pending[idx] = kind
                continue
            onnx_name = scopes.get(scope_of(idx))
            place(idx, ranges.get(onnx_name) if onnx_name else None, f"{kind} with no ONNX tensor of that name")
    _place_inner(model_t, op_names, pending, plan)
    for idx, kind in pending.items():
        place(idx, None, f"{kind} inside one ONNX node")
    return plan


def _constant(model_t: Any, idx: int) -> Any:
    """The values of a constant float32 tensor (a flat NumPy array), else None."""
    import numpy as np

    t = model_t.subgraphs[0].tensors[idx]
    data = model_t.buffers[t.buffer].data if 0 <= t.buffer < len(model_t.buffers) else None
    if t.type != _FLOAT32 or data is None or len(data) < 4 or len(data) % 4:
        return None
    return np.frombuffer(np.asarray(data, dtype=np.uint8).tobytes(), dtype=np.float32)


def _uniform(model_t: Any, idx: int) -> float | None:
    """The value of a constant float32 tensor whose elements are all equal, else None."""
    v = _constant(model_t, idx)
    return float(v[0]) if v is not None and bool((v == v[0]).all()) else None


def hard_swish_stats(model_t: Any, op_names: list[str], scope_of: Any, hard_swish: Mapping[str, str],
                     ranges: Mapping[str, tuple[float, float]]) -> dict[int, tuple[float, float]]:
    """Exact ranges of the tensors inside each hard-swish the translator wrote as a depthwise conv.

    The form (``translate._hard_swish``): ``a = x / w``, ``r = relu6(w a + b)`` as a 1x1
    DEPTHWISE_CONV_2D with uniform weight ``w`` and bias ``b = 3`` and fused RELU6, ``y = a * r``. It is
    recognised from the MUL whose output is in the scope of an ONNX HardSwish node reading ``x``, one of
    whose inputs is that depthwise conv of the other. Then ``a`` holds ``[lo, hi] / w`` and ``r`` holds
    ``relu6([lo, hi] + 3)`` (both monotonic), and so does every tensor ``a`` was only reshaped from (the
    converter folds ``/ w`` into the op that makes ``x``, or keeps it as a MUL before a reshape).
    """
    from ghostnet_edge.export.tflite.translate import HARD_SWISH_DW_BIAS, HARD_SWISH_DW_WEIGHT

    sg = model_t.subgraphs[0]
    made_by: dict[int, Any] = {int(o): op for op in sg.operators for o in op.outputs}
    out: dict[int, tuple[float, float]] = {}
    for op in sg.operators:
        if op_names[op.opcodeIndex] != "MUL" or len(op.inputs) != 2:
            continue
        x = hard_swish.get(scope_of(int(op.outputs[0])))
        if x is None or x not in ranges:
            continue
        for a, r in ((int(op.inputs[0]), int(op.inputs[1])), (int(op.inputs[1]), int(op.inputs[0]))):
            dw = made_by.get(r)
            if dw is None or op_names[dw.opcodeIndex] != "DEPTHWISE_CONV_2D" or int(dw.inputs[0]) != a \
                    or len(dw.inputs) < 3 or getattr(dw.builtinOptions, "fusedActivationFunction", 0) != 3:
                continue  # 3: RELU6 in the schema's ActivationFunctionType
            w, b = _uniform(model_t, int(dw.inputs[1])), _uniform(model_t, int(dw.inputs[2]))
            if w != HARD_SWISH_DW_WEIGHT or b != HARD_SWISH_DW_BIAS:
                continue
            lo, hi = (float(v) for v in ranges[x])
            out[r] = (min(max(lo + b, 0.0), 6.0), min(max(hi + b, 0.0), 6.0))
            src: int | None = a
            while src is not None and src not in out:
                out[src] = (lo / w, hi / w)
                prev = made_by.get(src)
                moving = prev is not None and op_names[prev.opcodeIndex] in _VALUE_MOVING - {"PAD", "CONCATENATION"}
                src = int(prev.inputs[0]) if moving and len(prev.inputs) >= 1 else None
            break
    return out


def _scalar(model_t: Any, idx: int) -> float | None:
    """The value of a constant float32 scalar tensor, else None."""
    v = _constant(model_t, idx)
    return float(v[0]) if v is not None and v.size == 1 else None


def _place_inner(model_t: Any, op_names: list[str], pending: dict[int, str], plan: StatsPlan) -> None:
    """Ranges of tensors the translator makes inside one ONNX node, where they follow exactly.

    Such a tensor has no ONNX counterpart; where the node's next op is a multiplication by a positive
    constant or an addition of a constant (hard-sigmoid is ``relu6(x + 3) * (1/6)``), its range is the
    placed output's range with that op undone, exact because the op is monotonic and invertible.
    """
    ops = model_t.subgraphs[0].operators
    progress = True
    while pending and progress:
        progress = False
        for op in ops:
            kind = op_names[op.opcodeIndex]
            if kind not in ("MUL", "ADD") or len(op.inputs) != 2 or int(op.outputs[0]) not in plan.stats:
                continue
            if getattr(op.builtinOptions, "fusedActivationFunction", 0):
                continue  # a clamp after the op: not invertible
            a, b = int(op.inputs[0]), int(op.inputs[1])
            for src, const in ((a, b), (b, a)):
                c = _scalar(model_t, const)
                if src not in pending or c is None or (kind == "MUL" and c <= 0.0):
                    continue
                lo, hi = plan.stats[int(op.outputs[0])]
                plan.stats[src] = (lo / c, hi / c) if kind == "MUL" else (lo - c, hi - c)
                del pending[src]
                progress = True


def op_names_of(model_t: Any, s: Any) -> list[str]:
    """Builtin op name of every operator code (the larger of the deprecated and the real code)."""
    by_code = {v: k for k, v in vars(s.BuiltinOperator).items() if not k.startswith("_")}
    return [by_code.get(max(int(c.builtinCode), int(c.deprecatedBuiltinCode)), "CUSTOM") for c in model_t.operatorCodes]


def write_stats(float_model: bytes, stats: Mapping[int, tuple[float, float]], model_t: Any = None) -> bytes:
    """``float_model`` with ``stats`` (tensor index -> (lo, hi)) as its calibration min/max: the
    calibrated flatbuffer TensorFlow's calibrator would hand its quantizer. ``model_t``: ``float_model``
    already unpacked (``ModelT``), which is then written into."""
    import flatbuffers

    from ghostnet_edge.export.tflite.metadata import schema

    s = schema()
    if model_t is None:
        model_t = s.ModelT.InitFromPackedBuf(bytearray(float_model), 0)
    for idx, (lo, hi) in stats.items():
        t = model_t.subgraphs[0].tensors[idx]
        if t.quantization is None:
            t.quantization = s.QuantizationParametersT()
        t.quantization.min, t.quantization.max = [float(lo)], [float(hi)]
    builder = flatbuffers.Builder(max(1024, len(float_model) + 4096))
    builder.Finish(model_t.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def calibrated_model(float_model: bytes, onnx_proto: Any, ranges: Mapping[str, tuple[float, float]]
                     ) -> tuple[bytes | None, StatsPlan]:
    """``float_model`` with ``ranges`` written as its calibration min/max, or None when a tensor is unplaced."""
    from ghostnet_edge.export.tflite.metadata import schema

    s = schema()
    model_t = s.ModelT.InitFromPackedBuf(bytearray(float_model), 0)
    graph = onnx_proto.graph
    inits = {i.name for i in graph.initializer}
    plan = tflite_stats(model_t, op_names_of(model_t, s), onnx_scopes(onnx_proto), ranges,
                        [i.name for i in graph.input if i.name not in inits], [o.name for o in graph.output],
                        onnx_hard_swish_inputs(onnx_proto))
    if not plan.complete:
        return None, plan
    return write_stats(float_model, plan.stats, model_t), plan  # the plan only read model_t


def quantize_calibrated(calibrated: bytes, io_dtype: str, per_channel: bool) -> bytes:
    """TensorFlow's quantizer on a calibrated flatbuffer, called as ``TFLiteConverter`` calls it after
    its calibrator (``mlir_quantize``; int8/uint8/float32 model input and output)."""
    import tensorflow as tf
    from tensorflow.lite.python import convert as tf_convert

    io = {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}[io_dtype]
    return bytes(tf_convert.mlir_quantize(calibrated, not per_channel, input_data_type=io, output_data_type=io))


def quantize_with_ranges(float_model: bytes, onnx_proto: Any, ranges: Mapping[str, tuple[float, float]],
                         io_dtype: str, per_channel: bool) -> tuple[bytes | None, StatsPlan]:
    """The full-integer model TensorFlow's quantizer makes from ``float_model`` calibrated by ``ranges``.

    ``float_model`` is the converter's FP32 flatbuffer of the same translated graph (the one the FP32
    artifact is made from), so the graph is converted once for both precisions. The quantizer call is
    the one ``TFLiteConverter`` makes after its calibrator (``mlir_quantize`` with the same arguments);
    compared with the converter's own INT8 output, every op, tensor, scale and weight is the same, and
    only TensorFlow's ``CONVERSION_METADATA`` entry differs (it describes the float conversion). Returns
    None (and the plan naming what was unplaced) when a tensor has no range.
    """
    from tensorflow.lite.python.optimize import calibrator as tf_calibrator

    calibrated, plan = calibrated_model(bytes(tf_calibrator.add_intermediate_tensors(float_model)), onnx_proto, ranges)
    if calibrated is None:
        return None, plan
    return quantize_calibrated(calibrated, io_dtype, per_channel), plan
