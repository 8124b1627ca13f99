"""The sweep end to end on real parts: digits, real training, real TFLite INT8 export, real host runner.

One small sweep (1 model x 2 seeds x 1 epoch; formats torch + tflite-int8; targets host and an
unreachable ssh board) is shared by the tests below, so the expensive part runs once per session.
"""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import pytest

from ghostnet_edge.cli import main
from ghostnet_edge.errors import GhostEdgeError
from ghostnet_edge.pipeline.curve import (
    CurveConfig,
    CurveResult,
    cli_command,
    run_curve,
    training_heartbeat,
    validate_config,
)

# Nothing listens on port 1: the connection is refused at once, like a board that dropped off.
DEAD_BOARD = "ssh://nobody@127.0.0.1:1"
MODEL = "ghostnet_cifar_050"


def _config(work: Path) -> CurveConfig:
    return CurveConfig(models=(MODEL,), seeds=(0, 1), formats=("torch", "tflite-int8"),
                       targets=("host", DEAD_BOARD), data="digits", work=work, epochs=1, limit_train=200,
                       limit_eval=200, calib_count=32, bench_runs=10, bench_seconds=0.2, bench_warmup=2,
                       train_threads=1)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[CurveConfig, CurveResult, dict[str, float]]:
    work = tmp_path_factory.mktemp("curve") / "work"
    cfg = _config(work)
    result = run_curve(cfg, log=lambda _m: None)
    # Every file a step wrote (the outputs at the top are rewritten on each run by design).
    mtimes = {str(p.relative_to(work)): p.stat().st_mtime_ns for p in work.rglob("*")
              if p.is_file() and p.parent != work}
    return cfg, result, mtimes


@pytest.mark.slow
def test_sweep_writes_every_output_with_the_spread_over_seeds(sweep) -> None:
    cfg, result, _ = sweep
    work = Path(cfg.work)
    for name in ("points.csv", "curve.md", "curve.png", "curve.svg", "sweep.json", "failures.jsonl"):
        assert (work / name).is_file(), name
    for seed in (0, 1):
        assert (work / "train" / MODEL / f"seed_{seed}" / "model.pt").is_file()
        assert (work / "export" / MODEL / f"seed_{seed}" / "model_int8.tflite").is_file()
        for fmt in ("torch", "tflite-int8"):
            ev = json.loads((work / "eval" / MODEL / f"seed_{seed}" / f"{fmt}.json").read_text())
            assert 0.0 <= ev["top1_pct"] <= 100.0 and ev["n"] == 200
    rows = list(csv.DictReader((work / "points.csv").open()))
    host = {r["format"]: r for r in rows if r["target"] == "host"}
    assert set(host) == {"torch", "tflite-int8"}
    for r in host.values():
        assert r["n_seeds"] == "2" and r["seeds"] == "0;1" and r["status"] == "ok"
        assert float(r["acc_min"]) <= float(r["acc_mean"]) <= float(r["acc_max"])
        assert float(r["latency_ms_p50"]) > 0 and r["latency_seed"] == "0"
    # The accuracy of each point is the spread of the per-seed eval files, not something else.
    per_seed = [json.loads((work / "eval" / MODEL / f"seed_{s}" / "torch.json").read_text())["top1_pct"]
                for s in (0, 1)]
    assert float(host["torch"]["acc_mean"]) == pytest.approx(sum(per_seed) / 2, abs=1e-4)
    md = (work / "curve.md").read_text()
    assert "INT8 cost: paired per-seed differences" in md and "tflite-int8 | torch | 2 |" in md
    assert cli_command(cfg) in md  # the exact command is recorded
    assert (work / "curve.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_failing_target_is_recorded_and_the_rest_goes_on(sweep) -> None:
    cfg, result, _ = sweep
    work = Path(cfg.work)
    failures = [json.loads(line) for line in (work / "failures.jsonl").read_text().splitlines()]
    assert failures and all(f["step"] == "bench" and f["target"] == DEAD_BOARD for f in failures)
    assert all(f["reason"] for f in failures)
    rows = list(csv.DictReader((work / "points.csv").open()))
    dead = [r for r in rows if r["target"] == DEAD_BOARD]
    # PyTorch is not run on boards at all; the TFLite point is there, marked missing, with the reason.
    assert [r["format"] for r in dead] == ["tflite-int8"]
    assert dead[0]["status"] == "missing" and "bench failed" in dead[0]["reason"]
    assert dead[0]["acc_mean"] != ""  # its accuracy is still known: only the latency is missing
    assert f"{MODEL}/tflite-int8/{DEAD_BOARD}" in result.missing
    assert "Missing or incomplete points" in (work / "curve.md").read_text()
    assert f"missing (not drawn): {MODEL}/tflite-int8/{DEAD_BOARD}" in (work / "curve.svg").read_text()


@pytest.mark.slow
def test_second_run_reuses_everything_through_the_cli(sweep, capsys: pytest.CaptureFixture[str]) -> None:
    cfg, _, mtimes = sweep
    work = Path(cfg.work)
    # The same settings as the first run, through the command line, without the dead board.
    argv = ["curve", "--models", MODEL, "--seeds", "0,1", "--formats", "torch,tflite-int8", "--target", "host",
            "--data", "digits", "--epochs", "1", "--limit-train", "200", "--limit-eval", "200",
            "--num-calib", "32", "--runs", "10", "--work", str(work)]
    # Changed settings are refused: reusing 1-epoch runs for a 3-epoch sweep would mix budgets.
    assert main([*argv, "--epochs", "3"]) == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "epochs: 1 -> 3" in err
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "train_reused=2" in out and "export_reused=2" in out and "eval_reused=4" in out
    assert "_done" not in out  # nothing trained, exported, evaluated or measured again
    assert str(work / "points.csv") in out.replace("\n", "")
    now = {k: (work / k).stat().st_mtime_ns for k in mtimes}
    assert now == mtimes
    assert (work / "failures.jsonl").read_text() == ""  # the dead board was not asked for this time
    rows = list(csv.DictReader((work / "points.csv").open()))
    assert {r["target"] for r in rows} == {"host"} and all(r["status"] == "ok" for r in rows)


@pytest.mark.slow
@pytest.mark.qemu
def test_emulated_arm_point_is_an_instruction_count(sweep) -> None:
    from ghostnet_edge.pipeline import stages
    from ghostnet_edge.report.points import QEMU_X_LABEL

    if not stages.qemu_available():
        pytest.skip("qemu-aarch64 or its aarch64 sysroot is not set up (bash scripts/setup.sh builds them)")
    cfg, _, _ = sweep
    # Same work folder: training, export and evaluation are reused; only the emulated count runs.
    result = run_curve(replace(cfg, targets=("qemu-aarch64",)), log=lambda _m: None)
    assert result.counters.get("train_done", 0) == 0 and result.counters.get("bench_done") == 1
    (p,) = result.points  # PyTorch is not run on emulated ARM
    assert p.format == "tflite-int8" and p.latency_ms_p50 is None and p.instructions > 1e5
    assert p.acc_mean is not None and p.n_seeds == 2 and p.status == "ok"
    assert QEMU_X_LABEL in (Path(cfg.work) / "curve.svg").read_text()
    assert "QEMU count, not time" in (Path(cfg.work) / "curve.md").read_text()


def test_bad_settings_fail_before_any_work(tmp_path: Path) -> None:
    base = CurveConfig(models=(MODEL,), work=tmp_path / "w")
    with pytest.raises(GhostEdgeError, match="unknown format"):
        validate_config(replace(base, formats=("tflite", "pb")))
    with pytest.raises(GhostEdgeError, match="duplicate seeds"):
        validate_config(replace(base, seeds=(1, 1)))
    with pytest.raises(GhostEdgeError):
        validate_config(replace(base, models=("ghostnet_cifar_050", "no_such_net")))
    with pytest.raises(GhostEdgeError, match="unknown target"):
        validate_config(replace(base, targets=("bluetooth://phone",)))
    with pytest.raises(GhostEdgeError, match="is not a folder"):
        validate_config(replace(base, weights=tmp_path / "missing"))
    assert not (tmp_path / "w").exists()


def test_cli_bad_input_exits_2_with_a_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["curve", "--models", MODEL, "--formats", "tflite,pb", "--work", str(tmp_path / "w")])
    err = capsys.readouterr().err
    assert rc == 2 and "error: unknown format(s): pb" in err and "hint:" in err
    rc = main(["curve", "--models", MODEL, "--seeds", "zero", "--work", str(tmp_path / "w")])
    assert rc == 2 and "not an integer" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


@pytest.mark.slow
def test_latency_only_pairs_measured_latency_with_published_accuracy(tmp_path: Path) -> None:
    """Random weights at 224x224 (no training, no ImageNet): measured latency vs the paper's Table 7."""
    work = tmp_path / "lat"
    cfg = CurveConfig(models=("mobilenetv3_small_075",), seeds=(0,), formats=("torch", "onnx"), targets=("host",),
                      work=work, latency_only=True, paper_overlay=True, calib_count=4, bench_runs=5,
                      bench_seconds=0.2, bench_warmup=1)
    result = run_curve(cfg, log=lambda _m: None)
    assert not result.failures
    rows = {r["format"]: r for r in csv.DictReader((work / "points.csv").open())}
    assert set(rows) == {"torch", "onnx"}
    for r in rows.values():
        assert r["acc_source"] == "published" and float(r["acc_mean"]) == 65.4  # Table 7, MobileNetV3-Small 0.75
        assert r["input_size"] == "224" and float(r["latency_ms_p50"]) > 0 and r["status"] == "ok"
    assert not (work / "train").exists()  # nothing was trained
    md = (work / "curve.md").read_text()
    assert "published ImageNet top-1" in md and "not measured here" in md
    svg = (work / "curve.svg").read_text()
    assert "published ImageNet top-1 vs latency measured here" in svg  # the title
    assert "published ImageNet top-1 (%), paper" in svg  # the y axis
    assert "over seeds" not in svg  # no seed-spread legend for published single numbers
    assert "paper Figure 7" in svg  # the overlay's own axis, labelled as the paper's


@pytest.mark.slow
def test_interrupted_sweep_resumes_without_losing_finished_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ghostnet_edge.pipeline import stages

    cfg = CurveConfig(models=(MODEL,), seeds=(0, 1), formats=("torch",), targets=("host",), data="digits",
                      work=tmp_path / "w", epochs=1, limit_train=100, limit_eval=50, bench_runs=3,
                      bench_seconds=0.1, bench_warmup=1, train_threads=1)
    real_train = stages.train_one

    def interrupted(model: str, seed: int, *args, **kwargs):
        if seed == 1:
            raise KeyboardInterrupt  # Ctrl-C while the second run trains
        return real_train(model, seed, *args, **kwargs)

    monkeypatch.setattr(stages, "train_one", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_curve(cfg, log=lambda _m: None)
    seed0 = tmp_path / "w" / "train" / MODEL / "seed_0"
    assert (seed0 / "DONE.json").is_file() and (tmp_path / "w" / "eval" / MODEL / "seed_0" / "torch.json").is_file()
    first_ckpt = (seed0 / "model.pt").stat().st_mtime_ns

    monkeypatch.setattr(stages, "train_one", real_train)
    result = run_curve(cfg, log=lambda _m: None)
    assert result.counters["train_reused"] == 1 and result.counters["train_done"] == 1
    assert result.counters["eval_reused"] == 1 and result.counters["eval_done"] == 1
    assert (seed0 / "model.pt").stat().st_mtime_ns == first_ckpt
    assert result.points[0].n_seeds == 2 and result.points[0].status == "ok"


def test_calibration_images_are_a_seeded_draw_of_the_training_split(cifar_tar: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """INT8 calibration sees real training images of the swept data set, handed over in memory."""
    import numpy as np

    from ghostnet_edge.data.datasets import CIFAR10_CLASSES
    from ghostnet_edge.pipeline.stages import calibration_images, noise_images

    monkeypatch.setenv("GHOSTEDGE_CIFAR_TAR", str(cifar_tar))
    ds = calibration_images("cifar10", 40, seed=0)
    assert len(ds) == 40 and {ds.classes[label] for _, label in ds.samples} == set(CIFAR10_CLASSES)  # balanced
    assert ds.load_uint8(0).shape == (32, 32, 3) and ds.load_uint8(0).dtype == np.uint8
    again = calibration_images("cifar10", 40, seed=0)
    assert [k for k, _ in again.samples] == [k for k, _ in ds.samples]
    assert [k for k, _ in calibration_images("cifar10", 40, seed=1).samples] != [k for k, _ in ds.samples]
    assert len(calibration_images("digits", 20, seed=0)) == 20
    noise = noise_images(3, 8, seed=5)
    assert noise.shape == (3, 8, 8, 3) and noise.dtype == np.uint8
    assert np.array_equal(noise, noise_images(3, 8, seed=5)) and not np.array_equal(noise, noise_images(3, 8, seed=6))


def test_training_heartbeat_says_what_is_done_and_what_is_left() -> None:
    assert training_heartbeat(0, 15, 2, 130.0) == "  ... training: 0/15 run(s) done, 2 at a time, 2.2 min elapsed"
    line = training_heartbeat(3, 15, 2, 600.0)                     # 3 runs in 10 min: 12 more take 40 min
    assert line.endswith("10.0 min elapsed, about 40 min to go")


@pytest.mark.slow
def test_calibration_draws_spread_int8_points_over_seeds_and_draws(sweep, tmp_path: Path) -> None:
    """--calib-draws 2 on the module sweep's checkpoints: each seed gets a second INT8 export calibrated
    with another seed, the INT8 point's spread holds all four (seed, draw) top-1 values, FP32 points keep
    one value per seed, and the paired table compares each seed's mean over draws with its FP32."""
    from ghostnet_edge.pipeline.curve import DRAW_SEED_STEP

    cfg0, _, _ = sweep
    cfg = replace(cfg0, work=tmp_path / "w", targets=("host",), weights=Path(cfg0.work) / "train", calib_draws=2)
    result = run_curve(cfg, log=lambda _m: None)
    work = Path(cfg.work)
    accs = {}
    for seed in (0, 1):
        draw = work / "export" / MODEL / f"seed_{seed}.draw_1"
        assert (draw / "model_int8.tflite").is_file()
        manifest = json.loads((draw / "manifest.json").read_text())
        assert manifest["calibration"]["seed"] == seed + DRAW_SEED_STEP
        for d, name in ((0, "tflite-int8.json"), (1, "tflite-int8.draw_1.json")):
            accs[seed, d] = json.loads((work / "eval" / MODEL / f"seed_{seed}" / name).read_text())["top1_pct"]
    int8 = next(p for p in result.points if p.format == "tflite-int8")
    torch_pt = next(p for p in result.points if p.format == "torch")
    assert (int8.n_seeds, int8.n_draws) == (2, 2) and (torch_pt.n_seeds, torch_pt.n_draws) == (2, 1)
    assert int8.acc_mean == pytest.approx(sum(accs.values()) / 4, abs=1e-4)
    assert int8.acc_min == pytest.approx(min(accs.values()), abs=1e-4)
    md = (work / "curve.md").read_text()
    assert "2 seeds x 2 calibration draws" in md and "--calib-draws 2" in md
    with pytest.raises(GhostEdgeError, match="calib-draws"):
        validate_config(replace(cfg, calib_draws=0))
