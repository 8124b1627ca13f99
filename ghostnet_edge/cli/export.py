"""``ghostedge export``: a thin layer over :func:`ghostnet_edge.export.pipeline.export_artifacts`.

Only typer and the standard library at module level; the pipeline (torch, onnx, TensorFlow) is
imported inside the command so ``ghostedge --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import typer

from ghostnet_edge.export import config as C  # defaults, written once (standard library only)


def _size(n: int) -> str:
    """Binary units, as LiteRT's benchmark_model and `ls -h` print them (MiB = 2**20 bytes)."""
    return f"{n / 2**20:.2f} MiB" if n >= 2**17 else f"{n / 2**10:.1f} KiB"


def _fmt(v: float | None, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def print_summary(report: object) -> None:
    """Per artifact: size, max |diff| to PyTorch, top-1 agreement, accuracy delta, path."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal and console.width < 140:
        console = Console(width=140)  # piped output: do not squeeze the paths into 80 columns
    for w in report.warnings:  # type: ignore[attr-defined]
        console.print(f"[yellow]warning:[/yellow] {w}")
    table = Table(title=f"exported to {report.out_dir}")  # type: ignore[attr-defined]
    for col, justify in (("artifact", "left"), ("size", "right"), ("max |diff| to PyTorch", "right"),
                         ("top-1 agreement", "right"), ("acc. delta", "right"), ("written to", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for a in report.artifacts:  # type: ignore[attr-defined]
        r = a.row()
        table.add_row(r["artifact"], _size(r["bytes"]), _fmt(r["max_abs_diff"], ".2e"),
                      _fmt(r["top1_agreement"], ".3f"), _fmt(r["accuracy_delta"], "+.3f"), r["path"])
    console.print(table)
    m = report.manifest  # type: ignore[attr-defined]
    cal, ver = m.get("calibration"), m.get("verification") or {}
    if cal:
        console.print(f"calibrated on {cal['count']} images ({cal['num_classes']} classes) from {cal['root']}, "
                      f"method {cal['method']}; ", end="")
    console.print(f"checked on {ver.get('count')} held-out images"
                  + (" with labels" if ver.get("labelled") else ""))
    q = m.get("quantization")
    if q:
        console.print(f"INT8 ONNX activations {q['activation_type']}: {q['activation_reason']}")
    stages = "  ".join(f"{k} {v:.1f}s" for k, v in report.timings.items() if "." not in k)  # type: ignore[attr-defined]
    console.print(f"total {report.total_seconds:.1f} s: {stages}")  # type: ignore[attr-defined]
    extra = [f for f in report.files if not f.startswith("model")]  # type: ignore[attr-defined]
    console.print(f"also written: {', '.join(extra)}")
    for line in app_lines(report):
        console.print(line, soft_wrap=True)


def app_lines(report: object) -> list[str]:
    """The two lines an app developer needs next: the files, and what the model's input expects."""
    m = report.manifest  # type: ignore[attr-defined]
    names = [a.name for a in report.artifacts if a.format == "tflite"]  # type: ignore[attr-defined]
    if not names:
        return []
    from ghostnet_edge.export.artifacts import LABELS, TFLITE_INT8

    model = TFLITE_INT8 if TFLITE_INT8 in names else names[0]
    out = report.out_dir  # type: ignore[attr-defined]
    size = (m.get("preprocessing") or {}).get("input_size") or []
    io = (m.get("tflite_int8_io") or {}).get("input") if model == TFLITE_INT8 else None
    shape = f"[1, {size[1]}, {size[2]}, 3] NHWC RGB" if len(size) == 3 else "NHWC RGB"
    if io and io.get("dtype") in ("int8", "uint8"):
        zp = int(io["zero_point"])
        expects = (f"{io['dtype']} {shape}, q = round(x / {io['scale']:.6g}) {'-' if zp < 0 else '+'} {abs(zp)} "
                   "after normalising with the metadata's mean/std")
    else:
        expects = f"float32 {shape}, normalised with the metadata's mean/std"
    return [f"for an app: {out / model} (metadata and labels.txt inside; also {out / LABELS})",
            f"its input: {expects}; see examples/classify.c"]


def _calibration_draws(checkpoint: Path | None, calib: Path | None, out: Path, seeds: str, sizes: str,
                       eval_data: str | None, eval_split: str, eval_limit: int | None, formats: str,
                       num_verify: int, threads: int | None, seed: int) -> None:
    from ghostnet_edge.errors import GhostEdgeError
    from ghostnet_edge.export.pipeline import parse_formats
    from ghostnet_edge.pipeline.calibration_draws import (
        DrawsConfig,
        parse_int_list,
        render_markdown,
        run_draws,
    )

    if calib is None or eval_data is None:
        raise GhostEdgeError("--calib-seeds needs --calib (the folder draws are taken from) and --eval-data "
                             "(labelled images the draws are scored on)",
                             "e.g. ghostedge export model.pt --calib train_imgs/ --calib-seeds 5 --eval-data cifar10")
    cfg = DrawsConfig(checkpoint=checkpoint, calib=calib, eval_data=eval_data, out=out,
                      seeds=parse_int_list(seeds, "--calib-seeds", count_means_range=True),
                      sizes=parse_int_list(sizes, "--calib-sizes"), eval_split=eval_split, eval_limit=eval_limit,
                      formats=parse_formats(formats), num_verify=num_verify, threads=threads)
    if seed:
        cfg.seeds = tuple(s + seed for s in cfg.seeds)
    result = run_draws(cfg, log=lambda line: typer.echo(line, err=True))
    typer.echo(render_markdown(result))
    typer.echo(f"written: {out / 'calibration_draws.md'}, {out / 'calibration_draws.json'}")


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export(
        checkpoint: Path = typer.Argument(None, help="trained checkpoint (.pt/.pth/.safetensors); leave out "
                                                     "and give --model for random weights"),
        model: str = typer.Option(None, "--model", "-m",
                                  help="model name (random weights, accuracy means nothing), or the "
                                       "architecture of a bare state_dict"),
        calib: Path = typer.Option(None, "--calib", help="real images: calibration, and held-out verification "
                                                         "images unless --verify-data. A folder of images, or any "
                                                         "data set `ghostedge eval --data` reads (a .tar of class "
                                                         "folders, a CIFAR-10 pickle folder, cifar10, digits: its "
                                                         "training split)"),
        out: Path = typer.Option(C.DEFAULT_OUT, "--out", "-o",
                                 help="output folder (its own default, so an export never replaces the "
                                      "quickstart's or the curve's results)"),
        formats: str = typer.Option(",".join(C.FORMATS), "--formats", help="comma-separated: onnx, tflite"),
        int8: bool = typer.Option(True, "--int8/--no-int8", help="also write INT8 models (needs --calib)"),
        input_size: str = typer.Option(None, "--input-size", help="e.g. 224 or 160x224 (default: the model's)"),
        num_calib: int = typer.Option(C.DEFAULT_NUM_CALIB, "--num-calib", help="calibration images to draw"),
        num_verify: int = typer.Option(C.DEFAULT_NUM_VERIFY, "--num-verify", help="held-out images every artifact is checked on"),
        calib_method: str = typer.Option("minmax", "--calib-method", help="minmax, entropy or percentile"),
        per_tensor: bool = typer.Option(False, "--per-tensor", help="per-tensor INT8 weights (default per-channel)"),
        io_dtype: str = typer.Option("int8", "--io-dtype", help="INT8 TFLite input/output: int8, uint8, float32"),
        tflite_target: str = typer.Option("arm", "--tflite-target",
                                          help="the CPU the .tflite is shaped for: arm (phones, boards: INT8 "
                                               "hard-swish as LiteRT's NEON HARD_SWISH kernel) or x86 (hard-swish "
                                               "as a depthwise conv + MUL that XNNPACK runs in int8: MobileNetV3 "
                                               "INT8 1.6x faster on x86, 13% more ARM instructions)"),
        act_type: str = typer.Option("auto", "--act-type",
                                     help="INT8 ONNX activations: auto (uint8 on x86, int8 on ARM), int8, uint8"),
        max_drop: float = typer.Option(None, "--max-drop", help="with --val-data: at most this top-1 drop (e.g. "
                                       "0.01). INT8 ONNX: NNCF keeps the worst layers in float until it holds. INT8 "
                                       "TFLite: measured; when missed, a warning names the worst layers and "
                                       "model_int16x8.tflite (int16 activations, not fully integer) is written beside "
                                       "it with its accuracy, size and latency"),
        val_data: Path = typer.Option(None, "--val-data", help="labelled images for --max-drop and accuracy "
                                                               "deltas: class sub-folders or any data set "
                                                               "(its validation split)"),
        verify_data: Path = typer.Option(None, "--verify-data", help="separate verification images: a folder or "
                                                                     "any data set (its validation split)"),
        seed: int = typer.Option(0, "--seed", help="seed of the image draws (and of random weights)"),
        force: bool = typer.Option(False, "--force", help="replace an existing output folder"),
        tolerance: float = typer.Option(C.DEFAULT_TOLERANCE, "--tolerance", help="FP32: max |logit difference| to PyTorch"),
        min_agreement: float = typer.Option(C.DEFAULT_MIN_AGREEMENT, "--min-agreement", help="INT8: min top-1 agreement with PyTorch"),
        threads: int = typer.Option(None, "--threads", help="CPU threads (default: all cores)"),
        no_cache: bool = typer.Option(False, "--no-cache", help="decode images again instead of using the cache"),
        calib_seeds: str = typer.Option(None, "--calib-seeds",
                                        help="INT8 over calibration draws: N (seeds 0..N-1) or a list 0,1,2; one "
                                             "export per draw, scored on --eval-data, spread written to --out"),
        calib_sizes: str = typer.Option(None, "--calib-sizes",
                                        help="with --calib-seeds: numbers of calibration images, e.g. 32,128,512 "
                                             "(default: --num-calib)"),
        eval_data: str = typer.Option(None, "--eval-data",
                                      help="with --calib-seeds: labelled images not in --calib (any layout "
                                           "`ghostedge eval --data` takes, e.g. cifar10)"),
        eval_split: str = typer.Option("val", "--eval-split", help="with --calib-seeds: split of --eval-data"),
        eval_limit: int = typer.Option(None, "--eval-limit", help="with --calib-seeds: class-balanced subset"),
        opset: int = typer.Option(C.DEFAULT_OPSET, "--opset", help="ONNX opset of the exported graph (17-21)"),
        no_simplify: bool = typer.Option(False, "--no-simplify",
                                         help="keep the exported ONNX graph as torch wrote it (no onnxsim)"),
    ) -> None:
        """Export a checkpoint to verified ONNX and TFLite, FP32 and INT8, with labels and a manifest."""
        from ghostnet_edge.export.torch_import import defer_meta_kernels

        defer_meta_kernels()  # this process ends with the export, which never runs PyTorch's meta kernels
        from ghostnet_edge.export.pipeline import (
            ExportConfig,
            export_artifacts,
            parse_formats,
            suppress_noise,
        )

        suppress_noise()
        if calib_seeds is not None:
            _calibration_draws(checkpoint, calib, out, calib_seeds, calib_sizes or str(num_calib), eval_data,
                               eval_split, eval_limit, formats, num_verify, threads, seed)
            return
        if checkpoint is None and model:
            from ghostnet_edge.models import get_spec

            get_spec(model)   # an unknown name is the error to report, not the random-weights warning
            typer.echo(f"warning: no checkpoint: exporting {model} with random weights; its accuracy and "
                       "INT8 agreement mean nothing", err=True)
        cfg = ExportConfig(
            checkpoint=checkpoint, model=model, calib=calib, out=out, formats=parse_formats(formats), int8=int8,
            input_size=input_size, num_calib=num_calib, num_verify=num_verify, calib_method=calib_method.lower(),
            per_channel=not per_tensor, io_dtype=io_dtype.lower(), tflite_target=tflite_target.lower(), act_type=act_type.lower(), max_drop=max_drop,
            val_data=val_data, verify_data=verify_data, seed=seed, force=force, tolerance=tolerance,
            min_agreement=min_agreement, threads=threads, use_cache=not no_cache, opset=opset,
            simplify=not no_simplify)
        report = export_artifacts(cfg)
        print_summary(report)
