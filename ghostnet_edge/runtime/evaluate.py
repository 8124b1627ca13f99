"""``eval``: top-1/top-5 of an exported artifact on a data set, and its agreement with PyTorch.

The images go through the data stage's ``open_dataset`` + ``Preprocess`` with the artifact's *own*
preprocessing parameters (``manifest.json`` next to it, else the metadata embedded in the .tflite /
.onnx file, else the named model's defaults), so an artifact is scored exactly as its checkpoint was
during training. INT8 models get their input quantised and their output dequantised with their own
scale/zero point (``backends``/``device_runner``). PyTorch checkpoints and model names go to the
training stage's ``evaluate_checkpoint``; both paths report accuracies in percent.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ghostnet_edge.errors import GhostEdgeError
from ghostnet_edge.runtime.artifacts import ArtifactInfo, describe_meta, inspect_artifact


def topk_hits(logits: np.ndarray, labels: np.ndarray, k: int) -> int:
    """How many labels are among the ``k`` largest logits of their row (k capped at the class count)."""
    k = min(k, logits.shape[1])
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return int((top == labels[:, None]).any(axis=1).sum())


def artifact_preprocess(info: ArtifactInfo, model: str | None = None) -> tuple[dict[str, Any], list[str] | None]:
    """The preprocessing (spec-like dict) and class names an artifact was exported with.

    Looked up in order: ``manifest.json`` / ONNX metadata (already in ``info.meta``), the TFLite file's
    embedded metadata, then the model name (``model`` argument, the manifest's, or the file stem).
    """
    meta = dict(info.meta)
    if info.format == "tflite" and ("preprocess" not in meta or "class_names" not in meta):
        meta = {**describe_meta(_tflite_metadata(info.path)), **meta}
    pre = meta.get("preprocess")
    if pre is None:
        from ghostnet_edge.errors import ModelError
        from ghostnet_edge.models import get_spec

        for name in (model, meta.get("model"), info.model):
            if not name:
                continue
            try:
                spec = get_spec(name)
            except ModelError:
                continue
            pre = {"input_size": list(spec.input_size), "mean": list(spec.mean), "std": list(spec.std),
                   "resize_size": spec.resize_size, "interpolation": spec.interpolation}
            break
    if pre is None:
        raise GhostEdgeError(f"cannot tell how images must be preprocessed for {info.label}: no manifest.json "
                             "next to it, no embedded metadata, and its name is not a model name",
                             "keep the export folder's manifest.json next to the artifact, or pass --model NAME "
                             "(e.g. --model ghostnet_100)")
    return pre, meta.get("class_names") or meta.get("labels")


def _tflite_metadata(path: Path | None) -> dict[str, Any]:
    """The export stage's embedded JSON (labels, preprocessing); {} when absent or unreadable."""
    if path is None:
        return {}
    try:
        from ghostnet_edge.export.tflite.metadata import read_embedded_metadata
    except ImportError:
        return {}
    try:
        md = read_embedded_metadata(path)
    except GhostEdgeError:
        return {}
    return {"preprocess": md.get("preprocessing"), "class_names": md.get("labels")}


def evaluate_artifact(artifact: str | Path, data: str | Path, split: str = "val", reference: str | Path | None = None,
                      batch_size: int = 64, limit: int | None = None, skip_bad_images: bool = False,
                      runtime: str = "auto", threads: int = 1, model: str | None = None) -> dict[str, Any]:
    """Top-1/top-5 (percent) of ``artifact`` on ``data``'s ``split``, and agreement with ``reference``.

    ``limit`` evaluates a class-balanced subset (seed 0, the same images as ``evaluate_checkpoint``).
    ``agreement_with_reference`` is the percentage of images on which the artifact's top-1 class equals
    the PyTorch reference's (null without ``reference``).
    """
    if batch_size < 1:
        raise GhostEdgeError(f"--batch-size must be >= 1 (got {batch_size})", "e.g. --batch-size 64")
    info = inspect_artifact(artifact)
    t0 = time.perf_counter()
    if info.format == "torch":
        from ghostnet_edge.train.evaluate import evaluate_checkpoint

        res = evaluate_checkpoint(info.spec, data, split, batch_size, limit, skip_bad_images)
        return {"artifact": str(artifact), "format": "torch", "precision": "fp32", "runtime": "torch",
                **res, "agreement_with_reference": None, "reference": None,
                "seconds": time.perf_counter() - t0}

    from ghostnet_edge.data.datasets import align_classes, open_dataset
    from ghostnet_edge.runtime.backends import load_runner

    pre, class_names = artifact_preprocess(info, model)
    runner = load_runner(info.path, runtime=runtime, threads=threads)
    if tuple(runner.input_size) != tuple(pre["input_size"]):
        raise GhostEdgeError(f"{info.label} takes {list(runner.input_size)} inputs but its preprocessing says "
                             f"{list(pre['input_size'])}", "re-export the model; its manifest does not match it")
    dataset = open_dataset(data, split, spec=pre, skip_bad_images=skip_bad_images)
    if not dataset.labelled:
        raise GhostEdgeError(f"{data} has no class labels, so accuracy cannot be measured",
                             "evaluate on a folder with one sub-folder per class (or an ImageNet/CIFAR layout)")
    dataset = align_classes(dataset, class_names, what=f"artifact {info.label}").subset(limit, seed=0)
    ref = load_runner(reference, runtime="torch", threads=threads) if reference is not None else None

    hits1 = hits5 = seen = agree = 0
    for start in range(0, len(dataset), batch_size):
        x, y = dataset.load_batch(range(start, min(start + batch_size, len(dataset))))
        if len(y) == 0:
            continue
        logits = runner.run(x)
        if int(y.max()) >= logits.shape[1]:
            raise GhostEdgeError(f"{data} has labels up to {int(y.max())} but {info.label} has {logits.shape[1]} "
                                 "outputs", "evaluate on data with the classes the model was trained on")
        hits1 += topk_hits(logits, y, 1)
        hits5 += topk_hits(logits, y, 5)
        seen += len(y)
        if ref is not None:
            agree += int((ref.run(x).argmax(1) == logits.argmax(1)).sum())
    if seen == 0:
        raise GhostEdgeError(f"no image of {data} could be evaluated", "check the data folder")
    return {
        "artifact": str(artifact), "format": info.format, "precision": info.precision, "model": info.model,
        "runtime": runner.info()["runtime"], "runtime_version": runner.info()["version"], "data": str(data),
        "split": split, "top1": 100.0 * hits1 / seen, "top5": 100.0 * hits5 / seen, "n": seen,
        "skipped": len(dataset.bad_images), "reference": str(reference) if reference is not None else None,
        "agreement_with_reference": (100.0 * agree / seen) if ref is not None else None,
        "preprocess": pre, "seconds": time.perf_counter() - t0,
    }

