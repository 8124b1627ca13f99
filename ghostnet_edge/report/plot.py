"""Draw the accuracy-vs-latency curve (PNG and SVG) with matplotlib's Agg backend.

Layout: one panel per (target, runtime), because PyTorch, ONNX Runtime and TFLite latencies are not
comparable and a qemu target's x axis is an instruction count, not time. In each panel there is one
line per (family, precision): colour = family, filled marker + solid line = FP32, hollow marker +
dashed line = INT8. Every accuracy is drawn as a spread over seeds: the marker is the mean, the thick
bar +-1 std, the thin capped whisker min-max.

Files are byte-stable for the same points: SVG hash salt fixed and no dates in PNG/SVG metadata.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ghostnet_edge.report.paper import FIGURE7
from ghostnet_edge.report.points import (
    FORMATS,
    QEMU_X_LABEL,
    CurvePoint,
    is_qemu_target,
    missing_labels,
    sort_points,
)
from ghostnet_edge.utils.atomic import atomic_path

FAMILY_COLORS: dict[str, str] = {
    "GhostNet": "#d62728",
    "MobileNetV3-Large": "#1f77b4",
    "MobileNetV3-Small": "#17becf",
    "MobileNetV3": "#1f77b4",
    "MobileNetV2": "#2ca02c",
    "GhostNetV2": "#ff7f0e",
    "GhostNetV3": "#9467bd",
    "RepGhostNet": "#8c564b",
}
RUNTIME_ORDER = ("PyTorch", "ONNX Runtime", "TFLite")


@dataclass
class PlotOptions:
    title: str = "Accuracy vs latency"
    y_label: str = "top-1 accuracy (%)"
    paper_overlay: bool = False
    spread_legend: bool = True    # False when accuracies are published single numbers (no seeds)
    spread_over: str = "seeds"    # what a spread is taken over, e.g. "seeds x calibration draws" for INT8
    note: str = ""            # extra footnote line, e.g. "latency measured once per model on seed 0"


def _panels(points: Sequence[CurvePoint]) -> list[tuple[str, str]]:
    """(target, runtime) panels that have at least one point, in a fixed order."""
    seen = {(p.target, p.runtime) for p in points}
    rank = {r: i for i, r in enumerate(RUNTIME_ORDER)}
    return sorted(seen, key=lambda tr: (is_qemu_target(tr[0]), tr[0], rank.get(tr[1], 9), tr[1]))


def _x_label(target: str, runtime: str) -> str:
    if is_qemu_target(target):
        return f"{runtime} on {target}\n{QEMU_X_LABEL}"
    return f"{runtime} on {target}\np50 latency per image (ms, batch 1)"


def draw_curve(points: Sequence[CurvePoint], png: Path | str, svg: Path | str | None = None,
               options: PlotOptions | None = None) -> list[str]:
    """Draw what can be drawn; return the labels of the points that could not be (also printed on it).

    An empty ``points`` still produces a figure that says nothing was measured, so a failed sweep
    leaves a readable plot rather than no file.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    opts = options or PlotOptions()
    pts = sort_points(points)
    panels = _panels(pts) or [("none", "")]
    missing = missing_labels(pts)
    ncols = min(3, len(panels))
    nrows = (len(panels) + ncols - 1) // ncols
    height = 4.2 * nrows + 1.2  # inches: panels + 1.2 in for the title and legend on top
    with matplotlib.rc_context({"svg.hashsalt": "ghostedge", "svg.fonttype": "none", "font.size": 9}):
        fig, axes = plt.subplots(nrows, ncols, figsize=(5.6 * ncols, height), squeeze=False)
        for ax, (target, runtime) in zip(axes.flat, panels, strict=False):
            _draw_panel(ax, [p for p in pts if p.target == target and p.runtime == runtime], target, runtime,
                        opts)
        for ax in list(axes.flat)[len(panels):]:
            ax.set_visible(False)
        legend = [Line2D([], [], color="k", marker="o", linestyle="-", label="FP32 (filled, solid)"),
                  Line2D([], [], color="k", marker="o", markerfacecolor="none", linestyle="--",
                         label="INT8 (hollow, dashed)")]
        if opts.spread_legend:
            legend += [Line2D([], [], color="k", linewidth=3, alpha=0.5, label=f"± 1 std over {opts.spread_over}"),
                       Line2D([], [], color="k", linewidth=0.8, marker="_", markersize=8,
                              label=f"min–max over {opts.spread_over}")]
        fams = sorted({p.family for p in pts if p.plottable})
        legend += [Line2D([], [], color=FAMILY_COLORS.get(f, "grey"), linewidth=2, label=f) for f in fams]
        if opts.paper_overlay:
            legend.append(Line2D([], [], color="grey", marker="x", linestyle=":", label="paper Fig. 7 (phone)"))
        fig.suptitle(opts.title, y=1 - 0.12 / height, va="top", fontsize=11)
        fig.legend(handles=legend, loc="upper center", ncol=min(len(legend), 5), frameon=False,
                   bbox_to_anchor=(0.5, 1 - 0.4 / height))
        foot = []
        if opts.note:
            foot.append(opts.note)
        if missing:
            shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
            foot.append(f"missing (not drawn): {shown}")
        if not any(p.plottable for p in pts):
            foot.append("no point could be measured; see failures.jsonl")
        if foot:
            fig.text(0.01, 0.005, "\n".join(foot), fontsize=7, va="bottom", ha="left", wrap=True)
        fig.tight_layout(rect=(0, (0.15 + 0.14 * len(foot)) / height, 1, 1 - 1.0 / height))
        _save(fig, Path(png), "png")
        if svg is not None:
            _save(fig, Path(svg), "svg")
        plt.close(fig)
    return missing


def _save(fig: object, path: Path, fmt: str) -> None:
    # Date=None keeps the file identical between runs (no timestamp in the metadata).
    meta = {"Date": None} if fmt == "svg" else {"Software": None}
    with atomic_path(path, suffix=f".{fmt}") as tmp:
        fig.savefig(tmp, format=fmt, dpi=130, bbox_inches="tight", metadata=meta)  # type: ignore[attr-defined]


def _draw_panel(ax: object, pts: list[CurvePoint], target: str, runtime: str, opts: PlotOptions) -> None:
    groups: dict[tuple[str, str], list[CurvePoint]] = {}
    for p in pts:
        if p.plottable:
            groups.setdefault((p.family, p.precision), []).append(p)
    for (family, precision), members in sorted(groups.items()):
        members.sort(key=lambda p: p.x or 0.0)
        color = FAMILY_COLORS.get(family, "grey")
        hollow = precision == "int8"
        xs = [p.x for p in members]
        ys = [p.acc_mean for p in members]
        ax.plot(xs, ys, linestyle="--" if hollow else "-", color=color, linewidth=1.2, zorder=2)  # type: ignore[attr-defined]
        for p in members:
            if p.acc_source != "published" and p.acc_min is not None and p.acc_max is not None:
                # min-max whisker: thin line with caps; +-1 std: thick translucent bar on top of it.
                ax.errorbar([p.x], [p.acc_mean], yerr=[[p.acc_mean - p.acc_min], [p.acc_max - p.acc_mean]],  # type: ignore[attr-defined]
                            fmt="none", ecolor=color, elinewidth=0.8, capsize=4, capthick=0.8, zorder=3)
                std = p.acc_std or 0.0
                ax.errorbar([p.x], [p.acc_mean], yerr=[[std], [std]], fmt="none", ecolor=color,  # type: ignore[attr-defined]
                            elinewidth=4, alpha=0.45, capsize=0, zorder=3)
            ax.plot([p.x], [p.acc_mean], marker="o", markersize=6, color=color,  # type: ignore[attr-defined]
                    markerfacecolor="white" if hollow else color, markeredgewidth=1.4, zorder=4)
            ax.annotate(f"{p.width:g}x", (p.x, p.acc_mean), textcoords="offset points", xytext=(4, 4),  # type: ignore[attr-defined]
                        fontsize=7, color=color)
    if opts.paper_overlay and not is_qemu_target(target):
        _draw_overlay(ax)
    ax.set_xlabel(_x_label(target, runtime))  # type: ignore[attr-defined]
    if is_qemu_target(target):
        from matplotlib.ticker import FuncFormatter

        # Counts run to 1e8-1e10: "350M" reads better than an offset exponent in the corner.
        ax.xaxis.set_major_formatter(FuncFormatter(_si_count))  # type: ignore[attr-defined]
    ax.set_ylabel(opts.y_label)  # type: ignore[attr-defined]
    ax.grid(True, alpha=0.3)  # type: ignore[attr-defined]
    if not any(p.plottable for p in pts):
        ax.text(0.5, 0.5, "no measured point", transform=ax.transAxes, ha="center", va="center",  # type: ignore[attr-defined]
                color="grey")


def _si_count(value: float, _pos: object = None) -> str:
    """Tick label for instruction counts: 1.5e8 -> "150M", 2e9 -> "2G"."""
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:g}{unit}"
    return f"{value:g}"


def _draw_overlay(ax: object) -> None:
    """The paper's Figure 7 markers on their own top x axis.

    They were timed on an ARM phone, a different device from ours, so they get a separate x scale
    (same y: both are ImageNet top-1) and grey-ish crosses, labelled as the paper's.
    """
    top = ax.twiny()  # type: ignore[attr-defined]
    fams: dict[str, list[tuple[float, float]]] = {}
    for p in FIGURE7:
        fams.setdefault(p.family, []).append((p.latency_ms, p.top1_pct))
    for fam, xy in sorted(fams.items()):
        xs, ys = zip(*sorted(xy), strict=True)
        top.plot(xs, ys, marker="x", linestyle=":", color=FAMILY_COLORS.get(fam, "grey"), alpha=0.55, zorder=1)
    top.set_xlabel("paper Figure 7: ARM phone latency (ms), read off the plot (+-1 ms)", fontsize=7,
                   color="dimgrey")
    top.tick_params(axis="x", labelsize=7, colors="dimgrey")


def formats_label(formats: Sequence[str]) -> str:
    """``torch, tflite-int8`` -> ``PyTorch FP32, TFLite INT8`` for titles."""
    return ", ".join(f"{FORMATS[f].runtime} {FORMATS[f].precision.upper()}" for f in formats if f in FORMATS)
