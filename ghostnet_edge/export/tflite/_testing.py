"""A tiny GhostNet-like CNN and an ONNX export helper for the TFLite route's tests and benchmark.

The network holds every op kind a real GhostNet/MobileNet puts in front of the translator (conv,
depthwise conv, BN, ReLU, ReLU6, hard-swish, a hard-sigmoid SE gate with global average pooling and a
broadcast multiply, channel concat + channel slice of the Ghost module, a stride-2 depthwise shortcut,
residual add, flatten + linear), at a size that converts in about a second. It lets the route be tested
without waiting for (or depending on) ``ghostnet_edge.models``.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch
from torch import nn

from ghostnet_edge.utils.atomic import atomic_write_bytes


class _GhostModule(nn.Module):
    """Primary 1x1 conv + cheap depthwise conv, concatenated and sliced to ``out_ch`` (odd on purpose)."""

    def __init__(self, in_ch: int, out_ch: int, relu: bool) -> None:
        super().__init__()
        self.out_ch = out_ch
        init = (out_ch + 1) // 2
        act = nn.ReLU(inplace=True) if relu else nn.Identity()
        self.primary = nn.Sequential(nn.Conv2d(in_ch, init, 1, bias=False), nn.BatchNorm2d(init), act)
        act2 = nn.ReLU(inplace=True) if relu else nn.Identity()
        self.cheap = nn.Sequential(nn.Conv2d(init, init, 3, 1, 1, groups=init, bias=False),
                                   nn.BatchNorm2d(init), act2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.primary(x)
        x2 = self.cheap(x1)
        return torch.cat([x1, x2], dim=1)[:, : self.out_ch]


class _SqueezeExcite(nn.Module):
    def __init__(self, ch: int, rd: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(ch, rd, 1)
        self.act = nn.ReLU(inplace=True)
        self.expand = nn.Conv2d(rd, ch, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.expand(self.act(self.reduce(s))))


class _Bottleneck(nn.Module):
    """Ghost bottleneck with a stride-2 depthwise conv, SE, and a depthwise+pointwise shortcut."""

    def __init__(self, in_ch: int, mid: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.ghost1 = _GhostModule(in_ch, mid, relu=True)
        self.dw = nn.Sequential(nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), nn.BatchNorm2d(mid))
        self.se = _SqueezeExcite(mid, 8)
        self.ghost2 = _GhostModule(mid, out_ch, relu=False)
        self.shortcut = nn.Sequential(
            nn.Conv2d(in_ch, in_ch, 3, stride, 1, groups=in_ch, bias=False), nn.BatchNorm2d(in_ch),
            nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ghost2(self.se(self.dw(self.ghost1(x))))
        return y + self.shortcut(x)


class TinyGhostNet(nn.Module):
    """About 20k parameters; 3 depthwise convs per bottleneck, 2 bottlenecks."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True))
        self.block1 = _Bottleneck(16, 36, 23, stride=2)
        self.block2 = _Bottleneck(23, 48, 24, stride=1)
        self.head = nn.Sequential(nn.Conv2d(24, 48, 1, bias=False), nn.BatchNorm2d(48), nn.Hardswish())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv_head = nn.Sequential(nn.Conv2d(48, 64, 1), nn.ReLU6())
        self.classifier = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.block2(self.block1(self.stem(x))))
        x = self.conv_head(self.pool(x))
        return self.classifier(torch.flatten(x, 1))


def tiny_ghostnet(seed: int = 0, num_classes: int = 10) -> nn.Module:
    """A seeded TinyGhostNet in eval mode with non-trivial BN statistics (so BN folding matters)."""
    gen = torch.Generator().manual_seed(seed)
    model = TinyGhostNet(num_classes)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.5 if p.ndim > 1 else 0.1))
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(1.0 + 0.2 * torch.randn(m.weight.shape, generator=gen))
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))
    return model.eval()


def count_depthwise_convs(model: nn.Module) -> int:
    """Convs whose groups equal their input channels (> 1): the ones that must become DEPTHWISE_CONV_2D."""
    return sum(1 for m in model.modules()
               if isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels)


def count_hard_swish(model: nn.Module) -> int:
    """``nn.Hardswish`` modules (each called once in these models): for x86 the translator writes each
    hard-swish as one 1x1 DEPTHWISE_CONV_2D and a MUL (``translate._hard_swish``, form ``depthwise``), so
    such a model's DEPTHWISE_CONV_2D ops are ``count_depthwise_convs(model) + count_hard_swish(model)``."""
    return sum(1 for m in model.modules() if isinstance(m, nn.Hardswish))


def export_onnx_for_tests(model: nn.Module, path: Path, input_size: tuple[int, int, int],
                          simplify: bool = True) -> Path:
    """Export like the ONNX stage does: opset 17, eval mode (BN folded), input ``input``, output ``logits``.

    The real ONNX stage lives in ``ghostnet_edge.export.onnx``; this copy keeps the TFLite tests
    independent of it. onnxsim folds BN into the convs and removes no-op slices.
    """
    import onnx

    buf = io.BytesIO()
    dummy = torch.zeros(1, *input_size)
    with torch.no_grad():
        torch.onnx.export(model.eval(), (dummy,), buf, opset_version=17, input_names=["input"],
                          output_names=["logits"], do_constant_folding=True, dynamo=False,
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    proto = onnx.load_from_string(buf.getvalue())
    if simplify:
        import onnxsim

        proto, ok = onnxsim.simplify(proto)
        assert ok, "onnxsim could not validate the simplified model"
    return atomic_write_bytes(path, proto.SerializeToString())
