"""The network an export converts: loaded from a checkpoint or built by name, and put in its deployed
form (re-parameterisable branches folded, checked against the unfolded network)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ghostnet_edge.errors import ExportError
from ghostnet_edge.export.config import ExportConfig


def load_for_export(cfg: ExportConfig, warnings: list[str]) -> tuple[Any, Any, dict[str, Any], bool]:
    """The model, its spec and metadata, and whether its weights are trained."""
    import torch

    from ghostnet_edge.models import load_model

    if cfg.checkpoint is not None:
        model, spec, meta = load_model(cfg.checkpoint, arch=cfg.model)
        return model, spec, meta, True
    # Named model, random weights: seeded so the same command gives the same files.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(cfg.seed))
        model, spec, meta = load_model(cfg.model)
    from ghostnet_edge.models.reparam import has_branches, reparameterize

    if has_branches(model):
        # Random weights have nothing to keep, so the deployed form is exported directly. With default
        # BatchNorm statistics an untrained GhostNetV3's summed branches make activations grow by orders
        # of magnitude per block (logits ~1e8), and no runtime agrees with another on such numbers: the
        # statistics are first estimated on seeded noise, as a training step would, so the network is
        # numerically sane and its checks mean what they say.
        estimate_bn_statistics(model, spec.input_size, int(cfg.seed))
        model = reparameterize(model)
    warnings.append(f"{spec.name} has random weights (no checkpoint given): the export pipeline is exercised, "
                    "but its accuracy and INT8 agreement mean nothing")
    return model, spec, meta, False


def deployed_form(model: Any) -> Any:
    """The network to convert: training-time branches (GhostNetV3, RepGhostNet) folded into single
    convolutions; any other network as it is. :func:`check_fold` checks the fold once images exist."""
    from ghostnet_edge.models.reparam import has_branches, reparameterize

    return reparameterize(model).eval() if has_branches(model) else model


def check_fold(folded: Any, xv: np.ndarray, ref: np.ndarray, tolerance: float) -> str:
    """The folded network must give the unfolded one's logits ``ref`` on the verification images within
    float rounding (the FP32 tolerance, relative above |logit| 1), else nothing is exported; returns
    the line the export reports."""
    from ghostnet_edge.export.reference import run_torch

    diff = float(np.abs(run_torch(folded, xv) - ref).max())
    allowed = tolerance * max(1.0, float(np.abs(ref).max()))
    if not diff <= allowed:
        raise ExportError(f"folding the re-parameterisable branches changed the logits by {diff:.3g} "
                          f"(allowed {allowed:.3g}); nothing was written",
                          "the checkpoint's BatchNorm statistics may be broken; check it with `ghostedge eval`")
    return (f"re-parameterised: training-time branches folded into single convolutions before "
            f"conversion (folded vs unfolded logits: max |diff| {diff:.2e})")


def estimate_export_bytes(model: Any, cfg: ExportConfig) -> int:
    """Free space an export needs at its peak: every artifact plus the quantizers' temporary models.

    Per fp32 weight byte: model.onnx 1, model_fp32.tflite 1, the two INT8 models 0.25 each, and
    onnxruntime's quantizer and the per-layer report keep a temporary copy of the fp32 model (1); then
    4 MiB for reports, labels and file-system slack. Measured on GhostNet 0.5x (5.3 MB of weights): a
    complete FP32+INT8 ONNX+TFLite export fits in 17 MiB but not in 12 MiB; this estimates 21.6 MiB.
    """
    weight_bytes = 4 * sum(int(p.numel()) for p in model.parameters())
    per_byte = 1.0 + (1.0 if "tflite" in cfg.formats else 0.0)
    if cfg.int8:
        per_byte += 0.25 * len(cfg.formats) + (1.0 if "onnx" in cfg.formats else 0.0)
    return int(weight_bytes * per_byte) + 4 * 2**20


def estimate_bn_statistics(model: Any, input_size: tuple[int, ...], seed: int, batches: int = 4) -> None:
    """Set every BatchNorm's running mean/var from a few seeded noise batches (cumulative average)."""
    import torch

    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None   # cumulative moving average over the batches below
    gen = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn(8, *input_size, generator=gen))
    for bn, momentum in zip(bns, saved, strict=True):
        bn.momentum = momentum
    model.eval()
