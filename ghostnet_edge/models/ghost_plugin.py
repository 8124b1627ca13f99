"""The Ghost module as a plug-in for ordinary CNNs (GhostNet paper, Section 4.1, Tables 3-5, CIFAR-10).

:func:`ghostify` replaces every ordinary convolution of a network with a :class:`GhostModule` of ratio
``s`` and cheap-kernel size ``d``; :func:`vgg16_cifar` and :func:`resnet56_cifar` are the two networks the
paper does this to.

How the replacement is made, and why:

* Only ordinary convolutions (``groups == 1``, any kernel size >= 1) are replaced: a depthwise or grouped
  conv is already "cheap" and the paper does not touch it.
* The primary conv keeps the replaced conv's kernel size, stride, padding and dilation: the paper's
  Ghost-VGG-16 keeps the 3x3 kernels ("we replace all the convolutional filters ... with Ghost modules",
  and its weight count, 7.7M for s=2, is half of VGG-16's 3x3 weights; a 1x1 primary conv would give
  about 1M). So output shapes are unchanged and the rest of the network (its BN, ReLU, pooling) stays.
* The module is the reference :class:`GhostModule` with ``relu=False``: primary conv + BN, cheap
  depthwise conv + BN, concat. Its BNs add a few thousand parameters, under 0.2% of every count below.

FLOPs are counted as in :mod:`ghostnet_edge.models.profile`: multiply-accumulates of conv and linear
layers (the paper's "FLOPs" are MACs). With that definition and 32x32 inputs (checked in
``tests/test_models_plugin.py``):

=====================  =======  =======  =====================
network                weights  MACs     paper (weights/FLOPs)
=====================  =======  =======  =====================
VGG-16                 14.99M   313.5M   15.0M / 313M
Ghost-VGG-16 s=2, d=3  7.66M    158.1M   7.7M / 158M
Ghost-VGG-16 s=5, d=3  3.28M    65.7M    3.3M / 65M
ResNet-56              0.853M   125.5M   0.85M / 125M
Ghost-ResNet-56 s=2    0.442M   65.1M    0.43M / 63M
=====================  =======  =======  =====================

Ghost-ResNet-56's 63M is matched by its primary convs alone (62.7M); its cheap 3x3 depthwise convs add
2.4M, relatively more than in VGG because ResNet-56 is only 16-64 channels wide (the cheap/primary cost
ratio is d^2/(c k^2) = 1/c). With d=1 the network has 0.434M weights and 63.0M MACs.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ghostnet_edge.errors import ModelError
from ghostnet_edge.models.ghostnet import GhostModule
from ghostnet_edge.models.layers import init_weights

# VGG-16 configuration "D" (Simonyan & Zisserman): numbers are 3x3 conv widths, "M" a 2x2 max-pool.
VGG16_CFG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                                    512, 512, 512, "M", 512, 512, 512, "M")
# ResNet-56 for CIFAR (He et al. 2016, Section 4.2): 3 stages of n=9 basic blocks, widths 16/32/64.
RESNET56_STAGES: tuple[tuple[int, int, int], ...] = ((16, 9, 1), (32, 9, 2), (64, 9, 2))  # (width, blocks, stride)


def is_ordinary_conv(module: nn.Module) -> bool:
    """A conv the plug-in replaces: 2-D, not depthwise/grouped, zero padding."""
    return isinstance(module, nn.Conv2d) and module.groups == 1 and module.padding_mode == "zeros"


def ghost_module_for(conv: nn.Conv2d, ratio: int = 2, dw_size: int = 3) -> GhostModule:
    """A GhostModule with the same input/output channels and geometry as ``conv``."""
    return GhostModule(conv.in_channels, conv.out_channels, kernel_size=conv.kernel_size, ratio=ratio,
                       dw_size=dw_size, stride=conv.stride, relu=False, padding=conv.padding,
                       dilation=conv.dilation)


def ghostify(model: nn.Module, ratio: int = 2, dw_size: int = 3, skip: Iterable[str] = ()) -> nn.Module:
    """Return a copy of ``model`` with every ordinary conv replaced by a Ghost module (``s=ratio``, ``d=dw_size``).

    ``skip`` names convs (as in ``named_modules()``) to keep. ``model`` itself is not modified; the new
    Ghost modules are freshly initialised (the replaced weights cannot be carried over).
    """
    if int(ratio) != ratio or ratio < 2:
        raise ModelError(f"Ghost ratio s must be an integer >= 2, got {ratio}",
                         "the paper uses s=2 (also 3, 4, 5 in Table 3); s=1 would be the original conv")
    if int(dw_size) != dw_size or dw_size < 1 or dw_size % 2 == 0:
        raise ModelError(f"Ghost cheap-operation kernel d must be an odd integer >= 1, got {dw_size}",
                         "the paper uses d=3 (also 1, 5, 7 in Table 3)")
    skip = set(skip)
    new = copy.deepcopy(model)
    targets = [name for name, m in new.named_modules() if name and name not in skip and is_ordinary_conv(m)]
    if not targets:
        raise ModelError("the model has no ordinary (non-depthwise) convolution to replace",
                         "ghostify is for plain CNNs such as vgg16_cifar or resnet56_cifar")
    for name in targets:
        parent_name, _, attr = name.rpartition(".")
        parent = new.get_submodule(parent_name) if parent_name else new
        ghost = ghost_module_for(getattr(parent, attr), int(ratio), int(dw_size))
        init_weights(ghost)
        setattr(parent, attr, ghost)
    new.ghost_ratio = int(ratio)
    new.ghost_dw_size = int(dw_size)
    return new


class VGGCifar(nn.Module):
    """VGG-16 with BN for 32x32 inputs: 13 3x3 convs, 5 max-pools, classifier 512 -> 512 -> classes.

    The variant of the paper's CIFAR experiments (Li et al. 2017, "Pruning Filters for Efficient
    ConvNets"): 15.0M weights, 313M MACs; a torchvision-style 4096-wide classifier would have 33.6M.
    """

    def __init__(self, num_classes: int = 10, cfg: tuple[int | str, ...] = VGG16_CFG, in_chans: int = 3,
                 dropout: float = 0.5) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        # Per-stage MAC report: one row per conv group ending in a max-pool ("features.0-6" -> "block1").
        self.STAGE_ALIASES = {"avgpool": "head", "flatten": "head", "classifier": "classifier"}
        in_chs = in_chans
        for v in cfg:
            block = sum(1 for u in layers if isinstance(u, nn.MaxPool2d)) + 1
            self.STAGE_ALIASES.update({f"features.{len(layers) + i}": f"block{block}" for i in range(3)})
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(in_chs, int(v), 3, padding=1, bias=False), nn.BatchNorm2d(int(v)),
                           nn.ReLU(inplace=True)]
                in_chs = int(v)
        self.features = nn.Sequential(*layers)
        # A no-op at 32x32 (the map is 1x1 after five pools); lets other sizes reach the 512-wide classifier.
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Sequential(nn.Linear(in_chs, 512), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                        nn.Linear(512, num_classes))
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.avgpool(self.features(x))))


class PadShortcut(nn.Module):
    """He et al.'s option-A shortcut: subsample by 2 and zero-pad the new channels (no parameters).

    Computed as a stride-2 1x1 convolution with a fixed 0/1 weight that copies input channel i to
    output channel ``pad + i``: numerically the same as ``F.pad(x[:, :, ::2, ::2], ...)``, but it exports
    as one Conv with a constant weight instead of a Slice/Pad/ConstantOfShape sub-graph that ONNX->TF
    translators and int8 quantizers handle badly. The weight is a non-persistent buffer (not in the
    state_dict, not a parameter) and, like the paper, the MAC counts leave it out.
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int = 2) -> None:
        super().__init__()
        weight = torch.zeros(out_chs, in_chs, 1, 1)
        front = (out_chs - in_chs) // 2
        weight[torch.arange(in_chs) + front, torch.arange(in_chs)] = 1.0
        self.register_buffer("weight", weight, persistent=False)
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, stride=self.stride)


class BasicBlock(nn.Module):
    """3x3 conv-BN-ReLU, 3x3 conv-BN, add the shortcut, ReLU."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, shortcut: str = "A") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_chs != out_chs:
            if shortcut == "A":
                self.shortcut = PadShortcut(in_chs, out_chs, stride)
            else:
                self.shortcut = nn.Sequential(nn.Conv2d(in_chs, out_chs, 1, stride, bias=False),
                                              nn.BatchNorm2d(out_chs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNetCifar(nn.Module):
    """ResNet-6n+2 for 32x32 inputs (He et al. 2016); n=9 is ResNet-56 (0.85M weights, 125M MACs).

    ``shortcut="A"`` (default, the paper's CIFAR choice) pads channels with zeros when the width grows;
    ``"B"`` uses a 1x1 conv + BN projection instead (about 2.7K more weights; a plain-conv graph).
    """

    STAGE_ALIASES = {"conv1": "stem", "bn1": "stem", "relu": "stem", "layer1": "layer1", "layer2": "layer2",
                     "layer3": "layer3", "avgpool": "head", "flatten": "head", "dropout": "classifier",
                     "fc": "classifier"}

    def __init__(self, num_classes: int = 10,
                 stages: tuple[tuple[int, int, int], ...] = RESNET56_STAGES, in_chans: int = 3,
                 shortcut: str = "A", dropout: float = 0.0) -> None:
        super().__init__()
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}")
        in_chs = stages[0][0]
        self.conv1 = nn.Conv2d(in_chans, in_chs, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(in_chs)
        self.relu = nn.ReLU(inplace=True)
        for i, (width, blocks, stride) in enumerate(stages, start=1):
            layer = []
            for j in range(blocks):
                layer.append(BasicBlock(in_chs, width, stride if j == 0 else 1, shortcut))
                in_chs = width
            setattr(self, f"layer{i}", nn.Sequential(*layer))
        self.num_stages = len(stages)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_chs, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{i}")(x)
        return self.fc(self.dropout(self.flatten(self.avgpool(x))))


def vgg16_cifar(num_classes: int = 10, in_chans: int = 3, dropout: float = 0.5) -> VGGCifar:
    """VGG-16 (BN, 512-wide classifier) for 32x32 CIFAR images."""
    return VGGCifar(num_classes=num_classes, in_chans=in_chans, dropout=dropout)


def resnet56_cifar(num_classes: int = 10, in_chans: int = 3, shortcut: str = "A",
                   dropout: float = 0.0) -> ResNetCifar:
    """ResNet-56 for 32x32 CIFAR images."""
    return ResNetCifar(num_classes=num_classes, in_chans=in_chans, shortcut=shortcut, dropout=dropout)
