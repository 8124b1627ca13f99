"""Write files and folders so that a crash never leaves a half-written result.

Every artifact is written to a temporary name in the same folder and renamed into place: a rename
within one file system is atomic, so readers see either the old file or the complete new one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ghostnet_edge.errors import GhostEdgeError


def ensure_writable_dir(path: Path) -> Path:
    """Create ``path`` (and parents) or raise a clear error when that is not possible."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GhostEdgeError(f"cannot create output folder {path}: {exc.strerror}",
                             "choose a folder you can write to") from exc
    if not os.access(path, os.W_OK):
        raise GhostEdgeError(f"output folder {path} is not writable", "choose a folder you can write to")
    return path


@contextlib.contextmanager
def atomic_path(final: Path | str, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; on success it is renamed to ``final``.

    On any exception the temporary file is removed and ``final`` is left untouched.
    """
    final = Path(final)
    ensure_writable_dir(final.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=suffix or ".tmp", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 files; give the artifact the mode a plain open() would (0666 & ~umask).
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(final: Path | str, data: bytes) -> Path:
    with atomic_path(final) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(final)


def atomic_write_text(final: Path | str, text: str) -> Path:
    return atomic_write_bytes(final, text.encode("utf-8"))


def atomic_write_json(final: Path | str, obj: Any) -> Path:
    return atomic_write_text(final, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


@contextlib.contextmanager
def atomic_dir(final: Path | str, force: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder; on success it replaces ``final`` in one step.

    ``final`` existing and not empty is refused unless ``force``; even then the old folder is only
    moved aside after the new one is complete, so the user never sees a mix of old and new files.
    """
    final = Path(final)
    if final.exists() and not final.is_dir():
        raise GhostEdgeError(f"{final} exists and is not a folder", "choose another --out")
    if final.exists() and any(final.iterdir()) and not force:
        raise GhostEdgeError(f"output folder {final} already exists and is not empty",
                             "pass --force to replace it, or choose another --out")
    ensure_writable_dir(final.parent)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.staging-", dir=final.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    os.chmod(staging, 0o777 & ~_umask())  # mkdtemp's 0700 would hide the export from other users
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        os.replace(final, old)
    os.replace(staging, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def file_lock(path: Path | str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed) while building a shared cache.

    Two processes filling the same cache (parallel test runs, distributed ranks) then do the work
    once: the second waits, then finds the finished result.
    """
    path = Path(path)
    ensure_writable_dir(path.parent)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def sha256_file(path: Path | str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
