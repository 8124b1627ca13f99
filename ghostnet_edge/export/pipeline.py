"""``ghostedge export``: checkpoint -> verified ONNX/TFLite, FP32/INT8, labels and manifest in one folder.

Order of work, and why:

1. Check everything cheap first (options, output folder, installed converters, checkpoint, input
   size, image folders) so a mistake fails in seconds, before any conversion.
2. Draw a held-out verification set, then a disjoint calibration set from the remaining images.
3. FP32 ONNX -> verify; one calibration pass over it (``calib.ranges``) gives the activation ranges
   of both INT8 models; INT8 ONNX (onnxruntime QDQ, or NNCF with accuracy control) -> verify, and
   TFLite FP32/INT8 from that same verified ONNX -> verify. With 2+ threads the TFLite converter runs
   in a process of its own (``export/tflite/worker.py``) beside the calibration and the ONNX
   quantization. Every check runs on the held-out images.
4. labels.txt, quant_report.json/.md and finally manifest.json (hashes of all the others).

Everything is written into a staging folder next to ``--out`` and swapped in only when every artifact
passed (:func:`~ghostnet_edge.utils.atomic.atomic_dir`): a failed check or a crash leaves no folder, and
``--force`` never leaves a mix of old and new files.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
import warnings as warnings_mod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ghostnet_edge.errors import (
    DataError,
    ExportError,
    GhostEdgeError,
    MissingDependencyError,
    ModelError,
    require,
)
from ghostnet_edge.export.artifacts import LABELS, ONNX_FP32, ONNX_INT8, TFLITE_FP32, TFLITE_INT8
from ghostnet_edge.export.config import (  # noqa: F401 (ExportConfig and the defaults are part of this module's API)
    DEFAULT_NUM_CALIB,
    DEFAULT_NUM_VERIFY,
    DEFAULT_REPORT_IMAGES,
    FORMATS,
    ExportConfig,
    report_image_count,
)

log = logging.getLogger(__name__)

CLASS_INDEX_FILE = "imagenet_class_index.json"


@dataclass
class ArtifactReport:
    name: str                 # file name in the export folder
    format: str               # onnx | tflite
    precision: str            # fp32 | int8
    path: Path
    bytes: int
    check: dict[str, Any]

    def row(self) -> dict[str, Any]:
        c = self.check
        name = f"{self.name} (not fully integer)" if c.get("label", "").startswith("not fully integer") else self.name
        return {"artifact": name, "bytes": self.bytes, "max_abs_diff": c.get("max_abs_diff"),
                "top1_agreement": c.get("top1_agreement"), "accuracy_delta": c.get("accuracy_delta"),
                "path": str(self.path)}


@dataclass
class ExportReport:
    out_dir: Path
    artifacts: list[ArtifactReport]
    timings: dict[str, float]
    warnings: list[str]
    manifest: dict[str, Any]
    files: list[str] = field(default_factory=list)
    cpu_timings: dict[str, float] = field(default_factory=dict)

    wall_seconds: float = 0.0

    @property
    def total_seconds(self) -> float:
        """Wall time of the whole export (stages may overlap, so this is not their sum)."""
        return self.wall_seconds


# --------------------------------------------------------------------------------------------------
# Small pure helpers (tests call these directly)
# --------------------------------------------------------------------------------------------------


def parse_formats(formats: str | Sequence[str]) -> tuple[str, ...]:
    """``"onnx,tflite"`` -> ("onnx", "tflite"), in canonical order; unknown names are an error."""
    items = [f.strip().lower() for f in (formats.split(",") if isinstance(formats, str) else formats)]
    items = [f for f in items if f]
    unknown = sorted(set(items) - set(FORMATS))
    if unknown or not items:
        raise GhostEdgeError(f"unknown export format(s): {', '.join(unknown) or '(none given)'}",
                             f"choose from: {', '.join(FORMATS)} (comma-separated)")
    return tuple(f for f in FORMATS if f in items)


def parse_input_size(value: int | str | Sequence[int] | None) -> tuple[int, int] | None:
    """``224``, ``"224"``, ``"160x224"`` or (160, 224) -> (H, W)."""
    if value is None:
        return None
    try:
        if isinstance(value, int):
            return int(value), int(value)
        if isinstance(value, str):
            parts = value.lower().replace(",", "x").split("x")
            nums = [int(p) for p in parts]
        else:
            nums = [int(v) for v in value]
    except (TypeError, ValueError):
        raise ModelError(f"cannot read input size {value!r}", "use e.g. --input-size 224 or 160x224") from None
    if len(nums) == 1:
        return nums[0], nums[0]
    if len(nums) == 2:
        return nums[0], nums[1]
    if len(nums) == 3:
        return nums[1], nums[2]
    raise ModelError(f"cannot read input size {value!r}", "use e.g. --input-size 224 or 160x224")


def validate_config(cfg: ExportConfig) -> ExportConfig:
    """Reject option combinations that cannot work, before anything is loaded."""
    from ghostnet_edge.export.onnx.quantize import ACT_TYPES, CALIB_METHODS
    from ghostnet_edge.export.tflite.convert import IO_DTYPES

    cfg = dataclasses.replace(cfg, formats=parse_formats(cfg.formats))
    if cfg.checkpoint is None and not cfg.model:
        raise GhostEdgeError("nothing to export: give a CHECKPOINT or --model NAME",
                             "e.g. ghostedge export runs/x/best.pt --calib images/ --out export/, or "
                             "--model ghostnet_100 for random weights")
    if cfg.calib_method not in CALIB_METHODS:
        raise GhostEdgeError(f"unknown calibration method {cfg.calib_method!r}",
                             f"choose one of: {', '.join(CALIB_METHODS)}")
    if cfg.act_type not in ACT_TYPES:
        raise GhostEdgeError(f"unknown activation type {cfg.act_type!r}", f"choose one of: {', '.join(ACT_TYPES)}")
    if cfg.io_dtype not in IO_DTYPES:
        raise GhostEdgeError(f"unknown INT8 input/output type {cfg.io_dtype!r}",
                             f"choose one of: {', '.join(IO_DTYPES)}")
    if cfg.int8 and cfg.calib is None:
        raise GhostEdgeError("INT8 export needs calibration images", "pass --calib DIR (a folder of real images), "
                             "or --no-int8 for FP32 only")
    if cfg.calib is None and cfg.verify_data is None:
        raise GhostEdgeError("every artifact is checked against PyTorch on real images, and none were given",
                             "pass --calib DIR (verification images are held out from it) or --verify-data DIR")
    if cfg.num_calib < 1:
        raise GhostEdgeError(f"--num-calib must be at least 1 (got {cfg.num_calib})", "256 is a good default")
    if cfg.num_verify < 1:
        raise GhostEdgeError(f"--num-verify must be at least 1 (got {cfg.num_verify})", "32 is the default")
    if not cfg.tolerance > 0:
        raise GhostEdgeError(f"--tolerance must be > 0 (got {cfg.tolerance})", "the default is 1e-4")
    if not 0.0 <= cfg.min_agreement <= 1.0:
        raise GhostEdgeError(f"--min-agreement must be in [0, 1] (got {cfg.min_agreement})", "the default is 0.8")
    if cfg.max_drop is not None:
        if not cfg.int8:
            raise GhostEdgeError("--max-drop applies to INT8 quantization", "drop --no-int8 or --max-drop")
        if cfg.val_data is None:
            raise GhostEdgeError("--max-drop needs labelled validation images to measure the drop",
                                 "pass --val-data DIR with one sub-folder per class (named like the model's classes)")
        if not 0.0 <= cfg.max_drop < 1.0:
            raise GhostEdgeError(f"--max-drop must be in [0, 1) (got {cfg.max_drop})", "e.g. 0.01 for one point")
    return cfg


# TensorFlow takes ~4 s to import, and only the TFLite converter needs it: the check only looks it up;
# the converter process (or, with one thread, the conversion itself) imports it.
_IMPORTED_IN_WORKER = frozenset({"tensorflow"})


def _installed(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a None entry in sys.modules, a broken parent package
        return False


def check_dependencies(cfg: ExportConfig) -> dict[str, str]:
    """Import every converter/runtime this export will need now, so a missing one fails in seconds
    (TensorFlow is only looked up here; see ``_IMPORTED_IN_WORKER``)."""
    need = [("torch", "torch", "loading the model"), ("onnx", "onnx", "the ONNX export"),
            ("onnxsim", "onnxsim", "simplifying the ONNX graph"),
            ("onnxruntime", "onnxruntime", "checking ONNX models and INT8 quantization")]
    if "tflite" in cfg.formats:
        need.append(("tensorflow", "tensorflow", "the TFLite export"))
    if cfg.max_drop is not None and "onnx" in cfg.formats:
        need.append(("nncf", "nncf", "accuracy-aware INT8 quantization (--max-drop)"))
    if not cfg.simplify:
        need = [n for n in need if n[0] != "onnxsim"]
    from ghostnet_edge.utils.native_stderr import quiet_framework_import

    for module, package, purpose in need:
        if module in _IMPORTED_IN_WORKER:
            if not _installed(module):
                raise MissingDependencyError(module, package, purpose)
            continue
        with quiet_framework_import(module):
            require(module, package, purpose)
    if "tflite" in cfg.formats:
        from ghostnet_edge.export.tflite.verify import interpreter_backend

        interpreter_backend("auto")  # raises MissingDependencyError naming ai-edge-litert
    return {m: p for m, p, _ in need}


def find_class_index(*folders: Path | None) -> Path | None:
    """``imagenet_class_index.json`` in or above one of ``folders`` (the ImageNet samples ship one)."""
    for folder in folders:
        if folder is None:
            continue
        folder = Path(folder)
        for candidate in (folder, folder.parent, folder.parent.parent):
            if (candidate / CLASS_INDEX_FILE).is_file():
                return candidate / CLASS_INDEX_FILE
    return None


def resolve_labels(meta: dict[str, Any], num_classes: int, class_index: Path | None,
                   ) -> tuple[list[str], list[str] | None, str]:
    """Class names for labels.txt, ImageNet wnids when known, and where the names came from."""
    names = meta.get("class_names")
    if names and len(names) == num_classes:
        return [str(n) for n in names], None, "checkpoint"
    if num_classes == 1000 and class_index is not None:
        from ghostnet_edge.data.datasets import read_class_index

        wnids, human = read_class_index(class_index)
        if len(wnids) == 1000:
            return human, wnids, f"{class_index.name}"
    return [f"class_{i}" for i in range(num_classes)], None, "none (class_<index> placeholders)"


def label_indices(labels: Sequence[str | None], class_names: Sequence[str],
                  wnids: Sequence[str] | None = None) -> np.ndarray | None:
    """Class index of each image (from its folder name or wnid prefix), or None unless all are known."""
    index = {n: i for i, n in enumerate(class_names)}
    if wnids:
        index.update({w: i for i, w in enumerate(wnids)})
    out = []
    for lab in labels:
        if lab is None or lab not in index:
            return None
        out.append(index[lab])
    return np.asarray(out, dtype=np.int64) if out else None


# --------------------------------------------------------------------------------------------------
# The pipeline
# --------------------------------------------------------------------------------------------------


class _Timer:
    """Wall and CPU seconds per stage (CPU time of all threads: on a shared machine wall time alone
    says little, and CPU / wall shows how well a stage used the cores)."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str, cpu: bool = True) -> Iterator[None]:
        """Time a stage; ``cpu=False`` for stages overlapping another thread's work (CPU time is per
        process, so it would include the other thread's)."""
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t0
            if cpu:
                self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - c0


def _load(cfg: ExportConfig, warnings: list[str]) -> tuple[Any, Any, dict[str, Any], bool]:
    import torch

    from ghostnet_edge.models import load_model

    if cfg.checkpoint is not None:
        model, spec, meta = load_model(cfg.checkpoint, arch=cfg.model)
        return model, spec, meta, True
    # Named model, random weights: seeded so the same command gives the same files.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(cfg.seed))
        model, spec, meta = load_model(cfg.model)
    from ghostnet_edge.models.reparam import has_branches, reparameterize

    if has_branches(model):
        # Random weights have nothing to keep, so the deployed form is exported directly. With default
        # BatchNorm statistics an untrained GhostNetV3's summed branches make activations grow by orders
        # of magnitude per block (logits ~1e8), and no runtime agrees with another on such numbers: the
        # statistics are first estimated on seeded noise, as a training step would, so the network is
        # numerically sane and its checks mean what they say.
        _estimate_bn_statistics(model, spec.input_size, int(cfg.seed))
        model = reparameterize(model)
    warnings.append(f"{spec.name} has random weights (no checkpoint given): the export pipeline is exercised, "
                    "but its accuracy and INT8 agreement mean nothing")
    return model, spec, meta, False


def _fold_branches(model: Any, xv: np.ndarray, ref: np.ndarray, tolerance: float) -> tuple[Any, str | None]:
    """The deployed form of a network with training-time branches (GhostNetV3, RepGhostNet), checked.

    The branches are folded into single convolutions before conversion; the folded network must give
    the unfolded one's logits on the verification images within float rounding (the FP32 tolerance,
    relative above |logit| 1), else nothing is exported.
    """
    from ghostnet_edge.export.onnx import verify as ov
    from ghostnet_edge.models.reparam import has_branches, reparameterize

    if not has_branches(model):
        return model, None
    folded = reparameterize(model).eval()
    diff = float(np.abs(ov.run_torch(folded, xv) - ref).max())
    allowed = tolerance * max(1.0, float(np.abs(ref).max()))
    if not diff <= allowed:
        raise ExportError(f"folding the re-parameterisable branches changed the logits by {diff:.3g} "
                          f"(allowed {allowed:.3g}); nothing was written",
                          "the checkpoint's BatchNorm statistics may be broken; check it with `ghostedge eval`")
    return folded, (f"re-parameterised: training-time branches folded into single convolutions before "
                    f"conversion (folded vs unfolded logits: max |diff| {diff:.2e})")


def _decode_all(image_sets: Sequence[Any], pre: Any, use_cache: bool) -> list[Any]:
    """Decode every set into a ``TensorBatch`` (None stays None); unreadable images of all sets are
    named in one error."""
    from ghostnet_edge.calib import calibration_tensors

    batches: list[Any] = []
    problems: list[str] = []
    for image_set in image_sets:
        if image_set is None:
            batches.append(None)
            continue
        try:
            batches.append(calibration_tensors(image_set.files, pre, use_cache=use_cache))
        except DataError as exc:
            if "cannot be read" not in exc.message:
                raise
            problems.append(exc.message)
            batches.append(None)
    if problems:
        raise DataError(" and ".join(problems), "remove or replace these files (or convert them to JPEG/PNG) "
                        "and run again")
    return batches


# Refuse an export before converting when the disk has less free space than estimate_export_bytes():
# seconds instead of minutes to the same error. (Tests switch it off to reach a disk that fills up mid-run.)
CHECK_SPACE_UP_FRONT = True


def estimate_export_bytes(model: Any, cfg: ExportConfig) -> int:
    """Free space an export needs at its peak: every artifact plus the quantizers' temporary models.

    Per fp32 weight byte: model.onnx 1, model_fp32.tflite 1, the two INT8 models 0.25 each, and
    onnxruntime's quantizer and the per-layer report keep a temporary copy of the fp32 model (1); then
    4 MiB for reports, labels and file-system slack. Measured on GhostNet 0.5x (5.3 MB of weights): a
    complete FP32+INT8 ONNX+TFLite export fits in 17 MiB but not in 12 MiB; this estimates 21.6 MiB.
    """
    weight_bytes = 4 * sum(int(p.numel()) for p in model.parameters())
    per_byte = 1.0 + (1.0 if "tflite" in cfg.formats else 0.0)
    if cfg.int8:
        per_byte += 0.25 * len(cfg.formats) + (1.0 if "onnx" in cfg.formats else 0.0)
    return int(weight_bytes * per_byte) + 4 * 2**20


def _estimate_bn_statistics(model: Any, input_size: tuple[int, ...], seed: int, batches: int = 4) -> None:
    """Set every BatchNorm's running mean/var from a few seeded noise batches (cumulative average)."""
    import torch

    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None   # cumulative moving average over the batches below
    gen = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn(8, *input_size, generator=gen))
    for bn, momentum in zip(bns, saved, strict=True):
        bn.momentum = momentum
    model.eval()


def _with_input_size(spec: Any, size: tuple[int, int] | None) -> Any:
    from ghostnet_edge.models import check_input_size

    if size is None:
        check_input_size(spec, spec.input_size[1:])
        return spec
    check_input_size(spec, size)
    if tuple(size) == tuple(spec.input_size[1:]):
        return spec
    # Only the size changes: every other field the checkpoint set (stem_stride, dropout, mean/std) stays,
    # and the resize keeps the same crop fraction, as the registry does for a new input size.
    crop = spec.input_size[1] / spec.resize_size
    return dataclasses.replace(spec, input_size=(spec.input_size[0], *size),
                               resize_size=int(round(min(size) / crop)))


def export_artifacts(config: ExportConfig) -> ExportReport:
    """Run the whole export (see the module docstring); raise :class:`GhostEdgeError` on any problem.

    Cheap checks run first (options, output folder, checkpoint, input size, image folders), then the
    converters are imported, and only then is anything written, into a staging folder.
    """
    timer = _Timer()
    t_start = time.perf_counter()
    warnings: list[str] = []
    from ghostnet_edge.utils.atomic import check_output_dir

    with timer.stage("checks"):
        cfg = validate_config(config)
        inputs = (cfg.checkpoint, cfg.calib, cfg.verify_data, cfg.val_data)
        out = check_output_dir(cfg.out, cfg.force, inputs)
    # With 2+ threads the TFLite converter runs in a process of its own (see export/tflite/worker.py),
    # taken now so that it imports TensorFlow (once per process) while this one loads the model,
    # preprocesses and exports ONNX. It is kept for the next export only when this one succeeded.
    from ghostnet_edge.export.onnx.verify import default_threads
    from ghostnet_edge.export.tflite import worker as tflite_worker

    worker = None
    if "tflite" in cfg.formats and (cfg.threads or default_threads()) >= 2 and _installed("tensorflow"):
        worker = tflite_worker.acquire()
    ok = False
    try:
        with timer.stage("load_model"):
            model, spec, meta, trained = _load(cfg, warnings)
            spec = _with_input_size(spec, parse_input_size(cfg.input_size))
            model.eval()
            needed = estimate_export_bytes(model, cfg)
            check_output_dir(out, cfg.force, inputs, needed_bytes=needed if CHECK_SPACE_UP_FRONT else 0)
        # ---- images (drawn before any conversion, so a bad folder fails fast) ----------------------------
        with timer.stage("select_images"):
            from ghostnet_edge.calib import split_calibration_verification
            from ghostnet_edge.calib.sampler import draw, list_images, make_image_set

            if cfg.calib is not None:
                calib_set, verify_set = split_calibration_verification(
                    cfg.calib, cfg.num_calib, cfg.num_verify, cfg.seed, verify_source=cfg.verify_data)
                for w in (*verify_set.warnings, *calib_set.warnings):
                    warnings.append(w)
                    log.warning(w)
            else:
                files = list_images(cfg.verify_data, "verification")
                verify_set = make_image_set(Path(cfg.verify_data), draw(files, cfg.num_verify, cfg.seed + 1),
                                            cfg.num_verify, len(files))
                calib_set = None
        with timer.stage("dependencies"):
            check_dependencies(cfg)
        from ghostnet_edge.utils.atomic import atomic_dir, out_of_space

        with atomic_dir(out, force=cfg.force) as staging:
            try:
                report = _run(cfg, staging, out, timer, warnings, (model, spec, meta, trained), calib_set, verify_set,
                                  worker)
            except Exception as exc:
                full = out_of_space(out, exc, needed)   # checked while the staged files still take their space
                if full is not None:
                    raise full from exc
                raise
        ok = True
    finally:
        if worker is not None:
            tflite_worker.release(worker, healthy=ok)  # a failed or interrupted job: the child is stopped
    report.out_dir = out
    report.cpu_timings = dict(timer.cpu)
    report.wall_seconds = time.perf_counter() - t_start
    for a in report.artifacts:
        a.path = out / a.name
    return report


def _run(cfg: ExportConfig, staging: Path, out: Path, timer: _Timer, warnings: list[str],
         loaded: tuple[Any, Any, dict[str, Any], bool], calib_set: Any, verify_set: Any,
         worker: Any = None) -> ExportReport:
    """Everything that writes, into ``staging``; ``worker`` is the TFLite converter process, if any."""
    import torch

    from ghostnet_edge.calib import calibration_tensors
    from ghostnet_edge.calib.sampler import list_images, make_image_set
    from ghostnet_edge.data import Preprocess
    from ghostnet_edge.export import manifest as mf
    from ghostnet_edge.export import report as rp
    from ghostnet_edge.export.onnx import verify as ov
    from ghostnet_edge.utils.atomic import atomic_write_json, atomic_write_text
    from ghostnet_edge.utils.versions import package_versions

    work = staging / ".work"
    work.mkdir()
    threads = cfg.threads or ov.default_threads()
    model, spec, meta, trained = loaded
    input_size = tuple(spec.input_size)
    pre = Preprocess.from_spec(spec)
    prep_desc = pre.describe()
    class_index = find_class_index(cfg.calib, cfg.verify_data, cfg.val_data)
    labels, wnids, labels_source = resolve_labels(meta, spec.num_classes, class_index)
    if labels_source.startswith("none"):
        warnings.append("the checkpoint has no class names: labels.txt holds class_<index> placeholders")

    with timer.stage("preprocess"):
        verify_batch, calib_batch = _decode_all([verify_set, calib_set], pre, cfg.use_cache)
        xv = verify_batch.array
        xc = calib_batch.array if calib_batch is not None else None
        yv = label_indices(verify_set.labels, labels, wnids)
        val = None
        if cfg.val_data is not None:
            val_files = list_images(cfg.val_data, "validation")
            val_set = make_image_set(Path(cfg.val_data), val_files, len(val_files), len(val_files))
            yval = label_indices(val_set.labels, labels, wnids)
            if yval is None:
                raise DataError(f"the images in {cfg.val_data} are not all labelled with the model's classes",
                                "use one sub-folder per class, named like the checkpoint's class names "
                                f"(first ones: {', '.join(labels[:5])})")
            val = (calibration_tensors(val_set.files, pre, use_cache=cfg.use_cache).array, yval)

    with timer.stage("pytorch_reference"):
        saved_threads = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            ref = ov.run_torch(model, xv)
            reference_model = model
            model, folding = _fold_branches(model, xv, ref, cfg.tolerance)
            if folding is not None:
                warnings.append(folding)
        finally:
            torch.set_num_threads(saved_threads)  # callers (the curve sweep) keep their own setting

    artifacts: list[ArtifactReport] = []
    sections: list[dict[str, Any]] = []
    quantization: dict[str, Any] | None = None
    enforce_int8 = trained
    n_report = report_image_count(cfg.report_images, tuple(input_size[-2:]), len(xv))
    onnx_meta = {"ghostedge.labels": json.dumps(labels), "ghostedge.preprocessing": json.dumps(prep_desc, sort_keys=True),
                 "ghostedge.model": spec.name, "ghostedge.input_layout": "NCHW"}

    def _keep(name: str, fmt: str, precision: str, check: ov.Check) -> None:
        if not check.passed:
            section = next((sec for sec in sections if sec.get("artifact") == name), None)
            raise ExportError(f"{name} failed its check: {check.reason}; nothing was written"
                              + _worst_layers_text(section), _fail_hint(precision, fmt))
        path = staging / name
        artifacts.append(ArtifactReport(name, fmt, precision, path, path.stat().st_size, check.to_dict()))

    float_error: list[float] = []
    tflite_budget: dict[str, Any] | None = None

    def fp32_limit(out: np.ndarray) -> float:
        """The FP32 tolerance for ``out``; PyTorch's own float32 error is measured (once) only when an
        artifact misses the plain tolerance, so well-conditioned networks never pay for it."""
        from ghostnet_edge.export.checks import fp32_allowed, max_abs_diff

        if not float_error and max_abs_diff(ref, out) > fp32_allowed(ref, cfg.tolerance):
            with timer.stage("pytorch_float64_reference"):
                saved = torch.get_num_threads()
                torch.set_num_threads(threads)
                try:
                    float_error.append(ov.torch_float_error(reference_model, xv, ref))
                finally:
                    torch.set_num_threads(saved)
        return fp32_allowed(ref, cfg.tolerance, float_error[0] if float_error else None)

    def fp32_note() -> str:
        from ghostnet_edge.export.checks import FLOAT_ERROR_FACTOR, fp32_allowed

        note = "tolerance is relative above |logit| 1: tolerance * max(1, max|torch logits|)"
        if float_error and fp32_allowed(ref, cfg.tolerance, float_error[0]) > fp32_allowed(ref, cfg.tolerance):
            note += (f"; raised to {FLOAT_ERROR_FACTOR:g} x PyTorch's own float32 error on these images "
                     f"(max |float32 - float64 logits| = {float_error[0]:.3g}): the network is ill-conditioned "
                     "(untrained weights?), so no float32 runtime can match PyTorch more closely")
        return note

    # ---- ONNX FP32 (always: the TFLite route starts from it) --------------------------------------
    from ghostnet_edge.export.onnx.config import OnnxExportConfig
    from ghostnet_edge.export.onnx.convert import export_onnx

    onnx_fp32 = (staging if "onnx" in cfg.formats else work) / ONNX_FP32
    with timer.stage("onnx_export"):
        export_onnx(model, input_size, onnx_fp32, OnnxExportConfig(opset=cfg.opset, simplify=cfg.simplify),
                    metadata=onnx_meta)
    with timer.stage("onnx_verify"):
        sess = ov.ort_session(onnx_fp32, threads)
        out_fp32 = ov.run_onnx(sess, xv)
        del sess
        check = ov.check_fp32(ONNX_FP32, ref, out_fp32, fp32_limit(out_fp32), yv)
        check.notes.append(fp32_note())
    if "onnx" in cfg.formats:
        _keep(ONNX_FP32, "onnx", "fp32", check)
    elif not check.passed:
        raise ExportError(f"the intermediate ONNX model failed its check: {check.reason}", _fail_hint("fp32", "onnx"))

    # ---- INT8 ONNX and TFLite, side by side ---------------------------------------------------------
    # One calibration pass (onnxruntime over the verified FP32 ONNX) gives the activation ranges both
    # quantizers use, so the two INT8 models share them. With 2+ threads the TFLite converter process
    # translates and converts FP32 on one core meanwhile, and waits for the ranges only for INT8; this
    # process calibrates and quantizes ONNX on the others. Both only read the verified FP32 ONNX file
    # and write their own files; the results do not depend on the overlap.
    import resource

    from ghostnet_edge.export.tflite.convert import TfliteResult

    parallel = worker is not None
    ort_threads = max(1, threads - 1) if parallel else threads
    t_fp32 = staging / TFLITE_FP32
    t_int8 = staging / TFLITE_INT8 if cfg.int8 else None
    region_cpu0, region_t0 = time.process_time(), time.perf_counter()
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if parallel:
        calib_file = None
        if t_int8 is not None:
            calib_file = calib_batch.cache_file if calib_batch.cache_file and calib_batch.cache_file.is_file() else None
            if calib_file is None:  # no cache: hand the tensors over in the work folder
                calib_file = work / "calib.npy"
                np.save(calib_file, xc)
        worker.submit(onnx_fp32, t_fp32, t_int8, calib_file, cfg.io_dtype, cfg.per_channel, labels,
                      {**prep_desc, "layout": "NHWC"})
    calibration_ranges = None
    if cfg.int8:
        from ghostnet_edge.calib.ranges import collect_ranges

        try:
            with timer.stage("calibration_ranges", cpu=not parallel):
                calibration_ranges = collect_ranges(onnx_fp32, xc, cfg.calib_method, threads, use_cache=cfg.use_cache)
        except BaseException as exc:
            if parallel:
                worker.send_ranges(None, error=str(exc))
            raise
        if parallel:
            worker.send_ranges(calibration_ranges.ranges)
    if cfg.int8 and "onnx" in cfg.formats:
        quantization = _onnx_int8(cfg, staging, work, onnx_fp32, xc, xv, yv, ref, val, onnx_meta, ort_threads,
                                  enforce_int8, n_report, timer, sections, _keep, cpu=not parallel,
                                  ranges=calibration_ranges)
    tflite_res = None
    if parallel:
        tflite_res = TfliteResult.from_dict(worker.result())
        timer.timings["tflite_convert (own process)"] = time.perf_counter() - region_t0
    elif "tflite" in cfg.formats:
        with timer.stage("tflite_convert"):
            given = calibration_ranges.ranges if calibration_ranges is not None else None
            tflite_res, _ = _convert_tflite(onnx_fp32, t_fp32, t_int8, xc, cfg, labels,
                                            {**prep_desc, "layout": "NHWC"}, lambda: given)
    if parallel:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        child_cpu = (children.ru_utime - children0.ru_utime) + (children.ru_stime - children0.ru_stime)
        timer.cpu["int8_onnx+tflite_convert (parallel)"] = time.process_time() - region_cpu0 + child_cpu
        timer.timings["int8_onnx+tflite_convert (parallel)"] = time.perf_counter() - region_t0

    # ---- TFLite checks -----------------------------------------------------------------------------------
    tflite_io = None
    if tflite_res is not None:
        from ghostnet_edge.export.tflite.metadata import check_metadata_agrees
        from ghostnet_edge.export.tflite.verify import per_layer_sqnr, run_tflite

        # The metadata an app reads (input size, normalisation, labels) must describe these very tensors.
        check_metadata_agrees(t_fp32, labels=labels, preprocessing=prep_desc, int8=False)
        if t_int8 is not None:
            check_metadata_agrees(t_int8, labels=labels, preprocessing=prep_desc, int8=cfg.io_dtype != "float32")

        # The converter's own split (translation, FP32, INT8 incl. its calibration), for the benchmark.
        timer.timings["tflite_convert.translate"] = tflite_res.translate_seconds
        timer.timings["tflite_convert.fp32"] = tflite_res.fp32_seconds or 0.0
        timer.timings["tflite_convert.int8"] = tflite_res.int8_seconds or 0.0
        with timer.stage("tflite_verify"):
            from ghostnet_edge.utils.native_stderr import quiet_native_stderr

            # LiteRT announces "Created TensorFlow Lite XNNPACK delegate for CPU." on fd 2 once per process.
            with quiet_native_stderr(enabled=not os.environ.get("GHOSTEDGE_VERBOSE")):
                out_t = run_tflite(t_fp32, xv, num_threads=threads)
            tcheck = ov.check_fp32(TFLITE_FP32, ref, out_t, fp32_limit(out_t), yv)
            tcheck.notes.append(fp32_note())
        _keep(TFLITE_FP32, "tflite", "fp32", tcheck)
        if t_int8 is not None:
            with timer.stage("tflite_int8_verify"):
                out_tq = run_tflite(t_int8, xv, num_threads=threads)
                tqcheck = ov.check_int8(TFLITE_INT8, ref, out_tq, cfg.min_agreement, yv,
                                        enforce=enforce_int8)
            with timer.stage("tflite_int8_layer_report"):
                tl = per_layer_sqnr(t_int8, t_fp32, xv[:n_report], num_threads=threads)
                sections.append(rp.artifact_section(TFLITE_INT8, rp.tflite_layer_rows(tl),
                                                    tqcheck.to_dict(), n_report))
            _keep(TFLITE_INT8, "tflite", "int8", tqcheck)
            tflite_io = mf.tflite_io_entry(tflite_res)
            if cfg.max_drop is not None and val is not None:
                with timer.stage("tflite_int8_budget"):
                    tflite_budget = _tflite_budget(cfg, staging, onnx_fp32, t_fp32, t_int8, xc, xv, yv, ref, val,
                                                   labels, prep_desc, threads, sections[-1], artifacts, warnings)

    # ---- labels, reports, manifest ----------------------------------------------------------------------
    with timer.stage("manifest"):
        shutil.rmtree(work, ignore_errors=True)
        atomic_write_text(staging / LABELS, "\n".join(labels) + "\n")
        calibration = None
        if calib_set is not None:
            calibration = {**calib_set.summary(), "method": cfg.calib_method, "seed": cfg.seed,
                           "root": str(calib_set.root)}
            if calibration_ranges is not None:
                calibration["ranges"] = {
                    "collected_by": f"onnxruntime {cfg.calib_method} calibrator over {ONNX_FP32}, one pass",
                    "tensors": len(calibration_ranges.ranges), "cache_key": calibration_ranges.key,
                    "cache_hit": calibration_ranges.cache_hit,
                    "onnx_int8": "these ranges" if "onnx" in cfg.formats and cfg.max_drop is None else None,
                    "tflite_int8": tflite_res.ranges_source if tflite_res is not None else None}
        if sections:
            qr = rp.build_quant_report(sections, calibration or {})
            atomic_write_json(staging / "quant_report.json", qr)
            atomic_write_text(staging / "quant_report.md", rp.render_markdown(qr))
        verification = {**verify_set.summary(), "seed": cfg.seed + 1, "labelled": yv is not None,
                        "tflite_int8_budget": tflite_budget,
                        "disjoint_from_calibration": True,
                        "fp32_tolerance": cfg.tolerance, "min_int8_agreement": cfg.min_agreement,
                        "int8_agreement_enforced": enforce_int8}
        versions = package_versions()
        manifest = mf.build_manifest(
            root=staging,
            source=mf.source_entry(Path(cfg.checkpoint) if cfg.checkpoint else None, spec.name, trained,
                                   cfg.seed, meta),
            preprocessing={**prep_desc, "onnx_layout": "NCHW", "tflite_layout": "NHWC",
                           "labels_source": labels_source},
            labels=labels, calibration=calibration, verification=verification,
            artifacts=[{"file": a.name, "format": a.format, "precision": a.precision, "bytes": a.bytes,
                        "verification": a.check} for a in artifacts],
            quantization=quantization, tflite_io=tflite_io, config=cfg.to_dict(), versions=versions,
            warnings=warnings, timings=timer.timings)
        atomic_write_json(staging / mf.MANIFEST_NAME, manifest)
    files = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
    return ExportReport(out, artifacts, timer.timings, warnings, manifest, files)


def _tflite_budget(cfg: ExportConfig, staging: Path, onnx_fp32: Path, t_fp32: Path, t_int8: Path, xc: np.ndarray,
                   xv: np.ndarray, yv: np.ndarray | None, ref: np.ndarray, val: tuple[np.ndarray, np.ndarray],
                   labels: list[str], prep: dict[str, Any], threads: int, section: dict[str, Any],
                   artifacts: list[ArtifactReport], warnings: list[str]) -> dict[str, Any]:
    """``--max-drop`` for the TFLite INT8 model: measure it, and when it misses build the 16x8 remedy
    (checked against PyTorch like every artifact) and say so in one warning."""
    from ghostnet_edge.export.onnx import verify as ov
    from ghostnet_edge.export.tflite import budget as bd
    from ghostnet_edge.export.tflite.verify import run_tflite

    worst = [r["tensor"].split(";")[0] for r in section.get("worst_layers", [])[:3]]
    result = bd.check_budget(onnx_fp32=onnx_fp32, t_fp32=t_fp32, t_int8=t_int8, staging=staging, val=val,
                             max_drop=cfg.max_drop, representative=xc, worst_layers=worst, labels=labels,
                             preprocessing={**prep, "layout": "NHWC"}, threads=threads)
    remedy = result.remedy
    if remedy is not None and "error" not in remedy:
        path = staging / bd.REMEDY_FILE
        check = ov.check_int8(bd.REMEDY_FILE, ref, run_tflite(path, xv, num_threads=threads), cfg.min_agreement, yv,
                              enforce=False).to_dict()
        check.update({"label": bd.REMEDY_LABEL, "val_top1": remedy["top1"], "val_drop": remedy["drop"]})
        artifacts.append(ArtifactReport(bd.REMEDY_FILE, "tflite", "int16x8", path, path.stat().st_size, check))
    if not result.met:
        warnings.append(bd.message(result, TFLITE_INT8))
    return result.to_dict()


def _convert_tflite(onnx_fp32: Path, t_fp32: Path, t_int8: Path | None, xc: np.ndarray | None,
                    cfg: ExportConfig, labels: list[str], prep: dict[str, Any],
                    ranges: Any = None) -> tuple[Any, float]:
    """The TFLite stage's converter (FP32 and, with ``t_int8``, full-integer INT8); returns (result, wall s).

    ``ranges`` is a callable giving the shared calibration ranges, called only when INT8 needs them.
    """
    from ghostnet_edge.export.tflite.convert import convert_onnx_to_tflite
    from ghostnet_edge.utils.native_stderr import quiet_native_stderr

    t0 = time.perf_counter()
    # TensorFlow logs its first device look-up ("failed call to cuInit" on a machine without a GPU) and
    # the converter's banners straight to fd 2 while it traces and converts; --verbose shows them.
    with quiet_native_stderr(enabled=not os.environ.get("GHOSTEDGE_VERBOSE")):
        res = convert_onnx_to_tflite(onnx_fp32, t_fp32, t_int8, representative=xc if t_int8 is not None else None,
                                     io_dtype=cfg.io_dtype, per_channel=cfg.per_channel, labels=labels,
                                     preprocessing=prep, ranges=ranges if t_int8 is not None else None)
    return res, time.perf_counter() - t0


def _onnx_int8(cfg: ExportConfig, staging: Path, work: Path, onnx_fp32: Path, xc: np.ndarray, xv: np.ndarray,
               yv: np.ndarray | None, ref: np.ndarray, val: tuple[np.ndarray, np.ndarray] | None,
               onnx_meta: dict[str, str], threads: int, enforce: bool, n_report: int, timer: _Timer,
               sections: list[dict[str, Any]], keep: Any, cpu: bool, ranges: Any = None) -> dict[str, Any]:
    """Quantize (onnxruntime QDQ, or NNCF with accuracy control), check, and report per layer."""
    from ghostnet_edge.export import report as rp
    from ghostnet_edge.export.onnx import verify as ov
    from ghostnet_edge.export.onnx.quantize import activation_choice_dict, choose_activation_type

    choice = choose_activation_type(cfg.act_type)
    q_path = staging / ONNX_INT8
    with timer.stage("onnx_quantize", cpu=cpu):
        if cfg.max_drop is not None and val is not None:
            from ghostnet_edge.export.onnx.nncf import quantize_with_accuracy_control

            res = quantize_with_accuracy_control(onnx_fp32, q_path, xc, val[0], val[1], cfg.max_drop,
                                                 choice, cfg.per_channel, metadata=onnx_meta, threads=threads)
            choice = res.activation
            quantization: dict[str, Any] = {"tool": "nncf.quantize_with_accuracy_control", "max_drop": cfg.max_drop,
                                            "float_nodes": res.float_nodes}
        else:
            from ghostnet_edge.export.onnx.quantize import quantize_onnx

            quantize_onnx(onnx_fp32, q_path, xc, cfg.calib_method, choice, cfg.per_channel,
                          metadata=onnx_meta, work_dir=work, threads=threads, ranges=ranges)
            quantization = {"tool": "onnxruntime.quantization.quantize_static", "format": "QDQ"}
    quantization.update({"activation_type": choice.dtype, "activation_reason": choice.reason,
                         "reduce_range": choice.reduce_range, "target": choice.target,
                         "weights": "int8 symmetric " + ("per-channel" if cfg.per_channel else "per-tensor"),
                         "calibration_method": cfg.calib_method, "activation": activation_choice_dict(choice)})
    with timer.stage("onnx_int8_verify", cpu=cpu):
        out_q = ov.run_onnx(ov.ort_session(q_path, threads), xv)
        if val is not None:
            _note_val_accuracy(quantization, onnx_fp32, q_path, val, threads)
        qcheck = ov.check_int8(ONNX_INT8, ref, out_q, cfg.min_agreement, yv, enforce=enforce)
    with timer.stage("onnx_int8_layer_report", cpu=cpu):
        layers = ov.per_layer_sqnr(onnx_fp32, q_path, xv[:n_report], work, threads=threads)
        sections.append(rp.artifact_section(ONNX_INT8, rp.onnx_layer_rows(layers),
                                            qcheck.to_dict(), n_report))
    keep(ONNX_INT8, "onnx", "int8", qcheck)
    return quantization


def _note_val_accuracy(quantization: dict[str, Any], fp32: Path, q: Path,
                       val: tuple[np.ndarray, np.ndarray], threads: int) -> None:
    """Top-1 of FP32 and INT8 ONNX on the labelled validation images, into the quantization record."""
    from ghostnet_edge.export.onnx import verify as ov

    x, y = val
    acc_f = ov.accuracy(ov.run_onnx(ov.ort_session(fp32, threads), x), y)
    acc_q = ov.accuracy(ov.run_onnx(ov.ort_session(q, threads), x), y)
    quantization["validation"] = {"num_images": int(len(y)), "accuracy_fp32": acc_f, "accuracy_int8": acc_q,
                                  "accuracy_delta": acc_q - acc_f}


def _fail_hint(precision: str, fmt: str) -> str:
    if precision == "fp32":
        return ("the converted graph computes something different from PyTorch: check the model exports "
                "cleanly (custom ops?) or raise --tolerance if the difference is rounding")
    return ("calibrate on more and more representative images (--num-calib, --calib-method percentile|entropy), "
            "try per-channel weights, or lower --min-agreement")


def _worst_layers_text(section: dict[str, Any] | None, k: int = 3) -> str:
    """`` (layers losing the most: a -12.1 dB, ...)`` from a report section, since no report is written."""
    from ghostnet_edge.export import report as rp

    rows = [r for r in rp.worst((section or {}).get("layers") or [], k) if r.get("drop_db") is not None]
    if not rows:
        return ""
    return " (layers losing the most signal: " + ", ".join(
        f"{r['tensor']} {r['sqnr_db']} dB, -{r['drop_db']} dB" for r in rows) + ")"


def suppress_noise() -> None:
    """Quiet the converters' progress prints and deprecation warnings the user cannot act on."""
    warnings_mod.filterwarnings("ignore", category=DeprecationWarning)
    for name in ("onnxruntime", "root", "nncf", "tensorflow", "absl"):
        logging.getLogger(name).setLevel(logging.ERROR)
