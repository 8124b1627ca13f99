"""The ONNX INT8 model's per-layer report: which layers quantization hurts.

A per-layer signal-to-quantization-noise ratio (SQNR): every intermediate tensor of the FP32 model is
compared with the matching dequantized tensor of the QDQ model on the same images, paired the way
onnxruntime's ``qdq_loss_debug`` pairs them (``create_activation_matching``).

Both models run as one graph: the FP32 nodes and the QDQ nodes side by side on the one input, and for
every pair a few ``ReduceSumSquare`` nodes whose scalars are the only outputs. Exposing every tensor of
both models as an output instead (onnxruntime's debugging recipe) made the runtime allocate, and NumPy
then read, every activation of both models; the report's stage in ``benchmarks/export_time.py`` went from
1.50-2.24 s to 0.95-1.65 s in six alternated runs (``docs/results/export_time_amd.md``). The graph runs unoptimised so
its Q/DQ pairs stay in place (no QLinearConv fusion). The checks of whole outputs live in
:mod:`ghostnet_edge.export.checks`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ghostnet_edge.errors import require
from ghostnet_edge.export.checks import db_from_sums

# --------------------------------------------------------------------------------------------------
# Per-layer SQNR
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerError:
    """How far one tensor of the QDQ model is from the FP32 model (higher dB = closer)."""

    tensor: str
    node: str
    op_type: str
    position: int
    sqnr_db: float          # QDQ tensor vs FP32 tensor: the error accumulated up to here
    qdq_sqnr_db: float | None  # the tensor before vs after its own Q/DQ pair: rounding/clipping noise
    drop_db: float          # sqnr of this tensor's worst input minus its own sqnr: the loss here

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class _Pair:
    """One compared tensor: its name in the FP32 model, and before/after its Q/DQ pair in the QDQ model."""

    name: str
    pre: str
    post: str
    activation: tuple[str, float, float] | None  # a Relu/Clip the QDQ model folded into the pair
    unknown_activation: bool                     # folded, but not one we can apply again


def _producers(model: Any) -> dict[str, tuple[int, Any]]:
    return {out: (i, node) for i, node in enumerate(model.graph.node) for out in node.output}


def _activation_pairs(fp32: Any, qdq: Any) -> list[_Pair]:
    """The tensors compared, in the FP32 model's graph order: onnxruntime's activation matching applied
    to the tensor names (the tensors its debugging recipe would save: every float, non-initializer one)."""
    from onnxruntime.quantization.qdq_loss_debug import create_activation_matching

    from ghostnet_edge.calib.minmax import calibrated_tensors

    f_names, _ = calibrated_tensors(fp32)
    q_names, _ = calibrated_tensors(qdq)
    matched = create_activation_matching({n: [n] for n in q_names}, {n: [n] for n in f_names})
    producers, qdq_producers = _producers(fp32), _producers(qdq)
    constants = _constants(fp32)
    pairs = []
    for name in f_names:
        m = matched.get(name)
        if m is None or "float" not in m:
            continue
        activation, unknown = None, False
        node = producers.get(name, (-1, None))[1]
        # A tensor whose activation onnxruntime removed (Relu/Clip folded into the following Q/DQ pair):
        # in the QDQ model its "pre-QDQ" value is the producer's output before that activation, so the
        # activation is applied again for the rounding-noise figure to mean something.
        if (node is not None and node.op_type in ("Relu", "Clip") and name in qdq_producers
                and qdq_producers[name][1].op_type != node.op_type):
            if node.op_type == "Relu":
                activation = ("Relu", 0.0, 0.0)
            else:
                bounds = [constants.get(t) for t in node.input[1:3]]
                if any(b is None and t for b, t in zip(bounds, node.input[1:3], strict=False)):
                    unknown = True  # bounds computed at run time: no rounding-noise figure
                else:
                    lo = float(bounds[0]) if len(bounds) > 0 and bounds[0] is not None else -np.inf
                    hi = float(bounds[1]) if len(bounds) > 1 and bounds[1] is not None else np.inf
                    activation = ("Clip", lo, hi)
        pairs.append(_Pair(name, m["pre_qdq"][0], m["post_qdq"][0], activation, unknown))
    return pairs


def _constants(model: Any) -> dict[str, np.ndarray]:
    """The values of ``model``'s initializers and ``Constant`` nodes (the exporter writes Clip bounds as
    either), by tensor name."""
    from onnx import numpy_helper

    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            attr = next((a for a in node.attribute if a.name == "value"), None)
            if attr is not None:
                values[node.output[0]] = numpy_helper.to_array(attr.t)
    return values


def _prefixed(graph: Any, prefix: str, shared: set[str]) -> tuple[list[Any], list[Any]]:
    """``graph``'s nodes and initializers with every tensor and node name prefixed (except ``shared``)."""
    import onnx

    def rename(name: str) -> str:
        return name if not name or name in shared else prefix + name

    nodes = []
    for node in graph.node:
        n = onnx.NodeProto()
        n.CopyFrom(node)
        n.input[:] = [rename(t) for t in node.input]
        n.output[:] = [rename(t) for t in node.output]
        n.name = prefix + node.name
        nodes.append(n)
    inits = []
    for t in graph.initializer:
        c = onnx.TensorProto()
        c.CopyFrom(t)
        c.name = rename(t.name)
        inits.append(c)
    return nodes, inits


def _interleaved(nodes: list[Any], fp32: Any) -> list[Any]:
    """``nodes`` (FP32 nodes, then QDQ nodes, then comparisons) reordered to run in step: each FP32 node,
    then the QDQ nodes of the same layer, then the comparisons of its tensors.

    onnxruntime runs nodes in the order given where the graph allows it, and frees a tensor after its
    last reader. Run whole model after whole model, every compared FP32 tensor would stay alive until the
    QDQ half reached it: hundreds of MB more per image, which on a fresh session costs more in page faults
    than the compute. A QDQ node keeps its FP32 layer's name (the quantizer names only the Q/DQ nodes it
    adds), so its rank is that layer's position; a node without one follows its latest input.
    """
    rank_of_name = {node.name: i for i, node in enumerate(fp32.graph.node)}
    tensor_rank: dict[str, int] = {}
    keyed = []
    for order, node in enumerate(nodes):
        group = 0 if node.name.startswith("f/") else 1 if node.name.startswith("q/") else 2
        rank = rank_of_name.get(node.name[2:]) if group < 2 else None
        if rank is None:
            rank = max((tensor_rank.get(t, -1) for t in node.input), default=-1)
        for t in node.output:
            tensor_rank[t] = rank
        keyed.append(((rank, group, order), node))
    return [node for _, node in sorted(keyed, key=lambda kv: kv[0])]


def comparison_graph(fp32: Any, qdq: Any, pairs: Sequence[_Pair]) -> tuple[Any, list[str]]:
    """One model running ``fp32`` and ``qdq`` side by side on their one input, whose outputs are, per
    pair: sum f^2, sum (f - post)^2, and (unless the folded activation is unknown) sum pre^2 and
    sum (pre - post)^2. Returns the model and the names of the outputs, in that order."""
    import onnx
    from onnx import helper

    f_opset = {o.domain: o.version for o in fp32.opset_import}
    q_opset = {o.domain: o.version for o in qdq.opset_import}
    if f_opset.get("", 0) != q_opset.get("", 0):
        from onnx import version_converter

        fp32 = version_converter.convert_version(fp32, q_opset[""])
    shared = {i.name for i in fp32.graph.input}
    f_nodes, f_inits = _prefixed(fp32.graph, "f/", shared)
    q_nodes, q_inits = _prefixed(qdq.graph, "q/", shared)

    def f(name: str) -> str:
        return name if name in shared else "f/" + name

    def q(name: str) -> str:
        return name if name in shared else "q/" + name

    nodes, inits, outputs = [*f_nodes, *q_nodes], [*f_inits, *q_inits], []

    def sum_sq(tensor: str, out: str) -> None:
        nodes.append(helper.make_node("ReduceSumSquare", [tensor], [out], name=out, keepdims=0))
        outputs.append(out)

    for i, p in enumerate(pairs):
        tag = f"ghostedge_sqnr_{i}"
        nodes.append(helper.make_node("Sub", [f(p.name), q(p.post)], [f"{tag}_err"], name=f"{tag}_err"))
        sum_sq(f(p.name), f"{tag}_sig_sum")
        sum_sq(f"{tag}_err", f"{tag}_err_sum")
        if p.unknown_activation:
            continue
        pre = q(p.pre)
        if p.activation is not None:
            kind, lo, hi = p.activation
            pre = f"{tag}_pre"
            if kind == "Relu":
                nodes.append(helper.make_node("Relu", [q(p.pre)], [pre], name=pre))
            else:
                bounds = [f"{tag}_lo", f"{tag}_hi"]
                inits += [onnx.numpy_helper.from_array(np.array(v, np.float32), b) for v, b in zip((lo, hi), bounds,
                                                                                                strict=True)]
                nodes.append(helper.make_node("Clip", [q(p.pre), *bounds], [pre], name=pre))
        nodes.append(helper.make_node("Sub", [pre, q(p.post)], [f"{tag}_qerr"], name=f"{tag}_qerr"))
        sum_sq(pre, f"{tag}_pre_sum")
        sum_sq(f"{tag}_qerr", f"{tag}_qerr_sum")
    graph = helper.make_graph(_interleaved(nodes, fp32), "ghostedge_sqnr", list(fp32.graph.input),
                              [helper.make_empty_tensor_value_info(o) for o in outputs], inits)
    opsets = {**f_opset, **q_opset}
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()],
                              ir_version=max(fp32.ir_version, qdq.ir_version))
    return model, outputs


def per_layer_sqnr(fp32_path: Path | str, qdq_path: Path | str, x: np.ndarray, batch: int = 2,
                   threads: int | None = None) -> list[LayerError]:
    """SQNR of every QDQ activation against the FP32 model on the images ``x``, in graph order.

    ``batch`` images a run: small batches keep the tensors of one layer in the CPU's caches."""
    onnx = require("onnx", "onnx", "the per-layer quantization report")
    ort = require("onnxruntime", "onnxruntime", "the per-layer quantization report")
    from ghostnet_edge.runtime.backends import default_threads

    fp32 = onnx.shape_inference.infer_shapes(onnx.load(str(fp32_path)))
    qdq = onnx.shape_inference.infer_shapes(onnx.load(str(qdq_path)))
    pairs = _activation_pairs(fp32, qdq)
    if not pairs:  # not onnxruntime's Q/DQ naming (an NNCF model): nothing to pair
        return []
    model, outputs = comparison_graph(fp32, qdq, pairs)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = threads or default_threads()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    in_name = sess.get_inputs()[0].name
    totals = np.zeros(len(outputs), np.float64)
    for i in range(0, len(x), batch):
        xb = np.ascontiguousarray(x[i:i + batch], dtype=np.float32)
        totals += np.array([float(v) for v in sess.run(outputs, {in_name: xb})])
    sums = dict(zip(outputs, totals, strict=True))

    producers = _producers(fp32)
    sq_db = {}
    for i, p in enumerate(pairs):
        sq_db[p.name] = _db(sums[f"ghostedge_sqnr_{i}_sig_sum"], sums[f"ghostedge_sqnr_{i}_err_sum"])
    layers = []
    for i, p in enumerate(pairs):
        pos, node = producers.get(p.name, (-1, None))
        inputs = [sq_db[t] for t in _measured_ancestors(p.name, producers, sq_db)]
        own = sq_db[p.name]
        qdq_db = None if p.unknown_activation else _db(sums[f"ghostedge_sqnr_{i}_pre_sum"],
                                                         sums[f"ghostedge_sqnr_{i}_qerr_sum"])
        layers.append(LayerError(tensor=p.name, node=node.name if node is not None else "(graph input)",
                                 op_type=node.op_type if node is not None else "Input", position=pos,
                                 sqnr_db=own, qdq_sqnr_db=qdq_db, drop_db=(min(inputs) - own) if inputs else 0.0))
    return sorted(layers, key=lambda e: (e.position, e.tensor))


def _measured_ancestors(name: str, producers: dict[str, tuple[int, Any]], measured: dict[str, float],
                        ) -> list[str]:
    """The nearest tensors upstream of ``name`` that were measured (skipping unmeasured conv outputs)."""
    found: list[str] = []
    seen: set[str] = set()
    node = producers.get(name, (-1, None))[1]
    stack = list(node.input) if node is not None else []
    while stack:
        t = stack.pop()
        if t in seen or not t:
            continue
        seen.add(t)
        if t in measured:
            found.append(t)
        elif t in producers:
            stack.extend(producers[t][1].input)
    return found


def _db(signal_sq: float, noise_sq: float) -> float:
    return db_from_sums(signal_sq, noise_sq)


def worst_layers(layers: Sequence[LayerError], k: int = 5) -> list[LayerError]:
    """The ``k`` layers that add the most quantization noise (largest SQNR drop, then lowest SQNR)."""
    return sorted(layers, key=lambda e: (-e.drop_db, e.sqnr_db))[:k]
