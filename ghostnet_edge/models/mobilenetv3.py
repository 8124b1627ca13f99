"""MobileNetV3 Large and Small (Howard et al., ICCV 2019), the baselines of the GhostNet paper.

Built from :data:`MOBILENETV3_LARGE` / :data:`MOBILENETV3_SMALL` tables with torchvision's module
layout (``features.N.block.M``, ``SqueezeExcitation.fc1/fc2``, ``classifier.0/3``), so torchvision
``state_dict``s load unchanged and parameter counts equal torchvision's (5,483,032 / 2,542,856 at 1.0x).

Width multipliers follow the TensorFlow reference (and timm), the models the GhostNet paper compares
with: an expansion is the table's expansion *ratio* times the already rounded input width, and the
1280/1024-wide head is not narrowed below 1.0x. At 1.0x this is exactly torchvision's network. At 0.75x
it gives MobileNetV3-Large 3,993,528 weights / 154.6M MACs, the paper's Table 7 row (4.0M / 155M);
torchvision's rule (every width scaled, head too) would give 3.38M / 140M. MobileNetV3-Small 0.75x gets
2.04M / 43.4M (paper: 2.4M / 44M; the MACs agree, the paper's weight count is not reproduced).
Activations are ``nn.Hardswish`` / ``nn.Hardsigmoid`` as in torchvision: single ONNX ops (HardSwish needs
opset >= 14, HardSigmoid any); TFLite has HARD_SWISH, and converters lower HardSigmoid to mul/add/relu6.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ghostnet_edge.models.layers import init_weights, make_divisible


class V3Row(NamedTuple):
    """One inverted-residual bottleneck: torchvision's ``InvertedResidualConfig`` minus the input width."""

    kernel: int
    exp: int         # expanded channels
    out: int
    se: bool
    act: str         # "RE" (ReLU) or "HS" (hard-swish)
    stride: int


# Table 1 of the MobileNetV3 paper (input 224x224), as in torchvision's `_mobilenet_v3_conf`.
MOBILENETV3_LARGE: tuple[V3Row, ...] = (
    #     k  exp  out     SE   act  s
    V3Row(3,  16,  16, False, "RE", 1),
    V3Row(3,  64,  24, False, "RE", 2),
    V3Row(3,  72,  24, False, "RE", 1),
    V3Row(5,  72,  40, True,  "RE", 2),
    V3Row(5, 120,  40, True,  "RE", 1),
    V3Row(5, 120,  40, True,  "RE", 1),
    V3Row(3, 240,  80, False, "HS", 2),
    V3Row(3, 200,  80, False, "HS", 1),
    V3Row(3, 184,  80, False, "HS", 1),
    V3Row(3, 184,  80, False, "HS", 1),
    V3Row(3, 480, 112, True,  "HS", 1),
    V3Row(3, 672, 112, True,  "HS", 1),
    V3Row(5, 672, 160, True,  "HS", 2),
    V3Row(5, 960, 160, True,  "HS", 1),
    V3Row(5, 960, 160, True,  "HS", 1),
)
# Table 2 of the MobileNetV3 paper.
MOBILENETV3_SMALL: tuple[V3Row, ...] = (
    V3Row(3,  16,  16, True,  "RE", 2),
    V3Row(3,  72,  24, False, "RE", 2),
    V3Row(3,  88,  24, False, "RE", 1),
    V3Row(5,  96,  40, True,  "HS", 2),
    V3Row(5, 240,  40, True,  "HS", 1),
    V3Row(5, 240,  40, True,  "HS", 1),
    V3Row(5, 120,  48, True,  "HS", 1),
    V3Row(5, 144,  48, True,  "HS", 1),
    V3Row(5, 288,  96, True,  "HS", 2),
    V3Row(5, 576,  96, True,  "HS", 1),
    V3Row(5, 576,  96, True,  "HS", 1),
)
V3_TABLES = {"large": (MOBILENETV3_LARGE, 1280), "small": (MOBILENETV3_SMALL, 1024)}  # (rows, last_channel)
STEM_CHANNELS = 16


def _bn(channels: int) -> nn.BatchNorm2d:
    # torchvision's MobileNetV3 uses these BN settings (from the TF reference); V2 uses the defaults.
    return nn.BatchNorm2d(channels, eps=0.001, momentum=0.01)


def conv_norm_act(in_chs: int, out_chs: int, kernel: int = 3, stride: int = 1, groups: int = 1,
                  act: type[nn.Module] | None = nn.ReLU, norm=nn.BatchNorm2d) -> nn.Sequential:
    """torchvision's ``Conv2dNormActivation``: Sequential(conv, norm[, act]) with keys 0/1/2."""
    layers: list[nn.Module] = [nn.Conv2d(in_chs, out_chs, kernel, stride, (kernel - 1) // 2, groups=groups,
                                         bias=False), norm(out_chs)]
    if act is not None:
        layers.append(act(inplace=True))
    return nn.Sequential(*layers)


class SqueezeExcitation(nn.Module):
    """torchvision's ``ops.SqueezeExcitation`` with hard-sigmoid gate: pool -> fc1 -> ReLU -> fc2 -> gate."""

    def __init__(self, channels: int, squeeze_channels: int) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, channels, 1)
        self.activation = nn.ReLU()
        self.scale_activation = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return scale * x


class InvertedResidualV3(nn.Module):
    """[1x1 expand] -> kxk depthwise -> [SE] -> 1x1 project (linear); residual when shapes agree."""

    def __init__(self, in_chs: int, exp_chs: int, out_chs: int, kernel: int, stride: int, se: bool,
                 act: str) -> None:
        super().__init__()
        self.use_res_connect = stride == 1 and in_chs == out_chs
        act_layer = nn.Hardswish if act == "HS" else nn.ReLU
        layers: list[nn.Module] = []
        if exp_chs != in_chs:
            layers.append(conv_norm_act(in_chs, exp_chs, 1, act=act_layer, norm=_bn))
        layers.append(conv_norm_act(exp_chs, exp_chs, kernel, stride, groups=exp_chs, act=act_layer, norm=_bn))
        if se:
            layers.append(SqueezeExcitation(exp_chs, make_divisible(exp_chs // 4, 8)))
        layers.append(conv_norm_act(exp_chs, out_chs, 1, act=None, norm=_bn))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return out + x if self.use_res_connect else out


class MobileNetV3(nn.Module):
    """MobileNetV3 from a table of :class:`V3Row`; channels scaled by ``width`` and rounded to 8."""

    # classifier.0/1 (the 1x1-equivalent Linear to 1280 + hard-swish) is the head of the paper's table.
    STAGE_ALIASES = {"features.0": "stem", "avgpool": "head", "flatten": "head", "classifier.0": "head",
                     "classifier.1": "head", "classifier.2": "classifier", "classifier.3": "classifier"}

    def __init__(self, variant: str = "large", num_classes: int = 1000, width: float = 1.0,
                 dropout: float = 0.2, stem_stride: int = 2, in_chans: int = 3) -> None:
        super().__init__()
        if variant not in V3_TABLES:
            raise ValueError(f"variant must be one of {sorted(V3_TABLES)}, got {variant!r}")
        rows, last_channel = V3_TABLES[variant]
        self.cfgs = rows
        self.variant = variant
        self.width = width
        self.stem_stride = stem_stride

        def adjust(c: float) -> int:
            return make_divisible(c * width, 8)

        in_chs = adjust(STEM_CHANNELS)
        base_in = STEM_CHANNELS   # the table's (1.0x) input width of the current row
        layers: list[nn.Module] = [conv_norm_act(in_chans, in_chs, 3, stem_stride, act=nn.Hardswish, norm=_bn)]
        for row in rows:
            out_chs = adjust(row.out)
            exp_chs = make_divisible(in_chs * row.exp / base_in, 8)   # expansion ratio x actual input width
            layers.append(InvertedResidualV3(in_chs, exp_chs, out_chs, row.kernel, row.stride, row.se, row.act))
            in_chs, base_in = out_chs, row.out
        lastconv_chs = 6 * in_chs
        layers.append(conv_norm_act(in_chs, lastconv_chs, 1, act=nn.Hardswish, norm=_bn))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        head_chs = make_divisible(last_channel * max(1.0, width), 8)
        self.classifier = nn.Sequential(
            nn.Linear(lastconv_chs, head_chs),
            nn.Hardswish(inplace=True),
            nn.Dropout(p=dropout, inplace=True),
            nn.Linear(head_chs, num_classes),
        )
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(self.flatten(x))
