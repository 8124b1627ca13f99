"""Named variants: parsing, specs, overrides, input-size checks, seeded creation, every registered model runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ghostnet_edge.errors import ModelError
from ghostnet_edge.models import create_model, get_spec, list_models, parse_model_name
from ghostnet_edge.models.profile import profile_macs
from ghostnet_edge.models.registry import (
    CIFAR_MEAN,
    CIFAR_STD,
    IMAGENET_MEAN,
    ModelSpec,
    check_input_size,
    total_stride,
)

REQUIRED = ["ghostnet_050", "ghostnet_100", "ghostnet_130", "ghostnet_cifar_050", "ghostnet_cifar_100",
            "ghostnet_cifar_130", "mobilenetv3_large_100", "mobilenetv3_large_075", "mobilenetv3_small_100",
            "mobilenetv3_small_075", "mobilenetv2_100", "mobilenetv2_050", "mobilenetv3_large_cifar_100",
            "mobilenetv3_small_cifar_075", "mobilenetv2_cifar_050", "vgg16_cifar", "resnet56_cifar"]


def test_required_names_registered():
    names = list_models()
    assert set(REQUIRED) <= set(names)
    assert names == sorted(names)


def test_spec_fields_imagenet_and_cifar_forms():
    s = get_spec("ghostnet_100")
    assert s == ModelSpec("ghostnet_100", "ghostnet", 1.0, 1000, (3, 224, 224), IMAGENET_MEAN,
                          (0.229, 0.224, 0.225), 256, "bilinear", 2, 0.2)
    c = get_spec("ghostnet_cifar_050")
    assert (c.arch, c.width, c.num_classes, c.input_size, c.stem_stride, c.resize_size) == \
        ("ghostnet", 0.5, 10, (3, 32, 32), 1, 32)
    assert c.mean == CIFAR_MEAN == (0.4914, 0.4822, 0.4465) and c.std == CIFAR_STD == (0.2470, 0.2435, 0.2616)


@pytest.mark.parametrize("name, arch, width, cifar", [
    ("ghostnet_075", "ghostnet", 0.75, False),
    ("ghostnet_cifar_110", "ghostnet", 1.10, True),
    ("GhostNet_130", "ghostnet", 1.3, False),
    ("ghostnet", "ghostnet", 1.0, False),
    ("mobilenetv3_large_cifar_075", "mobilenetv3_large", 0.75, True),
    ("mobilenetv2_140", "mobilenetv2", 1.4, False),
    ("vgg16_cifar", "vgg16", 1.0, True),
])
def test_parse_any_width(name, arch, width, cifar):
    p = parse_model_name(name)
    assert (p.arch, p.width, p.cifar) == (arch, width, cifar)


def test_parse_ghost_plugin_settings():
    assert parse_model_name("ghost_vgg16_cifar")[3:] == (2, 3)
    assert parse_model_name("ghost_vgg16_cifar_s4")[3:] == (4, 3)
    assert parse_model_name("ghost_resnet56_cifar_s3d5")[3:] == (3, 5)
    assert get_spec("ghost_vgg16_cifar_s4d3").name == "ghost_vgg16_cifar_s4"


@pytest.mark.parametrize("name, in_message", [
    ("ghostnet_000", "outside"),
    ("ghostnet_1000", "outside"),
    ("resnet50", "unknown model"),
    ("", "empty"),
    ("vgg16", "vgg16_cifar"),
    ("ghost_vgg16_cifar_s1", "s=1"),
    ("ghost_vgg16_cifar_s2d4", "d=4"),
])
def test_bad_names_raise_model_error_with_hint(name, in_message):
    with pytest.raises(ModelError) as info:
        get_spec(name)
    assert in_message in info.value.message
    assert info.value.hint


def test_unknown_name_hint_lists_valid_names_and_close_match():
    with pytest.raises(ModelError) as info:
        get_spec("ghostnet_1OO")
    assert "ghostnet_100" in info.value.hint and "mobilenetv3_small_075" in info.value.hint


def test_overrides():
    assert get_spec("ghostnet_100", width=0.75).name == "ghostnet_075"
    assert get_spec("ghostnet_100", num_classes=10).num_classes == 10
    s = get_spec("ghostnet_100", input_size=160)
    assert s.input_size == (3, 160, 160) and s.resize_size == 183     # keeps the 0.875 crop
    assert get_spec("ghostnet_cifar_100", input_size=(3, 64, 64)).resize_size == 64
    for bad in ({"num_classes": 0}, {"dropout": 1.5}, {"stem_stride": 3}, {"colour": "red"}, {"arch": "x"},
                {"width": 0.333}, {"input_size": (3, 100, 100)}, {"std": (0.2, 0.0, 0.2)}):
        with pytest.raises(ModelError):
            get_spec("ghostnet_100", **bad)
    with pytest.raises(ModelError):
        get_spec("vgg16_cifar", width=0.5)


def test_check_input_size():
    spec = get_spec("ghostnet_100")
    assert check_input_size(spec, (224, 224)) == (224, 224)
    assert check_input_size(spec, 320) == (320, 320)
    with pytest.raises(ModelError) as info:
        check_input_size(spec, (100, 224))
    assert "96 or 128" in info.value.hint
    with pytest.raises(ModelError, match="too small"):
        check_input_size(spec, (16, 16))
    with pytest.raises(ModelError, match="larger"):
        check_input_size(spec, (8192, 8192))
    with pytest.raises(ModelError, match="channels"):
        check_input_size(spec, (1, 224, 224))
    cifar = get_spec("ghostnet_cifar_100")
    assert total_stride(cifar) == 16 and check_input_size(cifar, (32, 32)) == (32, 32)
    with pytest.raises(ModelError):
        check_input_size(cifar, (24, 24))


def test_create_model_attaches_spec_and_seed_is_reproducible():
    state = torch.random.get_rng_state()
    a = create_model("ghostnet_cifar_050", seed=3)
    b = create_model("ghostnet_cifar_050", seed=3)
    c = create_model("ghostnet_cifar_050", seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)     # the caller's generator is untouched
    assert a.spec == get_spec("ghostnet_cifar_050")
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["conv_stem.weight"], sc["conv_stem.weight"])
    m = create_model("ghostnet_cifar_100", num_classes=7, input_size=(1, 32, 32))
    assert m.classifier.out_features == 7 and m.conv_stem.in_channels == 1 and m.spec.num_classes == 7


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_runs_and_total_stride_is_right(name):
    spec = get_spec(name)
    side = spec.input_size[1] if spec.stem_stride == 1 else 64      # small ImageNet input keeps this fast
    model = create_model(name, seed=0).eval()
    report = profile_macs(model, (3, side, side))
    assert report.stages[-1].output_shape == (spec.num_classes,)
    last_map = [s.output_shape for s in report.stages if len(s.output_shape) == 3][-1]
    assert last_map[1:] == (side // total_stride(spec), side // total_stride(spec))
    with torch.no_grad():
        out = model(torch.randn(2, 3, side, side))
    assert out.shape == (2, spec.num_classes) and torch.isfinite(out).all()


def test_registry_does_not_import_torch():
    code = ("import sys; from ghostnet_edge.models import get_spec, list_models; "
            "[get_spec(n) for n in list_models()]; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "False"
