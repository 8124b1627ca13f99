#!/usr/bin/env bash
# The trained CIFAR-10 reference networks that INT8 accuracy is measured on (references/cifar10/).
#
#   bash scripts/train_references.sh ghostnet_cifar_050          # one reference; re-run after a stop to resume
#   bash scripts/train_references.sh mobilenetv3_large_cifar_100
#   WORK=/big/disk/refs THREADS=2 bash scripts/train_references.sh ghostnet_cifar_050
#
# Recipe (the same for every reference, chosen for a 2-core CPU budget): all 50,000 CIFAR-10 training
# images, the 32x32 form of the network, SGD with nesterov momentum 0.9, batch 128, peak LR 0.1 with a
# 1-epoch linear warm-up then cosine to 0, weight decay 5e-4 (not on BN/bias), label smoothing 0.1,
# 4-pixel pad-crop + horizontal flip, fp32, seed 0, EPOCHS epochs (default 30). Validation every epoch on
# the 10,000 test images. The run lives in WORK (outside the checkout, default
# ~/.cache/ghostedge/references/NAME): every epoch is checkpointed, and running this script again
# resumes from the last finished epoch to the same bytes as an uninterrupted run.
#
# When the run is complete the script copies into references/cifar10/NAME/: model.safetensors (weights +
# metadata), metrics.jsonl (one line per epoch) and RUN.md (command, commit, machine, wall time, top-1).
set -euo pipefail
cd "$(dirname "$0")/.."
NAME=${1:?usage: bash scripts/train_references.sh MODEL (e.g. ghostnet_cifar_050)}
EPOCHS=${EPOCHS:-30}
THREADS=${THREADS:-1}
WORK=${WORK:-$HOME/.cache/ghostedge/references/$NAME}
DEST=references/cifar10/$NAME
PY=${PYTHON:-.venv/bin/python}

args=(train --model "$NAME" --data cifar10
  --epochs "$EPOCHS" --batch-size 128 --lr 0.1 --schedule cosine --warmup-epochs 1
  --weight-decay 5e-4 --label-smoothing 0.1 --seed 0 --no-bf16 --threads "$THREADS"
  --out "$WORK" --resume --quiet)

start=$(date -u +%Y-%m-%dT%H:%M:%SZ)
t0=$(date +%s)
echo "[references] training $NAME in $WORK (resumes if interrupted); log: $WORK.log"
mkdir -p "$(dirname "$WORK")"
"$PY" -m ghostnet_edge "${args[@]}" 2>&1 | tee -a "$WORK.log"
seconds=$(( $(date +%s) - t0 ))

mkdir -p "$DEST"
"$PY" - "$WORK" "$DEST" "$seconds" "$start" "${args[*]}" <<'PY'
import json, subprocess, sys
from pathlib import Path

from ghostnet_edge.models.checkpoint import load_checkpoint, save_checkpoint
from ghostnet_edge.utils.versions import machine_description

work, dest, seconds, start, command = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
ckpt = load_checkpoint(work / "model.pt")
meta = dict(ckpt.meta)
save_checkpoint(dest / "model.safetensors", ckpt.state_dict, meta)
history = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines() if line.strip()]
(dest / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
total = sum(r["seconds"] for r in history)
commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
last = history[-1]
(dest / "RUN.md").write_text(
    f"# {meta.get('model', dest.name)} trained on CIFAR-10\n\n"
    f"- command: `ghostedge {command}` (via `bash scripts/train_references.sh {dest.name}`)\n"
    f"- commit of the code that trained it: `{commit}`\n"
    f"- machine: `{json.dumps(machine_description())}`\n"
    f"- this invocation started {start} and ran {seconds // 60} min; the sum of all epochs' wall time "
    f"(across resumptions) is {total / 3600:.2f} h\n"
    f"- final top-1 on the 10,000 CIFAR-10 test images: **{last['val_top1']:.2f} %** "
    f"(top-5 {last['val_top5']:.2f} %), after {last['epoch']} epochs; best epoch "
    f"{max(history, key=lambda r: r['val_top1'])['epoch']} at "
    f"{max(r['val_top1'] for r in history):.2f} %\n"
    f"- the committed weights are the final epoch's (`model.safetensors`, fp32); per-epoch metrics in "
    f"`metrics.jsonl`\n")
print(f"[references] {dest}: top-1 {last['val_top1']:.2f} % after {last['epoch']} epochs")
PY
