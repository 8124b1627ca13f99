"""The TFLite conversion in a process of its own, beside the export's main process.

Importing TensorFlow (about 4 s) and its converter are mostly Python holding the interpreter lock; in a
thread of the export's process they slowed the main thread's preprocessing, ONNX export and calibration
about as much as they ran beside them. A child process runs them on another core instead: it starts with
the export, imports TensorFlow while the parent loads the model and exports ONNX, converts FP32 as soon
as the FP32 ONNX file exists (the parent checks it meanwhile), and INT8 once the parent's calibration
pass hands it the ranges.
After a job that succeeded the child waits for the next one, so the exports of one process (a curve
sweep, calibration draws, a benchmark's repeated export) import TensorFlow once, as they did in-process.

Protocol (one JSON object per line on the child's stdin; answers in files):

1. a job: the folder for its answer, ONNX path, output paths, I/O type, labels, preprocessing, and
   optionally ``verify`` (artifact key -> [path, runtime]: the models to run on the held-out images)
   (``{"stop": true}`` or end of input ends the child); the FP32 model is converted at once;
2. only when the job has INT8 output or ``verify``, once the parent has its images (and, for INT8, has
   calibrated): ``{"ranges": FILE or null, "calib": NPY, "calib_sha256": HEX or null, "report_count": N,
   "verify_images": NPY or null}`` (ranges: JSON, ONNX tensor -> [lo, hi]), or ``{"error": TEXT}`` when
   the parent failed first. The calibration tensors feed TensorFlow's own calibrator when the ranges
   leave a tensor unplaced, and the INT8 file's provenance metadata (``calib_sha256``, their hash as the
   parent computed it for its ranges, saves hashing them again). With ``report_count`` > 0 the INT8
   model's per-layer report is made here too, on the first ``report_count`` held-out images (NCHW), and
   comes back with the result (``int8_layers``). With ``verify_images`` the ``verify`` models' logits on
   them come back (``verify_logits``: key -> NPY, loaded by :meth:`TfliteWorker.result`); the parent
   compares them with PyTorch's. While it waits for this message the child marks its job folder
   (``WAITING``). Before it, as soon as the parent has decoded them, ``{"held_out": NPY}`` may bring the
   held-out images on their own: the child then runs the FP32 ``verify`` models on them while it would
   otherwise wait (see ``_Handover``), and their logits come back with the others.

The answer, ``DIR/result.json``, holds ``{"ok": true, "result": TfliteResult}`` or ``{"ok": false,
"error": {...}}``; the parent re-raises the error as the same :class:`~ghostnet_edge.errors.GhostEdgeError`,
and a child that answered with an error exits. Its stdout and stderr go to a log file of its own (its
tail is shown when the child dies without an answer).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ghostnet_edge import errors
from ghostnet_edge.export.tflite.tf_import import install_import_hooks, load_translation_namespaces

RESULT = "result.json"
WAITING = "waiting-for-calibration"  # the child's FP32 work is done; it waits for the parent's hand-over
# After its TensorFlow import the converter yields to the export's main process. While it converts, the
# main process keeps its thread pools off one core (ExportJob.own_threads), so the two do not compete;
# the niceness only decides who waits when something else shares the machine: the main process, whose
# calibration pass and checks the converter's INT8 step waits for. Compare with
# `benchmarks/export_time.py --niceness 0`. GHOSTEDGE_CONVERTER_NICENESS overrides it (the benchmark's
# --niceness). The import itself runs at IMPORT_NICENESS: beside the model loading and the ONNX export
# (the export's critical path) it shares the other core with the image prefetch (calib/prefetch.py, at
# the same niceness), and both are done before the main process needs them.
CONVERTER_NICENESS = 10
IMPORT_NICENESS = 5


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
    return {"type": "ExportError", "message": f"the TFLite conversion failed: {errors.first_line(exc)}",
            "hint": "run with --verbose for the converter's log, or export ONNX only (--formats onnx)",
            "errno": errno}


class _Lines:
    """Lines from a file descriptor, read without Python's buffering, so that :meth:`ready` (is a whole line
    already there?) sees every byte that has arrived."""

    def __init__(self, fd: int, encoding: str = "utf-8") -> None:
        self.fd = fd
        self.encoding = encoding  # the parent writes with its locale's, as sys.stdin would read
        self.buf = b""
        self.eof = False

    def _fill(self) -> None:
        chunk = os.read(self.fd, 1 << 16)
        self.buf += chunk
        self.eof = not chunk

    def ready(self) -> bool:
        """A whole line (or the end of input) can be read without waiting."""
        if b"\n" in self.buf or self.eof:
            return True
        try:
            readable = select.select([self.fd], [], [], 0)[0]
        except (OSError, ValueError):  # no select on this descriptor: count nothing as arrived
            return False
        if readable:
            self._fill()
        return b"\n" in self.buf or self.eof

    def readline(self) -> str:
        while b"\n" not in self.buf and not self.eof:
            self._fill()
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode(self.encoding)


_STDIN: _Lines | None = None


def _stdin() -> _Lines:
    global _STDIN
    if _STDIN is None:
        _STDIN = _Lines(sys.stdin.fileno(), sys.stdin.encoding or "utf-8")
    return _STDIN


def _read_message() -> dict[str, Any] | None:
    line = _stdin().readline()
    return json.loads(line) if line.strip() else None


def _message_ready() -> bool:
    """The parent's next message has arrived (reading it will not wait)."""
    return _stdin().ready()


class _Handover:
    """What the parent sends once its images are decoded and, for INT8, its calibration pass is done, read
    on first use: the ranges, the calibration tensors, the per-layer report's images and the held-out
    images. While waiting the child marks its job folder (``WAITING``), so the parent may give its
    calibration pass this core too.

    The parent sends the held-out images earlier, on their own (``{"held_out": NPY}``), as soon as they
    are decoded. When this process would otherwise wait (its FP32 work is done, the hand-over has not
    come), it first makes the held-out runs of the ``early`` models whose files exist by then (the FP32
    ones), one by one, and stops as soon as the hand-over arrives: the INT8 conversion does not wait for
    them, and after it only the INT8 model's run is left."""

    def __init__(self, job_dir: Path, early: dict[str, list[str]] | None = None) -> None:
        self.job_dir = job_dir
        self.msg: dict[str, Any] | None = None
        self.waited = 0.0  # seconds this process idled for the message: the export's timing report shows it
        self.early = dict(early or {})
        self.held_out: str | None = None
        self.early_logits: dict[str, str] = {}  # artifact key -> .npy of its logits on the held-out images
        self.early_seconds = 0.0
        self._pending: list[dict[str, Any] | None] = []  # a message read while looking for held_out

    def _noted(self, msg: dict[str, Any] | None) -> bool:
        """Whether ``msg`` was the held-out images (now noted) rather than the hand-over."""
        if msg is not None and set(msg) == {"held_out"}:
            self.held_out = msg["held_out"]
            return True
        return False

    def _next(self) -> dict[str, Any] | None:
        """The next message other than the held-out images (which are noted)."""
        while True:
            msg = self._pending.pop() if self._pending else _read_message()
            if not self._noted(msg):
                return msg

    def _arrived(self) -> bool:
        """Whether the hand-over (or an error, or the end of input) is here; held-out images are noted."""
        while not self._pending and _message_ready():
            msg = _read_message()
            if not self._noted(msg):
                self._pending.append(msg)
        return bool(self._pending)

    def _run_early(self) -> None:
        import numpy as np

        t0 = time.perf_counter()
        for key, (path, runtime) in self.early.items():
            if self._arrived() or self.held_out is None:
                break
            if Path(path).is_file() and key not in self.early_logits:
                self.early_logits.update(_verify_logits({key: (path, runtime)},
                                                        np.load(self.held_out, mmap_mode="r"), self.job_dir))
        self.early_seconds = time.perf_counter() - t0

    def _message(self) -> dict[str, Any]:
        if self.msg is None:
            self._run_early()
            (self.job_dir / WAITING).touch()
            t0 = time.perf_counter()
            msg = self._next()
            self.waited = time.perf_counter() - t0
            if msg is None or "error" in msg:
                raise errors.ExportError(f"calibration failed: {msg.get('error') if msg else 'the export stopped'}",
                                         "see the message of the export itself")
            self.msg = msg
        return self.msg

    def ranges(self) -> dict[str, tuple[float, float]]:
        path = self._message().get("ranges")
        if not path:
            raise errors.ExportError("the export sent no calibration ranges for the INT8 model",
                                     "report this: the export and its converter process disagree")
        return {k: (float(v[0]), float(v[1])) for k, v in json.loads(Path(path).read_text()).items()}

    def tensors(self) -> Any:
        import numpy as np

        # Mapped, not read: only TensorFlow's own calibrator (a fallback) reads the images themselves.
        return np.load(self._message()["calib"], mmap_mode="r", allow_pickle=False)

    def calib_sha256(self) -> str | None:
        return self._message().get("calib_sha256") or None

    def report_count(self) -> int:
        return int(self._message().get("report_count") or 0)

    def verify_images(self) -> Path | None:
        return Path(self._message()["verify_images"]) if self._message().get("verify_images") else None


def _answer(job_dir: Path, payload: dict[str, Any]) -> None:
    tmp = job_dir / (RESULT + ".tmp")
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, job_dir / RESULT)


def _convert(job: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from ghostnet_edge.export.tflite.convert import convert_onnx_to_tflite

    int8 = Path(job["int8"]) if job.get("int8") else None
    handover = _Handover(Path(job["dir"]), early=job.get("verify"))
    res = convert_onnx_to_tflite(
        Path(job["onnx"]), Path(job["fp32"]) if job.get("fp32") else None, int8,
        representative=handover.tensors if int8 is not None else None,
        io_dtype=job["io_dtype"], per_channel=job["per_channel"], labels=job["labels"],
        preprocessing=job["preprocessing"], ranges=handover.ranges if int8 is not None else None,
        hard_swish=job.get("hard_swish", "builtin"), use_cache=bool(job.get("use_cache", False)),
        representative_sha256=handover.calib_sha256 if int8 is not None else None)
    out = res.to_dict()
    count = handover.report_count() if int8 is not None else 0
    images = handover.verify_images() if count or job.get("verify") else None
    if count and images is not None and res.int8_path is not None and res.fp32_path is not None:
        # The INT8 model's per-layer report runs here, on this process's core, while the parent is still
        # busy with ONNX INT8; made in the parent it was the export's last step, on its own.
        from dataclasses import asdict

        from ghostnet_edge.export.tflite.layers import per_layer_sqnr

        t0 = time.perf_counter()
        x = np.array(np.load(images, mmap_mode="r", allow_pickle=False)[:count])
        layers = per_layer_sqnr(res.int8_path, res.fp32_path, x, num_threads=1)
        out["int8_layers"] = [asdict(e) for e in layers]
        out["int8_layers_seconds"] = time.perf_counter() - t0
    if images is not None and job.get("verify"):
        t0 = time.perf_counter()
        later = {k: v for k, v in job["verify"].items() if k not in handover.early_logits}
        out["verify_logits"] = {**handover.early_logits,
                                **_verify_logits(later, np.load(images, mmap_mode="r"), Path(job["dir"]))}
        out["verify_seconds"] = time.perf_counter() - t0
        out["verify_early"] = {"models": sorted(handover.early_logits), "seconds": handover.early_seconds}
    out["handover_wait_seconds"] = handover.waited
    return out


def _verify_logits(models: dict[str, list[str]], images: Any, job_dir: Path) -> dict[str, str]:
    """Each model's logits on the held-out images, through the one artifact runner, saved as .npy.

    Run here, on this process's core, when the conversions are done: the parent is then still busy with
    the ONNX INT8 model, so these checks' runs cost the export no time; it compares them with PyTorch.
    """
    import numpy as np

    from ghostnet_edge.runtime.backends import run_artifact
    from ghostnet_edge.utils.native_stderr import quiet_native_stderr

    out = {}
    for key, (path, runtime) in models.items():
        if not Path(path).is_file():
            continue
        with quiet_native_stderr(enabled=not os.environ.get("GHOSTEDGE_VERBOSE")):
            logits = run_artifact(path, images, 1, runtime)
        file = job_dir / f"logits-{key}.npy"
        np.save(file, logits)
        out[key] = str(file)
    return out


def child_main() -> int:
    """Import TensorFlow, then convert jobs until told to stop or a job fails (see the module docstring)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    install_import_hooks()  # TensorFlow without Keras and its unused namespaces (export/tflite/tf_import.py)
    target = int(os.environ.get("GHOSTEDGE_CONVERTER_NICENESS", CONVERTER_NICENESS))
    during_import = min(IMPORT_NICENESS, target)
    with contextlib.suppress(OSError, ValueError):
        os.nice(during_import)
    import_error: BaseException | None = None
    try:
        from ghostnet_edge.utils.native_stderr import quiet_framework_import

        with quiet_framework_import("tensorflow"):
            errors.require("tensorflow", "tensorflow", "the TFLite export")
    except BaseException as exc:  # noqa: BLE001 - reported with the first job
        import_error = exc
    # The held-out checks of the ONNX model run here too (_verify_logits); importing their runtime now
    # uses the time before the first job's ONNX file exists.
    with contextlib.suppress(ImportError):
        import onnxruntime  # noqa: F401
    if import_error is None:  # and so is tf.nn, which the translation reads first (tf_import.py)
        load_translation_namespaces()
    with contextlib.suppress(OSError, ValueError):
        os.nice(target - during_import)
    while True:
        job = _read_message()
        if job is None or job.get("stop"):
            return 0
        job_dir = Path(job["dir"])
        # How long the job's message waited for this process to finish importing (both clocks are the
        # machine's wall clock): the export's timing report shows it beside the conversion stages.
        import_wait = max(0.0, time.time() - float(job.get("sent", time.time())))
        try:
            if import_error is not None:
                raise import_error
            _answer(job_dir, {"ok": True, "result": {**_convert(job), "import_wait_seconds": import_wait}})
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the parent as an answer
            _answer(job_dir, {"ok": False, "error": _error_dict(exc)})
            return 0


# ---- the parent -----------------------------------------------------------------------------------------------


class TfliteWorker:
    """Handle on one converter process: ``start``, then per export ``submit``, ``hand_over``, ``result``."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.home = Path(tempfile.mkdtemp(prefix="ghostedge-tflite-"))
        self.job_dir: Path | None = None
        self._wants_handover = False
        self._log: Any = None

    def start(self) -> TfliteWorker:
        from ghostnet_edge.utils.paths import module_argv, package_env

        env = package_env()
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        self._log = open(self.home / "worker.log", "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(module_argv("ghostnet_edge.export.tflite.worker"),
                                     stdin=subprocess.PIPE, stdout=self._log, stderr=self._log, env=env,
                                     text=True)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _send(self, msg: dict[str, Any]) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass  # the child is gone; result() says why

    def submit(self, onnx: Path, fp32: Path | None, int8: Path | None, io_dtype: str, per_channel: bool,
               labels: list[str], preprocessing: dict[str, Any], hard_swish: str = "builtin",
               use_cache: bool = False, verify: dict[str, tuple[Path, str]] | None = None) -> None:
        """Start a job: FP32 at once; INT8 (``int8`` given) and the runs of the ``verify`` models (key ->
        (path, runtime)) once :meth:`hand_over` is called."""
        self.job_dir = Path(tempfile.mkdtemp(prefix="job-", dir=self.home))
        self._wants_handover = int8 is not None or bool(verify)
        self._send({"dir": str(self.job_dir), "onnx": str(onnx), "fp32": str(fp32) if fp32 else None,
                    "int8": str(int8) if int8 else None, "io_dtype": io_dtype, "per_channel": per_channel,
                    "labels": labels, "preprocessing": preprocessing, "hard_swish": hard_swish,
                    "use_cache": use_cache, "sent": time.time(),
                    "verify": {k: [str(p), rt] for k, (p, rt) in verify.items()} if verify else None})

    def idle(self) -> bool:
        """The child has nothing to do until the parent answers: its job is done, or it waits for
        :meth:`hand_over`."""
        if self.job_dir is None:
            return True
        return (self.job_dir / RESULT).is_file() or (self._wants_handover and (self.job_dir / WAITING).is_file())

    def send_held_out(self, images: Path) -> None:
        """The held-out images (an .npy), sent before :meth:`hand_over` so that the child can run the FP32
        models on them while it would otherwise wait for the calibration."""
        if self._wants_handover and self.job_dir is not None:
            self._send({"held_out": str(images)})

    def hand_over(self, ranges: dict[str, tuple[float, float]] | None, error: str | None = None,
                  calib_file: Path | None = None, calib_sha256: str | None = None, report_count: int = 0,
                  verify_images: Path | None = None) -> None:
        """The second message of a job (see the module docstring): the calibration's ranges (None without
        INT8), ``calib_file`` (an .npy of the NCHW calibration tensors) and ``calib_sha256`` (their
        :func:`~ghostnet_edge.utils.hashing.array_digest`, when known), ``report_count`` (the INT8
        per-layer report runs on the first that many held-out images; 0: no report) and ``verify_images``
        (an .npy of the held-out images the ``verify`` models run on); or ``error``, why none of it
        comes."""
        if not self._wants_handover or self.job_dir is None:
            return
        self._wants_handover = False
        if error is not None:
            self._send({"error": error})
            return
        path = None
        if ranges is not None:
            path = self.job_dir / "ranges.json"
            path.write_text(json.dumps({k: [lo, hi] for k, (lo, hi) in ranges.items()}))
        self._send({"ranges": str(path) if path else None, "calib": str(calib_file) if calib_file else None,
                    "calib_sha256": calib_sha256, "report_count": int(report_count),
                    "verify_images": str(verify_images) if verify_images else None})

    def result(self) -> dict[str, Any]:
        """The job's TfliteResult as a dict; its error re-raised as the same kind of GhostEdgeError."""
        assert self.proc is not None and self.job_dir is not None
        answer = self.job_dir / RESULT
        while not answer.is_file():
            code = self.proc.poll()
            if code is not None and not answer.is_file():
                log = self.home / "worker.log"
                tail = log.read_bytes()[-600:].decode(errors="replace").strip() if log.is_file() else ""
                raise errors.ExportError(f"the TFLite converter process exited with code {code} without an answer"
                                         + (f"; its last output: {tail}" if tail else ""),
                                         "run again; if it repeats, run with --threads 1 to convert in-process")
            time.sleep(0.01)
        payload = json.loads(answer.read_text())
        if payload.get("ok") and payload["result"].get("verify_logits"):
            import numpy as np

            payload["result"]["verify_logits"] = {k: np.load(p, allow_pickle=False)
                                                  for k, p in payload["result"]["verify_logits"].items()}
        shutil.rmtree(self.job_dir, ignore_errors=True)
        self.job_dir = None
        if payload.get("ok"):
            return payload["result"]
        raise _rebuild(payload["error"])

    def close(self) -> None:
        """Stop the child (asking first, then killing) and remove its folder."""
        if self.proc is not None and self.proc.poll() is None:
            self._send({"stop": True})
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                with contextlib.suppress(Exception):
                    self.proc.wait(timeout=10)
        if self.proc is not None and self.proc.stdin is not None:
            with contextlib.suppress(OSError, ValueError):
                self.proc.stdin.close()
        if self._log is not None:
            self._log.close()
            self._log = None
        shutil.rmtree(self.home, ignore_errors=True)

    def kill(self) -> None:
        """Stop the child at once (an interrupted or failed export: it may be mid-conversion)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(Exception):
                self.proc.wait(timeout=10)
        self.close()


# One idle converter process is kept between the exports of a process; stopped at exit.
_IDLE: list[TfliteWorker] = []
_IDLE_LOCK = threading.Lock()


def acquire() -> TfliteWorker:
    """An idle converter process of this process (TensorFlow already imported), else a new one."""
    with _IDLE_LOCK:
        while _IDLE:
            w = _IDLE.pop()
            if w.alive():
                return w
            w.close()
    return TfliteWorker().start()


def release(worker: TfliteWorker, healthy: bool) -> None:
    """Keep ``worker`` for the next export when its job succeeded; stop it otherwise."""
    if not healthy or not worker.alive():
        worker.kill()
        return
    with _IDLE_LOCK:
        _IDLE.append(worker)


@atexit.register
def _stop_idle() -> None:
    """At exit the idle converter is killed, not asked to stop: its TensorFlow teardown would only
    delay the exit of the process that owns it, and it holds nothing to save."""
    with _IDLE_LOCK:
        while _IDLE:
            _IDLE.pop().kill()


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
    raise SystemExit(child_main())
