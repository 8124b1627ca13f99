#!/usr/bin/env bash
# INT8 top-1 of a trained CIFAR-10 reference over calibration draws, on all 10,000 test images.
#
#   bash scripts/measure_int8_draws.sh ghostnet_cifar_050
#   SEEDS=5 SIZES=32,128,512 bash scripts/measure_int8_draws.sh ghostnet_cifar_050
#
# The reference is references/cifar10/NAME/model.safetensors (made by scripts/train_references.sh).
# Calibration images are drawn from CIFAR-10's *training* split (1,000 images, 100 per class, extracted
# once into the work folder), so no draw can contain a test image; every draw is exported with the
# ordinary `ghostedge export` (every artifact verified) and scored on the test split. Resumable: finished
# draws are reused. Results are copied to references/cifar10/NAME/int8_draws.{md,json}.
set -euo pipefail
cd "$(dirname "$0")/.."
NAME=${1:?usage: bash scripts/measure_int8_draws.sh MODEL (e.g. ghostnet_cifar_050)}
SEEDS=${SEEDS:-5}
SIZES=${SIZES:-32,128,512}
WORK=${WORK:-$HOME/.cache/ghostedge/int8-draws/$NAME}
PY=${PYTHON:-.venv/bin/python}
REF=references/cifar10/$NAME/model.safetensors
[ -f "$REF" ] || { echo "error: $REF does not exist; train it first: bash scripts/train_references.sh $NAME" >&2; exit 2; }

mkdir -p "$WORK"
"$PY" - "$WORK/calib-train" <<'PY'
import sys
from pathlib import Path

from ghostnet_edge.calib.sampler import extract_tar_images
from ghostnet_edge.data.datasets import find_cifar_tar

dest = Path(sys.argv[1])
if not dest.is_dir():
    tmp = dest.with_name(dest.name + ".partial")
    n = extract_tar_images(find_cifar_tar(), tmp, per_class=100, split="train")
    tmp.rename(dest)
    print(f"[draws] {n} calibration candidates from the training split in {dest}")
PY
"$PY" -m ghostnet_edge export "$REF" --calib "$WORK/calib-train" --calib-seeds "$SEEDS" --calib-sizes "$SIZES" \
  --eval-data cifar10 --eval-split test --out "$WORK/draws" --threads "${THREADS:-2}"
cp "$WORK/draws/calibration_draws.md" "references/cifar10/$NAME/int8_draws.md"
cp "$WORK/draws/calibration_draws.json" "references/cifar10/$NAME/int8_draws.json"
echo "results in references/cifar10/$NAME/int8_draws.md"
