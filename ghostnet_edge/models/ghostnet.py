"""GhostNet (Han et al., CVPR 2020) and its successors, built from tables of block configs.

The architecture is data: :data:`GHOSTNET_TABLE1` is the paper's Table 1, one row per G-bneck, and
:class:`GhostNet` is built from it. Module names and the grouping of rows into ``blocks.N`` follow the
reference implementation (huawei-noah/ghostnet, also timm's ``ghostnet_100``), so the published
``state_dict_73.98.pth`` and timm checkpoints load with ``strict=True`` and no renaming.

The later members differ from V1 only in data, :data:`GHOST_FAMILIES`:

* GhostNetV2 (Tang et al., NeurIPS 2022): Table 1 with DFC attention (``GhostRow.dfc``) on the expansion
  Ghost module of every bottleneck but the first two: a gate computed at half resolution by a 1x1 conv
  and 1x5/5x1 depthwise convs, sigmoid, nearest upsampling, multiplied onto the module's output.
* GhostNetV3 (Liu et al., 2024): GhostNetV2's network whose convs train as parallel branches
  (``GhostFamily.branches`` kxk conv+BN, plus 1x1 and BN-only ones) and deploy folded into single convs.
* RepGhostNet (Chen et al., 2022): a narrower table whose Ghost modules add the ghost maps to the
  intrinsic ones (a BN-only identity branch, folded away for deployment) instead of concatenating them.

Module and key names are timm's (``ghostnetv2_100``, ``ghostnetv3_100``, ``repghostnet_100``) in both the
training and the folded form. Folding is :func:`ghostnet_edge.models.reparam.reparameterize`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ghostnet_edge.errors import ModelError
from ghostnet_edge.models.layers import ConvBnAct, SqueezeExcite, init_weights, make_divisible
from ghostnet_edge.models.reparam import RepBranches, fold_branches, folded_conv


class GhostRow(NamedTuple):
    """One G-bneck of Table 1. ``stage`` is the index of the ``blocks.N`` it belongs to."""

    stage: int
    kernel: int     # depthwise kernel of the stride-2 conv and of the shortcut
    exp: int        # "#exp": output channels of the first Ghost module (the expansion)
    out: int        # "#out": output channels of the bottleneck
    se: float       # squeeze-excite ratio, 0 for none (the paper's SE column: 1 -> 0.25)
    stride: int
    dfc: bool = False   # GhostNetV2's DFC attention on the row's first (expansion) Ghost module


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

# GhostNetV2 keeps Table 1 and gives every bottleneck after the first two (the reference's `layer_id > 1`)
# DFC attention; the first two run at 112x112 and 56x56, where the attention would cost most.
GHOSTNETV2_TABLE: tuple[GhostRow, ...] = tuple(row._replace(dfc=i > 1) for i, row in enumerate(GHOSTNET_TABLE1))

# RepGhostNet 1.0x (the RepGhost paper's Table 9 / timm's repghostnet_100). Its Ghost modules output all
# `exp` channels from the primary conv and add the cheap ones, so `exp` is about half of GhostNet's for
# the same cost; the final 1x1 conv keeps GhostNet's 960 (2 x the last `exp`).
REPGHOSTNET_TABLE: tuple[GhostRow, ...] = (
    #        stage  k  exp  out    SE  stride   input (224x224)
    GhostRow(0,     3,   8,  16, 0.00, 1),      # 112^2 x 16
    GhostRow(1,     3,  24,  24, 0.00, 2),      # 112^2 x 16
    GhostRow(2,     3,  36,  24, 0.00, 1),      # 56^2 x 24
    GhostRow(3,     5,  36,  40, 0.25, 2),      # 56^2 x 24
    GhostRow(4,     5,  60,  40, 0.25, 1),      # 28^2 x 40
    GhostRow(5,     3, 120,  80, 0.00, 2),      # 28^2 x 40
    GhostRow(6,     3, 100,  80, 0.00, 1),      # 14^2 x 80
    GhostRow(6,     3, 120,  80, 0.00, 1),      # 14^2 x 80
    GhostRow(6,     3, 120,  80, 0.00, 1),      # 14^2 x 80
    GhostRow(6,     3, 240, 112, 0.25, 1),      # 14^2 x 80
    GhostRow(6,     3, 336, 112, 0.25, 1),      # 14^2 x 112
    GhostRow(7,     5, 336, 160, 0.25, 2),      # 14^2 x 112
    GhostRow(8,     5, 480, 160, 0.00, 1),      # 7^2 x 160
    GhostRow(8,     5, 480, 160, 0.25, 1),      # 7^2 x 160
    GhostRow(8,     5, 480, 160, 0.00, 1),      # 7^2 x 160
    GhostRow(8,     5, 480, 160, 0.25, 1),      # 7^2 x 160
)


class GhostFamily(NamedTuple):
    """One member of the GhostNet family as data: its table and how its Ghost modules are made."""

    rows: tuple[GhostRow, ...]
    final_channels: int = FINAL_CHANNELS   # the 1x1 conv after the last bottleneck, before width scaling
    module: str = "ghost"    # "ghost": intrinsic and ghost maps concatenated; "repghost": ghost maps added
    branches: int = 0        # >0: each conv trains as that many parallel kxk conv+BN (+1x1, +identity)


GHOST_FAMILIES: dict[str, GhostFamily] = {
    "ghostnet": GhostFamily(GHOSTNET_TABLE1),
    "ghostnetv2": GhostFamily(GHOSTNETV2_TABLE),
    # timm's GhostNetV3: 3 kxk branches per conv; the cheap conv also has a 1x1 and a BN-only identity
    # branch, the stride-2 depthwise conv a 1x1; the primary (1x1) conv has only its 3 copies.
    "ghostnetv3": GhostFamily(GHOSTNETV2_TABLE, branches=3),
    "repghostnet": GhostFamily(REPGHOSTNET_TABLE, module="repghost"),
}


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

    ``dfc`` adds GhostNetV2's DFC attention (``short_conv``). ``branches > 0`` is GhostNetV3's training
    form: the primary conv is that many parallel conv+BN branches, the cheap conv as many depthwise ones
    plus a 1x1 and a BN-only identity branch; ``deploy`` builds the folded form (one conv with bias each,
    timm's ``primary_conv.0``/``cheap_operation.0``), which :meth:`reparameterize_` turns the former into.
    """

    def __init__(self, inp: int, oup: int, kernel_size: int | tuple[int, int] = 1, ratio: int = 2,
                 dw_size: int = 3, stride: int | tuple[int, int] = 1, relu: bool = True, *,
                 padding: int | tuple[int, int] | str | None = None,
                 dilation: int | tuple[int, int] = 1, dfc: bool = False, branches: int = 0,
                 deploy: bool = False) -> None:
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
        self.reparameterizable = branches > 0
        self.deployed = bool(deploy) or not branches
        if branches:
            if ratio != 2 or not isinstance(kernel_size, int) or padding != kernel_size // 2 or dilation != 1:
                # the identity branch pairs each ghost map with its intrinsic map: ratio 2 only
                raise ValueError("re-parameterisable Ghost modules need ratio 2 and default padding/dilation")
            self._primary = RepBranches("primary", branches)
            self._cheap = RepBranches("cheap", branches, scale=True, skip=True)
        if not branches:
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
        elif deploy:
            self.primary_conv = nn.Sequential(
                nn.Conv2d(inp, init_channels, kernel_size, stride, padding, bias=True),
                nn.ReLU(inplace=True) if relu else nn.Identity())
            self.cheap_operation = nn.Sequential(
                nn.Conv2d(init_channels, new_channels, dw_size, 1, dw_size // 2, groups=init_channels, bias=True),
                nn.ReLU(inplace=True) if relu else nn.Identity())
        else:
            # Empty slots where folding puts primary_conv/cheap_operation: the folded state_dict then lists
            # them before short_conv, in the order of timm's folded checkpoints.
            self.register_module("primary_conv", None)
            self.register_module("cheap_operation", None)
            self._primary.build(self, inp, init_channels, kernel_size, stride)
            self.primary_act = nn.ReLU(inplace=True) if relu else nn.Identity()
            self._cheap.build(self, init_channels, new_channels, dw_size, 1, groups=init_channels)
            self.cheap_act = nn.ReLU(inplace=True) if relu else nn.Identity()
        self.short_conv = _dfc_attention(inp, oup, kernel_size, stride, padding, dilation) if dfc else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.deployed:
            x1 = self.primary_conv(x)
            x2 = self.cheap_operation(x1)
        else:
            x1 = self.primary_act(self._primary(self, x))
            x2 = self.cheap_act(self._cheap(self, x1))
        out = torch.cat([x1, x2], dim=1)
        # Skip the Slice op when nothing is cut off: it is a no-op that converters would still emit.
        if self.needs_slice:
            out = out[:, : self.oup, :, :]
        if self.short_conv is not None:
            # DFC attention: computed at half resolution (that is what makes it cheap) and brought back
            # by nearest upsampling to the output's exact size, which also covers odd sizes (7 -> 3 -> 7).
            gate = torch.sigmoid(self.short_conv(F.avg_pool2d(x, kernel_size=2, stride=2)))
            out = out * F.interpolate(gate, size=out.shape[-2:], mode="nearest")
        return out

    @torch.no_grad()
    def reparameterize_(self) -> None:
        """Fold the training branches into ``primary_conv``/``cheap_operation`` (in place; eval-mode equal)."""
        if self.deployed:
            return
        self.primary_conv = nn.Sequential(self._primary.fold(self), self.primary_act)
        self.cheap_operation = nn.Sequential(self._cheap.fold(self), self.cheap_act)
        self._primary.remove(self)
        self._cheap.remove(self)
        del self.primary_act, self.cheap_act
        self.deployed = True


def _dfc_attention(inp: int, oup: int, kernel_size: int | tuple[int, int], stride: int | tuple[int, int],
                   padding: int | tuple[int, int] | str, dilation: int | tuple[int, int]) -> nn.Sequential:
    """GhostNetV2's DFC attention branch (timm's ``short_conv``): conv+BN, then 1x5 and 5x1 depthwise conv+BN.

    The two 1-D depthwise convs are the "decoupled fully connected" layers: together they give each
    position a 5x5 (at half resolution, 10x10) receptive field for the price of 10 weights per channel.
    """
    return nn.Sequential(
        nn.Conv2d(inp, oup, kernel_size, stride, padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(oup),
        nn.Conv2d(oup, oup, (1, 5), 1, (0, 2), groups=oup, bias=False),
        nn.BatchNorm2d(oup),
        nn.Conv2d(oup, oup, (5, 1), 1, (2, 0), groups=oup, bias=False),
        nn.BatchNorm2d(oup),
    )


class RepGhostModule(nn.Module):
    """RepGhost module: primary conv, then a cheap depthwise conv whose output is ADDED to a BN of its input.

    There is no concatenation: the primary conv makes all ``oup`` maps. While training, a BN-only identity
    branch (timm's ``fusion_bn``) runs beside the cheap conv+BN; both are linear, so ``deploy`` (or
    :meth:`reparameterize_`) folds them into one depthwise conv with bias, timm's ``cheap_operation``.
    The activation follows the sum.
    """

    def __init__(self, inp: int, oup: int, kernel_size: int = 1, dw_size: int = 3, stride: int = 1,
                 relu: bool = True, *, deploy: bool = False) -> None:
        super().__init__()
        self.oup = oup
        self.reparameterizable = True
        self.deployed = bool(deploy)
        self.primary_conv = nn.Sequential(
            nn.Conv2d(inp, oup, kernel_size, stride, kernel_size // 2, bias=False),
            nn.BatchNorm2d(oup),
            nn.ReLU(inplace=True) if relu else nn.Identity(),
        )
        if deploy:
            self.cheap_operation = nn.Conv2d(oup, oup, dw_size, 1, dw_size // 2, groups=oup, bias=True)
        else:
            # registered before cheap_operation, as in timm, so state_dict keys come in its order
            self.fusion_bn = nn.Sequential(nn.BatchNorm2d(oup))
            self.cheap_operation = nn.Sequential(
                nn.Conv2d(oup, oup, dw_size, 1, dw_size // 2, groups=oup, bias=False),
                nn.BatchNorm2d(oup),
            )
        self.act = nn.ReLU(inplace=True) if relu else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.primary_conv(x)
        x2 = self.cheap_operation(x1)
        if not self.deployed:
            x2 = x2 + self.fusion_bn(x1)
        return self.act(x2)

    @torch.no_grad()
    def reparameterize_(self) -> None:
        """Fold ``fusion_bn`` and the cheap conv+BN into one depthwise conv with bias (in place)."""
        if self.deployed:
            return
        conv, bn = self.cheap_operation[0], self.cheap_operation[1]
        weight, bias = fold_branches([(conv.weight, bn), (None, self.fusion_bn[0])], conv)
        self.cheap_operation = folded_conv(conv, weight, bias)
        del self.fusion_bn
        self.deployed = True


def ghost_module(module: str, inp: int, oup: int, relu: bool, *, dfc: bool = False, branches: int = 0,
                 deploy: bool = False) -> nn.Module:
    """The Ghost module of a :class:`GhostFamily` (``module`` column) for one side of a bottleneck."""
    if module == "ghost":
        return GhostModule(inp, oup, relu=relu, dfc=dfc, branches=branches, deploy=deploy)
    if module == "repghost":
        if dfc or branches:
            raise ValueError("RepGhost modules have neither DFC attention nor GhostNetV3 branches")
        return RepGhostModule(inp, oup, relu=relu, deploy=deploy)
    raise ValueError(f"unknown Ghost module kind {module!r}; use 'ghost' or 'repghost'")


class GhostBottleneck(nn.Module):
    """G-bneck: Ghost module (ReLU) -> [stride-2 depthwise conv + BN] -> [SE] -> Ghost module (no ReLU).

    The shortcut is the identity when shapes agree, else depthwise conv + BN + 1x1 conv + BN.
    ``dfc``/``module``/``branches``/``deploy`` select the Ghost modules of the later family members (see
    :class:`GhostFamily`); with ``branches`` the stride-2 depthwise conv also trains as parallel kxk
    conv+BN branches plus a 1x1 one (timm's ``dw_rpr_*``) and deploys as one conv with bias.
    """

    def __init__(self, in_chs: int, mid_chs: int, out_chs: int, dw_kernel_size: int = 3, stride: int = 1,
                 se_ratio: float = 0.0, *, dfc: bool = False, module: str = "ghost", branches: int = 0,
                 deploy: bool = False) -> None:
        super().__init__()
        self.stride = stride
        self.reparameterizable = bool(branches) and stride > 1
        self.deployed = bool(deploy) or not self.reparameterizable
        dw_padding = (dw_kernel_size - 1) // 2
        if self.reparameterizable:
            # timm's GhostNetV3 declares the depthwise conv before ghost1: keep that slot first so the
            # folded state_dict comes in the order of its checkpoints.
            if deploy:
                self.conv_dw = nn.Conv2d(mid_chs, mid_chs, dw_kernel_size, stride, dw_padding, groups=mid_chs,
                                         bias=True)
                self.bn_dw = nn.Identity()    # folded into conv_dw's bias
            else:
                self.register_module("conv_dw", None)
                self.register_module("bn_dw", None)
        self.ghost1 = ghost_module(module, in_chs, mid_chs, relu=True, dfc=dfc, branches=branches, deploy=deploy)
        if stride > 1 and not self.reparameterizable:
            self.conv_dw = nn.Conv2d(mid_chs, mid_chs, dw_kernel_size, stride=stride, padding=dw_padding,
                                     groups=mid_chs, bias=False)
            self.bn_dw = nn.BatchNorm2d(mid_chs)
        elif self.reparameterizable and not deploy:
            self._dw = RepBranches("dw", branches, scale=True)
            self._dw.build(self, mid_chs, mid_chs, dw_kernel_size, stride, groups=mid_chs)
        self.se = SqueezeExcite(mid_chs, se_ratio=se_ratio) if se_ratio and se_ratio > 0 else None
        self.ghost2 = ghost_module(module, mid_chs, out_chs, relu=False, branches=branches, deploy=deploy)
        if in_chs == out_chs and stride == 1:
            self.shortcut = nn.Sequential()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_chs, in_chs, dw_kernel_size, stride=stride, padding=dw_padding,
                          groups=in_chs, bias=False),
                nn.BatchNorm2d(in_chs),
                nn.Conv2d(in_chs, out_chs, 1, stride=1, padding=0, bias=False),
                nn.BatchNorm2d(out_chs),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x
        x = self.ghost1(x)
        if self.stride > 1:
            x = self.bn_dw(self.conv_dw(x)) if self.deployed else self._dw(self, x)
        if self.se is not None:
            x = self.se(x)
        x = self.ghost2(x)
        return x + self.shortcut(residual)

    @torch.no_grad()
    def reparameterize_(self) -> None:
        """Fold the depthwise conv's training branches into ``conv_dw`` (with bias; ``bn_dw`` becomes Identity)."""
        if self.deployed:
            return
        self.conv_dw = self._dw.fold(self)
        self.bn_dw = nn.Identity()
        self._dw.remove(self)
        self.deployed = True


class GhostNet(nn.Module):
    """GhostNet built from a table of :class:`GhostRow`.

    stem 3x3/``stem_stride`` conv to 16*width -> bottlenecks -> 1x1 ConvBnAct to 960*width -> global
    pool -> 1x1 ``conv_head`` to 1280 + ReLU -> dropout -> Linear. ``stem_stride=1`` is the small-input
    (32x32) form: the same network without the first downsampling.

    ``final_channels`` (default: the last row's ``exp``), ``module`` and ``branches`` come from a
    :class:`GhostFamily`; ``deploy`` builds the folded form of a re-parameterisable family (see
    :func:`build_ghostnet`, which takes an architecture name).
    """

    # Labels for the per-stage MAC report (see profile.py); `blocks.N` are reported one by one.
    STAGE_ALIASES = {"conv_stem": "stem", "bn1": "stem", "act1": "stem", "global_pool": "head",
                     "conv_head": "head", "act2": "head", "flatten": "head", "dropout": "classifier",
                     "classifier": "classifier"}

    def __init__(self, cfgs: tuple[GhostRow, ...] = GHOSTNET_TABLE1, num_classes: int = 1000,
                 width: float = 1.0, dropout: float = 0.2, stem_stride: int = 2, in_chans: int = 3, *,
                 final_channels: int | None = None, module: str = "ghost", branches: int = 0,
                 deploy: bool = False) -> None:
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
                layers.append(GhostBottleneck(in_chs, mid_chs, out_chs, row.kernel, row.stride, se_ratio=row.se,
                                              dfc=row.dfc, module=module, branches=branches, deploy=deploy))
                in_chs = out_chs
            stages.append(nn.Sequential(*layers))
        final_chs = make_divisible((final_channels or self.cfgs[-1].exp) * width, 4)
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


def build_ghostnet(arch: str, num_classes: int = 1000, width: float = 1.0, dropout: float = 0.2,
                   stem_stride: int = 2, in_chans: int = 3, reparameterized: bool = False) -> GhostNet:
    """A member of :data:`GHOST_FAMILIES` by architecture name (``ghostnetv3``), trained or folded form.

    ``reparameterized`` builds the deployed form of GhostNetV3/RepGhostNet (what
    :func:`~ghostnet_edge.models.reparam.reparameterize` makes, and the layout of timm's folded
    checkpoints); the other members have only one form and ignore it.
    """
    family = GHOST_FAMILIES.get(arch)
    if family is None:
        raise ModelError(f"unknown GhostNet family member {arch!r}", f"use one of {', '.join(GHOST_FAMILIES)}")
    check_ghost_width(arch, width)
    return GhostNet(family.rows, num_classes, width, dropout, stem_stride, in_chans,
                    final_channels=family.final_channels, module=family.module, branches=family.branches,
                    deploy=reparameterized)


def ghost_channels(arch: str, width: float) -> list[tuple[int, int, int]]:
    """(in, mid, out) channels of every bottleneck of ``arch`` at ``width``, in table order."""
    rows = GHOST_FAMILIES[arch].rows
    in_chs = make_divisible(STEM_CHANNELS * width, 4)
    plan = []
    for row in rows:
        mid, out = make_divisible(row.exp * width, 4), make_divisible(row.out * width, 4)
        plan.append((in_chs, mid, out))
        in_chs = out
    return plan


def check_ghost_width(arch: str, width: float) -> None:
    """Raise ModelError unless every layer of ``arch`` has a buildable channel count at ``width``.

    The registry only lets 0.1 .. 4.0 through, where this always holds; direct callers (and custom
    tables) get the reason instead of a shape error deep inside a conv. Ghost modules of ratio 2 need an
    even output (intrinsic + ghost maps), which the rounding to multiples of 4 gives for any width > 0.
    """
    if not (isinstance(width, int | float) and math.isfinite(width) and width > 0):
        raise ModelError(f"width {width!r} for {arch} cannot be built: channel counts must be positive",
                         "use a width from 0.1 to 4.0, e.g. 1.0 (names like ghostnetv2_100)")
    for i, (in_chs, mid, out) in enumerate(ghost_channels(arch, width)):
        bad = [c for c in (in_chs, mid, out) if c < 4 or c % 2]
        if bad:
            raise ModelError(f"{arch} at width {width:g} cannot be built: bottleneck {i} would have "
                             f"{in_chs}->{mid}->{out} channels", "use a width from 0.1 to 4.0, e.g. 1.0")


def ghost_arch_of(keys: Iterable[str]) -> str:
    """The :data:`GHOST_FAMILIES` member whose (timm) layout a GhostNet-shaped state_dict has, by key names.

    Every member shares the stem, ``blocks.N`` and head keys; they differ in the Ghost modules: RepGhost
    has ``fusion_bn`` (trained) or a bare ``cheap_operation`` conv (folded), GhostNetV3 ``*_rpr_*``
    branches (trained) or biased ``primary_conv.0`` convs (folded), GhostNetV2 ``short_conv`` only.
    """
    keys = list(keys)
    if any(".fusion_bn." in k or k.endswith(".cheap_operation.weight") for k in keys):
        return "repghostnet"
    if any("_rpr_" in k or k.endswith(".primary_conv.0.bias") for k in keys):
        return "ghostnetv3"
    if any(".short_conv." in k for k in keys):
        return "ghostnetv2"
    return "ghostnet"
