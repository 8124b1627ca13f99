"""`ghostedge info` and `ghostedge models` through the real CLI entry point."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ghostnet_edge.cli import main
from ghostnet_edge.models import create_model, save_checkpoint

REPO = Path(__file__).resolve().parents[1]


def test_info_json(capsys):
    assert main(["info", "ghostnet_050", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["params"] == 2_587_292
    assert abs(data["macs"] - 42.3e6) / 42.3e6 < 0.01
    names = [s["name"] for s in data["stages"]]
    assert names[0] == "stem" and "blocks.9" in names and names[-2:] == ["head", "classifier"]
    assert sum(s["macs"] for s in data["stages"]) == data["macs"]


def test_info_table_input_size_and_classes(capsys):
    assert main(["info", "ghostnet_100", "--input-size", "256", "--num-classes", "10"]) == 0
    out = capsys.readouterr().out
    assert "blocks.6" in out and "3x256x256" in out and "10 classes" in out
    # 1000 -> 10 classes removes 990 * 1281 parameters
    assert f"{5_182_508 - 990 * 1281:,}" in out


def test_info_checkpoint(tmp_path, capsys):
    path = save_checkpoint(tmp_path / "m.pt", create_model("ghostnet_cifar_050", seed=0),
                           {"seed": 7, "epochs_done": 3, "accuracy": 0.61})
    assert main(["info", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model"] == "ghostnet_cifar_050" and data["input_size"] == [3, 32, 32]
    assert data["checkpoint"] == {"seed": 7, "epochs_done": 3, "accuracy": 0.61}


def test_info_errors_exit_2_with_hint(tmp_path, capsys):
    assert main(["info", "ghostnet_99x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "\nhint: " in err and "ghostnet_100" in err
    assert main(["info", "ghostnet_100", "--input-size", "100"]) == 2
    assert "use 96 or 128" in capsys.readouterr().err
    (tmp_path / "bad.pt").write_bytes(b"garbage bytes, not a checkpoint")
    assert main(["info", str(tmp_path / "bad.pt")]) == 2
    assert "not a checkpoint" in capsys.readouterr().err


def test_models_lists_variants(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("ghostnet_cifar_050", "mobilenetv3_small_075", "vgg16_cifar"):
        assert name in out
    assert main(["models", "--json"]) == 0
    specs = {s["name"]: s for s in json.loads(capsys.readouterr().out)}
    assert specs["ghostnet_cifar_100"]["stem_stride"] == 1 and specs["ghostnet_100"]["resize_size"] == 256


def test_cli_module_imports_nothing_heavy():
    code = "import sys, ghostnet_edge.cli.models; print(sorted({'torch', 'numpy', 'rich'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


def test_info_bare_state_dict_with_model_option(tmp_path, capsys):
    import torch

    torch.save(create_model("resnet56_cifar").state_dict(), tmp_path / "bare.pth")
    torch.save({"stem.weight": torch.zeros(4, 3, 3, 3)}, tmp_path / "odd.pth")
    assert main(["info", str(tmp_path / "odd.pth")]) == 2
    assert "--model" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "bare.pth"), "--model", "ghostnet_cifar_050"]) == 2
    assert "this checkpoint is resnet56_cifar" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "bare.pth"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["params"] == 853_018
