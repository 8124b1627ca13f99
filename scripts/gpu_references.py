"""Train the CIFAR-10 reference networks on one NVIDIA GPU within a fixed wall-clock budget.

    GHOSTEDGE_CIFAR_TAR=/path/cifar10-jpg.tar python scripts/gpu_references.py --out DIR --budget-s 520 \
        ghostnet_cifar_050:0 ghostnet_cifar_050:1 ghostnet_cifar_100:0 mobilenetv3_large_cifar_100:0

Every run is a plain ``ghostedge train --device cuda`` with one recipe (below); all runs share the GPU
at once, each in its own process (these small networks leave a GPU mostly idle between kernel launches,
so several processes fill it). The one free choice, the number of epochs, is fitted to the budget: a
probe trains every run for a few steps side by side, and each model gets as many epochs as its measured
speed allows before the deadline (the same count for all seeds of a model, so they form a seed sweep).
The exact command of every run is written to its ``run.json``; rerunning that command repeats the run.

At the end (or at the deadline, whichever comes first) ``DIR/results.tar`` holds, per run, ``model.pt``
(final weights and meta), ``metrics.jsonl``, ``result.json`` and ``run.json``; a run stopped by the
deadline leaves its ``last.pt`` instead, which ``ghostedge train --resume`` continues on any machine.
``scripts/record_reference.py`` turns a finished run into ``references/cifar10/NAME/``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

# The recipe shared by every reference: SGD with nesterov momentum, batch 512 (these networks are
# launch-bound on a GPU, so a larger batch buys epochs), peak LR 0.4 (0.1 per 128 images, scaled
# linearly) with a 2-epoch warm-up then cosine to 0, weight decay 5e-4 (not on BN/bias), label smoothing
# 0.1, pad-4 crop + flip (the registry's CIFAR preprocessing), fp32.
RECIPE = ["--data", "cifar10", "--batch-size", "512", "--lr", "0.4", "--schedule", "cosine",
          "--warmup-epochs", "2", "--weight-decay", "5e-4", "--label-smoothing", "0.1", "--no-bf16",
          "--device", "cuda", "--threads", "2", "--quiet"]
TRAIN_IMAGES, VAL_IMAGES = 50_000, 10_000
PROBE_IMAGES = 10_240          # 20 steps of 512
MIN_EPOCHS, MAX_EPOCHS = 10, 200
PART_BYTES = 15 * 2**20        # the device tool returns files of at most 16 MiB
PACK_MARGIN_S = 30.0           # time kept after the runs for packing the results


def split_file(path: Path, out: Path, part_bytes: int) -> list[Path]:
    """``path`` cut into ``out/NAME.partNN`` of at most ``part_bytes`` (``cat`` joins them again)."""
    parts = []
    with open(path, "rb") as f:
        while chunk := f.read(part_bytes):
            parts.append(out / f"{path.name}.part{len(parts):02d}")
            parts[-1].write_bytes(chunk)
    return parts


def log(msg: str) -> None:
    print(f"[gpu-refs {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def parse_runs(items: list[str]) -> list[tuple[str, int]]:
    runs = []
    for item in items:
        name, _, seed = item.partition(":")
        runs.append((name, int(seed or 0)))
    return runs


def train_command(model: str, seed: int, epochs: int, out: Path, extra: list[str] | None = None,
                  device: str = "cuda") -> list[str]:
    recipe = [device if prev == "--device" else a for prev, a in zip(["", *RECIPE[:-1]], RECIPE, strict=True)]
    return [sys.executable, "-m", "ghostnet_edge", "train", "--model", model, "--seed", str(seed),
            "--epochs", str(epochs), *recipe, *(extra or []), "--out", str(out)]


def run_all(commands: dict[str, list[str]], logs: Path, deadline: float) -> dict[str, int | None]:
    """Start every command at once; wait for all, killing what is still running at ``deadline``."""
    logs.mkdir(parents=True, exist_ok=True)
    procs = {}
    for key, cmd in commands.items():
        handle = open(logs / f"{key}.log", "w")  # noqa: SIM115 - closed below
        procs[key] = (subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT), handle)
    codes: dict[str, int | None] = {}
    last_report = time.monotonic()
    while len(codes) < len(procs):
        for key, (proc, handle) in procs.items():
            if key not in codes and proc.poll() is not None:
                codes[key] = proc.returncode
                handle.close()
                log(f"{key} exited with {proc.returncode}")
                if proc.returncode:
                    log((logs / f"{key}.log").read_text()[-2000:])
        if time.monotonic() > deadline:
            for key, (proc, handle) in procs.items():
                if key not in codes:
                    proc.terminate()
                    try:
                        proc.wait(timeout=15)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                    codes[key] = None
                    handle.close()
                    log(f"{key} stopped at the deadline")
            break
        if time.monotonic() - last_report > 30:
            last_report = time.monotonic()
            log("progress: " + "; ".join(f"{k} {progress(logs.parent / 'runs' / k)}" for k in procs))
        time.sleep(1)
    return codes


def progress(run_dir: Path) -> str:
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        return "-"
    lines = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    if not lines:
        return "-"
    r = lines[-1]
    return f"ep {r['epoch']} top1 {r['val_top1']:.2f} {r['images_per_s']:.0f} img/s {r['seconds']:.1f}s"


def epochs_for(probe: dict, remaining_s: float, probe_images: int, train_images: int = TRAIN_IMAGES,
               min_epochs: int = MIN_EPOCHS) -> int:
    """Epochs that fit ``remaining_s`` at the probe's speed (a train epoch plus one pass over val).

    ``probe`` is the metrics line of the probe's second epoch: the first one pays for CUDA's and
    cuDNN's start-up and would make every later epoch look several times slower than it is.
    """
    ips = probe["images_per_s"]
    train_s = probe_images / ips
    eval_s = max(0.0, probe["seconds"] - train_s) * VAL_IMAGES / probe["val_n"]
    epoch_s = train_images / ips + eval_s
    return max(min_epochs, min(MAX_EPOCHS, int(remaining_s // epoch_s)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="MODEL:SEED")
    ap.add_argument("--out", type=Path, required=True, help="where results.tar and the summary go")
    ap.add_argument("--work", type=Path, default=Path("/tmp/gpu-refs"), help="run folders")
    ap.add_argument("--budget-s", type=float, default=520.0, help="wall-clock budget from the start")
    ap.add_argument("--epochs", type=int, default=None, help="fixed epoch count (skips the probe)")
    ap.add_argument("--device", default="cuda", help="cpu runs the same steps on the CPU (a smoke test)")
    ap.add_argument("--smoke", action="store_true",
                    help="a few hundred images per run: checks the whole flow in a minute on a CPU")
    args = ap.parse_args()
    limits = ["--limit-train", "1024", "--limit-val", "256"] if args.smoke else []
    probe_images = 512 if args.smoke else PROBE_IMAGES
    train_images = 1024 if args.smoke else TRAIN_IMAGES
    min_epochs = 3 if args.smoke else MIN_EPOCHS
    t0 = time.monotonic()
    deadline = t0 + args.budget_s
    runs = parse_runs(args.runs)
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work
    shutil.rmtree(work, ignore_errors=True)
    (work / "runs").mkdir(parents=True)

    import torch

    from ghostnet_edge.data.datasets import open_dataset
    from ghostnet_edge.models import get_spec
    from ghostnet_edge.utils.versions import machine_description

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    log(f"torch {torch.__version__}, GPU {gpu}, {os.cpu_count()} CPUs")
    spec = get_spec(runs[0][0])
    for split in ("train", "val"):          # decode the JPEGs once into the shared cache
        ds = open_dataset("cifar10", split, spec)
        log(f"cifar10 {split}: {len(ds)} images cached")

    key = {(m, s): f"{m}-s{s}" for m, s in runs}
    if args.epochs is None:
        probe_cmds = {key[r]: train_command(*r, 2, work / "probe" / key[r],
                                            ["--limit-train", str(probe_images), "--limit-val", "1024", "--warmup-epochs", "1"], args.device)
                      for r in runs}
        t_probe = time.monotonic()
        codes = run_all(probe_cmds, work / "probe-logs", deadline)
        startup = time.monotonic() - t_probe
        probes = {}
        for r in runs:
            if codes[key[r]] != 0:
                log(f"probe of {key[r]} failed:\n" + (work / "probe-logs" / f"{key[r]}.log").read_text()[-3000:])
                return 1
            lines = (work / "probe" / key[r] / "metrics.jsonl").read_text().splitlines()
            probes[r] = json.loads(lines[-1])
            startup = min(startup, time.monotonic() - t_probe - sum(json.loads(x)["seconds"] for x in lines))
        remaining = deadline - time.monotonic() - PACK_MARGIN_S - startup
        epochs = {}
        for model in dict.fromkeys(m for m, _ in runs):
            epochs[model] = min(epochs_for(probes[r], remaining, probe_images, train_images, min_epochs)
                                for r in runs if r[0] == model)
        log(f"probe: {json.dumps({key[r]: round(p['images_per_s']) for r, p in probes.items()})} img/s; "
            f"startup {startup:.0f} s; {remaining:.0f} s left -> epochs {epochs}")
    else:
        epochs = {m: args.epochs for m, _ in runs}

    commands = {key[r]: train_command(*r, epochs[r[0]], work / "runs" / key[r], limits, args.device) for r in runs}
    started = time.monotonic()
    codes = run_all(commands, work / "logs", deadline - PACK_MARGIN_S)
    wall = time.monotonic() - started

    machine = machine_description()
    pack = work / "pack"
    summary = {"gpu": gpu, "torch": torch.__version__, "budget_s": args.budget_s, "wall_s": wall,
               "epochs": epochs, "runs": {}}
    for r in runs:
        src, dst = work / "runs" / key[r], pack / key[r]
        dst.mkdir(parents=True)
        for name in ("metrics.jsonl", "result.json", "config.json"):
            if (src / name).is_file():
                shutil.copy2(src / name, dst / name)
        finished = codes[key[r]] == 0 and (src / "model.pt").is_file()
        if finished:
            shutil.copy2(src / "model.pt", dst / "model.pt")
        elif (src / "last.pt").is_file() and (src / "last.pt").stat().st_size < 40 * 2**20:
            shutil.copy2(src / "last.pt", dst / "last.pt")
        shutil.copy2(work / "logs" / f"{key[r]}.log", dst / "train.log")
        run_info = {"command": ["ghostedge", *commands[key[r]][3:]], "exit_code": codes[key[r]],
                    "finished": finished, "wall_s": wall, "gpu": gpu, "machine": machine,
                    "torch": torch.__version__}
        (dst / "run.json").write_text(json.dumps(run_info, indent=1))
        summary["runs"][key[r]] = {"finished": finished, "exit_code": codes[key[r]], "last": progress(src)}
    with tarfile.open(work / "results.tar", "w") as tar:
        tar.add(pack, arcname="gpu-references")
    split_file(work / "results.tar", args.out, PART_BYTES)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    log(json.dumps(summary["runs"], indent=1))
    log(f"done in {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
