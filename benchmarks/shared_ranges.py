"""TFLite INT8 calibrated by TensorFlow's own calibrator against the shared ranges, side by side.

    python benchmarks/shared_ranges.py [--calib 128] [--test 2000] [--report 32] [NAME ...]

For each trained CIFAR-10 reference (``references/cifar10/NAME``; default: all of them) it exports the FP32
ONNX model once, draws ``--calib`` calibration images from CIFAR-10's *training* split (seed 0) and
scores on ``--test`` images drawn from the *test* split (seed 1; the tar is ordered by class), then makes the fully integer TFLite model two ways from the
same FP32 flatbuffer inputs: (a) ``TFLiteConverter`` with the representative dataset (TensorFlow's
calibrator, what ghostedge did before), (b) the ranges of one onnxruntime pass over the FP32 ONNX model
(what ghostedge does now, also for the INT8 ONNX model). Printed per reference: top-1 of FP32 ONNX, (a)
and (b); top-1 agreement of (a) and (b) with FP32; mean and worst per-layer SQNR over ``--report`` test
images; and the INT8 conversion time of each route, after the FP32 conversion both share.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout without installing the package
    sys.path.insert(0, str(REPO))


def _top1(logits: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(logits, axis=1) == y) * 100)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*")
    ap.add_argument("--calib", type=int, default=128)
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--report", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from ghostnet_edge.calib.ranges import collect_ranges
    from ghostnet_edge.data.datasets import open_dataset
    from ghostnet_edge.export.onnx.convert import export_onnx
    from ghostnet_edge.export.tflite.convert import convert_onnx_to_tflite
    from ghostnet_edge.export.tflite.layers import per_layer_sqnr
    from ghostnet_edge.models import create_model, get_spec
    from ghostnet_edge.models.checkpoint import load_checkpoint
    from ghostnet_edge.runtime.backends import run_artifact

    names = args.names or sorted(p.name for p in (REPO / "references" / "cifar10").iterdir()
                                 if (p / "model.safetensors").is_file())
    print(f"{args.calib} calibration images (training split, seed 0), {args.test} test images (seed 1), "
          f"per-layer SQNR over {args.report} test images, {args.threads} threads")
    print("| reference | FP32 top-1 % | TF calibrator: top-1 % / agreement / mean, worst layer SQNR dB / INT8 s "
          "| shared ranges: top-1 % / agreement / mean, worst layer SQNR dB / INT8 s |")
    print("|---|---:|---|---|")
    for name in names:
        ref = REPO / "references" / "cifar10" / name / "model.safetensors"
        ckpt = load_checkpoint(ref)
        spec = get_spec(ckpt.meta.get("model", name))
        model = create_model(spec.name).eval()
        model.load_state_dict(ckpt.state_dict)
        train = open_dataset("cifar10", "train", spec)
        test = open_dataset("cifar10", "test", spec)
        pick = np.random.default_rng(0).choice(len(train), size=args.calib, replace=False)
        xc, _ = train.load_batch([int(i) for i in pick])
        xt, yt = test.load_batch(sorted(int(i) for i in np.random.default_rng(1).choice(len(test), size=args.test,
                                                                                        replace=False)))
        with tempfile.TemporaryDirectory(prefix="ghostedge-ranges-") as tmp:
            tmp = Path(tmp)
            onnx_path = export_onnx(model, spec.input_size, tmp / "model.onnx").path
            fp32 = run_artifact(onnx_path, xt, args.threads)
            ranges = collect_ranges(onnx_path, xc, "minmax", args.threads, use_cache=False).ranges
            cells = []
            for label, given in (("tf", None), ("shared", ranges)):
                res = convert_onnx_to_tflite(onnx_path, tmp / f"{label}_fp32.tflite", tmp / f"{label}_int8.tflite",
                                             xc, ranges=given)
                assert (given is None) == res.ranges_source.startswith("TensorFlow"), res.ranges_source
                out = run_artifact(tmp / f"{label}_int8.tflite", xt, args.threads)
                layers = per_layer_sqnr(tmp / f"{label}_int8.tflite", tmp / f"{label}_fp32.tflite", xt[:args.report],
                                        num_threads=args.threads)
                sq = [e.sqnr_db for e in layers]
                agree = float(np.mean(np.argmax(out, 1) == np.argmax(fp32, 1)))
                cells.append(f"{_top1(out, yt):.2f} / {agree:.3f} / {np.mean(sq):.1f}, {min(sq):.1f} / "
                             f"{res.int8_seconds:.2f}")
            print(f"| {name} | {_top1(fp32, yt):.2f} | {cells[0]} | {cells[1]} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
