#!/usr/bin/env bash
# The trained CIFAR-10 reference networks that INT8 accuracy is measured on (references/cifar10/).
#
#   bash scripts/train_references.sh ghostnet_cifar_050          # one reference; re-run after a stop to resume
#   bash scripts/train_references.sh mobilenetv3_large_cifar_100
#   WORK=/big/disk/refs THREADS=2 bash scripts/train_references.sh ghostnet_cifar_050
#
# Recipe (the same as scripts/gpu_references.py's, which made the committed references): all 50,000
# CIFAR-10 training images, the 32x32 form of the network, SGD with nesterov momentum 0.9, batch 512, peak
# LR 0.4 with a 2-epoch linear warm-up then cosine to 0, weight decay 5e-4 (not on BN/bias), label
# smoothing 0.1, 4-pixel pad-crop + horizontal flip, fp32, seed 0, EPOCHS epochs (default 40; GhostNet
# 0.5x needs more than 40 to reach 85 %; about 3.5 min per epoch on one core). Validation every epoch on
# the 10,000 test images. The run lives in WORK (outside the checkout, default
# ~/.cache/ghostedge/references/NAME): every epoch is checkpointed, and running this script again
# resumes from the last finished epoch to the same bytes as an uninterrupted run.
#
# When the run is complete scripts/record_reference.py copies into references/cifar10/NAME/:
# model.safetensors (weights + metadata), metrics.jsonl (one line per epoch) and RUN.md (command, commit,
# machine, wall time, top-1). On a machine with an NVIDIA GPU, scripts/gpu_references.py trains several
# references side by side in minutes (the committed 1.0x and MobileNetV3 references were made that way).
set -euo pipefail
cd "$(dirname "$0")/.."
NAME=${1:?usage: bash scripts/train_references.sh MODEL (e.g. ghostnet_cifar_050)}
EPOCHS=${EPOCHS:-40}
THREADS=${THREADS:-1}
WORK=${WORK:-$HOME/.cache/ghostedge/references/$NAME}
DEST=references/cifar10/$NAME
PY=${PYTHON:-.venv/bin/python}

args=(train --model "$NAME" --data cifar10
  --epochs "$EPOCHS" --batch-size 512 --lr 0.4 --schedule cosine --warmup-epochs 2
  --weight-decay 5e-4 --label-smoothing 0.1 --seed 0 --no-bf16 --threads "$THREADS"
  --out "$WORK" --resume --quiet)

start=$(date -u +%Y-%m-%dT%H:%M:%SZ)
t0=$(date +%s)
echo "[references] training $NAME in $WORK (resumes if interrupted); log: $WORK.log"
mkdir -p "$(dirname "$WORK")"
"$PY" -m ghostnet_edge "${args[@]}" 2>&1 | tee -a "$WORK.log"
seconds=$(( $(date +%s) - t0 ))

"$PY" scripts/record_reference.py "$WORK" "$DEST" --command "ghostedge ${args[*]}" \
  --note "trained by \`bash scripts/train_references.sh $NAME\`; this invocation started $start and ran $((seconds / 60)) min"
