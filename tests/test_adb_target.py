"""The adb target through a stand-in `adb` that replays recorded benchmark_model output."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pytest

from ghostnet_edge.cli import main as cli_main
from ghostnet_edge.errors import TargetError
from ghostnet_edge.runtime.bench import BenchConfig, bench
from ghostnet_edge.runtime.targets.adb import (
    REMOTE_BINARY,
    benchmark_command,
    big_cores,
    cpu_mask,
    parse_benchmark_output,
    parse_stat_line,
)
from ghostnet_edge.runtime.tiny_models import build_tiny_models

FIXTURES = Path(__file__).parent / "fixtures" / "adb"
RECORDED = FIXTURES / "benchmark_model_ghostnet_100_fp32.txt"
LEGACY = FIXTURES / "benchmark_model_legacy_2_4.txt"


@pytest.fixture(scope="session")
def tiny(cache_dir: Path) -> dict[str, Path]:
    return build_tiny_models(cache_dir / "runtime")


@pytest.fixture
def phone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """The stand-in adb first on PATH, a fake device file system, an invocation log, a binary to push."""
    root, log = tmp_path / "device", tmp_path / "adb.log"
    root.mkdir()
    monkeypatch.setenv("PATH", f"{FIXTURES}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("GHOSTEDGE_ADB", raising=False)
    monkeypatch.setenv("GHOSTEDGE_FAKE_ADB_ROOT", str(root))
    monkeypatch.setenv("GHOSTEDGE_FAKE_ADB_LOG", str(log))
    monkeypatch.setenv("GHOSTEDGE_FAKE_ADB_OUTPUT", str(RECORDED))
    binary = tmp_path / "android_aarch64_benchmark_model"
    binary.write_bytes(b"\x7fELF fake benchmark_model")
    return {"root": root, "log": log, "binary": binary}


def calls(log: Path) -> list[list[str]]:
    return [json.loads(line)["argv"] for line in log.read_text().splitlines()]


def device_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# ------------------------------------------------------------------------------------- parsers


def test_recorded_output_is_parsed_exactly() -> None:
    out = parse_benchmark_output(RECORDED.read_text())
    assert out["summary"] == {"init": 42117.0, "first": 31586.0, "warmup_avg": 25611.3, "inference_avg": 24823.6}
    assert out["warmup"]["count"] == 10 and out["warmup"]["first"] == 31586.0
    assert out["inference"] == {"count": 81.0, "first": 24911.0, "curr": 24690.0, "min": 24532.0, "max": 27311.0,
                                "avg": 24823.6, "std": 412.0, "p5": 24561.0, "median": 24733.0, "p95": 25507.0}
    assert out["memory"] == {"init_mb": 37.0547, "overall_mb": 44.9258}
    assert out["model_size_mb"] == 20.6341 and out["xnnpack"] is True


def test_legacy_output_with_scientific_notation() -> None:
    out = parse_benchmark_output(LEGACY.read_text())
    assert out["warmup"] == {"count": 1.0, "curr": 3512391.0}
    assert out["inference"]["avg"] == 2.95034e06 and out["inference"]["std"] == 109798.0
    assert "median" not in out["inference"]
    assert out["summary"]["inference_avg"] == 2.95034e06
    assert out["memory"] == {"init_mb": 4.21094, "overall_mb": 46.0859}
    assert out["xnnpack"] is False
    assert parse_stat_line("no stats here") is None


def test_big_cores_and_mask() -> None:
    assert big_cores((FIXTURES / "cpufreq_1_3_4.txt").read_text()) == [4, 5, 6, 7]
    assert cpu_mask([4, 5, 6, 7]) == "f0" and cpu_mask([0]) == "1" and cpu_mask([8, 9]) == "300"
    same = "\n".join(f"/sys/devices/system/cpu/cpu{i}/cpufreq/cpuinfo_max_freq 2000000" for i in range(4))
    assert big_cores(same) == [0, 1, 2, 3]
    assert big_cores("") == []


def test_command_is_quoted_for_the_phone_shell() -> None:
    cfg = BenchConfig(threads=2, warmup=3, min_runs=40, min_seconds=1.5, xnnpack=False)
    cmd = benchmark_command(REMOTE_BINARY, "/data/local/tmp/ghostedge_model0.tflite", cfg, "f0")
    assert shlex.split(cmd) == ["taskset", "f0", REMOTE_BINARY, "--graph=/data/local/tmp/ghostedge_model0.tflite",
                                "--num_threads=2", "--warmup_runs=3", "--warmup_min_secs=0", "--num_runs=40",
                                "--min_secs=1.5", "--max_secs=60", "--use_xnnpack=false"]
    evil = benchmark_command(REMOTE_BINARY, "/data/local/tmp/x; rm -rf /sdcard", cfg, None)
    assert "'--graph=/data/local/tmp/x; rm -rf /sdcard'" in evil


# ------------------------------------------------------------------------------ through fake adb


def test_bench_on_phone_pushes_pins_parses_and_cleans_up(phone: dict[str, Path], tiny: dict[str, Path]) -> None:
    cfg = BenchConfig(benchmark_model=str(phone["binary"]), warmup=10, min_runs=50, min_seconds=2.0)
    (res,) = bench([tiny["tiny_fp32.tflite"]], "adb", cfg)
    log = calls(phone["log"])
    pushes = [c for c in log if "push" in c]
    assert [c[-1] for c in pushes] == [REMOTE_BINARY, "/data/local/tmp/ghostedge_model0.tflite"]
    assert ["-s", "FAKE0001", "shell", f"chmod 755 {REMOTE_BINARY}"] in log
    run = [c for c in log if c[2:3] == ["shell"] and "benchmark_model" in c[3] and "taskset" in c[3]]
    assert len(run) == 1
    words = shlex.split(run[0][3])
    assert words[:3] == ["taskset", "f0", REMOTE_BINARY]
    for flag in ("--graph=/data/local/tmp/ghostedge_model0.tflite", "--num_threads=1", "--warmup_runs=10",
                 "--num_runs=50", "--min_secs=2", "--use_xnnpack=true"):
        assert flag in words
    # Numbers exactly as printed (us -> ms).
    assert res.status == "ok" and res.target == "adb:FAKE0001"
    assert res.latency_ms == {"p50": 24.733, "p90": None, "p99": None, "mean": 24.8236, "std": 0.412,
                              "cv": pytest.approx(0.412 / 24.8236), "n": 81, "min": 24.532, "max": 27.311,
                              "p5": 24.561, "p95": 25.507}
    assert res.first_inference_ms == 31.586 and res.load_ms == 42.117
    assert res.delegate == "xnnpack" and res.runtime == "benchmark_model" and res.threads == 1
    assert res.cpu == "Pixel 4 (SM8150), cores 4,5,6,7"
    assert res.runtime_version.startswith("sha256:") and res.remeasured == 0 and not res.noisy
    assert res.precision == "fp32" and res.size_bytes == tiny["tiny_fp32.tflite"].stat().st_size
    # Clean-up: everything pushed is removed from the phone.
    assert device_files(phone["root"]) == []
    assert any(c[2:3] == ["shell"] and c[3].startswith("rm -f") for c in log)


def test_disconnect_mid_run_is_partial_and_cleaned(phone: dict[str, Path], tiny: dict[str, Path],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GHOSTEDGE_FAKE_ADB_DISCONNECT", "1")
    (res,) = bench([tiny["tiny_fp32.tflite"]], "adb:FAKE0001",
                   BenchConfig(benchmark_model=str(phone["binary"]), remeasure=2))
    assert res.status == "partial" and res.latency_ms is None
    assert res.first_inference_ms == 31.586                 # from the warm-up line that did arrive
    assert "disconnected" in res.error and "only the warm-up" in res.error and "error: closed" in res.error
    assert res.remeasured == 0                              # a dropped phone is not re-measured
    assert device_files(phone["root"]) == []


def test_cli_bench_adb_json_and_exit_status(phone: dict[str, Path], tiny: dict[str, Path], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "adb.json"
    args = ["bench", str(tiny["tiny_int8.tflite"]), "--target", "adb", "--benchmark-model", str(phone["binary"]),
            "--json", str(out)]
    assert cli_main(args) == 0
    doc = json.loads(out.read_text())
    assert doc["target"] == "adb" and doc["results"][0]["latency_ms"]["n"] == 81
    assert doc["results"][0]["precision"] == "int8"
    monkeypatch.setenv("GHOSTEDGE_FAKE_ADB_DISCONNECT", "1")
    assert cli_main(args) == 1                              # partial result: written, but not a success
    assert json.loads(out.read_text())["results"][0]["status"] == "partial"


def test_phone_problems_are_clear_errors(phone: dict[str, Path], tiny: dict[str, Path],
                                         monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    model = [tiny["tiny_fp32.tflite"]]
    with pytest.raises(TargetError, match="needs TFLite's benchmark_model"):
        bench(model, "adb", BenchConfig())
    with pytest.raises(TargetError, match="does not exist"):
        bench(model, "adb", BenchConfig(benchmark_model=str(phone["binary"]) + ".missing"))
    with pytest.raises(TargetError, match="cannot run onnx"):
        bench([tiny["tiny_fp32.onnx"]], "adb", BenchConfig(benchmark_model=str(phone["binary"])))
    cfg = BenchConfig(benchmark_model=str(phone["binary"]))
    monkeypatch.setenv("GHOSTEDGE_FAKE_ADB_SERIALS", "AAA:device,BBB:device")
    with pytest.raises(TargetError, match="2 phones are attached") as err:
        bench(model, "adb", cfg)
    assert "adb:AAA" in (err.value.hint or "")
    monkeypatch.setenv("GHOSTEDGE_FAKE_ADB_SERIALS", "AAA:unauthorized")
    with pytest.raises(TargetError, match=r"no Android phone is ready.*AAA \(unauthorized\)"):
        bench(model, "adb", cfg)
    with pytest.raises(TargetError, match="phone ZZZ is not available"):
        bench(model, "adb:ZZZ", cfg)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert cli_main(["bench", str(model[0]), "--target", "adb", "--benchmark-model", str(phone["binary"])]) == 2
    assert "adb is not installed" in capsys.readouterr().err
