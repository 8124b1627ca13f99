"""The TFLite converter process: errors come back as the same GhostEdgeError, a dead child is named,
and an abandoned child is stopped."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest

from ghostnet_edge.errors import DataError, ExportError, MissingDependencyError
from ghostnet_edge.export.tflite import worker as w
from ghostnet_edge.utils.hashing import array_digest

pytest.importorskip("tensorflow")


def test_errors_are_rebuilt_with_their_kind_and_cause() -> None:
    exc = w._rebuild(w._error_dict(DataError("no images", "add some")))
    assert type(exc) is DataError and exc.message == "no images" and exc.hint == "add some"
    missing = w._rebuild(w._error_dict(MissingDependencyError("tensorflow", "tensorflow", "the TFLite export")))
    assert isinstance(missing, MissingDependencyError) and "pip install 'tensorflow'" in missing.hint
    try:
        raise RuntimeError("converter says no") from OSError(28, "No space left on device")
    except RuntimeError as err:
        full = w._rebuild(w._error_dict(err))
    assert isinstance(full, ExportError) and "converter says no" in full.message
    assert isinstance(full.__cause__, OSError) and full.__cause__.errno == 28


def test_a_bad_job_comes_back_as_an_export_error_and_ends_the_child(tmp_path: Path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not an onnx file")
    worker = w.TfliteWorker().start()
    try:
        worker.submit(bad, tmp_path / "f.tflite", None, "int8", True, ["a"], {"mean": [0, 0, 0]})
        with pytest.raises(ExportError):
            worker.result()
        assert worker.proc is not None and worker.proc.wait(timeout=30) == 0
    finally:
        worker.close()
    assert not (tmp_path / "f.tflite").exists() and not worker.home.exists()


def test_failed_calibration_reaches_the_child(tmp_path: Path) -> None:
    from ghostnet_edge.export.tflite._testing import TinyGhostNet, export_onnx_for_tests

    onnx_path = export_onnx_for_tests(TinyGhostNet(num_classes=3), tmp_path / "tiny.onnx", (3, 16, 16))
    calib = tmp_path / "calib.npy"
    np.save(calib, np.zeros((2, 3, 16, 16), np.float32))
    worker = w.TfliteWorker().start()
    try:
        worker.submit(onnx_path, tmp_path / "f.tflite", tmp_path / "q.tflite", "int8", True,
                      ["a", "b", "c"], {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]})
        worker.hand_over(None, error="the calibration images ran out", calib_file=calib)
        with pytest.raises(ExportError, match="calibration failed: the calibration images ran out"):
            worker.result()
    finally:
        worker.close()
    assert not (tmp_path / "q.tflite").exists()


def test_fp32_first_then_int8_with_the_ranges_the_layer_report_and_the_checks(tmp_path: Path) -> None:
    """The child converts FP32 at once, then says it waits (``idle``) until the ranges, the calibration
    tensors, the report images and the held-out images arrive; the INT8 model, its per-layer report and
    every ``verify`` model's logits on the held-out images come back."""
    import time

    from ghostnet_edge.calib.ranges import collect_ranges
    from ghostnet_edge.export.tflite._testing import TinyGhostNet, export_onnx_for_tests

    onnx_path = export_onnx_for_tests(TinyGhostNet(num_classes=3), tmp_path / "tiny.onnx", (3, 16, 16))
    x = np.random.default_rng(0).standard_normal((6, 3, 16, 16)).astype(np.float32)
    np.save(tmp_path / "calib.npy", x)
    worker = w.TfliteWorker().start()
    try:
        verify = {"onnx": (onnx_path, "onnxruntime"), "tflite": (tmp_path / "f.tflite", "auto"),
                  "tflite-int8": (tmp_path / "q.tflite", "auto")}
        worker.submit(onnx_path, tmp_path / "f.tflite", tmp_path / "q.tflite", "int8", True,
                      ["a", "b", "c"], {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}, verify=verify)
        deadline = time.monotonic() + 120
        while not worker.idle() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert worker.idle() and (tmp_path / "f.tflite").is_file() and not (tmp_path / "q.tflite").exists()
        ranges = collect_ranges(onnx_path, x, "minmax", threads=1, use_cache=False).ranges
        np.save(tmp_path / "verify.npy", x[2:5])
        worker.hand_over(ranges, calib_file=tmp_path / "calib.npy", calib_sha256=array_digest(x).hex(),
                         report_count=2, verify_images=tmp_path / "verify.npy")
        res = worker.result()
    finally:
        worker.close()
    assert res["int8_bytes"] > 0 and res["ranges_source"].startswith("shared calibration ranges")
    from ghostnet_edge.export.tflite.metadata import read_embedded_metadata

    # The INT8 file's provenance: the hash of the calibration tensors it was calibrated on.
    assert read_embedded_metadata(tmp_path / "q.tflite")["info"]["representative_nchw_sha256"] == array_digest(x).hex()
    assert res["int8_layers"] and all(set(d) >= {"name", "op", "sqnr_db"} for d in res["int8_layers"])
    from dataclasses import asdict

    from ghostnet_edge.export.tflite.layers import per_layer_sqnr

    # The report ran on the first report_count held-out images, as the main process's would.
    here = [asdict(e) for e in per_layer_sqnr(tmp_path / "q.tflite", tmp_path / "f.tflite", x[2:4], num_threads=1)]
    assert res["int8_layers"] == json.loads(json.dumps(here))  # as it came back: JSON
    from ghostnet_edge.runtime.backends import run_artifact

    assert set(res["verify_logits"]) == set(verify)
    for key, (path, runtime) in verify.items():  # the same runner, the same logits as in this process
        np.testing.assert_array_equal(res["verify_logits"][key], run_artifact(path, x[2:5], 1, runtime))


def test_a_child_that_dies_is_named_and_an_abandoned_one_is_stopped(tmp_path: Path) -> None:
    worker = w.TfliteWorker().start()
    worker.submit(tmp_path / "absent.onnx", tmp_path / "f.tflite", None, "int8", True, ["a"], {})
    assert worker.proc is not None
    worker.proc.send_signal(signal.SIGKILL)
    with pytest.raises(ExportError, match="exited with code -9 without an answer"):
        worker.result()
    worker.close()
    other = w.TfliteWorker().start()
    other.kill()
    assert other.proc is not None and other.proc.poll() is not None and not other.home.exists()


def test_one_converter_process_serves_successive_exports(tmp_path: Path) -> None:
    """After a job that succeeded the child stays, TensorFlow imported, and takes the next job."""
    from ghostnet_edge.export.tflite._testing import TinyGhostNet, export_onnx_for_tests

    onnx_path = export_onnx_for_tests(TinyGhostNet(num_classes=3), tmp_path / "tiny.onnx", (3, 16, 16))
    worker = w.acquire()
    pid = worker.proc.pid
    try:
        for i in range(2):
            worker.submit(onnx_path, tmp_path / f"f{i}.tflite", None, "int8", True, ["a", "b", "c"],
                          {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]})
            assert worker.result()["fp32_bytes"] > 0
        w.release(worker, healthy=True)
        again = w.acquire()
        assert again is worker and again.proc.pid == pid
    finally:
        worker.kill()
    assert (tmp_path / "f0.tflite").read_bytes() == (tmp_path / "f1.tflite").read_bytes()


def test_lines_reader_sees_whole_lines_as_they_arrive() -> None:
    import os

    r, wr = os.pipe()
    lines = w._Lines(r)
    try:
        assert not lines.ready()
        os.write(wr, b'{"a": 1}\n{"b"')
        assert lines.ready() and lines.readline() == '{"a": 1}'
        assert not lines.ready()  # half a line is not a message
        os.write(wr, b': 2}\n')
        assert lines.ready() and lines.readline() == '{"b": 2}'
        os.close(wr)
        assert lines.ready() and lines.readline() == ""  # the end of input
    finally:
        os.close(r)


@pytest.mark.parametrize("handover_first", [False, True])
def test_fp32_held_out_runs_fill_the_wait_for_the_ranges(tmp_path: Path, handover_first: bool) -> None:
    """Held-out images sent before the hand-over: the child runs the FP32 models on them while it would
    wait for the ranges, and only the INT8 model after; with the hand-over already there it runs them all
    after the INT8 conversion. The logits are the same either way."""
    import time

    from ghostnet_edge.calib.ranges import collect_ranges
    from ghostnet_edge.export.tflite._testing import TinyGhostNet, export_onnx_for_tests
    from ghostnet_edge.runtime.backends import run_artifact

    onnx_path = export_onnx_for_tests(TinyGhostNet(num_classes=3), tmp_path / "tiny.onnx", (3, 16, 16))
    x = np.random.default_rng(1).standard_normal((6, 3, 16, 16)).astype(np.float32)
    np.save(tmp_path / "calib.npy", x)
    np.save(tmp_path / "verify.npy", x[1:4])
    ranges = collect_ranges(onnx_path, x, "minmax", threads=1, use_cache=False).ranges
    verify = {"onnx": (onnx_path, "onnxruntime"), "tflite": (tmp_path / "f.tflite", "auto"),
              "tflite-int8": (tmp_path / "q.tflite", "auto")}
    worker = w.TfliteWorker().start()

    def hand_over() -> None:
        worker.hand_over(ranges, calib_file=tmp_path / "calib.npy", report_count=0,
                         verify_images=tmp_path / "verify.npy")

    try:
        worker.submit(onnx_path, tmp_path / "f.tflite", tmp_path / "q.tflite", "int8", True,
                      ["a", "b", "c"], {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}, verify=verify)
        worker.send_held_out(tmp_path / "verify.npy")
        if handover_first:
            hand_over()
        else:
            deadline = time.monotonic() + 120
            while not worker.idle() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert worker.idle() and not (tmp_path / "q.tflite").exists()
            hand_over()
        res = worker.result()
    finally:
        worker.close()
    assert res["verify_early"]["models"] == ([] if handover_first else ["onnx", "tflite"])
    assert set(res["verify_logits"]) == set(verify)
    for key, (path, runtime) in verify.items():
        np.testing.assert_array_equal(res["verify_logits"][key], run_artifact(path, x[1:4], 1, runtime))
