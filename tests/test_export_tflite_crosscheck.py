"""Second route: the same ONNX through onnx2tf 2.x (its own tool venv, offline) must give the same FP32 logits.

onnx2tf is never imported here: it runs in a cached venv on Python >= 3.12 (built on first use, which
needs the network once). The tests skip, with the reason, only when no such Python exists or that venv
cannot be built.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tensorflow")

from ghostnet_edge.errors import ExportError  # noqa: E402
from ghostnet_edge.export.tflite import crosscheck  # noqa: E402
from ghostnet_edge.export.tflite import inspect as tfl_inspect  # noqa: E402
from ghostnet_edge.export.tflite._testing import (  # noqa: E402
    count_depthwise_convs,
    export_onnx_for_tests,
    tiny_ghostnet,
)
from ghostnet_edge.export.tflite.convert import convert_onnx_to_tflite  # noqa: E402
from ghostnet_edge.export.tflite.crosscheck import convert_with_onnx2tf  # noqa: E402
from ghostnet_edge.runtime.backends import run_artifact  # noqa: E402


def _tool_venv(request: pytest.FixtureRequest, backend: str):
    try:
        env = crosscheck.onnx2tf_venv(backend)
    except crosscheck.ToolUnavailableError as exc:
        pytest.skip(f"onnx2tf's tool venv is unavailable: {exc.message}")
    how = f"built in {env.seconds:.1f} s" if env.built else f"reused in {env.seconds * 1e3:.2f} ms"
    extra = {d: env.version(d) for d in ("onnx2tf", "tensorflow", "onnx", "onnxruntime", "ai-edge-litert", "numpy")}
    line = f"\n[onnx2tf venv] Python {env.python_version} {backend}: {extra} ({how}; {env.path})"
    capture = request.config.pluginmanager.getplugin("capturemanager")
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    if capture is not None and reporter is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(line)
    return env


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["flatbuffer_direct", "tf_converter"])
def test_onnx2tf_and_our_translator_agree_on_fp32_logits(request: pytest.FixtureRequest, tmp_path: Path,
                                                         backend: str) -> None:
    env = _tool_venv(request, backend)
    assert env.version("onnx2tf") == crosscheck.ONNX2TF_VERSION
    assert (env.version("tensorflow") is not None) == (backend == "tf_converter")
    model = tiny_ghostnet(seed=3)
    onnx_path = export_onnx_for_tests(model, tmp_path / "tiny.onnx", (3, 32, 32))
    onnx_bytes = onnx_path.read_bytes()
    ours = convert_onnx_to_tflite(onnx_path, tmp_path / "ours_fp32.tflite", None).fp32_path
    theirs = convert_with_onnx2tf(onnx_path, tmp_path / "onnx2tf", seed=0, backend=backend)
    assert theirs == tmp_path / "onnx2tf" / "tiny_float32.tflite"
    assert (tmp_path / "onnx2tf" / "onnx2tf.log").is_file()
    assert (tmp_path / "onnx2tf" / "saved_model.pb").is_file() == (backend == "tf_converter")

    # Both take NHWC images; the runner transposes our NCHW batch for each.
    io = tfl_inspect.io_quantization(theirs)
    assert io["input"]["shape"] == [1, 32, 32, 3] and io["input"]["dtype"] == io["output"]["dtype"] == "FLOAT32"
    x = np.random.default_rng(7).standard_normal((8, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    a = run_artifact(ours, x)
    b = run_artifact(theirs, x)
    scale = max(1.0, float(np.abs(ref).max()))
    assert np.abs(a - b).max() <= 1e-4 * scale
    assert np.abs(a - ref).max() <= 1e-4 * scale and np.abs(b - ref).max() <= 1e-4 * scale

    # Ours keeps every depthwise conv as DEPTHWISE_CONV_2D; onnx2tf may turn some into grouped CONV_2D.
    n_dw = count_depthwise_convs(model)
    assert tfl_inspect.op_counts(ours)["DEPTHWISE_CONV_2D"] == n_dw
    assert tfl_inspect.op_counts(theirs).get("DEPTHWISE_CONV_2D", 0) <= n_dw
    # onnx2tf ran in its own venv and rewrote a copy: the main environment never imported it, and the
    # ONNX file it was given is untouched (onnx2tf renames ops in its input file in place).
    assert "onnx2tf" not in sys.modules
    assert onnx_path.read_bytes() == onnx_bytes
    assert not list((tmp_path / "onnx2tf").glob(".onnx2tf-*"))     # its work folder is gone


def test_onnx2tf_route_reports_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="does not exist"):
        convert_with_onnx2tf(tmp_path / "none.onnx", tmp_path / "out")


def test_the_tool_subprocess_cannot_reach_the_network(tmp_path: Path) -> None:
    """The guard onnx2tf runs under: a connection off this machine fails the conversion loudly."""
    # ftplib's __main__ connects to the host it is given (192.0.2.1 is TEST-NET-1: never reached).
    with pytest.raises(ExportError, match="tried to reach the network.*192.0.2.1"):
        crosscheck.run_offline(sys.executable, "ftplib", ["192.0.2.1"], tmp_path, tmp_path / "log.txt", timeout=60)
    with pytest.raises(ExportError, match="tried to reach the network.*example.invalid"):
        crosscheck.run_offline(sys.executable, "ftplib", ["example.invalid"], tmp_path, tmp_path / "log.txt",
                               timeout=60)


def test_unknown_backend_is_refused(tmp_path: Path) -> None:
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"\x08\x08")
    with pytest.raises(ExportError, match="unknown onnx2tf backend"):
        convert_with_onnx2tf(onnx, tmp_path / "out", backend="tflite_converter")
