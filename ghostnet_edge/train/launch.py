"""``ghostedge train --procs N``: data-parallel training over this machine's cores, one process per core.

Why processes instead of threads: on a small CPU, one process with two intra-op threads synchronises
the threads inside every tiny kernel (32x32 feature maps, depthwise convolutions), most likely the
reason it scales poorly; two single-threaded processes that each take half of the global batch meet only
once per step, to all-reduce their gradients (DistributedDataParallel over gloo on 127.0.0.1).
``benchmarks/train_speed.py`` measures the two side by side: 1.11-1.23x for GhostNet 1.0x/1.3x in every
run, 0.94-1.18x for 0.5x (README, "Training speed").

What changes, and what does not:

* the global batch (``--batch-size``) and every hyper-parameter stay the same; each rank trains on its
  shard of every batch;
* BatchNorm statistics are computed per rank (half the batch each), as on several GPUs without
  SyncBatchNorm, so the weights are not the bytes one process would give;
* it stays reproducible: the same seed and the same ``--procs`` give byte-identical weights
  (``tests/test_train_launch.py`` trains twice and compares).

The ranks run the same code as under ``torchrun`` (``RANK``/``WORLD_SIZE``/``MASTER_*`` in the
environment, gloo process group), so a multi-machine torchrun launch and ``--procs`` share one path.
The group is created once per rank here, so a ``--seeds`` sweep reuses it for every run.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ghostnet_edge.errors import GhostEdgeError
from ghostnet_edge.utils.net import free_local_port

if TYPE_CHECKING:  # pragma: no cover
    from ghostnet_edge.train.config import TrainConfig, TrainResult
    from ghostnet_edge.train.seeds import SeedSweep


def check_procs(procs: int, batch_size: int, cores: int | None = None) -> None:
    """Refuse a process count that cannot split the batch or that oversubscribes the CPU."""
    cores = cores if cores is not None else (os.cpu_count() or 1)
    if procs < 1:
        raise GhostEdgeError(f"--procs {procs} must be at least 1", "use --procs 2 on a 2-core machine")
    if batch_size % procs:
        raise GhostEdgeError(f"--batch-size {batch_size} does not split over --procs {procs}",
                             f"use a batch size that is a multiple of {procs}")
    if procs > cores:
        raise GhostEdgeError(f"--procs {procs} is more than this machine's {cores} cores",
                             f"use at most --procs {cores} (one single-threaded process per core)")


def threads_per_rank(procs: int, cores: int | None = None) -> int:
    """Intra-op threads of each rank: the cores shared out evenly, at least one."""
    cores = cores if cores is not None else (os.cpu_count() or 1)
    return max(1, cores // procs)


def _worker(rank: int, procs: int, port: int, config: TrainConfig, seeds: list[int] | None, queue: Any) -> None:
    """One rank: join the gloo group, train (one seed or a sweep), hand rank 0's result to the parent."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(procs),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    import torch.distributed as dist

    try:
        dist.init_process_group("gloo", init_method="env://", rank=rank, world_size=procs)
        try:
            if seeds:
                from ghostnet_edge.train.seeds import train_seeds

                result: Any = train_seeds(config, seeds)
            else:
                from ghostnet_edge.train.loop import train

                result = train(config)
        finally:
            dist.destroy_process_group()
    except GhostEdgeError as exc:
        # The parent turns this into its one plain message; the exception still ends this rank with a
        # non-zero code, which makes torch.multiprocessing stop the other ranks instead of hanging them.
        queue.put(("error", rank, exc.message, exc.hint, exc.exit_code))
        raise
    if rank == 0:
        queue.put(("ok", rank, result))


def train_data_parallel(config: TrainConfig, procs: int, seeds: list[int] | None = None) -> TrainResult | SeedSweep:
    """Train ``config`` (or one run per seed) as ``procs`` local ranks; returns rank 0's result."""
    import logging

    import torch.multiprocessing as mp

    # torch logs a warning per rank it stops after another failed; the one message below says it all.
    logging.getLogger("torch.multiprocessing.spawn").setLevel(logging.ERROR)
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        raise GhostEdgeError("--procs cannot be used inside a torchrun launch (WORLD_SIZE is set)",
                             "use torchrun's --nproc-per-node or --procs, not both")
    check_procs(procs, config.batch_size)
    config.validate()
    if config.threads is None:
        config = replace(config, threads=threads_per_rank(procs))
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    try:
        mp.spawn(_worker, args=(procs, free_local_port(), config, seeds, queue), nprocs=procs, join=True)
    except mp.ProcessRaisedException as exc:
        if not queue.empty():
            kind, _rank, *rest = queue.get()
            if kind == "error":
                message, hint, code = rest
                err = GhostEdgeError(message, hint)  # the first rank to fail; the others stop
                err.exit_code = code
                raise err from None
        raise GhostEdgeError(f"a training process failed: {str(exc).strip().splitlines()[-1]}",
                             "run again with --verbose for the traceback, or with --procs 1") from exc
    except mp.ProcessExitedException as exc:
        raise GhostEdgeError(f"a training process died: {exc}",
                             "it was killed from outside (out of memory?); --resume continues the run") from exc
    kind, _rank, result = queue.get()
    return result
