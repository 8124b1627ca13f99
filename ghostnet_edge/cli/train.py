"""`ghostedge train`: one seeded run, or a sweep over seeds with the spread of the final accuracy.

Only typer and the standard library at top level; the training stage (torch) loads in the command body.
Evaluation of a checkpoint is `ghostedge eval` (runtime stage), which calls
``ghostnet_edge.train.evaluate_checkpoint`` for PyTorch files.
"""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add `train` to the main app."""

    # Extra arguments are allowed so that `--seeds 3407 0 1 2` works as written (click options take one
    # value each; the following numbers arrive as extra arguments and are checked in _seed_list).
    @app.command("train", context_settings={"allow_extra_args": True})
    def train_cmd(
        ctx: typer.Context,
        model: str = typer.Option("ghostnet_cifar_100", "--model", "-m", help="Registered model name."),
        data: str = typer.Option("digits", "--data", "-d",
                                 help="Image folder / .tar / CIFAR pickle folder, 'digits' (bundled) or 'cifar10'."),
        val_data: str | None = typer.Option(None, "--val-data", help="Separate validation source (default: the data's val/test split)."),
        epochs: int = typer.Option(10, "--epochs", "-e", min=1),
        batch_size: int = typer.Option(128, "--batch-size", "-b", min=1, help="Global batch (split over torchrun ranks)."),
        lr: float = typer.Option(0.1, "--lr", help="Peak learning rate (SGD, nesterov momentum 0.9)."),
        weight_decay: float = typer.Option(5e-4, "--weight-decay", help="Not applied to BatchNorm weights and biases."),
        schedule: str = typer.Option("cosine", "--schedule", help="cosine | onecycle"),
        warmup_epochs: float = typer.Option(0.0, "--warmup-epochs"),
        label_smoothing: float = typer.Option(0.0, "--label-smoothing"),
        seed: int = typer.Option(0, "--seed", "-s", help="Seed of one run."),
        seeds: list[int] | None = typer.Option(None, "--seeds", help="Several seeds: one run each and their spread. "
                                                "Repeat the option or list them: --seeds 3407 0 1 2."),
        out: Path = typer.Option(Path("runs/train"), "--out", "-o", help="Output folder."),
        resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last finished epoch."),
        limit_train: int | None = typer.Option(None, "--limit-train", help="Class-balanced subset of N training images."),
        limit_val: int | None = typer.Option(None, "--limit-val", help="Class-balanced subset of N validation images."),
        skip_bad_images: bool = typer.Option(False, "--skip-bad-images", help="Count and skip unreadable images."),
        channels_last: bool | None = typer.Option(None, "--channels-last/--no-channels-last",
                                                  help="channels_last memory format (default off: no measured gain)."),
        bf16: bool | None = typer.Option(None, "--bf16/--no-bf16",
                                         help="bf16 autocast (default off: fp32 on every CPU, so a seed gives the same "
                                         "weights whatever the CPU; slower than fp32 where bf16 is emulated, see the README)."),
        threads: int | None = typer.Option(None, "--threads", help="torch threads (default: cores / processes)."),
        procs: int = typer.Option(1, "--procs", min=1,
                                  help="Data-parallel processes on this machine (DDP over gloo, the batch split "
                                  "between them); 2 on a 2-core CPU is faster than 2 threads, see the README."),
        device: str = typer.Option("cpu", "--device",
                                   help="cpu (default) or cuda[:N]: run the SGD steps on an NVIDIA GPU; data "
                                   "augmentation stays on the CPU, so the same seed sees the same images."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    ) -> None:
        """Train a model with seeded, resumable SGD; writes checkpoints and metrics.jsonl to --out."""
        from ghostnet_edge.train import TrainConfig

        config = TrainConfig(
            model=model, data=data, val_data=val_data, epochs=epochs, batch_size=batch_size, lr=lr,
            weight_decay=weight_decay, schedule=schedule, warmup_epochs=warmup_epochs,
            label_smoothing=label_smoothing, seed=seed, out=out, channels_last=channels_last, bf16=bf16,
            threads=threads, limit_train=limit_train, limit_val=limit_val, resume=resume,
            skip_bad_images=skip_bad_images, progress=not quiet, device=device,
        )
        seed_list = _seed_list(seeds, ctx.args)
        if procs > 1:
            from ghostnet_edge.train.launch import train_data_parallel

            result = train_data_parallel(config, procs, seed_list or None)
            if seed_list:
                _print_sweep(result)
            else:
                _print_run(result)
        elif seed_list:
            from ghostnet_edge.train import train_seeds

            _print_sweep(train_seeds(config, seed_list))
        else:
            from ghostnet_edge.train import train

            _print_run(train(config))


def _seed_list(seeds: list[int] | None, extra: list[str]) -> list[int]:
    """``--seeds 3407 0 1`` -> [3407, 0, 1]; anything else left over is a usage error."""
    from ghostnet_edge.errors import GhostEdgeError

    if extra and (not seeds or not all(a.isdigit() for a in extra)):
        raise GhostEdgeError(f"unexpected arguments: {' '.join(extra)}",
                             "list several seeds after --seeds (e.g. --seeds 3407 0 1 2); see ghostedge train --help")
    return list(dict.fromkeys([*(seeds or []), *(int(a) for a in extra)]))


def _print_run(result) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"training run in {result.out}")
    for col in ("epoch", "train loss", "val top-1 %", "val top-5 %", "lr", "img/s", "s"):
        table.add_column(col, justify="right")
    for r in result.history:
        table.add_row(str(r["epoch"]), f"{r['train_loss']:.4f}", f"{r['val_top1']:.2f}", f"{r['val_top5']:.2f}",
                      f"{r['lr']:.5f}", f"{r['images_per_s']:.0f}" if r.get("images_per_s") else "-",
                      f"{r['seconds']:.1f}")
    console = Console()
    console.print(table)
    speed = result.speed
    console.print(f"final top-1 {_pct(result.final_top1)}  best {_pct(result.best_top1)}  "
                  f"(channels_last={speed['channels_last']}, bf16={speed['bf16']}, threads={speed['threads']})")
    if result.resumed_from_epoch:
        console.print(f"resumed after epoch {result.resumed_from_epoch}")
    if result.skipped_images:
        console.print(f"[yellow]skipped {result.skipped_images} unreadable images[/yellow]")
    console.print(f"model: {result.checkpoint}   metrics: {Path(result.out) / 'metrics.jsonl'}")


def _print_sweep(sweep) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(sweep.seeds)} seeds in {sweep.out}")
    for col in ("seed", "final top-1 %", "best top-1 %", "checkpoint"):
        table.add_column(col, justify="left" if col == "checkpoint" else "right")
    for s, r in sweep.results.items():
        table.add_row(str(s), _pct(r.final_top1), _pct(r.best_top1), str(r.checkpoint))
    f = sweep.final_top1
    table.add_section()
    table.add_row("mean", f"{f['mean']:.2f} ± {f['std']:.2f}", f"min {f['min']:.2f}", f"max {f['max']:.2f}")
    console = Console()
    console.print(table)
    console.print(f"std over seeds uses ddof=1; band per epoch in {Path(sweep.out) / 'spread.md'}")


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"
