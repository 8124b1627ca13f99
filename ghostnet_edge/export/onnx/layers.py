"""The ONNX INT8 model's per-layer report: which layers quantization hurts.

A per-layer signal-to-quantization-noise ratio (SQNR) computed with onnxruntime's ``qdq_loss_debug``
tools: every intermediate tensor of the FP32 model is compared with the matching dequantized tensor of
the QDQ model on the same images. Both models run through the one artifact runner
(:func:`ghostnet_edge.runtime.backends.open_model`); the checks of whole outputs live in
:mod:`ghostnet_edge.export.checks`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ghostnet_edge.errors import require
from ghostnet_edge.export.checks import db_from_sums, square_sums

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


def _producers(model: Any) -> dict[str, tuple[int, Any]]:
    return {out: (i, node) for i, node in enumerate(model.graph.node) for out in node.output}


def per_layer_sqnr(fp32_path: Path | str, qdq_path: Path | str, x: np.ndarray, work_dir: Path | str,
                   batch: int = 4, threads: int | None = None) -> list[LayerError]:
    """SQNR of every QDQ activation against the FP32 model, in graph order.

    Uses ``modify_model_output_intermediate_tensors`` to expose every tensor and
    ``create_activation_matching`` to pair them, as onnxruntime's QDQ debugging guide does, but
    sums squared signal and noise batch by batch instead of keeping every activation of every
    image in memory (gigabytes at 224x224).
    """
    onnx = require("onnx", "onnx", "the per-layer quantization report")
    require("onnxruntime", "onnxruntime", "the per-layer quantization report")
    from onnx import numpy_helper
    from onnxruntime.quantization.qdq_loss_debug import (
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    fp32 = onnx.load(str(fp32_path), load_external_data=False)
    producers = _producers(fp32)
    qdq_producers = _producers(onnx.load(str(qdq_path), load_external_data=False))
    inits = {t.name: numpy_helper.to_array(t) for t in fp32.graph.initializer}
    # Tensors whose activation onnxruntime removed (Relu/Clip folded into the following Q/DQ pair).
    fused = {name: _fused_activation(node, inits) for name, (_, node) in producers.items()
             if node.op_type in ("Relu", "Clip") and name in qdq_producers
             and qdq_producers[name][1].op_type != node.op_type}

    work = Path(work_dir)
    aug_f, aug_q = work / ".fp32_augmented.onnx", work / ".qdq_augmented.onnx"
    try:
        modify_model_output_intermediate_tensors(str(fp32_path), str(aug_f))
        modify_model_output_intermediate_tensors(str(qdq_path), str(aug_q))
        # The QDQ session is unoptimised so its Q/DQ pairs stay in place (no QLinearConv fusion); the
        # float one may use the fast kernels: every tensor read is a graph output either way.
        from ghostnet_edge.runtime.backends import default_threads, open_model

        n = threads or default_threads()
        sf = open_model(aug_f, "onnxruntime", n).model.sess
        sq = open_model(aug_q, "onnxruntime", n, keep_intermediates=True).model.sess
        sums: dict[str, dict[str, float]] = {}
        in_name = sf.get_inputs()[0].name
        suffix = "_ReshapedSavedOutput"

        def acts(session: Any, xb: np.ndarray) -> dict[str, list[np.ndarray]]:
            names = [o.name for o in session.get_outputs()]
            vals = session.run(None, {in_name: xb})
            return {n[: -len(suffix)]: [v] for n, v in zip(names, vals, strict=True) if n.endswith(suffix)}

        for i in range(0, len(x), batch):
            xb = np.ascontiguousarray(x[i:i + batch], dtype=np.float32)
            matched = create_activation_matching(acts(sq, xb), acts(sf, xb))
            for name, m in matched.items():
                if "float" not in m:
                    continue
                f = m["float"][0]
                pre = m["pre_qdq"][0]
                if name in fused:
                    act = fused[name]
                    pre = act(pre) if act is not None else None
                post = m["post_qdq"][0]
                s = sums.setdefault(name, {"sig": 0.0, "err": 0.0, "pre": 0.0, "qerr": 0.0})
                sig, err = square_sums(f, post)
                s["sig"] += sig
                s["err"] += err
                if pre is None:
                    s["pre"] = -1.0  # unknown folded activation: no rounding-noise figure
                elif s["pre"] >= 0:
                    pre_sig, qerr = square_sums(pre, post)
                    s["pre"] += pre_sig
                    s["qerr"] += qerr
    finally:
        aug_f.unlink(missing_ok=True)
        aug_q.unlink(missing_ok=True)

    sq_db = {name: _db(s["sig"], s["err"]) for name, s in sums.items()}
    layers = []
    for name, s in sums.items():
        pos, node = producers.get(name, (-1, None))
        inputs = [sq_db[t] for t in _measured_ancestors(name, producers, sq_db)]
        own = sq_db[name]
        layers.append(LayerError(tensor=name, node=node.name if node is not None else "(graph input)",
                                 op_type=node.op_type if node is not None else "Input", position=pos,
                                 sqnr_db=own, qdq_sqnr_db=_db(s["pre"], s["qerr"]) if s["pre"] >= 0 else None,
                                 drop_db=(min(inputs) - own) if inputs else 0.0))
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


def _fused_activation(fp32_node: Any, initializers: dict[str, np.ndarray]) -> Any:
    """The activation onnxruntime folded into a Q/DQ pair (Relu/Clip before QuantizeLinear).

    In the QDQ model such a tensor's "pre-QDQ" value is the producer's output *before* the removed
    activation; applying the activation again makes the rounding-noise figure meaningful.
    """
    if fp32_node is None:
        return None
    if fp32_node.op_type == "Relu":
        return lambda a: np.maximum(a, 0.0)
    if fp32_node.op_type == "Clip":
        bounds = [initializers.get(t) for t in fp32_node.input[1:3]]
        lo = float(bounds[0]) if len(bounds) > 0 and bounds[0] is not None else -np.inf
        hi = float(bounds[1]) if len(bounds) > 1 and bounds[1] is not None else np.inf
        return lambda a: np.clip(a, lo, hi)
    return None


def _db(signal_sq: float, noise_sq: float) -> float:
    return db_from_sums(signal_sq, noise_sq)


def worst_layers(layers: Sequence[LayerError], k: int = 5) -> list[LayerError]:
    """The ``k`` layers that add the most quantization noise (largest SQNR drop, then lowest SQNR)."""
    return sorted(layers, key=lambda e: (-e.drop_db, e.sqnr_db))[:k]
