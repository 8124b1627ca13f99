"""The `ghostedge` command line: a thin typer layer.

Each stage registers its commands from its own module in this package (``models``, ``train``,
``export``, ``bench``, ``curve``). Those modules import nothing heavy at top level: torch, TensorFlow
and the runtimes are imported inside the command bodies, so ``ghostedge --help`` starts fast.
"""

from __future__ import annotations

import importlib
import os
import sys

import typer

app = typer.Typer(
    name="ghostedge",
    help="GhostNet from PyTorch to phones and ARM boards: build, train, export (ONNX/TFLite, FP32/INT8), "
    "measure and plot.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Modules that add their commands to `app`; each has `register(app)`.
_COMMAND_MODULES = ("models", "train", "export", "bench", "curve")


def _register_all() -> None:
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(f"ghostnet_edge.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"ghostnet_edge.cli.{name}":
                continue  # stage not built yet
            raise
        module.register(app)


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show full tracebacks on errors."),
) -> None:
    if verbose:
        os.environ["GHOSTEDGE_VERBOSE"] = "1"


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning GhostEdgeError into one plain message and exit code 2."""
    from ghostnet_edge.errors import GhostEdgeError

    _register_all()
    try:
        # Non-standalone click returns typer.Exit's code instead of raising it.
        result = app(args=argv, standalone_mode=False)
    except GhostEdgeError as exc:
        if os.environ.get("GHOSTEDGE_VERBOSE"):
            raise
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted; finished work is kept and a re-run resumes it", file=sys.stderr)
        return 130
    except SystemExit as exc:  # typer/click usage errors and explicit exits
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    except Exception as exc:  # click usage errors come through here in non-standalone mode
        try:
            import click
        except ImportError:  # typer >= 0.2x vendors click as typer._click
            from typer import _click as click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            return exc.exit_code
        if isinstance(exc, getattr(click.exceptions, "Abort", ())):
            return 1
        raise
    return result if isinstance(result, int) else 0
