"""INT8 accuracy over calibration draws: post-training quantization has a seed of its own.

Which images calibrate is a random choice, like a training seed, so one INT8 accuracy is an anecdote.
``calibration_draws`` exports one checkpoint once per (calibration seed, number of calibration images),
each draw into ``OUT/draw-n<N>-s<SEED>/`` with the ordinary export (every artifact verified), scores
FP32 once and every INT8 artifact on a labelled evaluation set that the calibration folder does not
contain, and reports per format and size the mean, standard deviation (ddof=1), minimum and maximum of
top-1, and the paired difference INT8 - FP32 per draw. Finished draws are reused on a re-run.

Written: ``OUT/calibration_draws.json`` (every number) and ``OUT/calibration_draws.md`` (the table).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ghostnet_edge.errors import DataError, GhostEdgeError
from ghostnet_edge.export.artifacts import artifact_file
from ghostnet_edge.utils.spread import spread

INT8_ARTIFACTS = {"onnx": artifact_file("onnx", "int8"), "tflite": artifact_file("tflite", "int8")}
FP32_ARTIFACT = artifact_file("onnx", "fp32")
RESULT_JSON, RESULT_MD = "calibration_draws.json", "calibration_draws.md"


@dataclass
class DrawsConfig:
    """One calibration-draw study of a trained checkpoint."""

    checkpoint: Path
    calib: Path                       # images the draws are taken from: a folder, or a data set's training split
    eval_data: str                    # labelled evaluation set, any layout `ghostedge eval --data` takes
    out: Path
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    sizes: tuple[int, ...] = (256,)
    eval_split: str = "val"
    eval_limit: int | None = None     # class-balanced subset of the evaluation set
    formats: tuple[str, ...] = ("onnx", "tflite")
    num_verify: int = 32
    threads: int | None = None
    export_options: dict[str, Any] = dataclasses.field(default_factory=dict)


def validate(cfg: DrawsConfig) -> None:
    """Refuse, before any export, what cannot give an honest spread."""
    from ghostnet_edge.calib.sources import image_source

    if len(cfg.seeds) < 2:
        raise GhostEdgeError(f"{len(cfg.seeds)} calibration draw(s) give no spread",
                             "ask for at least 2 draws, e.g. --calib-seeds 5")
    if len(set(cfg.seeds)) != len(cfg.seeds) or min(cfg.seeds) < 0:
        raise GhostEdgeError(f"calibration seeds must be distinct non-negative integers (got {list(cfg.seeds)})",
                             "e.g. --calib-seeds 0,1,2,3,4 or --calib-seeds 5")
    if not cfg.checkpoint or not Path(cfg.checkpoint).is_file():
        raise GhostEdgeError(f"calibration draws need a trained checkpoint (got {cfg.checkpoint})",
                             "pass the checkpoint file; random weights have no accuracy to keep")
    n_images = image_source(cfg.calib, "calibration").count   # a folder, or any data set's training split
    available = n_images - min(cfg.num_verify, n_images // 2)
    too_many = [n for n in cfg.sizes if n > available]
    if too_many:
        raise DataError(f"{max(too_many)} calibration images asked for, but {cfg.calib} has {n_images} images "
                        f"({available} once {min(cfg.num_verify, n_images // 2)} are held out for verification)",
                        f"use --num-calib {available} or less, or a larger --calib folder")
    if Path(str(cfg.calib)).exists():
        _refuse_overlap(Path(cfg.calib), cfg.eval_data)
    elif str(cfg.calib) == str(cfg.eval_data) and cfg.eval_split == "train":
        raise DataError(f"the draws calibrate on {cfg.calib}'s training split and would be scored on it too",
                        "evaluate on the held-out split: --eval-split val")


def _refuse_overlap(calib: Path, eval_data: str) -> None:
    """The evaluation images must not be among those the draws can pick."""
    ev = Path(str(eval_data)).expanduser()
    if not ev.exists():
        return   # a named data set ("cifar10", "digits"): its files are not in a user's folder
    c, e = calib.resolve(), ev.resolve()
    if c == e or e in c.parents or c in e.parents:
        raise DataError(f"the evaluation data {e} and the calibration folder {c} overlap: draws could calibrate "
                        "on the very images they are scored on",
                        "calibrate on training images and evaluate on held-out ones (separate folders)")


def _draw_dir(out: Path, size: int, seed: int) -> Path:
    return out / f"draw-n{size}-s{seed}"


def run_draws(cfg: DrawsConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Export and score every draw (see the module docstring); returns what the JSON file holds."""
    from ghostnet_edge.export.pipeline import ExportConfig, export_artifacts
    from ghostnet_edge.runtime.evaluate import evaluate_artifact
    from ghostnet_edge.utils.atomic import atomic_write_json, atomic_write_text, ensure_writable_dir

    validate(cfg)
    out = ensure_writable_dir(Path(cfg.out))
    threads = cfg.threads or 1
    rows: list[dict[str, Any]] = []
    fp32: dict[str, Any] | None = None
    t0 = time.perf_counter()
    total = len(cfg.sizes) * len(cfg.seeds)
    for i, (size, seed) in enumerate(((n, s) for n in cfg.sizes for s in cfg.seeds), start=1):
        folder = _draw_dir(out, size, seed)
        if not (folder / "manifest.json").is_file():
            log(f"[draws] {i}/{total}: export with {size} calibration images, seed {seed} -> {folder}")
            export_artifacts(ExportConfig(checkpoint=Path(cfg.checkpoint), calib=cfg.calib, out=folder,
                                          formats=tuple(cfg.formats), int8=True, num_calib=size,
                                          num_verify=cfg.num_verify, seed=seed, force=True, threads=cfg.threads,
                                          **cfg.export_options))
        if fp32 is None:
            fp32 = _score(evaluate_artifact, folder / FP32_ARTIFACT, cfg, threads, log)
        for fmt in cfg.formats:
            res = _score(evaluate_artifact, folder / INT8_ARTIFACTS[fmt], cfg, threads, log)
            rows.append({"format": fmt, "num_calib": size, "seed": seed, "top1": res["top1"], "top5": res["top5"],
                         "n": res["n"], "delta_vs_fp32": res["top1"] - fp32["top1"], "artifact": res["artifact"]})
        log(f"[draws] {i}/{total} scored ({time.perf_counter() - t0:.0f} s so far)")
    assert fp32 is not None
    result = {"checkpoint": str(cfg.checkpoint), "calib": str(cfg.calib), "eval_data": str(cfg.eval_data),
              "eval_split": cfg.eval_split, "eval_images": fp32["n"], "seeds": list(cfg.seeds),
              "sizes": list(cfg.sizes), "fp32": {"top1": fp32["top1"], "top5": fp32["top5"], "artifact": fp32["artifact"]},
              "summary": summarize(rows), "draws": rows, "seconds": time.perf_counter() - t0}
    atomic_write_json(out / RESULT_JSON, result)
    atomic_write_text(out / RESULT_MD, render_markdown(result))
    return result


def _score(evaluate: Callable[..., dict[str, Any]], artifact: Path, cfg: DrawsConfig, threads: int,
           log: Callable[[str], None]) -> dict[str, Any]:
    """Top-1 of one artifact, cached next to it (an unchanged file is not evaluated twice)."""
    from ghostnet_edge.utils.atomic import atomic_write_json, sha256_file

    key = {"sha256": sha256_file(artifact), "data": str(cfg.eval_data), "split": cfg.eval_split,
           "limit": cfg.eval_limit}
    cache = artifact.with_name(artifact.name + ".eval.json")
    if cache.is_file():
        saved = json.loads(cache.read_text())
        if saved.get("key") == key:
            return saved["result"]
    res = evaluate(artifact, cfg.eval_data, split=cfg.eval_split, limit=cfg.eval_limit, threads=threads,
                   batch_size=256)
    keep = {k: res[k] for k in ("artifact", "top1", "top5", "n", "runtime", "runtime_version")}
    atomic_write_json(cache, {"key": key, "result": keep})
    log(f"[draws]   {artifact.parent.name}/{artifact.name}: top-1 {res['top1']:.2f} % on {res['n']} images")
    return keep


def summarize(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (format, number of calibration images): spread of top-1 and of the paired INT8 - FP32."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["format"], r["num_calib"]), []).append(r)
    out = []
    for (fmt, size), rs in sorted(groups.items()):
        top1 = spread([r["top1"] for r in rs])
        delta = spread([r["delta_vs_fp32"] for r in rs])
        out.append({"format": fmt, "num_calib": size, "draws": len(rs), "top1": top1.to_dict(),
                    "delta_vs_fp32": delta.to_dict(), "worst_delta": min(r["delta_vs_fp32"] for r in rs)})
    return out


def render_markdown(result: dict[str, Any]) -> str:
    fp = result["fp32"]["top1"]
    lines = [f"# INT8 top-1 over calibration draws: {Path(result['checkpoint']).name}", "",
             f"Evaluated on {result['eval_images']} images of {result['eval_data']} ({result['eval_split']}); "
             f"calibration images drawn from {result['calib']} with seeds {result['seeds']}. "
             f"FP32 (ONNX) top-1: **{fp:.2f} %**. Spread: mean +- std (ddof=1), min-max over draws; "
             "delta = INT8 - FP32 of the same checkpoint, per draw.", "",
             "| INT8 format | calib. images | draws | top-1 % mean +- std (min-max) | delta mean +- std | worst delta |",
             "|---|---:|---:|---:|---:|---:|"]
    for s in result["summary"]:
        t, d = s["top1"], s["delta_vs_fp32"]
        lines.append(f"| {s['format']} | {s['num_calib']} | {s['draws']} | {t['mean']:.2f} +- {t['std']:.2f} "
                     f"({t['min']:.2f}-{t['max']:.2f}) | {d['mean']:+.2f} +- {d['std']:.2f} | {s['worst_delta']:+.2f} |")
    lines += ["", "| format | calib. images | seed | top-1 % | delta |", "|---|---:|---:|---:|---:|"]
    for r in result["draws"]:
        lines.append(f"| {r['format']} | {r['num_calib']} | {r['seed']} | {r['top1']:.2f} | {r['delta_vs_fp32']:+.2f} |")
    return "\n".join(lines) + "\n"


def parse_int_list(value: str | int | Sequence[int], what: str, count_means_range: bool = False) -> tuple[int, ...]:
    """``"0,1,2"`` -> (0, 1, 2); with ``count_means_range`` a single ``"5"`` means seeds 0..4."""
    if isinstance(value, int):
        items = [value]
    elif isinstance(value, str):
        try:
            items = [int(v) for v in value.replace(" ", "").split(",") if v]
        except ValueError:
            raise GhostEdgeError(f"{what} must be integers separated by commas (got {value!r})",
                                 f"e.g. {what} 0,1,2,3,4") from None
    else:
        items = [int(v) for v in value]
    if not items or any(v < 0 for v in items):
        raise GhostEdgeError(f"{what} needs non-negative integers (got {value!r})", f"e.g. {what} 5")
    if count_means_range and len(items) == 1:
        return tuple(range(items[0]))
    return tuple(items)
