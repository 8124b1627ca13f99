"""Top-1/top-5 (percent) of a PyTorch model on a data set, and of a checkpoint file on a data source."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ghostnet_edge.data.datasets import ImageDataset, align_classes, open_dataset
from ghostnet_edge.data.loader import iterate_batches
from ghostnet_edge.errors import DataError


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[int]:
    """How many of ``labels`` are among the top-k logits, for each k (k capped at the class count)."""
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices
    hits = top.eq(labels.view(-1, 1))
    return [int(hits[:, : min(k, kmax)].any(dim=1).sum()) for k in ks]


def autocast(bf16: bool, device: str = "cpu") -> contextlib.AbstractContextManager:
    device_type = torch.device(device).type
    return torch.autocast(device_type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def evaluate(
    model: nn.Module,
    dataset: ImageDataset,
    batch_size: int = 256,
    *,
    channels_last: bool = False,
    bf16: bool = False,
    ctx: Any = None,
    progress: bool = False,
    device: str = "cpu",
) -> dict[str, Any]:
    """``{"top1", "top5", "loss", "n", "skipped"}`` with accuracies in percent.

    Under distributed training (``ctx`` a DistContext) every rank scores its own shard, without
    padding so no image counts twice, and the counts are summed.
    """
    if not dataset.labelled:
        raise DataError(f"{dataset.source} has no class labels, so accuracy cannot be measured",
                        "evaluate on a folder with one sub-folder per class (or an ImageNet/CIFAR layout)")
    rank, world = (ctx.rank, ctx.world_size) if ctx is not None else (0, 1)
    num_classes = None
    was_training = model.training
    model.eval()
    correct1 = correct5 = seen = 0
    loss_sum = 0.0
    bar = progress_bar(progress and rank == 0, total=-(-len(dataset) // (batch_size * world)), desc="eval")
    with torch.inference_mode():
        for x, y in iterate_batches(dataset, batch_size, shuffle=False, rank=rank, world_size=world,
                                    pad_shards=False):
            if len(y) == 0:
                continue
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(bf16, device):
                logits = model(x)
            logits = logits.float()
            num_classes = logits.shape[1]
            if int(y.max()) >= num_classes:
                raise DataError(f"{dataset.source} has labels up to {int(y.max())} but the model has "
                                f"{num_classes} outputs", "evaluate on data with the classes the model was trained on")
            c1, c5 = topk_correct(logits, y)
            correct1, correct5, seen = correct1 + c1, correct5 + c5, seen + len(y)
            loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            bar.update(1)
    bar.close()
    model.train(was_training)
    skipped = len(dataset.bad_images)
    if ctx is not None:
        correct1, correct5, seen, loss_sum, skipped = ctx.sum([correct1, correct5, seen, loss_sum, skipped])
    if seen == 0:
        raise DataError(f"no image of {dataset.source} could be evaluated", "check the data folder")
    return {"top1": 100.0 * correct1 / seen, "top5": 100.0 * correct5 / seen, "loss": loss_sum / seen,
            "n": int(seen), "skipped": int(skipped)}


def evaluate_checkpoint(
    checkpoint: str | Path,
    data: str | Path,
    split: str = "val",
    batch_size: int = 128,
    limit: int | None = None,
    skip_bad_images: bool = False,
) -> dict[str, Any]:
    """Accuracy of a PyTorch checkpoint (or a model name: random weights) on ``data``'s ``split``.

    The data is preprocessed with the checkpoint's own input size and mean/std, and relabelled into the
    checkpoint's class order by name (a DataError names classes the model does not know).
    ``limit`` evaluates a class-balanced subset (seed 0).
    """
    from ghostnet_edge.models import load_model

    model, spec, meta = load_model(checkpoint)
    dataset = open_dataset(data, split, spec=spec, skip_bad_images=skip_bad_images)
    dataset = align_classes(dataset, meta.get("class_names"), what=f"checkpoint {checkpoint}")
    dataset = dataset.subset(limit, seed=0)
    result = evaluate(model, dataset, batch_size)
    return {"checkpoint": str(checkpoint), "model": spec.name, "data": str(data), "split": split, **result}


def progress_bar(enabled: bool, total: int, desc: str):
    """A tqdm bar (speed and ETA included) on stderr, or a silent stand-in."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="batch", leave=False, disable=not enabled, dynamic_ncols=True)
