"""``ghostedge train --procs N``: local data-parallel training (real gloo processes on 127.0.0.1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ghostnet_edge.cli import main
from ghostnet_edge.errors import GhostEdgeError
from ghostnet_edge.models.checkpoint import load_checkpoint
from ghostnet_edge.train import TrainConfig
from ghostnet_edge.train.launch import check_procs, threads_per_rank, train_data_parallel
from ghostnet_edge.train.loop import state_fingerprint

MODEL = "ghostnet_cifar_050"


def _config(out: Path) -> TrainConfig:
    return TrainConfig(model=MODEL, data="digits", epochs=1, batch_size=16, limit_train=64, limit_val=32,
                       out=out, progress=False, lr=0.05)


def test_check_procs_refuses_what_cannot_run():
    check_procs(2, 128, cores=2)
    with pytest.raises(GhostEdgeError, match="does not split over --procs 2"):
        check_procs(2, 33, cores=2)
    with pytest.raises(GhostEdgeError, match="more than this machine's 2 cores"):
        check_procs(4, 128, cores=2)
    with pytest.raises(GhostEdgeError, match="at least 1"):
        check_procs(0, 128, cores=2)


def test_threads_per_rank_shares_the_cores():
    assert threads_per_rank(2, cores=2) == 1
    assert threads_per_rank(2, cores=8) == 4
    assert threads_per_rank(3, cores=2) == 1


@pytest.mark.slow
def test_procs_2_is_reproducible_and_trains(tmp_path):
    first = train_data_parallel(_config(tmp_path / "a"), procs=2)
    second = train_data_parallel(_config(tmp_path / "b"), procs=2)
    assert first.rank_fingerprints[0] == first.rank_fingerprints[1]          # DDP kept the ranks equal
    assert first.rank_fingerprints == second.rank_fingerprints               # same seed, same bytes
    a = load_checkpoint(first.checkpoint)
    assert a.meta["world_size"] == 2 and a.meta["speed"]["threads"] == 1 and a.meta["epochs_done"] == 1
    from ghostnet_edge.models import create_model

    assert first.rank_fingerprints[0] != state_fingerprint(create_model(MODEL, num_classes=10, seed=0))


@pytest.mark.slow
def test_cli_procs_error_is_one_message_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--model", MODEL, "--data", str(tmp_path / "missing"), "--procs", "2",
                 "--out", str(out), "-q"])
    err = capsys.readouterr().err
    assert code == 2
    assert "error: data source" in err and "does not exist" in err and "Traceback" not in err
    assert not list(out.glob("*.pt"))


@pytest.mark.slow
def test_cli_procs_with_seeds_writes_the_spread(tmp_path, capsys):
    out = tmp_path / "sweep"
    code = main(["train", "--model", MODEL, "--data", "digits", "--epochs", "1", "--batch-size", "16",
                 "--limit-train", "32", "--limit-val", "16", "--procs", "2", "--seeds", "0", "1",
                 "--out", str(out), "-q"])
    assert code == 0, capsys.readouterr().err
    spread = json.loads((out / "spread.json").read_text())
    assert spread["seeds"] == [0, 1]
    for s in (0, 1):
        assert load_checkpoint(out / f"seed_{s}" / "model.pt").meta["world_size"] == 2
    assert capsys.readouterr().out.count("2 seeds in") == 1                  # printed once, by rank 0's result


def test_procs_inside_torchrun_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(GhostEdgeError, match="inside a torchrun launch"):
        train_data_parallel(_config(tmp_path / "x"), procs=2)
