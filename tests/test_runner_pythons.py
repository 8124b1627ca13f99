"""The device runner on every Python a board may have (3.9-3.13), with each interpreter it may have.

For each Python found (pyenv's ``versions/3.X.*`` or ``python3.X`` on PATH) and each interpreter in
``venvs.RUNNER_PINS`` (ai-edge-litert + NumPy 2, tflite-runtime 2.14 + NumPy 1, onnxruntime), a small
venv is built once and cached outside the checkout (``$GHOSTEDGE_CACHE/runner-venvs``); the real
``device_runner.py`` then runs in it, copied with ``tflite_check.py`` into a folder of their own as on
a board, on tiny models exported once per session by the main environment. A Python that is absent,
or an interpreter without a wheel for that Python, skips with the reason. The first build of all 12
venvs takes about 2 minutes (a few hundred MB of wheels, 1.6 GB installed); reuse takes under a
millisecond each, and the whole module then about 15 s.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ghostnet_edge.runtime import device_runner as dr
from ghostnet_edge.runtime import protocol, venvs
from ghostnet_edge.runtime.tiny_models import build_tiny_models, reference_logits

pytestmark = pytest.mark.slow     # the first build of the venvs takes minutes; reuse is instant

COMBOS = [(minor, runtime) for minor in venvs.RUNNER_PYTHONS for runtime in venvs.RUNNER_PINS]
# What each interpreter runs: (model, tolerance against the NumPy reference).
MODELS = {
    "litert": [("tiny_fp32.tflite", 1e-4), ("tiny_int8.tflite", 0.08)],
    "tflite-runtime": [("tiny_fp32.tflite", 1e-4), ("tiny_int8.tflite", 0.08)],
    "onnxruntime": [("tiny_fp32.onnx", 1e-4), ("tiny_int8.onnx", 0.08)],
}
BUILT: dict[tuple[str, str], venvs.Venv | str] = {}     # per session: a venv or the reason it is skipped


def _say(config: pytest.Config, line: str) -> None:
    """One line on the terminal even under -q and output capture (what was installed, how long it took)."""
    reporter = config.pluginmanager.getplugin("terminalreporter")
    capture = config.pluginmanager.getplugin("capturemanager")
    if reporter is None:
        return
    if capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(line)
    else:
        reporter.write_line(line)


def _venv_for(request: pytest.FixtureRequest, minor: str, runtime: str) -> venvs.Venv:
    """The cached venv of (Python ``minor``, ``runtime``), built on first use; skips with the reason."""
    key = (minor, runtime)
    if key not in BUILT:
        python = venvs.find_python(minor)
        if python is None:
            BUILT[key] = f"python{minor} not found (no pyenv versions/{minor}.*, no python{minor} on PATH)"
        else:
            try:
                env = venvs.runner_venv(python, runtime)
            except venvs.ForbiddenPackageError:
                raise                               # the pins are wrong: a failure, not a skip
            except venvs.VenvError as exc:          # no wheel for this Python, offline, pip cannot install
                BUILT[key] = f"Python {python.version} + {runtime}: {exc.message}"
            else:
                BUILT[key] = env
                pins = ", ".join(f"{d} {v}" for d, v in sorted(env.installed.items()))
                how = f"built in {env.seconds:.1f} s" if env.built else f"reused in {env.seconds * 1e3:.2f} ms"
                _say(request.config, f"\n[runner venv] Python {env.python_version} {runtime}: {pins} ({how}; {env.path})")
    got = BUILT[key]
    if isinstance(got, str):
        pytest.skip(got)
    return got


@pytest.fixture(scope="session")
def board(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A board's folder: the runner and its verifier as copied files, the tiny models, an input batch."""
    folder = tmp_path_factory.mktemp("board")
    for name in ("device_runner.py", "tflite_check.py"):
        shutil.copy2(protocol.RUNNER_PATH.parent / name, folder / name)
    paths = build_tiny_models(tmp_path_factory.mktemp("models"))     # once, with the main environment
    x = np.random.default_rng(5).standard_normal((3, 3, 32, 32)).astype(np.float32)
    np.save(folder / "x.npy", x)
    data = paths["tiny_fp32.tflite"].read_bytes()
    (folder / "cut_half.tflite").write_bytes(data[: len(data) // 2])
    (folder / "cut_tail.tflite").write_bytes(data[:-8])
    onnx = paths["tiny_fp32.onnx"].read_bytes()
    (folder / "cut.onnx").write_bytes(onnx[: len(onnx) // 2])
    return {"runner": folder / "device_runner.py", "x": folder / "x.npy", "dir": folder,
            **{name: paths[name] for name in ("tiny_fp32.tflite", "tiny_int8.tflite", "tiny_fp32.onnx",
                                              "tiny_int8.onnx")}}


def run_runner(env: venvs.Venv, runner: Path, *args: str, timeout: float = 300) -> tuple[int, dict, str]:
    """The runner under the venv's Python, as a board runs it: ``python3 device_runner.py ...``."""
    done = subprocess.run([str(env.python), str(runner), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=runner.parent,
                          env=venvs.clean_env(TF_CPP_MIN_LOG_LEVEL="2", OMP_NUM_THREADS="1"))
    assert done.returncode >= 0, f"killed by signal {-done.returncode}: {done.stderr[-2000:]}"
    lines = done.stdout.strip().splitlines()
    assert lines, f"no JSON on stdout (exit {done.returncode}): {done.stderr[-2000:]}"
    return done.returncode, json.loads(lines[-1]), done.stderr


@pytest.mark.parametrize("minor,runtime", COMBOS, ids=[f"py{m}-{r}" for m, r in COMBOS])
def test_runner_times_real_models(request: pytest.FixtureRequest, board: dict[str, Path], tmp_path: Path,
                                  minor: str, runtime: str) -> None:
    env = _venv_for(request, minor, runtime)
    assert env.python_version.startswith(minor + ".")
    assert not any(venvs.normalize(d) in env.installed for d in venvs.RUNNER_FORBIDDEN), env.installed
    version = env.version(venvs.RUNNER_DISTS[runtime])
    assert version, env.installed
    if runtime == "litert":
        assert int(env.version("numpy").split(".")[0]) >= 2
    if runtime == "tflite-runtime":
        assert int(env.version("numpy").split(".")[0]) == 1

    # Reuse of the published venv is a symlink and one small JSON read.
    t0 = time.perf_counter()
    again = venvs.runner_venv(venvs.find_python(minor), runtime)
    assert time.perf_counter() - t0 < 0.5 and not again.built and again.path == env.path

    x = np.load(board["x"])
    ref = reference_logits(x)
    for name, tol in MODELS[runtime]:
        out, y = tmp_path / f"{name}.json", tmp_path / f"{name}.y.npy"
        rc, rec, err = run_runner(env, board["runner"], "--model", str(board[name]), "--runtime", runtime,
                                  "--threads", "1", "--warmup", "2", "--min-runs", "10", "--min-seconds", "0.05",
                                  "--inputs", str(board["x"]), "--save-outputs", str(y), "--json", str(out))
        assert rc == dr.EXIT_OK, (rec, err[-2000:])
        assert json.loads(out.read_text()) == rec
        assert rec["status"] == "ok" and rec["error"] is None
        assert rec["runtime"] == runtime and rec["runtime_version"] == version
        assert rec["python"] == env.python_version
        lat = rec["latencies_ms"]
        assert len(lat) >= 10 and all(v > 0 for v in lat) and rec["first_inference_ms"] > 0
        assert rec["load_ms"] > 0 and rec["warmup_runs"] == 2
        assert "GHOSTEDGE_INFO " in err
        logits = np.load(y)
        assert logits.shape == (3, 10) and np.abs(logits - ref).max() < tol, name
        assert (logits.argmax(1) == ref.argmax(1)).all(), name


@pytest.mark.parametrize("minor,runtime", COMBOS, ids=[f"py{m}-{r}" for m, r in COMBOS])
def test_runner_refuses_truncated_models(request: pytest.FixtureRequest, board: dict[str, Path],
                                         minor: str, runtime: str) -> None:
    env = _venv_for(request, minor, runtime)
    # onnxruntime's venv has no TFLite interpreter: the cut file is refused before one is looked for.
    tfl_runtime = "auto" if runtime == "onnxruntime" else runtime
    for cut in ("cut_half.tflite", "cut_tail.tflite"):
        rc, rec, err = run_runner(env, board["runner"], "--model", str(board["dir"] / cut), "--runtime", tfl_runtime)
        assert rc == dr.EXIT_MODEL, (cut, rec, err[-2000:])
        assert rec["status"] == "failed" and rec["kind"] == "model"
        assert "is not a complete TFLite model" in rec["error"] and rec["hint"]
    if runtime == "onnxruntime":
        rc, rec, err = run_runner(env, board["runner"], "--model", str(board["dir"] / "cut.onnx"))
        assert rc == dr.EXIT_MODEL and rec["status"] == "failed", (rec, err[-2000:])
        assert "onnxruntime cannot load" in rec["error"]


def test_runner_probe_on_each_python(request: pytest.FixtureRequest, board: dict[str, Path]) -> None:
    """``--probe`` names exactly the interpreter each venv holds (what the ssh target reads)."""
    probed = 0
    for minor, runtime in COMBOS:
        try:
            env = _venv_for(request, minor, runtime)
        except pytest.skip.Exception:
            continue
        done = subprocess.run([str(env.python), str(board["runner"]), "--probe"], capture_output=True, text=True,
                              timeout=120, env=venvs.clean_env())
        info = json.loads(done.stdout)
        assert info["python"] == env.python_version and info["numpy"] == env.version("numpy")
        assert {k for k, v in info["runtimes"].items() if v} == {runtime}
        assert info["runtimes"][runtime] == env.version(venvs.RUNNER_DISTS[runtime])
        probed += 1
    if not probed:
        pytest.skip("no runner venv could be built")


# ------------------------------------------------------------------- the cache itself (no network)


def _base() -> venvs.PythonInfo:
    return venvs.PythonInfo(Path(sys.executable), ".".join(map(str, sys.version_info[:3])))


def test_a_failed_build_is_never_published_or_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def broken(python: object, venv_python: Path, specs: object, find_links: object, what: str) -> None:
        calls.append(venv_python)
        (venv_python.parent.parent / "half-installed").write_text("x")
        raise venvs.VenvError(f"{what}: pip failed (simulated)")

    monkeypatch.setattr(venvs, "_pip_install", broken)
    with pytest.raises(venvs.VenvError, match="simulated"):
        venvs.ensure_venv(_base(), ["somepkg==1.0"], label="t", kind="k", root=tmp_path)
    assert calls and not [p for p in tmp_path.iterdir() if p.is_dir()]    # no venv, published or not

    # A build killed half-way (a folder with no manifest, never linked) is removed, not reused.
    key = venvs.venv_key(_base(), "t", [])
    stale = tmp_path / f".{key}.deadbeef"
    (stale / "bin").mkdir(parents=True)
    env = venvs.ensure_venv(_base(), [], label="t", kind="k", root=tmp_path)
    assert env.built and not stale.exists()
    assert env.path == tmp_path / key and env.path.is_symlink()
    assert env.manifest["complete"] is True and env.python.exists()

    # Reuse: well under a second, the same folder.
    t0 = time.perf_counter()
    again = venvs.ensure_venv(_base(), [], label="t", kind="k", root=tmp_path)
    assert not again.built and time.perf_counter() - t0 < 0.05 and again.path.resolve() == env.path.resolve()

    # A published venv whose manifest is gone (damaged by hand) is rebuilt, and the old folder removed.
    old = env.path.resolve()
    (old / venvs.MANIFEST).unlink()
    third = venvs.ensure_venv(_base(), [], label="t", kind="k", root=tmp_path)
    assert third.built and third.path.resolve() != old and not old.exists()


def test_a_venv_that_pulled_in_tensorflow_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(venvs, "_installed", lambda python: {"numpy": "2.4.0", "tensorflow": "2.21.0"})
    with pytest.raises(venvs.ForbiddenPackageError, match="tensorflow got installed"):
        venvs.ensure_venv(_base(), [], label="t", kind="k", forbidden=venvs.RUNNER_FORBIDDEN, root=tmp_path)
    assert not [p for p in tmp_path.iterdir() if p.is_dir()]


def test_a_missing_wheel_is_remembered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_wheel(python: venvs.PythonInfo, spec: str, dest: Path) -> Path:
        raise venvs.NoWheelError(f"{spec} has no binary wheel for Python {python.version} (simulated)")

    monkeypatch.setattr(venvs, "check_wheel", no_wheel)
    for _ in range(2):
        with pytest.raises(venvs.NoWheelError, match="simulated"):
            venvs.ensure_venv(_base(), ["pkg==1.0"], label="t", kind="k", wheel_check="pkg==1.0", root=tmp_path)
    monkeypatch.setattr(venvs, "check_wheel", lambda *a: pytest.fail("asked the index again"))
    with pytest.raises(venvs.NoWheelError, match="simulated"):
        venvs.ensure_venv(_base(), ["pkg==1.0"], label="t", kind="k", wheel_check="pkg==1.0", root=tmp_path)


def test_an_absent_python_is_reported_as_absent(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    venvs.find_python.cache_clear()
    venvs.pyenv_root.cache_clear()
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    try:
        assert venvs.find_python("3.9") is None
    finally:
        venvs.find_python.cache_clear()
        venvs.pyenv_root.cache_clear()
