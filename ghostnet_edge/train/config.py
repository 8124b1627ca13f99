"""What a training run is asked to do (:class:`TrainConfig`) and what it produced (:class:`TrainResult`).

Accuracies are in percent everywhere (top-1 73.98 like the paper and the published checkpoint name).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ghostnet_edge.errors import GhostEdgeError

SCHEDULES = ("cosine", "onecycle")

# Fields that shape the trajectory of a run: a resumed run must agree with the checkpoint on all of them,
# otherwise "resume" would silently become a different experiment.
TRAJECTORY_FIELDS = (
    "model", "data", "val_data", "epochs", "batch_size", "lr", "momentum", "nesterov", "weight_decay",
    "schedule", "warmup_epochs", "label_smoothing", "seed", "limit_train", "limit_val", "split_seed",
    "val_fraction", "channels_last", "bf16",
)

# Fields that say how or where this invocation runs, not what it trains: kept out of checkpoints so that a
# resumed run (or the same run in another folder) writes the same bytes as an uninterrupted one.
RUN_CONTROL_FIELDS = ("resume", "progress", "out")

DEVICES = ("cpu", "cuda")


@dataclass
class TrainConfig:
    """One training run. ``channels_last``/``bf16`` None mean the default: off, on every CPU."""

    model: str = "ghostnet_cifar_100"
    data: str = "digits"
    val_data: str | None = None          # a separate eval source; None: the data's own val/test split
    epochs: int = 10
    batch_size: int = 128                # global batch: split over ranks when run under torchrun
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4           # not applied to BatchNorm weights and biases
    schedule: str = "cosine"             # "cosine" | "onecycle"
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    seed: int = 0
    out: Path = Path("runs/train")
    channels_last: bool | None = None
    bf16: bool | None = None
    threads: int | None = None           # torch intra-op threads; None: cores / ranks
    limit_train: int | None = None       # class-balanced seeded subset for short budgets
    limit_val: int | None = None
    resume: bool = False
    skip_bad_images: bool = False
    eval_batch_size: int = 256
    split_seed: int = 0                  # the train/val split of data sets that have none (digits, flat folders)
    val_fraction: float = 0.2
    progress: bool = True
    # Where the SGD steps run. Not a trajectory field: a run started on a GPU may be resumed on a CPU (and
    # the other way round); it is recorded in the checkpoint, and GPU kernels are not bit-reproducible
    # across GPU models, so the bytes of a GPU run repeat only on the same GPU and software.
    device: str = "cpu"

    def __post_init__(self) -> None:
        self.out = Path(self.out)

    def validate(self) -> None:
        """Raise :class:`GhostEdgeError` for values no run could use."""
        def bad(what: str, hint: str) -> GhostEdgeError:
            return GhostEdgeError(f"invalid training setting: {what}", hint)

        if self.epochs < 1:
            raise bad(f"--epochs {self.epochs}", "train for at least 1 epoch")
        if self.batch_size < 1:
            raise bad(f"--batch-size {self.batch_size}", "use a positive batch size, e.g. 128")
        if not self.lr > 0:
            raise bad(f"--lr {self.lr}", "use a positive learning rate, e.g. 0.1")
        if self.schedule not in SCHEDULES:
            raise bad(f"schedule {self.schedule!r}", f"use one of {', '.join(SCHEDULES)}")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise bad(f"warm-up of {self.warmup_epochs} epochs", "use fewer warm-up epochs than epochs")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise bad(f"label smoothing {self.label_smoothing}", "use a value in [0, 1), e.g. 0.1")
        if self.seed < 0:
            raise bad(f"--seed {self.seed}", "seeds are non-negative integers")
        if self.threads is not None and self.threads < 1:
            raise bad(f"--threads {self.threads}", "use at least 1 thread")
        if self.device.split(":")[0] not in DEVICES:
            raise bad(f"--device {self.device}", f"use one of {', '.join(DEVICES)} (or cuda:N)")
        for name in ("limit_train", "limit_val"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise bad(f"--{name.replace('_', '-')} {value}", "leave it out to use all images")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["out"] = str(self.out)
        return d

    def recorded(self) -> dict[str, Any]:
        """What a checkpoint records of the run: everything but the run-control flags."""
        return {k: v for k, v in self.to_dict().items() if k not in RUN_CONTROL_FIELDS}

    def trajectory(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in TRAJECTORY_FIELDS}


@dataclass
class TrainResult:
    """Where a run's files are and how it ended. ``checkpoint`` is the final model (``model.pt``)."""

    out: Path
    checkpoint: Path
    last_checkpoint: Path
    best_checkpoint: Path | None
    final_top1: float | None
    final_top5: float | None
    best_top1: float | None
    epochs_done: int
    history: list[dict[str, Any]]
    seconds: float
    speed: dict[str, Any]
    resumed_from_epoch: int = 0
    skipped_images: int = 0
    rank_fingerprints: list[str] = field(default_factory=list)   # sha256 of each rank's final weights

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for key in ("out", "checkpoint", "last_checkpoint", "best_checkpoint"):
            d[key] = None if d[key] is None else str(d[key])
        return d
