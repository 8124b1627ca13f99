"""Training speed of the 32x32 GhostNet forms: eager fp32 vs the tuned options, side by side in one run.

Usage::

    python benchmarks/train_speed.py                       # 0.5x/1.0x/1.3x, 2 threads, batch 128
    python benchmarks/train_speed.py --models ghostnet_cifar_050 --compile --json out.json

Each configuration runs full SGD steps (forward, backward, nesterov update) on a fixed batch, in
interleaved rounds (A B C A B C ...) so slow drift of a shared machine hits every configuration alike;
the median round is reported with the ratio to eager fp32 measured in the same run. Each option is also
checked for determinism: two fresh 2-step runs (batch 32) from the same seed must give identical bytes.
On a CPU without native bf16 (no avx512_bf16/amx_bf16) bf16 autocast is emulated and an order of
magnitude slower, so its configurations then time a single step per round.
The data pipeline is timed on its own (uint8 cache -> augmented float batch).

"data-parallel 2x1" is what ``ghostedge train --procs 2`` runs: two processes with one thread each, each
taking half of the same batch of 128, gradients all-reduced by DistributedDataParallel over gloo on
127.0.0.1, the same global batch and the same total of 2 threads as the baseline. Its processes stay
up between rounds (blocked on a pipe, so they use no CPU while the other configurations run); its
determinism check trains two fresh pairs of processes and compares rank 0's weights.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DET_BATCH = 32  # images per step of the determinism check (kernels, not batch size, decide determinism)
CONFIGS = {  # name -> (channels_last, bf16, compile, foreach SGD)
    "eager fp32": (False, False, False, False),          # the baseline: torch's default SGD loop on CPU
    "foreach SGD": (False, False, False, True),
    "foreach + channels_last": (True, False, False, True),
    "foreach + bf16": (False, True, False, True),
    "foreach + channels_last + bf16": (True, True, False, True),
}


def make_step(model_name: str, channels_last: bool, bf16: bool, compile_: bool, foreach: bool, seed: int = 0):
    import torch

    from ghostnet_edge.models import create_model
    from ghostnet_edge.train.evaluate import autocast
    from ghostnet_edge.train.schedule import param_groups

    torch.manual_seed(seed)
    model = create_model(model_name, num_classes=10, seed=seed).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(param_groups(model, 5e-4), lr=0.05, momentum=0.9, nesterov=True, foreach=foreach)
    net = torch.compile(model) if compile_ else model
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(x, y):
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(bf16):
            logits = net(x)
        loss = loss_fn(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return model, step


def deterministic(model_name: str, opts: tuple[bool, bool, bool, bool], batch) -> bool:
    from ghostnet_edge.train.loop import state_fingerprint

    prints = []
    for _ in range(2):
        import torch

        torch.manual_seed(1)  # dropout masks
        model, step = make_step(model_name, *opts)
        for _ in range(2):
            step(*batch)
        prints.append(state_fingerprint(model))
    return prints[0] == prints[1]


def _dp_worker(rank: int, world: int, port: int, model_name: str, batch, conn) -> None:
    """One rank of the data-parallel configuration; obeys ("run", steps), ("fingerprint",), ("stop",)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    import torch
    import torch.distributed as dist

    from ghostnet_edge.train.loop import state_fingerprint
    from ghostnet_edge.train.schedule import param_groups

    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    model, _ = make_step(model_name, False, False, False, False)  # same init on every rank (seed 0)
    torch.manual_seed(1 + 7919 * rank)  # dropout masks differ per rank, as in the trainer
    net = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(param_groups(model, 5e-4), lr=0.05, momentum=0.9, nesterov=True)
    loss_fn = torch.nn.CrossEntropyLoss()
    per = len(batch[0]) // world
    x, y = batch[0][rank * per:(rank + 1) * per], batch[1][rank * per:(rank + 1) * per]

    def step() -> None:
        loss = loss_fn(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    while True:
        cmd = conn.recv()
        if cmd[0] == "run":
            for _ in range(cmd[1]):
                step()
            dist.barrier()
            conn.send("done")
        elif cmd[0] == "fingerprint":
            conn.send(state_fingerprint(model))
        else:
            break
    dist.destroy_process_group()


class DataParallel:
    """Single-thread ranks kept alive across rounds; ``run(steps)`` runs that many global steps."""

    def __init__(self, model_name: str, batch, world: int = 2) -> None:
        import multiprocessing as mp

        from ghostnet_edge.utils.net import free_local_port

        port = free_local_port()
        ctx = mp.get_context("spawn")
        self.conns, self.procs = [], []
        for rank in range(world):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_dp_worker, args=(rank, world, port, model_name, batch, child), daemon=True)
            p.start()
            self.conns.append(parent)
            self.procs.append(p)

    def run(self, steps: int) -> None:
        for c in self.conns:
            c.send(("run", steps))
        for c in self.conns:
            c.recv()

    def fingerprint(self) -> str:
        self.conns[0].send(("fingerprint",))
        return self.conns[0].recv()

    def close(self) -> None:
        for c in self.conns:
            c.send(("stop",))
        for p in self.procs:
            p.join(timeout=30)


def dp_deterministic(model_name: str, batch) -> bool:
    prints = []
    for _ in range(2):
        dp = DataParallel(model_name, batch)
        dp.run(2)
        prints.append(dp.fingerprint())
        dp.close()
    return prints[0] == prints[1]


def data_pipeline_speed(batch_size: int, seconds: float = 3.0) -> dict:
    """Images/s of the training loader on the digits data (uint8 array -> crop/flip -> normalised NCHW)."""
    from ghostnet_edge.data import iterate_batches, open_dataset
    from ghostnet_edge.models import get_spec

    ds = open_dataset("digits", "train", get_spec("ghostnet_cifar_050"), train=True)
    n, t0, epoch = 0, time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        for x, _ in iterate_batches(ds, batch_size, shuffle=True, seed=0, epoch=epoch, drop_last=True):
            n += len(x)
        epoch += 1
    return {"images_per_s": n / (time.perf_counter() - t0)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["ghostnet_cifar_050", "ghostnet_cifar_100", "ghostnet_cifar_130"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="also measure torch.compile (slow to compile)")
    ap.add_argument("--no-bf16", action="store_true",
                    help="skip the bf16 configurations (minutes per model where bf16 is emulated)")
    ap.add_argument("--no-data-parallel", action="store_true", help="skip the 2-process configuration")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    args = ap.parse_args(argv)

    import torch

    from ghostnet_edge.train.speed import native_bf16, resolve_speed
    from ghostnet_edge.utils.versions import machine_description, package_versions

    torch.set_num_threads(args.threads)
    configs = {k: v for k, v in CONFIGS.items() if not (args.no_bf16 and v[1])}
    if args.compile:
        configs["foreach + torch.compile"] = (False, False, True, True)
    g = torch.Generator().manual_seed(0)
    batch = (torch.randn(args.batch_size, 3, 32, 32, generator=g), torch.randint(0, 10, (args.batch_size,), generator=g))
    machine = machine_description()
    print(f"{machine['cpu']}, {machine['cores']} cores, torch {torch.__version__}, threads {args.threads}, "
          f"batch {args.batch_size}, native bf16: {native_bf16()}, load avg {os.getloadavg()[0]:.1f}", flush=True)
    results: dict = {"machine": machine, "versions": package_versions(), "threads": args.threads,
                     "batch_size": args.batch_size, "models": {}}
    dp_name = f"data-parallel {args.threads}x1 (--procs {args.threads})"
    for name in args.models:
        runners, setup = {}, {}  # config -> run(n): n global steps on the batch
        for cname, opts in configs.items():
            t0 = time.perf_counter()
            _, step = make_step(name, *opts)
            step(*batch)  # warm-up (and compilation)
            setup[cname] = time.perf_counter() - t0
            runners[cname] = lambda n, step=step: [step(*batch) for _ in range(n)]
        dp = None
        if not args.no_data_parallel and args.threads > 1:
            t0 = time.perf_counter()
            dp = DataParallel(name, batch, world=args.threads)
            dp.run(1)  # warm-up
            setup[dp_name] = time.perf_counter() - t0
            runners[dp_name] = dp.run
        rates: dict[str, list[float]] = {c: [] for c in runners}
        n_steps = {c: 1 if c in configs and configs[c][1] and not native_bf16() else args.steps for c in runners}
        for _ in range(args.rounds):
            for cname, run in runners.items():
                t0 = time.perf_counter()
                run(n_steps[cname])
                rates[cname].append(n_steps[cname] * args.batch_size / (time.perf_counter() - t0))
        if dp is not None:
            dp.close()
        base = statistics.median(rates["eager fp32"])
        rows = {}
        print(f"\n{name}")
        print(f"  {'config':<30} {'img/s':>8} {'x eager':>8} {'setup s':>8}  deterministic")
        small = (batch[0][:DET_BATCH], batch[1][:DET_BATCH])
        for cname in runners:
            med = statistics.median(rates[cname])
            if cname == dp_name:
                det = dp_deterministic(name, small)
            else:  # compiling twice more for the check would take many minutes on 2 cores: not checked
                opts = configs[cname]
                det = None if opts[2] else deterministic(name, opts, small)
            rows[cname] = {"images_per_s": med, "ratio": med / base, "rounds": rates[cname],
                           "setup_seconds": setup[cname], "deterministic": det}
            print(f"  {cname:<30} {med:8.1f} {med / base:8.2f} {setup[cname]:8.1f}  "
                  f"{'not checked' if det is None else det}", flush=True)
        results["models"][name] = rows
    auto = resolve_speed(None, None, args.threads)
    print(f"load avg at the end {os.getloadavg()[0]:.1f} (other processes on the machine skew every ratio)")
    print(f"\ntrainer's automatic choice on this CPU: channels_last={auto['channels_last']}, bf16={auto['bf16']}")
    results["auto_choice"] = auto
    pipe = data_pipeline_speed(args.batch_size)
    print(f"data pipeline (digits, crop+flip+normalise, 1 process): {pipe['images_per_s']:.0f} img/s")
    results["data_pipeline"] = pipe
    if args.json:
        from ghostnet_edge.utils.atomic import atomic_write_json

        atomic_write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
