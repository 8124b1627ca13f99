"""The points of the accuracy-vs-latency curve, and their CSV and Markdown forms.

Pure functions over plain data: the sweep (``pipeline.curve``) builds :class:`CurvePoint` objects from
its work folder, and everything here turns them into files, so tests can drive the tables with
synthetic points and no torch.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import NamedTuple

from ghostnet_edge.errors import ModelError
from ghostnet_edge.export.artifacts import ARTIFACTS
from ghostnet_edge.models.registry import parse_model_name as registry_parse_model_name
from ghostnet_edge.utils.spread import VERDICT_RULE, PairedDiff, paired_differences


class FormatInfo(NamedTuple):
    runtime: str          # label on the plot
    precision: str        # "fp32" | "int8"
    file: str | None      # artifact file in the export folder; None = the PyTorch checkpoint itself
    kind: str             # the runtime stage's format name: "torch" | "onnx" | "tflite"


_RUNTIME_LABELS = {"onnx": "ONNX Runtime", "tflite": "TFLite"}
# The PyTorch checkpoint itself, then every exported artifact (file names from the export's one table).
FORMATS: dict[str, FormatInfo] = {
    "torch": FormatInfo("PyTorch", "fp32", None, "torch"),
    **{a.key: FormatInfo(_RUNTIME_LABELS[a.format], a.precision, a.file, a.format) for a in ARTIFACTS},
}
DEFAULT_FORMATS: tuple[str, ...] = tuple(FORMATS)

FAMILIES: dict[str, str] = {
    "ghostnet": "GhostNet",
    "mobilenetv3_large": "MobileNetV3-Large",
    "mobilenetv3_small": "MobileNetV3-Small",
    "mobilenetv2": "MobileNetV2",
    "ghostnetv2": "GhostNetV2",
    "ghostnetv3": "GhostNetV3",
    "repghostnet": "RepGhostNet",
}

QEMU_X_LABEL = "guest instructions per inference (QEMU TCG count, not time)"

def parse_model_name(name: str) -> tuple[str, float, bool]:
    """``"ghostnet_cifar_050"`` -> ``("ghostnet", 0.5, True)``; a name the models stage does not know ->
    ``(name, nan, False)``, so a point from an older run still gets a label. The models stage's parser is
    the only one."""
    try:
        parsed = registry_parse_model_name(name)
    except ModelError:
        return name, float("nan"), False
    return parsed.arch, parsed.width, parsed.cifar


def family_of(name: str) -> str:
    """Plot family of a model name: one line per family on the curve."""
    arch, _, _ = parse_model_name(name)
    return FAMILIES.get(arch, arch)


def is_qemu_target(target: str) -> bool:
    """Emulated ARM counts guest instructions instead of timing (TCG time says nothing about a phone)."""
    return target.startswith("qemu")


def int8_partner(fmt: str, formats: Sequence[str]) -> str | None:
    """The FP32 format an INT8 format is compared with: same runtime if swept, else PyTorch."""
    info = FORMATS[fmt]
    if info.precision != "int8":
        return None
    for cand, other in FORMATS.items():
        if other.runtime == info.runtime and other.precision == "fp32" and cand in formats:
            return cand
    return "torch" if "torch" in formats else None


@dataclass
class CurvePoint:
    """One (model, format, target) point: accuracy spread over seeds and one latency measurement."""

    model: str
    format: str
    target: str
    family: str = ""
    width: float = float("nan")
    input_size: int = 0
    runtime: str = ""
    precision: str = ""
    n_seeds: int = 0
    seeds: str = ""                      # "0;1;2": the seeds whose accuracy went into the spread
    n_draws: int = 1                     # INT8 calibration draws per seed in the spread (curve --calib-draws)
    acc_mean: float | None = None        # top-1 in percent
    acc_std: float | None = None
    acc_min: float | None = None
    acc_max: float | None = None
    acc_source: str = "measured"         # "measured" | "published" (latency-only)
    latency_ms_p50: float | None = None
    instructions: float | None = None    # guest instructions per inference (qemu targets)
    latency_seed: int | None = None      # the seed whose artifact was timed
    status: str = "ok"                   # "ok" | "partial" | "missing"
    reason: str = ""

    def __post_init__(self) -> None:
        if not self.family:
            self.family = family_of(self.model)
        if self.width != self.width:  # nan: fill from the name
            self.width = parse_model_name(self.model)[1]
        if self.format in FORMATS and not self.runtime:
            self.runtime, self.precision = FORMATS[self.format].runtime, FORMATS[self.format].precision

    @property
    def x(self) -> float | None:
        """The curve's x value: instructions on emulated ARM, p50 milliseconds elsewhere."""
        return self.instructions if is_qemu_target(self.target) else self.latency_ms_p50

    @property
    def plottable(self) -> bool:
        return self.acc_mean is not None and self.x is not None


CSV_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(CurvePoint))


def sort_points(points: Iterable[CurvePoint]) -> list[CurvePoint]:
    """Stable order for every file: target, family, width, format order of :data:`FORMATS`."""
    order = {f: i for i, f in enumerate(FORMATS)}
    return sorted(points, key=lambda p: (p.target, p.family, p.width, p.model, order.get(p.format, 99)))


def _fmt_csv(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if value != value else f"{value:.6g}"
    return str(value)


def points_to_csv(points: Iterable[CurvePoint]) -> str:
    """Every point, one row each, fixed column order, ``""`` for a missing value."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for p in sort_points(points):
        writer.writerow([_fmt_csv(getattr(p, name)) for name in CSV_FIELDS])
    return buf.getvalue()


def points_from_csv(text: str) -> list[CurvePoint]:
    """Read :func:`points_to_csv` back (used to redraw a plot from a committed CSV)."""
    out: list[CurvePoint] = []
    types = {f.name: f.type for f in fields(CurvePoint)}
    for row in csv.DictReader(io.StringIO(text)):
        kwargs: dict[str, object] = {}
        for name, raw in row.items():
            t = str(types.get(name, "str"))
            if raw == "":
                kwargs[name] = float("nan") if name == "width" else (None if "None" in t else raw)
            elif "float" in t:
                kwargs[name] = float(raw)
            elif "int" in t:
                kwargs[name] = int(raw)
            else:
                kwargs[name] = raw
        out.append(CurvePoint(**kwargs))  # type: ignore[arg-type]
    return out


def _pct(v: float | None, digits: int = 2) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _x_cell(p: CurvePoint) -> str:
    if is_qemu_target(p.target):
        return "–" if p.instructions is None else f"{p.instructions / 1e6:.1f} M"
    return "–" if p.latency_ms_p50 is None else f"{p.latency_ms_p50:.3f}"


@dataclass
class Int8Row:
    """One line of the INT8-cost table: a model's INT8 format against its FP32 partner."""

    model: str
    int8_format: str
    fp32_format: str
    paired: PairedDiff


def int8_rows(per_seed: Mapping[tuple[str, str], Mapping[int, float]], formats: Sequence[str]) -> list[Int8Row]:
    """Paired INT8-FP32 differences for every (model, INT8 format) whose partner has values.

    ``per_seed`` maps ``(model, format)`` to ``{seed: top-1 %}``.
    """
    rows: list[Int8Row] = []
    for (model, fmt), accs in sorted(per_seed.items()):
        partner = int8_partner(fmt, formats) if fmt in FORMATS else None
        if partner is None:
            continue
        paired = paired_differences(per_seed.get((model, partner), {}), accs)
        if paired is not None:
            rows.append(Int8Row(model, fmt, partner, paired))
    return rows


@dataclass
class TableContext:
    """What the Markdown header says about how the numbers were made."""

    title: str = "Accuracy vs latency"
    dataset: str = ""
    command: str = ""
    notes: list[str] = field(default_factory=list)


def points_to_markdown(points: Sequence[CurvePoint], int8: Sequence[Int8Row], ctx: TableContext) -> str:
    """The Markdown report: one table per target, the INT8 paired-difference table, missing points."""
    pts = sort_points(points)
    lines = [f"# {ctx.title}", ""]
    if ctx.dataset:
        lines += [f"Dataset: {ctx.dataset}", ""]
    if ctx.command:
        lines += ["Command:", "", "```", ctx.command, "```", ""]
    for note in ctx.notes:
        lines.append(f"- {note}")
    if ctx.notes:
        lines.append("")
    published = any(p.acc_source == "published" for p in pts)
    acc_head = "Top-1 % (published)" if published else "Top-1 % mean ± std"
    for target in sorted({p.target for p in pts}):
        xhead = "guest instr./inference (QEMU count, not time)" if is_qemu_target(target) else "p50 latency ms"
        lines += [f"## Target `{target}`", "",
                  f"| Model | Family | Width | Input | Format | Precision | Seeds | {acc_head} | min–max | {xhead} | Status |",
                  "|---|---|---:|---:|---|---|---:|---:|---:|---:|---|"]
        for p in pts:
            if p.target != target:
                continue
            acc = _pct(p.acc_mean) if p.acc_source == "published" else (
                "–" if p.acc_mean is None else f"{p.acc_mean:.2f} ± {p.acc_std or 0.0:.2f}")
            mm = "–" if p.acc_min is None or p.acc_source == "published" else f"{p.acc_min:.2f}–{p.acc_max:.2f}"
            status = p.status if not p.reason else f"{p.status}: {p.reason}"
            lines.append(f"| {p.model} | {p.family} | {p.width:g} | {p.input_size or '–'} | {p.format} | "
                         f"{p.precision.upper()} | {p.n_seeds} | {acc} | {mm} | {_x_cell(p)} | "
                         f"{_md_escape(status)} |")
        lines.append("")
    if int8:
        lines += ["## INT8 cost: paired per-seed differences (INT8 − FP32 of the same checkpoint)", "",
                  f"Rule: {VERDICT_RULE}.", "",
                  "| Model | INT8 format | vs FP32 | Seeds | Δ per seed (pp) | mean Δ | std Δ | min–max Δ | "
                  "FP32 seed std | Verdict |",
                  "|---|---|---|---:|---|---:|---:|---:|---:|---|"]
        for r in int8:
            d = r.paired
            per_seed = ", ".join(f"{s}: {v:+.2f}" for s, v in zip(d.seeds, d.diffs, strict=True))
            lines.append(f"| {r.model} | {r.int8_format} | {r.fp32_format} | {d.diff.n} | {per_seed} | "
                         f"{d.diff.mean:+.2f} | {d.diff.std:.2f} | {d.diff.min:+.2f}–{d.diff.max:+.2f} | "
                         f"{d.fp32.std:.2f} | {d.verdict} |")
        lines.append("")
    missing = [p for p in pts if not p.plottable or p.status != "ok"]
    lines += ["## Missing or incomplete points", ""]
    if not missing:
        lines.append("None: every point of the sweep was measured.")
    for p in missing:
        lines.append(f"- `{p.model}` / `{p.format}` / `{p.target}`: {p.status}"
                     + (f" — {_md_escape(p.reason)}" if p.reason else ""))
    lines.append("")
    return "\n".join(lines)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def missing_labels(points: Iterable[CurvePoint]) -> list[str]:
    """Short labels of the points the plot cannot draw, for its footnote."""
    return [f"{p.model}/{p.format}/{p.target}" for p in sort_points(points) if not p.plottable]
