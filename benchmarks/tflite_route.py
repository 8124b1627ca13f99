"""TFLite route on GhostNet 1.0x at 224 (random init, seeded): conversion time, op counts, latency.

Measures, in one run on this machine:
  * translate + convert seconds for FP32, INT8 with 256 and with 100 representative images;
  * op counts of the INT8 model and whether it is fully integer;
  * latency of FP32 vs INT8 in ai-edge-litert with 1 thread (interleaved, median of --runs) and the ratio;
  * optionally (--onnx2tf) the onnx2tf route's FP32 conversion time for the same ONNX.

Representative images: the 100 ImageNet sample photos in ../shared (eval preprocessing) and, for 256,
156 more seeded random-resized crops of them (training preprocessing); seeded noise without ../shared.

    PYTHONPATH=. python benchmarks/tflite_route.py [--runs 50] [--onnx2tf]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402


def representative_images(n: int, seed: int, shared: Path) -> tuple[np.ndarray, str]:
    from ghostnet_edge.data import Preprocess, load_rgb
    from ghostnet_edge.models import get_spec

    folder = shared / "data" / "imagenet-samples"
    files = sorted(p for p in folder.glob("*.JPEG")) if folder.is_dir() else []
    if not files:
        rng = np.random.default_rng(seed)
        return rng.standard_normal((n, 3, 224, 224)).astype(np.float32), "seeded noise"
    spec = get_spec("ghostnet_100")
    pre = Preprocess.from_spec(spec)
    imgs = [load_rgb(f) for f in files]
    out = [pre(im) for im in imgs][:n]
    rng = np.random.default_rng(seed)
    aug = pre.with_train(True)
    while len(out) < n:
        out.append(aug(imgs[int(rng.integers(len(imgs)))], rng))
    return np.stack(out).astype(np.float32), f"{len(files)} ImageNet samples + seeded crops"


def latency_ms(paths: dict[str, Path], runs: int, warmup: int = 5) -> dict[str, dict[str, float]]:
    """Median and minimum single-image latency per model, runs interleaved so load changes hit all alike.

    The minimum is the better estimate of the uncontended time when other jobs share the CPU."""
    from ai_edge_litert.interpreter import Interpreter

    interps = {}
    for k, p in paths.items():
        it = Interpreter(model_path=str(p), num_threads=1)
        it.allocate_tensors()
        d = it.get_input_details()[0]
        x = np.zeros(d["shape"], dtype=d["dtype"])
        it.set_tensor(d["index"], x)
        interps[k] = it
    for it in interps.values():
        for _ in range(warmup):
            it.invoke()
    times: dict[str, list[float]] = {k: [] for k in interps}
    for _ in range(runs):
        for k, it in interps.items():
            t0 = time.perf_counter()
            it.invoke()
            times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: {"median": statistics.median(v), "min": min(v)} for k, v in times.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--onnx2tf", action="store_true", help="also time the onnx2tf route (FP32)")
    ap.add_argument("--keep", type=Path, default=None, help="copy the .tflite files into this folder")
    ap.add_argument("--latency-only", type=Path, default=None,
                    help="only time the *.tflite files of this folder (a --keep folder)")
    ap.add_argument("--shared", type=Path, default=Path(os.environ.get("GHOSTEDGE_SHARED", REPO.parent / "shared")))
    args = ap.parse_args()
    if args.latency_only is not None:
        paths = {p.stem: p for p in sorted(args.latency_only.glob("*.tflite"))}
        lat = latency_ms(paths, args.runs)
        print(json.dumps({"latency_ms": lat, "runs": args.runs, "load_average": os.getloadavg()}, indent=2))
        return 0

    import torch

    torch.set_num_threads(1)
    from ghostnet_edge.export.tflite._testing import count_depthwise_convs, export_onnx_for_tests
    from ghostnet_edge.export.tflite.convert import convert_onnx_to_tflite
    from ghostnet_edge.export.tflite.inspect import check_fully_integer
    from ghostnet_edge.models import create_model
    from ghostnet_edge.utils.seeding import seed_everything
    from ghostnet_edge.utils.versions import machine_description, package_versions

    seed_everything(args.seed)
    model = create_model("ghostnet_100").eval()
    rep256, source = representative_images(256, args.seed, args.shared)
    results: dict[str, object] = {"machine": machine_description(), "versions": package_versions(),
                                  "representative": source}
    t_import = time.perf_counter()
    import tensorflow  # noqa: F401  (timed apart from the conversions)

    results["tensorflow_import_s"] = round(time.perf_counter() - t_import, 2)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        onnx_path = export_onnx_for_tests(model, d / "ghostnet_100.onnx", (3, 224, 224))
        r = convert_onnx_to_tflite(onnx_path, d / "fp32.tflite", None)
        results["fp32_convert_s"] = round(r.translate_seconds + r.fp32_seconds, 2)
        r256 = convert_onnx_to_tflite(onnx_path, None, d / "int8_256.tflite", rep256)
        results["int8_256_convert_s"] = round(r256.translate_seconds + r256.int8_seconds, 2)
        r100 = convert_onnx_to_tflite(onnx_path, None, d / "int8_100.tflite", rep256[:100])
        results["int8_100_convert_s"] = round(r100.translate_seconds + r100.int8_seconds, 2)
        rep = check_fully_integer(d / "int8_256.tflite", expected_depthwise=count_depthwise_convs(model))
        results.update(int8_ops=rep.num_ops, int8_op_counts=rep.op_counts, fully_integer=not rep.violations,
                       depthwise=rep.depthwise_convs, torch_depthwise=count_depthwise_convs(model),
                       fp32_mb=round(r.fp32_bytes / 2**20, 2), int8_mb=round(r256.int8_bytes / 2**20, 2))
        models = {"fp32": d / "fp32.tflite", "int8": d / "int8_256.tflite"}
        if args.onnx2tf:
            # The probe's route, same ONNX and same 256 images: onnx2tf SavedModel -> TFLiteConverter.
            # onnx2tf's tf_converter backend is the one that writes a SavedModel (it runs in a tool venv).
            import tensorflow as tf

            from ghostnet_edge.export.tflite.crosscheck import convert_with_onnx2tf

            t0 = time.perf_counter()
            models["onnx2tf_fp32"] = convert_with_onnx2tf(onnx_path, d / "onnx2tf", seed=args.seed,
                                                          backend="tf_converter")
            results["onnx2tf_fp32_convert_s"] = round(time.perf_counter() - t0, 2)
            t0 = time.perf_counter()
            conv = tf.lite.TFLiteConverter.from_saved_model(str(d / "onnx2tf"))
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            rep_nhwc = rep256.transpose(0, 2, 3, 1)
            conv.representative_dataset = lambda: ([x[None]] for x in rep_nhwc)
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv.inference_input_type = conv.inference_output_type = tf.int8
            (d / "onnx2tf_int8.tflite").write_bytes(conv.convert())
            results["onnx2tf_int8_256_convert_s"] = round(time.perf_counter() - t0, 2)
            models["onnx2tf_int8"] = d / "onnx2tf_int8.tflite"
            o2 = check_fully_integer(models["onnx2tf_int8"], expected_depthwise=count_depthwise_convs(model))
            results.update(onnx2tf_int8_ops=o2.num_ops, onnx2tf_depthwise=o2.depthwise_convs,
                           onnx2tf_grouped_conv2d=o2.grouped_conv2d)
        lat = latency_ms(models, args.runs)
        results["latency_ms"] = {k: {s: round(x, 2) for s, x in v.items()} for k, v in lat.items()}
        med = {k: v["median"] for k, v in lat.items()}
        results.update(int8_speedup=round(med["fp32"] / med["int8"], 2), runs=args.runs,
                       probe_onnx2tf_fp32_ms=4.94, probe_onnx2tf_int8_ms=2.81,
                       load_average=os.getloadavg())
        if args.onnx2tf:
            results["onnx2tf_int8_speedup"] = round(med["onnx2tf_fp32"] / med["onnx2tf_int8"], 2)
            results["ours_vs_onnx2tf_int8"] = round(med["onnx2tf_int8"] / med["int8"], 2)
        if args.keep is not None:
            import shutil

            args.keep.mkdir(parents=True, exist_ok=True)
            for k, p in models.items():
                shutil.copy(p, args.keep / f"{k}.tflite")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
