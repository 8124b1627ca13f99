"""``ghostedge curve`` and ``ghostedge quickstart``: thin wrappers over ``pipeline.curve`` and ``pipeline.quickstart``.

Only typer and the standard library are imported here; the sweep (torch, TensorFlow, matplotlib...)
is imported inside the command bodies so ``ghostedge --help`` stays fast.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

_FORMATS_HELP = "comma-separated: torch, onnx, onnx-int8, tflite, tflite-int8"


def _split(values: list[str] | None) -> list[str]:
    """Accept both ``--models a,b`` and ``--models a --models b``."""
    out: list[str] = []
    for v in values or []:
        out += [x.strip() for x in v.split(",") if x.strip()]
    return out


def _seeds(values: list[str] | None) -> list[int]:
    from ghostnet_edge.errors import GhostEdgeError

    seeds = []
    for s in _split(values):
        try:
            seeds.append(int(s))
        except ValueError as exc:
            raise GhostEdgeError(f"seed {s!r} is not an integer", "pass seeds like --seeds 0 1 2") from exc
    return seeds


def _quiet_tensorflow() -> None:
    """Keep TensorFlow's C++ start-up chatter (CUDA probing on a CPU box) out of the sweep's progress.

    Conversion problems still surface: they are raised as Python exceptions and recorded per point.
    Set TF_CPP_MIN_LOG_LEVEL yourself to see the chatter again.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _print_result(result: object, extra: list[tuple[str, str]] | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:  # a log file: wide enough that model names are not cut
        console = Console(width=max(console.width, 110))
    table = Table(title="accuracy vs latency", show_lines=False)
    for col in ("model", "format", "target", "top-1 % (seeds)", "p50 ms / instr.", "status"):
        table.add_column(col, no_wrap=True)
    for p in result.points:  # type: ignore[attr-defined]
        acc = "–" if p.acc_mean is None else f"{p.acc_mean:.2f} ± {p.acc_std or 0:.2f} ({p.n_seeds})"
        if p.acc_source == "published" and p.acc_mean is not None:
            acc = f"{p.acc_mean:.1f} (published)"
        if p.x is None:
            x = "–"
        elif p.target.startswith("qemu"):
            x = f"{p.x / 1e6:.2f} M instr."
        else:
            x = f"{p.x:.3f} ms"
        table.add_row(p.model, p.format, p.target, acc, x, p.status)
    console.print(table)
    done = ", ".join(f"{k}={v}" for k, v in result.counters.items())  # type: ignore[attr-defined]
    console.print(f"steps: {done or 'none'}  ({result.seconds:.0f} s)")  # type: ignore[attr-defined]
    if result.failures:  # type: ignore[attr-defined]
        console.print(f"[yellow]{len(result.failures)} step(s) failed[/yellow]; reasons in "  # type: ignore[attr-defined]
                      f"{result.work / 'failures.jsonl'} and curve.md")  # type: ignore[attr-defined]
    rows = [("points (CSV)", str(result.csv)), ("tables", str(result.markdown)),  # type: ignore[attr-defined]
            ("plot", f"{result.png}, {result.svg}")] + (extra or [])  # type: ignore[attr-defined]
    for label, where in rows:
        console.print(f"{label}: [bold]{where}[/bold]", soft_wrap=True)


def register(app: typer.Typer) -> None:
    @app.command("curve")
    def curve(
        models: list[str] = typer.Option(None, "--models", "-m",
                                         help="comma-separated model names (default with --latency-only: the "
                                              "paper's widths at 224x224)"),
        seeds: list[str] = typer.Option(["0,1,2"], "--seeds", "-s", help="seeds, comma-separated or repeated"),
        formats: str = typer.Option("torch,onnx,onnx-int8,tflite,tflite-int8", "--formats", help=_FORMATS_HELP),
        qemu_formats: str = typer.Option(None, "--qemu-formats",
                                         help="formats counted on qemu targets (default: all of --formats)"),
        target: list[str] = typer.Option(["host"], "--target", "-t",
                                         help="host, qemu-aarch64, ssh://user@host, adb[:serial]; repeatable"),
        data: str = typer.Option("digits", "--data", help="digits (built in), cifar10, or a folder of class folders"),
        epochs: int = typer.Option(5, "--epochs", help="training epochs per run"),
        limit_train: int = typer.Option(None, "--limit-train",
                                        help="train on a class-balanced subset of N images (default: all)"),
        limit_eval: int = typer.Option(None, "--limit-eval", help="images evaluated per artifact (default all)"),
        limit_val: int = typer.Option(None, "--limit-val",
                                      help="images the training loop validates on after each epoch (default all)"),
        work: Path = typer.Option(Path("runs/curve"), "--work", "-w",
                                  help="work folder: every run, export and measurement is kept here and reused"),
        weights: Path = typer.Option(None, "--weights", help="folder of given checkpoints <model>/seed_<s>/"),
        latency_only: bool = typer.Option(False, "--latency-only",
                                          help="random weights at 224x224, plotted against the paper's "
                                               "published accuracy"),
        paper_overlay: bool = typer.Option(False, "--paper-overlay",
                                           help="add the paper's Figure 7 points (224x224 ImageNet models only)"),
        calib: Path = typer.Option(None, "--calib",
                                   help="folder of images for INT8 calibration (default: the training split of "
                                        "--data; with --latency-only: seeded noise)"),
        num_calib: int = typer.Option(128, "--num-calib", help="INT8 calibration images per export"),
        calib_draws: int = typer.Option(1, "--calib-draws", min=1,
                                        help="INT8 calibration draws per seed; INT8 points then spread over "
                                        "seeds x draws (which images calibrate is a random choice too)"),
        batch_size: int = typer.Option(64, "--batch-size"),
        runs: int = typer.Option(30, "--runs", help="timed runs per latency measurement"),
        threads: int = typer.Option(1, "--threads",
                                    help="CPU threads for export checks, evaluation and latency (the paper: 1)"),
        train_threads: int = typer.Option(None, "--train-threads",
                                          help="CPU threads per training run (default: all; 1 with --train-jobs)"),
        train_jobs: int = typer.Option(1, "--train-jobs", help="training runs at once, one process each"),
    ) -> None:
        """Sweep models x seeds x formats x targets into the accuracy-vs-latency curve (resumable)."""
        _quiet_tensorflow()
        from ghostnet_edge.pipeline.curve import CurveConfig, run_curve

        seed_list = _seeds(seeds)
        cfg = CurveConfig(
            models=tuple(_split(models)), seeds=tuple(seed_list), formats=tuple(_split([formats])),
            targets=tuple(_split(target)), data=data, work=work, epochs=epochs, limit_train=limit_train,
            limit_eval=limit_eval, limit_val=limit_val, batch_size=batch_size, weights=weights, latency_only=latency_only,
            paper_overlay=paper_overlay, calib=calib, calib_count=num_calib, calib_draws=calib_draws, bench_runs=runs, threads=threads,
            train_threads=train_threads, train_jobs=train_jobs,
            qemu_formats=tuple(_split([qemu_formats])) if qemu_formats else None,
        )
        _print_result(run_curve(cfg))

    @app.command("quickstart")
    def quickstart(
        out: Path = typer.Option(Path("ghostedge-out"), "--out", "-o", help="output folder (re-runs reuse it)"),
        data: str = typer.Option("digits", "--data", help="digits (built in), cifar10, or a folder of class folders"),
        weights: Path = typer.Option(None, "--weights", help="folder of given checkpoints <model>/seed_<s>/"),
        target: list[str] = typer.Option(None, "--target", "-t",
                                         help="default: host, plus qemu-aarch64 when set up; repeatable"),
        epochs: int = typer.Option(None, "--epochs", help="training epochs per run (default: the quickstart's)"),
    ) -> None:
        """The README's main job: train, export, measure and plot a small GhostNet on built-in digits."""
        _quiet_tensorflow()
        from ghostnet_edge.pipeline.quickstart import QUICKSTART_EPOCHS
        from ghostnet_edge.pipeline.quickstart import quickstart as run

        res = run(out=out, data=data, weights=weights, targets=_split(target) or None,
                  epochs=epochs or QUICKSTART_EPOCHS)
        _print_result(res.curve, extra=[("summary", str(res.summary)), ("everything", str(res.out))])
