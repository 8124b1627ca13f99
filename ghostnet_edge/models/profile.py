"""Parameter and multiply-accumulate (MAC) counts, in total and per stage.

What is counted: multiply-accumulates of ``nn.Conv2d`` and ``nn.Linear`` layers (including the 1x1
convs of squeeze-excite on 1x1 maps), one MAC per weight per output position. BatchNorm, activations,
pooling, additions and the SE gate's elementwise product are not counted. That is the convention of
the GhostNet paper and of MobileNet/torchvision, whose "FLOPs" are these MACs, so our totals compare
directly with Table 7 (GhostNet 1.0x: 141M) and Tables 3-5 (VGG-16 on CIFAR-10: 313M).

Counts come from forward hooks on one dummy batch, so they follow whatever the network really computes
(Ghost slices, strides, the small-input stem) without a second description of the architecture.
GhostNetV2/V3's DFC attention convs (``short_conv``, on half-resolution maps) are ordinary convs and
count; its average pooling, nearest upsampling and sigmoid gate do not. This equals what timm reports
for these models with torch's ``FlopCounterMode`` (which counts only convolution and matrix-multiply
ops, bias additions excluded) halved to MACs: 167.0M for ghostnetv2_100, 142.4M for repghostnet_100.
Re-parameterisable networks (GhostNetV3, RepGhostNet) are reported in their folded, deployed form by
:func:`describe_model`: the training branches are not what a phone runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn


@dataclass
class StageMacs:
    """One row of the per-stage report."""

    name: str
    macs: int
    params: int
    output_shape: tuple[int, ...]   # (C, H, W) or (features,) of the stage's last layer, batch dim dropped


@dataclass
class MacsReport:
    """Totals and per-stage counts for one input size (batch 1)."""

    input_size: tuple[int, int, int]
    total_macs: int
    total_params: int
    stages: list[StageMacs] = field(default_factory=list)

    def stage(self, name: str) -> StageMacs:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(f"no stage {name!r}; stages are {[s.name for s in self.stages]}")

    def to_dict(self) -> dict:
        return asdict(self)


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (BatchNorm running statistics are buffers and are not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def conv_macs(module: nn.Conv2d, output: torch.Tensor) -> int:
    """MACs of one conv for one sample: output elements x (input channels per group x kernel area)."""
    per_output = (module.in_channels // module.groups) * module.kernel_size[0] * module.kernel_size[1]
    return int(output[0].numel()) * per_output


def linear_macs(module: nn.Linear, output: torch.Tensor) -> int:
    """MACs of one linear layer for one sample."""
    return int(output[0].numel()) * module.in_features


def stage_of(model: nn.Module, qualname: str) -> str:
    """The stage a sub-module belongs to.

    A model may map its top-level children to labels with ``STAGE_ALIASES`` (GhostNet: ``conv_stem`` ->
    ``stem``). Otherwise the children of a top-level ``nn.Sequential`` (``blocks``, ``features``) are
    stages of their own (``blocks.3``), and any other top-level child is one stage.
    """
    parts = qualname.split(".")
    aliases: dict[str, str] = getattr(model, "STAGE_ALIASES", {})
    if len(parts) >= 2 and ".".join(parts[:2]) in aliases:
        return aliases[".".join(parts[:2])]
    if parts[0] in aliases:
        return aliases[parts[0]]
    top = getattr(model, parts[0], None)
    if isinstance(top, nn.Sequential | nn.ModuleList) and len(parts) >= 2:
        return f"{parts[0]}.{parts[1]}"
    return parts[0]


def profile_macs(model: nn.Module, input_size: tuple[int, int, int] | tuple[int, int] | int) -> MacsReport:
    """Run one zero batch through ``model`` and report MACs and parameters per stage.

    ``input_size`` is (C, H, W), (H, W) (3 channels) or a side length. The model is put in eval mode for
    the dummy pass and its previous mode is restored; its weights are not changed.
    """
    if isinstance(input_size, int):
        input_size = (3, input_size, input_size)
    elif len(input_size) == 2:
        input_size = (3, *input_size)
    input_size = tuple(int(v) for v in input_size)

    order: list[str] = []
    macs: dict[str, int] = {}
    shapes: dict[str, tuple[int, ...]] = {}

    def hook(name: str):
        stage = stage_of(model, name)

        def fn(module: nn.Module, _inp, output) -> None:
            if not isinstance(output, torch.Tensor):
                return
            if stage not in macs:
                order.append(stage)
                macs[stage] = 0
            if isinstance(module, nn.Conv2d):
                macs[stage] += conv_macs(module, output)
            elif isinstance(module, nn.Linear):
                macs[stage] += linear_macs(module, output)
            shapes[stage] = tuple(output.shape[1:])

        return fn

    handles = [m.register_forward_hook(hook(name)) for name, m in model.named_modules()
               if name and not list(m.children())]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            param = next(model.parameters(), None)
            device = param.device if param is not None else torch.device("cpu")
            model(torch.zeros((1, *input_size), device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    params: dict[str, int] = {}
    for name, p in model.named_parameters():
        stage = stage_of(model, name.rsplit(".", 1)[0])
        params[stage] = params.get(stage, 0) + p.numel()
    stages = [StageMacs(s, macs[s], params.get(s, 0), shapes.get(s, ())) for s in order]
    return MacsReport(input_size=input_size, total_macs=sum(macs.values()), total_params=count_params(model),
                      stages=stages)


def describe_model(model: str, input_size: int | None = None, num_classes: int | None = None,
                   arch: str | None = None) -> dict:
    """Parameters and MACs of a model name or checkpoint file, total and per stage, as a JSON-ready dict.

    ``input_size`` (a square side) is checked with ``check_input_size``; by default the spec's size is used.
    ``arch`` names the network of a checkpoint that has no ghostedge meta. This is what ``ghostedge info``
    prints. A re-parameterisable network is profiled folded; ``params_trained`` then gives its parameter
    count with the training branches.
    """
    from ghostnet_edge.models.checkpoint import load_model
    from ghostnet_edge.models.registry import check_input_size
    from ghostnet_edge.models.reparam import has_branches, reparameterize

    net, spec, meta = load_model(model, num_classes=num_classes, arch=arch)
    h, w = check_input_size(spec, (input_size, input_size)) if input_size is not None else spec.input_size[1:]
    trained_params = count_params(net) if has_branches(net) else None
    report = profile_macs(reparameterize(net), (spec.input_size[0], h, w))
    out = {
        "model": spec.name, "arch": spec.arch, "width": spec.width, "num_classes": spec.num_classes,
        "input_size": list(report.input_size), "params": report.total_params, "macs": report.total_macs,
        "stages": [{"name": s.name, "output_shape": list(s.output_shape), "params": s.params, "macs": s.macs}
                   for s in report.stages],
        "spec": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(spec).items()},
    }
    if trained_params is not None:
        # params/macs/stages above are the folded network's; this is the count while training
        out["params_trained"] = trained_params
    if meta:
        out["checkpoint"] = {k: meta.get(k) for k in ("seed", "epochs_done", "epochs_total", "accuracy")
                             if meta.get(k) is not None}
    return out
