"""The export's options checked before anything is loaded: formats, input size, option combinations,
and the converters and runtimes they need."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ghostnet_edge.errors import GhostEdgeError, MissingDependencyError, ModelError, require
from ghostnet_edge.export.config import (
    DEFAULT_MIN_AGREEMENT,
    DEFAULT_NUM_CALIB,
    DEFAULT_NUM_VERIFY,
    DEFAULT_TOLERANCE,
    FORMATS,
    ExportConfig,
)


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
    from ghostnet_edge.export.tflite.translate import TFLITE_TARGETS

    if cfg.tflite_target not in TFLITE_TARGETS:
        raise GhostEdgeError(f"unknown TFLite target {cfg.tflite_target!r}", f"choose one of: {', '.join(TFLITE_TARGETS)}")
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
        raise GhostEdgeError(f"--num-calib must be at least 1 (got {cfg.num_calib})", f"{DEFAULT_NUM_CALIB} is the default")
    if cfg.num_verify < 1:
        raise GhostEdgeError(f"--num-verify must be at least 1 (got {cfg.num_verify})", f"{DEFAULT_NUM_VERIFY} is the default")
    if not cfg.tolerance > 0:
        raise GhostEdgeError(f"--tolerance must be > 0 (got {cfg.tolerance})", f"the default is {DEFAULT_TOLERANCE:g}")
    if not 0.0 <= cfg.min_agreement <= 1.0:
        raise GhostEdgeError(f"--min-agreement must be in [0, 1] (got {cfg.min_agreement})", f"the default is {DEFAULT_MIN_AGREEMENT:g}")
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


def is_path(source: Any) -> bool:
    """An image source given as a path (not a built-in data set's name, not images in memory)."""
    return isinstance(source, str | Path) and str(source) not in ("digits", "cifar10")


def installed(module: str) -> bool:
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
            if not installed(module):
                raise MissingDependencyError(module, package, purpose)
            continue
        with quiet_framework_import(module):
            if module == "onnxsim":
                from ghostnet_edge.export.onnx.convert import import_onnxsim

                import_onnxsim()
            else:
                require(module, package, purpose)
    if "tflite" in cfg.formats:
        from ghostnet_edge.runtime import device_runner as dr
        from ghostnet_edge.runtime.backends import as_ghostedge_error

        try:
            dr.pick_runtime("tflite", "auto")
        except dr.RunnerError as exc:  # no TFLite interpreter: the error names ai-edge-litert
            raise as_ghostedge_error(exc) from exc
    return {m: p for m, p, _ in need}


def with_input_size(spec: Any, size: tuple[int, int] | None) -> Any:
    """``spec`` at input ``size`` (H, W); checks the size fits the network."""
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
