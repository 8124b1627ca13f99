"""The stages of one export, each a function of the :class:`~ghostnet_edge.export.job.ExportJob`.

In the order ``export/pipeline.py`` runs them:

* :func:`preprocessing_and_labels` and :func:`deployed_form`: what every artifact carries, and the
  network to convert (training-time branches folded);
* ``CONVERTERS[artifact.convert]``: make one artifact of the table (``export/artifacts.py``), the FP32
  ONNX model first; :func:`start_tflite` hands it to the TFLite converter process at once;
* :func:`prepare_images`: preprocess the held-out, calibration and validation images once (arrays);
* :func:`pytorch_reference`: PyTorch's logits on the held-out images, the reference of every check;
* :func:`calibrate`: the one calibration pass whose ranges both INT8 models use;
* :func:`hand_over`: what the converter process waits for (ranges, images);
* :func:`check_artifact`: run it (the one artifact runner, ``runtime/backends``), check it against
  PyTorch (``export/checks``) and, for INT8, make its per-layer report;
* :func:`tflite_budget` and :func:`write_reports`: ``--max-drop``, labels, reports and the manifest.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from ghostnet_edge.errors import DataError, ExportError
from ghostnet_edge.export.artifacts import BY_KEY, LABELS, ONNX_FP32, TFLITE_INT8, Artifact
from ghostnet_edge.export.job import ArtifactReport, ExportJob

# ---------------------------------------------------------------------------------------------- inputs


def preprocessing_and_labels(job: ExportJob) -> None:
    """The preprocessing and the class names every artifact carries (no image is decoded yet)."""
    from ghostnet_edge.data import Preprocess
    from ghostnet_edge.export.labels import find_class_index, resolve_labels

    cfg = job.cfg
    job.preprocess = Preprocess.from_spec(job.spec)
    class_index = find_class_index(*(p for p in (cfg.calib, cfg.verify_data, cfg.val_data)
                                     if isinstance(p, str | Path)))
    job.labels, job.wnids, job.labels_source = resolve_labels(job.meta, job.spec.num_classes, class_index)
    if job.labels_source.startswith("none"):
        job.warnings.append("the checkpoint has no class names: labels.txt holds class_<index> placeholders")


def deployed_form(job: ExportJob) -> None:
    """Fold training-time branches before conversion; :func:`pytorch_reference` checks the fold."""
    from ghostnet_edge.export.model_source import deployed_form as fold

    job.reference_model = job.model
    job.model = fold(job.model)


def prepare_images(job: ExportJob) -> None:
    """Preprocess every image set once into arrays; labels of the held-out and validation images."""
    from ghostnet_edge.calib.sources import load_tensors
    from ghostnet_edge.export.labels import label_indices

    cfg = job.cfg
    with job.timer.stage("preprocess"):
        if job.prefetch is not None:  # then each set is a cache hit, or decoded here as before
            job.prefetch.wait()
        verify_batch, calib_batch = decode_all([job.verify_set, job.calib_set], job.preprocess, cfg.use_cache)
        job.xv, job.xv_file, job.calib_batch = verify_batch.array, verify_batch.cache_file, calib_batch
        job.xc = calib_batch.array if calib_batch is not None else None
        job.yv = label_indices(job.verify_set.labels, job.labels, job.wnids)
        if cfg.val_data is not None:
            from ghostnet_edge.calib.sources import image_source

            val_set = image_source(cfg.val_data, "validation")
            yval = label_indices(val_set.labels, job.labels, job.wnids)
            if yval is None:
                from ghostnet_edge.export.config import describe_value

                raise DataError(f"the images in {describe_value(cfg.val_data)} are not all labelled with the "
                                "model's classes",
                                "use one sub-folder per class, named like the checkpoint's class names "
                                f"(first ones: {', '.join(job.labels[:5])})")
            job.val = (load_tensors(val_set, job.preprocess, cfg.use_cache).array, yval)


def decode_all(image_sets: list[Any], pre: Any, use_cache: bool) -> list[Any]:
    """Every set as a ``TensorBatch`` (None stays None); unreadable images of all sets in one error."""
    from ghostnet_edge.calib.sources import load_tensors

    batches: list[Any] = []
    problems: list[str] = []
    for image_set in image_sets:
        if image_set is None:
            batches.append(None)
            continue
        try:
            batches.append(load_tensors(image_set, pre, use_cache))
        except DataError as exc:
            if "cannot be read" not in exc.message:
                raise
            problems.append(exc.message)
            batches.append(None)
    if problems:
        raise DataError(" and ".join(problems), "remove or replace these files (or convert them to JPEG/PNG) "
                        "and run again")
    return batches


def pytorch_reference(job: ExportJob) -> None:
    """PyTorch's logits on the held-out images (of the network as loaded); the deployed (folded) form
    is checked against them."""
    from ghostnet_edge.export.model_source import check_fold
    from ghostnet_edge.export.reference import run_torch, torch_threads

    with job.timer.stage("pytorch_reference"), torch_threads(job.own_threads):
        job.ref = run_torch(job.reference_model, job.xv)
        if job.model is not job.reference_model:
            job.warnings.append(check_fold(job.model, job.xv, job.ref, job.cfg.tolerance))


def onnx_metadata(job: ExportJob) -> dict[str, str]:
    import json

    return {"ghostedge.labels": json.dumps(job.labels),
            "ghostedge.preprocessing": json.dumps(job.prep_desc, sort_keys=True),
            "ghostedge.model": job.spec.name, "ghostedge.input_layout": "NCHW"}


# ---------------------------------------------------------------------------------------------- converters


def export_onnx(job: ExportJob, art: Artifact) -> None:
    """FP32 ONNX from PyTorch: always made, the TFLite route and the INT8 models start from it."""
    from ghostnet_edge.export.onnx.config import OnnxExportConfig
    from ghostnet_edge.export.onnx.convert import export_onnx as to_onnx
    from ghostnet_edge.export.reference import torch_threads

    with job.timer.stage("onnx_export"), torch_threads(job.own_threads):
        to_onnx(job.model, tuple(job.spec.input_size), job.path(art),
                OnnxExportConfig(opset=job.cfg.opset, simplify=job.cfg.simplify), metadata=onnx_metadata(job))


def start_tflite(job: ExportJob) -> None:
    """With 2+ threads, hand the FP32 ONNX model to the converter process the moment it is written: it
    translates and converts FP32 on one core while this process decodes the images, runs PyTorch's
    reference, checks the ONNX model and calibrates on the others (``job.own_threads``); then it
    quantizes TFLite INT8 with the ranges and images :func:`calibrate` sends, and makes that model's
    per-layer report, while this process quantizes and checks ONNX INT8. Each side only reads the ONNX
    file and writes its own files, so the results do not depend on the overlap, and every artifact,
    the TFLite ones included, is still checked against PyTorch before the export succeeds; a failed
    check stops the converter. Its work (TensorFlow's import, translation, conversion, metadata) is the
    longer of the two, so it starts as early as its input exists."""
    if not job.parallel:
        return
    cfg = job.cfg
    job.region = (time.process_time(), time.perf_counter())
    t_int8 = job.staging / TFLITE_INT8 if cfg.int8 else None
    job.worker.submit(job.path(BY_KEY["onnx"]), job.path(BY_KEY["tflite"]), t_int8, cfg.io_dtype,
                      cfg.per_channel, job.labels, {**job.prep_desc, "layout": "NHWC"}, hard_swish_form(cfg),
                      cfg.use_cache, verify={key: (job.path(BY_KEY[key]), BY_KEY[key].runtime)
                                             for key in CHECKED_BY_CONVERTER if key != "tflite-int8" or cfg.int8})


# The artifacts whose held-out run the converter process makes once its conversions are done: the parent is
# then still quantizing and checking ONNX INT8, and the converter's core would idle. The FP32 ONNX model's
# check therefore comes after the TFLite conversion (a failure still stops the export before any file is
# kept); the ONNX INT8 model is checked here, since its file is made here last.
CHECKED_BY_CONVERTER = ("onnx", "tflite", "tflite-int8")


def checked_by_converter(job: ExportJob, art: Artifact) -> bool:
    """Whether ``art``'s held-out logits come from the converter process in this export."""
    return job.parallel and art.key in CHECKED_BY_CONVERTER


def calibrate(job: ExportJob) -> None:
    """One calibration pass over the verified FP32 ONNX: the activation ranges of both INT8 models (sent
    on, with the calibration and report images, to the converter process when it is converting). The
    pass takes every thread once the converter has its FP32 model and waits for the ranges."""
    if not job.cfg.int8:
        return
    from ghostnet_edge.calib.ranges import collect_ranges

    try:
        with job.timer.stage("calibration_ranges", cpu=not job.converting):
            job.ranges = collect_ranges(job.path(BY_KEY["onnx"]), job.xc, job.cfg.calib_method,
                                        lambda: job.own_threads, use_cache=job.cfg.use_cache)
    except BaseException as exc:
        if job.converting:  # the converter waits for ranges: tell it why none come
            job.worker.hand_over(None, error=str(exc) or type(exc).__name__)
        raise


def _as_file(job: ExportJob, arr: np.ndarray, cached: Path | None, name: str) -> Path:
    """``arr`` as an .npy file for the converter process: its cache entry, else saved in the work folder."""
    if cached is not None and cached.is_file():
        return cached
    path = job.work / name
    if not path.is_file():
        np.save(path, arr)
    return path


def send_held_out(job: ExportJob) -> None:
    """Send the converter process the held-out images as soon as they are decoded: it runs the FP32 models
    on them while it would otherwise wait for the calibration (``export/tflite/worker.py``)."""
    if job.converting:
        job.worker.send_held_out(_as_file(job, job.xv, job.xv_file, "verify_images.npy"))


def hand_over(job: ExportJob) -> None:
    """Send the converter process what it waits for: the ranges (INT8), the calibration tensors and the
    held-out images, as files (cache entries are passed as they are), and how many of the held-out images
    the INT8 per-layer report runs on."""
    if not job.converting:
        return
    calib_file, report_count = None, 0
    if job.ranges is not None:
        calib_file = _as_file(job, job.xc, job.calib_batch.cache_file, "calib.npy")
        if BY_KEY["tflite-int8"].layer_report:
            report_count = job.n_report  # layer_report() uses the same first n_report held-out images
    job.worker.hand_over(job.ranges.ranges if job.ranges is not None else None, calib_file=calib_file,
                         calib_sha256=job.ranges.calib_sha256 if job.ranges is not None else None,
                         report_count=report_count,
                         verify_images=_as_file(job, job.xv, job.xv_file, "verify_images.npy"))


def quantize_onnx(job: ExportJob, art: Artifact) -> None:
    """INT8 QDQ ONNX: onnxruntime with the shared ranges, or NNCF with accuracy control (--max-drop)."""
    from ghostnet_edge.export.onnx.quantize import activation_choice_dict, choose_activation_type

    cfg = job.cfg
    ort_threads = job.own_threads
    choice = choose_activation_type(cfg.act_type)
    onnx_fp32, q_path = job.path(BY_KEY["onnx"]), job.path(art)
    with job.timer.stage("onnx_quantize", cpu=not job.converting):
        if cfg.max_drop is not None and job.val is not None:
            from ghostnet_edge.export.onnx.nncf import quantize_with_accuracy_control

            res = quantize_with_accuracy_control(onnx_fp32, q_path, job.xc, job.val[0], job.val[1], cfg.max_drop,
                                                 choice, cfg.per_channel, metadata=onnx_metadata(job),
                                                 threads=ort_threads)
            choice = res.activation
            quantization: dict[str, Any] = {"tool": "nncf.quantize_with_accuracy_control", "max_drop": cfg.max_drop,
                                            "float_nodes": res.float_nodes}
        else:
            from ghostnet_edge.export.onnx.quantize import quantize_onnx as ort_quantize

            ort_quantize(onnx_fp32, q_path, job.xc, cfg.calib_method, choice, cfg.per_channel,
                         metadata=onnx_metadata(job), work_dir=job.work, threads=ort_threads, ranges=job.ranges)
            quantization = {"tool": "onnxruntime.quantization.quantize_static", "format": "QDQ"}
        if job.val is not None:
            quantization["validation"] = _val_accuracy(onnx_fp32, q_path, job.val, ort_threads)
    quantization.update({"activation_type": choice.dtype, "activation_reason": choice.reason,
                         "reduce_range": choice.reduce_range, "target": choice.target,
                         "weights": "int8 symmetric " + ("per-channel" if cfg.per_channel else "per-tensor"),
                         "calibration_method": cfg.calib_method, "activation": activation_choice_dict(choice)})
    job.quantization = quantization


def _val_accuracy(fp32: Path, q: Path, val: tuple[np.ndarray, np.ndarray], threads: int) -> dict[str, Any]:
    """Top-1 of FP32 and INT8 ONNX on the labelled validation images."""
    from ghostnet_edge.export.checks import accuracy
    from ghostnet_edge.runtime.backends import run_artifact

    x, y = val
    acc_f = accuracy(run_artifact(fp32, x, threads, "onnxruntime"), y)
    acc_q = accuracy(run_artifact(q, x, threads, "onnxruntime"), y)
    return {"num_images": int(len(y)), "accuracy_fp32": acc_f, "accuracy_int8": acc_q, "accuracy_delta": acc_q - acc_f}


OVERLAP = "stages beside the converter (this process)"


def convert_tflite(job: ExportJob, art: Artifact) -> None:
    """Both TFLite files come from one conversion: the converter process's result, or (one thread) a
    conversion here. The INT8 row finds its file already made."""
    if job.tflite_result is not None:
        return
    from ghostnet_edge.export.tflite.convert import TfliteResult
    from ghostnet_edge.export.tflite.metadata import check_metadata_agrees

    cfg, timer = job.cfg, job.timer
    t_fp32 = job.path(BY_KEY["tflite"])
    t_int8 = job.staging / TFLITE_INT8 if cfg.int8 else None
    if job.parallel:
        answer = job.worker.result()
        job.tflite_layers = answer.pop("int8_layers", None)
        if job.tflite_layers is not None:
            timer.timings["tflite_int8_layer_report (converter process)"] = answer.pop("int8_layers_seconds")
        # The converter's idle time inside its job: waiting for its own TensorFlow import to finish, and
        # for this process's calibration ranges; what is left of its wall time is work.
        timer.timings["tflite_convert.waiting_for_import"] = answer.pop("import_wait_seconds", 0.0)
        timer.timings["tflite_convert.waiting_for_ranges"] = answer.pop("handover_wait_seconds", 0.0)
        job.verify_logits = answer.pop("verify_logits", None) or {}
        early = answer.pop("verify_early", None) or {}
        if job.verify_logits:
            if early.get("models"):  # made while it waited for the ranges (see worker._Handover)
                timer.timings[f"held-out runs before the ranges: {', '.join(early['models'])} (converter process)"] = \
                    early["seconds"]
            timer.timings["held-out runs (converter process)"] = answer.pop("verify_seconds")
        res = TfliteResult.from_dict(answer)
        cpu0, t0 = job.region
        timer.timings["tflite_convert (own process)"] = time.perf_counter() - t0
        # This process's CPU while the converter ran (its stages there are timed by wall only); the
        # converter's own CPU is not counted (a running child's CPU time is not visible to its parent).
        timer.cpu[OVERLAP] = time.process_time() - cpu0
        timer.timings[OVERLAP] = time.perf_counter() - t0
    else:
        with timer.stage("tflite_convert"):
            given = job.ranges.ranges if job.ranges is not None else None
            res = convert_in_process(job.path(BY_KEY["onnx"]), t_fp32, t_int8, job.xc, cfg, job.labels,
                                     {**job.prep_desc, "layout": "NHWC"}, lambda: given)
    job.tflite_result = res
    # The metadata an app reads (input size, normalisation, labels) must describe these very tensors.
    check_metadata_agrees(t_fp32, labels=job.labels, preprocessing=job.prep_desc, int8=False)
    if t_int8 is not None:
        check_metadata_agrees(t_int8, labels=job.labels, preprocessing=job.prep_desc, int8=cfg.io_dtype != "float32")
    # The converter's own split (translation, FP32, INT8), for the benchmark.
    timer.timings["tflite_convert.translate"] = res.translate_seconds
    timer.timings["tflite_convert.fp32"] = res.fp32_seconds or 0.0
    timer.timings["tflite_convert.int8"] = res.int8_seconds or 0.0


def convert_in_process(onnx_fp32: Path, t_fp32: Path | None, t_int8: Path | None, xc: np.ndarray | None,
                       cfg: Any, labels: list[str], prep: dict[str, Any], ranges: Any = None) -> Any:
    """The TFLite converter in this process (FP32 and, with ``t_int8``, full-integer INT8).

    ``ranges`` is a callable giving the shared calibration ranges, called only when INT8 needs them.
    """
    from ghostnet_edge.export.tflite.convert import convert_onnx_to_tflite
    from ghostnet_edge.utils.native_stderr import quiet_native_stderr

    # TensorFlow logs its first device look-up ("failed call to cuInit" on a machine without a GPU) and
    # the converter's banners straight to fd 2 while it traces and converts; --verbose shows them.
    with quiet_native_stderr(enabled=not os.environ.get("GHOSTEDGE_VERBOSE")):
        return convert_onnx_to_tflite(onnx_fp32, t_fp32, t_int8, representative=xc if t_int8 is not None else None,
                                      io_dtype=cfg.io_dtype, per_channel=cfg.per_channel, labels=labels,
                                      preprocessing=prep, ranges=ranges if t_int8 is not None else None,
                                      hard_swish=hard_swish_form(cfg), use_cache=cfg.use_cache)


def hard_swish_form(cfg: Any) -> str:
    """The translator's hard-swish form for the CPU the .tflite is meant for (``--tflite-target``)."""
    from ghostnet_edge.export.tflite.translate import TARGET_HARD_SWISH

    return TARGET_HARD_SWISH[cfg.tflite_target]


CONVERTERS = {"onnx_export": export_onnx, "onnx_quantize": quantize_onnx, "tflite_convert": convert_tflite}


# ---------------------------------------------------------------------------------------------- checks


def run(job: ExportJob, art: Artifact, x: np.ndarray, path: Path | None = None) -> np.ndarray:
    """Logits of one artifact through the one artifact runner (LiteRT's delegate banner quieted)."""
    from ghostnet_edge.runtime.backends import run_artifact
    from ghostnet_edge.utils.native_stderr import quiet_native_stderr

    # LiteRT announces "Created TensorFlow Lite XNNPACK delegate for CPU." on fd 2 once per process.
    with quiet_native_stderr(enabled=art.format == "tflite" and not os.environ.get("GHOSTEDGE_VERBOSE")):
        return run_artifact(path or job.path(art), x, job.own_threads, art.runtime)


def fp32_limit(job: ExportJob, out: np.ndarray) -> float:
    """The FP32 tolerance for ``out``; PyTorch's own float32 error is measured (once) only when an
    artifact misses the plain tolerance, so well-conditioned networks never pay for it."""
    from ghostnet_edge.export.checks import fp32_allowed, max_abs_diff
    from ghostnet_edge.export.reference import torch_float_error, torch_threads

    tol = job.cfg.tolerance
    if job.float_error is None and max_abs_diff(job.ref, out) > fp32_allowed(job.ref, tol):
        with job.timer.stage("pytorch_float64_reference"), torch_threads(job.threads):
            job.float_error = torch_float_error(job.reference_model, job.xv, job.ref)
    return fp32_allowed(job.ref, tol, job.float_error)


def fp32_note(job: ExportJob) -> str:
    from ghostnet_edge.export.checks import FLOAT_ERROR_FACTOR, fp32_allowed

    tol, err = job.cfg.tolerance, job.float_error
    note = "tolerance is relative above |logit| 1: tolerance * max(1, max|torch logits|)"
    if err is not None and fp32_allowed(job.ref, tol, err) > fp32_allowed(job.ref, tol):
        note += (f"; raised to {FLOAT_ERROR_FACTOR:g} x PyTorch's own float32 error on these images "
                 f"(max |float32 - float64 logits| = {err:.3g}): the network is ill-conditioned "
                 "(untrained weights?), so no float32 runtime can match PyTorch more closely")
    return note


def check_artifact(job: ExportJob, art: Artifact) -> None:
    """Run ``art`` on the held-out images, check it against PyTorch, report its layers; keep it or stop."""
    from ghostnet_edge.export import checks

    cpu = not job.converting  # CPU time is per process: not while the converter process overlaps
    with job.timer.stage(f"{art.stage}_verify", cpu=cpu):
        out = job.verify_logits.pop(art.key, None)
        if out is None:
            out = run(job, art, job.xv)
        if art.check == "max-diff":
            check = checks.check_fp32(art.file, job.ref, out, fp32_limit(job, out), job.yv)
            check.notes.append(fp32_note(job))
        else:
            check = checks.check_int8(art.file, job.ref, out, job.cfg.min_agreement, job.yv, enforce=job.trained)
    if art.layer_report:
        with job.timer.stage(f"{art.stage}_layer_report", cpu=cpu):
            job.sections.append(layer_report(job, art, check.to_dict()))
    if art.format not in job.cfg.formats:  # the intermediate FP32 ONNX model
        if not check.passed:
            raise ExportError(f"the intermediate ONNX model failed its check: {check.reason}",
                              fail_hint(art.precision, art.format))
        return
    if not check.passed:
        section = next((sec for sec in job.sections if sec.get("artifact") == art.file), None)
        raise ExportError(f"{art.file} failed its check: {check.reason}; nothing was written"
                          + worst_layers_text(section), fail_hint(art.precision, art.format))
    path = job.path(art)
    job.artifacts.append(ArtifactReport(art.file, art.format, art.precision, path, path.stat().st_size,
                                        check.to_dict()))


def layer_report(job: ExportJob, art: Artifact, check: dict[str, Any]) -> dict[str, Any]:
    """The INT8 model's per-layer SQNR section, on the first ``n_report`` held-out images."""
    from ghostnet_edge.export import report as rp

    x = job.xv[:job.n_report]
    fp32 = job.path(BY_KEY[art.format])
    if art.format == "onnx":
        from ghostnet_edge.export.onnx.layers import per_layer_sqnr

        rows = rp.onnx_layer_rows(per_layer_sqnr(fp32, job.path(art), x, threads=job.own_threads))
    elif job.tflite_layers is not None:  # made by the converter process, on the same images
        from ghostnet_edge.export.tflite.layers import LayerSqnr

        rows = rp.tflite_layer_rows([LayerSqnr(d["name"], d["op"], tuple(d["shape"]), d["sqnr_db"], tuple(d["inputs"]))
                                     for d in job.tflite_layers])
    else:
        from ghostnet_edge.export.tflite.layers import per_layer_sqnr

        rows = rp.tflite_layer_rows(per_layer_sqnr(job.path(art), fp32, x, num_threads=job.own_threads))
    return rp.artifact_section(art.file, rows, check, job.n_report)


def fail_hint(precision: str, fmt: str) -> str:
    if precision == "fp32":
        return ("the converted graph computes something different from PyTorch: check the model exports "
                "cleanly (custom ops?) or raise --tolerance if the difference is rounding")
    return ("calibrate on more and more representative images (--num-calib, --calib-method percentile|entropy), "
            "try per-channel weights, or lower --min-agreement")


def worst_layers_text(section: dict[str, Any] | None, k: int = 3) -> str:
    """`` (layers losing the most: a -12.1 dB, ...)`` from a report section, since no report is written."""
    from ghostnet_edge.export import report as rp

    rows = [r for r in rp.worst((section or {}).get("layers") or [], k) if r.get("drop_db") is not None]
    if not rows:
        return ""
    return " (layers losing the most signal: " + ", ".join(
        f"{r['tensor']} {r['sqnr_db']} dB, -{r['drop_db']} dB" for r in rows) + ")"


# ---------------------------------------------------------------------------------------------- the end


def tflite_budget(job: ExportJob) -> None:
    """``--max-drop`` for the TFLite INT8 model: measure it, and when it misses build the 16x8 remedy
    (checked against PyTorch like every artifact) and say so in one warning."""
    cfg = job.cfg
    if job.tflite_result is None or not cfg.int8 or cfg.max_drop is None or job.val is None:
        return
    from ghostnet_edge.export import checks
    from ghostnet_edge.export.tflite import budget as bd

    section = next(sec for sec in job.sections if sec.get("artifact") == TFLITE_INT8)
    worst = [r["tensor"].split(";")[0] for r in section.get("worst_layers", [])[:3]]
    with job.timer.stage("tflite_int8_budget"):
        result = bd.check_budget(onnx_fp32=job.path(BY_KEY["onnx"]), t_fp32=job.path(BY_KEY["tflite"]),
                                 t_int8=job.path(BY_KEY["tflite-int8"]), staging=job.staging, val=job.val,
                                 max_drop=cfg.max_drop, representative=job.xc, worst_layers=worst, labels=job.labels,
                                 preprocessing={**job.prep_desc, "layout": "NHWC"}, threads=job.threads,
                                 hard_swish=hard_swish_form(cfg))
        remedy = result.remedy
        if remedy is not None and "error" not in remedy:
            path = job.staging / bd.REMEDY_FILE
            out = run(job, BY_KEY["tflite-int8"], job.xv, path)
            check = checks.check_int8(bd.REMEDY_FILE, job.ref, out, cfg.min_agreement, job.yv, enforce=False).to_dict()
            check.update({"label": bd.REMEDY_LABEL, "val_top1": remedy["top1"], "val_drop": remedy["drop"]})
            job.artifacts.append(ArtifactReport(bd.REMEDY_FILE, "tflite", "int16x8", path, path.stat().st_size, check))
        if not result.met:
            job.warnings.append(bd.message(result, TFLITE_INT8))
    job.tflite_budget = result.to_dict()


def write_reports(job: ExportJob) -> dict[str, Any]:
    """labels.txt, quant_report.json/.md and the manifest (hashes of all the others), into staging."""
    from ghostnet_edge.export import manifest as mf
    from ghostnet_edge.export import report as rp
    from ghostnet_edge.utils.atomic import atomic_write_json, atomic_write_text
    from ghostnet_edge.utils.versions import package_versions

    cfg, staging = job.cfg, job.staging
    shutil.rmtree(job.work, ignore_errors=True)
    atomic_write_text(staging / LABELS, "\n".join(job.labels) + "\n")
    calibration = None
    if job.calib_set is not None:
        calibration = {**job.calib_set.summary(), "method": cfg.calib_method, "seed": cfg.seed,
                       "root": str(job.calib_set.root)}
        if job.ranges is not None:
            res = job.tflite_result
            calibration["ranges"] = {
                "collected_by": f"onnxruntime {cfg.calib_method} calibrator over {ONNX_FP32}, one pass",
                "tensors": len(job.ranges.ranges), "cache_key": job.ranges.key, "cache_hit": job.ranges.cache_hit,
                "onnx_int8": "these ranges" if "onnx" in cfg.formats and cfg.max_drop is None else None,
                "tflite_int8": res.ranges_source if res is not None else None}
    if job.sections:
        qr = rp.build_quant_report(job.sections, calibration or {})
        atomic_write_json(staging / "quant_report.json", qr)
        atomic_write_text(staging / "quant_report.md", rp.render_markdown(qr))
    verification = {**job.verify_set.summary(), "seed": cfg.seed + 1, "labelled": job.yv is not None,
                    "tflite_int8_budget": job.tflite_budget,
                    "disjoint_from_calibration": True,
                    "fp32_tolerance": cfg.tolerance, "min_int8_agreement": cfg.min_agreement,
                    "int8_agreement_enforced": job.trained}
    tflite_io = mf.tflite_io_entry(job.tflite_result) if job.tflite_result is not None and cfg.int8 else None
    manifest = mf.build_manifest(
        root=staging,
        source=mf.source_entry(Path(cfg.checkpoint) if cfg.checkpoint else None, job.spec.name, job.trained,
                               cfg.seed, job.meta),
        preprocessing={**job.prep_desc, "onnx_layout": "NCHW", "tflite_layout": "NHWC",
                       "labels_source": job.labels_source},
        labels=job.labels, calibration=calibration, verification=verification,
        artifacts=[{"file": a.name, "format": a.format, "precision": a.precision, "bytes": a.bytes,
                    "verification": a.check} for a in job.artifacts],
        quantization=job.quantization, tflite_io=tflite_io, config=cfg.to_dict(), versions=package_versions(),
        warnings=job.warnings, timings=job.timer.timings)
    atomic_write_json(staging / mf.MANIFEST_NAME, manifest)
    return manifest
