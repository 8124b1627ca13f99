"""Errors a user can act on.

Every failure caused by input (a bad checkpoint, an empty folder, a missing runtime) is raised as a
:class:`GhostEdgeError`. The CLI prints its message and hint on one line each and exits non-zero;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class GhostEdgeError(Exception):
    """A problem with the user's input or environment, with what to do about it."""

    exit_code: int = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


def first_line(exc: BaseException) -> str:
    """The first line of an exception's text (converters raise pages of log), or its type's name."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class CheckpointError(GhostEdgeError):
    """Missing, corrupt or mismatched checkpoint."""


class DataError(GhostEdgeError):
    """Missing or empty data folder, unreadable image, class names that do not match."""


class BadImageError(DataError):
    """One image file that cannot be decoded."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(
            f"cannot read image {path}: {reason}",
            "remove or replace the file, or pass --skip-bad-images to count and skip such files",
        )
        self.path = path
        self.reason = reason


class ModelError(GhostEdgeError):
    """Unknown model name, bad width, input size the network cannot take."""


class ExportError(GhostEdgeError):
    """A conversion failed or an artifact failed its check against PyTorch."""


class MissingDependencyError(GhostEdgeError):
    """An optional converter or runtime is not installed."""

    def __init__(self, module: str, package: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the Python package '{package}' (module '{module}'), which is not installed",
            f"install it with: pip install '{package}'  (or: pip install -e '.[all]')",
        )
        self.module = module
        self.package = package


class TargetError(GhostEdgeError):
    """A benchmark target that cannot be reached or that dropped off mid-run."""


def require(module: str, package: str | None = None, purpose: str = "this command"):
    """Import ``module`` or raise :class:`MissingDependencyError` naming the pip package."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised through tests with monkeypatch
        raise MissingDependencyError(module, package or module, purpose) from exc
