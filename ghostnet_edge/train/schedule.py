"""Learning rate as a pure function of the step, and the weight-decay parameter groups.

The schedule is a function of the global step only, so resuming needs no scheduler object state:
the step counter in the checkpoint is the whole schedule state.
"""

from __future__ import annotations

import math

from torch import nn

ONECYCLE_START_DIV = 25.0      # onecycle starts at lr / 25 ...
ONECYCLE_END_DIV = 1e4         # ... and ends at lr / 25 / 1e4 (torch.optim.lr_scheduler.OneCycleLR defaults)
ONECYCLE_PCT_UP = 0.3          # share of steps spent rising when no warm-up is given


def lr_at(step: int, total_steps: int, base_lr: float, schedule: str = "cosine", warmup_steps: int = 0) -> float:
    """Learning rate for optimizer step ``step`` (0-based) of ``total_steps``.

    cosine: linear warm-up to ``base_lr`` over ``warmup_steps``, then half a cosine down to 0.
    onecycle: cosine rise from ``base_lr/25`` to ``base_lr`` (over the warm-up, or 30 % of the steps),
    then cosine fall to ``base_lr/25/1e4``.
    """
    total_steps = max(1, total_steps)
    step = min(max(step, 0), total_steps - 1)
    if schedule == "cosine":
        if step < warmup_steps:
            return base_lr * (step + 1) / warmup_steps
        span = max(1, total_steps - warmup_steps)
        return 0.5 * base_lr * (1.0 + math.cos(math.pi * (step - warmup_steps) / span))
    if schedule == "onecycle":
        up = warmup_steps if warmup_steps > 0 else max(1, int(ONECYCLE_PCT_UP * total_steps))
        start, end = base_lr / ONECYCLE_START_DIV, base_lr / ONECYCLE_START_DIV / ONECYCLE_END_DIV
        if step < up:
            return _cos_interp(start, base_lr, step / up)
        return _cos_interp(base_lr, end, (step - up) / max(1, total_steps - 1 - up))
    raise ValueError(f"unknown schedule {schedule!r}")


def _cos_interp(a: float, b: float, t: float) -> float:
    return b + (a - b) * 0.5 * (1.0 + math.cos(math.pi * min(max(t, 0.0), 1.0)))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: conv/linear weights decay; BatchNorm weights and all biases (1-D tensors) do not.

    Decaying BN scales and biases only pulls them towards 0 without regularising anything useful,
    and costs accuracy on small nets like GhostNet.
    """
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
