"""Checkpoints: official GhostNet layout loads strictly, wrappers/DDP unwrap, bad files give one clear error."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from ghostnet_edge.errors import CheckpointError, ModelError
from ghostnet_edge.models import create_model, list_models, parse_model_name
from ghostnet_edge.models.checkpoint import (
    META_KEYS,
    infer_architecture,
    load_checkpoint,
    load_model,
    save_checkpoint,
    sniff_format,
    state_dict_mismatches,
    strip_prefixes,
    unwrap_state_dict,
)
from ghostnet_edge.models.registry import format_model_name


def official_state_dict(keys_file: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state_dict with exactly the keys and shapes of the published GhostNet checkpoint."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for line in keys_file.read_text().splitlines():
        key, shape = line.split("\t")
        shape = ast.literal_eval(shape)
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.tensor(1000, dtype=torch.int64)
        elif key.endswith("running_var"):
            sd[key] = torch.rand(shape, generator=g) + 0.5
        else:
            sd[key] = torch.randn(shape, generator=g)
    return sd


@pytest.mark.parametrize("width, name", [(0.5, "ghostnet_050"), (1.0, "ghostnet_100"), (1.3, "ghostnet_130")])
def test_official_layout_loads_strictly_and_width_is_inferred(tmp_path, reference_dir, width, name):
    sd = official_state_dict(reference_dir / f"official_ghostnet_w{width}_keys.txt")
    path = tmp_path / "state_dict_73.98.pth"
    torch.save(sd, path)
    model, spec, meta = load_model(path)
    assert spec.name == name and spec.num_classes == 1000 and meta == {}
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in sd.items())
    assert not model.training


@pytest.mark.parametrize("wrap", [
    lambda sd: {"state_dict": sd},
    lambda sd: {"model": sd, "epoch": 3},
    lambda sd: {"state_dict_ema": sd, "optimizer": {"lr": 0.1}},
    lambda sd: {f"module.{k}": v for k, v in sd.items()},                       # DDP
    lambda sd: {"state_dict": {f"module._orig_mod.{k}": v for k, v in sd.items()}},  # DDP + torch.compile
])
def test_wrapped_and_prefixed_state_dicts_unwrap(wrap):
    sd = create_model("ghostnet_cifar_050", seed=0).state_dict()
    state, meta, extra = unwrap_state_dict(wrap(sd))
    assert list(state) == list(sd) and all(state[k] is sd[k] for k in sd)


def test_ddp_checkpoint_file_loads(tmp_path, reference_dir):
    sd = official_state_dict(reference_dir / "official_ghostnet_w0.5_keys.txt")
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "ddp.pth.tar")
    model, spec, _ = load_model(tmp_path / "ddp.pth.tar")
    assert spec.name == "ghostnet_050"
    assert torch.equal(model.conv_stem.weight, sd["conv_stem.weight"])


def test_use_ema_prefers_averaged_weights():
    a = {"w": torch.zeros(1)}
    b = {"w": torch.ones(1)}
    assert unwrap_state_dict({"state_dict": a, "state_dict_ema": b})[0]["w"].item() == 0
    assert unwrap_state_dict({"state_dict": a, "state_dict_ema": b}, use_ema=True)[0]["w"].item() == 1


def test_strip_prefixes_only_when_every_key_has_it():
    assert list(strip_prefixes({"module.a": 1, "module.b": 2})) == ["a", "b"]
    assert list(strip_prefixes({"module.a": 1, "b": 2})) == ["module.a", "b"]


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_save_load_roundtrip(tmp_path, suffix):
    model = create_model("ghostnet_cifar_050", seed=1, input_size=(3, 64, 64)).eval()
    names = [f"c{i}" for i in range(10)]
    path = save_checkpoint(tmp_path / f"m{suffix}", model,
                           {"seed": 1, "class_names": names, "epochs_done": 2, "epochs_total": 5, "accuracy": 0.5},
                           extra={"note": "hello"})
    ckpt = load_checkpoint(path)
    assert set(META_KEYS) <= set(ckpt.meta)
    assert ckpt.meta["model"] == "ghostnet_cifar_050" and ckpt.meta["class_names"] == names
    assert "torch" in ckpt.meta["versions"] and ckpt.extra == {"note": "hello"}
    loaded, spec, meta = load_model(path)
    assert spec == model.spec and spec.input_size == (3, 64, 64)     # trained input size kept from meta
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]       # no temp files left behind


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_failed_save_leaves_no_file_and_keeps_the_old_one(tmp_path, monkeypatch, suffix):
    model = create_model("ghostnet_cifar_050", seed=0)
    path = save_checkpoint(tmp_path / f"m{suffix}", model, {"seed": 0})
    before = path.read_bytes()

    def disk_full(fd):   # the bytes are in the temporary file, then the disk fills up
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.fsync", disk_full)
    with pytest.raises(OSError):
        save_checkpoint(path, model, {"seed": 1})
    with pytest.raises(OSError):
        save_checkpoint(tmp_path / f"new{suffix}", model, {"seed": 1})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_safetensors_rejects_non_json_extra(tmp_path):
    with pytest.raises(CheckpointError, match="JSON"):
        save_checkpoint(tmp_path / "m.safetensors", create_model("ghostnet_cifar_050"), {},
                        extra={"opt": torch.zeros(2)})
    assert list(tmp_path.iterdir()) == []


def test_malicious_pickle_is_refused_not_executed(tmp_path):
    marker = tmp_path / "PWNED"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": Evil()}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert "refused" in info.value.message and "arbitrary code" in info.value.message and info.value.hint
    assert not marker.exists()


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_truncated_file(tmp_path, suffix):
    path = save_checkpoint(tmp_path / f"m{suffix}", create_model("ghostnet_cifar_050"), {})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    assert "truncated" in info.value.hint


@pytest.mark.parametrize("content, message", [
    (b"", "empty"),
    (b"\xff\xd8\xff\xe0JFIF not a checkpoint at all", "not a checkpoint"),
])
def test_not_a_checkpoint(tmp_path, content, message):
    path = tmp_path / "x.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_pickled_non_dict_and_tensorless_dict(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="list"):
        load_checkpoint(tmp_path / "list.pt")
    torch.save({"epoch": 3}, tmp_path / "empty.pt")
    with pytest.raises(CheckpointError, match="no named tensors"):
        load_checkpoint(tmp_path / "empty.pt")


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="folder"):
        load_checkpoint(tmp_path)
    with pytest.raises(ModelError, match="neither a checkpoint"):
        load_model("ghostnet_99x")


def test_wrong_width_lists_shapes_and_names_the_right_model(tmp_path, reference_dir):
    torch.save(official_state_dict(reference_dir / "official_ghostnet_w1.0_keys.txt"), tmp_path / "w100.pth")
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path / "w100.pth", arch="ghostnet_050")
    msg = info.value.message
    assert "blocks.0.0.ghost1.primary_conv.0.weight: checkpoint [8,16,1,1] vs model [4,8,1,1]" in msg
    assert "conv_stem.weight: checkpoint [16,3,3,3] vs model [8,3,3,3]" in msg
    assert "more" in msg and msg.count("\n") <= 7          # the first few, not 429 lines
    assert "ghostnet_100" in info.value.hint and "--model ghostnet_100" in info.value.hint
    # the same through the width argument
    with pytest.raises(CheckpointError, match="ghostnet_050"):
        load_model(tmp_path / "w100.pth", width=0.5)


def test_class_mismatch_hint(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", create_model("ghostnet_cifar_050"), {})
    with pytest.raises(CheckpointError) as info:
        load_model(path, num_classes=100)
    assert "classifier.weight: checkpoint [10,1280] vs model [100,1280]" in info.value.message
    assert "--num-classes 10" in info.value.hint


def test_unknown_layout_without_meta(tmp_path):
    torch.save({"conv.weight": torch.zeros(4, 3, 3, 3)}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="cannot tell"):
        load_model(tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="mismatched"):
        load_model(tmp_path / "x.pt", arch="ghostnet_cifar_050")


def test_model_name_gives_fresh_model():
    model, spec, meta = load_model("ghostnet_cifar_050", num_classes=3)
    assert spec.num_classes == 3 and meta == {} and model.classifier.out_features == 3


@pytest.mark.parametrize("name", [n for n in list_models() if "vgg" not in n])
def test_infer_architecture_of_every_registered_layout(name):
    p = parse_model_name(name)
    expected = format_model_name(p.arch, p.width, cifar=False, ratio=p.ratio, dw_size=p.dw_size)
    model = create_model(name)
    # weights cannot tell the 32x32 form from the ImageNet form: bare state_dicts are read as the latter
    if p.arch in ("resnet56", "ghost_resnet56"):
        expected = name
    assert infer_architecture(model.state_dict()) == (expected, model.spec.num_classes)


def test_infer_ghost_vgg_ratio():
    sd = create_model("ghost_vgg16_cifar_s4").state_dict()
    assert infer_architecture(sd) == ("ghost_vgg16_cifar_s4", 10)


def test_sniff_format_and_mismatch_lines():
    assert sniff_format(b"PK\x03\x04rest") == "torch-zip"
    assert sniff_format(b"\x80\x02\x8a\x0al\xfc") == "torch-legacy"
    assert sniff_format((8).to_bytes(8, "little") + b'{"a":1} ') == "safetensors"
    assert sniff_format(b"hello world12345") == "unknown"
    lines = state_dict_mismatches({"a": torch.zeros(2), "b.weight": torch.zeros(3, 3), "x": torch.zeros(1)},
                                  {"a": torch.zeros(2), "b.weight": torch.zeros(4, 3), "c": torch.zeros(5)})
    assert lines == ["b.weight: checkpoint [3,3] vs model [4,3]", "c: missing from checkpoint (model [5])",
                     "x: not in model (checkpoint [1])"]
