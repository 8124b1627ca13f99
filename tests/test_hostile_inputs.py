"""Hostile files and interrupted exports: each case once broke a promise of the README
("one plain error line, a hint, non-zero exit, no half-written file, never delete an input").

Cases that need root (bind mounts, tmpfs) skip with the reason where they cannot run.
"""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ghostnet_edge.data.datasets import CIFAR10_CLASSES
from ghostnet_edge.errors import CheckpointError, DataError, GhostEdgeError
from ghostnet_edge.export.pipeline import ExportConfig, export_artifacts
from ghostnet_edge.utils.atomic import (
    DiskFullError,
    atomic_dir,
    check_output_dir,
    is_mount_point,
    remove_stale_staging,
)

MODEL = "ghostnet_cifar_050"
CLASSES = list(CIFAR10_CLASSES)   # the data stage's own list
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _private_cache(private_cache: Path) -> None:
    """Every test here uses a cache of its own session (see conftest)."""


@pytest.fixture(scope="module")
def images(cifar_images) -> Path:
    return cifar_images(3)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ghostnet_edge.models import create_model, save_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(path, create_model(MODEL, seed=0), {"class_names": CLASSES, "seed": 0})
    return path


def _cfg(ckpt: Path | None, calib: Path, out: Path, **kw) -> ExportConfig:
    base = {"num_calib": 12, "num_verify": 8, "threads": 1, "min_agreement": 0.0, "formats": ("onnx",),
            "int8": False}
    base.update(kw)
    return ExportConfig(checkpoint=ckpt, calib=calib, out=out, **base)


def _leftovers(*folders: Path) -> list[str]:
    found = []
    for folder in folders:
        if folder.is_dir():
            found += [p.name for p in folder.iterdir() if ".staging-" in p.name or ".old-" in p.name
                      or p.name.startswith(".ghostedge-")]
    return sorted(found)


def _cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "ghostnet_edge", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout, stdin=subprocess.DEVNULL)


def _error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("error:")]


def _root_can(cmd: list[str]) -> bool:
    return os.geteuid() == 0 and shutil.which(cmd[0]) is not None


# ---- 0. training numerics do not depend on the CPU model ---------------------------------------------

def test_bf16_is_off_by_default_even_on_a_native_bf16_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from ghostnet_edge.train import speed

    monkeypatch.setattr(speed, "cpu_flags", lambda: frozenset({"avx512_bf16", "amx_bf16", "avx512f"}))
    assert speed.native_bf16()
    chosen = speed.resolve_speed(None, None, 2)
    assert chosen["bf16"] is False and chosen["channels_last"] is False
    assert speed.resolve_speed(None, True, 2)["bf16"] is True   # still there when asked for


# ---- 2. mount points and the current directory --------------------------------------------------------

def test_export_into_the_current_directory_updates_it_in_place(ckpt: Path, images: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    here = tmp_path / "here"
    here.mkdir()
    (here / "old.txt").write_text("previous export")
    monkeypatch.chdir(here)
    report = export_artifacts(_cfg(ckpt, images, Path("."), force=True))
    assert Path.cwd() == here and here.is_dir()                     # the shell's cwd still exists
    assert sorted(p.name for p in here.iterdir()) == sorted(report.files)
    assert not (here / "old.txt").exists() and _leftovers(here, tmp_path) == []


@pytest.mark.skipif(not _root_can(["mount"]), reason="bind mounts need root and mount(8)")
def test_export_into_a_mount_point(ckpt: Path, images: Path, tmp_path: Path) -> None:
    src, vol = tmp_path / "src", tmp_path / "vol"
    src.mkdir()
    vol.mkdir()
    if subprocess.run(["mount", "--bind", str(src), str(vol)], capture_output=True).returncode != 0:
        pytest.skip("mount --bind is not permitted in this container")
    try:
        assert is_mount_point(vol) and not os.path.ismount(vol)   # a same-disk bind mount
        first = export_artifacts(_cfg(ckpt, images, vol))
        assert (src / "model.onnx").is_file() and sorted(p.name for p in vol.iterdir()) == sorted(first.files)
        (vol / "stale.txt").write_text("x")
        export_artifacts(_cfg(ckpt, images, vol, force=True))
        assert not (vol / "stale.txt").exists() and (vol / "manifest.json").is_file()
        assert is_mount_point(vol) and _leftovers(vol, tmp_path) == []
    finally:
        subprocess.run(["umount", str(vol)], capture_output=True)


# ---- 3. an output folder that holds an input is refused -------------------------------------------------

def test_force_never_deletes_the_training_run(ckpt: Path, images: Path, tmp_path: Path) -> None:
    run = tmp_path / "runs" / "s"
    run.mkdir(parents=True)
    for name in ("best.pt", "last.pt", "metrics.jsonl"):
        (run / name).write_text(name)
    model = run / "model.pt"
    shutil.copy(ckpt, model)
    before = sorted(p.name for p in run.iterdir())
    with pytest.raises(GhostEdgeError, match="contains the input") as err:
        export_artifacts(_cfg(model, images, run, force=True))
    assert "\n" not in err.value.message
    assert sorted(p.name for p in run.iterdir()) == before and _leftovers(run, run.parent) == []
    with pytest.raises(GhostEdgeError, match="contains the input"):   # also the calibration folder's parent
        export_artifacts(_cfg(ckpt, images, images.parent, force=True))


# ---- 4. a full disk -----------------------------------------------------------------------------------

def test_too_little_space_is_refused_before_converting(ckpt: Path, images: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import collections

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10 * 2**20, 9 * 2**20, 2**20))
    out = tmp_path / "out"
    t0 = time.perf_counter()
    with pytest.raises(DiskFullError, match="not enough free disk space") as err:
        export_artifacts(_cfg(ckpt, images, out))
    assert time.perf_counter() - t0 < 30
    assert "MiB free" in err.value.message and "needs about" in err.value.message
    assert not out.exists() and _leftovers(tmp_path) == []


@pytest.mark.skipif(not _root_can(["mount"]), reason="a small tmpfs needs root and mount(8)")
@pytest.mark.parametrize("size_mib, estimate", [(5, True), (13, True), (17, True), (9, False), (12, False)])
def test_a_real_full_disk_gives_one_plain_message(size_mib: int, estimate: bool, ckpt: Path, images: Path,
                                                  tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a small tmpfs: refused up front (estimate) or, with the estimate switched off, when it fills up."""
    from ghostnet_edge.export import pipeline

    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(disk)],
                      capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs is not permitted in this container")
    try:
        if not estimate:
            monkeypatch.setattr(pipeline, "CHECK_SPACE_UP_FRONT", False)
        out = disk / "out"
        try:
            export_artifacts(_cfg(ckpt, images, out, formats=("onnx", "tflite"), int8=True))
        except DiskFullError as exc:
            assert str(disk) in exc.message and "\n" not in exc.message
        else:
            pytest.fail(f"a {size_mib} MiB disk cannot hold this export, yet it was reported done")
        assert not out.exists() and _leftovers(disk) == []
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


# ---- 5. SIGTERM and SIGKILL leave nothing behind -----------------------------------------------------

def test_stale_staging_of_dead_processes_is_removed(tmp_path: Path) -> None:
    final = tmp_path / "victim"
    final.mkdir()
    dead = 2**22 + 12345   # above the default pid_max: no live process has it
    stale = [tmp_path / f".victim.staging-{dead}-abc", tmp_path / f".victim.old-{dead}",
             final / f".ghostedge-staging-{dead}-x"]
    live = tmp_path / f".victim.staging-{os.getpid()}-mine"
    for p in (*stale, live):
        p.mkdir()
        (p / "model.onnx").write_bytes(b"x" * 100)
    removed = remove_stale_staging(final)
    assert sorted(removed) == sorted(stale) and live.is_dir()
    with atomic_dir(final, force=True) as staging:
        (staging / "a.txt").write_text("new")
    assert (final / "a.txt").read_text() == "new" and _leftovers(final) == []


@pytest.mark.parametrize("sig, code, word", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")])
def test_sigterm_and_ctrl_c_during_export_clean_up_and_say_so(sig: int, code: int, word: str, ckpt: Path,
                                                              images: Path, tmp_path: Path) -> None:
    out = tmp_path / "victim"
    out.mkdir()
    (out / "old.txt").write_text("previous export")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "ghostnet_edge", "export", str(ckpt), "--calib", str(images),
                             "--out", str(out), "--force", "--num-calib", "12", "--num-verify", "8",
                             "--threads", "2", "--min-agreement", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            stdin=subprocess.DEVNULL)
    def converting() -> bool:
        """The FP32 ONNX model is staged: the export is inside its conversions (several seconds more)."""
        return any((p / "model.onnx").is_file() for p in tmp_path.iterdir() if ".staging-" in p.name)

    deadline = time.time() + 240
    while time.time() < deadline and not converting() and proc.poll() is None:
        time.sleep(0.02)
    if proc.poll() is not None:
        pytest.fail(f"the export ended before it could be interrupted: {proc.stderr.read()[-500:]}")
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr[-800:]
    assert word in stderr and "Traceback" not in stderr
    assert (out / "old.txt").read_text() == "previous export"     # the old export is untouched
    assert _leftovers(tmp_path, out) == []


# ---- 6. a symlinked --out ---------------------------------------------------------------------------

def test_symlinked_out_is_written_into_its_target(ckpt: Path, images: Path, tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    (target / "old.txt").write_text("old")
    link = tmp_path / "linkout"
    link.symlink_to(target, target_is_directory=True)
    export_artifacts(_cfg(ckpt, images, link, force=True))
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert (target / "model.onnx").is_file() and not (target / "old.txt").exists()
    assert _leftovers(tmp_path, target) == []


# ---- 7. an unwritable destination ----------------------------------------------------------------------

def test_unwritable_destination_is_refused_before_conversion(ckpt: Path, images: Path) -> None:
    with pytest.raises(GhostEdgeError, match="cannot write to --out /proc/ghost"):
        check_output_dir("/proc/ghost")
    t0 = time.perf_counter()
    done = _cli("export", str(ckpt), "--calib", str(images), "--out", "/proc/ghost", "--no-int8")
    assert done.returncode == 2 and len(_error_lines(done.stderr)) == 1, done.stderr
    assert "/proc/ghost" in done.stderr and "Traceback" not in done.stderr
    assert time.perf_counter() - t0 < 60


# ---- 8. a pickle that runs a command -------------------------------------------------------------------

class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_code_running_pickle_is_refused_as_such(tmp_path: Path) -> None:
    from ghostnet_edge.models.checkpoint import load_checkpoint

    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": _Evil(marker)}, path)
    legacy = tmp_path / "evil_legacy.pth"
    legacy.write_bytes(pickle.dumps({"state_dict": _Evil(marker)}, protocol=2))
    for p in (path, legacy):
        try:
            load_checkpoint(p)
        except CheckpointError as exc:
            assert "tries to run code" in exc.message, exc.message
            assert "system" in exc.message and "truncated" not in exc.message
        else:
            pytest.fail(f"{p} was loaded")
    assert not marker.exists()


# ---- 9. Ctrl-C always prints its line (see also the export test above) -----------------------------------

def test_main_prints_the_interrupt_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from ghostnet_edge import cli

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_register_all", lambda: None)
    monkeypatch.setattr(cli, "_install_signal_handlers", lambda: None)

    @cli.app.command("__boom", hidden=True)
    def _boom() -> None:
        boom()

    try:
        assert cli.main(["__boom"]) == 130
    finally:
        cli.app.registered_commands[:] = [c for c in cli.app.registered_commands if c.name != "__boom"]
    assert "interrupted; finished work is kept" in capsys.readouterr().err


def test_stderr_redirect_can_always_be_undone() -> None:
    from ghostnet_edge.utils.native_stderr import quiet_native_stderr, restore_stderr

    real = os.fstat(2)
    with quiet_native_stderr():
        assert os.fstat(2).st_ino != real.st_ino
        assert restore_stderr()
        assert os.fstat(2).st_ino == real.st_ino
    assert os.fstat(2).st_ino == real.st_ino and not restore_stderr()
    with quiet_native_stderr():   # still works after a forced restore
        assert os.fstat(2).st_ino != real.st_ino
    assert os.fstat(2).st_ino == real.st_ino


# ---- 10. the smaller ones -------------------------------------------------------------------------------

def test_failure_hint_points_at_nothing_unwritten() -> None:
    from ghostnet_edge.export import steps

    for precision in ("fp32", "int8"):
        assert "quant_report" not in steps.fail_hint(precision, "onnx")
    rows = [{"tensor": "blocks.3/se/Mul_1", "node": "n", "op": "Mul", "position": 1, "sqnr_db": 9.5,
             "qdq_sqnr_db": None, "drop_db": 14.0}]
    assert "blocks.3/se/Mul_1" in steps.worst_layers_text({"layers": rows})
    assert steps.worst_layers_text(None) == ""


def test_class_count_mismatch_is_named_as_such(tmp_path: Path) -> None:
    from ghostnet_edge.models import create_model
    from ghostnet_edge.models.checkpoint import load_model

    sd = create_model(MODEL, num_classes=5, seed=0).state_dict()
    path = tmp_path / "five.pt"
    torch.save({"state_dict": sd, "meta": {"model": MODEL}}, path)
    with pytest.raises(CheckpointError) as err:
        load_model(path, num_classes=10)
    assert "5 classes" in err.value.hint and "different version" not in err.value.hint


def test_width_mismatch_is_one_line(tmp_path: Path) -> None:
    from ghostnet_edge.models import create_model, save_checkpoint
    from ghostnet_edge.models.checkpoint import load_model

    path = tmp_path / "half.pt"
    save_checkpoint(path, create_model(MODEL, seed=0), {"seed": 0})
    with pytest.raises(CheckpointError) as err:
        load_model(path, arch="ghostnet_cifar_100")
    assert "\n" not in err.value.message and "mismatched keys (first:" in err.value.message


def test_nan_weights_are_blamed_on_the_checkpoint(tmp_path: Path, images: Path) -> None:
    from ghostnet_edge.models import create_model, save_checkpoint

    model = create_model(MODEL, seed=0)
    with torch.no_grad():
        next(model.parameters())[0].fill_(float("nan"))
    path = tmp_path / "nan.pt"
    save_checkpoint(path, model, {"class_names": CLASSES})
    with pytest.raises(CheckpointError, match="NaN or infinite values .* diverged"):
        export_artifacts(_cfg(path, images, tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_bad_images_of_both_draws_are_reported_at_once(ckpt: Path, images: Path, tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    shutil.copytree(images, folder)
    files = sorted(folder.rglob("*.jpg"))
    for f in files[::2]:
        f.write_bytes(b"not a jpeg")
    with pytest.raises(DataError) as err:
        export_artifacts(_cfg(ckpt, folder, tmp_path / "out"))
    assert err.value.message.count("cannot be read") == 2   # verification and calibration draws together


def test_resume_on_an_empty_folder_says_so(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from ghostnet_edge.train import TrainConfig, train

    cfg = TrainConfig(model=MODEL, data="digits", epochs=1, batch_size=16, limit_train=32, limit_val=20,
                      threads=1, out=tmp_path / "fresh", resume=True, progress=False)
    train(cfg)
    assert "holds no earlier run" in capsys.readouterr().err


def test_unknown_model_error_comes_without_the_random_weights_warning(images: Path, tmp_path: Path) -> None:
    done = _cli("export", "--model", "nosuchnet_100", "--calib", str(images), "--out", str(tmp_path / "o"))
    assert done.returncode == 2 and len(_error_lines(done.stderr)) == 1, done.stderr
    assert "random weights" not in done.stderr
