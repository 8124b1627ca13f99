"""Two INT8 routes for the same FP32 TFLite GhostNet: ghostedge's converter PTQ vs the LiteRT Quantizer.

TensorFlow's converter-side post-training quantization (``tf.lite.TFLiteConverter`` with a
representative dataset, full-integer int8: what ``ghostedge export`` does) is deprecated upstream in
favour of the LiteRT Quantizer (``ai-edge-quantizer``). This benchmark compares the two, in one run:

1. ghostedge's own pipeline (:func:`ghostnet_edge.export.pipeline.export_artifacts`, TFLite only)
   writes ``model_fp32.tflite`` and ``model_int8.tflite`` (route "ghostedge"), calibrated on images
   drawn from ``--calib`` with ``--seed``; it also holds out a disjoint set of verification images.
2. ai-edge-quantizer's ``recipe.static_wi8_ai8()`` is applied to that same ``model_fp32.tflite``
   (``Quantizer(...).calibrate(...)`` then ``.quantize(...)``), calibrated on exactly the same images,
   preprocessed the same way (route "aeq").
3. On the held-out images (disjoint from calibration), each INT8 model is compared with the FP32
   TFLite logits: SQNR in dB (10*log10(sum ref^2 / sum (ref-q)^2), per image, then the mean),
   top-1 agreement, op count, fully-integer check, file size and quantization wall time.

Models: ``--model ghostnet_100`` (224x224, default) or ``ghostnet_cifar_050`` (32x32), always with
seeded random weights, plus ``--checkpoint PATH`` (a trained checkpoint) when given.
Default images: the ImageNet sample photos in ../shared/data/imagenet-samples for 224 models; for
32x32 models CIFAR-10 test photos pulled out of ../shared/data/cifar10-jpg.tar into a temporary folder.

Nothing is downloaded. ai-edge-quantizer must already be installed (exit code 2 with the install
command when it is not)::

    pip install ai-edge-quantizer==0.10.0

Usage::

    python benchmarks/quantizer_routes.py [--model ghostnet_100] [--checkpoint best.pt] [--calib DIR]
        [--num-calib 64] [--num-verify 32] [--seed 0] [--threads 1] [--json out.json] [--keep DIR]

Quantization time: "ghostedge" is the converter's INT8 conversion (calibration included; the ONNX->TF
translation it shares with the FP32 conversion is not counted); "aeq" is loading the FP32 .tflite,
calibrating, quantizing and serializing. Both start from an already translated model.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import math
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GHOSTEDGE_SHARED", REPO.parent / "shared"))
if str(REPO) not in sys.path:  # run as a script from a checkout without installing the package
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

AEQ_VERSION = "0.10.0"
MODELS = ("ghostnet_100", "ghostnet_cifar_050")
_FLOATS = frozenset({"FLOAT32", "FLOAT16", "FLOAT64", "BFLOAT16"})
INSTALL_HELP = (
    "ai-edge-quantizer is not installed in this environment ({python}).\n"
    "Install it (it needs no other change to a tensorflow 2.21 / ai-edge-litert 2.3 stack) with:\n\n"
    "    {python} -m pip install ai-edge-quantizer==" + AEQ_VERSION + "\n\n"
    "This benchmark never downloads anything itself."
)


def check_aeq() -> str | None:
    """None when ai-edge-quantizer imports, else the message to print (the caller exits 2)."""
    if importlib.util.find_spec("ai_edge_quantizer") is None:
        return INSTALL_HELP.format(python=sys.executable)
    try:
        from ai_edge_quantizer import quantizer, recipe  # noqa: F401
    except Exception as exc:  # a broken install: say so, with the same fix
        return f"ai-edge-quantizer is installed but cannot be imported: {exc!r}\n\n" + INSTALL_HELP.format(
            python=sys.executable)
    return None


def aeq_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ai-edge-quantizer")
    except PackageNotFoundError:
        return "unknown"


# --------------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------------


def default_calib(spec: Any, num_images: int, tmp: Path) -> Path:
    """The default calibration/verification folder for a model of this input size."""
    if spec.input_size[1] >= 64:
        folder = SHARED / "data" / "imagenet-samples"
        if not folder.is_dir():
            raise SystemExit(f"no default images for {spec.name}: {folder} does not exist; pass --calib DIR")
        return folder
    from ghostnet_edge.calib.sampler import extract_tar_images

    tar = SHARED / "data" / "cifar10-jpg.tar"
    if not tar.is_file():
        raise SystemExit(f"no default images for {spec.name}: {tar} does not exist; pass --calib DIR")
    dest = tmp / "cifar10-calib"
    if not dest.is_dir():
        dest.mkdir(parents=True)
        per_class = max(2, math.ceil(num_images / 10))
        n = extract_tar_images(tar, dest, per_class=per_class, split="test")
        print(f"extracted {n} CIFAR-10 test photos ({per_class} per class) from {tar} into a temporary folder")
    return dest


# --------------------------------------------------------------------------------------------------
# The two routes
# --------------------------------------------------------------------------------------------------


def ghostedge_export(variant: dict[str, Any], calib: Path, out: Path, args: argparse.Namespace) -> Any:
    """ghostedge's own pipeline, TFLite only: model_fp32.tflite and (converter PTQ) model_int8.tflite."""
    from ghostnet_edge.export.pipeline import ExportConfig, export_artifacts

    cfg = ExportConfig(checkpoint=variant["checkpoint"], model=variant["arch"], calib=calib, out=out,
                       formats=("tflite",), int8=True, num_calib=args.num_calib, num_verify=args.num_verify,
                       io_dtype="int8", per_channel=True, seed=args.seed, min_agreement=0.0,
                       report_images=1, threads=args.threads)
    return export_artifacts(cfg)


def aeq_quantize(fp32_path: Path, out_path: Path, calib_nchw: np.ndarray, threads: int) -> dict[str, Any]:
    """ai-edge-quantizer ``static_wi8_ai8`` on a .tflite file, calibrated on NCHW float images."""
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import quantizer, recipe

    sigs = Interpreter(model_path=str(fp32_path)).get_signature_list()
    if len(sigs) != 1:
        raise SystemExit(f"{fp32_path} has {len(sigs)} signatures ({sorted(sigs)}), expected one")
    sig_key, sig = next(iter(sigs.items()))
    if len(sig["inputs"]) != 1:
        raise SystemExit(f"signature {sig_key} of {fp32_path} has inputs {sig['inputs']}, expected one")
    input_name = sig["inputs"][0]
    samples = [{input_name: np.ascontiguousarray(x.transpose(1, 2, 0)[None], dtype=np.float32)}
               for x in calib_nchw]

    # Its calibrator reads every intermediate tensor (experimental_preserve_all_tensors, which warns) and
    # it draws tqdm bars on stderr: both expected, neither actionable here (errors still propagate).
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors")
        t0 = time.perf_counter()
        qt = quantizer.Quantizer(str(fp32_path), recipe.static_wi8_ai8())
        t_cal = time.perf_counter()
        calibration = qt.calibrate({sig_key: samples}, num_threads=threads)
        t_q = time.perf_counter()
        result = qt.quantize(calibration, enable_progress_bar=False, enable_progress_report=False)
        result.export_model(str(out_path), overwrite=True)
        t_end = time.perf_counter()
    return {"seconds": t_end - t0, "calibrate_seconds": t_q - t_cal, "quantize_seconds": t_end - t_q,
            "signature": sig_key, "input": input_name, "num_calibration": len(samples)}


# --------------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------------


def integer_status(path: Path, expected_depthwise: int | None) -> dict[str, Any]:
    """Fully integer (int8 I/O, no float op, no QUANTIZE/DEQUANTIZE), else what it is instead."""
    from ghostnet_edge.export.tflite.inspect import check_fully_integer, io_quantization, read_graph

    strict = check_fully_integer(path, float_io=False, expected_depthwise=expected_depthwise)
    io = io_quantization(path)
    status = {"fully_integer": not strict.violations, "io": f"{io['input']['dtype']}/{io['output']['dtype']}",
              "num_ops": strict.num_ops, "op_counts": strict.op_counts, "depthwise": strict.depthwise_convs,
              "violations": strict.violations, "io_quantization": io}
    # What the (Q)DQ ops inside are: an int8 -> int8 QUANTIZE is a requantization (integer arithmetic,
    # but an extra op the strict check counts), anything touching a float tensor is a float island.
    g = read_graph(path)
    ends = set(g.inputs) | set(g.outputs)
    requant, float_qdq, float_tensors = [], [], 0
    for k, op in enumerate(g.ops):
        dtypes = {g.tensors[i].dtype for i in (*op.inputs, *op.outputs) if i >= 0}
        if op.name in ("QUANTIZE", "DEQUANTIZE"):
            if any(i in ends for i in (*op.inputs, *op.outputs)):
                continue
            consumers = [o.name for o in g.ops if op.outputs[0] in o.inputs]
            entry = f"op {k} {op.name} {'/'.join(sorted(dtypes))} -> {', '.join(consumers) or 'nothing'}"
            (float_qdq if dtypes & _FLOATS else requant).append(entry)
        elif dtypes & _FLOATS:
            float_tensors += 1
    status["requantize_ops"] = requant
    status["float_qdq_ops"] = float_qdq
    status["ops_with_float_tensors"] = float_tensors
    if not strict.violations:
        status["summary"] = "yes"
    elif not float_qdq and not float_tensors and status["io"] in ("INT8/INT8", "UINT8/UINT8") \
            and len(strict.violations) == len(requant):
        status["summary"] = f"no: {len(requant)} int8 requant QUANTIZE"
    else:
        float_io = check_fully_integer(path, float_io=True, expected_depthwise=expected_depthwise)
        status["violations_with_float_io_allowed"] = float_io.violations
        status["summary"] = ("integer inside, float I/O" if not float_io.violations
                             else f"no ({len(strict.violations)} violations)")
    return status


def compare(ref: np.ndarray, q: np.ndarray) -> dict[str, Any]:
    from ghostnet_edge.export.checks import sqnr_db, top1_agreement

    per_image = [sqnr_db(r, t) for r, t in zip(ref, q, strict=True)]
    return {"sqnr_db_mean": float(np.mean(per_image)), "sqnr_db_min": float(np.min(per_image)),
            "sqnr_db_pooled": sqnr_db(ref, q), "top1_agreement": top1_agreement(ref, q),
            "num_images": len(per_image)}


def run_variant(variant: dict[str, Any], args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from ghostnet_edge.calib import calibration_tensors, split_calibration_verification
    from ghostnet_edge.data import Preprocess
    from ghostnet_edge.export.tflite._testing import count_depthwise_convs
    from ghostnet_edge.models import load_model
    from ghostnet_edge.runtime.backends import run_artifact

    name = variant["name"]
    model, spec, _ = load_model(variant["checkpoint"] or variant["arch"], arch=variant["arch"]
                                if variant["checkpoint"] else None)
    depthwise = count_depthwise_convs(model)
    del model
    calib = args.calib or default_calib(spec, args.num_calib + args.num_verify, tmp)
    out = tmp / f"export-{name}"
    print(f"[{name}] {spec.name} {spec.input_size[1]}x{spec.input_size[2]}: ghostedge export "
          f"(calibration images from {calib}) ...", flush=True)
    t0 = time.perf_counter()
    report = ghostedge_export(variant, calib, out, args)
    print(f"[{name}] export done in {time.perf_counter() - t0:.1f} s", flush=True)
    fp32, int8_ge, int8_aeq = out / "model_fp32.tflite", out / "model_int8.tflite", tmp / f"{name}_int8_aeq.tflite"

    # The very images the pipeline used: same folder, counts and seed give the same draw (the manifest's
    # list hashes prove it), decoded with the same evaluation preprocessing.
    calib_set, verify_set = split_calibration_verification(calib, args.num_calib, args.num_verify, args.seed)
    m = report.manifest
    if (m["calibration"]["list_sha256"] != calib_set.list_sha256()
            or m["verification"]["list_sha256"] != verify_set.list_sha256()):
        raise SystemExit("the image sets drawn here differ from the export's (manifest hashes differ)")
    overlap = set(calib_set.files) & set(verify_set.files)
    if overlap:
        raise SystemExit(f"{len(overlap)} images are in both the calibration and the held-out set")
    pre = Preprocess.from_spec(spec)
    xc = calibration_tensors(calib_set.files, pre).array
    xv = calibration_tensors(verify_set.files, pre).array

    print(f"[{name}] ai-edge-quantizer static_wi8_ai8 on model_fp32.tflite ({len(xc)} images) ...", flush=True)
    aeq = aeq_quantize(fp32, int8_aeq, xc, args.threads)

    ref = run_artifact(fp32, xv, args.threads)
    routes: dict[str, Any] = {}
    for route, path, seconds in (("ghostedge", int8_ge, report.timings.get("tflite_convert.int8")),
                                 ("aeq", int8_aeq, aeq["seconds"])):
        q = run_artifact(path, xv, args.threads)
        routes[route] = {**compare(ref, q), **integer_status(path, depthwise), "bytes": path.stat().st_size,
                         "quant_seconds": seconds}
    routes["aeq"]["timing_detail"] = {k: v for k, v in aeq.items() if k != "seconds"}
    routes["ghostedge"]["timing_detail"] = {k: report.timings.get(k) for k in
                                            ("tflite_convert.translate", "tflite_convert.fp32",
                                             "tflite_convert.int8")}
    if args.keep is not None:
        dest = args.keep / name
        dest.mkdir(parents=True, exist_ok=True)
        for src, dst in ((fp32, "model_fp32.tflite"), (int8_ge, "model_int8_ghostedge.tflite"),
                         (int8_aeq, "model_int8_aeq.tflite")):
            shutil.copyfile(src, dest / dst)
    calib_range = [float(xc.min()), float(xc.max())]
    for d in routes.values():
        iq = d["io_quantization"]["input"]
        d["input_range"] = [iq["scale"] * (-128 - iq["zero_point"]), iq["scale"] * (127 - iq["zero_point"])]
    return {"variant": name, "model": spec.name, "calib_input_range": calib_range, "checkpoint": str(variant["checkpoint"] or ""),
            "input_size": list(spec.input_size), "calib_folder": str(calib),
            "num_calib": calib_set.count, "num_heldout": verify_set.count,
            "calib_list_sha256": calib_set.list_sha256(), "heldout_list_sha256": verify_set.list_sha256(),
            "expected_depthwise": depthwise, "fp32_bytes": fp32.stat().st_size,
            "fp32_ops": integer_status(fp32, None)["num_ops"], "routes": routes}


def print_table(results: list[dict[str, Any]]) -> None:
    head = ("variant", "route", "SQNR dB", "top-1", "ops", "fully int8", "I/O", "KiB", "quant s")
    rows = []
    for r in results:
        for route, d in r["routes"].items():
            rows.append((r["variant"], route, f"{d['sqnr_db_mean']:.2f}", f"{d['top1_agreement']:.3f}",
                         str(d["num_ops"]), d["summary"], d["io"], f"{d['bytes'] / 1024:.0f}",
                         f"{d['quant_seconds']:.1f}"))
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    line = "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))
    print("\n" + line + "\n" + "-" * len(line))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    for r in results:
        print(f"\n{r['variant']}: {r['model']} {r['input_size'][1]}x{r['input_size'][2]}, "
              f"{r['num_calib']} calibration / {r['num_heldout']} held-out images from {r['calib_folder']}; "
              f"FP32 {r['fp32_ops']} ops, {r['fp32_bytes'] / 1024:.0f} KiB; calibration inputs span "
              f"[{r['calib_input_range'][0]:.3f}, {r['calib_input_range'][1]:.3f}]")
        for route, d in r["routes"].items():
            ops = ", ".join(f"{k} {v}" for k, v in d["op_counts"].items())
            lo, hi = d["input_range"]
            print(f"  {route}: SQNR min {d['sqnr_db_min']:.2f} dB, pooled {d['sqnr_db_pooled']:.2f} dB; "
                  f"int8 input covers [{lo:.3f}, {hi:.3f}]; "
                  f"depthwise {d['depthwise']}/{r['expected_depthwise']}; ops: {ops}")
            for v in d["requantize_ops"]:
                print(f"    int8 requantize inside the graph: {v}")
            others = [v for v in d["violations"] if "QUANTIZE inside" not in v] + d["float_qdq_ops"]
            for v in others[:6]:
                print(f"    not integer: {v}")
            if len(others) > 6:
                print(f"    ... and {len(others) - 6} more")
    print("\nSQNR: mean over held-out images of 10*log10(sum ref^2 / sum (ref-q)^2) against the FP32 TFLite "
          "logits; top-1: agreement with the FP32 TFLite.")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, choices=MODELS,
                    help="architecture, run with seeded random weights (default ghostnet_100)")
    ap.add_argument("--checkpoint", type=Path, default=None, help="also run a trained checkpoint")
    ap.add_argument("--calib", type=Path, default=None,
                    help="folder of calibration images (held-out images are drawn from it too)")
    ap.add_argument("--num-calib", type=int, default=64)
    ap.add_argument("--num-verify", type=int, default=32, help="held-out images (disjoint from calibration)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None, help="write all results to this JSON file")
    ap.add_argument("--keep", type=Path, default=None, help="copy the three .tflite files per variant here")
    args = ap.parse_args(argv)

    problem = check_aeq()
    if problem is not None:
        print(problem, file=sys.stderr)
        return 2
    if args.checkpoint is not None and not args.checkpoint.is_file():
        print(f"checkpoint {args.checkpoint} does not exist", file=sys.stderr)
        return 1
    variants = [{"name": f"{args.model or 'ghostnet_100'}-random", "checkpoint": None,
                 "arch": args.model or "ghostnet_100"}]
    if args.checkpoint is not None:
        # --model names the checkpoint's architecture only when given explicitly (a bare state_dict).
        variants.append({"name": "checkpoint", "checkpoint": args.checkpoint, "arch": args.model})

    import torch

    torch.set_num_threads(max(1, args.threads))
    from ghostnet_edge.export.pipeline import suppress_noise
    from ghostnet_edge.utils.versions import package_versions

    suppress_noise()
    results = []
    with tempfile.TemporaryDirectory(prefix="quantizer-routes-") as tmp:
        for variant in variants:
            results.append(run_variant(variant, args, Path(tmp)))
    print_table(results)
    if args.json is not None:
        payload = {"command": sys.argv, "seed": args.seed, "threads": args.threads,
                   "versions": {**package_versions(), "ai-edge-quantizer": aeq_version()}, "results": results}
        args.json.write_text(json.dumps(payload, indent=2, default=str) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
