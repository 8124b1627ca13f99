"""Write files and folders so that a crash never leaves a half-written result.

Every artifact is written to a temporary name in the same folder and renamed into place: a rename
within one file system is atomic, so readers see either the old file or the complete new one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
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


# Names of the temporary folders of an output-folder swap. The creating process's id is part of the
# name so that a later run can tell a dead process's leftovers (SIGKILL, power loss) from a live run's.
_STAGING_TAG, _OLD_TAG = "staging", "old"
_INNER_PREFIX = ".ghostedge-"   # staging inside the output folder itself (mount points, the cwd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True   # exists, owned by another user
    return True


def _leftover_pid(name: str, prefix: str) -> int | None:
    """The pid in ``<prefix>staging-<pid>-...`` / ``<prefix>old-<pid>``, or None for other names."""
    for tag in (_STAGING_TAG, _OLD_TAG):
        head = f"{prefix}{tag}-"
        if name.startswith(head):
            digits = name[len(head):].split("-", 1)[0]
            return int(digits) if digits.isdigit() else None
    return None


def remove_stale_staging(final: Path | str) -> list[Path]:
    """Remove staging/old folders that a killed run of a swap into ``final`` left behind.

    Only folders whose creating process is gone are removed; a concurrent live run's are kept.
    """
    final = Path(final)
    places = [(final.parent, f".{final.name}.")]
    if final.is_dir():
        places.append((final, _INNER_PREFIX))
    removed = []
    for folder, prefix in places:
        try:
            entries = list(folder.iterdir())
        except OSError:
            continue
        for entry in entries:
            pid = _leftover_pid(entry.name, prefix)
            if pid is not None and pid != os.getpid() and not _pid_alive(pid) and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
    return removed


def _own_leftover(entry: Path, final: Path) -> bool:
    return _leftover_pid(entry.name, _INNER_PREFIX) is not None


def _user_entries(final: Path) -> list[Path]:
    """What the user has in ``final`` (our own staging leftovers do not count)."""
    return [e for e in final.iterdir() if not _own_leftover(e, final)]


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def is_mount_point(path: Path | str) -> bool:
    """``path`` is a mount point, bind mounts of a folder on the same file system included.

    ``os.path.ismount`` compares device numbers, so it misses a bind mount (``docker run -v``,
    ``mount --bind``); Linux lists every mount point in ``/proc/self/mountinfo`` (field 5, octal-escaped).
    """
    path = Path(path)
    if os.path.ismount(path):
        return True
    try:
        text = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return False
    target = str(path)
    for line in text.splitlines():
        fields = line.split(" ")
        if len(fields) > 4:
            point = fields[4].encode().decode("unicode_escape")   # "\040" -> " "
            if point == target:
                return True
    return False


def _cannot_rename(final: Path) -> bool:
    """A folder that must be updated in place: a mount point, or the cwd (or one of its parents)."""
    if is_mount_point(final):
        return True
    try:
        cwd = Path.cwd().resolve()
    except OSError:
        return False
    return cwd == final or final in cwd.parents


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def check_output_dir(final: Path | str, force: bool = False, inputs: Sequence[Path | str | None] = (),
                     needed_bytes: int = 0, option: str = "--out") -> Path:
    """Refuse, in seconds and before any work, an output folder a run could not complete into.

    Returns the destination with symbolic links resolved (a linked ``--out`` is written into its
    target, never replaced by a real folder). Refused: a file in the way; a non-empty folder without
    ``force``; a folder that contains one of ``inputs`` (the swap would delete them); a destination
    where nothing can be created (read-only, ``/proc``); less free space than ``needed_bytes``.
    Leftovers of killed earlier runs into the same folder are removed.
    """
    final = Path(final).expanduser().resolve()
    if final.exists() and not final.is_dir():
        raise GhostEdgeError(f"{option} {final} exists and is not a folder", f"choose another {option}")
    for item in inputs:
        if item is None:
            continue
        src = Path(item).expanduser().resolve()
        if not src.exists():   # a named data set ("digits"), not a path
            continue
        if src == final or final in src.parents:
            raise GhostEdgeError(f"{option} {final} contains the input {src}: writing there would replace it",
                                 f"choose an {option} folder that holds none of the inputs, e.g. a new folder "
                                 f"beside it ({final.parent / (final.name + '-export')})")
    if final.is_dir():
        remove_stale_staging(final)
        if _user_entries(final) and not force:
            raise GhostEdgeError(f"output folder {final} already exists and is not empty",
                                 f"pass --force to replace it, or choose another {option}")
    base = _nearest_existing(final)
    try:
        probe = Path(tempfile.mkdtemp(prefix=f"{_INNER_PREFIX}probe-", dir=base))
        probe.rmdir()
    except OSError as exc:
        raise GhostEdgeError(f"cannot write to {option} {final}: {exc.strerror or exc} (in {base})",
                             "choose a folder you can write to") from None
    if needed_bytes:
        free = shutil.disk_usage(base).free
        if free < needed_bytes:
            raise DiskFullError(base, needed_bytes, free)
    return final


class DiskFullError(GhostEdgeError):
    """Not enough free space for an output: says where, how much is needed and how much is free."""

    def __init__(self, folder: Path | str, needed: int | None, free: int | None) -> None:
        need = f"needs about {_mib(needed)}" if needed else "ran out of space"
        have = f", {_mib(free)} free" if free is not None else ""
        super().__init__(f"not enough free disk space in {folder}: the output {need}{have}; nothing was written",
                         "free some space, or choose an output folder on another disk")


def out_of_space(folder: Path, exc: BaseException, needed: int | None = None) -> DiskFullError | None:
    """The plain error for ``exc`` when a full disk under ``folder`` caused it, else None.

    Converters report a full disk in their own words (a protobuf DecodeError on a truncated temporary
    file, "Error parsing message") and may delete the partial file before the error arrives here. So
    besides ENOSPC anywhere in the exception's chain, a failure while the file system has less free
    space than the run needs (``needed``, checked free before the run started; at least 2 MiB) is
    attributed to the disk.
    """
    import errno

    try:
        free = shutil.disk_usage(_nearest_existing(Path(folder))).free
    except OSError:
        free = None
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
            return DiskFullError(folder, needed, free)
        cause = cause.__cause__ or cause.__context__
    if free is not None and free < max(needed or 0, 2**21):
        return DiskFullError(folder, needed, free)
    return None


@contextlib.contextmanager
def atomic_dir(final: Path | str, force: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder; on success it replaces ``final`` in one step.

    ``final`` existing and not empty is refused unless ``force``; even then the old folder is only
    moved aside after the new one is complete, so the user never sees a mix of old and new files.
    A folder that cannot be renamed (a mount point such as ``docker run -v host:/out``, the current
    directory) is updated in place instead: the staging folder is made inside it, and on success its
    old entries are moved aside and the new ones moved in by renames within that file system.
    Interrupted runs (Ctrl-C, SIGTERM as KeyboardInterrupt) remove their staging folder; a killed
    run's is removed by the next run into the same place.
    """
    final = Path(final).expanduser().resolve()
    if final.exists() and not final.is_dir():
        raise GhostEdgeError(f"{final} exists and is not a folder", "choose another --out")
    remove_stale_staging(final)
    if final.exists() and _user_entries(final) and not force:
        raise GhostEdgeError(f"output folder {final} already exists and is not empty",
                             "pass --force to replace it, or choose another --out")
    in_place = final.is_dir() and _cannot_rename(final)
    if not in_place:
        ensure_writable_dir(final.parent)
    pid = os.getpid()
    if in_place:
        staging = Path(tempfile.mkdtemp(prefix=f"{_INNER_PREFIX}{_STAGING_TAG}-{pid}-", dir=final))
    else:
        staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.{_STAGING_TAG}-{pid}-", dir=final.parent))
    try:
        yield staging
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp's 0700 would hide the export from other users
        if not in_place:
            try:
                _swap_folder(staging, final, pid)
            except OSError as exc:
                import errno

                if exc.errno not in (errno.EBUSY, errno.EXDEV, errno.EPERM, errno.EACCES) or not final.is_dir():
                    raise
                in_place = True   # a folder the kernel will not rename: fall back to swapping its contents
        if in_place:
            _swap_contents(staging, final, pid)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _swap_folder(staging: Path, final: Path, pid: int) -> None:
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.{_OLD_TAG}-{pid}"
        os.replace(final, old)
    try:
        os.replace(staging, final)
    except BaseException:
        if old is not None:
            os.replace(old, final)   # put the previous export back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _swap_contents(staging: Path, final: Path, pid: int) -> None:
    """Replace ``final``'s entries by ``staging``'s with renames inside ``final`` (same file system)."""
    if staging.parent != final:   # staged next to a folder that then refused the rename: move it inside
        inner = Path(tempfile.mkdtemp(prefix=f"{_INNER_PREFIX}{_STAGING_TAG}-{pid}-", dir=final))
        try:
            for entry in staging.iterdir():
                shutil.move(str(entry), str(inner / entry.name))
        except BaseException:
            shutil.rmtree(inner, ignore_errors=True)
            raise
        shutil.rmtree(staging, ignore_errors=True)
        staging = inner
    old = final / f"{_INNER_PREFIX}{_OLD_TAG}-{pid}"
    old.mkdir()
    for entry in _user_entries(final):
        os.replace(entry, old / entry.name)
    for entry in staging.iterdir():
        os.replace(entry, final / entry.name)
    staging.rmdir()
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def file_lock(path: Path | str) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed) while building a shared cache.

    Two processes filling the same cache (parallel test runs, distributed ranks) then do the work
    once: the second waits, then finds the finished result. ``filelock`` uses ``flock`` on Linux.
    """
    from filelock import FileLock

    path = Path(path)
    ensure_writable_dir(path.parent)
    with FileLock(str(path)):
        yield


def sha256_file(path: Path | str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
