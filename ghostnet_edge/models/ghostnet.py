"""GhostNet (Han et al., "GhostNet: More Features from Cheap Operations", CVPR 2020).

The architecture is data: :data:`GHOSTNET_TABLE1` is the paper's Table 1, one row per G-bneck, and
:class:`GhostNet` is built from it. Module names and the grouping of rows into ``blocks.N`` follow the
reference implementation (huawei-noah/ghostnet, also timm's ``ghostnet_100``), so the published
``state_dict_73.98.pth`` and timm checkpoints load with ``strict=True`` and no renaming.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from ghostnet_edge.models.layers import ConvBnAct, SqueezeExcite, init_weights, make_divisible


class GhostRow(NamedTuple):
    """One G-bneck of Table 1. ``stage`` is the index of the ``blocks.N`` it belongs to."""

    stage: int
    kernel: int     # depthwise kernel of the stride-2 conv and of the shortcut
    exp: int        # "#exp": output channels of the first Ghost module (the expansion)
    out: int        # "#out": output channels of the bottleneck
    se: float       # squeeze-excite ratio, 0 for none (the paper's SE column: 1 -> 0.25)
    stride: int


# The paper's Table 1 (input 224x224). The stage column reproduces the reference's grouping of
# bottlenecks into `blocks.0` ... `blocks.8`; `blocks.9` is the final 1x1 conv to 960 channels.
GHOSTNET_TABLE1: tuple[GhostRow, ...] = (
    #        stage  k  exp  out    SE  stride   input (224x224)
    GhostRow(0,     3,  16,  16, 0.00, 1),      # 112^2 x 16
    GhostRow(1,     3,  48,  24, 0.00, 2),      # 112^2 x 16
    GhostRow(2,     3,  72,  24, 0.00, 1),      # 56^2 x 24
    GhostRow(3,     5,  72,  40, 0.25, 2),      # 56^2 x 24
    GhostRow(4,     5, 120,  40, 0.25, 1),      # 28^2 x 40
    GhostRow(5,     3, 240,  80, 0.00, 2),      # 28^2 x 40
    GhostRow(6,     3, 200,  80, 0.00, 1),      # 14^2 x 80
    GhostRow(6,     3, 184,  80, 0.00, 1),      # 14^2 x 80
    GhostRow(6,     3, 184,  80, 0.00, 1),      # 14^2 x 80
    GhostRow(6,     3, 480, 112, 0.25, 1),      # 14^2 x 80
    GhostRow(6,     3, 672, 112, 0.25, 1),      # 14^2 x 112
    GhostRow(7,     5, 672, 160, 0.25, 2),      # 14^2 x 112
    GhostRow(8,     5, 960, 160, 0.00, 1),      # 7^2 x 160
    GhostRow(8,     5, 960, 160, 0.25, 1),      # 7^2 x 160
    GhostRow(8,     5, 960, 160, 0.00, 1),      # 7^2 x 160
    GhostRow(8,     5, 960, 160, 0.25, 1),      # 7^2 x 160
)
STEM_CHANNELS = 16
FINAL_CHANNELS = 960   # the 1x1 conv after the last bottleneck (= the last row's #exp)
HEAD_CHANNELS = 1280   # conv_head; not scaled by width in the reference


def table_stages(rows: tuple[GhostRow, ...]) -> list[list[GhostRow]]:
    """Group consecutive rows by their ``stage`` column (each group becomes one ``blocks.N``)."""
    stages: list[list[GhostRow]] = []
    for row in rows:
        if row.stage >= len(stages):
            stages.append([])
        stages[row.stage].append(row)
    return stages


def total_stride(rows: tuple[GhostRow, ...] = GHOSTNET_TABLE1, stem_stride: int = 2) -> int:
    """Downsampling factor from the input to the last feature map."""
    return stem_stride * math.prod(r.stride for r in rows)


class GhostModule(nn.Module):
    """Ghost module: a primary conv makes ceil(oup/ratio) intrinsic maps, a cheap depthwise conv the rest.

    ``oup`` maps come out: intrinsic maps followed by their "ghosts", sliced to ``oup`` when
    ``ratio`` does not divide it. ``padding``/``dilation`` default to the reference ('same' for odd
    kernels); the plug-in (:mod:`ghost_plugin`) passes the replaced conv's values to keep its geometry.
    """

    def __init__(self, inp: int, oup: int, kernel_size: int | tuple[int, int] = 1, ratio: int = 2,
                 dw_size: int = 3, stride: int | tuple[int, int] = 1, relu: bool = True, *,
                 padding: int | tuple[int, int] | str | None = None,
                 dilation: int | tuple[int, int] = 1) -> None:
        super().__init__()
        if ratio < 2:
            raise ValueError(f"ratio must be >= 2 (got {ratio}); ratio 1 is an ordinary conv")
        self.oup = oup
        init_channels = math.ceil(oup / ratio)
        new_channels = init_channels * (ratio - 1)
        # Decided here, not from tensor shapes in forward(), so tracing/export sees a fixed graph.
        self.needs_slice = init_channels + new_channels != oup
        if padding is None:
            padding = kernel_size // 2
        self.primary_conv = nn.Sequential(
            nn.Conv2d(inp, init_channels, kernel_size, stride, padding, dilation=dilation, bias=False),
            nn.BatchNorm2d(init_channels),
            nn.ReLU(inplace=True) if relu else nn.Identity(),
        )
        self.cheap_operation = nn.Sequential(
            nn.Conv2d(init_channels, new_channels, dw_size, 1, dw_size // 2, groups=init_channels, bias=False),
            nn.BatchNorm2d(new_channels),
            nn.ReLU(inplace=True) if relu else nn.Identity(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.primary_conv(x)
        x2 = self.cheap_operation(x1)
        out = torch.cat([x1, x2], dim=1)
        # Skip the Slice op when nothing is cut off: it is a no-op that converters would still emit.
        return out[:, : self.oup, :, :] if self.needs_slice else out


class GhostBottleneck(nn.Module):
    """G-bneck: Ghost module (ReLU) -> [stride-2 depthwise conv + BN] -> [SE] -> Ghost module (no ReLU).

    The shortcut is the identity when shapes agree, else depthwise conv + BN + 1x1 conv + BN.
    """

    def __init__(self, in_chs: int, mid_chs: int, out_chs: int, dw_kernel_size: int = 3, stride: int = 1,
                 se_ratio: float = 0.0) -> None:
        super().__init__()
        self.stride = stride
        self.ghost1 = GhostModule(in_chs, mid_chs, relu=True)
        if stride > 1:
            self.conv_dw = nn.Conv2d(mid_chs, mid_chs, dw_kernel_size, stride=stride,
                                     padding=(dw_kernel_size - 1) // 2, groups=mid_chs, bias=False)
            self.bn_dw = nn.BatchNorm2d(mid_chs)
        self.se = SqueezeExcite(mid_chs, se_ratio=se_ratio) if se_ratio and se_ratio > 0 else None
        self.ghost2 = GhostModule(mid_chs, out_chs, relu=False)
        if in_chs == out_chs and stride == 1:
            self.shortcut = nn.Sequential()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_chs, in_chs, dw_kernel_size, stride=stride, padding=(dw_kernel_size - 1) // 2,
                          groups=in_chs, bias=False),
                nn.BatchNorm2d(in_chs),
                nn.Conv2d(in_chs, out_chs, 1, stride=1, padding=0, bias=False),
                nn.BatchNorm2d(out_chs),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x
        x = self.ghost1(x)
        if self.stride > 1:
            x = self.bn_dw(self.conv_dw(x))
        if self.se is not None:
            x = self.se(x)
        x = self.ghost2(x)
        return x + self.shortcut(residual)


class GhostNet(nn.Module):
    """GhostNet built from a table of :class:`GhostRow`.

    stem 3x3/``stem_stride`` conv to 16*width -> bottlenecks -> 1x1 ConvBnAct to 960*width -> global
    pool -> 1x1 ``conv_head`` to 1280 + ReLU -> dropout -> Linear. ``stem_stride=1`` is the small-input
    (32x32) form: the same network without the first downsampling.
    """

    # Labels for the per-stage MAC report (see profile.py); `blocks.N` are reported one by one.
    STAGE_ALIASES = {"conv_stem": "stem", "bn1": "stem", "act1": "stem", "global_pool": "head",
                     "conv_head": "head", "act2": "head", "flatten": "head", "dropout": "classifier",
                     "classifier": "classifier"}

    def __init__(self, cfgs: tuple[GhostRow, ...] = GHOSTNET_TABLE1, num_classes: int = 1000,
                 width: float = 1.0, dropout: float = 0.2, stem_stride: int = 2, in_chans: int = 3) -> None:
        super().__init__()
        self.cfgs = tuple(cfgs)
        self.num_classes = num_classes
        self.width = width
        self.stem_stride = stem_stride

        stem_chs = make_divisible(STEM_CHANNELS * width, 4)
        self.conv_stem = nn.Conv2d(in_chans, stem_chs, 3, stem_stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_chs)
        self.act1 = nn.ReLU(inplace=True)

        stages: list[nn.Module] = []
        in_chs = stem_chs
        for rows in table_stages(self.cfgs):
            layers = []
            for row in rows:
                out_chs = make_divisible(row.out * width, 4)
                mid_chs = make_divisible(row.exp * width, 4)
                layers.append(GhostBottleneck(in_chs, mid_chs, out_chs, row.kernel, row.stride, se_ratio=row.se))
                in_chs = out_chs
            stages.append(nn.Sequential(*layers))
        final_chs = make_divisible(self.cfgs[-1].exp * width, 4)
        stages.append(nn.Sequential(ConvBnAct(in_chs, final_chs, 1)))
        self.blocks = nn.Sequential(*stages)

        self.global_pool = nn.AdaptiveAvgPool2d((1, 1))
        self.conv_head = nn.Conv2d(final_chs, HEAD_CHANNELS, 1, 1, 0, bias=True)
        self.act2 = nn.ReLU(inplace=True)
        self.flatten = nn.Flatten(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(HEAD_CHANNELS, num_classes)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map before pooling (N, 960*width, H/32, W/32 for the ImageNet form)."""
        x = self.act1(self.bn1(self.conv_stem(x)))
        return self.blocks(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        x = self.act2(self.conv_head(self.global_pool(x)))
        return self.classifier(self.dropout(self.flatten(x)))
