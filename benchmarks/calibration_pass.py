"""The calibration pass against its floor, side by side: settings of onnxruntime's calibrator.

    python benchmarks/calibration_pass.py [--model ghostnet_100] [--size 224] [--images 256] [--threads 2]

Exports the model (seeded random weights) to FP32 ONNX once, then times on the same random images:
one plain FP32 forward pass (onnxruntime, all optimisations, batches of 8: the floor), and
``collect_ranges``'s pass with the session's graph optimisations at the extended level and at all
(layout transformations included), at batches of 4, 8, 16 and 64, and with and without leaving unmeasured
the tensors read only by one Relu or Clip. Prints seconds and the ratio to the floor, and the largest
range difference against the default settings (over the tensors every setting measures).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout without installing the package
    sys.path.insert(0, str(REPO))


@contextlib.contextmanager
def _level(name: str, threads: int):
    """The calibrator's session at graph optimisation level ``name``."""
    import onnxruntime as ort
    from onnxruntime.quantization import calibrate

    original = calibrate.CalibraterBase.create_inference_session

    def create(self) -> None:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, name)
        opts.intra_op_num_threads = threads
        self.infer_session = ort.InferenceSession(self.augmented_model_path, sess_options=opts,
                                                  providers=self.execution_providers)

    calibrate.CalibraterBase.create_inference_session = create
    try:
        yield
    finally:
        calibrate.CalibraterBase.create_inference_session = original


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ghostnet_100")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    import onnxruntime as ort

    from ghostnet_edge.calib import ranges as cr
    from ghostnet_edge.export.onnx.convert import export_onnx
    from ghostnet_edge.models import create_model

    with tempfile.TemporaryDirectory(prefix="ghostedge-calib-bench-") as tmp:
        path = export_onnx(create_model(args.model, seed=0).eval(), (3, args.size, args.size),
                           Path(tmp) / "model.onnx").path
        x = np.random.default_rng(0).standard_normal((args.images, 3, args.size, args.size)).astype(np.float32)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = args.threads
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        sess.run(None, {name: x[:8]})
        t0 = time.perf_counter()
        for i in range(0, len(x), 8):
            sess.run(None, {name: x[i:i + 8]})
        floor = time.perf_counter() - t0
        print(f"{args.model} at {args.size}, {args.images} random images, {args.threads} threads")
        print(f"floor: one FP32 forward pass, onnxruntime, batches of 8: {floor:.2f} s")
        print("| graph optimisations | batch | Relu/Clip inputs | seconds | x floor | max range diff |")
        print("|---|---:|---|---:|---:|---:|")
        base = None
        default_batch = cr.CALIB_BATCH
        runs = [("ORT_ENABLE_ALL", default_batch, True), ("ORT_ENABLE_ALL", default_batch, False),
                ("ORT_ENABLE_EXTENDED", default_batch, True)]
        runs += [("ORT_ENABLE_ALL", b, True) for b in (4, 16, 64) if b != default_batch]
        original_skip = cr.activation_inputs
        import onnx

        skipped = set(original_skip(onnx.load(str(path))))
        for level, batch, skip in runs:
            cr.CALIB_BATCH = batch
            cr.ArrayDataReader.__init__.__defaults__ = ("input", batch)
            cr.activation_inputs = original_skip if skip else (lambda _model: {})
            with _level(level, args.threads):
                t0 = time.perf_counter()
                got = cr._collect(path, x, "minmax", args.threads)
                seconds = time.perf_counter() - t0
            base = base or got
            # Skipped tensors take their activation's range, measured ones their own: compare the rest.
            compare = [k for k in base if k not in skipped]
            diff = max(max(abs(got[k][0] - base[k][0]), abs(got[k][1] - base[k][1])) for k in compare)
            print(f"| {level} | {batch} | {'not measured' if skip else 'measured'} | {seconds:.2f} | "
                  f"{seconds / floor:.1f} | {diff:.1e} |", flush=True)
        cr.CALIB_BATCH = default_batch
        cr.ArrayDataReader.__init__.__defaults__ = ("input", default_batch)
        cr.activation_inputs = original_skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
