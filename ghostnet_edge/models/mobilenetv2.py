"""MobileNetV2 (Sandler et al., CVPR 2018), a baseline of the GhostNet paper.

Built from :data:`MOBILENETV2_TABLE` (the paper's Table 2) with torchvision's module layout
(``features.N.conv.M``, ``classifier.1``), so torchvision ``state_dict``s load unchanged and the
parameter count equals torchvision's (3,504,872 at 1.0x, 1000 classes).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ghostnet_edge.models.layers import init_weights, make_divisible
from ghostnet_edge.models.mobilenetv3 import conv_norm_act


class V2Row(NamedTuple):
    """One row of Table 2: ``repeat`` bottlenecks, the first with ``stride``."""

    expansion: int   # t
    out: int         # c
    repeat: int      # n
    stride: int      # s


MOBILENETV2_TABLE: tuple[V2Row, ...] = (
    #     t    c  n  s     input (224x224)
    V2Row(1,  16, 1, 1),   # 112^2 x 32
    V2Row(6,  24, 2, 2),   # 112^2 x 16
    V2Row(6,  32, 3, 2),   # 56^2 x 24
    V2Row(6,  64, 4, 2),   # 28^2 x 32
    V2Row(6,  96, 3, 1),   # 14^2 x 64
    V2Row(6, 160, 3, 2),   # 14^2 x 96
    V2Row(6, 320, 1, 1),   # 7^2 x 160
)
STEM_CHANNELS = 32
LAST_CHANNELS = 1280


class InvertedResidualV2(nn.Module):
    """[1x1 expand + ReLU6] -> 3x3 depthwise + ReLU6 -> 1x1 linear projection; residual when shapes agree."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = int(round(in_chs * expansion))
        self.use_res_connect = stride == 1 and in_chs == out_chs
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(conv_norm_act(in_chs, hidden, 1, act=nn.ReLU6))
        layers += [
            conv_norm_act(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
            nn.Conv2d(hidden, out_chs, 1, 1, 0, bias=False),
            nn.BatchNorm2d(out_chs),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return out + x if self.use_res_connect else out


class MobileNetV2(nn.Module):
    """MobileNetV2 from a table of :class:`V2Row`; channels scaled by ``width`` and rounded to 8.

    As in the paper and torchvision, the last 1x1 conv keeps 1280 channels for widths below 1.
    """

    STAGE_ALIASES = {"features.0": "stem", "avgpool": "head", "flatten": "head", "classifier": "classifier"}

    def __init__(self, num_classes: int = 1000, width: float = 1.0, dropout: float = 0.2, stem_stride: int = 2,
                 in_chans: int = 3, cfgs: tuple[V2Row, ...] = MOBILENETV2_TABLE) -> None:
        super().__init__()
        self.cfgs = tuple(cfgs)
        self.width = width
        self.stem_stride = stem_stride
        in_chs = make_divisible(STEM_CHANNELS * width, 8)
        last_chs = make_divisible(LAST_CHANNELS * max(1.0, width), 8)
        features: list[nn.Module] = [conv_norm_act(in_chans, in_chs, 3, stem_stride, act=nn.ReLU6)]
        for row in self.cfgs:
            out_chs = make_divisible(row.out * width, 8)
            for i in range(row.repeat):
                features.append(InvertedResidualV2(in_chs, out_chs, row.stride if i == 0 else 1, row.expansion))
                in_chs = out_chs
        features.append(conv_norm_act(in_chs, last_chs, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*features)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(last_chs, num_classes))
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(self.flatten(x))
