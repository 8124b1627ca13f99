"""Translate an ONNX CNN graph into a TensorFlow ``ConcreteFunction`` laid out NHWC.

Why our own translator instead of onnx2tf (the route decision is in ``ghostnet_edge.export.tflite``'s
docstring): the op set of GhostNet/MobileNet/ResNet/VGG is small, and writing each op as the TF op the
TFLite converter knows best gives us DEPTHWISE_CONV_2D for every depthwise conv, a fully integer INT8
graph, no network access and no external executables, in seconds.

Layout: the TFLite model takes NHWC ``[1, H, W, 3]``. Every 4-D activation that is NCHW in ONNX is held
NHWC here (``_Value.nhwc``); layout-aware ops (conv, pooling, concat/slice/reduce over channels,
element-wise with per-channel constants) remap their axes instead of transposing. Any op that is not
layout-aware gets its input transposed back to ONNX layout first, so unusual graphs stay correct at
the price of a TRANSPOSE. Flatten/Reshape of a ``[N, C, 1, 1]`` tensor needs no transpose (the memory
order of NHWC and NCHW is the same when H = W = 1).

Constants: initializers and ``Constant`` nodes stay NumPy arrays; a node whose inputs are all constant
is evaluated once with ONNX's reference evaluator (shape arithmetic of dynamic-batch exports), and
``Shape`` of an activation is its static shape (the batch is fixed to 1 here).

Everything is deterministic: nodes are visited in the ONNX file's (topological) order and TF names
come from the ONNX node names, which also lets per-layer comparisons map TFLite tensors back to ONNX.
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ghostnet_edge.errors import ExportError, require

# ONNX (NCHW) axis -> NHWC axis, and back.
_TO_NHWC_AXIS = {0: 0, 1: 3, 2: 1, 3: 2}
_NHWC_PERM = (0, 2, 3, 1)  # NCHW -> NHWC
_NCHW_PERM = (0, 3, 1, 2)  # NHWC -> NCHW


@dataclass
class _Value:
    """A graph value: a NumPy constant or a TF tensor; ``nhwc`` marks a 4-D activation held channels-last."""

    t: Any
    nhwc: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.t, np.generic):  # NumPy scalars from constant arithmetic stay constants
            self.t = np.asarray(self.t)

    @property
    def const(self) -> bool:
        return isinstance(self.t, np.ndarray)


def _attrs(node: Any) -> dict[str, Any]:
    import onnx

    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode("utf-8")
        out[a.name] = v
    return out


def _node_label(node: Any, index: int) -> str:
    return node.name or f"{node.op_type}_{index}"


def _scope(label: str) -> str:
    """A TF name scope from an ONNX node name (TF allows fewer characters than ONNX)."""
    s = re.sub(r"[^A-Za-z0-9_.\-/]", "_", label.strip("/")) or "node"
    if not re.match(r"[A-Za-z0-9.]", s[0]):
        s = "n" + s
    return s


def load_onnx(onnx_model_or_path: Any) -> Any:
    """Load an ONNX ModelProto from a path, or pass one through; clear errors for bad files."""
    onnx = require("onnx", "onnx", "the TFLite export")
    if isinstance(onnx_model_or_path, onnx.ModelProto):
        return onnx_model_or_path
    path = Path(onnx_model_or_path)
    if not path.is_file():
        raise ExportError(f"ONNX file {path} does not exist", "export the model to ONNX first (ghostedge export)")
    try:
        return onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError/ValueError variants for corrupt files
        raise ExportError(f"cannot read ONNX file {path}: {exc}",
                          "the file is corrupt or not ONNX; export it again") from exc


def static_input_shape(model: Any) -> tuple[str, tuple[int, int, int, int]]:
    """Name and NCHW shape of the single graph input, with a symbolic batch fixed to 1."""
    init_names = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in init_names]
    if len(inputs) != 1:
        raise ExportError(f"the ONNX graph has {len(inputs)} inputs; the TFLite route takes exactly one image input",
                          "export a model with one NCHW image input")
    inp = inputs[0]
    dims = inp.type.tensor_type.shape.dim
    if len(dims) != 4:
        raise ExportError(f"ONNX input '{inp.name}' has rank {len(dims)}, expected NCHW rank 4",
                          "export the model with a (N, 3, H, W) input")
    shape = []
    for i, d in enumerate(dims):
        if d.HasField("dim_value") and d.dim_value > 0:
            shape.append(int(d.dim_value))
        elif i == 0:
            shape.append(1)  # symbolic batch: mobile models run one image at a time
        else:
            raise ExportError(f"ONNX input '{inp.name}' has a symbolic dimension {i} ('{d.dim_param}')",
                              "export with a fixed image size (C, H, W); only the batch may be symbolic")
    if shape[0] != 1:
        raise ExportError(f"ONNX input '{inp.name}' has batch {shape[0]}; the TFLite model is built for batch 1",
                          "export with batch 1 or a symbolic batch")
    return inp.name, (shape[0], shape[1], shape[2], shape[3])


class _Translator:
    """Walks the ONNX graph once per trace and emits TF ops (call inside a ``tf.function``)."""

    def __init__(self, model: Any) -> None:
        from onnx import numpy_helper

        self.model = model
        self.graph = model.graph
        self.input_name, self.input_nchw = static_input_shape(model)
        self.consts = {i.name: numpy_helper.to_array(i) for i in self.graph.initializer}
        opset = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
        self.opset = opset[0] if opset else 17
        self._check_supported()

    # -- validation ----------------------------------------------------------------------------------
    def _check_supported(self) -> None:
        for i, node in enumerate(self.graph.node):
            if node.domain not in ("", "ai.onnx"):
                raise ExportError(
                    f"ONNX op {node.domain}::{node.op_type} (node '{_node_label(node, i)}') is not supported "
                    "by the TFLite translator",
                    "export with the standard ONNX domain (torch.onnx.export, opset 17) without custom ops")
            if node.op_type not in _HANDLERS and node.op_type not in _CONST_ONLY:
                raise ExportError(
                    f"ONNX op {node.op_type} (node '{_node_label(node, i)}') is not supported by the TFLite "
                    "translator",
                    f"supported ops: {', '.join(sorted(_HANDLERS))}; simplify the model with onnxsim, "
                    "or convert with the onnx2tf route")

    # -- execution ----------------------------------------------------------------------------------
    def run(self, image: Any) -> dict[str, Any]:
        import tensorflow as tf

        env: dict[str, _Value] = {name: _Value(arr) for name, arr in self.consts.items()}
        env[self.input_name] = _Value(image, nhwc=True)
        for i, node in enumerate(self.graph.node):
            label = _node_label(node, i)
            ins = [env[n] if n else None for n in node.input]
            for n, v in zip(node.input, ins, strict=True):
                if n and v is None:
                    raise ExportError(f"node '{label}' reads '{n}', which nothing produced",
                                      "the ONNX graph is not topologically sorted; re-export it")
            attrs = _attrs(node)
            with tf.name_scope(_scope(label)):
                if node.op_type == "Constant":
                    outs = [_Value(_constant_attr(attrs, label))]
                elif node.op_type == "Shape":
                    outs = [_Value(_shape_const(ins[0], attrs))]
                elif all(v is None or v.const for v in ins):
                    outs = _fold(node, ins)
                elif node.op_type in _CONST_ONLY:
                    raise ExportError(
                        f"ONNX op {node.op_type} (node '{label}') on a computed tensor is not supported",
                        "only shape arithmetic on constants may use this op; simplify the model with onnxsim")
                else:
                    try:
                        outs = _HANDLERS[node.op_type](self, node, ins, attrs, label)
                    except ExportError:
                        raise
                    except (ValueError, TypeError, tf.errors.OpError) as exc:
                        raise ExportError(f"cannot translate ONNX node '{label}' ({node.op_type}): {exc}",
                                          "check the ONNX model with onnx.checker; re-export with opset 17") from exc
            for name, v in zip(node.output, outs, strict=False):
                if name:
                    env[name] = v
        results = {}
        for out in self.graph.output:
            v = env[out.name]
            t = _to_onnx_layout(v) if not v.const else tf.constant(v.t)
            results[out.name] = t
        return results


# ---------------------------------------------------------------------------------------------------
# helpers


def _tf():
    import tensorflow as tf

    return tf


def _to_onnx_layout(v: _Value) -> Any:
    return _tf().transpose(v.t, _NCHW_PERM) if v.nhwc else v.t


def _as_nhwc(v: _Value) -> Any:
    """A 4-D activation as NHWC (transposing an ONNX-layout one)."""
    if v.nhwc:
        return v.t
    if v.const:
        return np.ascontiguousarray(np.transpose(v.t, _NHWC_PERM))
    return _tf().transpose(v.t, _NHWC_PERM)


def _static_shape(v: _Value) -> list[int]:
    """ONNX-layout static shape of a value."""
    shape = list(v.t.shape) if v.const else v.t.shape.as_list()
    if v.nhwc:
        shape = [shape[i] for i in _NCHW_PERM]
    if any(d is None for d in shape):
        raise ExportError(f"tensor has a dynamic shape {shape}", "export the model with a fixed input size")
    return [int(d) for d in shape]


def _constant_attr(attrs: dict[str, Any], label: str) -> np.ndarray:
    from onnx import numpy_helper

    if "value" in attrs:
        return numpy_helper.to_array(attrs["value"])
    for key, dtype in (("value_float", np.float32), ("value_int", np.int64)):
        if key in attrs:
            return np.array(attrs[key], dtype=dtype)
    for key, dtype in (("value_floats", np.float32), ("value_ints", np.int64)):
        if key in attrs:
            return np.array(attrs[key], dtype=dtype)
    raise ExportError(f"Constant node '{label}' has no supported value attribute", "re-export with opset 17")


def _shape_const(v: _Value, attrs: dict[str, Any]) -> np.ndarray:
    shape = _static_shape(v)
    start, end = attrs.get("start", 0), attrs.get("end", len(shape))
    return np.array(shape[start:end], dtype=np.int64)


def _fold(node: Any, ins: list[_Value | None]) -> list[_Value]:
    """Evaluate a node whose inputs are all constants with ONNX's reference implementation."""
    from onnx.reference import ReferenceEvaluator

    feeds = {n: v.t for n, v in zip(node.input, ins, strict=True) if n and v is not None}
    outs = ReferenceEvaluator(node).run(None, feeds)
    return [_Value(np.asarray(o)) for o in outs]


def _f32(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32) if x.dtype != np.float32 and x.dtype.kind == "f" else x


def _const_like_nhwc(c: np.ndarray) -> np.ndarray:
    """A constant that broadcasts against an NCHW tensor, rearranged to broadcast against NHWC."""
    if c.ndim > 4:
        raise ExportError(f"constant of rank {c.ndim} cannot broadcast against a 4-D image tensor")
    c4 = c.reshape((1,) * (4 - c.ndim) + c.shape)
    return np.ascontiguousarray(np.transpose(c4, _NHWC_PERM))


def _binary_operands(a: _Value, b: _Value) -> tuple[Any, Any, bool]:
    """Bring two operands of a broadcasting op to one layout; returns (a, b, result_is_nhwc)."""
    if a.nhwc or b.nhwc:
        ok = True
        xs = []
        for v in (a, b):
            if v.nhwc:
                xs.append(v.t)
            elif v.const:
                xs.append(_f32(_const_like_nhwc(v.t)))
            elif len(_static_shape(v)) == 4:
                xs.append(_as_nhwc(v))
            else:
                ok = False
        if ok:
            return xs[0], xs[1], True
    ta = _f32(a.t) if a.const else _to_onnx_layout(a)
    tb = _f32(b.t) if b.const else _to_onnx_layout(b)
    return ta, tb, False


def _pair(v: Any, n: int = 2) -> list[int]:
    return [int(x) for x in v] if v is not None else [1] * n


def _padding(attrs: dict[str, Any], in_hw: tuple[int, int], kernel: tuple[int, int], strides: list[int],
             dilations: list[int], label: str) -> tuple[str, list[int] | None]:
    """TF padding for an ONNX conv/pool: 'VALID', 'SAME' when TF's SAME pads the same, else explicit pads.

    PyTorch pads symmetrically; TF's SAME puts the odd pixel at the bottom/right. For stride 2 these
    differ, so an explicit PAD (top, bottom, left, right) is returned and the op runs VALID. Only the
    padding a window actually reads is kept (trailing pad rows past the last window are dropped).
    """
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "VALID"):
        return ("SAME" if auto_pad == "SAME_UPPER" else "VALID"), None
    if auto_pad != "NOTSET":
        raise ExportError(f"node '{label}': auto_pad={auto_pad} is not supported", "re-export with explicit pads")
    pads = [int(p) for p in attrs.get("pads", [0, 0, 0, 0])]
    if not any(pads):
        return "VALID", None
    used, same = [], []
    for ax in range(2):
        size, k, s, d = in_hw[ax], kernel[ax], strides[ax], dilations[ax]
        eff_k = (k - 1) * d + 1
        begin, end = pads[ax], pads[ax + 2]
        out = (size + begin + end - eff_k) // s + 1
        used.append((begin, max((out - 1) * s + eff_k - size - begin, 0)))
        tf_out = -(-size // s)
        total = max((tf_out - 1) * s + eff_k - size, 0)
        same.append((total // 2, total - total // 2) if tf_out == out else None)
    if same == used:
        return "SAME", None
    return "VALID", [used[0][0], used[0][1], used[1][0], used[1][1]]


def _apply_pad(x: Any, pads: list[int] | None, value: float = 0.0) -> Any:
    if not pads:
        return x
    tf = _tf()
    return tf.pad(x, [[0, 0], [pads[0], pads[1]], [pads[2], pads[3]], [0, 0]], constant_values=value)


# ---------------------------------------------------------------------------------------------------
# op handlers: (translator, node, inputs, attrs, label) -> outputs


def _conv(tr: _Translator, node: Any, ins: list[_Value | None], attrs: dict[str, Any], label: str) -> list[_Value]:
    tf = _tf()
    x = _as_nhwc(ins[0])
    if not ins[1].const:
        raise ExportError(f"Conv node '{label}' has computed weights", "only constant conv weights are supported")
    w = _f32(ins[1].t)
    if w.ndim != 4:
        raise ExportError(f"Conv node '{label}' is {w.ndim - 2}-D; only 2-D convolutions are supported")
    bias = _f32(ins[2].t) if len(ins) > 2 and ins[2] is not None else None
    group = int(attrs.get("group", 1))
    strides, dil = _pair(attrs.get("strides")), _pair(attrs.get("dilations"))
    c_in = int(x.shape[-1])
    c_out, _, kh, kw = w.shape
    padding, pads = _padding(attrs, (int(x.shape[1]), int(x.shape[2])), (kh, kw), strides, dil, label)
    x = _apply_pad(x, pads)
    if group == 1:
        y = tf.nn.conv2d(x, np.ascontiguousarray(w.transpose(2, 3, 1, 0)), strides=[1, *strides, 1],
                         padding=padding, dilations=[1, *dil, 1])
    elif group == c_in and c_out % c_in == 0:
        # Depthwise: output channel o reads input channel o // mult, which is TF's (c, m) filter order.
        mult = c_out // c_in
        filt = np.ascontiguousarray(w.reshape(c_in, mult, kh, kw).transpose(2, 3, 0, 1))
        y = tf.nn.depthwise_conv2d(x, filt, strides=[1, *strides, 1], padding=padding, dilations=dil)
    else:
        # General grouped conv: one CONV_2D per group (portable to every TFLite kernel), then concat.
        if c_in % group or c_out % group:
            raise ExportError(f"Conv node '{label}': group {group} does not divide channels {c_in}->{c_out}")
        gi, go = c_in // group, c_out // group
        parts = tf.split(x, group, axis=3)
        ys = [tf.nn.conv2d(p, np.ascontiguousarray(w[g * go:(g + 1) * go].transpose(2, 3, 1, 0)),
                           strides=[1, *strides, 1], padding=padding, dilations=[1, *dil, 1])
              for g, p in enumerate(parts)]
        assert all(int(p.shape[-1]) == gi for p in parts)
        y = tf.concat(ys, axis=3)
    if bias is not None:
        y = tf.nn.bias_add(y, bias)
    return [_Value(y, nhwc=True)]


def _batchnorm(tr, node, ins, attrs, label):
    tf = _tf()
    x = _as_nhwc(ins[0])
    gamma, beta, mean, var = (_f32(v.t).astype(np.float64) for v in ins[1:5])
    eps = float(attrs.get("epsilon", 1e-5))
    scale = gamma / np.sqrt(var + eps)
    shift = beta - mean * scale
    return [_Value(tf.add(tf.multiply(x, scale.astype(np.float32)), shift.astype(np.float32)), nhwc=True)]


def _unary(fn: Callable[[Any, dict[str, Any]], Any]) -> Callable:
    def handler(tr, node, ins, attrs, label):
        v = ins[0]
        return [_Value(fn(v.t, attrs), nhwc=v.nhwc)]

    return handler


def _clip_values(ins: list[_Value | None], attrs: dict[str, Any]) -> tuple[float | None, float | None]:
    lo = attrs.get("min")
    hi = attrs.get("max")
    if len(ins) > 1 and ins[1] is not None:
        lo = float(ins[1].t)
    if len(ins) > 2 and ins[2] is not None:
        hi = float(ins[2].t)
    return lo, hi


def _clip(tr, node, ins, attrs, label):
    tf = _tf()
    v = ins[0]
    for extra in ins[1:]:
        if extra is not None and not extra.const:
            raise ExportError(f"Clip node '{label}' has computed bounds", "only constant Clip bounds are supported")
    lo, hi = _clip_values(ins, attrs)
    x = v.t
    if lo == 0.0 and hi == 6.0:
        y = tf.nn.relu6(x)
    elif lo == 0.0 and hi is None:
        y = tf.nn.relu(x)
    else:
        y = x
        if lo is not None:
            y = tf.maximum(y, np.float32(lo))
        if hi is not None:
            y = tf.minimum(y, np.float32(hi))
    return [_Value(y, nhwc=v.nhwc)]


def _hard_sigmoid(x: Any, attrs: dict[str, Any]) -> Any:
    tf = _tf()
    alpha, beta = float(attrs.get("alpha", 0.2)), float(attrs.get("beta", 0.5))
    if abs(alpha - 1 / 6) < 1e-6 and abs(beta - 0.5) < 1e-6:
        # PyTorch's hardsigmoid: relu6(x + 3) / 6 -> ADD, RELU6, MUL: all integer kernels in INT8. In a
        # squeeze-excite gate the converter folds the ADD and RELU6 into the conv before it, and XNNPACK
        # takes the int8 MUL by 1/6 (LiteRT 2.3.0 profile of MobileNetV3-Large: no builtin node there).
        return tf.multiply(tf.nn.relu6(tf.add(x, np.float32(3.0))), np.float32(1.0 / 6.0))
    return tf.minimum(tf.maximum(tf.add(tf.multiply(x, np.float32(alpha)), np.float32(beta)), np.float32(0.0)),
                      np.float32(1.0))


# How ONNX HardSwish is written, by the CPU the .tflite is meant for (``ExportConfig.tflite_target``):
# LiteRT's int8 HARD_SWISH is a NEON kernel on ARM (7 % of MobileNetV3-Large's Cortex-A76 instructions,
# fewer than any two-op form) but scalar reference code outside XNNPACK on x86.
HARD_SWISH_FORMS = ("builtin", "depthwise")
TARGET_HARD_SWISH = {"arm": "builtin", "x86": "depthwise"}
TFLITE_TARGETS = tuple(TARGET_HARD_SWISH)
# The 1x1 depthwise conv of the "depthwise" form: relu6(w * a + b) with a = x / w, so relu6(x + 3).
HARD_SWISH_DW_WEIGHT = 6.0
HARD_SWISH_DW_BIAS = 3.0
_HARD_SWISH: contextvars.ContextVar[str] = contextvars.ContextVar("hard_swish", default="builtin")


def check_hard_swish_form(form: str) -> str:
    if form not in HARD_SWISH_FORMS:
        raise ExportError(f"{form!r} is not a hard-swish form", f"use one of {', '.join(HARD_SWISH_FORMS)}")
    return form


def _hard_swish(x: Any, attrs: dict[str, Any]) -> Any:
    """x * relu6(x + 3) / 6 in one of two forms, equal in FP32 and different in INT8.

    ``builtin``: the pattern the TFLite converter fuses into one HARD_SWISH op. Its INT8 kernel is not
    taken by LiteRT 2.3.0's XNNPACK delegate (its HARD_SWISH visitor checks for float tensors), so each
    runs as a TFLite builtin (on x86 the scalar reference code) and splits the graph into one more XNNPACK
    partition (MobileNetV3-Large: 21 ops, 22 partitions, 44-63 % of the INT8 time on x86).

    ``depthwise`` (for x86): ``a = x * (1/6)``, ``r = relu6(6 a + 3)`` as a 1x1 DEPTHWISE_CONV_2D
    (uniform weight 6, bias 3, fused RELU6), ``y = a * r``. The converter folds the ``* (1/6)`` into the
    conv or fully connected op that makes ``x`` (the case in MobileNetV3), so this is one depthwise conv
    and one MUL of two activations, both XNNPACK ops in INT8 as in FP32 (LiteRT's profiler counts no
    builtin node left). ``ranges.hard_swish_stats`` gives ``a`` and ``r`` exact ranges, which follow
    from ``x``'s. Cost (``benchmarks/hard_swish.py --rounds 5``, MobileNetV3-Large 224, LiteRT 2.3.0, 1
    thread, AMD EPYC without VNNI; docs/results/hard_swish_amd.md): INT8 on the host 1.63x faster
    (13.59 -> 8.35 ms), FP32 5 % slower (two passes instead of one); on emulated Cortex-A76, where the
    builtin int8 HARD_SWISH is NEON code, 13 % more INT8 instructions and 4 % more FP32 ones, so
    ``builtin`` remains the form for ARM. Any tensor
    rank: the depthwise conv needs 4-D, so another rank is reshaped to ``[1, 1, -1, C]`` and back (the
    weights are uniform, so the layout does not matter).
    """
    tf = _tf()
    if _HARD_SWISH.get() == "builtin":
        return tf.multiply(x, tf.multiply(tf.nn.relu6(tf.add(x, np.float32(3.0))), np.float32(1.0 / 6.0)))
    shape = x.shape.as_list()
    if len(shape) != 4:
        flat = tf.reshape(x, [1, 1, -1, int(shape[-1])])
        return tf.reshape(_hard_swish(flat, attrs), shape)
    c = int(shape[-1])
    a = tf.multiply(x, np.float32(1.0 / HARD_SWISH_DW_WEIGHT))
    w = np.full((1, 1, c, 1), HARD_SWISH_DW_WEIGHT, np.float32)
    r = tf.nn.relu6(tf.nn.bias_add(tf.nn.depthwise_conv2d(a, w, [1, 1, 1, 1], "VALID"),
                                   np.full((c,), HARD_SWISH_DW_BIAS, np.float32)))
    return tf.multiply(a, r)


def _binary(kind: str) -> Callable:
    def handler(tr, node, ins, attrs, label):
        tf = _tf()
        a, b = ins[0], ins[1]
        if kind == "Div" and b.const:
            # Division by a constant as a multiply by its reciprocal: MUL has an INT8 kernel, DIV does not.
            b = _Value(np.asarray(np.float32(1.0) / _f32(b.t), dtype=np.float32))
            op = tf.multiply
        else:
            op = {"Add": tf.add, "Sub": tf.subtract, "Mul": tf.multiply, "Div": tf.divide,
                  "Max": tf.maximum, "Min": tf.minimum, "Pow": tf.pow}[kind]
        ta, tb, nhwc = _binary_operands(a, b)
        return [_Value(op(ta, tb), nhwc=nhwc)]

    return handler


def _variadic(kind: str) -> Callable:
    """Sum/Max/Min/Mean with any number of inputs, folded pairwise."""

    def handler(tr, node, ins, attrs, label):
        tf = _tf()
        acc = ins[0]
        op = {"Sum": tf.add, "Max": tf.maximum, "Min": tf.minimum, "Mean": tf.add}[kind]
        for nxt in ins[1:]:
            ta, tb, nhwc = _binary_operands(acc, nxt)
            acc = _Value(op(ta, tb), nhwc=nhwc)
        if kind == "Mean":
            acc = _Value(tf.multiply(acc.t, np.float32(1.0 / len(ins))), nhwc=acc.nhwc)
        return [acc]

    return handler


def _global_avg_pool(tr, node, ins, attrs, label):
    x = _as_nhwc(ins[0])
    return [_Value(_tf().reduce_mean(x, axis=[1, 2], keepdims=True), nhwc=True)]


def _global_max_pool(tr, node, ins, attrs, label):
    x = _as_nhwc(ins[0])
    return [_Value(_tf().reduce_max(x, axis=[1, 2], keepdims=True), nhwc=True)]


def _reduce(kind: str) -> Callable:
    def handler(tr, node, ins, attrs, label):
        tf = _tf()
        v = ins[0]
        rank = len(_static_shape(v))
        axes = attrs.get("axes")
        if len(ins) > 1 and ins[1] is not None:
            if not ins[1].const:
                raise ExportError(f"{node.op_type} node '{label}' has computed axes", "use constant axes")
            axes = [int(a) for a in ins[1].t.reshape(-1)]
        axes = list(range(rank)) if axes is None or len(axes) == 0 else sorted(int(a) % rank for a in axes)
        keep = bool(attrs.get("keepdims", 1))
        fn = {"ReduceMean": tf.reduce_mean, "ReduceMax": tf.reduce_max, "ReduceSum": tf.reduce_sum}[kind]
        if v.nhwc:
            kept = [a for a in range(4) if a not in axes]
            kept_nhwc = [a for a in _NHWC_PERM if a not in axes]
            if keep or kept == kept_nhwc:
                y = fn(v.t, axis=[_TO_NHWC_AXIS[a] for a in axes], keepdims=keep)
                return [_Value(y, nhwc=keep)]
        return [_Value(fn(_to_onnx_layout(v), axis=axes, keepdims=keep))]

    return handler


def _pool(kind: str) -> Callable:
    def handler(tr, node, ins, attrs, label):
        tf = _tf()
        x = _as_nhwc(ins[0])
        k = _pair(attrs["kernel_shape"])
        strides, dil = _pair(attrs.get("strides")), _pair(attrs.get("dilations"))
        if dil != [1, 1]:
            raise ExportError(f"{node.op_type} node '{label}' uses dilations", "dilated pooling is not supported")
        if int(attrs.get("ceil_mode", 0)):
            pads_now = [int(p) for p in attrs.get("pads", [0, 0, 0, 0])]
            for ax in range(2):
                size = int(x.shape[1 + ax]) + pads_now[ax] + pads_now[ax + 2] - k[ax]
                if size % strides[ax]:
                    raise ExportError(f"{node.op_type} node '{label}' uses ceil_mode with a partial window",
                                      "use ceil_mode=False in the PyTorch model")
        padding, pads = _padding(attrs, (int(x.shape[1]), int(x.shape[2])), tuple(k), strides, [1, 1], label)
        if kind == "MaxPool":
            # TF's SAME max pool ignores padding, like ONNX; explicit pads use the float minimum.
            x = _apply_pad(x, pads, value=float(np.finfo(np.float32).min))
            y = tf.nn.max_pool2d(x, k, strides, padding)
        else:
            include_pad = int(attrs.get("count_include_pad", 0))
            if padding == "SAME" and include_pad:
                padding, pads = "VALID", _same_as_explicit(int(x.shape[1]), int(x.shape[2]), k, strides)
            elif pads and not include_pad:
                raise ExportError(f"AveragePool node '{label}' has asymmetric padding without count_include_pad",
                                  "use padding=0 or count_include_pad=True in the model")
            x = _apply_pad(x, pads)
            y = tf.nn.avg_pool2d(x, k, strides, padding)
        return [_Value(y, nhwc=True)]

    return handler


def _same_as_explicit(h: int, w: int, k: list[int], s: list[int]) -> list[int]:
    out = []
    for size, kk, ss in ((h, k[0], s[0]), (w, k[1], s[1])):
        total = max((-(-size // ss) - 1) * ss + kk - size, 0)
        out += [total // 2, total - total // 2]
    return out


# ONNX Resize (mode "nearest") -> TF's ResizeNearestNeighbor flags (align_corners, half_pixel_centers), for
# the (coordinate_transformation_mode, nearest_mode) pairs whose index rule is TF's:
#   asymmetric + floor                -> in = floor(out * in_size / out_size)          (F.interpolate "nearest")
#   half_pixel + round_prefer_ceil    -> in = floor((out + 0.5) * in_size / out_size)  ("nearest-exact")
#   pytorch_half_pixel, tf_half_pixel_for_nn + floor: the same as half_pixel + round_prefer_ceil
#   align_corners + round_prefer_ceil -> in = round(out * (in_size - 1) / (out_size - 1))
# Each node is also checked index by index (_onnx_nearest_indices against _tf_nearest_indices) for its
# actual sizes and scales: ONNX maps with an explicit scale as given, TF with out_size / in_size, so a
# scale whose pixels differ (2.2 for 3 -> 6) is refused, as is pytorch_half_pixel with one output pixel.
_NEAREST_FLAGS = {
    ("asymmetric", "floor"): (False, False),
    ("half_pixel", "round_prefer_ceil"): (False, True),
    ("pytorch_half_pixel", "round_prefer_ceil"): (False, True),
    ("tf_half_pixel_for_nn", "floor"): (False, True),
    ("align_corners", "round_prefer_ceil"): (True, False),
}


def _onnx_nearest_indices(out_size: int, in_size: int, scale: float, ctm: str, nearest_mode: str) -> np.ndarray:
    """Source index of every output position of an ONNX nearest Resize along one axis (the spec's formulas)."""
    x = np.arange(out_size, dtype=np.float64)
    if ctm == "asymmetric":
        xo = x / scale
    elif ctm == "half_pixel" or (ctm == "pytorch_half_pixel" and out_size > 1):
        xo = (x + 0.5) / scale - 0.5
    elif ctm == "tf_half_pixel_for_nn":
        xo = (x + 0.5) / scale
    elif ctm == "align_corners" and out_size > 1:
        xo = x * (in_size - 1) / (out_size - 1)
    else:  # pytorch_half_pixel / align_corners with one output pixel
        xo = np.zeros_like(x)
    rounded = {"floor": np.floor(xo), "ceil": np.ceil(xo), "round_prefer_floor": np.ceil(xo - 0.5),
               "round_prefer_ceil": np.floor(xo + 0.5)}[nearest_mode]
    return np.clip(rounded, 0, in_size - 1).astype(np.int64)


def _tf_nearest_indices(out_size: int, in_size: int, align_corners: bool, half_pixel: bool) -> np.ndarray:
    """Source indices of TF/TFLite's ResizeNearestNeighbor along one axis (float32, like the kernels)."""
    x = np.arange(out_size, dtype=np.float32)
    if align_corners and out_size > 1:
        idx = np.round(x * np.float32((in_size - 1) / (out_size - 1)))
    else:
        idx = np.floor((x + np.float32(0.5 if half_pixel else 0.0)) * np.float32(in_size / out_size))
    return np.clip(idx, 0, in_size - 1).astype(np.int64)


def _resize(tr, node, ins, attrs, label):
    tf = _tf()
    v = ins[0]
    shape = _static_shape(v)
    if len(shape) != 4:
        raise ExportError(f"Resize node '{label}' resizes a rank-{len(shape)} tensor",
                          "only 4-D NCHW activations can be resized")
    if tr.opset < 11:
        raise ExportError(f"Resize node '{label}' is from opset {tr.opset}", "re-export the model with opset 17")
    mode = attrs.get("mode", "nearest")
    ctm = attrs.get("coordinate_transformation_mode", "half_pixel")
    nearest_mode = attrs.get("nearest_mode", "round_prefer_floor")
    if mode != "nearest":
        raise ExportError(f"Resize node '{label}': mode={mode} is not supported",
                          "only nearest upsampling is translated (F.interpolate(mode='nearest'))")
    flags = _NEAREST_FLAGS.get((ctm, nearest_mode))
    if flags is None:
        raise ExportError(f"Resize node '{label}': coordinate_transformation_mode={ctm} with "
                          f"nearest_mode={nearest_mode} is not supported",
                          "use F.interpolate(mode='nearest') (asymmetric + floor) or mode='nearest-exact'")
    if attrs.get("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise ExportError(f"Resize node '{label}': keep_aspect_ratio_policy="
                          f"{attrs['keep_aspect_ratio_policy']} is not supported", "resize to explicit sizes")
    for extra in ins[1:]:
        if extra is not None and not extra.const:
            raise ExportError(f"Resize node '{label}' has computed scales or sizes",
                              "export with a fixed input size and simplify the model with onnxsim")
    axes = [int(a) % 4 for a in attrs["axes"]] if attrs.get("axes") else [0, 1, 2, 3]
    scales_in = ins[2].t.reshape(-1) if len(ins) > 2 and ins[2] is not None else np.zeros(0)
    sizes_in = ins[3].t.reshape(-1) if len(ins) > 3 and ins[3] is not None else np.zeros(0)
    out, scale = list(shape), [1.0] * 4
    if sizes_in.size:
        for a, n in zip(axes, sizes_in, strict=True):
            out[a], scale[a] = int(n), int(n) / shape[a]
    elif scales_in.size:
        for a, sc in zip(axes, scales_in, strict=True):
            out[a], scale[a] = int(np.floor(shape[a] * float(sc))), float(sc)
    else:
        raise ExportError(f"Resize node '{label}' has neither scales nor sizes", "re-export with opset 17")
    if out[:2] != shape[:2]:
        raise ExportError(f"Resize node '{label}' resizes the batch or channel axis ({shape} -> {out})",
                          "only the spatial axes (H, W) can be resized")
    if out == shape:
        return [v]
    align_corners, half_pixel = flags
    for ax in (2, 3):
        want = _onnx_nearest_indices(out[ax], shape[ax], scale[ax], ctm, nearest_mode)
        if not np.array_equal(want, _tf_nearest_indices(out[ax], shape[ax], align_corners, half_pixel)):
            raise ExportError(f"Resize node '{label}': scale {scale[ax]:g} ({shape[ax]} -> {out[ax]}) with "
                              f"coordinate_transformation_mode={ctm} picks other pixels than TFLite's "
                              "RESIZE_NEAREST_NEIGHBOR", "resize to explicit sizes (F.interpolate(size=...))")
    # The raw op takes both flags (tf.image.resize(method="nearest") always uses half-pixel centres, and the
    # tf.compat.v1 wrapper logs a deprecation notice); it converts to RESIZE_NEAREST_NEIGHBOR.
    y = tf.raw_ops.ResizeNearestNeighbor(images=_as_nhwc(v), size=np.array([out[2], out[3]], dtype=np.int32),
                                         align_corners=align_corners, half_pixel_centers=half_pixel)
    return [_Value(y, nhwc=True)]


def _concat(tr, node, ins, attrs, label):
    tf = _tf()
    rank = len(_static_shape(ins[0]))
    axis = int(attrs["axis"]) % rank
    if rank == 4 and any(v.nhwc for v in ins):
        parts = [_f32(_as_nhwc(v)) if v.const else _as_nhwc(v) for v in ins]
        return [_Value(tf.concat(parts, axis=_TO_NHWC_AXIS[axis]), nhwc=True)]
    parts = [_f32(v.t) if v.const else _to_onnx_layout(v) for v in ins]
    return [_Value(tf.concat(parts, axis=axis))]


def _slice(tr, node, ins, attrs, label):
    v = ins[0]
    shape = _static_shape(v)
    rank = len(shape)
    for extra in ins[1:]:
        if extra is not None and not extra.const:
            raise ExportError(f"Slice node '{label}' has computed bounds", "only constant slice bounds are supported")
    starts = [int(s) for s in ins[1].t.reshape(-1)]
    ends = [int(e) for e in ins[2].t.reshape(-1)]
    axes = [int(a) % rank for a in ins[3].t.reshape(-1)] if len(ins) > 3 and ins[3] is not None \
        else list(range(len(starts)))
    steps = [int(s) for s in ins[4].t.reshape(-1)] if len(ins) > 4 and ins[4] is not None else [1] * len(starts)
    index = [slice(None)] * rank
    for s, e, a, st in zip(starts, ends, axes, steps, strict=True):
        dim = shape[a]
        # Python slicing clamps like ONNX does (INT64_MAX ends, negative starts).
        s2, e2, st2 = slice(s, e, st).indices(dim)
        if st2 < 0:
            raise ExportError(f"Slice node '{label}' has a negative step", "reverse slicing is not supported")
        index[_TO_NHWC_AXIS[a] if v.nhwc else a] = slice(s2, e2, st2)
    if all(sl == slice(None) or (sl.start, sl.stop, sl.step) == (0, dim, 1)
           for sl, dim in zip(index, _nhwc_dims(v, shape), strict=True)):
        # A Ghost module whose concat already has exactly `oup` channels slices nothing: drop the op.
        return [v]
    return [_Value(v.t[tuple(index)], nhwc=v.nhwc)]


def _nhwc_dims(v: _Value, onnx_shape: list[int]) -> list[int]:
    """Dims in the order the value is held (NHWC for nhwc values)."""
    return [onnx_shape[i] for i in _NHWC_PERM] if v.nhwc else onnx_shape


def _split(tr, node, ins, attrs, label):
    tf = _tf()
    v = ins[0]
    shape = _static_shape(v)
    axis = int(attrs.get("axis", 0)) % len(shape)
    if len(ins) > 1 and ins[1] is not None:
        sizes = [int(s) for s in ins[1].t.reshape(-1)]
    elif "split" in attrs:
        sizes = [int(s) for s in attrs["split"]]
    else:
        n = len(node.output)
        sizes = [-(-shape[axis] // n)] * n
        sizes[-1] = shape[axis] - sum(sizes[:-1])
    tf_axis = _TO_NHWC_AXIS[axis] if v.nhwc else axis
    return [_Value(t, nhwc=v.nhwc) for t in tf.split(v.t, sizes, axis=tf_axis)]


def _spatial_is_1x1(v: _Value) -> bool:
    s = _static_shape(v)
    return v.nhwc and s[2] == 1 and s[3] == 1


def _flatten(tr, node, ins, attrs, label):
    tf = _tf()
    v = ins[0]
    shape = _static_shape(v)
    axis = int(attrs.get("axis", 1)) % max(len(shape), 1)
    target = [int(np.prod(shape[:axis])), int(np.prod(shape[axis:]))]
    x = v.t if (_spatial_is_1x1(v) or not v.nhwc) else _to_onnx_layout(v)
    return [_Value(tf.reshape(x, target))]


def _reshape(tr, node, ins, attrs, label):
    tf = _tf()
    v = ins[0]
    if not ins[1].const:
        raise ExportError(f"Reshape node '{label}' has a computed shape", "simplify the model with onnxsim")
    shape = _static_shape(v)
    target = [int(d) for d in ins[1].t.reshape(-1)]
    if not int(attrs.get("allowzero", 0)):
        target = [shape[i] if d == 0 else d for i, d in enumerate(target)]
    x = v.t if (_spatial_is_1x1(v) or not v.nhwc) else _to_onnx_layout(v)
    return [_Value(tf.reshape(x, target))]


def _squeeze_unsqueeze(kind: str) -> Callable:
    def handler(tr, node, ins, attrs, label):
        tf = _tf()
        v = ins[0]
        shape = _static_shape(v)
        axes = attrs.get("axes")
        if len(ins) > 1 and ins[1] is not None:
            axes = [int(a) for a in ins[1].t.reshape(-1)]
        if kind == "Squeeze":
            rank = len(shape)
            axes = [a % rank for a in axes] if axes else [i for i, d in enumerate(shape) if d == 1]
            target = [d for i, d in enumerate(shape) if i not in axes]
        else:
            rank = len(shape) + len(axes)
            axes = sorted(a % rank for a in axes)
            target = list(shape)
            for a in axes:
                target.insert(a, 1)
        x = v.t if (_spatial_is_1x1(v) or not v.nhwc) else _to_onnx_layout(v)
        return [_Value(tf.reshape(x, target))]

    return handler


def _gemm(tr, node, ins, attrs, label):
    tf = _tf()
    a = _to_onnx_layout(ins[0]) if not ins[0].const else _f32(ins[0].t)
    if int(attrs.get("transA", 0)):
        a = tf.transpose(a)
    if not ins[1].const:
        raise ExportError(f"Gemm node '{label}' has computed weights", "only constant Gemm weights are supported")
    w = _f32(ins[1].t)
    w = w.T if int(attrs.get("transB", 0)) else w
    alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
    y = tf.matmul(a, np.ascontiguousarray(w * np.float32(alpha)) if alpha != 1.0 else np.ascontiguousarray(w))
    if len(ins) > 2 and ins[2] is not None:
        c = _f32(ins[2].t) if ins[2].const else ins[2].t
        y = tf.add(y, c * np.float32(beta) if beta != 1.0 else c)
    return [_Value(y)]


def _matmul(tr, node, ins, attrs, label):
    tf = _tf()
    a = _f32(ins[0].t) if ins[0].const else _to_onnx_layout(ins[0])
    b = _f32(ins[1].t) if ins[1].const else _to_onnx_layout(ins[1])
    return [_Value(tf.matmul(a, b))]


def _transpose(tr, node, ins, attrs, label):
    tf = _tf()
    v = ins[0]
    rank = len(_static_shape(v))
    perm = attrs.get("perm") or list(reversed(range(rank)))
    if v.nhwc and list(perm) == list(_NHWC_PERM):
        # NCHW->NHWC transpose of a tensor already held NHWC: it becomes a plain NHWC tensor.
        return [_Value(v.t)]
    return [_Value(tf.transpose(_to_onnx_layout(v), perm))]


def _pad(tr, node, ins, attrs, label):
    tf = _tf()
    v = ins[0]
    rank = len(_static_shape(v))
    mode = attrs.get("mode", "constant")
    for extra in ins[1:]:
        if extra is not None and not extra.const:
            raise ExportError(f"Pad node '{label}' has computed pads or value", "only constant padding is supported")
    pads = [int(p) for p in (ins[1].t.reshape(-1) if len(ins) > 1 and ins[1] is not None else attrs["pads"])]
    value = float(ins[2].t) if len(ins) > 2 and ins[2] is not None else float(attrs.get("value", 0.0))
    if len(ins) > 3 and ins[3] is not None:
        raise ExportError(f"Pad node '{label}' uses the axes input", "export with opset 17 without Pad axes")
    if any(p < 0 for p in pads):
        raise ExportError(f"Pad node '{label}' crops (negative pads)", "use a Slice instead of negative padding")
    pairs = [[pads[i], pads[i + rank]] for i in range(rank)]
    if v.nhwc:
        pairs = [pairs[i] for i in _NHWC_PERM]
    tf_mode = {"constant": "CONSTANT", "reflect": "REFLECT", "edge": "SYMMETRIC"}.get(mode)
    if tf_mode is None or (mode == "edge" and any(max(p) > 1 for p in pairs)):
        raise ExportError(f"Pad node '{label}' uses mode '{mode}'", "use constant or reflect padding")
    return [_Value(tf.pad(v.t, pairs, mode=tf_mode, constant_values=value), nhwc=v.nhwc)]


def _softmax(tr, node, ins, attrs, label):
    tf = _tf()
    v = ins[0]
    rank = len(_static_shape(v))
    axis = int(attrs.get("axis", -1)) % rank
    if v.nhwc:
        return [_Value(tf.nn.softmax(v.t, axis=_TO_NHWC_AXIS[axis]), nhwc=True)]
    return [_Value(tf.nn.softmax(v.t, axis=axis))]


def _identity(tr, node, ins, attrs, label):
    return [ins[0]] + ([_Value(np.zeros(0, dtype=bool))] if len(node.output) > 1 else [])


def _cast(tr, node, ins, attrs, label):
    from onnx import helper

    tf = _tf()
    dtype = helper.tensor_dtype_to_np_dtype(int(attrs["to"]))
    v = ins[0]
    return [_Value(tf.cast(v.t, tf.as_dtype(dtype)), nhwc=v.nhwc)]


_HANDLERS: dict[str, Callable] = {
    "Conv": _conv,
    "BatchNormalization": _batchnorm,
    "Relu": _unary(lambda x, a: _tf().nn.relu(x)),
    "LeakyRelu": _unary(lambda x, a: _tf().nn.leaky_relu(x, alpha=float(a.get("alpha", 0.01)))),
    "Sigmoid": _unary(lambda x, a: _tf().math.sigmoid(x)),  # LOGISTIC, an INT8 kernel
    "Tanh": _unary(lambda x, a: _tf().tanh(x)),
    "HardSigmoid": _unary(_hard_sigmoid),
    "HardSwish": _unary(_hard_swish),
    "Clip": _clip,
    "Add": _binary("Add"),
    "Sub": _binary("Sub"),
    "Mul": _binary("Mul"),
    "Div": _binary("Div"),
    "Max": _variadic("Max"),
    "Min": _variadic("Min"),
    "Sum": _variadic("Sum"),
    "Mean": _variadic("Mean"),
    "GlobalAveragePool": _global_avg_pool,
    "GlobalMaxPool": _global_max_pool,
    "ReduceMean": _reduce("ReduceMean"),
    "ReduceMax": _reduce("ReduceMax"),
    "ReduceSum": _reduce("ReduceSum"),
    "AveragePool": _pool("AveragePool"),
    "MaxPool": _pool("MaxPool"),
    "Resize": _resize,
    "Concat": _concat,
    "Slice": _slice,
    "Split": _split,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Squeeze": _squeeze_unsqueeze("Squeeze"),
    "Unsqueeze": _squeeze_unsqueeze("Unsqueeze"),
    "Gemm": _gemm,
    "MatMul": _matmul,
    "Transpose": _transpose,
    "Pad": _pad,
    "Softmax": _softmax,
    "Identity": _identity,
    "Dropout": _identity,
    "Cast": _cast,
    "Constant": _identity,  # handled before dispatch; listed so the support check accepts it
    "Shape": _identity,  # likewise: static shapes become constants
}

# Ops accepted only when every input is constant (shape arithmetic left by dynamic-batch exports).
_CONST_ONLY = frozenset({"Gather", "Range", "ConstantOfShape", "Equal", "Where", "Expand", "Floor", "Ceil",
                         "Sqrt", "Neg", "Abs", "Exp", "Log", "Reciprocal", "Not", "And", "Or", "Greater",
                         "Less", "Tile", "NonZero", "ScatterND", "GatherElements", "ReduceProd"})


def supported_ops() -> list[str]:
    """ONNX op types the translator handles (for error messages and docs)."""
    return sorted(set(_HANDLERS) | _CONST_ONLY)


def onnx_to_tf_function(onnx_model_or_path: Any, hard_swish: str = "builtin") -> tuple[Any, tuple[int, int, int, int]]:
    """Build a TF ``ConcreteFunction`` equivalent to the ONNX graph, taking NHWC ``image`` of batch 1.

    ``hard_swish`` is the form HardSwish nodes take (``builtin`` | ``depthwise``, see ``_hard_swish``).

    Returns the concrete function (its structured outputs: ``{"logits": ...}`` for a single-output
    graph, else the ONNX output names) and the NHWC input shape ``(1, H, W, C)``. Unsupported ops
    raise :class:`ExportError` naming the op and node before anything is traced.
    """
    model = load_onnx(onnx_model_or_path)
    translator = _Translator(model)
    tf = require("tensorflow", "tensorflow", "the TFLite export")
    _, (n, c, h, w) = translator.input_name, translator.input_nchw
    nhwc = (n, h, w, c)
    outputs = [o.name for o in model.graph.output]
    single = len(outputs) == 1

    def serving(image):
        res = translator.run(image)
        if single:
            return {"logits": tf.identity(res[outputs[0]], name="logits")}
        return {_scope(k).replace("/", "_"): tf.identity(v, name=_scope(k).replace("/", "_"))
                for k, v in res.items()}

    fn = tf.function(serving, input_signature=[tf.TensorSpec(list(nhwc), tf.float32, name="image")],
                     autograph=False)
    token = _HARD_SWISH.set(check_hard_swish_form(hard_swish))  # read by _hard_swish while tracing
    try:
        concrete = fn.get_concrete_function()
    finally:
        _HARD_SWISH.reset(token)
    return concrete, nhwc
