"""Check ONNX artifacts against PyTorch on held-out real images, and find the layers INT8 hurts.

* FP32: the largest absolute logit difference must be at most the tolerance (1e-4 by default).
* INT8: top-1 agreement with PyTorch (and, with labels, the accuracy of both) plus a per-layer
  signal-to-quantization-noise ratio (SQNR) computed with onnxruntime's ``qdq_loss_debug`` tools:
  every intermediate tensor of the FP32 model is compared with the matching dequantized tensor of
  the QDQ model on the same images.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ghostnet_edge.errors import require
from ghostnet_edge.export.checks import accuracy, db_from_sums, sqnr_db, square_sums, top1_agreement  # noqa: F401 (re-exported)

DEFAULT_FP32_TOLERANCE = 1e-4
DEFAULT_MIN_AGREEMENT = 0.8
EVAL_BATCH = 16


def default_threads() -> int:
    """Threads for onnxruntime here: ``OMP_NUM_THREADS`` when set (tests pin 1), else all cores."""
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "0"))) if os.environ.get("OMP_NUM_THREADS") \
            else max(1, os.cpu_count() or 1)
    except ValueError:
        return max(1, os.cpu_count() or 1)


def ort_session(path: Path | str, threads: int | None = None, optimize: bool = True) -> Any:
    """An onnxruntime CPU session; ``optimize=False`` keeps QDQ pairs as they are in the file."""
    ort = require("onnxruntime", "onnxruntime", "checking ONNX models")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or default_threads()
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def run_onnx(session: Any, x: np.ndarray, batch: int = EVAL_BATCH) -> np.ndarray:
    """Logits of an ONNX session for (N, C, H, W) input, in batches (the graph has a dynamic batch)."""
    name = session.get_inputs()[0].name
    fixed = session.get_inputs()[0].shape[0]
    step = fixed if isinstance(fixed, int) and fixed > 0 else batch
    outs = [session.run(None, {name: np.ascontiguousarray(x[i:i + step], dtype=np.float32)})[0]
            for i in range(0, len(x), step)]
    return np.concatenate(outs).astype(np.float32)


def run_torch(model: Any, x: np.ndarray, batch: int = EVAL_BATCH) -> np.ndarray:
    """Reference logits from the PyTorch model in eval mode."""
    import torch

    model = model.eval()
    outs = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            outs.append(model(torch.from_numpy(np.ascontiguousarray(x[i:i + batch]))).float().numpy())
    return np.concatenate(outs)


def torch_float_error(model: Any, x: np.ndarray, ref: np.ndarray) -> float:
    """max |float32 logits - float64 logits| of ``model`` on ``x``: how far PyTorch's own float32 result
    is from the exact one, the floor under any float32 artifact's agreement with it."""
    import copy

    import torch

    exact = copy.deepcopy(model).double().eval()
    outs = []
    with torch.no_grad():
        for i in range(0, len(x), EVAL_BATCH):
            outs.append(exact(torch.from_numpy(np.ascontiguousarray(x[i:i + EVAL_BATCH])).double()).numpy())
    return float(np.max(np.abs(np.concatenate(outs) - np.asarray(ref, np.float64))))


@dataclass
class Check:
    """One artifact's verification result (what the manifest and the CLI table show)."""

    artifact: str
    kind: str                     # "fp32" | "int8"
    num_images: int
    passed: bool
    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float
    logits_sqnr_db: float
    tolerance: float | None = None
    min_agreement: float | None = None
    accuracy_reference: float | None = None
    accuracy: float | None = None
    accuracy_delta: float | None = None
    reason: str = ""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _common(artifact: str, kind: str, ref: np.ndarray, out: np.ndarray,
            labels: np.ndarray | None) -> Check:
    diff = np.abs(ref.astype(np.float64) - out.astype(np.float64))
    check = Check(artifact=artifact, kind=kind, num_images=int(len(ref)), passed=True,
                  max_abs_diff=float(diff.max()), mean_abs_diff=float(diff.mean()),
                  top1_agreement=top1_agreement(ref, out), logits_sqnr_db=sqnr_db(ref, out))
    if labels is not None:
        check.accuracy_reference = accuracy(ref, labels)
        check.accuracy = accuracy(out, labels)
        check.accuracy_delta = check.accuracy - check.accuracy_reference
    if not np.all(np.isfinite(out)):
        check.passed = False
        check.reason = "the artifact produced NaN or infinite logits"
    return check


def check_fp32(artifact: str, ref: np.ndarray, out: np.ndarray, tolerance: float = DEFAULT_FP32_TOLERANCE,
               labels: np.ndarray | None = None) -> Check:
    """FP32 passes when max |logit difference| to PyTorch is at most ``tolerance``."""
    check = _common(artifact, "fp32", ref, out, labels)
    check.tolerance = tolerance
    if check.passed and not check.max_abs_diff <= tolerance:
        check.passed = False
        check.reason = (f"max |logit difference| to PyTorch is {check.max_abs_diff:.3g}, above the "
                        f"tolerance {tolerance:.3g}")
    return check


def check_int8(artifact: str, ref: np.ndarray, out: np.ndarray, min_agreement: float = DEFAULT_MIN_AGREEMENT,
               labels: np.ndarray | None = None, enforce: bool = True) -> Check:
    """INT8 passes when its top-1 agrees with PyTorch on at least ``min_agreement`` of the images.

    ``enforce=False`` (a network without trained weights, whose near-tied logits make agreement
    meaningless) records the shortfall as a note instead of failing.
    """
    check = _common(artifact, "int8", ref, out, labels)
    check.min_agreement = min_agreement
    if check.passed and check.top1_agreement < min_agreement:
        msg = (f"top-1 agreement with PyTorch is {check.top1_agreement:.3f} on {check.num_images} held-out "
               f"images, below the minimum {min_agreement:.3f}")
        if enforce:
            check.passed = False
            check.reason = msg
        else:
            check.notes.append(msg + " (not enforced: the network has no trained weights)")
    return check


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
        sf = ort_session(aug_f, threads, optimize=True)
        sq = ort_session(aug_q, threads, optimize=False)
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
