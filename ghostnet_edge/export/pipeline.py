"""``ghostedge export``: checkpoint -> verified ONNX/TFLite, FP32/INT8, labels and manifest in one folder.

Order of work, and why:

1. Check everything cheap first (options, output folder, installed converters, checkpoint, input
   size, image sets) so a mistake fails in seconds, before any conversion.
2. Draw a held-out verification set, then a disjoint calibration set from the remaining images
   (``calib/sources``: a folder, any data set layout, or arrays in memory).
3. Walk the artifact table (``export/artifacts.py``): the FP32 ONNX model first (every other artifact
   starts from it), then one calibration pass over it whose ranges both INT8 models use, then each
   INT8 and TFLite artifact; each is checked against PyTorch on the held-out images. With 2+ threads
   the TFLite converter runs in a process of its own (``export/tflite/worker.py``), from the moment the
   FP32 ONNX file exists, beside the checks, the calibration and the ONNX quantization (see
   ``steps.start_tflite``); once its conversions are done it also makes the held-out runs of the FP32
   ONNX and TFLite models, which this process compares with PyTorch. The images are decoded into the
   tensor cache by another process meanwhile (``calib/prefetch.py``), from the moment they are drawn.
4. labels.txt, quant_report.json/.md and finally manifest.json (hashes of all the others).

Everything is written into a staging folder next to ``--out`` and swapped in only when every artifact
passed (:func:`~ghostnet_edge.utils.atomic.atomic_dir`): a failed check or a crash leaves no folder, and
``--force`` never leaves a mix of old and new files. The stages themselves are in ``export/steps.py``.
"""

from __future__ import annotations

import logging
import time
import warnings as warnings_mod

from ghostnet_edge.export import steps
from ghostnet_edge.export.artifacts import BY_KEY
from ghostnet_edge.export.config import ExportConfig, report_image_count
from ghostnet_edge.export.job import ExportJob, ExportReport, Timer, planned_artifacts
from ghostnet_edge.export.options import parse_formats

__all__ = ["CHECK_SPACE_UP_FRONT", "ExportConfig", "ExportReport", "export_artifacts", "parse_formats",
           "suppress_noise"]

log = logging.getLogger(__name__)

# Refuse an export before converting when the disk has less free space than estimate_export_bytes():
# seconds instead of minutes to the same error. (Tests switch it off to reach a disk that fills up mid-run.)
CHECK_SPACE_UP_FRONT = True


def export_artifacts(config: ExportConfig) -> ExportReport:
    """Run the whole export (see the module docstring); raise :class:`GhostEdgeError` on any problem."""
    from ghostnet_edge.calib.sources import draw_image_sets
    from ghostnet_edge.export import options
    from ghostnet_edge.export.model_source import estimate_export_bytes, load_for_export
    from ghostnet_edge.export.reference import torch_threads
    from ghostnet_edge.export.tflite import worker as tflite_worker
    from ghostnet_edge.runtime.backends import default_threads
    from ghostnet_edge.utils.atomic import atomic_dir, check_output_dir, out_of_space

    timer, t_start, warnings = Timer(), time.perf_counter(), []
    with timer.stage("checks"):
        cfg = options.validate_config(config)
        inputs = tuple(p for p in (cfg.checkpoint, cfg.calib, cfg.verify_data, cfg.val_data) if options.is_path(p))
        out = check_output_dir(cfg.out, cfg.force, inputs)
    threads = cfg.threads or default_threads()
    # The TFLite converter process is taken now so that it imports TensorFlow while this one loads the
    # model and the images; it is kept for the next export only when this one succeeded.
    worker = None
    if "tflite" in cfg.formats and threads >= 2 and options.installed("tensorflow"):
        worker = tflite_worker.acquire()
    ok, prefetch = False, None
    try:
        with timer.stage("load_model"), torch_threads(max(1, threads - 1) if worker is not None else threads):
            model, spec, meta, trained = load_for_export(cfg, warnings)
            spec = options.with_input_size(spec, options.parse_input_size(cfg.input_size))
            needed = estimate_export_bytes(model.eval(), cfg)
            check_output_dir(out, cfg.force, inputs, needed_bytes=needed if CHECK_SPACE_UP_FRONT else 0)
        with timer.stage("select_images"):  # before any conversion, so a bad image set fails fast
            calib_set, verify_set = draw_image_sets(cfg, warnings)
            if threads >= 2 and cfg.use_cache:  # decoded on another core while this one exports ONNX
                from ghostnet_edge.calib import prefetch as pf
                from ghostnet_edge.data import Preprocess

                prefetch = pf.start([s.files for s in (verify_set, calib_set) if getattr(s, "files", None)],
                                    Preprocess.from_spec(spec))
        with timer.stage("dependencies"):
            options.check_dependencies(cfg)
        with atomic_dir(out, force=cfg.force) as staging:
            job = ExportJob(cfg, staging, timer, warnings, model, spec, meta, trained, threads, worker,
                            calib_set=calib_set, verify_set=verify_set, prefetch=prefetch)
            try:
                report = _run(job)
            except Exception as exc:
                full = out_of_space(out, exc, needed)   # checked while the staged files still take their space
                if full is not None:
                    raise full from exc
                raise
        ok = True
    finally:
        if prefetch is not None:
            prefetch.stop()  # done long before, unless the export failed or was interrupted first
        if worker is not None:
            tflite_worker.release(worker, healthy=ok)  # a failed or interrupted job: the child is stopped
    report.out_dir, report.cpu_timings = out, dict(timer.cpu)
    report.wall_seconds = time.perf_counter() - t_start
    for a in report.artifacts:
        a.path = out / a.name
    return report


def _run(job: ExportJob) -> ExportReport:
    """Everything that writes, into ``job.staging``: the artifact table, row by row."""
    job.work.mkdir()
    steps.preprocessing_and_labels(job)
    steps.deployed_form(job)
    # The FP32 ONNX model is made (and checked) whatever the formats: every other artifact starts from it,
    # the TFLite converter at once, beside the image decoding and the checks.
    source = BY_KEY["onnx"]
    steps.CONVERTERS[source.convert](job, source)
    steps.start_tflite(job)
    steps.prepare_images(job)
    steps.send_held_out(job)
    steps.pytorch_reference(job)
    job.n_report = report_image_count(job.cfg.report_images, tuple(job.spec.input_size[-2:]), len(job.xv))
    if not steps.checked_by_converter(job, source):
        steps.check_artifact(job, source)
    steps.calibrate(job)
    steps.hand_over(job)
    planned = planned_artifacts(job.cfg)
    for art in planned:
        if art is not source:
            steps.CONVERTERS[art.convert](job, art)
            steps.check_artifact(job, art)
    if steps.checked_by_converter(job, source):  # its logits came back with the TFLite conversion
        steps.check_artifact(job, source)
        job.artifacts.sort(key=lambda a: [p.file for p in planned].index(a.name))
    steps.tflite_budget(job)
    with job.timer.stage("manifest"):
        manifest = steps.write_reports(job)
    files = sorted(p.relative_to(job.staging).as_posix() for p in job.staging.rglob("*") if p.is_file())
    return ExportReport(job.staging, job.artifacts, job.timer.timings, job.warnings, manifest, files)


def suppress_noise() -> None:
    """Quiet the converters' progress prints and deprecation warnings the user cannot act on."""
    warnings_mod.filterwarnings("ignore", category=DeprecationWarning)
    for name in ("onnxruntime", "root", "nncf", "tensorflow", "absl"):
        logging.getLogger(name).setLevel(logging.ERROR)
