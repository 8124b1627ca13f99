"""The quantization report: which layers lose the most signal in each INT8 artifact.

Per-layer SQNR (signal-to-quantization-noise ratio, dB) compares every activation of the INT8 model
with the same tensor of the float model on the same held-out images. ``sqnr_db`` is the error
accumulated up to that tensor; ``drop_db`` is how much worse it is than the tensor's inputs, i.e. how
much noise this layer adds. Sorting by the drop points at the layers worth keeping in float or
calibrating better; a steadily falling SQNR with no single large drop means the whole network is
sensitive (more calibration images, per-channel weights or another calibration method).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

# Below this the error is of the same order as a few least-significant bits of an 8-bit tensor spread
# over the whole range: worth a look.
LOW_SQNR_DB = 15.0
WORST_K = 10


def _num(v: float | None) -> float | None:
    if v is None or (isinstance(v, float) and (math.isnan(v) or math.isinf(v))):
        return None
    return round(float(v), 2)


def onnx_layer_rows(layers: Sequence[Any]) -> list[dict[str, Any]]:
    """Rows for the report from :class:`~ghostnet_edge.export.onnx.layers.LayerError` objects."""
    return [{"tensor": e.tensor, "node": e.node, "op": e.op_type, "position": e.position,
             "sqnr_db": _num(e.sqnr_db), "qdq_sqnr_db": _num(e.qdq_sqnr_db), "drop_db": _num(e.drop_db)}
            for e in layers]


def tflite_layer_rows(layers: Sequence[Any]) -> list[dict[str, Any]]:
    """Rows from the TFLite stage's ``LayerSqnr`` (name, op, shape, sqnr_db, inputs).

    ``drop_db`` is taken against the noisiest measured input of the layer, read from the graph's edges
    (the input's QUANTIZE is measured against the float image). Taking it against the previous tensor in execution order
    instead would be wrong at every branch: a squeeze-excite multiply follows its gate (a [0, 1] tensor
    with little noise), so it would appear to lose 20-35 dB that its other input had already lost.
    A layer none of whose inputs was measured has no drop.
    """
    measured = {e.name: e.sqnr_db for e in layers}
    rows = []
    for i, e in enumerate(layers):
        s = _num(e.sqnr_db)
        sources = [measured[name] for name in getattr(e, "inputs", ()) if name in measured]
        drop = _num(min(sources) - e.sqnr_db) if sources and s is not None else None
        rows.append({"tensor": e.name, "node": e.name, "op": e.op, "position": i, "sqnr_db": s,
                     "qdq_sqnr_db": None, "drop_db": drop})
    return rows


def worst(rows: Sequence[dict[str, Any]], k: int = WORST_K) -> list[dict[str, Any]]:
    """The ``k`` rows with the largest SQNR drop (ties: lower SQNR first)."""
    def key(r: dict[str, Any]) -> tuple[float, float]:
        return (-(r["drop_db"] if r["drop_db"] is not None else -1e9),
                r["sqnr_db"] if r["sqnr_db"] is not None else 1e9)

    return sorted(rows, key=key)[:k]


def artifact_section(name: str, rows: Sequence[dict[str, Any]], check: dict[str, Any] | None,
                     num_images: int) -> dict[str, Any]:
    measured = [r["sqnr_db"] for r in rows if r["sqnr_db"] is not None]
    return {
        "artifact": name,
        "num_images": num_images,
        "num_layers": len(rows),
        "min_sqnr_db": min(measured) if measured else None,
        "output_sqnr_db": measured[-1] if measured else None,
        "low_sqnr_threshold_db": LOW_SQNR_DB,
        "worst_layers": worst(rows),
        "check": check,
        "layers": list(rows),
    }


def build_quant_report(sections: Sequence[dict[str, Any]], calibration: dict[str, Any]) -> dict[str, Any]:
    return {"what": "per-layer SQNR of each INT8 artifact against its float model on held-out images",
            "calibration": calibration, "artifacts": list(sections)}


def render_markdown(report: dict[str, Any]) -> str:
    """A short human-readable version of the report (worst layers per artifact)."""
    lines = ["# Quantization report", "",
             "SQNR = 20 log10(|float| / |float - int8|) per tensor on held-out images; higher is better. "
             "`drop` is the SQNR lost at that layer (vs its inputs): large drops are the layers that "
             "lose accuracy.", ""]
    cal = report.get("calibration") or {}
    if cal:
        lines += [f"Calibration: {cal.get('count')} images, {cal.get('num_classes')} classes, "
                  f"method {cal.get('method')}.", ""]
    for sec in report["artifacts"]:
        chk = sec.get("check") or {}
        lines += [f"## {sec['artifact']}", ""]
        summary = [f"{sec['num_layers']} tensors measured on {sec['num_images']} images"]
        if sec.get("output_sqnr_db") is not None:
            summary.append(f"output SQNR {sec['output_sqnr_db']} dB")
        if chk.get("top1_agreement") is not None:
            summary.append(f"top-1 agreement with PyTorch {chk['top1_agreement']:.3f}")
        if chk.get("accuracy_delta") is not None:
            summary.append(f"accuracy delta {chk['accuracy_delta']:+.3f}")
        lines += ["; ".join(summary) + ".", "", "| layer | op | SQNR dB | drop dB |", "|---|---|---:|---:|"]
        for r in sec["worst_layers"]:
            flag = " (low)" if r["sqnr_db"] is not None and r["sqnr_db"] < LOW_SQNR_DB else ""
            lines.append(f"| `{r['node']}` | {r['op']} | {r['sqnr_db']}{flag} | {r['drop_db']} |")
        lines.append("")
    return "\n".join(lines)
