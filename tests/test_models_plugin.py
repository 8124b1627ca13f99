"""The Ghost module as a plug-in (paper Tables 3-5): geometry kept, published sizes matched.

Sizes are checked against the paper within 3%. FLOPs are multiply-accumulates of conv and linear layers
(see ghostnet_edge/models/profile.py); the paper's "FLOPs" are MACs. The VGG-16 is the CIFAR variant of
Li et al. 2017 with a 512-512-10 classifier, the one whose 15.0M/313M the paper quotes.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ghostnet_edge.errors import ModelError
from ghostnet_edge.models.ghost_plugin import ghostify, resnet56_cifar, vgg16_cifar
from ghostnet_edge.models.ghostnet import GhostModule
from ghostnet_edge.models.profile import count_params, profile_macs


def close(value: float, published: float, tol: float = 0.03) -> bool:
    return abs(value - published) / published <= tol


@pytest.fixture(scope="module")
def vgg():
    return vgg16_cifar()


@pytest.fixture(scope="module")
def resnet():
    return resnet56_cifar()


def test_vgg16_size(vgg):
    r = profile_macs(vgg, 32)
    assert close(r.total_params, 15.0e6) and close(r.total_macs, 313e6)
    assert [s.name for s in r.stages] == ["block1", "block2", "block3", "block4", "block5", "head", "classifier"]


# Table 3 (right): Ghost-VGG-16 with d=3 and s = 2..5, weights and FLOPs as published.
@pytest.mark.parametrize("s, weights, flops", [(2, 7.7e6, 158e6), (3, 5.2e6, 107e6), (4, 4.0e6, 80e6),
                                               (5, 3.3e6, 65e6)])
def test_ghost_vgg16_sizes(vgg, s, weights, flops):
    g = ghostify(vgg, ratio=s, dw_size=3)
    r = profile_macs(g, 32)
    assert close(r.total_params, weights), r.total_params
    assert close(r.total_macs, flops), r.total_macs


def test_resnet56_and_ghost_resnet56_sizes(resnet):
    base = profile_macs(resnet, 32)
    assert close(base.total_params, 0.85e6) and close(base.total_macs, 125e6)
    ghost = ghostify(resnet, ratio=2, dw_size=3)
    r = profile_macs(ghost, 32)
    assert close(r.total_params, 0.43e6), r.total_params
    # The paper's 63M FLOPs for Ghost-ResNet-56 equal the MACs of the primary convs; the cheap 3x3
    # depthwise convs add 2.4M more here (3.4% over 63M). ResNet-56 is only 16-64 channels wide, so the
    # cheap ops cost relatively more than in VGG (ratio d^2/(c*k^2) = 1/c), where the paper's 158M does
    # include them. We check both readings exactly instead of loosening the bound:
    cheap = sum(
        m.cheap_operation[0].out_channels * 9 * out_hw
        for m, out_hw in _ghost_modules_with_output_area(ghost)
    )
    assert close(r.total_macs - cheap, 63e6)
    assert close(r.total_macs, 65.1e6, tol=0.002)


def _ghost_modules_with_output_area(model: nn.Module):
    areas = {}
    hooks = [m.register_forward_hook(lambda mod, i, o: areas.__setitem__(mod, o.shape[2] * o.shape[3]))
             for m in model.modules() if isinstance(m, GhostModule)]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, 32, 32))
    for h in hooks:
        h.remove()
    return list(areas.items())


def test_ghostify_keeps_geometry_and_skips_depthwise():
    net = nn.Sequential(
        nn.Conv2d(3, 12, 5, stride=2, padding=2),            # strided 5x5
        nn.Conv2d(12, 12, 3, padding=1, groups=12),          # depthwise: kept
        nn.Conv2d(12, 10, 3, padding=0),                      # 'valid' padding
        nn.Conv2d(10, 7, 1),                                  # 1x1, odd output
    )
    g = ghostify(net, ratio=3, dw_size=5)
    assert isinstance(g[1], nn.Conv2d) and all(isinstance(g[i], GhostModule) for i in (0, 2, 3))
    assert g[0].primary_conv[0].kernel_size == (5, 5) and g[0].primary_conv[0].stride == (2, 2)
    assert g[0].cheap_operation[0].kernel_size == (5, 5)
    x = torch.randn(2, 3, 17, 17)
    assert g.eval()(x).shape == net(x).shape == (2, 7, 7, 7)
    assert isinstance(net[0], nn.Conv2d)                      # the original is untouched
    kept = ghostify(net, skip=["0"])
    assert isinstance(kept[0], nn.Conv2d) and isinstance(kept[2], GhostModule)


def test_ghost_module_weight_count_follows_ratio():
    conv = nn.Conv2d(64, 128, 3, padding=1, bias=False)
    for s in (2, 4):
        g = ghostify(nn.Sequential(conv), ratio=s)[0]
        init = -(-128 // s)
        assert g.primary_conv[0].weight.numel() == init * 64 * 9
        assert g.cheap_operation[0].weight.numel() == init * (s - 1) * 9
        assert count_params(g) < conv.weight.numel() / s * 1.1


@pytest.mark.parametrize("kwargs", [{"ratio": 1}, {"ratio": 2.5}, {"dw_size": 4}, {"dw_size": 0}])
def test_ghostify_bad_settings(kwargs):
    with pytest.raises(ModelError):
        ghostify(nn.Sequential(nn.Conv2d(3, 8, 3)), **kwargs)


def test_ghostify_needs_a_conv():
    with pytest.raises(ModelError, match="no ordinary"):
        ghostify(nn.Sequential(nn.Linear(3, 3)))


def test_resnet_shortcut_b_is_all_convs():
    b = resnet56_cifar(shortcut="B")
    assert count_params(b) - count_params(resnet56_cifar()) == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)
    assert b.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_option_a_shortcut_is_subsample_and_zero_pad():
    from ghostnet_edge.models.ghost_plugin import PadShortcut

    x = torch.randn(2, 16, 9, 9)
    expected = torch.nn.functional.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 8, 8))
    torch.testing.assert_close(PadShortcut(16, 32)(x), expected, rtol=0, atol=0)
    assert "layer2.0.shortcut.weight" not in resnet56_cifar().state_dict()
