"""``ghostedge bench`` and ``ghostedge eval``: thin wrappers over ``runtime.bench`` and ``runtime.evaluate``.

Only typer and the standard library are imported here; the runtimes load inside the command bodies.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _bench_table(results: list[Any], target: str) -> Any:
    from rich.table import Table

    table = Table(title=f"latency on {target}, batch 1 (ms)", title_justify="left")
    for col in ("artifact", "prec", "runtime", "p50", "p90", "p99", "mean", "cv", "n", "first", "load",
                "file MiB", "rss MiB", "status"):
        table.add_column(col, justify="left" if col in ("artifact", "prec", "runtime", "status") else "right")
    for r in results:
        lat = r.latency_ms or {}
        cv = lat.get("cv")
        flag = f"{_fmt(cv)}{' noisy' if r.noisy else ''}" if cv is not None else "–"
        status = r.status + (f" (re-measured {r.remeasured}x)" if r.remeasured else "")
        runtime = " ".join(str(x) for x in (r.runtime, r.runtime_version, r.delegate, f"{r.threads}t") if x)
        table.add_row(Path(r.artifact).name, r.precision, runtime, _fmt(lat.get("p50")), _fmt(lat.get("p90")),
                      _fmt(lat.get("p99")), _fmt(lat.get("mean")), flag, _fmt(lat.get("n")),
                      _fmt(r.first_inference_ms), _fmt(r.load_ms, 1),
                      _fmt(r.size_bytes / 2**20 if r.size_bytes else None, 2), _fmt(r.peak_rss_mb, 1), status)
    return table


def _print_profiles(results: list[Any], top: int) -> None:
    """The per-operator profile tables of every result that has one."""
    from ghostnet_edge.runtime.profile import render

    console = _console()
    for r in results:
        if r.profile is None:
            continue
        runtime = " ".join(str(x) for x in (r.runtime, r.delegate, f"{r.threads}t") if x)
        where = f" on {r.profile.get('cpu_model')}" if r.profile.get("cpu_model") else ""
        for item in render(r.profile, f"{Path(r.artifact).name} ({r.precision}, {runtime}){where}", top):
            console.print(item)


def _console() -> Any:
    """stdout console; piped or captured output gets a wide table instead of an 80-column one."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=200)


def register(app: typer.Typer) -> None:
    """Add ``bench`` and ``eval`` to the main app."""

    @app.command("bench")
    def bench_cmd(
        artifacts: list[str] = typer.Argument(..., help=".tflite / .onnx files, PyTorch checkpoints or model names."),
        target: str = typer.Option("host", "--target", "-t",
                                   help="host | qemu-aarch64[:cpu] | ssh://user@host[:port][?python=&key=&known_hosts=]"
                                        " | adb[:serial]"),
        threads: int = typer.Option(1, "--threads", "--num_threads",
                                    help="Inference threads (the paper measures 1)."),
        warmup: int = typer.Option(10, "--warmup", "--warmup_runs", help="Untimed runs after the first inference."),
        min_runs: int = typer.Option(50, "--min-runs", "--num_runs", help="Timed runs: at least this many ..."),
        min_seconds: float = typer.Option(2.0, "--min-seconds", help="... AND at least this long (MLPerf-style)."),
        max_seconds: float = typer.Option(60.0, "--max-seconds", help="Cap on the timed phase."),
        cv_threshold: float = typer.Option(0.05, "--cv-threshold",
                                           help="Coefficient of variation above which a result is noisy."),
        remeasure: int = typer.Option(2, "--remeasure", help="Extra attempts for a noisy result (steadiest kept)."),
        runtime: str = typer.Option("auto", "--runtime",
                                    help="auto | litert | tflite-runtime | onnxruntime | torch"),
        no_xnnpack: bool = typer.Option(False, "--no-xnnpack", help="TFLite builtin kernels instead of XNNPACK."),
        reference: str | None = typer.Option(None, "--reference",
                                             help="Checkpoint/model name: also compare outputs (parity)."),
        benchmark_model: str | None = typer.Option(None, "--benchmark-model",
                                                   help="adb: TFLite's benchmark_model binary for the phone."),
        seed: int = typer.Option(0, "--seed", help="Seed of the random input images."),
        json_out: Path | None = typer.Option(None, "--json", help="Write the results here (the curve reads it)."),
        profile: bool = typer.Option(False, "--profile",
                                     help="Also profile per operator: time per TFLite/XNNPACK/ONNX node (host, ssh), "
                                          "guest instructions per symbol and kernel family (qemu-aarch64)."),
        profile_json: Path | None = typer.Option(None, "--profile-json",
                                                 help="Write the per-operator profiles here (implies --profile)."),
        profile_top: int = typer.Option(15, "--profile-top", help="Rows of each profile table."),
        profile_runs: int = typer.Option(20, "--profile-runs", help="Inferences in the profiled pass (host, ssh)."),
    ) -> None:
        """Latency of each artifact at batch 1: p50/p90/p99, mean, std, CV, first inference, load, memory."""
        from rich.console import Console

        from ghostnet_edge.runtime.bench import bench, results_document
        from ghostnet_edge.runtime.config import BenchConfig
        from ghostnet_edge.utils.atomic import atomic_write_json

        config = BenchConfig(threads=threads, warmup=warmup, min_runs=min_runs, min_seconds=min_seconds,
                             max_seconds=max_seconds, cv_threshold=cv_threshold, remeasure=remeasure,
                             xnnpack=not no_xnnpack, runtime=runtime, seed=seed, benchmark_model=benchmark_model,
                             reference=reference, profile=profile or profile_json is not None,
                             profile_runs=profile_runs)
        err = Console(stderr=True)
        results = bench(artifacts, target, config, log=lambda m: err.print(m, markup=False, highlight=False))
        _console().print(_bench_table(results, results[0].target if results else target))
        if config.profile:
            _print_profiles(results, profile_top)
        if json_out is not None:
            atomic_write_json(json_out, results_document(results, target, config))
            err.print(f"wrote {json_out}", markup=False, highlight=False)
        if profile_json is not None:
            from ghostnet_edge.runtime.profile import write_profile_json

            write_profile_json(profile_json, results, results[0].target if results else target, config)
            err.print(f"wrote {profile_json}", markup=False, highlight=False)
        bad = [r for r in results if r.status != "ok"]
        for r in bad:
            err.print(f"{r.status}: {Path(r.artifact).name}: {r.error}", markup=False, highlight=False)
        if bad:
            raise typer.Exit(code=1)

    @app.command("eval")
    def eval_cmd(
        artifact: str = typer.Argument(..., help=".tflite / .onnx file, PyTorch checkpoint or model name."),
        data: str = typer.Option(..., "--data", help="Image folder, CIFAR tar/pickle folder, 'digits' or 'cifar10'."),
        split: str = typer.Option("val", "--split", help="train | val | test"),
        reference: str | None = typer.Option(None, "--reference", help="PyTorch checkpoint: report top-1 agreement."),
        limit: int | None = typer.Option(None, "--limit", help="Class-balanced subset of this many images."),
        batch_size: int = typer.Option(64, "--batch-size", help="Images per batch (batch-1 models loop)."),
        runtime: str = typer.Option("auto", "--runtime", help="auto | litert | tflite-runtime | onnxruntime"),
        threads: int = typer.Option(1, "--threads", help="Inference threads."),
        model: str | None = typer.Option(None, "--model",
                                         help="Model name for the preprocessing when the artifact has no manifest."),
        skip_bad_images: bool = typer.Option(False, "--skip-bad-images", help="Count and skip unreadable images."),
        json_out: Path | None = typer.Option(None, "--json", help="Write the result here."),
    ) -> None:
        """Top-1/top-5 of an artifact on a data set (the training preprocessing), and agreement with PyTorch."""
        from rich.table import Table

        from ghostnet_edge.runtime.evaluate import evaluate_artifact
        from ghostnet_edge.utils.atomic import atomic_write_json

        res = evaluate_artifact(artifact, data, split=split, reference=reference, batch_size=batch_size, limit=limit,
                                skip_bad_images=skip_bad_images, runtime=runtime, threads=threads, model=model)
        table = Table(title=f"{Path(artifact).name} on {data} ({split})", title_justify="left")
        for col in ("format", "precision", "runtime", "top-1 %", "top-5 %", "images", "skipped", "agree %", "s"):
            table.add_column(col, justify="right" if col[0].isdigit() or "%" in col or col in ("images", "skipped", "s")
                             else "left")
        table.add_row(res["format"], res["precision"], str(res.get("runtime")), _fmt(res["top1"], 2),
                      _fmt(res["top5"], 2), str(res["n"]), str(res.get("skipped", 0)),
                      _fmt(res.get("agreement_with_reference"), 2), _fmt(res["seconds"], 1))
        _console().print(table)
        if json_out is not None:
            atomic_write_json(json_out, res)
            print(f"wrote {json_out}", file=sys.stderr)
