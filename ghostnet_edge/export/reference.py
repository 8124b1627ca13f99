"""PyTorch's own logits: the reference every exported artifact is checked against."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from ghostnet_edge.runtime.backends import EVAL_BATCH


def writable(batch: np.ndarray) -> np.ndarray:
    """``batch`` as a contiguous array PyTorch may wrap: cached image tensors are mapped read-only, and
    ``torch.from_numpy`` warns on (and must not write to) a read-only array, so those are copied."""
    return np.ascontiguousarray(batch) if batch.flags.writeable else np.array(batch, copy=True)


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run PyTorch with ``threads`` intra-op threads, and give callers (the curve sweep) their own setting
    back. An export holds PyTorch to one thread fewer than the cores while another of its processes works
    (the TFLite converter, the image prefetch): an OpenMP pool whose second thread shares a busy core waits
    on it at every operator. The ``onnx_export`` stage of ``benchmarks/export_time.py`` (GhostNet 1.0x,
    one traced forward pass) took 1.38-1.80 s that way and 1.07-1.22 s on one thread, in six alternated
    runs on the project's AMD EPYC (``docs/results/export_time_amd.md``)."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


# PyTorch's reference runs a few images at a time: its convolutions then work in the CPU's caches. GhostNet
# 1.0x at 224, 32 images, one thread on the project's AMD EPYC: 0.49 s in batches of 16, 0.39 s in batches
# of 4 (benchmarks/export_parts.py, docs/results/export_parts_amd.md). The logits differ in the last bits
# only (3e-8 there: a batch's size changes how the convolutions split their work), far inside every check's
# tolerance.
REFERENCE_PIXEL_BUDGET = 4 * 224 * 224


def reference_batch(pixels_per_image: int) -> int:
    """Images per PyTorch call of :func:`run_torch`: as many as fit REFERENCE_PIXEL_BUDGET, at least one."""
    return max(1, REFERENCE_PIXEL_BUDGET // max(1, pixels_per_image))


def run_torch(model: Any, x: np.ndarray, batch: int | None = None) -> np.ndarray:
    """Reference logits from the PyTorch model in eval mode (inference mode: the same kernels as
    ``no_grad``, so the same numbers, without autograd's bookkeeping), ``batch`` images a call
    (default: :func:`reference_batch`)."""
    import torch

    batch = batch or reference_batch(int(np.prod(x.shape[2:])))
    model = model.eval()
    outs = []
    with torch.inference_mode():
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
