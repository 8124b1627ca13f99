"""GhostNet, MobileNetV3/V2: layers, exact layouts, parameter and MAC counts, the per-stage profiler."""

from __future__ import annotations

import ast
import math

import pytest
import torch
import torch.nn.functional as F

from ghostnet_edge.models.ghostnet import (
    GHOSTNET_TABLE1,
    GhostBottleneck,
    GhostModule,
    GhostNet,
    table_stages,
    total_stride,
)
from ghostnet_edge.models.layers import SqueezeExcite, hard_sigmoid, make_divisible
from ghostnet_edge.models.mobilenetv2 import MobileNetV2
from ghostnet_edge.models.mobilenetv3 import MobileNetV3
from ghostnet_edge.models.profile import count_params, profile_macs, stage_of
from ghostnet_edge.models.registry import create_model

# Published numbers (GhostNet paper Table 7 / reference checkpoints; torchvision model docs).
GHOSTNET_PARAMS = {0.5: 2_587_292, 1.0: 5_182_508, 1.3: 7_358_820}
GHOSTNET_MACS = {0.5: 42.3e6, 1.0: 141.2e6, 1.3: 227.0e6}


def read_reference_keys(path) -> dict[str, list[int]]:
    """Parse `key<TAB>[shape]` lines of the shared reference files."""
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            key, shape = line.split("\t")
            out[key] = ast.literal_eval(shape)
    return out


# ----------------------------------------------------------------------------------------- layers

@pytest.mark.parametrize("v, divisor, expected", [
    (16 * 0.5, 4, 8),      # exact multiple
    (16 * 1.3, 4, 20),     # 20.8 -> nearest multiple 20 (within 10%)
    (9, 4, 12),            # 9 -> 8 would lose 11% -> bumped to 12 (the 10% guard)
    (36 * 0.25, 4, 12),    # GhostNet 0.5x SE width of blocks.3 (reference file: conv_reduce [12, 36])
    (72 * 0.25, 4, 20),    # 18 -> 20 (rounds half up)
    (3, 8, 8),             # never below min_value (= divisor)
    (150, 8, 152),         # MobileNetV3 0.75x: 200 * 0.75
])
def test_make_divisible_reference_rule(v, divisor, expected):
    assert make_divisible(v, divisor) == expected
    assert make_divisible(v, divisor) % divisor == 0


def test_make_divisible_never_more_than_10_percent_down():
    for v in [x / 4 for x in range(4, 4000)]:
        r = make_divisible(v, 8)
        assert r >= 0.9 * v and r % 8 == 0


def test_hard_sigmoid_is_relu6_over_6():
    x = torch.linspace(-6, 6, 241)
    torch.testing.assert_close(hard_sigmoid(x), F.hardsigmoid(x))
    assert hard_sigmoid(torch.tensor([-3.0, 0.0, 3.0])).tolist() == [0.0, 0.5, 1.0]


def test_squeeze_excite_reduced_width_and_gate_range():
    se = SqueezeExcite(72, se_ratio=0.25)
    assert se.conv_reduce.out_channels == 20 and se.conv_expand.out_channels == 72
    x = torch.rand(2, 72, 5, 5)
    y = se(x)
    # the gate is in [0, 1]: the output never exceeds the input (inputs are >= 0)
    assert y.shape == x.shape and bool((y <= x + 1e-6).all())


@pytest.mark.parametrize("oup, ratio", [(16, 2), (15, 2), (20, 3), (7, 4)])
def test_ghost_module_intrinsic_and_ghost_maps(oup, ratio):
    m = GhostModule(8, oup, ratio=ratio, relu=False)
    init = math.ceil(oup / ratio)
    assert m.primary_conv[0].out_channels == init
    assert m.cheap_operation[0].out_channels == init * (ratio - 1)
    assert m.cheap_operation[0].groups == init            # depthwise: each ghost map from one intrinsic map
    assert m(torch.randn(1, 8, 6, 6)).shape == (1, oup, 6, 6)
    assert m.needs_slice == (init * ratio != oup)


def test_ghost_bottleneck_stride_and_shortcut():
    b = GhostBottleneck(16, 48, 24, dw_kernel_size=3, stride=2)
    assert len(b.shortcut) == 4 and b.conv_dw.stride == (2, 2)
    assert b(torch.randn(1, 16, 8, 8)).shape == (1, 24, 4, 4)
    same = GhostBottleneck(24, 72, 24, stride=1)
    assert len(same.shortcut) == 0 and not hasattr(same, "conv_dw")
    # no ReLU after the second Ghost module: the residual branch can be negative
    same.eval()
    x = torch.randn(1, 24, 8, 8)
    branch = same.ghost2(same.ghost1(x))
    assert bool((branch < 0).any())


# ---------------------------------------------------------------------------------------- GhostNet

def test_table1_grouping_matches_reference_blocks():
    stages = table_stages(GHOSTNET_TABLE1)
    assert [len(s) for s in stages] == [1, 1, 1, 1, 1, 1, 5, 1, 4]
    assert total_stride(GHOSTNET_TABLE1, stem_stride=2) == 32
    assert [r.out for r in GHOSTNET_TABLE1][-1] == 160 and GHOSTNET_TABLE1[-1].exp == 960


@pytest.mark.parametrize("width", [0.5, 1.0, 1.3])
def test_ghostnet_state_dict_equals_official_layout(width, reference_dir):
    ref = read_reference_keys(reference_dir / f"official_ghostnet_w{width}_keys.txt")
    sd = GhostNet(width=width).state_dict()
    assert list(sd) == list(ref)       # same keys, same order
    wrong = {k: (list(v.shape), ref[k]) for k, v in sd.items() if list(v.shape) != ref[k]}
    assert not wrong


@pytest.mark.parametrize("width", [0.5, 1.0, 1.3])
def test_ghostnet_params_and_macs(width):
    model = GhostNet(width=width)
    assert count_params(model) == GHOSTNET_PARAMS[width]
    report = profile_macs(model, 224)
    assert report.total_params == GHOSTNET_PARAMS[width]
    assert abs(report.total_macs - GHOSTNET_MACS[width]) / GHOSTNET_MACS[width] < 0.01


def test_ghostnet_forward_and_small_input_form():
    big = GhostNet(width=0.5).eval()
    assert big(torch.randn(2, 3, 64, 64)).shape == (2, 1000)
    small = GhostNet(width=0.5, num_classes=10, stem_stride=1)
    feats = small.forward_features(torch.randn(1, 3, 32, 32))
    assert feats.shape == (1, 480, 2, 2)   # total stride 16 for the 32x32 form
    # same network: only the classifier size differs
    assert count_params(big) - count_params(small) == (1000 - 10) * 1281


def test_ghostnet_in_chans():
    m = GhostNet(width=0.5, in_chans=1).eval()
    assert m.conv_stem.weight.shape == (8, 1, 3, 3)
    assert m(torch.randn(1, 1, 32, 32)).shape == (1, 1000)


# --------------------------------------------------------------------------------------- MobileNets

@pytest.mark.parametrize("build, params, paper_macs", [
    (lambda: MobileNetV3("large"), 5_483_032, 219e6),
    (lambda: MobileNetV3("small"), 2_542_856, 56e6),
    (lambda: MobileNetV2(), 3_504_872, 300e6),
])
def test_mobilenet_params_equal_torchvision_and_macs_match_paper(build, params, paper_macs):
    model = build()
    assert count_params(model) == params
    macs = profile_macs(model, 224).total_macs
    assert abs(macs - paper_macs) / paper_macs < 0.02


def test_mobilenet_torchvision_key_layout():
    v3 = MobileNetV3("large").state_dict()
    # a few keys/shapes of torchvision's mobilenet_v3_large state_dict
    assert tuple(v3["features.0.0.weight"].shape) == (16, 3, 3, 3)
    assert tuple(v3["features.4.block.2.fc1.weight"].shape) == (24, 72, 1, 1)
    assert tuple(v3["features.16.0.weight"].shape) == (960, 160, 1, 1)
    assert tuple(v3["classifier.0.weight"].shape) == (1280, 960)
    assert tuple(v3["classifier.3.weight"].shape) == (1000, 1280)
    v2 = MobileNetV2().state_dict()
    assert tuple(v2["features.1.conv.0.0.weight"].shape) == (32, 1, 3, 3)
    assert tuple(v2["features.18.0.weight"].shape) == (1280, 320, 1, 1)
    assert tuple(v2["classifier.1.weight"].shape) == (1000, 1280)


def test_mobilenetv3_075_matches_paper_table7():
    # TF-reference width rule: the paper's MobileNetV3-Large 0.75 is 4.0M weights / 155M MACs.
    m = MobileNetV3("large", width=0.75)
    r = profile_macs(m, 224)
    assert r.total_params == 3_993_528 and abs(r.total_macs - 155e6) / 155e6 < 0.01
    assert all(c.out_channels % 8 == 0 for c in m.modules() if isinstance(c, torch.nn.Conv2d))
    assert m.features[-1][0].out_channels == 6 * make_divisible(160 * 0.75, 8) == 720
    assert m.classifier[0].out_features == 1280                     # head not narrowed below 1.0x
    assert m.features[2].block[0][0].out_channels == 64             # 16 (rounded input) x ratio 4
    small = profile_macs(MobileNetV3("small", width=0.75), 224)
    assert abs(small.total_macs - 44e6) / 44e6 < 0.02


def test_mobilenet_width_multiplier_rounds_to_8():
    m = MobileNetV3("small", width=1.3)
    assert all(c.out_channels % 8 == 0 for c in m.modules() if isinstance(c, torch.nn.Conv2d))
    assert m.classifier[0].out_features == make_divisible(1024 * 1.3, 8)
    v2 = MobileNetV2(width=0.35)
    assert v2.features[0][0].out_channels == 16 and v2.classifier[1].in_features == 1280


# ----------------------------------------------------------------------------------------- profile

def test_profile_per_stage_sums_and_names():
    model = create_model("ghostnet_100")
    model.train()
    report = profile_macs(model, (3, 224, 224))
    names = [s.name for s in report.stages]
    assert names == ["stem", *[f"blocks.{i}" for i in range(10)], "head", "classifier"]
    assert sum(s.macs for s in report.stages) == report.total_macs
    assert sum(s.params for s in report.stages) == report.total_params
    assert report.stage("blocks.9").output_shape == (960, 7, 7)
    assert report.stage("stem").output_shape == (16, 112, 112)
    # stem: 3x3 conv 3->16 on a 112x112 output
    assert report.stage("stem").macs == 112 * 112 * 16 * 3 * 9
    assert report.stage("classifier").macs == 1280 * 1000
    # the profiler leaves the model as it found it
    assert model.training
    assert all(not m._forward_hooks for m in model.modules())


def test_profile_counts_grouped_conv_and_linear_exactly():
    net = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2), torch.nn.Flatten(),
                              torch.nn.Linear(8 * 5 * 5, 3))
    report = profile_macs(net, (4, 10, 10))
    assert report.total_macs == 8 * 5 * 5 * (4 // 2) * 9 + 200 * 3
    assert [s.name for s in report.stages] == ["0", "1", "2"]
    assert stage_of(net, "2") == "2"
