"""``train(config)``: seeded, resumable, optionally distributed SGD training of a registry model.

Why a resumed run ends byte-identical to an uninterrupted one: everything random is either a pure
function of ``(seed, epoch, sample)`` (data order, augmentation) or saved in ``last.pt`` after every
epoch (weights, BN statistics, optimizer momentum, torch RNG for dropout, the step counter that *is*
the LR schedule's state).

Files in ``out``: ``last.pt`` (every epoch, with optimizer/RNG state in ``extra``), ``best.pt`` (best
val top-1 so far), ``model.pt`` (final weights, written when the last epoch is done), ``metrics.jsonl``
(one line per epoch), ``config.json`` and ``result.json``. All are written atomically by rank 0.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ghostnet_edge.data.datasets import ImageDataset, align_classes, open_dataset, stratified_split
from ghostnet_edge.data.loader import num_batches, shard
from ghostnet_edge.errors import DataError, GhostEdgeError
from ghostnet_edge.train.config import TrainConfig, TrainResult
from ghostnet_edge.train.distributed import DistContext
from ghostnet_edge.train.evaluate import autocast, evaluate, progress_bar
from ghostnet_edge.train.schedule import lr_at, param_groups
from ghostnet_edge.train.speed import resolve_speed
from ghostnet_edge.utils.atomic import atomic_write_json, atomic_write_text, ensure_writable_dir
from ghostnet_edge.utils.seeding import seed_everything

LAST, BEST, FINAL, METRICS = "last.pt", "best.pt", "model.pt", "metrics.jsonl"
BAR_EVERY = 25  # steps between progress-bar loss readings on a GPU

ModelFactory = Callable[[int], nn.Module]


def open_train_val(config: TrainConfig, spec: Any) -> tuple[ImageDataset, ImageDataset]:
    """Training set (augmented, limited) and validation set (eval preprocessing, limited).

    A folder without train/val sub-folders is split here (seeded, stratified by class) so the model
    is never scored on images it trained on.
    """
    kw = {"skip_bad_images": config.skip_bad_images, "split_seed": config.split_seed,
          "val_fraction": config.val_fraction}
    train_ds = open_dataset(config.data, "train", spec, train=True, **kw)
    if config.val_data is not None:
        val_ds = open_dataset(config.val_data, "val", spec, **kw)
    else:
        val_ds = open_dataset(config.data, "val", spec, **kw)
        if train_ds.unsplit:
            tr, va = stratified_split(train_ds.labels, config.val_fraction, config.split_seed)
            train_ds, val_ds = train_ds.select(tr), val_ds.select(va)
    if not train_ds.labelled:
        raise DataError(f"the training data {config.data} has no class labels",
                        "use one sub-folder per class (or a CIFAR/ImageNet layout, or 'digits')")
    if val_ds.classes != train_ds.classes:
        val_ds = align_classes(val_ds, train_ds.classes, what="the training data")
    # The subsets are part of the data definition, not of the training noise: they follow split_seed, so
    # a seed sweep compares training runs on the same images.
    return train_ds.subset(config.limit_train, config.split_seed), val_ds.subset(config.limit_val, config.split_seed)


def train(config: TrainConfig, model_factory: ModelFactory | None = None) -> TrainResult:
    """Run (or resume) one training; see the module docstring for what it writes.

    ``model_factory(num_classes)`` replaces the registry model (tests use a tiny network); the
    registry spec named by ``config.model`` still decides the preprocessing and the meta.
    Under ``torchrun`` it trains with DistributedDataParallel over gloo; ``batch_size`` is global.
    """
    config.validate()
    ctx = DistContext.from_env()
    try:
        return _Run(config, ctx, model_factory).run()
    finally:
        ctx.close()


class _Run:
    def __init__(self, config: TrainConfig, ctx: DistContext, model_factory: ModelFactory | None) -> None:
        from ghostnet_edge.models import create_model, get_spec

        self.cfg, self.ctx = config, ctx
        if config.batch_size % ctx.world_size:
            raise GhostEdgeError(f"--batch-size {config.batch_size} does not split over {ctx.world_size} processes",
                                 f"use a multiple of {ctx.world_size}")
        self.threads = config.threads or max(1, (os.cpu_count() or 1) // ctx.world_size)
        torch.set_num_threads(self.threads)
        self.device = resolve_device(config.device, ctx.world_size)
        self.out = ensure_writable_dir(config.out) if ctx.is_main else Path(config.out)
        self.spec = get_spec(config.model)
        self.train_ds, self.val_ds = open_train_val(config, self.spec)
        self.classes = list(self.train_ds.classes)
        seed_everything(config.seed)
        if model_factory is None:
            self.model = create_model(config.model, num_classes=len(self.classes), seed=config.seed)
        else:
            self.model = model_factory(len(self.classes))
            if not hasattr(self.model, "spec"):
                self.model.spec = get_spec(config.model, num_classes=len(self.classes))
        if ctx.active:  # dropout masks differ per rank, as they would for different samples
            torch.manual_seed(config.seed + 7919 * ctx.rank)
        self.speed = resolve_speed(config.channels_last, config.bf16, self.threads)
        if self.speed["channels_last"]:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.model = self.model.to(self.device)
        self.optimizer = torch.optim.SGD(param_groups(self.model, config.weight_decay), lr=config.lr,
                                         momentum=config.momentum, nesterov=config.nesterov)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        self.rank_batch = config.batch_size // ctx.world_size
        per_rank = len(shard(np.arange(len(self.train_ds)), ctx.rank, ctx.world_size))
        self.drop_last = per_rank >= self.rank_batch  # tiny data sets keep their only (short) batch
        self.steps_per_epoch = num_batches(per_rank, self.rank_batch, self.drop_last)
        self.total_steps = self.steps_per_epoch * config.epochs
        self.warmup_steps = int(round(config.warmup_epochs * self.steps_per_epoch))
        self.step, self.epoch, self.history, self.best_top1 = 0, 0, [], None
        self.resumed_from = 0

    # ---- state ------------------------------------------------------------------------------------

    def _meta(self, top1: float | None, top5: float | None) -> dict[str, Any]:
        cfg = self.cfg
        return {
            "class_names": self.classes, "num_classes": len(self.classes), "seed": cfg.seed,
            "epochs_done": self.epoch, "epochs_total": cfg.epochs, "accuracy": top1, "top5": top5,
            "data": str(cfg.data), "data_layout": self.train_ds.layout, "train_images": len(self.train_ds),
            "val_images": len(self.val_ds), "speed": self.speed, "world_size": self.ctx.world_size,
            "device": device_name(self.device),
            "train_config": cfg.recorded(),
        }

    def _save(self, name: str, with_state: bool) -> Path:
        from ghostnet_edge.models.checkpoint import save_checkpoint

        last = self.history[-1] if self.history else {}
        extra: dict[str, Any] = {}
        if with_state:
            extra = {"optimizer": self.optimizer.state_dict(), "step": self.step,
                     "torch_rng": torch.get_rng_state(), "cuda_rng": cuda_rng_state(self.device),
                     "history": self.history,
                     "best_top1": self.best_top1, "trajectory": self._trajectory()}
        return save_checkpoint(self.out / name, self.model, self._meta(last.get("val_top1"), last.get("val_top5")),
                               extra)

    def _trajectory(self) -> dict[str, Any]:
        return json.loads(json.dumps(self.cfg.trajectory(), default=str))

    def _maybe_resume(self) -> None:
        last = Path(self.cfg.out) / LAST
        if not last.is_file():
            if self.cfg.resume and self.ctx.is_main:
                # Said, not silent: a typo in --out would otherwise quietly restart hours of training.
                print(f"note: --resume: {self.cfg.out} holds no earlier run ({LAST}); starting a new run at epoch 1",
                      file=sys.stderr, flush=True)
            return
        if not self.cfg.resume:
            raise GhostEdgeError(f"{self.cfg.out} already holds a training run ({LAST})",
                                 "pass --resume to continue it, or choose another --out")
        from ghostnet_edge.models.checkpoint import load_checkpoint

        ckpt = load_checkpoint(last)
        saved = ckpt.extra.get("trajectory")
        if saved is None or "optimizer" not in ckpt.extra:
            raise GhostEdgeError(f"{last} has no optimizer state to resume from",
                                 "choose another --out to start a new run")
        differing = {k: (saved.get(k), v) for k, v in self._trajectory().items() if saved.get(k) != v}
        if differing:
            listed = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in differing.items())
            raise GhostEdgeError(f"cannot resume {last}: settings differ from the interrupted run ({listed})",
                                 "resume with the original settings, or choose another --out for a new run")
        self.model.load_state_dict(ckpt.state_dict)
        self.optimizer.load_state_dict(ckpt.extra["optimizer"])
        torch.set_rng_state(ckpt.extra["torch_rng"])
        if self.device.type == "cuda" and ckpt.extra.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(ckpt.extra["cuda_rng"], self.device)
        self.step = int(ckpt.extra["step"])
        self.history = list(ckpt.extra["history"])
        self.best_top1 = ckpt.extra.get("best_top1")
        self.epoch = self.resumed_from = int(ckpt.meta.get("epochs_done") or len(self.history))

    # ---- loop -------------------------------------------------------------------------------------

    def run(self) -> TrainResult:
        self._maybe_resume()
        cfg, ctx = self.cfg, self.ctx
        if ctx.is_main:
            atomic_write_json(self.out / "config.json", cfg.to_dict())
        net: nn.Module = self.model
        if ctx.active:
            net = nn.parallel.DistributedDataParallel(self.model)
        started = time.perf_counter()
        while self.epoch < cfg.epochs:
            record = self._train_epoch(net)
            self.history.append(record)
            self.epoch += 1
            improved = self.best_top1 is None or record["val_top1"] > self.best_top1
            if improved:
                self.best_top1 = record["val_top1"]
            if ctx.is_main:
                self._save(LAST, with_state=True)
                if improved:
                    self._save(BEST, with_state=False)
                atomic_write_text(self.out / METRICS, "".join(json.dumps(r) + "\n" for r in self.history))
                self._log(record)
            ctx.barrier()
        return self._finish(time.perf_counter() - started)

    def _train_epoch(self, net: nn.Module) -> dict[str, Any]:
        from ghostnet_edge.data.loader import iterate_batches, prefetch

        cfg, ctx = self.cfg, self.ctx
        t0 = time.perf_counter()
        net.train()
        # The loss is summed on the device and read once per epoch (and for the progress bar every
        # BAR_EVERY steps): reading it every step would make the host wait for each GPU step.
        loss_sum, seen, lr = torch.zeros((), dtype=torch.float64, device=self.device), 0, cfg.lr
        bar = progress_bar(cfg.progress and ctx.is_main, self.steps_per_epoch, f"epoch {self.epoch + 1}/{cfg.epochs}")
        batches = iterate_batches(self.train_ds, self.rank_batch, shuffle=True, seed=cfg.seed, epoch=self.epoch,
                                  rank=ctx.rank, world_size=ctx.world_size, drop_last=self.drop_last)
        if self.device.type == "cuda":
            batches = prefetch(batches)
        for x, y in batches:
            if self.device.type == "cuda":
                # Page-locked copies let the upload run behind the previous step instead of waiting for it.
                x, y = x.pin_memory(), y.pin_memory()
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            lr = lr_at(self.step, self.total_steps, cfg.lr, cfg.schedule, self.warmup_steps)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            if self.speed["channels_last"]:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(self.speed["bf16"], self.device.type):
                logits = net(x)
            loss = self.criterion(logits.float(), y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.step += 1
            loss_sum += loss.detach() * len(y)
            seen += len(y)
            bar.update(1)
            if self.device.type == "cpu" or self.step % BAR_EVERY == 0:
                elapsed = time.perf_counter() - t0
                bar.set_postfix(loss=f"{float(loss_sum) / seen:.3f}", img_s=f"{seen * ctx.world_size / elapsed:.0f}",
                                lr=f"{lr:.4f}")
        bar.close()
        loss_sum = float(loss_sum)
        train_seconds = time.perf_counter() - t0
        self._sync_buffers()
        loss_sum, seen_all = ctx.sum([loss_sum, seen])
        val = evaluate(self.model, self.val_ds, cfg.eval_batch_size, channels_last=self.speed["channels_last"],
                       bf16=self.speed["bf16"], ctx=ctx if ctx.active else None, progress=cfg.progress,
                       device=str(self.device))
        return {"epoch": self.epoch + 1, "train_loss": loss_sum / max(1.0, seen_all), "val_top1": val["top1"],
                "val_top5": val["top5"], "val_loss": val["loss"], "val_n": val["n"], "lr": lr,
                "images_per_s": seen_all / train_seconds if train_seconds > 0 else None,
                "seconds": time.perf_counter() - t0, "skipped_images": val["skipped"] + len(self.train_ds.bad_images)}

    def _sync_buffers(self) -> None:
        """Give every rank rank 0's BatchNorm statistics.

        DDP broadcasts buffers before each forward, so after the last step every rank holds statistics
        of its own last batch; evaluation and the checkpoint must all use the same (rank 0's) ones.
        """
        if self.ctx.active:
            import torch.distributed as dist

            for buf in self.model.buffers():
                dist.broadcast(buf, src=0)

    def _log(self, r: dict[str, Any]) -> None:
        if not self.cfg.progress:
            return
        from tqdm.auto import tqdm

        tqdm.write(f"epoch {r['epoch']}/{self.cfg.epochs}  loss {r['train_loss']:.4f}  "
                   f"val top-1 {r['val_top1']:.2f}%  top-5 {r['val_top5']:.2f}%  "
                   f"{r['images_per_s']:.0f} img/s  {r['seconds']:.1f} s")

    def _rank_fingerprints(self) -> list[str]:
        """Hash of every rank's weights; DDP must keep them identical, so a difference is a bug."""
        mine = state_fingerprint(self.model)
        if not self.ctx.active:
            return [mine]
        import torch.distributed as dist

        prints: list[str] = [""] * self.ctx.world_size
        dist.all_gather_object(prints, mine)
        if len(set(prints)) != 1:
            raise RuntimeError(f"distributed ranks ended with different weights: {prints}")
        return prints

    def _finish(self, seconds: float) -> TrainResult:
        cfg = self.cfg
        final = self.history[-1] if self.history else {}
        fingerprints = self._rank_fingerprints()
        if self.ctx.is_main:
            self._save(FINAL, with_state=False)
        result = TrainResult(
            out=Path(cfg.out), checkpoint=Path(cfg.out) / FINAL, last_checkpoint=Path(cfg.out) / LAST,
            best_checkpoint=Path(cfg.out) / BEST if (Path(cfg.out) / BEST).exists() else None,
            final_top1=final.get("val_top1"), final_top5=final.get("val_top5"), best_top1=self.best_top1,
            epochs_done=self.epoch, history=self.history, seconds=seconds, speed=self.speed,
            resumed_from_epoch=self.resumed_from, skipped_images=int(final.get("skipped_images", 0)),
            rank_fingerprints=fingerprints,
        )
        if self.ctx.is_main:
            atomic_write_json(Path(cfg.out) / "result.json", result.to_dict())
        self.ctx.barrier()
        return result


def state_fingerprint(model: nn.Module) -> str:
    """sha256 of a model's state_dict (names, dtypes, shapes and bytes), layout-independent."""
    import hashlib

    h = hashlib.sha256()
    for key, value in model.state_dict().items():
        t = value.detach().cpu().contiguous()
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def resolve_device(name: str, world_size: int = 1) -> torch.device:
    """The torch device for ``--device``; a clear error where it cannot be used."""
    device = torch.device(name)
    if device.type == "cuda":
        # cuBLAS is deterministic only with a fixed workspace; it reads this when its handle is made.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        if not torch.cuda.is_available():
            raise GhostEdgeError(f"--device {name}: torch sees no CUDA GPU here (torch {torch.__version__})",
                                 "train with --device cpu (the default), or on a machine with an NVIDIA GPU "
                                 "and a CUDA build of torch")
        if world_size > 1:
            raise GhostEdgeError("--procs runs CPU processes (DDP over gloo) and cannot share one GPU",
                                 "leave out --procs when training on --device cuda")
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise GhostEdgeError(f"--device {name}: there are only {torch.cuda.device_count()} GPUs",
                                 "use cuda:0 .. cuda:N-1")
        device = torch.device("cuda", index)
    return device


def device_name(device: torch.device) -> str:
    """``cpu`` or ``cuda:0 (NVIDIA H200)``: what the checkpoint records of where it was trained."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def cuda_rng_state(device: torch.device) -> torch.Tensor | None:
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def with_seed(config: TrainConfig, seed: int, out: Path) -> TrainConfig:
    """A copy of ``config`` for one seed of a sweep (resuming whatever that seed already has)."""
    return replace(config, seed=int(seed), out=Path(out), resume=True)
