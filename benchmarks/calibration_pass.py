"""The calibration pass against its floor, side by side: the in-graph MinMax pass and onnxruntime's calibrator.

    python benchmarks/calibration_pass.py [--model ghostnet_100] [--size 224] [--images 256] [--threads 2]

Exports the model (seeded random weights) to FP32 ONNX once, then times on the same random images, at
``--threads`` and at one thread (the export calibrates on one core while the TFLite converter takes the
other): one plain FP32 forward pass (onnxruntime, all optimisations, batches of 8: the floor), the
export's MinMax pass (``calib/minmax.py``: per-channel reductions inside the graph), the same with the
tensors read only by one Relu or Clip measured too, and onnxruntime's own ``MinMaxCalibrater`` (what the
export used before). Prints seconds, the ratio to the floor at the same thread count, and the largest
range difference against the export's pass (over the tensors every setting measures).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout without installing the package
    sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ghostnet_100")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)


    from ghostnet_edge.calib import ranges as cr
    from ghostnet_edge.export.onnx.convert import export_onnx
    from ghostnet_edge.models import create_model

    with tempfile.TemporaryDirectory(prefix="ghostedge-calib-bench-") as tmp:
        path = export_onnx(create_model(args.model, seed=0).eval(), (3, args.size, args.size),
                           Path(tmp) / "model.onnx").path
        x = np.random.default_rng(0).standard_normal((args.images, 3, args.size, args.size)).astype(np.float32)
        print(f"{args.model} at {args.size}, {args.images} random images")
        print("| threads | pass | seconds | floor (plain forward pass) | x floor | max range diff |")
        print("|---:|---|---:|---:|---:|---:|")
        import onnx

        model = onnx.load(str(path))
        skipped = cr.activation_inputs(model)

        def onnxruntime_minmax(threads: int) -> dict:
            got = cr._collect_histograms(path, model, x, "minmax", threads, set(skipped))
            for name, out in skipped.items():
                if out in got:
                    got[name] = got[out]
            return got

        original_skip = cr.activation_inputs

        def all_measured(threads: int) -> dict:
            cr.activation_inputs = lambda _model: {}
            try:
                return cr._collect(path, x, "minmax", threads)
            finally:
                cr.activation_inputs = original_skip

        passes = [("in-graph, per channel (the export's)", lambda t: cr._collect(path, x, "minmax", t)),
                  ("in-graph, Relu/Clip inputs measured too", all_measured),
                  ("onnxruntime MinMaxCalibrater", onnxruntime_minmax)]
        for threads in sorted({args.threads, 1}, reverse=True):
            floor = _forward_pass(path, x, threads)
            base = None
            for label, run in passes:
                t0 = time.perf_counter()
                got = run(threads)
                seconds = time.perf_counter() - t0
                base = base or got
                compare = [k for k in base if k not in skipped and k in got]
                diff = max(max(abs(got[k][0] - base[k][0]), abs(got[k][1] - base[k][1])) for k in compare)
                print(f"| {threads} | {label} | {seconds:.2f} | {floor:.2f} | {seconds / floor:.2f} | {diff:.1e} |",
                      flush=True)
    return 0


def _forward_pass(path: Path, x: np.ndarray, threads: int) -> float:
    """Seconds of one plain FP32 forward pass over ``x`` (onnxruntime, batches of 8, after a warm-up)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    sess.run(None, {name: x[:8]})
    t0 = time.perf_counter()
    for i in range(0, len(x), 8):
        sess.run(None, {name: x[i:i + 8]})
    return time.perf_counter() - t0


if __name__ == "__main__":
    sys.exit(main())
