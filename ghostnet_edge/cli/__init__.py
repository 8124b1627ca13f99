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
    context_settings={"help_option_names": ["-h", "--help"]},
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


def _print_version(value: bool) -> None:
    if value:
        from ghostnet_edge import __version__

        typer.echo(f"ghostedge {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v",
                                 help="Show full tracebacks on errors and the converters' own logs."),
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    if verbose:
        os.environ["GHOSTEDGE_VERBOSE"] = "1"


class Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``, ``docker stop``, CI cancellation), handled like Ctrl-C: every cleanup path
    that removes a staging folder or temporary file on KeyboardInterrupt runs for it too."""


_signal_received: list[str] = []


def _on_sigterm(signum: int, frame: object) -> None:
    _signal_received.append("SIGTERM")
    raise Terminated()


def _install_signal_handlers() -> None:
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


def _interrupted() -> int:
    """Say what happened on the real stderr, and the conventional exit code (130 Ctrl-C, 143 SIGTERM)."""
    from ghostnet_edge.utils.native_stderr import restore_stderr

    restore_stderr()   # a converter thread may have fd 2 pointed at a temporary file
    what = "terminated (SIGTERM)" if _signal_received else "interrupted"
    print(f"{what}; finished work is kept, nothing half-written was left, and a re-run resumes it",
          file=sys.stderr, flush=True)
    return 143 if _signal_received else 130


def _exit_now_if_busy(code: int) -> int:
    """After an interrupt, do not wait for a worker thread (a converter can take seconds to notice)."""
    import threading

    busy = [t for t in threading.enumerate() if t is not threading.current_thread() and not t.daemon]
    if busy:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning GhostEdgeError into one plain message and exit code 2."""
    from ghostnet_edge.errors import GhostEdgeError

    _register_all()
    _install_signal_handlers()
    try:
        # Non-standalone click returns typer.Exit's code instead of raising it; typer turns a
        # KeyboardInterrupt inside a command into Exit(130) before it reaches this function.
        result = app(args=argv, standalone_mode=False)
        if result == 130:
            return _exit_now_if_busy(_interrupted())
    except GhostEdgeError as exc:
        if os.environ.get("GHOSTEDGE_VERBOSE"):
            raise
        from ghostnet_edge.utils.native_stderr import restore_stderr

        restore_stderr()
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return _exit_now_if_busy(_interrupted())
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
            return _exit_now_if_busy(_interrupted()) if isinstance(exc.__cause__, KeyboardInterrupt) else 1
        raise
    return result if isinstance(result, int) else 0
