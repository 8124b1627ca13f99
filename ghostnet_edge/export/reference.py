"""PyTorch's own logits: the reference every exported artifact is checked against."""

from __future__ import annotations

from typing import Any

import numpy as np

from ghostnet_edge.runtime.backends import EVAL_BATCH


def writable(batch: np.ndarray) -> np.ndarray:
    """``batch`` as a contiguous array PyTorch may wrap: cached image tensors are mapped read-only, and
    ``torch.from_numpy`` warns on (and must not write to) a read-only array, so those are copied."""
    return np.ascontiguousarray(batch) if batch.flags.writeable else np.array(batch, copy=True)


def run_torch(model: Any, x: np.ndarray, batch: int = EVAL_BATCH) -> np.ndarray:
    """Reference logits from the PyTorch model in eval mode."""
    import torch

    model = model.eval()
    outs = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            outs.append(model(torch.from_numpy(writable(x[i:i + batch]))).float().numpy())
    return np.concatenate(outs)


def torch_float_error(model: Any, x: np.ndarray, ref: np.ndarray) -> float:
    """max |float32 logits - float64 logits| of ``model`` on ``x``: how far PyTorch's own float32 result
    is from the exact one, the floor under any float32 artifact's agreement with it."""
    import copy

    import torch

    exact = copy.deepcopy(model).double().eval()
    outs = []
    with torch.no_grad():
        for i in range(0, len(x), EVAL_BATCH):
            outs.append(exact(torch.from_numpy(writable(x[i:i + EVAL_BATCH])).double()).numpy())
    return float(np.max(np.abs(np.concatenate(outs) - np.asarray(ref, np.float64))))
