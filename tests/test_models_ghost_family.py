"""GhostNetV2, GhostNetV3 and RepGhostNet: timm layouts, counts, folding, checkpoints in both forms, ONNX."""

from __future__ import annotations

import ast
import io
import json
import warnings
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch import nn

from ghostnet_edge.cli import main
from ghostnet_edge.errors import CheckpointError, ModelError
from ghostnet_edge.models import create_model, get_spec, list_models, parse_model_name
from ghostnet_edge.models.checkpoint import infer_architecture, load_model, save_checkpoint
from ghostnet_edge.models.ghostnet import (
    GHOST_FAMILIES,
    GHOSTNET_TABLE1,
    GHOSTNETV2_TABLE,
    GhostBottleneck,
    GhostModule,
    RepGhostModule,
    build_ghostnet,
    ghost_arch_of,
    total_stride,
)
from ghostnet_edge.models.profile import count_params, profile_macs
from ghostnet_edge.models.registry import ARCHS, CIFAR_MEAN, GHOST_ARCHS, IMAGENET_MEAN, check_input_size
from ghostnet_edge.models.reparam import has_branches, reparameterize, state_dict_form

# /work/shared/reference/timm/timm_<stem>_keys.txt: timm 1.0.31's layouts, trained and folded forms.
REFERENCE_STEMS = [
    "ghostnetv2_100", "ghostnetv2_130", "ghostnetv2_160",
    "ghostnetv3_050", "ghostnetv3_100", "ghostnetv3_130",
    "ghostnetv3_050_reparameterized", "ghostnetv3_100_reparameterized", "ghostnetv3_130_reparameterized",
    "repghostnet_100", "repghostnet_100_reparameterized",
]

# shared/README.md: timm's figures (FlopCounterMode MACs at 224x224, deployed form).
#          name: (deployed params, params as trained, MACs)
COUNTS = {
    "ghostnetv2_100": (6_156_908, 6_156_908, 167.0e6),
    "ghostnetv2_130": (8_960_404, 8_960_404, 269.3e6),
    "ghostnetv2_160": (12_392_698, 12_392_698, 398.6e6),
    "ghostnetv3_050": (2_853_176, None, 49.6e6),
    "ghostnetv3_100": (6_147_588, 8_129_028, 167.0e6),
    "ghostnetv3_130": (8_948_296, None, 269.3e6),
    "repghostnet_100": (4_058_772, 4_073_604, 142.4e6),
}


def read_layout(path: Path) -> list[tuple[str, list[int]]]:
    """`key<TAB>[shape]` lines, in file order."""
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            key, shape = line.split("\t")
            out.append((key, list(ast.literal_eval(shape))))
    return out


def layout(model: nn.Module) -> list[tuple[str, list[int]]]:
    return [(k, list(v.shape)) for k, v in model.state_dict().items()]


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and affine parameters, so that folding them is actually tested.

    Gammas stay below 1: the folded branches add up (3 kxk + 1x1 + identity), and with gammas around 1
    a deep random network's activations grow to 1e9, where any rounding difference looks like a bug.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) * 0.4 + 0.2)
                m.bias.copy_(torch.randn(n, generator=g) * 0.2)
    return model


def random_state_dict(ref: list[tuple[str, list[int]]], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in ref:
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.tensor(100, dtype=torch.int64)
        elif key.endswith("running_var"):
            sd[key] = torch.rand(shape, generator=g) + 0.5
        else:
            sd[key] = torch.randn(shape, generator=g) * 0.1
    return sd


# ------------------------------------------------------------------------------- tables and registry

def test_families_are_tables_and_registry_knows_them():
    assert set(GHOST_FAMILIES) == set(GHOST_ARCHS)
    # V2/V3: Table 1 plus DFC attention on every bottleneck but the first two
    assert [r._replace(dfc=False) for r in GHOSTNETV2_TABLE] == list(GHOSTNET_TABLE1)
    assert [r.dfc for r in GHOSTNETV2_TABLE] == [False, False] + [True] * 14
    assert GHOST_FAMILIES["ghostnetv3"].rows is GHOSTNETV2_TABLE and GHOST_FAMILIES["ghostnetv3"].branches == 3
    for arch, family in GHOST_FAMILIES.items():
        assert total_stride(family.rows, stem_stride=1) == ARCHS[arch].stride == 16
        # the registry's plain-Python facts agree with what gets built
        assert (ARCHS[arch].min_last_map > 1) == any(r.dfc for r in family.rows)
        small = build_ghostnet(arch, num_classes=10, width=0.5, stem_stride=1)
        assert has_branches(small) == ARCHS[arch].reparameterizable


@pytest.mark.parametrize("name", ["ghostnetv2_100", "ghostnetv2_130", "ghostnetv2_160", "ghostnetv3_050",
                                  "ghostnetv3_100", "ghostnetv3_130", "repghostnet_100", "ghostnetv2_cifar_100",
                                  "ghostnetv3_cifar_100", "repghostnet_cifar_100"])
def test_registered_names_and_timm_defaults(name):
    assert name in list_models()
    spec = get_spec(name)
    if "_cifar" in name:     # as ghostnet_cifar_* differs from ghostnet_*
        assert (spec.input_size, spec.stem_stride, spec.num_classes, spec.mean, spec.resize_size) == \
            ((3, 32, 32), 1, 10, CIFAR_MEAN, 32)
    else:                    # timm's default cfg: 224x224, crop 0.875, bicubic, ImageNet mean/std
        assert (spec.input_size, spec.stem_stride, spec.num_classes, spec.mean, spec.std) == \
            ((3, 224, 224), 2, 1000, IMAGENET_MEAN, (0.229, 0.224, 0.225))
        assert spec.resize_size == 256 and spec.interpolation == "bicubic" and spec.dropout == 0.2


@pytest.mark.parametrize("name, arch, width, cifar", [
    ("ghostnetv2_075", "ghostnetv2", 0.75, False),
    ("ghostnetv3_cifar_130", "ghostnetv3", 1.3, True),
    ("repghostnet_058", "repghostnet", 0.58, False),
    ("RepGhostNet_111", "repghostnet", 1.11, False),
    ("ghostnetv2", "ghostnetv2", 1.0, False),
])
def test_any_width_parses(name, arch, width, cifar):
    p = parse_model_name(name)
    assert (p.arch, p.width, p.cifar) == (arch, width, cifar)


def test_unbuildable_widths_and_inputs_say_why():
    with pytest.raises(ModelError) as info:
        get_spec("ghostnetv2_900")
    assert "outside" in info.value.message and "ghostnetv2_100/_130/_160" in info.value.hint
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ModelError) as info:
            build_ghostnet("ghostnetv3", width=bad)
        assert "cannot be built" in info.value.message and info.value.hint
    with pytest.raises(ModelError, match="unknown GhostNet"):
        build_ghostnet("ghostnetv9")
    # DFC attention pools the last map by 2 again: a 1x1 last map cannot be taken
    with pytest.raises(ModelError) as info:
        check_input_size(get_spec("ghostnetv2_cifar_100"), 16)
    assert "DFC" in info.value.message and "32" in info.value.hint
    with pytest.raises(ModelError, match="DFC"):
        get_spec("ghostnetv3_100", input_size=32)
    assert check_input_size(get_spec("repghostnet_100"), 32) == (32, 32)    # no DFC: 1x1 is fine


# ------------------------------------------------------------------------------------ timm layouts

def _model_for_stem(stem: str) -> nn.Module:
    folded = stem.endswith("_reparameterized")
    return create_model(stem.removesuffix("_reparameterized"), reparameterized=folded)


@pytest.mark.parametrize("stem", REFERENCE_STEMS)
def test_state_dict_equals_timm_layout(stem, reference_dir):
    ref = read_layout(reference_dir / "timm" / f"timm_{stem}_keys.txt")
    assert layout(_model_for_stem(stem)) == ref         # same keys, same shapes, same order


def test_every_reference_file_is_tested(reference_dir):
    files = {p.name for p in (reference_dir / "timm").glob("timm_*_keys.txt")}
    assert files == {f"timm_{s}_keys.txt" for s in REFERENCE_STEMS}


@pytest.mark.parametrize("name", ["ghostnetv3_100", "repghostnet_100"])
def test_folding_gives_timm_folded_layout(name, reference_dir):
    ref = read_layout(reference_dir / "timm" / f"timm_{name}_reparameterized_keys.txt")
    assert layout(reparameterize(create_model(name))) == ref


@pytest.mark.parametrize("name", list(COUNTS))
def test_params_exact_and_macs_within_1_percent(name):
    deployed_params, trained_params, macs = COUNTS[name]
    model = create_model(name, reparameterized=True)
    assert count_params(model) == deployed_params
    report = profile_macs(model, 224)           # the deployed form, DFC attention convs included
    assert abs(report.total_macs - macs) / macs < 0.01
    if trained_params is not None:
        assert count_params(create_model(name)) == trained_params


# ----------------------------------------------------------------------------------------- folding

@pytest.mark.parametrize("build", [
    lambda: GhostModule(8, 16, branches=3),
    lambda: GhostModule(8, 16, branches=3, dfc=True, relu=False),
    lambda: GhostBottleneck(8, 16, 12, 5, stride=2, se_ratio=0.25, branches=3, dfc=True),
    lambda: RepGhostModule(8, 12),
    lambda: GhostBottleneck(8, 12, 8, 3, stride=2, module="repghost"),
])
def test_fold_each_block(build):
    block = randomize_bn(build().eval())
    x = torch.randn(2, 8, 10, 10)
    folded = reparameterize(block)
    assert has_branches(block) and not has_branches(folded)
    assert not any(isinstance(m, nn.BatchNorm2d) for n, m in folded.named_modules()
                   if "rpr" in n or "fusion" in n)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), block(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name, side", [("ghostnetv3_050", 64), ("ghostnetv3_cifar_100", 32),
                                        ("repghostnet_100", 64), ("repghostnet_cifar_100", 32)])
def test_folded_network_gives_same_logits(name, side):
    model = randomize_bn(create_model(name, seed=0)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = reparameterize(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())   # input left untouched
    assert layout(folded) == layout(create_model(name, reparameterized=True))
    assert folded.spec == model.spec and not folded.training
    assert count_params(folded) < count_params(model)
    x = torch.randn(4, 3, side, side, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = model(x), folded(x)
    assert expected.std() > 1e-3           # logits that say something, not a constant
    scale = expected.abs().max()
    assert (got - expected).abs().max() <= 1e-5 * scale
    # in float64 the fold is exact up to float64 rounding
    m64, x64 = model.double(), x.double()
    with torch.no_grad():
        diff = (reparameterize(m64)(x64) - m64(x64)).abs().max()
    assert diff <= 1e-10 * scale


def test_reparameterize_is_identity_without_branches():
    v2 = create_model("ghostnetv2_cifar_100")
    assert not has_branches(v2) and reparameterize(v2) is v2
    folded = create_model("ghostnetv3_cifar_100", reparameterized=True)
    assert reparameterize(folded) is folded
    inplace = create_model("repghostnet_cifar_100")
    assert reparameterize(inplace, inplace=True) is inplace and not has_branches(inplace)


# ------------------------------------------------------------------------------------- checkpoints

@pytest.mark.parametrize("stem", REFERENCE_STEMS)
def test_timm_layout_checkpoint_loads_strictly_in_its_form(stem, reference_dir, tmp_path):
    ref = read_layout(reference_dir / "timm" / f"timm_{stem}_keys.txt")
    sd = random_state_dict(ref)
    torch.save(sd, tmp_path / "timm.pth")                   # a bare state_dict, as timm saves it
    model, spec, meta = load_model(tmp_path / "timm.pth")   # name and form from the keys alone
    assert spec.name == stem.removesuffix("_reparameterized") and meta == {}
    assert has_branches(model) == (state_dict_form(sd) == "trained")
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in sd.items())


@pytest.mark.parametrize("name", ["ghostnetv3_cifar_050", "repghostnet_cifar_050"])
def test_checkpoint_in_either_form_round_trips(name, tmp_path):
    trained = randomize_bn(create_model(name, seed=0)).eval()
    folded = reparameterize(trained)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = trained(x)
    for form, model in (("trained", trained), ("folded", folded)):
        path = save_checkpoint(tmp_path / f"{form}.pt", model, {"seed": 0})
        loaded, spec, _ = load_model(path)
        assert spec == trained.spec and has_branches(loaded) == (form == "trained")
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), expected, rtol=1e-4, atol=1e-5)
        # naming the (trained-form) model explicitly still builds the form the file holds
        again, _, _ = load_model(path, arch=name)
        assert has_branches(again) == (form == "trained")
        # ... and the export's fold gives the same deployed network from either
        assert layout(reparameterize(loaded)) == layout(folded)


def test_folded_checkpoint_for_another_network_is_refused_with_the_exact_mismatch(tmp_path):
    sd = reparameterize(create_model("ghostnetv3_cifar_050")).state_dict()
    torch.save(sd, tmp_path / "v3.pth")
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path / "v3.pth", arch="ghostnetv2_050", num_classes=10)
    assert "blocks.0.0.ghost1.primary_conv.1.weight: missing from checkpoint (model [4])" in info.value.message
    assert "this checkpoint is ghostnetv3_050" in info.value.hint
    # a damaged folded checkpoint: the one key that is wrong is named, with both shapes
    sd["blocks.1.0.conv_dw.weight"] = torch.zeros(24, 1, 5, 5)
    del sd["blocks.2.0.ghost1.cheap_operation.0.bias"]
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path / "bad.pth")
    message = info.value.message
    assert "2 mismatched keys" in message
    assert "blocks.1.0.conv_dw.weight: checkpoint [24,1,5,5] vs model [24,1,3,3]" in message
    assert "blocks.2.0.ghost1.cheap_operation.0.bias: missing from checkpoint (model [18])" in message


def test_mixed_forms_are_refused_naming_the_folded_keys(tmp_path):
    sd = create_model("ghostnetv3_cifar_050").state_dict()
    sd["blocks.1.0.conv_dw.bias"] = torch.zeros(24)       # a folded key inside a trained-form file
    torch.save(sd, tmp_path / "mixed.pth")
    with pytest.raises(CheckpointError, match=r"blocks\.1\.0\.conv_dw\.bias: not in model"):
        load_model(tmp_path / "mixed.pth")


@pytest.mark.parametrize("name", ["ghostnetv2_cifar_050", "ghostnetv3_cifar_050", "repghostnet_cifar_050"])
def test_infer_architecture_of_both_forms(name):
    p = parse_model_name(name)
    expected = (f"{p.arch}_050", 10)
    trained = create_model(name)
    assert infer_architecture(trained.state_dict()) == expected
    assert infer_architecture(reparameterize(trained).state_dict()) == expected
    assert ghost_arch_of(create_model("ghostnet_cifar_050").state_dict()) == "ghostnet"


# ------------------------------------------------------------------------------------------ CLI, ONNX

def test_info_reports_the_deployed_form(capsys):
    assert main(["info", "ghostnetv3_100", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["params"] == 6_147_588 and data["params_trained"] == 8_129_028
    assert abs(data["macs"] - 167.0e6) / 167.0e6 < 0.01
    assert data["spec"]["interpolation"] == "bicubic"
    assert main(["info", "ghostnetv2_cifar_100"]) == 0
    assert "blocks.9" in capsys.readouterr().out


# ONNX op types of the folded networks, as torch.onnx.export (dynamo=False, opset 17) writes them before
# onnxsim. The shape arithmetic (Shape/Gather/Cast/Unsqueeze/Concat/Slice) computes the DFC Resize's
# output size; onnxsim folds it into a constant, leaving Resize(nearest, asymmetric, floor, sizes=const).
BASE_OPS = {"Conv", "Relu", "Add", "Mul", "Clip", "GlobalAveragePool", "Flatten", "Gemm", "Constant", "Identity"}
DFC_OPS = {"AveragePool", "Resize", "Sigmoid", "Concat", "Shape", "Gather", "Cast", "Unsqueeze", "Slice"}


def export_onnx(model: nn.Module, x: torch.Tensor) -> bytes:
    """The TorchScript exporter the project uses (dynamo=False, opset 17); its deprecation warnings muted."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=17)
    return buf.getvalue()


@pytest.mark.parametrize("name, side", [("ghostnetv2_100", 224), ("ghostnetv3_100", 224), ("repghostnet_100", 224),
                                        ("ghostnetv2_cifar_100", 32), ("ghostnetv3_cifar_100", 32),
                                        ("repghostnet_cifar_100", 32)])
def test_onnx_export_of_deployed_form(name, side):
    onnx = pytest.importorskip("onnx")
    model = reparameterize(create_model(name, seed=0)).eval()
    graph = onnx.load_from_string(export_onnx(model, torch.randn(1, 3, side, side))).graph
    ops = Counter(n.op_type for n in graph.node)
    dfc = ARCHS[parse_model_name(name).arch].min_last_map > 1
    assert set(ops) <= BASE_OPS | (DFC_OPS if dfc else set())
    assert "BatchNormalization" not in ops                       # folded by the exporter in eval mode
    if dfc:
        assert ops["Resize"] == ops["Sigmoid"] == ops["AveragePool"] == 14      # one per DFC module
        assert ops["Conv"] == 137         # V3 folded = V2's graph: 95 GhostNet convs + 14 x 3 DFC convs
    else:
        assert ops["Conv"] == 95 and "Concat" not in ops         # RepGhost: no concatenation left


def test_onnx_dfc_resize_matches_torch_at_odd_map_sizes():
    # 224x224 gives a 7x7 last stage: pooled to 3x3 and upsampled 3 -> 7 by "nearest" (floor(i*3/7)),
    # the one place where the DFC upsampling is not a plain 2x.
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = randomize_bn(create_model("ghostnetv2_100", seed=0)).eval()
    x = torch.randn(1, 3, 224, 224)
    data = export_onnx(model, x)
    onnx.checker.check_model(onnx.load_from_string(data))
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = torch.from_numpy(sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0])
    with torch.no_grad():
        expected = model(x)
    assert (got - expected).abs().max() <= 1e-4 * expected.abs().max()
