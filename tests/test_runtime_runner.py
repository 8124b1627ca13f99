"""The device runner (the script copied to boards) and the in-process backends, on real runtimes."""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ghostnet_edge.errors import GhostEdgeError, MissingDependencyError
from ghostnet_edge.runtime import device_runner as dr
from ghostnet_edge.runtime import protocol
from ghostnet_edge.runtime.backends import load_runner
from ghostnet_edge.runtime.tiny_models import build_tiny_models, reference_logits

RUNNER = str(protocol.RUNNER_PATH)


@pytest.fixture(scope="session")
def tiny(cache_dir: Path) -> dict[str, Path]:
    return build_tiny_models(cache_dir / "runtime")


def run_runner(*args: str, timeout: float = 120) -> tuple[int, dict, str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, RUNNER, *args], capture_output=True, text=True, timeout=timeout, env=env)
    return done.returncode, json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_runner_is_self_contained_python38() -> None:
    source = Path(RUNNER).read_text()
    tree = ast.parse(source, feature_version=(3, 8))
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert "ghostnet_edge" not in imported
    assert imported <= {"__future__", "argparse", "importlib", "json", "os", "platform", "resource", "signal", "sys",
                        "tempfile", "time", "numpy", "ai_edge_litert", "tflite_runtime", "onnxruntime"}


@pytest.mark.parametrize("name,runtime,dtype", [("tiny_int8.tflite", "litert", "int8"),
                                                ("tiny_fp32.onnx", "onnxruntime", "float32")])
def test_runner_meets_min_runs_and_min_seconds(tiny: dict[str, Path], tmp_path: Path, name: str, runtime: str,
                                               dtype: str) -> None:
    out = tmp_path / "r.json"
    rc, rec, err = run_runner("--model", str(tiny[name]), "--warmup", "3", "--min-runs", "20",
                              "--min-seconds", "0.3", "--json", str(out), "--markers")
    assert rc == 0, err
    assert json.loads(out.read_text()) == rec
    assert rec["status"] == "ok" and rec["runtime"] == runtime and rec["input_dtype"] == dtype
    lat = rec["latencies_ms"]
    assert len(lat) >= 20 and rec["timed_seconds"] >= 0.3
    assert all(v > 0 for v in lat)
    assert rec["warmup_runs"] == 3 and rec["first_inference_ms"] > 0 and rec["load_ms"] > 0
    assert rec["peak_rss_mb"] > 10
    assert rec["markers"] == {"start_fd": -1000001, "end_fd": -1000002, "runs_between": len(lat)}
    assert "GHOSTEDGE_INFO " in err and "GHOSTEDGE_PARTIAL " in err


def test_runner_min_runs_dominates_when_runs_are_slow(tiny: dict[str, Path]) -> None:
    rc, rec, _ = run_runner("--model", str(tiny["tiny_fp32.tflite"]), "--warmup", "0", "--min-runs", "7",
                            "--min-seconds", "0", "--no-xnnpack")
    assert rc == 0 and len(rec["latencies_ms"]) == 7 and rec["delegate"] == "none"


def test_runner_sigterm_keeps_partial_runs(tiny: dict[str, Path]) -> None:
    proc = subprocess.Popen([sys.executable, RUNNER, "--model", str(tiny["tiny_fp32.onnx"]), "--min-seconds", "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    deadline = time.time() + 60
    for line in proc.stderr:  # wait until timed runs are being reported
        if line.startswith(protocol.PARTIAL_PREFIX) or time.time() > deadline:
            break
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    rec = json.loads(out.strip().splitlines()[-1])
    assert proc.returncode == dr.EXIT_STOPPED
    assert rec["status"] == "partial" and len(rec["latencies_ms"]) > 0
    assert "stopped after" in rec["error"]


@pytest.mark.parametrize("name,message", [("two_inputs.onnx", "has 2 inputs"),
                                          ("flat_input.onnx", "is not a batch of images")])
def test_runner_refuses_models_it_cannot_feed(tiny: dict[str, Path], name: str, message: str) -> None:
    rc, rec, _ = run_runner("--model", str(tiny[name]))
    assert rc == dr.EXIT_MODEL and rec["status"] == "failed"
    assert message in rec["error"] and rec["hint"]


def test_runner_refuses_garbage_and_missing_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"this is not a flatbuffer at all")
    rc, rec, _ = run_runner("--model", str(bad))
    assert rc == dr.EXIT_MODEL and "neither a TFLite flatbuffer nor an ONNX model" in rec["error"]
    rc, rec, _ = run_runner("--model", str(tmp_path / "missing.onnx"))
    assert rc == dr.EXIT_MODEL and "does not exist" in rec["error"]


def test_runner_probe_lists_interpreters() -> None:
    done = subprocess.run([sys.executable, RUNNER, "--probe"], capture_output=True, text=True, timeout=120)
    info = json.loads(done.stdout)
    assert info["numpy"] == np.__version__
    assert info["runtimes"]["onnxruntime"] and info["runtimes"]["litert"]


def test_int8_input_is_quantised_with_the_models_own_parameters(tiny: dict[str, Path]) -> None:
    model = dr.load_model(str(tiny["tiny_int8.tflite"]))
    scale, zero = model.input_quant
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    q = model.prepare(x)
    assert q.dtype == np.int8 and q.shape == (2, 32, 32, 3)            # NCHW -> NHWC
    expected = np.clip(np.round(x.transpose(0, 2, 3, 1) / scale) + zero, -128, 127).astype(np.int8)
    np.testing.assert_array_equal(q, expected)
    # An NHWC batch is accepted as it is.
    np.testing.assert_array_equal(model.prepare(x.transpose(0, 2, 3, 1)), expected)
    with pytest.raises(dr.RunnerError, match="model takes"):
        model.prepare(np.zeros((1, 3, 16, 16), np.float32))


@pytest.mark.parametrize("name,tol", [("tiny_fp32.tflite", 1e-4), ("tiny_int8.tflite", 0.08),
                                      ("tiny_fp32.onnx", 1e-4), ("tiny_int8.onnx", 0.08)])
def test_every_backend_matches_the_numpy_reference(tiny: dict[str, Path], name: str, tol: float) -> None:
    runner = load_runner(tiny[name])
    assert runner.input_size == (3, 32, 32)
    x = np.random.default_rng(11).standard_normal((5, 3, 32, 32)).astype(np.float32)
    ref = reference_logits(x)
    y = runner.run(x)                     # batch of 5 through a batch-1 model (looped) or a dynamic one
    assert y.shape == (5, 10) and y.dtype == np.float32
    assert np.abs(y - ref).max() < tol
    assert (y.argmax(1) == ref.argmax(1)).all()
    info = runner.info()
    assert info["runtime"] in ("litert", "onnxruntime") and info["version"]


def test_tflite_runtime_backend_when_installed(tiny: dict[str, Path]) -> None:
    pytest.importorskip("tflite_runtime", reason="tflite-runtime 2.14 needs numpy < 2 and is not in the numpy-2 lock; its board path runs in tests/test_runner_pythons.py (Python 3.9-3.11 venvs)")
    runner = load_runner(tiny["tiny_fp32.tflite"], runtime="tflite-runtime")
    x = np.random.default_rng(2).standard_normal((1, 3, 32, 32)).astype(np.float32)
    assert runner.info()["runtime"] == "tflite-runtime"
    np.testing.assert_allclose(runner.run(x), reference_logits(x), atol=1e-4)


def test_missing_runtime_names_the_pip_package(tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)   # import onnxruntime -> ImportError
    with pytest.raises(MissingDependencyError, match="'onnxruntime'") as err:
        load_runner(tiny["tiny_fp32.onnx"])
    assert "pip install" in (err.value.hint or "")
    with pytest.raises(GhostEdgeError, match="cannot run"):
        load_runner(tiny["tiny_fp32.onnx"], runtime="litert")


def test_dynamic_batch_runs_in_chunks_with_the_same_logits(tiny: dict[str, Path],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A large batch through a dynamic-batch ONNX model runs RUN_PIXEL_BUDGET's worth of images at a time;
    the logits are those of one run of the whole batch."""
    model = dr.load_model(str(tiny["tiny_fp32.onnx"]), "onnxruntime", 1)
    assert not model.batch_fixed
    assert dr.run_chunk(224 * 224) == 8 and dr.run_chunk(32 * 32) == 392 and dr.run_chunk(10**9) == 1
    x = np.random.default_rng(5).standard_normal((11, 3, 32, 32)).astype(np.float32)
    whole = model.run_native(model.prepare(x))
    sizes: list[int] = []
    native = model.run_native
    monkeypatch.setattr(model, "run_native", lambda b: (sizes.append(len(b)), native(b))[1])
    monkeypatch.setattr(dr, "RUN_PIXEL_BUDGET", 4 * 32 * 32)
    np.testing.assert_allclose(model.run(x), whole, rtol=0, atol=1e-6)
    assert sizes == [4, 4, 3]
    sizes.clear()
    model.run(x[:4])
    assert sizes == [4]
