#!/usr/bin/env bash
# The committed CIFAR-10 reproduction of GhostNet's Figure 7 (accuracy vs latency), spread over seeds.
#
#   bash scripts/reproduce_cifar10.sh            # 91 min on 2 cores (2026-11-22); resumable: re-run after a stop
#   WORK=/big/disk/cifar-curve bash scripts/reproduce_cifar10.sh
#
# Budget (chosen so the whole sweep fits 150 min on a 2-core machine; see docs/results/README.md):
#   5 models (GhostNet 0.5x/1.0x/1.3x, MobileNetV3-Small/Large 1.0x, 32x32 CIFAR forms) x 3 seeds,
#   1 epoch over the full 50,000-image training split, batch 64, SGD + cosine, two runs at a time
#   (one thread each); per-epoch monitoring on 2,000 test images; final accuracy of every artifact on
#   all 10,000 test images; formats torch/onnx/onnx-int8/tflite/tflite-int8 (INT8 calibrated on 128
#   training images); latency on the host (1 thread) and guest instructions on emulated Cortex-A76.
#
# Needs ../shared/data/cifar10-jpg.tar (or GHOSTEDGE_CIFAR_TAR) and, for the qemu target, the aarch64
# sysroot (bash scripts/setup.sh builds it). Results are copied to docs/results/cifar10/ with the
# commit and machine they came from.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-runs/cifar10-curve}
OUT=docs/results/cifar10
PY=${PYTHON:-.venv/bin/python}

args=(curve
  --models ghostnet_cifar_050,ghostnet_cifar_100,ghostnet_cifar_130,mobilenetv3_small_cifar_100,mobilenetv3_large_cifar_100
  --seeds 0,1,2
  --formats torch,onnx,onnx-int8,tflite,tflite-int8
  --target host --target qemu-aarch64
  --data cifar10 --epochs 1 --limit-val 2000
  --train-jobs 2 --train-threads 1
  --work "$WORK")

commit=$(git rev-parse HEAD)
dirty=$(git status --porcelain --untracked-files=no | head -c1)
start=$(date -u +%Y-%m-%dT%H:%M:%SZ)
t0=$(date +%s)
"$PY" -m ghostnet_edge "${args[@]}"
seconds=$(( $(date +%s) - t0 ))

mkdir -p "$OUT"
cp "$WORK/points.csv" "$WORK/curve.md" "$WORK/curve.png" "$WORK/curve.svg" "$OUT/"
machine=$("$PY" -c 'import json; from ghostnet_edge.utils.versions import machine_description as m; print(json.dumps(m()))')
cat > "$OUT/RUN.md" <<EOF
# How these results were made

- command: \`ghostedge ${args[*]}\` (via \`bash scripts/reproduce_cifar10.sh\`)
- commit: \`$commit\`${dirty:+ (with uncommitted changes)}
- started: $start; wall time of this invocation: $((seconds / 60)) min (a resumed run only counts its own part)
- machine: \`$machine\`
EOF
echo "results in $OUT (points.csv, curve.md, curve.png, curve.svg, RUN.md)"
