"""`ghostedge info` and `ghostedge models`: what a network costs, and which variants exist.

Only typer and the standard library are imported here; torch and the model code load inside the
command bodies so `ghostedge --help` stays fast.
"""

from __future__ import annotations

import json

import typer


def _human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


def register(app: typer.Typer) -> None:
    """Add `info` and `models` to the main app."""

    @app.command("info")
    def info(
        model: str = typer.Argument(..., help="Registered model name (ghostnet_100) or a checkpoint file."),
        input_size: int | None = typer.Option(None, "--input-size", help="Square input side; default: the model's."),
        num_classes: int | None = typer.Option(None, "--num-classes", help="Classifier outputs; default: the model's."),
        arch: str | None = typer.Option(None, "--model", help="Model name for a checkpoint without ghostedge meta."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    ) -> None:
        """Parameters and multiply-accumulates (MACs) of a network, in total and per stage."""
        from ghostnet_edge.models.profile import describe_model

        data = describe_model(model, input_size, num_classes, arch)
        if as_json:
            typer.echo(json.dumps(data, indent=2))
            return
        from rich.console import Console
        from rich.table import Table

        c, h, w = data["input_size"]
        table = Table(title=f"{data['model']}  {c}x{h}x{w}  {data['num_classes']} classes")
        for col in ("stage", "output", "params", "MACs", "% MACs"):
            table.add_column(col, justify="left" if col in ("stage", "output") else "right")
        for s in data["stages"]:
            share = 100.0 * s["macs"] / data["macs"] if data["macs"] else 0.0
            table.add_row(s["name"], "x".join(map(str, s["output_shape"])), f"{s['params']:,}", _human(s["macs"]),
                          f"{share:.1f}")
        table.add_section()
        table.add_row("total", "", f"{data['params']:,}", _human(data["macs"]), "100.0")
        console = Console()
        console.print(table)
        console.print(f"parameters {data['params']:,} ({_human(data['params'])}), MACs {data['macs']:,} "
                      f"({_human(data['macs'])}); MACs count conv and linear multiply-accumulates")
        if data.get("checkpoint"):
            console.print("checkpoint: " + ", ".join(f"{k}={v}" for k, v in data["checkpoint"].items()))

    @app.command("models")
    def models(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
        """List the registered model variants and their default input configuration."""
        from ghostnet_edge.models.registry import get_spec, list_models

        specs = [get_spec(name) for name in list_models()]
        if as_json:
            typer.echo(json.dumps([{k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(s).items()}
                                   for s in specs], indent=2))
            return
        from rich import box
        from rich.console import Console
        from rich.table import Table

        from ghostnet_edge.models.registry import CIFAR_MEAN, IMAGENET_MEAN

        table = Table(title="registered models (any width also parses: ghostnet_075, ghostnet_cifar_110)",
                      box=box.SIMPLE_HEAD, pad_edge=False)
        for col in ("name", "width", "classes", "crop/resize", "stem", "mean/std"):
            table.add_column(col, no_wrap=True)
        for s in specs:
            norm = {IMAGENET_MEAN: "ImageNet", CIFAR_MEAN: "CIFAR-10"}.get(s.mean, "custom")
            table.add_row(s.name, f"{s.width:g}", str(s.num_classes),
                          f"{s.input_size[1]}x{s.input_size[2]}/{s.resize_size}", f"/{s.stem_stride}", norm)
        Console().print(table)
