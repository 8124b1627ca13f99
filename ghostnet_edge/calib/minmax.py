"""The MinMax calibration pass, reduced inside the graph: one onnxruntime session, per-channel reductions.

onnxruntime's ``MinMaxCalibrater`` measures what this measures, but around a slower pass: it shape-infers
and saves an augmented copy of the model through temporary files, reduces every tensor over all of its
axes (one reduction of millions of values is one thread's work), keeps every batch's outputs in Python
lists and merges them at the end. GhostNet 1.0x at 224, 256 images, 2 threads: its pass took about 3x
one plain forward pass (``benchmarks/calibration_pass.py``). Here:

* the augmented model is built in memory and handed to onnxruntime as bytes;
* each 3-D or larger tensor is reduced over every axis but the channels (``ReduceMin``/``ReduceMax``,
  ``axes=[0, 2, ...]``): C independent reductions that onnxruntime spreads over its threads; the few
  values left are folded in NumPy batch by batch;
* a ``Concat`` output is not measured at all: its range is exactly the union of its inputs' ranges;
* the tensors read only by one Relu or Clip stay unmeasured (see
  :func:`ghostnet_edge.calib.ranges.activation_inputs`), so the Conv+Relu fusions survive.

The tensors are the ones onnxruntime's calibrator would pick (every float tensor that is not an
initializer), and the ranges are the same numbers: a minimum is exact whichever order it is taken in
(``tests/test_calib_minmax.py`` compares every tensor with onnxruntime's calibrator). One difference by
design: a NaN in one channel is ignored with that channel only, where onnxruntime drops the whole batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

_FLOAT_TYPES = (1, 10)  # TensorProto.FLOAT, TensorProto.FLOAT16: what onnxruntime's calibrator measures


def calibrated_tensors(model: Any) -> tuple[list[str], dict[str, int]]:
    """Every float, non-initializer tensor read or written by a node, in graph order, with its rank
    (-1 when unknown). ``model`` must carry value_info (shape inference), as onnxruntime's selection does."""
    infos = {vi.name: vi for vi in model.graph.value_info}
    infos.update({o.name: o for o in model.graph.output})
    infos.update({i.name: i for i in model.graph.input})
    inits = {i.name for i in model.graph.initializer}
    names: list[str] = []
    ranks: dict[str, int] = {}
    for node in model.graph.node:
        for name in (*node.input, *node.output):
            vi = infos.get(name)
            if name in ranks or name in inits or vi is None or not vi.type.HasField("tensor_type"):
                continue
            tt = vi.type.tensor_type
            if tt.elem_type not in _FLOAT_TYPES:
                continue
            names.append(name)
            ranks[name] = len(tt.shape.dim) if tt.HasField("shape") else -1
    return names, ranks


def derived_concats(model: Any, measured: Iterable[str]) -> dict[str, list[str]]:
    """``Concat`` outputs whose inputs are all measured (or themselves derived): output -> inputs.

    The range of a concatenation is the union of its inputs' ranges, exactly, so it need not be measured.
    """
    known = set(measured)
    derived: dict[str, list[str]] = {}
    for node in model.graph.node:  # graph order: a concat of concats finds its inputs already known
        if node.op_type == "Concat" and node.input and all(i in known for i in node.input):
            out = node.output[0]
            if out in known:
                derived[out] = list(node.input)
    return derived


def augmented_model(model: Any, tensors: list[str], ranks: dict[str, int]) -> Any:
    """A copy of ``model`` whose extra outputs are each tensor's per-channel minimum and maximum."""
    import onnx
    from onnx import helper

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    aug = onnx.ModelProto()
    aug.CopyFrom(model)
    del aug.graph.value_info[:]  # shapes are re-inferred by onnxruntime; stale ones only cost memory
    for i, name in enumerate(tensors):
        rank = ranks.get(name, -1)
        axes = [0, *range(2, rank)] if rank >= 3 else None
        for op in ("ReduceMin", "ReduceMax"):
            out = f"ghostedge_calib_{i}_{op}"
            inputs = [name]
            attrs: dict[str, Any] = {"keepdims": 0}
            if axes is not None and opset >= 18:  # axes became an input in opset 18
                axes_name = f"ghostedge_calib_{i}_axes"
                if op == "ReduceMin":
                    aug.graph.initializer.append(onnx.numpy_helper.from_array(np.array(axes, np.int64), axes_name))
                inputs.append(axes_name)
            elif axes is not None:
                attrs["axes"] = axes
            aug.graph.node.append(helper.make_node(op, inputs, [out], name=out, **attrs))
            aug.graph.output.append(helper.make_empty_tensor_value_info(out))
    return aug


def session_options(threads: int | None) -> Any:
    """onnxruntime options of a calibration session: every graph optimisation (the measured tensors are
    graph outputs, which no optimisation changes), ``threads`` intra-op threads, errors only in the log."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return opts


def collect_minmax(model: Any, calib: np.ndarray, input_name: str, skip: Iterable[str],
                   threads: int | Callable[[], int] | None, batch: int) -> dict[str, tuple[float, float]]:
    """``(lowest, highest)`` of every calibrated tensor of ``model`` (loaded, shape-inferred) over ``calib``,
    except those in ``skip``; derived ``Concat`` outputs included.

    ``threads`` may be a callable, asked before each batch: when it allows more threads than the session
    has (the export's converter process has finished its FP32 work and left its core), the pass goes on
    in a session with more. The ranges do not depend on it."""
    import onnxruntime as ort

    skip = set(skip)
    names, ranks = calibrated_tensors(model)
    candidates = [n for n in names if n not in skip]
    derived = derived_concats(model, candidates)
    measured = [n for n in candidates if n not in derived]
    graph = augmented_model(model, measured, ranks).SerializeToString()

    def allowed() -> int:
        return int((threads() if callable(threads) else threads) or 0)

    def session_with(n: int) -> Any:
        return ort.InferenceSession(graph, session_options(n), providers=["CPUExecutionProvider"])

    current = allowed()
    session = session_with(current)
    first = len(model.graph.output)
    lo = np.full(len(measured), np.inf, np.float64)
    hi = np.full(len(measured), -np.inf, np.float64)
    x = np.ascontiguousarray(calib, dtype=np.float32)
    for start in range(0, len(x), batch):
        if current and allowed() > current and len(x) - start > 4 * batch:  # worth a new session
            current = allowed()
            session = session_with(current)
        outs = session.run(None, {input_name: x[start:start + batch]})[first:]
        lo = np.fmin(lo, [np.nanmin(v) if v.size else np.inf for v in outs[0::2]])
        hi = np.fmax(hi, [np.nanmax(v) if v.size else -np.inf for v in outs[1::2]])
    bad = [n for n, a, b in zip(measured, lo, hi, strict=True) if not (np.isfinite(a) and np.isfinite(b))]
    if bad:
        from ghostnet_edge.errors import ExportError

        raise ExportError(f"calibration found no finite value in {len(bad)} tensor(s) (first: {bad[0]}): the "
                          "model computes NaN or infinity on these images",
                          "check the checkpoint (a diverged training run?) and the calibration images")
    ranges = {n: (float(np.float32(a)), float(np.float32(b))) for n, a, b in zip(measured, lo, hi, strict=True)}
    for out, inputs in derived.items():  # graph order, so a concat of concats finds its inputs' ranges
        ranges[out] = (min(ranges[i][0] for i in inputs), max(ranges[i][1] for i in inputs))
    return ranges
