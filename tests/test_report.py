"""Pure parts of the report: spread, paired INT8 differences, CSV/Markdown tables, the plot, paper data."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import pytest

from ghostnet_edge.report import paper
from ghostnet_edge.report.plot import PlotOptions, _si_count, draw_curve
from ghostnet_edge.report.points import (
    CSV_FIELDS,
    CurvePoint,
    TableContext,
    family_of,
    int8_partner,
    int8_rows,
    parse_model_name,
    points_from_csv,
    points_to_csv,
    points_to_markdown,
)
from ghostnet_edge.utils.spread import drop_verdict, paired_differences, spread

REFERENCE_FIG7 = "ghostnet_paper_figure7.csv"
REFERENCE_TABLE7 = "ghostnet_paper_table7.csv"


def test_spread_uses_sample_std_and_min_max() -> None:
    s = spread([70.0, 72.0, 74.0])
    assert s.n == 3 and s.mean == pytest.approx(72.0)
    assert s.std == pytest.approx(2.0)  # ddof=1: sqrt((4+0+4)/2)
    assert (s.min, s.max) == (70.0, 74.0)
    one = spread([65.5])
    assert one.std == 0.0 and one.min == one.max == 65.5
    with pytest.raises(ValueError):
        spread([])


def test_paired_differences_pair_by_seed_not_by_position() -> None:
    fp32 = {0: 80.0, 1: 82.0, 2: 81.0, 7: 90.0}
    int8 = {2: 80.0, 0: 79.5, 1: 81.0}  # seed 7 has no INT8 and must not be paired
    d = paired_differences(fp32, int8)
    assert d is not None
    assert d.seeds == (0, 1, 2)
    assert d.diffs == pytest.approx((-0.5, -1.0, -1.0))
    assert d.diff.mean == pytest.approx(-2.5 / 3)
    assert d.fp32.std == pytest.approx(1.0)
    # |mean drop| 0.83 < FP32 std 1.0 -> within the seed spread
    assert d.verdict == "within seed spread"
    assert paired_differences({0: 1.0}, {1: 1.0}) is None


def test_drop_verdict_rule() -> None:
    assert drop_verdict(-1.5, 1.0, 3) == "larger than seed spread"
    assert drop_verdict(+1.5, 1.0, 3) == "larger than seed spread"  # a gain counts too: |mean|
    assert drop_verdict(-0.5, 1.0, 3) == "within seed spread"
    assert drop_verdict(-5.0, 0.0, 1).startswith("n/a")


def test_model_names_parse_into_family_and_width() -> None:
    assert parse_model_name("ghostnet_cifar_050") == ("ghostnet", 0.5, True)
    assert parse_model_name("mobilenetv3_large_075") == ("mobilenetv3_large", 0.75, False)
    assert family_of("mobilenetv3_small_cifar_100") == "MobileNetV3-Small"
    assert family_of("ghostnet_130") == "GhostNet"
    arch, width, _ = parse_model_name("weird")
    assert arch == "weird" and math.isnan(width)


def test_int8_partner_prefers_same_runtime() -> None:
    assert int8_partner("tflite-int8", ["torch", "tflite", "tflite-int8"]) == "tflite"
    assert int8_partner("tflite-int8", ["torch", "tflite-int8"]) == "torch"
    assert int8_partner("onnx-int8", ["onnx-int8"]) is None
    assert int8_partner("tflite", ["tflite"]) is None


def _synthetic_points() -> list[CurvePoint]:
    pts = []
    for model, lat in (("ghostnet_cifar_050", 1.0), ("ghostnet_cifar_100", 2.0), ("mobilenetv3_small_cifar_100", 1.5)):
        for fmt, lat_scale, acc in (("torch", 1.0, 80.0), ("tflite-int8", 0.5, 79.0)):
            for target in ("host", "qemu-aarch64"):
                pts.append(CurvePoint(model=model, format=fmt, target=target, input_size=32, n_seeds=2,
                                      seeds="0;1", acc_mean=acc + lat, acc_std=0.5, acc_min=acc + lat - 0.4,
                                      acc_max=acc + lat + 0.4,
                                      latency_ms_p50=lat * lat_scale if target == "host" else None,
                                      instructions=lat * 1e8 if target != "host" else None, latency_seed=0))
    pts.append(CurvePoint(model="mobilenetv2_cifar_100", format="tflite-int8", target="host", status="missing",
                          reason="export failed: ConverterError | boom"))
    return pts


def test_csv_has_every_point_and_round_trips() -> None:
    pts = _synthetic_points()
    text = points_to_csv(pts)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert tuple(rows[0].keys()) == CSV_FIELDS
    assert len(rows) == len(pts)
    qemu = [r for r in rows if r["target"] == "qemu-aarch64"]
    assert all(r["latency_ms_p50"] == "" and float(r["instructions"]) > 0 for r in qemu)
    failed = [r for r in rows if r["status"] == "missing"]
    assert failed[0]["reason"].startswith("export failed") and failed[0]["acc_mean"] == ""
    assert points_to_csv(points_from_csv(text)) == text
    assert points_to_csv(list(reversed(pts))) == text  # order does not depend on the sweep's order


def test_markdown_has_tables_int8_verdict_and_missing() -> None:
    pts = _synthetic_points()
    per_seed = {("ghostnet_cifar_050", "torch"): {0: 81.0, 1: 81.2},
                ("ghostnet_cifar_050", "tflite-int8"): {0: 78.0, 1: 78.4}}
    rows = int8_rows(per_seed, ["torch", "tflite-int8"])
    assert len(rows) == 1 and rows[0].fp32_format == "torch"
    md = points_to_markdown(pts, rows, TableContext(title="T", dataset="digits", command="ghostedge curve"))
    assert "## Target `host`" in md and "## Target `qemu-aarch64`" in md
    assert "QEMU count, not time" in md
    assert "larger than seed spread" in md  # mean drop -2.9 vs FP32 std 0.14
    assert "-2.90" in md
    assert "mobilenetv2_cifar_100` / `tflite-int8` / `host`: missing" in md
    assert "export failed: ConverterError \\| boom" in md  # pipes escaped inside the table


def test_plot_draws_png_svg_deterministically_and_names_missing(tmp_path: Path) -> None:
    pts = _synthetic_points()
    missing = draw_curve(pts, tmp_path / "a.png", tmp_path / "a.svg", PlotOptions(note="n"))
    assert missing == ["mobilenetv2_cifar_100/tflite-int8/host"]
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = (tmp_path / "a.svg").read_text()
    assert "<svg" in svg
    draw_curve(list(reversed(pts)), tmp_path / "b.png", tmp_path / "b.svg", PlotOptions(note="n"))
    assert (tmp_path / "b.svg").read_bytes() == (tmp_path / "a.svg").read_bytes()
    assert (tmp_path / "b.png").read_bytes() == (tmp_path / "a.png").read_bytes()
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_plot_with_no_measured_point_still_writes_a_figure(tmp_path: Path) -> None:
    pts = [CurvePoint(model="ghostnet_cifar_050", format="torch", target="host", status="missing", reason="x")]
    missing = draw_curve(pts, tmp_path / "c.png", None)
    assert missing == ["ghostnet_cifar_050/torch/host"]
    assert (tmp_path / "c.png").stat().st_size > 1000
    empty = draw_curve([], tmp_path / "d.png", None)
    assert empty == [] and (tmp_path / "d.png").exists()


def test_si_count() -> None:
    assert _si_count(1.5e8) == "150M"
    assert _si_count(2e9) == "2G"
    assert _si_count(0) == "0"


def test_paper_numbers_match_shared_reference(reference_dir: Path) -> None:
    """The numbers copied into the package are the ones in ../shared (a user has no ../shared)."""

    def rows(name: str) -> list[dict[str, str]]:
        lines = [ln for ln in (reference_dir / name).read_text().splitlines() if not ln.startswith("#")]
        return list(csv.DictReader(lines))

    fig7 = rows(REFERENCE_FIG7)
    assert [(r["model"], float(r["latency_ms"]), float(r["top1_pct"])) for r in fig7] == [
        (p.family, p.latency_ms, p.top1_pct) for p in paper.FIGURE7]
    table7 = rows(REFERENCE_TABLE7)
    assert len(table7) == len(paper.TABLE7)
    for r, p in zip(table7, paper.TABLE7, strict=True):
        assert r["model"] == p.family and float(r["width"]) == p.width
        assert float(r["top1_pct"]) == p.top1_pct
        assert float(r["params_m"]) == p.params_m and float(r["flops_m"]) == p.flops_m
        assert (float(r["top5_pct"]) if r["top5_pct"] else None) == p.top5_pct


def test_published_accuracy_covers_the_latency_only_widths() -> None:
    for name in paper.LATENCY_ONLY_MODELS:
        row = paper.published_accuracy(name)
        assert row is not None, name
        assert 55 < row.top1_pct < 80
    assert paper.published_accuracy("ghostnet_100").top1_pct == 73.9  # type: ignore[union-attr]
    assert paper.published_accuracy("ghostnet_cifar_100") is None
    assert len(paper.figure7_points("MobileNetV2")) == 1


def test_successor_families_have_labels_colours_and_published_accuracy() -> None:
    from ghostnet_edge.report.paper import SUCCESSOR_MODELS, published_accuracy
    from ghostnet_edge.report.plot import FAMILY_COLORS
    from ghostnet_edge.report.points import family_of

    for name in SUCCESSOR_MODELS:
        family = family_of(name)
        assert family in FAMILY_COLORS
        row = published_accuracy(name)
        assert row is not None and row.family == family and row.top1_pct > 74
