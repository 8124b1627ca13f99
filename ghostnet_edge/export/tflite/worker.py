"""The TFLite conversion in a process of its own, beside the export's main process.

Importing TensorFlow (about 4 s) and its converter are mostly Python holding the interpreter lock; in a
thread of the export's process they slowed the main thread's preprocessing, ONNX export and calibration
about as much as they ran beside them. A child process runs them on the other core instead: it starts
with the export, imports TensorFlow while the parent preprocesses and exports ONNX, converts FP32 as soon
as the verified FP32 ONNX model exists, and INT8 once the parent's calibration pass hands it the ranges.

Protocol (one JSON object per line on the child's stdin; the child's answer in ``result.json``):

1. the job: ONNX path, output paths, I/O type, labels, preprocessing (``{"stop": true}`` ends it);
2. only when the job has INT8 output: ``{"ranges": FILE}`` (JSON: ONNX tensor -> [lo, hi]), or
   ``{"error": TEXT}`` when calibration failed. The job's ``calib`` (an .npy of the NCHW calibration
   tensors, the calibration cache's own file where there is one) feeds TensorFlow's calibrator when the
   ranges leave a tensor unplaced, and the INT8 file's provenance metadata.

``result.json`` holds ``{"ok": true, "result": TfliteResult}`` or ``{"ok": false, "error": {...}}``; the
parent re-raises the error as the same :class:`~ghostnet_edge.errors.GhostEdgeError`. The child's stdout
and stderr go to ``worker.log`` beside it (shown in the message when the child dies without an answer).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from ghostnet_edge import errors

RESULT, LOG = "result.json", "worker.log"


# ---- the child ------------------------------------------------------------------------------------------------


def _error_dict(exc: BaseException) -> dict[str, Any]:
    chain: BaseException | None = exc
    errno = None
    while chain is not None and errno is None:
        errno = getattr(chain, "errno", None) if isinstance(chain, OSError) else None
        chain = chain.__cause__ or chain.__context__
    if isinstance(exc, errors.MissingDependencyError):
        return {"type": "MissingDependencyError", "module": exc.module, "package": exc.package,
                "message": exc.message, "hint": exc.hint, "errno": errno}
    if isinstance(exc, errors.GhostEdgeError):
        return {"type": type(exc).__name__, "message": exc.message, "hint": exc.hint, "errno": errno}
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return {"type": "ExportError", "message": f"the TFLite conversion failed: {first}",
            "hint": "run with --verbose for the converter's log, or export ONNX only (--formats onnx)",
            "errno": errno}


def _read_message() -> dict[str, Any] | None:
    line = sys.stdin.readline()
    return json.loads(line) if line.strip() else None


def _ranges_from_parent() -> dict[str, tuple[float, float]]:
    msg = _read_message()
    if msg is None or "error" in msg:
        raise errors.ExportError(f"calibration failed: {msg.get('error') if msg else 'the export stopped'}",
                                 "see the message of the export itself")
    return {k: (float(v[0]), float(v[1])) for k, v in json.loads(Path(msg["ranges"]).read_text()).items()}


def child_main(job_dir: Path) -> int:
    """Import TensorFlow, then convert the job the parent sends (see the module docstring)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    out = job_dir / RESULT
    try:
        from ghostnet_edge.utils.native_stderr import quiet_framework_import

        with quiet_framework_import("tensorflow"):
            errors.require("tensorflow", "tensorflow", "the TFLite export")
        job = _read_message()
        if job is None or job.get("stop"):
            return 0
        import numpy as np

        from ghostnet_edge.export.tflite.convert import convert_onnx_to_tflite

        int8 = Path(job["int8"]) if job.get("int8") else None
        res = convert_onnx_to_tflite(
            Path(job["onnx"]), Path(job["fp32"]) if job.get("fp32") else None, int8,
            representative=np.load(job["calib"], allow_pickle=False) if int8 is not None else None,
            io_dtype=job["io_dtype"], per_channel=job["per_channel"], labels=job["labels"],
            preprocessing=job["preprocessing"], ranges=_ranges_from_parent if int8 is not None else None)
        payload: dict[str, Any] = {"ok": True, "result": res.to_dict()}
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the parent as an answer
        payload = {"ok": False, "error": _error_dict(exc)}
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, out)
    return 0


# ---- the parent -----------------------------------------------------------------------------------------------


class TfliteWorker:
    """Handle on the child process: ``start`` at once, ``submit`` the job, ``send_ranges``, ``result``."""

    def __init__(self, job_dir: Path) -> None:
        self.job_dir = Path(job_dir)
        self.job_dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None
        self._wants_ranges = False
        self._log: Any = None

    def start(self) -> TfliteWorker:
        env = dict(os.environ)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        root = str(Path(__file__).resolve().parents[3])
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self._log = open(self.job_dir / LOG, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen([sys.executable, "-m", "ghostnet_edge.export.tflite.worker", str(self.job_dir)],
                                     stdin=subprocess.PIPE, stdout=self._log, stderr=self._log, env=env,
                                     text=True)
        return self

    def _send(self, msg: dict[str, Any]) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # the child is gone; result() says why

    def submit(self, onnx: Path, fp32: Path | None, int8: Path | None, calib_file: Path | None,
               io_dtype: str, per_channel: bool, labels: list[str], preprocessing: dict[str, Any]) -> None:
        """``calib_file``: an .npy of the NCHW calibration tensors (read by the child for INT8)."""
        self._wants_ranges = int8 is not None
        self._send({"onnx": str(onnx), "fp32": str(fp32) if fp32 else None, "int8": str(int8) if int8 else None,
                    "calib": str(calib_file) if calib_file else None, "io_dtype": io_dtype,
                    "per_channel": per_channel, "labels": labels, "preprocessing": preprocessing})

    def send_ranges(self, ranges: dict[str, tuple[float, float]] | None, error: str | None = None) -> None:
        if not self._wants_ranges:
            return
        if error is not None or ranges is None:
            self._send({"error": error or "no ranges"})
            return
        path = self.job_dir / "ranges.json"
        path.write_text(json.dumps({k: [lo, hi] for k, (lo, hi) in ranges.items()}))
        self._send({"ranges": str(path)})
        self._wants_ranges = False

    def result(self) -> dict[str, Any]:
        """The child's TfliteResult as a dict; its error re-raised as the same kind of GhostEdgeError."""
        assert self.proc is not None
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        code = self.proc.wait()
        path = self.job_dir / RESULT
        if not path.is_file():
            tail = (self.job_dir / LOG).read_bytes()[-600:].decode(errors="replace").strip() \
                if (self.job_dir / LOG).is_file() else ""
            raise errors.ExportError(f"the TFLite converter process exited with code {code} without an answer"
                                     + (f"; its last output: {tail}" if tail else ""),
                                     "run again; if it repeats, run with --threads 1 to convert in-process")
        payload = json.loads(path.read_text())
        if payload.get("ok"):
            return payload["result"]
        raise _rebuild(payload["error"])

    def close(self) -> None:
        """Stop the child if it still runs (an interrupted or failed export) and release the log."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(Exception):
                self.proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None


def _rebuild(err: dict[str, Any]) -> errors.GhostEdgeError:
    if err.get("type") == "MissingDependencyError":
        exc: errors.GhostEdgeError = errors.MissingDependencyError(err["module"], err["package"], "the TFLite export")
        exc.message, exc.hint = err["message"], err["hint"]
        exc.args = (err["message"],)
    else:
        cls = getattr(errors, str(err.get("type")), errors.ExportError)
        if not (isinstance(cls, type) and issubclass(cls, errors.GhostEdgeError)) or cls is errors.BadImageError:
            cls = errors.ExportError
        exc = cls(err["message"], err.get("hint"))
    if err.get("errno") is not None:
        exc.__cause__ = OSError(int(err["errno"]), os.strerror(int(err["errno"])))
    return exc


if __name__ == "__main__":
    raise SystemExit(child_main(Path(sys.argv[1])))
