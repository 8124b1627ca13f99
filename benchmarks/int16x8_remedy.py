"""What the 16x8 remedy of ``ghostedge export --max-drop`` costs, measured whether or not a budget is missed.

    python benchmarks/int16x8_remedy.py EXPORT_DIR --val LABELLED_DIR --calib CALIB_DIR [--num-calib 128]

EXPORT_DIR is a `ghostedge export --formats onnx,tflite` folder of a trained checkpoint (``model.onnx``,
``model_fp32.tflite``, ``model_int8.tflite``). The script builds ``model_int16x8.tflite`` from the same
ONNX model and calibration images exactly as the export does when the INT8 model misses its budget, and
prints top-1 of FP32, INT8 and 16x8 on the labelled images, the file sizes and the host p50 latencies
(1 thread) side by side. Nothing in EXPORT_DIR is changed; the 16x8 file is written to a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np


def load_images(folder: Path, model: str, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    from ghostnet_edge.data.datasets import open_dataset
    from ghostnet_edge.data.loader import iterate_batches
    from ghostnet_edge.models import get_spec

    ds = open_dataset(folder, "val", get_spec(model)).subset(limit, seed=0)
    xs, ys = zip(*iterate_batches(ds, 256, as_torch=False), strict=True)
    return np.concatenate(xs), np.concatenate(ys)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("export_dir", type=Path)
    ap.add_argument("--val", type=Path, required=True, help="labelled images (class sub-folders)")
    ap.add_argument("--calib", type=Path, required=True, help="the calibration images the export used")
    ap.add_argument("--num-calib", type=int, default=128)
    args = ap.parse_args()

    from ghostnet_edge.export.tflite import budget as bd

    d = args.export_dir
    manifest = json.loads((d / "manifest.json").read_text())
    model = manifest["source"]["model"]
    labels = (d / "labels.txt").read_text().splitlines()
    val = load_images(args.val, model, None)
    calib, _ = load_images(args.calib, model, args.num_calib)
    from ghostnet_edge.export.checks import accuracy
    from ghostnet_edge.runtime.backends import run_artifact

    fp32 = accuracy(run_artifact(d / "model_fp32.tflite", val[0]), val[1])
    int8 = accuracy(run_artifact(d / "model_int8.tflite", val[0]), val[1])
    with tempfile.TemporaryDirectory() as tmp:
        r = bd.build_remedy(d / "model.onnx", Path(tmp) / bd.REMEDY_FILE, d / "model_fp32.tflite",
                            d / "model_int8.tflite", val, fp32, 0.0, calib, labels,
                            {**manifest["preprocessing"], "layout": "NHWC"}, threads=1)
    if "error" in r:
        print(f"the 16x8 model could not be built: {r['error']}")
        return 1
    print(f"{model}, {len(val[1])} labelled images, {args.num_calib} calibration images")
    print(f"{'model':<22}{'top-1 %':>9}{'MiB':>8}{'host p50 ms':>13}")
    print(f"{'model_fp32.tflite':<22}{fp32 * 100:>9.2f}{r['fp32_bytes'] / 2**20:>8.2f}{'':>13}")
    print(f"{'model_int8.tflite':<22}{int8 * 100:>9.2f}{r['int8_bytes'] / 2**20:>8.2f}{r['int8_p50_ms']:>13.2f}")
    print(f"{bd.REMEDY_FILE:<22}{r['top1'] * 100:>9.2f}{r['bytes'] / 2**20:>8.2f}{r['p50_ms']:>13.2f}")
    print(f"16x8 / INT8 latency: {r['p50_ms'] / r['int8_p50_ms']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
