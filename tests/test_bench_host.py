"""`ghostedge bench` on the host: real runtimes in a subprocess per artifact, JSON, bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ghostnet_edge.cli import main as cli_main
from ghostnet_edge.errors import GhostEdgeError, TargetError
from ghostnet_edge.runtime import bench as bench_mod
from ghostnet_edge.runtime.artifacts import ArtifactInfo, inspect_artifact
from ghostnet_edge.runtime.bench import BenchConfig, BenchResult, bench, measure_artifact
from ghostnet_edge.runtime.targets import parse_target
from ghostnet_edge.runtime.tiny_models import build_tiny_models

FAST = BenchConfig(warmup=2, min_runs=15, min_seconds=0.2, remeasure=0)
SCHEMA = {"artifact", "format", "precision", "model", "target", "runtime", "runtime_version", "delegate", "threads",
          "cpu", "input_shape", "size_bytes", "latency_ms", "first_inference_ms", "load_ms", "peak_rss_mb", "noisy",
          "remeasured", "attempt_cvs", "instructions", "parity", "status", "error"}


@pytest.fixture(scope="session")
def tiny(cache_dir: Path) -> dict[str, Path]:
    return build_tiny_models(cache_dir / "runtime")


def test_bench_host_every_format(tiny: dict[str, Path], tmp_path: Path) -> None:
    names = ["tiny_fp32.tflite", "tiny_int8.tflite", "tiny_fp32.onnx", "tiny_int8.onnx"]
    results = bench([tiny[n] for n in names], "host", FAST)
    assert [(r.format, r.precision, r.runtime) for r in results] == [
        ("tflite", "fp32", "litert"), ("tflite", "int8", "litert"), ("onnx", "fp32", "onnxruntime"),
        ("onnx", "int8", "onnxruntime")]
    for r, n in zip(results, names, strict=True):
        d = r.to_dict()
        assert set(d) == SCHEMA
        assert r.status == "ok" and r.error is None and r.target == "host" and r.threads == 1
        lat = r.latency_ms
        assert lat is not None and lat["n"] >= 15
        assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert lat["cv"] == pytest.approx(lat["std"] / lat["mean"])
        assert r.size_bytes == tiny[n].stat().st_size and r.peak_rss_mb > 10 and r.load_ms > 0
        assert r.first_inference_ms > 0 and r.cpu and r.runtime_version
        assert r.delegate == ("xnnpack" if n.endswith(".tflite") else "none")
        assert r.input_shape == ([1, 32, 32, 3] if n.endswith(".tflite") else [1, 3, 32, 32])


def test_noisy_results_are_remeasured_and_the_steadiest_kept() -> None:
    """A stand-in session whose first two attempts are noisy: exactly two re-measurements."""
    attempts = [[1.0, 5.0, 1.0, 1.0], [1.0, 1.0, 3.0, 1.0], [1.0, 1.01, 0.99, 1.0], [9.0, 9.0, 9.0, 9.0]]
    calls: list[Any] = []

    class Session:
        def measure(self, artifact: Any, config: Any, inputs: Any = None, on_progress: Any = None) -> dict:
            calls.append(inputs)
            return {"status": "ok", "latencies_ms": attempts[len(calls) - 1]}

    art = ArtifactInfo(spec="m.tflite", path=Path("m.tflite"), format="tflite", precision="fp32", model="m",
                       size_bytes=1)
    res = measure_artifact(Session(), art, "host", BenchConfig(cv_threshold=0.05, remeasure=3))
    assert len(calls) == 3 and res.remeasured == 2
    assert res.latency_ms["mean"] == pytest.approx(1.0) and not res.noisy
    assert len(res.attempt_cvs) == 3 and res.attempt_cvs[2] < 0.05 < min(res.attempt_cvs[:2])
    calls.clear()
    res = measure_artifact(Session(), art, "host", BenchConfig(cv_threshold=0.05, remeasure=1))
    assert len(calls) == 2 and res.noisy and res.latency_ms["max"] == 3.0   # steadiest of two noisy ones

    class DroppingSession(Session):
        def measure(self, artifact: Any, config: Any, inputs: Any = None, on_progress: Any = None) -> dict:
            calls.append(inputs)
            if len(calls) == 1:
                return {"status": "ok", "latencies_ms": attempts[0]}
            return {"status": "partial", "latencies_ms": [1.0], "error": "connection lost"}

    calls.clear()
    res = measure_artifact(DroppingSession(), art, "host", BenchConfig(cv_threshold=0.05, remeasure=2))
    assert len(calls) == 2 and res.status == "ok" and res.latency_ms["n"] == 4 and res.remeasured == 1


def test_cli_bench_json_and_table(tiny: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "sub" / "bench.json"
    rc = cli_main(["bench", str(tiny["tiny_int8.tflite"]), "--min-runs", "10", "--min-seconds", "0.1",
                   "--warmup", "1", "--remeasure", "0", "--no-xnnpack", "--json", str(out)])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert doc["ghostedge_bench"] == 1 and doc["target"] == "host"
    assert doc["config"]["xnnpack"] is False and doc["machine"]["cpu"]
    (r,) = doc["results"]
    assert set(r) == SCHEMA and r["delegate"] == "none" and r["precision"] == "int8"
    table = capsys.readouterr().out
    assert "tiny_int8.tflite" in table and "p50" in table


def test_bad_inputs_are_one_clear_error(tiny: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"\x00" * 64)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    out = tmp_path / "never.json"
    cases = {
        str(tmp_path / "missing.tflite"): "does not exist",
        str(garbage): "is not a TFLite flatbuffer",
        str(text): "is not a model file",
        str(tmp_path): "is a folder",
        "not_a_model_name": "neither an existing file nor a known model name",
        str(tiny["two_inputs.onnx"]): "has 2 inputs",
        str(tiny["flat_input.onnx"]): "is not a batch of images",
    }
    for artifact, message in cases.items():
        rc = cli_main(["bench", artifact, "--min-runs", "2", "--min-seconds", "0", "--json", str(out)])
        err = capsys.readouterr().err
        assert rc != 0, artifact
        assert message in err, (artifact, err)
        if rc == 2:
            assert "hint:" in err
    assert not out.exists() or json.loads(out.read_text())["results"][0]["status"] == "failed"
    assert not list(tmp_path.glob(".never.json*"))         # no temporary left behind
    with pytest.raises(TargetError, match="unknown target"):
        parse_target("raspberrypi")
    for bad in (BenchConfig(threads=0), BenchConfig(min_runs=0), BenchConfig(min_seconds=5, max_seconds=1),
                BenchConfig(runtime="tensorrt")):
        with pytest.raises(GhostEdgeError):
            bench([tiny["tiny_fp32.onnx"]], "host", bad)
    with pytest.raises(GhostEdgeError, match="no artifact"):
        bench([], "host")


def test_unfeedable_model_result_is_failed_not_raised(tiny: dict[str, Path]) -> None:
    (res,) = bench([tiny["two_inputs.onnx"]], "host", FAST)
    assert isinstance(res, BenchResult) and res.status == "failed" and res.latency_ms is None
    assert "has 2 inputs" in res.error


def test_parity_report() -> None:
    rep = bench_mod.parity_report([[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.5], [1.0, 0.5]])
    assert rep == {"n": 2, "max_abs_diff": 1.0, "mean_abs_diff": 0.5, "top1_agreement": 0.5}
    assert "differs" in bench_mod.parity_report([[1.0]], [[1.0, 2.0]])["error"]


def test_inspect_reads_the_model_name_from_manifest(tiny: dict[str, Path], tmp_path: Path) -> None:
    art = tmp_path / "m.tflite"
    art.write_bytes(tiny["tiny_fp32.tflite"].read_bytes())
    (tmp_path / "manifest.json").write_text(json.dumps({"source": {"model": "ghostnet_cifar_050"},
                                                        "preprocessing": {"input_size": [3, 32, 32],
                                                                          "mean": [0.5] * 3, "std": [0.25] * 3,
                                                                          "resize": {"shorter_side": 32}}}))
    (tmp_path / "labels.txt").write_text("\n".join(f"c{i}" for i in range(10)))
    info = inspect_artifact(art)
    assert info.model == "ghostnet_cifar_050" and info.precision == "fp32"
    assert info.meta["preprocess"]["resize_size"] == 32 and info.meta["class_names"][9] == "c9"
