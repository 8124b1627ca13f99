"""Building blocks shared by the networks: channel rounding, the hard-sigmoid gate, SE, conv+BN+act.

The names of the sub-modules (``conv_reduce``, ``act1``, ``conv_expand``, ``conv``, ``bn1``) follow the
reference GhostNet code, because ``state_dict`` keys are derived from them and the published
checkpoints must load without renaming.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def make_divisible(v: float, divisor: int = 4, min_value: int | None = None) -> int:
    """Round ``v`` to the nearest multiple of ``divisor``, never going more than 10% below ``v``.

    This is the rule of the reference GhostNet (and of torchvision's MobileNets with divisor 8): hardware
    kernels like channel counts that are multiples of 4/8, and the 10% guard keeps narrow layers from
    losing too much capacity when rounding down.
    """
    if divisor <= 0:
        raise ValueError(f"divisor must be positive, got {divisor}")
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return int(new_v)


def hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """relu6(x + 3) / 6, written as Add -> Clip(0, 6) -> Mul(1/6).

    ``torch.onnx.export`` turns this into ONNX Add/Clip/Mul (checked: the exported GhostNet contains no
    other activation op), which map 1:1 onto TFLite ADD/RELU6/MUL and their int8 kernels, so neither
    the ONNX->TF translator nor the quantizer needs a special case. ``F.hardsigmoid`` would export as the
    ONNX HardSigmoid op, one more op for every converter to support. Never in-place: autograd still
    needs the SE branch's input.
    """
    return F.relu6(x + 3.0) * (1.0 / 6.0)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excite gate of the reference GhostNet: pool -> 1x1 reduce -> ReLU -> 1x1 expand -> gate.

    The reduced width is ``make_divisible(se_ratio * in_chs, divisor)`` as in the reference, so the
    ``conv_reduce``/``conv_expand`` shapes equal the published checkpoints'.
    """

    def __init__(self, in_chs: int, se_ratio: float = 0.25, divisor: int = 4) -> None:
        super().__init__()
        reduced_chs = make_divisible(in_chs * se_ratio, divisor)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_reduce = nn.Conv2d(in_chs, reduced_chs, 1, bias=True)
        self.act1 = nn.ReLU(inplace=True)
        self.conv_expand = nn.Conv2d(reduced_chs, in_chs, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_se = self.avg_pool(x)
        x_se = self.conv_reduce(x_se)
        x_se = self.act1(x_se)
        x_se = self.conv_expand(x_se)
        return x * hard_sigmoid(x_se)


class ConvBnAct(nn.Module):
    """Conv (no bias, 'same' padding for odd kernels) -> BatchNorm -> activation (ReLU by default).

    With ``act_layer=None`` it is the conv+BN branch that GhostNetV3 trains in parallel and folds away
    (:mod:`ghostnet_edge.models.reparam`); ``groups`` makes it depthwise there.
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1,
                 act_layer: type[nn.Module] | None = nn.ReLU, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2, groups=groups, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.act1 = act_layer(inplace=True) if act_layer is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act1(self.bn1(self.conv(x)))


def init_weights(model: nn.Module) -> None:
    """torchvision's MobileNet initialisation, used for every network here.

    Kaiming-normal (fan_out) convs, BN at identity, small-normal linear layers: with the PyTorch default
    (kaiming-uniform with a=sqrt(5)) deep narrow nets like GhostNet start with vanishing activations.
    Randomness comes from torch's global generator, which ``create_model(seed=...)`` seeds.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d | nn.GroupNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
