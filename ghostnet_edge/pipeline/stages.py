"""The sweep's calls into the other stages (models, train, export, runtime), one small function each.

Everything the curve needs from another stage goes through here, so ``pipeline.curve`` reads as the
sweep's logic and the bridging to each stage's actual API lives in one file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ghostnet_edge.errors import CheckpointError, ModelError, TargetError
from ghostnet_edge.export.config import DEFAULT_NUM_VERIFY
from ghostnet_edge.report.points import FORMATS
from ghostnet_edge.utils.atomic import atomic_write_json

CHECKPOINT_NAMES = ("model.pt", "checkpoint.pt", "best.pt", "last.pt", "model.safetensors")
DONE_MARKER = "DONE.json"
# Images the export stage holds out of the calibration folder to check every artifact on (its default).
NUM_VERIFY = DEFAULT_NUM_VERIFY
# The split accuracy is read on: "val" is the held-out split of digits and CIFAR-10's test folder.
EVAL_SPLIT = "val"
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".safetensors")


# ---- models ------------------------------------------------------------------------------------------
def check_model(name: str) -> None:
    """Raise ModelError for a name the models stage cannot build."""
    from ghostnet_edge.models import get_spec

    get_spec(name)


def input_size(name: str) -> int:
    """Square input side of a model (32 for the CIFAR forms, 224 for the ImageNet ones)."""
    try:
        from ghostnet_edge.models import get_spec

        return int(get_spec(name).input_size[-1])
    except (ImportError, ModelError):
        return 32 if "_cifar_" in name else 224


# ---- targets -----------------------------------------------------------------------------------------
def check_target(target: str) -> None:
    """Reject a target string no runner understands (reachability is checked when it is measured)."""
    from ghostnet_edge.runtime.targets import parse_target

    parse_target(target)


def runs_on(fmt: str, target: str) -> bool:
    """Whether the target runs this format at all (PyTorch runs on the host only)."""
    from ghostnet_edge.runtime.targets import parse_target

    return FORMATS[fmt].kind in parse_target(target).formats


def qemu_available() -> bool:
    """The emulated-ARM target is usable here (qemu-user, the aarch64 sysroot and the plugin)."""
    try:
        from ghostnet_edge.runtime.qemu.sysroot import available
    except ImportError:
        return False
    return bool(available())


# ---- checkpoints / training --------------------------------------------------------------------------
def _checkpoint_in(folder: Path) -> Path | None:
    for name in CHECKPOINT_NAMES:
        if (folder / name).is_file():
            return folder / name
    cands = sorted(p for p in folder.glob("*") if p.suffix in CHECKPOINT_SUFFIXES and p.is_file())
    return cands[0] if len(cands) == 1 else None


def finished_checkpoint(train_dir: Path) -> Path | None:
    """The final checkpoint of a *finished* run in ``train_dir`` (its DONE marker is written last), else None."""
    done = train_dir / DONE_MARKER
    if not done.is_file():
        return None
    try:
        name = json.loads(done.read_text())["checkpoint"]
    except (OSError, ValueError, KeyError):
        return None
    ckpt = train_dir / name
    return ckpt if ckpt.is_file() else None


def _mark_done(train_dir: Path, ckpt: Path, info: dict[str, Any]) -> None:
    atomic_write_json(train_dir / DONE_MARKER, {"checkpoint": ckpt.relative_to(train_dir).as_posix(), **info})


def find_given_checkpoint(weights: Path, model: str, seed: int) -> Path:
    """A user-given checkpoint for (model, seed).

    Looked for as ``<weights>/<model>/seed_<s>/`` (the layout of a sweep's ``work/train``), then
    ``<weights>/seed_<s>/`` (what ``train_seeds`` writes for one model), then ``<weights>/<model>_seed<s>.pt``.
    """
    for folder in (weights / model / f"seed_{seed}", weights / f"seed_{seed}"):
        if folder.is_dir():
            ckpt = finished_checkpoint(folder) or _checkpoint_in(folder)
            if ckpt is not None:
                return ckpt
    for suffix in CHECKPOINT_SUFFIXES:
        p = weights / f"{model}_seed{seed}{suffix}"
        if p.is_file():
            return p
    raise CheckpointError(f"no checkpoint for {model} seed {seed} under {weights}",
                          f"put it at {weights}/{model}/seed_{seed}/model.pt (or {weights}/{model}_seed{seed}.pt)")


def train_one(model: str, seed: int, data: str, out: Path, epochs: int, limit_train: int | None,
              limit_val: int | None, batch_size: int, threads: int | None) -> Path:
    """Train one (model, seed) into ``out`` and return its final checkpoint.

    ``resume=True``: a run interrupted mid-way continues from its last epoch checkpoint (the train
    stage refuses if the settings changed), so even a half-finished hour of training is not lost.
    """
    from ghostnet_edge.train import TrainConfig, train

    cfg = TrainConfig(model=model, data=data, seed=seed, epochs=epochs, out=out, limit_train=limit_train,
                      limit_val=limit_val, batch_size=batch_size, threads=threads, resume=True, progress=False)
    result = train(cfg)
    ckpt = Path(result.checkpoint)
    _mark_done(out, ckpt, {"final_top1": result.final_top1, "epochs_done": result.epochs_done,
                           "seconds": round(result.seconds, 1)})
    return ckpt


# ---- calibration images ------------------------------------------------------------------------------
def calibration_images(data: str, count: int, seed: int = 0) -> Any:
    """A seeded class-balanced draw of ``count`` images of ``data``'s *training* split, as a data set.

    Handed to the export as it is (``ExportConfig.calib``): the images are decoded once, in memory,
    with the exported model's own preprocessing, and nothing is written to disk.
    """
    from ghostnet_edge.data.datasets import open_dataset

    return open_dataset(data, "train").subset(count, seed=seed)


def noise_images(count: int, size: int, seed: int) -> Any:
    """Seeded random-noise images, uint8 ``(count, size, size, 3)``, for the latency-only INT8 models
    (no real images at hand).

    Fine for timing (INT8 kernels cost the same whatever the scales), meaningless for accuracy; the
    curve's notes say which calibration was used.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8) for _ in range(count)])


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name)) or "_"


# ---- export ------------------------------------------------------------------------------------------
def artifact_path(export_dir: Path, fmt: str) -> Path | None:
    name = FORMATS[fmt].file
    return None if name is None else export_dir / name


def export_done(out: Path, formats: list[str]) -> bool:
    """The export folder is complete (the export stage swaps it in whole) and holds every needed format."""
    if not (out / "manifest.json").is_file():
        return False
    return all((p := artifact_path(out, f)) is not None and p.is_file() for f in formats)


def export_one(source: Path | str, out: Path, formats: list[str], calib: Any, num_calib: int, seed: int,
               threads: int | None = None) -> None:
    """ONNX/TFLite (FP32, and INT8 when asked) of a checkpoint, or of a model name with random weights.

    Our format names map onto the export stage's: ``onnx``/``onnx-int8`` -> "onnx",
    ``tflite``/``tflite-int8`` -> "tflite", any ``*-int8`` -> ``int8=True``.
    """
    from ghostnet_edge.export.pipeline import ExportConfig, export_artifacts

    kinds = tuple(dict.fromkeys(FORMATS[f].kind for f in formats if FORMATS[f].kind != "torch"))
    int8 = any(FORMATS[f].precision == "int8" for f in formats)
    is_file = Path(str(source)).suffix in CHECKPOINT_SUFFIXES
    cfg = ExportConfig(checkpoint=Path(source) if is_file else None, model=None if is_file else str(source),
                       calib=calib, out=out, formats=kinds, int8=int8, num_calib=num_calib, seed=seed,
                       force=True, threads=threads)
    export_artifacts(cfg)


# ---- runtime -----------------------------------------------------------------------------------------
def evaluate_one(artifact: Path, fmt: str, data: str, limit: int | None, batch_size: int,
                 threads: int = 1) -> dict[str, Any]:
    """Top-1/top-5 (percent) of one artifact (or checkpoint) on the evaluation split of ``data``.

    Every format goes through the runtime stage's ``evaluate_artifact`` so all of them see the very
    same images (same class-balanced ``limit`` subset) through the same preprocessing.
    """
    import torch

    from ghostnet_edge.runtime.evaluate import evaluate_artifact

    # The PyTorch path runs in this process: hold it to `threads` too (two OpenMP threads on a busy
    # 2-core machine made a 359-image evaluation take 25 s), then give the caller its setting back.
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        res = evaluate_artifact(artifact, data, EVAL_SPLIT, batch_size=batch_size, limit=limit, threads=threads)
    finally:
        torch.set_num_threads(before)
    return {"artifact": str(artifact), "format": fmt, "split": EVAL_SPLIT, "top1_pct": float(res["top1"]),
            "top5_pct": res.get("top5"), "n": res.get("n")}


def bench_one(artifact: Path | str, fmt: str, target: str, runs: int, warmup: int, seconds: float,
              threads: int) -> dict[str, Any]:
    """p50 latency (ms) or guest instructions per inference of one artifact on one target.

    ``artifact`` may be a model name for PyTorch (random weights: eager latency does not depend on them).
    A result whose status is not "ok" raises, so the sweep records it as failed with the runner's reason.
    """
    from ghostnet_edge.runtime.bench import bench
    from ghostnet_edge.runtime.config import BenchConfig

    cfg = BenchConfig(threads=threads, warmup=warmup, min_runs=runs, min_seconds=seconds)
    results = bench([str(artifact)], target, cfg)
    if not results:
        raise TargetError(f"{target} returned no measurement for {artifact}")
    res = results[0]
    raw = res.to_dict()
    if res.status != "ok":
        raise TargetError(f"{target}: {res.status}: {res.error or 'no reason given'}")
    lat = res.latency_ms or {}
    instr = res.instructions or {}
    return {"artifact": str(artifact), "format": fmt, "target": target, "latency_ms_p50": lat.get("p50"),
            "instructions": instr.get("per_inference"), "raw": raw}
