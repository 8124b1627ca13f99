"""TFLite route on GhostNet 1.0x at 224 (random init, seeded): conversion time, op counts, latency.

Measures, in one run on this machine:
  * translate + convert seconds for FP32, INT8 with 256 and with 100 representative images;
  * op counts of the INT8 model and whether it is fully integer;
  * latency of FP32 vs INT8 in ai-edge-litert with 1 thread (interleaved, median of --runs) and the ratio;
  * optionally (--onnx2tf) the onnx2tf route's FP32 conversion time for the same ONNX;
  * optionally (--litert-torch) litert-torch 0.10 on the same PyTorch model (its own Python 3.11 tool venv):
    FP32 via ``litert_torch.convert`` and INT8 via its PT2E flow calibrated on the same images; op counts
    and histogram differences against ours, float ADDs and mid-graph QUANTIZE/DEQUANTIZE, fully integer
    or not, FP32 max |diff| against ours and PyTorch, INT8 SQNR against PyTorch, conversion seconds.

Representative images: the 100 ImageNet sample photos in ../shared (eval preprocessing) and, for 256,
156 more seeded random-resized crops of them (training preprocessing); seeded noise without ../shared.

    PYTHONPATH=. python benchmarks/tflite_route.py [--runs 50] [--onnx2tf] [--litert-torch]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
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


# ------------------------------------------------------------------------------------------ litert-torch

LITERT_TORCH_PINS = ("litert-torch==0.10.0",)
LITERT_TORCH_PYTHON = "3.11"
LITERT_TORCH_TIMEOUT_S = 3600
COMPARE_IMAGES = 100   # the first images of the representative set (the eval-preprocessed samples)


def litert_torch_worker(folder: Path) -> int:
    """Runs in litert-torch's tool venv: ``model.pt`` -> FP32 and PT2E INT8 .tflite; ``worker.json`` says how.

    Each stage is recorded (seconds, or the error and its traceback) and the JSON rewritten after it,
    so a crash in the INT8 stage still leaves the FP32 model and its numbers.
    """
    import platform
    import traceback
    from importlib import metadata

    import torch

    torch.set_num_threads(1)
    out: dict[str, object] = {"python": platform.python_version()}
    out["versions"] = {d: metadata.version(d) for d in ("litert-torch", "torch", "torchao", "ai-edge-litert",
                                                         "ai-edge-quantizer", "litert-converter")}
    report = folder / "worker.json"

    def save() -> None:
        report.write_text(json.dumps(out, indent=2))

    def stage(name: str, fn) -> bool:
        t0 = time.perf_counter()
        try:
            out[name] = {"ok": True, **fn(), "seconds": round(time.perf_counter() - t0, 2)}
        except Exception as exc:  # report it: the caller goes on with what it has
            out[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000],
                         "traceback": traceback.format_exc()[-4000:], "seconds": round(time.perf_counter() - t0, 2)}
        save()
        return bool(out[name]["ok"])

    t0 = time.perf_counter()
    import litert_torch

    from ghostnet_edge.models import load_model

    out["import_s"] = round(time.perf_counter() - t0, 2)
    model, spec, _ = load_model(folder / "model.pt")
    calib = np.load(folder / "calibration.npy")
    sample = (torch.from_numpy(np.ascontiguousarray(calib[:1])),)
    out["model"] = spec.name
    save()

    def fp32() -> dict[str, object]:
        litert_torch.convert(model.eval(), sample).export(str(folder / "fp32.tflite"))
        return {}

    def int8() -> dict[str, object]:
        # litert-torch 0.10's PT2E flow (its README and _convert/test/test_convert.py): export, annotate with
        # its PT2EQuantizer, calibrate, convert_pt2e(fold_quantize=False), then convert with the same quantizer.
        from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
        from litert_torch.quantize.quant_config import QuantConfig
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        times = {}
        t = time.perf_counter()
        quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True,
                                                                                 is_dynamic=False))
        prepared = prepare_pt2e(torch.export.export(model.eval(), sample).module(), quantizer)
        times["export_prepare_s"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        with torch.no_grad():
            for x in calib:
                prepared(torch.from_numpy(np.ascontiguousarray(x[None])))
        times["calibrate_s"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        converted = convert_pt2e(prepared, fold_quantize=False)
        times["convert_pt2e_s"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        edge = litert_torch.convert(converted, sample, quant_config=QuantConfig(pt2e_quantizer=quantizer))
        edge.export(str(folder / "int8.tflite"))
        times["litert_convert_s"] = round(time.perf_counter() - t, 2)
        return {**times, "calibration_images": len(calib)}

    ok = stage("fp32", fp32)
    ok = stage("int8", int8) and ok
    return 0 if ok else 1


def graph_stats(path: Path) -> dict[str, object]:
    """Op count, histogram, float ADDs, QUANTIZE/DEQUANTIZE inside the graph and the I/O types of a .tflite."""
    from ghostnet_edge.export.tflite.inspect import read_graph

    g = read_graph(path)
    floats = {"FLOAT32", "FLOAT16", "FLOAT64", "BFLOAT16"}
    ends = set(g.inputs) | set(g.outputs)
    names = [op.name for op in g.ops]

    def has_float(op) -> bool:
        return any(i >= 0 and g.tensors[i].dtype in floats for i in (*op.inputs, *op.outputs))

    # A residual ADD sums two activations; an ADD with a constant operand is e.g. hard-sigmoid's +3.
    adds = [op for op in g.ops if op.name == "ADD"]
    residual = [op for op in adds if all(i >= 0 and not g.tensors[i].constant for i in op.inputs)]
    qdq = [op for op in g.ops if op.name in ("QUANTIZE", "DEQUANTIZE")]
    inside = [op for op in qdq if not ends & {*op.inputs, *op.outputs}]
    return {"ops": len(names), "op_counts": dict(Counter(names).most_common()),
            "adds": len(adds), "float_adds": sum(map(has_float, adds)),
            "residual_adds": len(residual), "float_residual_adds": sum(map(has_float, residual)),
            "ops_with_float_tensors": sum(1 for op in g.ops if op.name not in ("QUANTIZE", "DEQUANTIZE")
                                          and has_float(op)),
            "quantize_dequantize": len(qdq), "quantize_dequantize_inside": len(inside),
            "quantize_dequantize_inside_by_op": dict(Counter(op.name for op in inside)),
            # QUANTIZE int8 -> int8 only rescales; the others enter or leave a float island
            "requantize_inside": sum(1 for op in inside if op.name == "QUANTIZE" and not has_float(op)),
            "io": f"{g.tensors[g.inputs[0]].dtype}/{g.tensors[g.outputs[0]].dtype}",
            "input_shape": list(g.tensors[g.inputs[0]].shape)}


def histogram_diff(theirs: dict[str, int], ours: dict[str, int]) -> dict[str, int]:
    """Theirs minus ours for every op whose count differs (positive: litert-torch has more)."""
    return {k: theirs.get(k, 0) - ours.get(k, 0) for k in sorted({*theirs, *ours})
            if theirs.get(k, 0) != ours.get(k, 0)}


def run_logits(path: Path, nchw: np.ndarray) -> np.ndarray:
    """Float logits of any batch-1 .tflite for an NCHW batch: NHWC or NCHW input (litert-torch keeps
    PyTorch's layout), float or quantized I/O; the artifact runner handles both."""
    from ghostnet_edge.runtime.backends import run_artifact

    return run_artifact(path, nchw).reshape(len(nchw), -1)


def litert_torch_route(model, rep: np.ndarray, d: Path, ours: dict[str, Path]) -> tuple[dict[str, object],
                                                                                       dict[str, Path]]:
    """Build/reuse the tool venv, convert there, compare here. litert-torch's failures land in the dict."""
    import subprocess

    import torch

    from ghostnet_edge.export.checks import sqnr_db, top1_agreement
    from ghostnet_edge.export.tflite.inspect import check_fully_integer, tflite_ops
    from ghostnet_edge.models import save_checkpoint
    from ghostnet_edge.runtime import venvs

    res: dict[str, object] = {"pins": list(LITERT_TORCH_PINS), "torch_pin": venvs.TORCH_CPU_PIN}
    python = venvs.find_python(LITERT_TORCH_PYTHON)
    if python is None:
        res["error"] = f"no Python {LITERT_TORCH_PYTHON} found (pyenv or PATH) for litert-torch's tool venv"
        return res, {}
    try:
        env = venvs.torch_tool_venv(python, LITERT_TORCH_PINS, label="litert-torch")
    except venvs.VenvError as exc:
        res["error"] = f"litert-torch's tool venv cannot be built: {exc.message}"
        return res, {}
    res.update(venv=str(env.path), venv_built_now=env.built, venv_s=round(env.seconds, 1),
               venv_first_build_s=env.manifest.get("build_seconds"))
    work = d / "litert_torch"
    work.mkdir()
    save_checkpoint(work / "model.pt", model, {"seed": None})
    np.save(work / "calibration.npy", rep)
    log = work / "worker.log"
    t0 = time.perf_counter()
    try:
        with open(log, "w") as fh:
            rc = subprocess.run([str(env.python), str(Path(__file__).resolve()), "--litert-torch-worker", str(work)],
                                stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=work,
                                timeout=LITERT_TORCH_TIMEOUT_S,
                                env=venvs.clean_env(PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2",
                                                    CUDA_VISIBLE_DEVICES="")).returncode
    except subprocess.TimeoutExpired:
        rc = f"timed out after {LITERT_TORCH_TIMEOUT_S} s"
    res["subprocess_s"] = round(time.perf_counter() - t0, 2)
    try:
        worker = json.loads((work / "worker.json").read_text())
    except (OSError, ValueError):
        worker = {}
    res.update({k: worker[k] for k in ("versions", "import_s") if k in worker})
    if rc != 0:
        res["worker_exit"] = rc
        res["worker_log_tail"] = log.read_text(errors="replace").strip().splitlines()[-15:]
    x = rep[:COMPARE_IMAGES]
    with torch.no_grad():
        ref = model.eval()(torch.from_numpy(x)).numpy()
    logits = {k: run_logits(p, x) for k, p in ours.items()}
    res["compare_images"] = len(x)
    res["ours"] = {"fp32_max_abs_diff_vs_pytorch": float(np.abs(logits["fp32"] - ref).max()),
                   "int8_sqnr_db_vs_pytorch": round(sqnr_db(ref, logits["int8"]), 2),
                   "int8_top1_agreement_vs_pytorch": top1_agreement(ref, logits["int8"])}
    stats_ours = {k: graph_stats(p) for k, p in ours.items()}
    res["ours"].update(fp32_ops=stats_ours["fp32"]["ops"], int8_ops=stats_ours["int8"]["ops"],
                       int8_float_adds=stats_ours["int8"]["float_adds"], int8_adds=stats_ours["int8"]["adds"],
                       int8_residual_adds=stats_ours["int8"]["residual_adds"],
                       int8_qdq_inside=stats_ours["int8"]["quantize_dequantize_inside"])
    made: dict[str, Path] = {}
    for kind in ("fp32", "int8"):
        stage = worker.get(kind)
        path = work / f"{kind}.tflite"
        if not isinstance(stage, dict) or not stage.get("ok") or not path.is_file():
            res[kind] = {"ok": False, "error": stage.get("error") if isinstance(stage, dict)
                         else "the worker did not get to this stage (see worker_log_tail)"}
            continue
        made[f"litert_torch_{kind}"] = path
        info: dict[str, object] = {k: v for k, v in stage.items() if k != "traceback"}
        try:
            st = graph_stats(path)
            info.update(st)
            info["op_diff_vs_ours"] = histogram_diff(st["op_counts"], stats_ours[kind]["op_counts"])
            seq, seq_ours = tflite_ops(path), tflite_ops(ours[kind])
            info["same_op_sequence_as_ours"] = seq == seq_ours
            # litert-torch keeps PyTorch's NCHW input and transposes it to NHWC first
            info["same_op_sequence_without_transposes"] = \
                [o for o in seq if o != "TRANSPOSE"] == [o for o in seq_ours if o != "TRANSPOSE"]
            strict = check_fully_integer(path)
            float_io = check_fully_integer(path, float_io=True)
            info["fully_integer"] = not strict.violations
            info["integer_inside_float_io"] = not float_io.violations
            info["violations"] = len(strict.violations)
            info["first_violations"] = strict.violations[:3]
            y = run_logits(path, x)
            info["max_abs_diff_vs_pytorch"] = float(np.abs(y - ref).max())
            if kind == "fp32":
                info["max_abs_diff_vs_ours"] = float(np.abs(y - logits["fp32"]).max())
            else:
                info["sqnr_db_vs_pytorch"] = round(sqnr_db(ref, y), 2)
                info["top1_agreement_vs_pytorch"] = top1_agreement(ref, y)
                info["sqnr_db_vs_ours_int8"] = round(sqnr_db(logits["int8"], y), 2)
        except Exception as exc:  # a file we cannot read or run: say so, keep the rest
            info["analysis_error"] = f"{type(exc).__name__}: {exc}"
        info["mb"] = round(path.stat().st_size / 2**20, 2)
        res[kind] = info
    return res, made


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--onnx2tf", action="store_true", help="also time the onnx2tf route (FP32)")
    ap.add_argument("--litert-torch", action="store_true",
                    help="also convert with litert-torch 0.10 (FP32 and PT2E INT8) in its tool venv and compare")
    ap.add_argument("--litert-torch-worker", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--keep", type=Path, default=None, help="copy the .tflite files into this folder")
    ap.add_argument("--latency-only", type=Path, default=None,
                    help="only time the *.tflite files of this folder (a --keep folder)")
    ap.add_argument("--shared", type=Path, default=Path(os.environ.get("GHOSTEDGE_SHARED", REPO.parent / "shared")))
    args = ap.parse_args()
    if args.litert_torch_worker is not None:
        return litert_torch_worker(args.litert_torch_worker)
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
        if args.litert_torch:
            lt, made = litert_torch_route(model, rep256, d, {"fp32": d / "fp32.tflite", "int8": d / "int8_256.tflite"})
            results["litert_torch"] = lt
            models.update(made)
            for k in ("error", "worker_exit"):
                if k in lt:
                    print(f"litert-torch: {k}: {lt[k]}", file=sys.stderr)
            for k in ("fp32", "int8"):
                if isinstance(lt.get(k), dict) and not lt[k].get("ok"):
                    print(f"litert-torch {k} failed: {lt[k].get('error')}", file=sys.stderr)
        lat = latency_ms(models, args.runs)
        results["latency_ms"] = {k: {s: round(x, 2) for s, x in v.items()} for k, v in lat.items()}
        med = {k: v["median"] for k, v in lat.items()}
        results.update(int8_speedup=round(med["fp32"] / med["int8"], 2), runs=args.runs,
                       probe_onnx2tf_fp32_ms=4.94, probe_onnx2tf_int8_ms=2.81,
                       load_average=os.getloadavg())
        if "litert_torch_int8" in med:
            results["litert_torch"]["int8_latency_vs_ours"] = round(med["litert_torch_int8"] / med["int8"], 2)
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
