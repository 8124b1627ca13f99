"""The files of the accuracy-vs-latency curve: ``points.csv``, ``curve.md``, ``curve.png``, ``curve.svg``.

The sweep (``pipeline.curve``) decides the points, the notes and the titles; this writes them into its
work folder, so the tables and the plot can be written from any list of points without running a sweep.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ghostnet_edge.report.plot import PlotOptions, draw_curve
from ghostnet_edge.report.points import (
    CurvePoint,
    Int8Row,
    TableContext,
    points_to_csv,
    points_to_markdown,
)
from ghostnet_edge.utils.atomic import atomic_write_text


@dataclass
class CurveFiles:
    csv: Path
    markdown: Path
    png: Path
    svg: Path
    missing: list[str]           # the points the plot lists as missing (not drawn)


def write_curve(work: Path, points: Sequence[CurvePoint], rows: Sequence[Int8Row], ctx: TableContext,
                plot: PlotOptions) -> CurveFiles:
    """Write ``points.csv``, ``curve.md`` (points + paired INT8 ``rows``), ``curve.png`` and ``curve.svg``."""
    csv_path, md_path = work / "points.csv", work / "curve.md"
    png, svg = work / "curve.png", work / "curve.svg"
    atomic_write_text(csv_path, points_to_csv(points))
    atomic_write_text(md_path, points_to_markdown(points, rows, ctx))
    missing = draw_curve(points, png, svg, plot)
    return CurveFiles(csv=csv_path, markdown=md_path, png=png, svg=svg, missing=missing)
