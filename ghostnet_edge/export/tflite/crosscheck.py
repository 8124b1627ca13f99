"""The second TFLite route, onnx2tf, run offline in a tool venv of its own: a cross-check, not the product path.

onnx2tf 2.x needs Python >= 3.12 and pins its whole stack exactly (numpy 2.2.6, onnx 1.20.1,
onnxruntime 1.26.0, ai-edge-litert 2.1.2, onnxsim 0.6.5, sng4onnx 2.0.1, psutil 5.9.5, ...; the
``tensorflow`` extra adds tensorflow 2.21.0, tf-keras and keras), which cannot share an environment with
ghostedge's own. So it is never imported here: :func:`convert_with_onnx2tf` runs ``python -m onnx2tf`` in
a venv built once from :data:`ONNX2TF_PINS` on the first Python >= 3.12 found (pyenv or PATH) and cached
outside the checkout in ``$GHOSTEDGE_CACHE/tool-venvs`` (built and published atomically, see
``ghostnet_edge.runtime.venvs``). Building it needs the network once (~650 MB installed, about 40 s; the
``tf_converter`` venv ~2.6 GB, about 90 s); converting does not.

What onnx2tf 2.6 does that matters here, and how it is handled:

* Backend. Its default, ``flatbuffer_direct``, writes ``*_float32.tflite`` straight from the ONNX graph
  without TensorFlow: it is independent of TensorFlow's converter (which our own translator uses), so it
  is the default cross-check. ``backend="tf_converter"`` (onnx2tf's legacy path: Keras model, SavedModel,
  then TFLiteConverter) needs the ``tensorflow`` extra and is what ``benchmarks/tflite_route.py --onnx2tf``
  uses, because it quantises onnx2tf's SavedModel.
* Downloads. 1.x fetched a sample-image .npy from GitHub during every conversion; 2.x has no download
  code and its own dummy inference feeds ones, so an FP32 conversion needs no sample data and ``seed`` no
  longer changes anything (it is kept so that callers need not change). Should a later onnx2tf try to
  reach the network anyway, the subprocess refuses every non-loopback connection and name look-up (and
  points proxies at a closed local port for its own subprocesses), and the conversion fails with an
  ExportError naming the address instead of downloading or hanging.
* onnxsim. It still shells out to an ``onnxsim`` executable; our ONNX files are simplified by the ONNX
  stage already, so ``-nuo`` (not_use_onnxsim) is passed.
* It rewrites its input file in place (op names, via sng4onnx), so it converts a private copy.
* ``-osd`` (signature defs): it otherwise refuses ONNX node names that TF rejects (``/block/Conv``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from ghostnet_edge.errors import ExportError

ONNX2TF_VERSION = "2.6.9"
ONNX2TF_MIN_PYTHON = (3, 12)
# What each backend's tool venv installs (onnx2tf pins everything else exactly).
ONNX2TF_PINS: dict[str, tuple[str, ...]] = {
    "flatbuffer_direct": (f"onnx2tf=={ONNX2TF_VERSION}",),
    "tf_converter": (f"onnx2tf[tensorflow]=={ONNX2TF_VERSION}",),
}
BACKEND = "flatbuffer_direct"
TIMEOUT_S = 1800
NETWORK_MARK = "GHOSTEDGE_NETWORK_ATTEMPT"
_DEAD_PROXY = "http://127.0.0.1:9"   # the discard port: nothing listens, so a proxied request fails at once

# Run a module (argv[1]) with its remaining arguments, refusing any connection that leaves the machine.
_OFFLINE_RUNNER = r"""
import ipaddress, runpy, socket, sys

MARK = sys.argv[1]

def _local(host):
    if host in (None, "", "localhost"):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False

def _refuse(what, where):
    sys.stderr.write("%s %s %r\n" % (MARK, what, where))
    sys.stderr.flush()
    raise OSError("ghostedge: %s to %r refused: the onnx2tf cross-check runs offline" % (what, where))

_connect, _connect_ex, _getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

def connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _local(address[0]):
        _refuse("connection", address)
    return _connect(self, address)

def connect_ex(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _local(address[0]):
        _refuse("connection", address)
    return _connect_ex(self, address)

def _numeric(host):
    try:
        ipaddress.ip_address(str(host).split("%")[0])
    except ValueError:
        return False
    return True

def getaddrinfo(host, *args, **kwargs):
    name = host.decode() if isinstance(host, bytes) else host
    if not _local(name) and not _numeric(name):    # a numeric address needs no look-up; connect() decides
        _refuse("name look-up", host)
    return _getaddrinfo(host, *args, **kwargs)

socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo
module = sys.argv[2]
sys.argv = [module] + sys.argv[3:]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


class ToolUnavailableError(ExportError):
    """onnx2tf's tool venv cannot exist here: no Python >= 3.12, or it cannot be built (e.g. offline)."""


def onnx2tf_venv(backend: str = BACKEND):
    """The cached tool venv for ``backend`` (built on first use); ToolUnavailableError when impossible."""
    from ghostnet_edge.runtime import venvs

    if backend not in ONNX2TF_PINS:
        raise ExportError(f"unknown onnx2tf backend {backend!r}", f"use one of: {', '.join(ONNX2TF_PINS)}")
    python = venvs.find_python_at_least(ONNX2TF_MIN_PYTHON)
    if python is None:
        want = ".".join(map(str, ONNX2TF_MIN_PYTHON))
        raise ToolUnavailableError(f"onnx2tf {ONNX2TF_VERSION} needs Python >= {want}, and none was found "
                                   f"(pyenv versions/3.1x.*, python3.12/python3.13 on PATH)",
                                   f"install one, e.g.: pyenv install {want}")
    specs = ONNX2TF_PINS[backend]
    try:
        return venvs.ensure_venv(python, specs, label=f"onnx2tf-{backend}", kind="tool-venvs", wheel_check=specs[0])
    except venvs.VenvError as exc:
        raise ToolUnavailableError(f"cannot build onnx2tf's tool venv on Python {python.version}: {exc.message}",
                                   exc.hint or "check the network (PyPI) and run again") from exc


def _plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def run_offline(python: Path | str, module: str, args: list[str], cwd: Path, log: Path,
                timeout: float = TIMEOUT_S) -> int:
    """``python -m module args`` with the network refused; its output goes to ``log``. Returns the exit status.

    Raises ExportError when the module tried to reach the network (even if it caught the refusal).
    """
    from ghostnet_edge.runtime.venvs import clean_env

    env = clean_env(TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", NO_COLOR="1",
                    HTTP_PROXY=_DEAD_PROXY, HTTPS_PROXY=_DEAD_PROXY, ALL_PROXY=_DEAD_PROXY,
                    http_proxy=_DEAD_PROXY, https_proxy=_DEAD_PROXY, all_proxy=_DEAD_PROXY, NO_PROXY="", no_proxy="")
    cmd = [str(python), "-I", "-c", _OFFLINE_RUNNER, NETWORK_MARK, module, *args]
    try:
        with open(log, "w") as fh:
            done = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=cwd, env=env, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise ExportError(f"{module} did not finish in {timeout:.0f} s (log: {log})",
                          "this is the cross-check route only") from exc
    text = _plain(log.read_text(errors="replace"))
    attempts = [ln.split(NETWORK_MARK, 1)[1].strip() for ln in text.splitlines() if NETWORK_MARK in ln]
    if attempts:
        raise ExportError(f"{module} tried to reach the network ({attempts[0]}); the cross-check must run offline",
                          f"its log: {log}")
    return done.returncode


def convert_with_onnx2tf(onnx_path: Path | str, out_dir: Path | str, seed: int = 0, *,
                         backend: str = BACKEND) -> Path:
    """Convert ``onnx_path`` with onnx2tf (FP32) into ``out_dir``; returns the ``*_float32.tflite`` path.

    onnx2tf runs in its tool venv (built on first use, see :func:`onnx2tf_venv`). ``out_dir`` receives
    what onnx2tf writes (with ``tf_converter`` also the SavedModel) and its log, ``onnx2tf.log``. ``seed``
    has no effect with onnx2tf 2.x (it reads no sample data for FP32). ToolUnavailableError (an
    ExportError) when the venv cannot exist here; ExportError when the conversion fails.
    """
    del seed  # onnx2tf 2.x draws no sample images for an FP32 conversion; see the module docstring
    onnx_path, out_dir = Path(onnx_path), Path(out_dir)
    if not onnx_path.is_file():
        raise ExportError(f"ONNX file {onnx_path} does not exist", "export the model to ONNX first")
    env = onnx2tf_venv(backend)
    out_dir.mkdir(parents=True, exist_ok=True)
    log = out_dir / "onnx2tf.log"
    with tempfile.TemporaryDirectory(prefix=".onnx2tf-", dir=out_dir) as work:
        work = Path(work)
        src = work / onnx_path.name              # onnx2tf rewrites its input in place: give it a copy
        shutil.copyfile(onnx_path, src)
        staging = work / "out"
        rc = run_offline(env.python, "onnx2tf",
                         ["-i", str(src), "-o", str(staging), "-nuo", "-osd", "-tb", backend], work, log)
        tail = "\n".join(_plain(log.read_text(errors="replace")).strip().splitlines()[-8:])
        if rc != 0:
            raise ExportError(f"onnx2tf {ONNX2TF_VERSION} ({backend}) exited with status {rc} on {onnx_path.name}:\n"
                              f"{tail}", f"its log: {log}; this is the cross-check route only, "
                              "use convert_onnx_to_tflite")
        made = staging / f"{src.stem}_float32.tflite"
        if not made.is_file():
            raise ExportError(f"onnx2tf wrote no {made.name} into {out_dir}:\n{tail}",
                              f"its log: {log}; check the ONNX file")
        # Move the results in; the float32 model last, so that its presence means everything is there.
        for entry in sorted(staging.iterdir(), key=lambda p: p == made):
            target = out_dir / entry.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            entry.replace(target)
    return out_dir / made.name
