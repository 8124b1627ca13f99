"""Turn a finished `ghostedge train` run into a committed reference: references/cifar10/NAME/.

    python scripts/record_reference.py RUN_DIR references/cifar10/NAME --command "ghostedge train ..." \
        [--where "NVIDIA H200 (torch 2.11.0+cu130)"] [--history "epochs 1-35 on ..., 36-40 on ..."]

Writes ``model.safetensors`` (the final weights with the run's meta, fp32), ``metrics.jsonl`` (one line
per epoch) and ``RUN.md`` (command, commit, machine, wall time, final top-1). Used by
``scripts/train_references.sh`` (CPU) and after ``scripts/gpu_references.py`` (GPU).
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path


def git_commit() -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()


def run_markdown(name: str, command: str, commit: str, where: str, history: list[dict], note: str = "") -> str:
    """RUN.md of a reference (a pure function of its inputs, so tests can call it)."""
    last = history[-1]
    best = max(history, key=lambda r: r["val_top1"])
    total = sum(r["seconds"] for r in history)
    lines = [
        f"# {name} trained on CIFAR-10", "",
        f"- command: `{command}`",
        f"- commit of the code that trained it: `{commit}`",
        f"- where: {where}",
        f"- wall time: the sum of all epochs' time (training + the validation pass) is {total / 60:.1f} min",
        f"- final top-1 on the 10,000 CIFAR-10 test images: **{last['val_top1']:.2f} %** "
        f"(top-5 {last['val_top5']:.2f} %), after {last['epoch']} epochs; best epoch {best['epoch']} at "
        f"{best['val_top1']:.2f} %",
        "- the committed weights are the final epoch's (`model.safetensors`, fp32), never the best epoch's "
        "(choosing the best test-set epoch would tune on the test set); per-epoch metrics in `metrics.jsonl`",
    ]
    if note:
        lines.append(f"- {note}")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="the run folder (model.pt and metrics.jsonl)")
    ap.add_argument("dest", type=Path, help="references/cifar10/NAME")
    ap.add_argument("--command", required=True, help="the exact command that trained it")
    ap.add_argument("--where", default=None, help="the machine(s); default: this one")
    ap.add_argument("--commit", default=None, help="the code's commit; default: HEAD")
    ap.add_argument("--note", default="", help="one more line for RUN.md (e.g. where a resumption ran)")
    args = ap.parse_args()

    from ghostnet_edge.models.checkpoint import load_checkpoint, save_checkpoint
    from ghostnet_edge.utils.versions import machine_description

    ckpt = load_checkpoint(args.run / "model.pt")
    history = [json.loads(line) for line in (args.run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    if int(ckpt.meta.get("epochs_done") or 0) != len(history) or len(history) != ckpt.meta.get("epochs_total"):
        raise SystemExit(f"error: {args.run} is not a finished run ({len(history)} epochs of metrics, "
                         f"meta says {ckpt.meta.get('epochs_done')}/{ckpt.meta.get('epochs_total')})")
    args.dest.mkdir(parents=True, exist_ok=True)
    save_checkpoint(args.dest / "model.safetensors", ckpt.state_dict, dict(ckpt.meta))
    (args.dest / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    where = args.where or f"`{json.dumps(machine_description())}`"
    name = str(ckpt.meta.get("model", args.dest.name))
    (args.dest / "RUN.md").write_text(run_markdown(name, args.command, args.commit or git_commit(), where,
                                                   history, args.note))
    print(f"[references] {args.dest}: top-1 {history[-1]['val_top1']:.2f} % after {history[-1]['epoch']} epochs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
