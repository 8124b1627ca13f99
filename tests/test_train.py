"""Training: schedules, determinism to the byte, resume == uninterrupted, checkpoints, sweeps, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ghostnet_edge.errors import DataError, GhostEdgeError
from ghostnet_edge.models.checkpoint import load_checkpoint
from ghostnet_edge.train import (
    TrainConfig,
    epoch_band,
    evaluate_checkpoint,
    lr_at,
    param_groups,
    summarize_spread,
    train,
    train_seeds,
)
from ghostnet_edge.train.evaluate import topk_correct

MODEL = "ghostnet_cifar_050"


def tiny(out: Path, **kw) -> TrainConfig:
    """A few optimizer steps of the real 0.5x GhostNet on real (digits) images."""
    base = dict(model=MODEL, data="digits", epochs=2, batch_size=16, limit_train=48, limit_val=40, threads=1,
                out=out, progress=False, lr=0.05)
    base.update(kw)
    return TrainConfig(**base)


def state_bytes(path: Path) -> dict[str, bytes]:
    return {k: v.contiguous().numpy().tobytes() for k, v in load_checkpoint(path).state_dict.items()}


# ---- pure pieces -------------------------------------------------------------------------------------

def test_cosine_and_warmup_schedule():
    assert lr_at(0, 100, 0.1) == pytest.approx(0.1)
    assert lr_at(50, 100, 0.1) == pytest.approx(0.05, rel=0.05)
    assert lr_at(99, 100, 0.1) < 1e-3
    lrs = [lr_at(s, 100, 0.1) for s in range(100)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))
    warm = [lr_at(s, 100, 0.1, warmup_steps=10) for s in range(12)]
    assert warm[0] == pytest.approx(0.01) and warm[9] == pytest.approx(0.1) and warm[4] == pytest.approx(0.05)


def test_onecycle_schedule():
    lrs = [lr_at(s, 100, 0.4, "onecycle") for s in range(100)]
    peak = int(np.argmax(lrs))
    assert peak == 30 and lrs[peak] == pytest.approx(0.4)
    assert lrs[0] == pytest.approx(0.4 / 25) and lrs[-1] == pytest.approx(0.4 / 25 / 1e4)
    with pytest.raises(ValueError):
        lr_at(0, 10, 0.1, "step")


def test_no_weight_decay_on_bn_and_bias():
    from ghostnet_edge.models import create_model

    model = create_model(MODEL, num_classes=10, seed=0)
    decay, no_decay = param_groups(model, 5e-4)
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim <= 1 for p in no_decay["params"])
    bn = [m.weight for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert any(p is bn[0] for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_summarize_spread_uses_sample_std():
    s = summarize_spread([1.0, 2.0, 3.0])
    assert s == {"n": 3, "mean": 2.0, "std": 1.0, "min": 1.0, "max": 3.0, "ddof": 1}
    assert summarize_spread([70.0])["std"] == 0.0
    band = epoch_band([[{"val_top1": 10.0}, {"val_top1": 20.0}], [{"val_top1": 14.0}, {"val_top1": 30.0}]])
    assert band[1]["mean"] == 25.0 and band[1]["min"] == 20.0 and band[1]["max"] == 30.0
    assert band[0]["lo_1std"] == pytest.approx(12.0 - np.std([10, 14], ddof=1))


def test_topk_correct():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.05], [0.2, 0.3, 0.5]])
    labels = torch.tensor([1, 2, 0])
    assert topk_correct(logits, labels, (1, 2, 5)) == [1, 1, 3]   # k capped at 3 classes


def test_config_validation():
    with pytest.raises(GhostEdgeError, match="epochs"):
        TrainConfig(epochs=0).validate()
    with pytest.raises(GhostEdgeError, match="schedule"):
        TrainConfig(schedule="step").validate()
    with pytest.raises(GhostEdgeError, match="warm-up"):
        TrainConfig(epochs=2, warmup_epochs=2).validate()


# ---- training runs -----------------------------------------------------------------------------------

def test_same_seed_gives_identical_bytes_and_files(tmp_path):
    a = train(tiny(tmp_path / "a"))
    b = train(tiny(tmp_path / "b"))
    sa, sb = state_bytes(a.checkpoint), state_bytes(b.checkpoint)
    assert sa.keys() == sb.keys() and all(sa[k] == sb[k] for k in sa)
    assert a.final_top1 == b.final_top1 and a.epochs_done == 2
    c = train(tiny(tmp_path / "c", seed=1))
    assert any(state_bytes(c.checkpoint)[k] != sa[k] for k in sa)   # the seed matters

    out = tmp_path / "a"
    assert {p.name for p in out.iterdir()} >= {"last.pt", "best.pt", "model.pt", "metrics.jsonl", "config.json",
                                                "result.json"}
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    assert set(lines[0]) >= {"epoch", "train_loss", "val_top1", "val_top5", "lr", "images_per_s", "seconds"}
    assert lines[0]["val_n"] == 40
    ckpt = load_checkpoint(out / "model.pt")
    meta = ckpt.meta
    assert meta["model"] == MODEL and meta["arch"] == "ghostnet" and meta["num_classes"] == 10
    assert meta["class_names"] == [str(d) for d in range(10)] and meta["epochs_done"] == 2 and meta["seed"] == 0
    assert meta["input_size"] == [3, 32, 32] and meta["resize_size"] == 32 and len(meta["mean"]) == 3
    assert meta["accuracy"] == pytest.approx(a.final_top1) and "torch" in meta["versions"]
    assert meta["speed"]["channels_last"] in (True, False) and meta["speed"]["threads"] == 1
    last = load_checkpoint(out / "last.pt")
    assert {"optimizer", "step", "torch_rng", "history"} <= set(last.extra) and last.extra["step"] == 6


class _Interrupt(Exception):
    pass


def test_resume_after_interruption_matches_uninterrupted_run(tmp_path, monkeypatch):
    straight = train(tiny(tmp_path / "straight"))

    import ghostnet_edge.train.loop as loop

    real_write = loop.atomic_write_text

    def crash_after_first_checkpoint(path, text):
        raise _Interrupt("killed after epoch 1's last.pt was written")

    monkeypatch.setattr(loop, "atomic_write_text", crash_after_first_checkpoint)
    with pytest.raises(_Interrupt):
        train(tiny(tmp_path / "resumed"))
    monkeypatch.setattr(loop, "atomic_write_text", real_write)
    assert load_checkpoint(tmp_path / "resumed" / "last.pt").meta["epochs_done"] == 1
    assert not (tmp_path / "resumed" / "model.pt").exists()

    with pytest.raises(GhostEdgeError, match="--resume"):
        train(tiny(tmp_path / "resumed"))
    with pytest.raises(GhostEdgeError, match="lr"):
        train(tiny(tmp_path / "resumed", resume=True, lr=0.2))

    resumed = train(tiny(tmp_path / "resumed", resume=True))
    assert resumed.resumed_from_epoch == 1 and resumed.epochs_done == 2
    s1, s2 = state_bytes(straight.checkpoint), state_bytes(resumed.checkpoint)
    assert all(s1[k] == s2[k] for k in s1)
    # Same seed, same bytes: the files too, not only the tensors (no run-control flag or path recorded).
    assert straight.checkpoint.read_bytes() == resumed.checkpoint.read_bytes()
    assert resumed.final_top1 == straight.final_top1
    assert len((tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()) == 2
    again = train(tiny(tmp_path / "resumed", resume=True))   # finished: nothing left to do
    assert again.epochs_done == 2 and again.history == resumed.history


def test_evaluate_checkpoint_and_class_mismatch(tmp_path):
    res = train(tiny(tmp_path / "run", epochs=1))
    ev = evaluate_checkpoint(res.checkpoint, "digits", limit=40)
    assert ev["n"] == 40 and ev["top1"] == pytest.approx(res.final_top1)
    assert 0.0 <= ev["top1"] <= ev["top5"] <= 100.0

    data = tmp_path / "pets"
    for c in ("cat", "dog"):
        (data / c).mkdir(parents=True)
        Image.new("RGB", (32, 32)).save(data / c / "0.png")
    with pytest.raises(DataError) as err:
        evaluate_checkpoint(res.checkpoint, data)
    assert "'cat'" in err.value.message and "'dog'" in err.value.message


def test_train_on_a_class_folder_holds_out_validation(tmp_path):
    rng = np.random.default_rng(0)
    for ci, c in enumerate(("red", "blue")):
        (tmp_path / "d" / c).mkdir(parents=True)
        for i in range(10):
            arr = np.zeros((40, 36, 3), np.uint8)
            arr[..., 0 if ci == 0 else 2] = 150 + rng.integers(0, 100)
            Image.fromarray(arr).save(tmp_path / "d" / c / f"{i}.png")
    res = train(tiny(tmp_path / "run", data=str(tmp_path / "d"), epochs=1, limit_train=None, limit_val=None,
                     val_fraction=0.2))
    meta = load_checkpoint(res.checkpoint).meta
    assert meta["class_names"] == ["blue", "red"] and meta["train_images"] == 16 and meta["val_images"] == 4


def test_seed_sweep_writes_spread_and_reuses_runs(tmp_path):
    cfg = tiny(tmp_path / "sweep", epochs=1, limit_train=32)
    sweep = train_seeds(cfg, [3, 4])
    finals = [sweep.results[s].final_top1 for s in (3, 4)]
    data = json.loads((tmp_path / "sweep" / "spread.json").read_text())
    assert data["final_top1"]["mean"] == pytest.approx(np.mean(finals))
    assert data["final_top1"]["std"] == pytest.approx(np.std(finals, ddof=1))
    assert "ddof=1" in (tmp_path / "sweep" / "spread.md").read_text()
    assert len(data["epoch_band"]) == 1 and (tmp_path / "sweep" / "seed_4" / "model.pt").is_file()
    stamp = (tmp_path / "sweep" / "seed_3" / "last.pt").stat().st_mtime_ns
    again = train_seeds(cfg, [3, 4])
    assert (tmp_path / "sweep" / "seed_3" / "last.pt").stat().st_mtime_ns == stamp
    assert again.final_top1 == sweep.final_top1


def test_cli_train_and_errors(tmp_path, capsys):
    from ghostnet_edge.cli import main

    out = tmp_path / "cli"
    rc = main(["train", "--model", MODEL, "--data", "digits", "--epochs", "1", "--batch-size", "16",
               "--limit-train", "32", "--limit-val", "20", "--threads", "1", "--out", str(out), "-q"])
    assert rc == 0 and (out / "model.pt").is_file()
    assert "final top-1" in capsys.readouterr().out
    assert main(["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "x"), "-q"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["train", "--model", "nonet_100", "--out", str(tmp_path / "y"), "-q"]) == 2
    assert main(["train", "7", "--out", str(tmp_path / "z"), "-q"]) == 2
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").glob("*.pt"))


def test_cli_seeds_list(tmp_path, capsys):
    from ghostnet_edge.cli import main

    out = tmp_path / "seeds"
    rc = main(["train", "--model", MODEL, "--epochs", "1", "--batch-size", "16", "--limit-train", "16",
               "--limit-val", "10", "--threads", "1", "--out", str(out), "-q", "--seeds", "5", "6"])
    assert rc == 0
    assert (out / "seed_5" / "model.pt").is_file() and (out / "seed_6" / "model.pt").is_file()
    assert "ddof=1" in capsys.readouterr().out
