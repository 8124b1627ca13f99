"""Per-operator profiles for ``ghostedge bench --profile``: the summary, the table, the JSON file.

Two kinds of profile reach this module, and both become the same shape (``summarize`` output)::

    {"kind": "time" | "instructions", "unit": ..., "rows": [{"name", "op", "kernel", "cost", "share",
     ...}], "by_op": [...] (time) | "by_family": [...] (instructions), "total": sum of rows (per
     inference), "reference": {"name", "value"}, "coverage": total / reference, "notes": [...]}

- **time** (host, ssh boards): the device runner's ``--profile`` pass (``device_runner.profile_ops``):
  onnxruntime's per-node kernel times, or LiteRT's profiler events (XNNPACK's own operators when
  XNNPACK runs the graph, TFLite nodes for what runs outside it). ``cost`` is milliseconds per
  inference, averaged over the profiled runs; ``reference`` is the runtime's own whole-inference event
  (onnxruntime ``model_run``, LiteRT ``Invoke``) and ``wall_ms`` the wall time around each run.
- **instructions** (qemu-aarch64): guest instructions per inference per symbol, from the plugin's
  per-TB counts (``qemu/symbols.py``); ``reference`` is the plugin's whole marked count, which the rows
  sum to exactly.

For XNNPACK operators ``op`` is the TFLite operator they implement, inferred from XNNPACK's operator
name (``XNN_TO_TFLITE``); XNNPACK rewrites some of them (a 1x1 CONV_2D runs as "Fully Connected", a
CONCATENATION as one "Copy" per input), which is what the ``kernel`` column shows.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PROFILE_VERSION = 1
DEFAULT_TOP = 15

# XNNPACK operator-name prefix -> the TFLite operator it implements (first match wins).
XNN_TO_TFLITE: tuple[tuple[str, str], ...] = (
    (r"^Convolution .*DWConv", "DEPTHWISE_CONV_2D"),
    (r"^Convolution .*VMulCAddC", "DEPTHWISE_CONV_2D"),
    (r"^Convolution", "CONV_2D"),
    (r"^Deconvolution", "TRANSPOSE_CONV"),
    (r"^Fully Connected", "CONV_2D 1x1 / FULLY_CONNECTED"),
    (r"^Batch Matrix Multiply", "BATCH_MATMUL"),
    (r"^Copy", "CONCATENATION / copy"),
    (r"^Concatenat", "CONCATENATION"),
    (r"^(Global )?Average Pooling|^Mean", "MEAN / AVERAGE_POOL_2D"),
    (r"^Max Pooling", "MAX_POOL_2D"),
    (r"^Add", "ADD"),
    (r"^Subtract", "SUB"),
    (r"^Multiply", "MUL"),
    (r"^Divide", "DIV"),
    (r"^Hard ?Swish", "HARD_SWISH"),
    (r"^Sigmoid", "LOGISTIC"),
    (r"^Tanh", "TANH"),
    (r"^Clamp", "RELU / RELU6 (clamp)"),
    (r"^Leaky ReLU", "LEAKY_RELU"),
    (r"^Softmax", "SOFTMAX"),
    (r"^Convert", "QUANTIZE / DEQUANTIZE (convert)"),
    (r"^Constant Pad", "PAD"),
    (r"^Static Reshape|^Reshape", "RESHAPE"),
    (r"^Transpose", "TRANSPOSE"),
    (r"^Slice", "SLICE / SPLIT"),
    (r"^Resize", "RESIZE"),
)


def tflite_op_of(xnn_name: str) -> str:
    for pattern, op in XNN_TO_TFLITE:
        if re.search(pattern, xnn_name):
            return op
    return "?"


# --------------------------------------------------------------------------------------- summary


def _time_summary(raw: dict[str, Any]) -> dict[str, Any]:
    runs = max(1, int(raw.get("runs") or 1))
    rows = []
    for o in raw.get("ops") or []:
        count = int(o.get("count") or 0)
        if not count:
            continue
        level = o.get("level")
        if level == "xnnpack":
            name = f"xnnpack#{o.get('partition')} op {o.get('node')}"
            op, kernel = tflite_op_of(o["tag"]), o["tag"]
        elif level == "tflite":
            name, op, kernel = f"node {o.get('node')}", o["tag"], "TFLite builtin kernel"
        else:
            name, op, kernel = o["tag"], o.get("op", "?"), o.get("kernel", "")
        rows.append({"name": name, "op": op, "kernel": kernel, "level": level, "index": o.get("node"),
                     "position": o.get("pos"), "cost": o["total_us"] / 1000.0 / runs, "calls": count / runs})
    total = sum(r["cost"] for r in rows)
    rows.sort(key=lambda r: (-r["cost"], r["position"] if r["position"] is not None else 0))
    for r in rows:
        r["share"] = r["cost"] / total if total else 0.0
    groups: dict[str, dict[str, Any]] = {}
    for r in rows:
        key = r["op"]
        g = groups.setdefault(key, {"name": key, "cost": 0.0, "nodes": 0, "kernels": set()})
        g["cost"] += r["cost"]
        g["nodes"] += 1
        g["kernels"].add(r["kernel"])
    by_op = sorted(groups.values(), key=lambda g: -g["cost"])
    for g in by_op:
        g["share"] = g["cost"] / total if total else 0.0
        g["kernels"] = sorted(g["kernels"])
    reference = float(raw.get("reference_us") or 0) / 1000.0 / runs
    notes = list(raw.get("notes") or [])
    if raw.get("resolution_us"):
        notes.append(f"event times have {raw['resolution_us']} us resolution (each event is truncated), so "
                     f"with {len(rows)} nodes the sum can fall short by up to {len(rows) * raw['resolution_us']} us "
                     "per inference")
    return {
        "kind": "time", "unit": "ms per inference", "source": raw.get("source"), "engine": raw.get("engine"),
        "runtime": raw.get("runtime"), "runs": runs, "rows": rows, "by_op": by_op, "group_label": "operator",
        "total": total, "reference": {"name": raw.get("reference_name"), "value": reference},
        "coverage": total / reference if reference else None,
        "wall_ms": float(raw.get("wall_us") or 0) / 1000.0 / runs,
        "overhead_ms": {k: v / 1000.0 / runs for k, v in (raw.get("overhead_us") or {}).items()},
        "notes": notes,
    }


def summarize(raw: dict[str, Any] | None) -> dict[str, Any] | None:
    """The table-ready profile from a runner's raw ``profile`` (idempotent: a summary passes through)."""
    if raw is None or "rows" in raw or "error" in raw:
        return raw
    return _time_summary(raw)


def check_sum(profile: dict[str, Any], measured_ms: float | None = None) -> dict[str, Any]:
    """How the rows' sum compares with the runtime's own whole-inference time and the wall time."""
    out: dict[str, Any] = {"rows_total": profile.get("total")}
    ref = (profile.get("reference") or {}).get("value")
    if ref:
        out["vs_reference"] = profile["total"] / ref
    if profile.get("wall_ms"):
        out["vs_wall"] = profile["total"] / profile["wall_ms"]
    if measured_ms:
        out["vs_bench_p50"] = profile["total"] / measured_ms
    return out


# ----------------------------------------------------------------------------------------- output


def _fmt_cost(value: float, kind: str) -> str:
    if kind == "instructions":
        return f"{value / 1e6:,.3f} M" if value >= 1e5 else f"{value:,.0f}"
    return f"{value:.3f}"


def render(profile: dict[str, Any], title: str, top: int = DEFAULT_TOP) -> list[Any]:
    """Rich renderables for one profile: the top rows, the groups, and the notes."""
    from rich.table import Table
    from rich.text import Text

    if profile.get("error"):
        return [Text(f"{title}: no per-operator profile: {profile['error']}")]
    kind = profile["kind"]
    unit = "M instr" if kind == "instructions" else "ms"
    head = Table(title=f"{title}: top {min(top, len(profile['rows']))} of {len(profile['rows'])} "
                       f"{'symbols' if kind == 'instructions' else 'nodes'} ({profile['unit']})",
                 title_justify="left")
    cols = (["#", "symbol", "family", "library", unit, "share", "cum"] if kind == "instructions"
            else ["#", "node", "op", "kernel", unit, "share", "cum", "calls"])
    for c in cols:
        head.add_column(c, justify="right" if c in ("#", unit, "share", "cum", "calls") else "left",
                        overflow="fold")
    cum = 0.0
    for i, r in enumerate(profile["rows"][:top], 1):
        cum += r["share"]
        if kind == "instructions":
            head.add_row(str(i), r["name"], r["family"], r["library"], _fmt_cost(r["cost"], kind),
                         f"{100 * r['share']:.1f}%", f"{100 * cum:.1f}%")
        else:
            head.add_row(str(i), r["name"], r["op"], r["kernel"], _fmt_cost(r["cost"], kind),
                         f"{100 * r['share']:.1f}%", f"{100 * cum:.1f}%", f"{r['calls']:g}")
    groups = profile.get("by_family") if kind == "instructions" else profile.get("by_op")
    label = profile.get("group_label", "group")
    grp_title = f"{title}: by {label}"
    grp = Table(title=grp_title, title_justify="left", min_width=len(grp_title) + 2)
    for c in (label, unit, "share", "symbols" if kind == "instructions" else "nodes"):
        grp.add_column(c, justify="left" if c == label else "right", overflow="fold")
    for g in (groups or [])[:top]:
        grp.add_row(g["name"], _fmt_cost(g["cost"], kind), f"{100 * g['share']:.1f}%",
                    str(g.get("symbols", g.get("nodes", ""))))
    ref = profile.get("reference") or {}
    if kind == "instructions":
        sc = profile.get("sum_check") or {}
        summary = (f"sum of symbols {_fmt_cost(profile['total'], kind)} instructions per inference = "
                   f"{100 * (sc.get('ratio') or 0):.2f}% of the plugin's whole-inference count; "
                   f"unknown (stripped code) {100 * profile.get('unknown_share', 0):.1f}%")
    else:
        cov = profile.get("coverage")
        summary = (f"sum of nodes {profile['total']:.3f} ms per inference; {ref.get('name')}: "
                   f"{ref.get('value', 0):.3f} ms ({100 * cov:.1f}% covered)" if cov else
                   f"sum of nodes {profile['total']:.3f} ms per inference")
        summary += f"; wall time per profiled run {profile.get('wall_ms', 0):.3f} ms ({profile.get('engine')})"
    lines = [summary, *profile.get("notes", [])]
    return [head, grp, Text("\n".join("  " + ln for ln in lines))]


def profile_document(results: Sequence[Any], target: str, config: Any) -> dict[str, Any]:
    """What ``--profile-json`` writes: one entry per artifact with its latency and its profile."""
    entries = []
    for r in results:
        lat = r.latency_ms or {}
        entries.append({
            "artifact": r.artifact, "format": r.format, "precision": r.precision, "model": r.model,
            "runtime": r.runtime, "runtime_version": r.runtime_version, "delegate": r.delegate,
            "threads": r.threads, "cpu": r.cpu, "latency_p50_ms": lat.get("p50"),
            "instructions_per_inference": (r.instructions or {}).get("per_inference"),
            "status": r.status, "profile": r.profile,
        })
    return {"ghostedge_profile": PROFILE_VERSION, "target": target,
            "config": config.to_dict() if hasattr(config, "to_dict") else dict(config),
            "results": entries}


def write_profile_json(path: str | Path, results: Sequence[Any], target: str, config: Any) -> None:
    from ghostnet_edge.utils.atomic import atomic_write_json

    atomic_write_json(Path(path), profile_document(results, target, config))
