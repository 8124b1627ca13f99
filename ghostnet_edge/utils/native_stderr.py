"""Silence native libraries' writes to file descriptor 2, and always be able to undo it.

The TFLite converter writes absl warnings and a quantizer banner straight to fd 2, past Python's
``sys.stderr``. Silencing them means pointing fd 2 at a temporary file for the length of one
conversion, which may run in a thread beside others (with 2+ threads an export converts in a process of
its own, see ``export/tflite/worker.py``). While it does, the whole process's stderr goes there, so
whoever must tell the user something right now (Ctrl-C, SIGTERM, an error) first calls
:func:`restore_stderr`, which puts the real stderr back at once, whatever the worker is doing.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_saved_fd: int | None = None    # a duplicate of the real fd 2 while a redirect is active
_depth = 0


@contextlib.contextmanager
def quiet_native_stderr(enabled: bool = True) -> Iterator[None]:
    """Send fd 2 to a temporary file inside the block (nested and concurrent uses share one redirect)."""
    global _saved_fd, _depth
    if not enabled:
        yield
        return
    with tempfile.TemporaryFile() as sink:
        with _lock:
            sys.stderr.flush()
            if _depth == 0:
                _saved_fd = os.dup(2)
                os.dup2(sink.fileno(), 2)
            _depth += 1
        try:
            yield
        finally:
            with _lock:
                _depth = max(0, _depth - 1)
                if _depth == 0 and _saved_fd is not None:
                    os.dup2(_saved_fd, 2)
                    os.close(_saved_fd)
                    _saved_fd = None


def restore_stderr() -> bool:
    """Point fd 2 back at the real stderr now; True when a redirect was active.

    The redirect's own exit later finds nothing to undo. Safe to call from a signal handler's caller
    (it takes no lock that a signal could interrupt inside this thread).
    """
    global _saved_fd, _depth
    fd = _saved_fd
    if fd is None:
        return False
    _saved_fd, _depth = None, 0
    try:
        os.dup2(fd, 2)
        os.close(fd)
    except OSError:
        return False
    return True


# Frameworks that print to fd 2 while they load (TensorFlow: "Unable to register cuDNN factory",
# "failed call to cuInit", absl's "computation placer already registered"): none of it is actionable.
_NOISY_IMPORTS = ("tensorflow",)


@contextlib.contextmanager
def quiet_framework_import(module: str) -> Iterator[None]:
    """Import-time chatter of ``module`` kept off the terminal (shown with ``--verbose``).

    The first import is the only one that prints, so wrapping it once silences a whole run.
    """
    verbose = bool(os.environ.get("GHOSTEDGE_VERBOSE"))
    if module not in _NOISY_IMPORTS or module in sys.modules or verbose:
        yield
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")   # C++ INFO/WARNING/ERROR logs of TensorFlow
    with quiet_native_stderr():
        yield
