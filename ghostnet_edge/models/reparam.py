"""Structural re-parameterisation: fold training-time parallel branches into the single convs that deploy.

GhostNetV3 trains every conv of its Ghost modules (and the stride-2 depthwise conv) as a sum of parallel
branches: several kxk conv+BN, a 1x1 conv+BN ("scale") and, where input and output channels pair up, a
BN-only identity ("skip"). RepGhostNet trains the cheap depthwise conv with a BN-only identity branch
added to it instead of GhostNet's concatenation. All of them are linear until the activation that follows
the sum, so in eval mode (BN with its running statistics) they equal ONE conv with a bias:

    sum_i BN_i(conv_i(x)) = conv(x; sum_i W_i * g_i/s_i) + sum_i (b_i - m_i * g_i/s_i)

with the 1x1 and identity kernels zero-padded to kxk at the centre. The folded network computes the
same function with fewer layers, which is what gets exported to phones.

The tensor arithmetic lives here; each re-parameterisable module (``ghostnet.py``) knows its own
branches and implements ``reparameterize_()`` with these helpers. :func:`reparameterize` folds a whole
network. Training-time checkpoints are kept as trained: folding is a deployment step, not a format.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ghostnet_edge.models.layers import ConvBnAct

# state_dict keys that exist only in one of the two forms of GhostNetV3 / RepGhostNet (timm's names):
# the training branches ("*_rpr_*", RepGhost's "fusion_bn"), or conv biases that only folding creates
# (the training form's convs feed a BatchNorm and have none).
TRAINING_MARKERS = ("_rpr_", ".fusion_bn.")
FOLDED_MARKERS = (".primary_conv.0.bias", ".cheap_operation.0.bias", ".cheap_operation.bias", ".conv_dw.bias")


def fuse_bn(weight: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold an eval-mode BatchNorm into the (bias-free) conv weight before it: returns (weight, bias)."""
    std = (bn.running_var + bn.eps).sqrt()
    scale = bn.weight / std
    return weight * scale.reshape(-1, 1, 1, 1), bn.bias - bn.running_mean * scale


def identity_kernel(channels: int, groups: int, kernel_size: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
    """The kxk kernel of a conv (``channels`` in and out, ``groups``) that returns its input unchanged."""
    per_group = channels // groups
    kernel = torch.zeros((channels, per_group, *kernel_size), dtype=like.dtype, device=like.device)
    idx = torch.arange(channels, device=like.device)
    kernel[idx, idx % per_group, kernel_size[0] // 2, kernel_size[1] // 2] = 1.0
    return kernel


def pad_kernel(kernel: torch.Tensor, kernel_size: tuple[int, int]) -> torch.Tensor:
    """Zero-pad a smaller odd kernel (a 1x1 branch) at the centre to ``kernel_size``.

    Valid because every branch of one fold uses 'same' padding (k // 2) and the same stride: a 1x1 conv
    with padding 0 reads exactly the centre tap of the kxk window.
    """
    dh, dw = kernel_size[0] - kernel.shape[2], kernel_size[1] - kernel.shape[3]
    if dh < 0 or dw < 0 or dh % 2 or dw % 2:
        raise ValueError(f"cannot centre a {tuple(kernel.shape[2:])} kernel in {kernel_size}")
    return F.pad(kernel, [dw // 2, dw // 2, dh // 2, dh // 2]) if dh or dw else kernel


def fold_branches(branches: Sequence[tuple[torch.Tensor | None, nn.BatchNorm2d]], target: nn.Conv2d
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of the one conv (geometry of ``target``) equal to the sum of conv+BN ``branches``.

    A branch is ``(conv weight, bn)``; ``None`` as weight is the BN-only identity branch. Smaller kernels
    are centre-padded to ``target``'s.
    """
    if not branches:
        raise ValueError("nothing to fold: no branches")
    ksize = (int(target.kernel_size[0]), int(target.kernel_size[1]))
    weight = torch.zeros_like(target.weight)
    bias = torch.zeros(target.out_channels, dtype=weight.dtype, device=weight.device)
    for w, bn in branches:
        if w is None:
            if target.in_channels != target.out_channels:
                raise ValueError("an identity branch needs as many output as input channels")
            w = identity_kernel(target.out_channels, target.groups, ksize, weight)
        w, b = fuse_bn(pad_kernel(w, ksize), bn)
        weight = weight + w
        bias = bias + b
    return weight, bias


def folded_conv(template: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor) -> nn.Conv2d:
    """A conv with ``template``'s geometry and bias, holding ``weight``/``bias`` (detached copies)."""
    conv = nn.Conv2d(template.in_channels, template.out_channels, template.kernel_size, template.stride,
                     template.padding, template.dilation, template.groups, bias=True,
                     device=template.weight.device, dtype=template.weight.dtype)
    with torch.no_grad():
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)
    return conv


@dataclass(frozen=True)
class RepBranches:
    """One conv that trains as parallel branches, kept on its owner module under timm's names.

    The branches are direct children of the owner (so checkpoint keys are timm's): ``{prefix}_rpr_skip``
    (BN only, the identity), ``{prefix}_rpr_conv`` (``convs`` kxk conv+BN, a ModuleList) and
    ``{prefix}_rpr_scale`` (1x1 conv+BN). The owner calls :meth:`build` in ``__init__``, ``self._x(self, x)``
    in ``forward`` and :meth:`fold` + :meth:`remove` when folding.
    """

    prefix: str
    convs: int
    scale: bool = False
    skip: bool = False

    @property
    def names(self) -> tuple[str, str, str]:
        return f"{self.prefix}_rpr_skip", f"{self.prefix}_rpr_conv", f"{self.prefix}_rpr_scale"

    def build(self, owner: nn.Module, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1,
              groups: int = 1) -> None:
        """Register the branches on ``owner`` (order skip, kxk, 1x1: timm's, hence its key order)."""
        if self.convs < 1:
            raise ValueError("a re-parameterisable conv needs at least one kxk branch")
        skip, convs, scale = self.names
        if self.skip:
            if in_chs != out_chs or stride != 1:
                raise ValueError(f"an identity branch needs in == out channels and stride 1 "
                                 f"(got {in_chs}->{out_chs}, stride {stride})")
            owner.add_module(skip, nn.BatchNorm2d(out_chs))
        owner.add_module(convs, nn.ModuleList(
            ConvBnAct(in_chs, out_chs, kernel_size, stride, act_layer=None, groups=groups) for _ in range(self.convs)))
        if self.scale:
            owner.add_module(scale, ConvBnAct(in_chs, out_chs, 1, stride, act_layer=None, groups=groups))

    def __call__(self, owner: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The training-form output: the sum of all branches (no activation)."""
        skip, convs, scale = self.names
        branches = list(getattr(owner, convs))
        if self.scale:
            branches.append(getattr(owner, scale))
        if self.skip:
            branches.append(getattr(owner, skip))
        out = branches[0](x)
        for branch in branches[1:]:
            out = out + branch(x)
        return out

    def fold(self, owner: nn.Module) -> nn.Conv2d:
        """The single conv with bias that equals the branches' sum in eval mode."""
        skip, convs, scale = self.names
        parts: list[tuple[torch.Tensor | None, nn.BatchNorm2d]] = [(c.conv.weight, c.bn1) for c in getattr(owner, convs)]
        if self.scale:
            parts.append((getattr(owner, scale).conv.weight, getattr(owner, scale).bn1))
        if self.skip:
            parts.append((None, getattr(owner, skip)))
        template = getattr(owner, convs)[0].conv
        weight, bias = fold_branches(parts, template)
        return folded_conv(template, weight, bias)

    def remove(self, owner: nn.Module) -> None:
        """Delete the branches from ``owner`` (after :meth:`fold`)."""
        for name in self.names:
            if name in owner._modules:
                delattr(owner, name)


def has_branches(model: nn.Module) -> bool:
    """Whether ``model`` still holds training-time branches that :func:`reparameterize` would fold."""
    return any(getattr(m, "reparameterizable", False) and not m.deployed for m in model.modules())


@torch.no_grad()
def reparameterize(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Fold every re-parameterisable block of ``model``; return the deployed network.

    The result computes what ``model`` computes in eval mode (BN with running statistics), up to float
    rounding; in train mode the two differ, as BN then uses batch statistics. A model without branches
    (GhostNet V1/V2, MobileNets, an already folded network) is returned as it is. Unless ``inplace``, the
    input model is left untouched (deep copy); the copy keeps ``model.spec`` and the train/eval mode.
    """
    if not has_branches(model):
        return model
    out = model if inplace else copy.deepcopy(model)
    # Collect first: folding replaces sub-modules, which must not happen while iterating over them.
    for module in [m for m in out.modules() if getattr(m, "reparameterizable", False)]:
        if not module.deployed:
            module.reparameterize_()
    return out


def state_dict_form(state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """``"trained"`` or ``"reparameterized"`` for a GhostNetV3/RepGhostNet state_dict, None for other layouts.

    Training branches win when both kinds of keys are present (a corrupted file): the training form is
    then built and the loader lists the folded keys as unexpected, which says what is wrong.
    """
    keys = list(state_dict)
    if any(marker in k for k in keys for marker in TRAINING_MARKERS):
        return "trained"
    if any(k.endswith(FOLDED_MARKERS) for k in keys):
        return "reparameterized"
    return None
