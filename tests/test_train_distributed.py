"""Distributed training on CPU: two gloo processes on 127.0.0.1.

1. The real CLI under torchrun: both ranks end with byte-identical weights, that differ from the init.
2. With a BatchNorm-free network, 2 ranks x 8 images per step must reproduce one process x 16 images
   (same samples per step, gradients averaged over ranks == mean over the global batch).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from ghostnet_edge.models.checkpoint import load_checkpoint
from ghostnet_edge.train import TrainConfig, train
from ghostnet_edge.utils.net import free_local_port

REPO = Path(__file__).resolve().parents[1]
MODEL = "ghostnet_cifar_050"


def _config(out: Path) -> TrainConfig:
    return TrainConfig(model=MODEL, data="digits", epochs=2, batch_size=16, limit_train=48, limit_val=40,
                       threads=1, out=out, progress=False, lr=0.05)


def bn_free_net(num_classes: int) -> nn.Module:
    """No BatchNorm, no dropout: per-rank batches give exactly the global-batch gradient."""
    g = torch.Generator().manual_seed(123)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 15 * 15, num_classes))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return net


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    result = train(_config(Path(out)), model_factory=bn_free_net)
    Path(out, f"rank{rank}.json").write_text(json.dumps({"fingerprints": result.rank_fingerprints,
                                                         "top1": result.final_top1,
                                                         "val_n": result.history[-1]["val_n"]}))


@pytest.mark.slow
def test_torchrun_cli_two_ranks_end_identical(tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(free_local_port()),
           "-m", "ghostnet_edge", "train", "--model", MODEL, "--data", "digits", "--epochs", "1",
           "--batch-size", "16", "--limit-train", "48", "--limit-val", "40", "--threads", "1", "--out", str(out),
           "-q"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    prints = result["rank_fingerprints"]
    assert len(prints) == 2 and prints[0] == prints[1]
    ckpt = load_checkpoint(out / "model.pt")
    assert ckpt.meta["world_size"] == 2 and ckpt.meta["epochs_done"] == 1
    from ghostnet_edge.models import create_model
    from ghostnet_edge.train.loop import state_fingerprint

    assert prints[0] != state_fingerprint(create_model(MODEL, num_classes=10, seed=0))   # it trained
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[0])["val_n"] == 40


@pytest.mark.slow
def test_ddp_two_ranks_match_one_process(tmp_path):
    import torch.multiprocessing as mp

    ddp_out = tmp_path / "ddp"
    mp.spawn(_worker, args=(2, free_local_port(), str(ddp_out)), nprocs=2, join=True)
    ranks = [json.loads((ddp_out / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["fingerprints"] == ranks[1]["fingerprints"] and len(set(ranks[0]["fingerprints"])) == 1
    assert ranks[0]["val_n"] == 40                        # sharded eval counted each image once

    single = train(_config(tmp_path / "single"), model_factory=bn_free_net)
    ddp_sd = load_checkpoint(ddp_out / "model.pt").state_dict
    one_sd = load_checkpoint(single.checkpoint).state_dict
    init = bn_free_net(10).state_dict()
    for key, value in one_sd.items():
        assert not torch.equal(value, init[key])          # training moved every tensor
        torch.testing.assert_close(ddp_sd[key], value, rtol=1e-4, atol=1e-6)
    assert abs(ranks[0]["top1"] - single.final_top1) <= 100.0 / 40 + 1e-9
