"""Small cached virtual environments on other Pythons: the device runner's and onnx2tf's.

Two things must run under a Python other than the one ghostedge runs in:

* the device runner (``device_runner.py``), which boards run on their own Python (3.9 to 3.13) with
  whatever interpreter they have: the tests build one venv per (Python, interpreter) in
  :data:`RUNNER_PINS` and run the real script in it;
* onnx2tf 2.x, the cross-check route (``ghostnet_edge.export.tflite.crosscheck``), which needs
  Python >= 3.12 and pins its whole stack exactly.

:func:`ensure_venv` makes such an environment once and reuses it. Each lives outside the checkout, in
``$GHOSTEDGE_CACHE`` (default ``~/.cache/ghostedge``) ``/<kind>/py<version>-<label>-<hash>``, where the
hash covers the Python (version and path) and the pins, so changing a pin builds a new one. A venv is
built in a hidden folder of its own under a lock (one builder per venv, across processes), checked,
given a manifest (``ghostedge-venv.json``: Python, pins, every installed version) and only then
published by atomically replacing the ``<name>`` symlink. A build that fails or is killed half-way is
therefore never seen; its folder is removed by the next build. Reuse reads one symlink and one small
JSON file (well under a millisecond).

Whether a binary wheel exists for a Python is asked with ``pip download --no-deps --only-binary=:all:``
before anything is built; a combination without one raises :class:`NoWheelError` (remembered in a
``<name>.nowheel`` file, so later sessions skip it without asking the index again; exact pins only).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ghostnet_edge.errors import GhostEdgeError
from ghostnet_edge.utils.atomic import file_lock
from ghostnet_edge.utils.paths import cache_home

# Bump when the layout or the build steps change: every venv is then rebuilt.
LAYOUT_VERSION = 1
MANIFEST = "ghostedge-venv.json"

# The Pythons a board may have, and what the device runner's tests install for each interpreter.
RUNNER_PYTHONS = ("3.9", "3.10", "3.11", "3.12", "3.13")
RUNNER_PINS: dict[str, tuple[str, ...]] = {
    # The first entry is the interpreter; its wheel is checked for before a venv is built.
    "litert": ("ai-edge-litert==2.3.0", "numpy>=2"),             # no cp39 wheel
    "tflite-runtime": ("tflite-runtime==2.14.0", "numpy<2"),     # wheels for cp38-cp311 only
    "onnxruntime": ("onnxruntime>=1.16", "numpy"),               # pip picks the newest with a wheel
}
# The distribution each runtime reports its version from (the runner's ``runtime_version``).
RUNNER_DISTS = {"litert": "ai-edge-litert", "tflite-runtime": "tflite-runtime", "onnxruntime": "onnxruntime"}
# A board has no TensorFlow: a runner venv that pulled it in would not test what boards run.
RUNNER_FORBIDDEN = ("tensorflow", "tensorflow-cpu", "tf-nightly", "tf-keras", "keras")

PIP_TIMEOUT_S = 1800
# pip's words for "the index could not be reached" (as opposed to "it has no such wheel").
_NETWORK_ERRORS = ("NewConnectionError", "Failed to establish a new connection", "Max retries exceeded",
                   "Temporary failure in name resolution", "Name or service not known", "Network is unreachable",
                   "ConnectTimeout", "ReadTimeout", "Read timed out", "ProxyError", "SSLError",
                   "Connection refused", "connection broken")
_NO_MATCH = ("No matching distribution found", "Could not find a version that satisfies")


class VenvError(GhostEdgeError):
    """A venv could not be built (pip failed, the index is unreachable, a forbidden package came in)."""


class OfflineError(VenvError):
    """The package index could not be reached, so nothing can be said about wheels."""


class NoWheelError(VenvError):
    """The package has no binary wheel for this Python: the combination cannot exist."""


class ForbiddenPackageError(VenvError):
    """The pins pulled in a distribution the venv must not hold (TensorFlow in a board's venv)."""


@dataclass(frozen=True)
class PythonInfo:
    executable: Path        # the real interpreter (not a pyenv shim)
    version: str            # "3.9.18"

    @property
    def minor(self) -> str:
        return ".".join(self.version.split(".")[:2])


@dataclass
class Venv:
    path: Path
    python: Path
    manifest: dict[str, Any] = field(repr=False)
    built: bool             # True when this call built it, False when a cached one was reused
    seconds: float          # what this call took (the build, or the look-up)

    @property
    def python_version(self) -> str:
        return str(self.manifest["python_version"])

    @property
    def installed(self) -> dict[str, str]:
        return dict(self.manifest["installed"])

    def version(self, dist: str) -> str | None:
        return self.manifest["installed"].get(normalize(dist))


def normalize(dist: str) -> str:
    """A distribution name as PEP 503 compares them (``ai_edge_litert`` == ``ai-edge-litert``)."""
    return re.sub(r"[-_.]+", "-", dist).lower()


def cache_root() -> Path:
    """``$GHOSTEDGE_CACHE`` or ``~/.cache/ghostedge`` (read at call time, so tests can redirect it)."""
    return cache_home()


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without what would leak its own Python into another one."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PYTHONNOUSERSITE")}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", PYTHONNOUSERSITE="1", **extra)
    return env


# ---------------------------------------------------------------------------------------- pythons


@functools.lru_cache(maxsize=1)
def pyenv_root() -> Path | None:
    """``$PYENV_ROOT``, else what ``pyenv root`` says, else ``~/.pyenv`` when it exists."""
    if os.environ.get("PYENV_ROOT"):
        return Path(os.environ["PYENV_ROOT"])
    exe = shutil.which("pyenv")
    if exe:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([exe, "root"], capture_output=True, text=True, timeout=30, check=True).stdout
            if out.strip():
                return Path(out.strip())
    home = Path.home() / ".pyenv"
    return home if home.is_dir() else None


def _ask(exe: str | Path) -> PythonInfo | None:
    """The real executable and version of ``exe``, or None when it does not run (a stale shim)."""
    code = "import platform, sys; print(sys.executable); print(platform.python_version())"
    try:
        done = subprocess.run([str(exe), "-I", "-c", code], capture_output=True, text=True, timeout=60,
                              env=clean_env())
    except (OSError, subprocess.SubprocessError):
        return None
    lines = done.stdout.split()
    if done.returncode != 0 or len(lines) != 2:
        return None
    return PythonInfo(Path(lines[0]), lines[1])


@functools.cache
def find_python(minor: str) -> PythonInfo | None:
    """Python ``minor`` ("3.9"): the newest pyenv ``versions/3.9.*``, else ``python3.9`` on PATH."""
    candidates: list[Path] = []
    root = pyenv_root()
    if root is not None and (root / "versions").is_dir():
        pattern = re.compile(rf"^{re.escape(minor)}\.(\d+)$")      # 3.13.0, not 3.13.0t or 3.13-dev
        found = [(int(m.group(1)), d) for d in (root / "versions").iterdir() if (m := pattern.match(d.name))]
        candidates += [d / "bin" / "python" for _, d in sorted(found, reverse=True)]
    on_path = shutil.which(f"python{minor}")
    if on_path:
        candidates.append(Path(on_path))
    for exe in candidates:
        if exe.exists():
            info = _ask(exe)
            if info is not None and info.minor == minor:
                return info
    return None


def find_python_at_least(minimum: tuple[int, int], newest: tuple[int, int] = (3, 13)) -> PythonInfo | None:
    """The oldest Python >= ``minimum`` (up to ``newest``) found by :func:`find_python`."""
    for minor in range(minimum[1], newest[1] + 1):
        info = find_python(f"{minimum[0]}.{minor}")
        if info is not None:
            return info
    return None


# ------------------------------------------------------------------------------------------- pip


def _tail(text: str, n: int = 12) -> str:
    lines = [ln for ln in text.strip().splitlines() if "is ignored: it is neither a file nor a directory" not in ln]
    return "\n".join(lines[-n:])


def _pip(python: PythonInfo, args: Sequence[str], what: str) -> str:
    """Run the base Python's own pip (its tags are the target's); returns stdout+stderr or raises."""
    cmd = [str(python.executable), "-m", "pip", *args]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, env=clean_env())
    except subprocess.TimeoutExpired as exc:
        raise VenvError(f"{what}: pip did not finish in {PIP_TIMEOUT_S} s", "check the network") from exc
    out = (done.stdout or "") + (done.stderr or "")
    if done.returncode != 0:
        if any(s in out for s in _NETWORK_ERRORS):
            raise OfflineError(f"{what}: the package index cannot be reached ({_tail(out, 1)})",
                               "connect to the network (PyPI) or use a pip mirror, then run again")
        raise VenvError(f"{what}: pip failed (exit status {done.returncode}):\n{_tail(out)}",
                        "see pip's message above")
    return out


def check_wheel(python: PythonInfo, spec: str, dest: Path) -> Path:
    """Download the binary wheel of ``spec`` for ``python`` into ``dest``; NoWheelError when there is none."""
    what = f"{spec} for Python {python.version}"
    try:
        _pip(python, ["download", "--no-deps", "--only-binary=:all:", "--no-input", "-q", "-d", str(dest), spec], what)
    except OfflineError:
        raise
    except VenvError as exc:
        if not any(s in exc.message for s in _NO_MATCH):
            raise
        seen = re.search(r"\(from versions: ([^)]*)\)", exc.message)
        raise NoWheelError(f"{spec} has no binary wheel for Python {python.version} on this platform "
                           f"(pip download --only-binary=:all: found {seen.group(1) if seen else 'none'})",
                           "use another Python for this combination") from exc
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise VenvError(f"{what}: pip download reported success but wrote no wheel into {dest}")
    return wheels[0]


def _installed(venv_python: Path) -> dict[str, str]:
    code = ("import importlib.metadata as m, json; "
            "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))")
    done = subprocess.run([str(venv_python), "-I", "-c", code], capture_output=True, text=True, timeout=120,
                          env=clean_env())
    if done.returncode != 0:
        raise VenvError(f"the new venv's Python {venv_python} does not run: {_tail(done.stderr, 3)}")
    return {normalize(k): v for k, v in json.loads(done.stdout).items() if k}


def _pip_install(python: PythonInfo, venv_python: Path, specs: Sequence[str], find_links: Path | None,
                 what: str) -> None:
    """Install ``specs`` (binary wheels only) into the venv with the base Python's pip (``--python``)."""
    args = ["--python", str(venv_python), "install", "--only-binary=:all:", "--no-input", "-q"]
    if find_links is not None:
        args += ["--find-links", str(find_links)]
    _pip(python, [*args, *specs], what)


# ------------------------------------------------------------------------------------------ venvs


def venv_key(python: PythonInfo, label: str, specs: Sequence[str]) -> str:
    """``py<version>-<label>-<hash>``; the hash covers the Python, the pins and the layout version."""
    recipe = {"layout": LAYOUT_VERSION, "python": python.version, "executable": str(python.executable),
              "specs": list(specs)}
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    return f"py{python.version}-{label}-{digest}"


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("complete") is True else None


def _published(link: Path) -> tuple[Path, dict[str, Any]] | None:
    """The venv behind ``link`` when it is a complete one whose Python still exists."""
    if not link.is_symlink():
        return None
    manifest = _read_manifest(link)
    python = link / "bin" / "python"
    if manifest is None or not python.exists():
        return None
    return python, manifest


def _nowheel(root: Path, key: str) -> str | None:
    with contextlib.suppress(OSError):
        return (root / f"{key}.nowheel").read_text().strip() or None
    return None


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _remove_leftovers(root: Path, key: str, keep: Path | None) -> None:
    """Build folders of ``key`` that are not published (we hold its lock: their builders are gone)."""
    for entry in root.glob(f".{key}.*"):
        if entry.is_symlink():
            entry.unlink()                          # a link that a killed publish left behind
        elif entry.is_dir() and (keep is None or entry.resolve() != keep):
            shutil.rmtree(entry, ignore_errors=True)


def _publish(root: Path, key: str, folder: Path) -> None:
    link = root / key
    tmp_link = root / f".{key}.link-{uuid.uuid4().hex[:8]}"
    os.symlink(folder.name, tmp_link)
    if link.exists() and not link.is_symlink():    # a real folder where the link belongs: not ours
        shutil.rmtree(link, ignore_errors=True)
    os.replace(tmp_link, link)


@contextlib.contextmanager
def _timed() -> Iterator[list[float]]:
    box = [time.perf_counter()]
    yield box
    box[0] = time.perf_counter() - box[0]


def ensure_venv(python: PythonInfo, specs: Sequence[str], *, label: str, kind: str,
                wheel_check: str | None = None, forbidden: Sequence[str] = (),
                root: Path | None = None) -> Venv:
    """The venv with ``specs`` installed on ``python``: reused when published, else built and published.

    ``wheel_check``: a spec whose binary wheel must exist for this Python (else :class:`NoWheelError`,
    remembered when the spec is an exact ``==`` pin). ``forbidden``: distributions that must not end up
    installed (a build that pulls one in fails). Raises :class:`VenvError` when pip fails and
    :class:`OfflineError` when the index cannot be reached.
    """
    t0 = time.perf_counter()
    root = Path(root) if root is not None else cache_root() / kind
    key = venv_key(python, label, specs)
    found = _published(root / key)
    if found is not None:
        return Venv(root / key, found[0], found[1], False, time.perf_counter() - t0)
    reason = _nowheel(root, key)
    if reason is not None:
        raise NoWheelError(reason, "use another Python for this combination")

    def build(folder: Path) -> dict[str, Any]:
        return _build(python, specs, folder, label, wheel_check, forbidden, t0)

    return _build_and_publish(root, key, t0, build, remember_nowheel=bool(wheel_check and "==" in wheel_check))


def _build_and_publish(root: Path, key: str, t0: float, build: Callable[[Path], dict[str, Any]],
                       remember_nowheel: bool = False) -> Venv:
    """Under the key's lock: reuse what another process published meanwhile, else ``build`` a venv in a
    fresh hidden folder (removed again if the build fails) and publish it as ``root/key``.

    ``remember_nowheel``: a :class:`NoWheelError` is written down, so the next call fails at once.
    """
    root.mkdir(parents=True, exist_ok=True)
    with file_lock(root / f".{key}.lock"):
        found = _published(root / key)          # another process may have built it while we waited
        if found is not None:
            return Venv(root / key, found[0], found[1], False, time.perf_counter() - t0)
        current = (root / key).resolve() if (root / key).is_symlink() else None
        _remove_leftovers(root, key, current)
        folder = root / f".{key}.{uuid.uuid4().hex[:8]}"
        try:
            manifest = build(folder)
        except NoWheelError as exc:
            shutil.rmtree(folder, ignore_errors=True)
            if remember_nowheel:
                _write_atomic(root / f"{key}.nowheel", exc.message + "\n")
            raise
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        _publish(root, key, folder)
        if current is not None and current != folder:
            shutil.rmtree(current, ignore_errors=True)
    return Venv(root / key, root / key / "bin" / "python", manifest, True, time.perf_counter() - t0)


def _build(python: PythonInfo, specs: Sequence[str], folder: Path, label: str, wheel_check: str | None,
           forbidden: Sequence[str], t0: float) -> dict[str, Any]:
    what = f"the {label} venv for Python {python.version}"
    wheels = folder / "ghostedge-wheels"
    wheel = None
    if wheel_check:
        wheels.mkdir(parents=True)
        wheel = check_wheel(python, wheel_check, wheels)
    venv_python = _make_venv(python, folder, what)
    if specs:
        _pip_install(python, venv_python, specs, wheels if wheel else None, what)
    shutil.rmtree(wheels, ignore_errors=True)
    installed = _installed(venv_python)
    bad = sorted(d for d in map(normalize, forbidden) if d in installed)
    if bad:
        raise ForbiddenPackageError(f"{what}: {', '.join(bad)} got installed, which this venv must not contain",
                        f"check the pins {list(specs)}")
    manifest = {
        "complete": True, "layout": LAYOUT_VERSION, "label": label, "specs": list(specs),
        "python": str(python.executable), "python_version": python.version,
        "wheel_checked": wheel.name if wheel else None, "installed": installed,
        "build_seconds": round(time.perf_counter() - t0, 1), "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    _write_atomic(folder / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def _make_venv(python: PythonInfo, folder: Path, what: str) -> Path:
    """An empty venv (no pip: the builders install with the host's pip) in ``folder``; its python."""
    done = subprocess.run([str(python.executable), "-m", "venv", "--without-pip", str(folder)],
                          capture_output=True, text=True, timeout=300, env=clean_env())
    if done.returncode != 0:
        raise VenvError(f"{what}: python -m venv failed: {_tail(done.stderr, 3)}",
                        "install the venv module for this Python (Debian: apt-get install python3-venv)")
    return folder / "bin" / "python"


# ------------------------------------------------------------------------------------ runner venvs


def runner_venv(python: PythonInfo, runtime: str, root: Path | None = None) -> Venv:
    """The venv in which the device runner runs ``runtime`` on ``python`` (see :data:`RUNNER_PINS`)."""
    specs = RUNNER_PINS[runtime]
    return ensure_venv(python, specs, label=runtime, kind="runner-venvs", wheel_check=specs[0],
                       forbidden=RUNNER_FORBIDDEN, root=root)


# ------------------------------------------------------------------------------- venvs with torch

# A tool venv that needs torch gets this CPU wheel from this folder, never a torch from the index
# (pip would otherwise fetch a CUDA build: several GB).
TORCH_CPU_PIN = "torch==2.13.0+cpu"
TORCH_WHEELS = Path("/opt/wheels")


def torch_tool_venv(python: PythonInfo, specs: Sequence[str], *, label: str, torch_pin: str = TORCH_CPU_PIN,
                    find_links: Path = TORCH_WHEELS, kind: str = "tool-venvs", root: Path | None = None) -> Venv:
    """A venv with exactly ``torch_pin`` (a local CPU wheel in ``find_links``) and then ``specs`` on top.

    torch goes in first, alone (with its own dependencies from the index); ``specs`` follow. Both steps
    pass ``find_links`` and a constraints file pinning ``torch_pin``: the index has no ``+cpu`` build, so
    only the local wheel fits and no dependency can bring in another torch (a CUDA one: several GB).
    Cached, locked and published atomically like :func:`ensure_venv` (the key covers the torch pin).
    """
    t0 = time.perf_counter()
    root = Path(root) if root is not None else cache_root() / kind
    key = venv_key(python, label, [torch_pin, *specs])
    found = _published(root / key)
    if found is not None:
        return Venv(root / key, found[0], found[1], False, time.perf_counter() - t0)
    what = f"the {label} venv for Python {python.version}"

    def build(folder: Path) -> dict[str, Any]:
        venv_python = _make_venv(python, folder, what)
        base = ["--python", str(venv_python), "install", "--only-binary=:all:", "--no-input", "-q",
                "--find-links", str(find_links)]
        constraints = folder / "ghostedge-constraints.txt"
        constraints.write_text(torch_pin + "\n")
        base += ["--constraint", str(constraints)]
        _pip(python, [*base, torch_pin], f"{what} ({torch_pin} from {find_links})")
        _pip(python, [*base, *specs], what)
        installed = _installed(venv_python)
        want = torch_pin.split("==", 1)[1]
        if installed.get("torch") != want:
            raise VenvError(f"{what}: torch {installed.get('torch')} got installed instead of {want}",
                            f"check the pins {list(specs)}")
        manifest = {
            "complete": True, "layout": LAYOUT_VERSION, "label": label, "specs": [torch_pin, *specs],
            "python": str(python.executable), "python_version": python.version, "wheel_checked": None,
            "installed": installed, "build_seconds": round(time.perf_counter() - t0, 1),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        _write_atomic(folder / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        return manifest

    return _build_and_publish(root, key, t0, build)
