"""ONNX -> ``.tflite`` (FP32 and full-integer INT8) through our translator and ``tf.lite.TFLiteConverter``.

INT8 follows TFLite's post-training full-integer recipe: ``optimizations=[DEFAULT]``, a representative
dataset (our calibration tensors, NCHW from the calibration stage, transposed to NHWC here),
``supported_ops=[TFLITE_BUILTINS_INT8]`` (conversion fails instead of silently leaving float ops) and
int8/uint8/float32 graph I/O. Weights are per-channel unless ``per_channel=False``, which sets the
converter's ``_experimental_disable_per_channel`` (per-tensor weights, for accelerators that need them).

The converter gets the translated function together with a ``tf.Module`` that owns it: that makes it
go through its SavedModel path, which writes the ``serving_default`` signature (input ``image``, output
``logits``) Android's ``Interpreter.getSignatureRunner`` reads; a bare concrete function gets none.

Every file gets standard TFLite Metadata (name, description, version, author, license, the input's
image properties and normalisation, the output's labels.txt packed as an associated file) next to
ghostedge's own JSON entries (see :mod:`.metadata`), and :func:`.metadata.check_metadata_agrees` must
pass before it is written.

Output is byte-identical for the same inputs: the converter's flatbuffer carries no timestamps or
paths (checked by the tests, in one process and across processes), our metadata is key-sorted JSON
and a flatbuffer without times, the packed labels a zip with fixed dates, and the files are written
atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ghostnet_edge.errors import ExportError, first_line, require
from ghostnet_edge.export import conversion_cache as cc
from ghostnet_edge.export.tflite import metadata as md
from ghostnet_edge.export.tflite.ranges import quantize_with_ranges
from ghostnet_edge.export.tflite.saved_model_reload import skip_saved_model_reload
from ghostnet_edge.export.tflite.unpacked import handed_over
from ghostnet_edge.utils.atomic import atomic_write_bytes
from ghostnet_edge.utils.hashing import array_digest

IO_DTYPES = ("int8", "uint8", "float32")


@dataclass
class TfliteResult:
    """What :func:`convert_onnx_to_tflite` wrote and how long it took."""

    fp32_path: Path | None
    int8_path: Path | None
    fp32_bytes: int | None
    int8_bytes: int | None
    input_shape_nhwc: tuple[int, int, int, int]
    io_dtype: str
    per_channel: bool
    num_representative: int
    input_quant: tuple[float, int] | None  # (scale, zero point) of the INT8 model's input; None for float I/O
    output_quant: tuple[float, int] | None
    translate_seconds: float
    fp32_seconds: float | None
    int8_seconds: float | None
    # Where the INT8 model's activation ranges came from: the shared calibration pass, or TensorFlow's
    # own calibrator (no ranges given, a 16x8 model, or a tensor the shared ranges could not place).
    ranges_source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("fp32_path", "int8_path"):
            d[k] = str(d[k]) if d[k] is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TfliteResult:
        """The inverse of :meth:`to_dict` (the conversion process sends its result as JSON)."""
        d = dict(d)
        for k in ("fp32_path", "int8_path"):
            d[k] = Path(d[k]) if d[k] is not None else None
        d["input_shape_nhwc"] = tuple(d["input_shape_nhwc"])
        for k in ("input_quant", "output_quant"):
            d[k] = (float(d[k][0]), int(d[k][1])) if d[k] is not None else None
        return cls(**d)


def _known(value: str | Callable[[], str | None] | None) -> str | None:
    return value() if callable(value) else value


def _check_representative(rep: Any, nchw: tuple[int, int, int, int]) -> np.ndarray:
    """The calibration tensors, checked, as given (NCHW; a memory-mapped file stays mapped): only
    TensorFlow's own calibrator reads them as images (:func:`_nhwc`), the shared-ranges route only
    hashes them for the file's provenance."""
    if not isinstance(rep, np.ndarray):
        raise ExportError(f"representative data must be a NumPy array, got {type(rep).__name__}",
                          "pass calibration tensors shaped (N, 3, H, W), float32, preprocessed")
    _, c, h, w = nchw
    if rep.ndim != 4 or rep.shape[1:] != (c, h, w) or rep.shape[0] < 1:
        raise ExportError(f"representative data has shape {tuple(rep.shape)}, the model takes (N, {c}, {h}, {w})",
                          "pass preprocessed NCHW calibration tensors at the model's input size")
    if rep.dtype.kind != "f":
        raise ExportError(f"representative data has dtype {rep.dtype}, expected float32",
                          "pass the preprocessed (normalised) float tensors, not raw uint8 pixels")
    # One sum instead of an elementwise test: NaN or infinity anywhere makes it non-finite, and
    # normalised pixels cannot add up to float32's overflow.
    if not np.isfinite(rep.sum(dtype=np.float64)):
        raise ExportError("representative data contains NaN or infinite values",
                          "check the calibration images and their preprocessing")
    return rep


def _nhwc(rep: np.ndarray) -> np.ndarray:
    """NCHW calibration tensors as the float32 NHWC images TensorFlow's calibrator feeds."""
    return np.ascontiguousarray(np.asarray(rep, dtype=np.float32).transpose(0, 2, 3, 1))


def _check_labels(labels: Any, num_classes: int | None) -> list[str] | None:
    if labels is None:
        return None
    if not isinstance(labels, list | tuple) or not all(isinstance(x, str) for x in labels):
        raise ExportError("labels must be a list of strings", "pass one class name per output logit")
    if num_classes is not None and len(labels) != num_classes:
        raise ExportError(f"{len(labels)} labels for a model with {num_classes} outputs",
                          "pass exactly one class name per output logit, in output order")
    return list(labels)


def _num_classes(concrete: Any) -> int | None:
    out = concrete.structured_outputs
    t = out.get("logits") if isinstance(out, dict) else None
    if t is None or t.shape.rank != 2 or t.shape[-1] is None:
        return None
    return int(t.shape[-1])


def _onnx_num_classes(proto: Any) -> int | None:
    """The class count from the ONNX graph's first output, (N, classes), as the translated function has."""
    dims = proto.graph.output[0].type.tensor_type.shape.dim
    return int(dims[-1].dim_value) if len(dims) == 2 and dims[-1].dim_value > 0 else None


def _convert(tf: Any, concrete: Any, rep_nhwc: np.ndarray | None, io_dtype: str, per_channel: bool,
             int16_activations: bool = False) -> bytes:
    module = tf.Module()
    module.serving = concrete  # owning object: the converter then writes the serving_default signature
    conv = tf.lite.TFLiteConverter.from_concrete_functions([concrete], module)
    if rep_nhwc is not None:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([x[None]] for x in rep_nhwc)
        conv.target_spec.supported_ops = (
            [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8] if int16_activations
            else [tf.lite.OpsSet.TFLITE_BUILTINS_INT8])
        conv.inference_input_type = {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}[io_dtype]
        conv.inference_output_type = conv.inference_input_type
        conv._experimental_disable_per_channel = not per_channel
    try:
        with _quiet_native_stderr(), skip_saved_model_reload():
            return bytes(conv.convert())
    except Exception as exc:  # ConverterError and friends: surface as one user-facing error
        kind = ("16x8" if int16_activations else "INT8") if rep_nhwc is not None else "FP32"
        first = first_line(exc)
        raise ExportError(f"the TFLite converter failed ({kind}): {first}",
                          "the model has an op without a TFLite INT8 kernel; run with --verbose for the "
                          "converter's log, or export FP32 only") from exc


def _io_quant(model: bytes) -> tuple[tuple[float, int] | None, tuple[float, int] | None]:
    from ghostnet_edge.export.tflite.inspect import io_quantization

    q = io_quantization(model)

    def pick(d: dict[str, Any]) -> tuple[float, int] | None:
        return (float(d["scale"]), int(d["zero_point"])) if d["dtype"] in ("INT8", "UINT8") else None

    return pick(q["input"]), pick(q["output"])


def _model_name(proto: Any, onnx_path: Path) -> str:
    """The model's name for the metadata: the ONNX stage's ``ghostedge.model`` property, else the file stem."""
    for prop in getattr(proto, "metadata_props", []):
        if prop.key == "ghostedge.model" and prop.value:
            return str(prop.value)
    return onnx_path.stem


def _with_metadata(model: bytes, labels: list[str] | None, prep: dict[str, Any] | None,
                   info: dict[str, Any], name: str, model_t: Any = None) -> bytes:
    """``model`` with ghostedge's JSON entries, standard TFLite Metadata and labels.txt, checked
    (``model_t``: ``model`` already unpacked, when the converter handed it over)."""
    meta = md.image_classifier_metadata(model, labels, prep, info, name)
    entries = {**md.json_entries(labels, prep, info), **md.standard_entry(meta)}
    model = md.embed_metadata(model, entries, meta.associated_files(), model_t=model_t)
    md.check_metadata_agrees(model, labels=labels, preprocessing=prep)
    return model


def convert_onnx_to_tflite(
    onnx_path: Path | str,
    out_fp32: Path | None,
    out_int8: Path | None,
    representative: np.ndarray | Callable[[], np.ndarray] | None = None,
    io_dtype: str = "int8",
    per_channel: bool = True,
    labels: list[str] | None = None,
    preprocessing: dict[str, Any] | None = None,
    int16_activations: bool = False,
    ranges: Mapping[str, tuple[float, float]] | Callable[[], Mapping[str, tuple[float, float]]] | None = None,
    hard_swish: str = "builtin",
    use_cache: bool = False,
    representative_sha256: str | Callable[[], str | None] | None = None,
) -> TfliteResult:
    """Convert an ONNX CNN to FP32 and/or full-integer INT8 ``.tflite`` files with embedded metadata.

    ``representative`` holds the preprocessed calibration images, ``(N, 3, H, W)`` float32 (required for
    INT8; a callable giving them is called only once INT8 conversion starts). ``io_dtype`` is the INT8 model's input/output type: ``int8`` (default), ``uint8`` or
    ``float32`` (QUANTIZE/DEQUANTIZE at the ends). ``int16_activations`` makes the "INT8" file LiteRT's
    16x8 mode instead (int16 activations, int8 weights; ``io_dtype`` must then be ``float32``): more
    accurate, larger and slower, and not run by int8-only accelerators. ``ranges`` (ONNX tensor name -> (lowest, highest), from
    :func:`ghostnet_edge.calib.ranges.collect_ranges` on the same ONNX model and images) calibrate the INT8
    model instead of TensorFlow's calibrator (a callable is called only once INT8 conversion needs them, so
    FP32 conversion can run while they are collected); a tensor they cannot cover falls back to the calibrator
    (``ranges_source`` says which ran). ``labels`` and ``preprocessing`` are embedded as
    standard TFLite Metadata and as JSON entries (see :mod:`.metadata`). ``hard_swish`` is the form of
    HardSwish (``builtin`` for ARM, ``depthwise`` for x86; see ``translate._hard_swish``). The same inputs
    always give byte-identical files; with ``use_cache`` a repeated conversion of the same inputs reuses
    them (:mod:`ghostnet_edge.export.conversion_cache`). ``representative_sha256`` (or a callable giving
    it, asked with the tensors) is :func:`~ghostnet_edge.utils.hashing.array_digest` of ``representative``
    when the caller has hashed it already (the export's calibration keys its ranges by it); else it is
    computed here, for the INT8 file's provenance entry.
    """
    if out_fp32 is None and out_int8 is None:
        raise ExportError("nothing to convert: neither an FP32 nor an INT8 output path was given",
                          "pass out_fp32 and/or out_int8")
    if io_dtype not in IO_DTYPES:
        raise ExportError(f"unknown INT8 input/output type '{io_dtype}'", f"choose one of {', '.join(IO_DTYPES)}")
    if int16_activations and io_dtype != "float32":
        raise ExportError("a 16x8 model takes float32 input and output here", "pass io_dtype='float32'")
    if out_int8 is not None and representative is None:
        raise ExportError("INT8 conversion needs representative (calibration) images",
                          "pass calibration tensors from ghostnet_edge.calib, shaped (N, 3, H, W)")
    if preprocessing is not None and not isinstance(preprocessing, dict):
        raise ExportError("preprocessing must be a dict (mean, std, resize, ...)", "pass a JSON-serialisable dict")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from ghostnet_edge.export.tflite.translate import load_onnx, onnx_to_tf_function, static_input_shape

    onnx_path = Path(onnx_path)
    proto = load_onnx(onnx_path)
    _, nchw = static_input_shape(proto)
    # A callable is called only when INT8 needs the tensors (after FP32), as ``ranges`` is.
    rep = (_check_representative(representative, nchw) if out_int8 is not None and not callable(representative)
           else None)
    tf = require("tensorflow", "tensorflow", "the TFLite export")

    onnx_bytes = onnx_path.read_bytes()
    onnx_sha = hashlib.sha256(onnx_bytes).hexdigest()
    # A repeated export with the same inputs reuses the converted models (export/conversion_cache.py);
    # the ONNX graph is translated only when something is converted.
    code = cc.source_digest("ghostnet_edge.export.tflite.translate", "ghostnet_edge.export.tflite.convert",
                            "ghostnet_edge.export.tflite.ranges")
    fp32_key = cc.key_of("tflite-fp32", onnx_bytes, hard_swish, tf.__version__, code)
    translated: list[Any] = []
    translate_s = 0.0

    def concrete_fn() -> Any:
        nonlocal translate_s
        if not translated:
            t0 = time.perf_counter()
            translated.append(onnx_to_tf_function(proto, hard_swish=hard_swish)[0])
            translate_s = time.perf_counter() - t0
        return translated[0]

    n, c, h, w = nchw
    nhwc = (n, h, w, c)
    float_model = cc.load(fp32_key, use_cache) if out_fp32 is not None or ranges is not None else None
    if float_model is None:
        concrete_fn()
    labels = _check_labels(labels, _num_classes(translated[0]) if translated else _onnx_num_classes(proto))

    name = _model_name(proto, onnx_path)
    prep = None if preprocessing is None else {**preprocessing, "layout": "NHWC", "input_shape": list(nhwc)}
    from ghostnet_edge.utils.versions import package_versions

    versions = package_versions(("ghostedge", "tensorflow"))
    base_info = {"source_onnx_sha256": onnx_sha, "input_layout": "NHWC", "input_shape": list(nhwc),
                 "converter": "ghostedge onnx->tf translator + tf.lite.TFLiteConverter", "versions": versions}

    fp32_s = int8_s = None
    fp32_bytes = int8_bytes = None
    in_q = out_q = None
    ranges_source = None
    shared = ranges is not None and not int16_activations
    float_object = None  # float_model unpacked, as the converter's last step packed it
    if float_model is None and (out_fp32 is not None or (out_int8 is not None and shared)):
        t0 = time.perf_counter()
        with handed_over() as handover:
            float_model = _convert(tf, concrete_fn(), None, "float32", per_channel)
            float_object = handover.take(float_model) if out_fp32 is not None else None
        cc.store(fp32_key, float_model, use_cache)
        fp32_s = time.perf_counter() - t0
    if out_fp32 is not None:
        t0 = time.perf_counter()
        info = {**base_info, "precision": "fp32"}
        model = _with_metadata(float_model, labels, prep, info, name, model_t=float_object)
        atomic_write_bytes(out_fp32, model)
        fp32_s = (fp32_s or 0.0) + time.perf_counter() - t0
        fp32_bytes = len(model)
    if out_int8 is not None:
        if rep is None:
            rep = _check_representative(representative(), nchw)
        t0 = time.perf_counter()
        model, ranges_source = _convert_int8(tf, concrete_fn, proto, rep, io_dtype, per_channel,
                                             int16_activations, ranges if shared else None, float_model,
                                             use_cache, code)
        info = {**base_info, "precision": "int16x8" if int16_activations else "int8", "io_dtype": io_dtype,
                "per_channel": per_channel, "num_representative": int(rep.shape[0]),
                "representative_nchw_sha256": _known(representative_sha256) or array_digest(rep).hex()}
        model = _with_metadata(model, labels, prep, info, name)
        in_q, out_q = _io_quant(model)
        atomic_write_bytes(out_int8, model)
        int8_s = time.perf_counter() - t0
        int8_bytes = len(model)
    return TfliteResult(
        fp32_path=Path(out_fp32) if out_fp32 is not None else None,
        int8_path=Path(out_int8) if out_int8 is not None else None,
        fp32_bytes=fp32_bytes, int8_bytes=int8_bytes, input_shape_nhwc=nhwc, io_dtype=io_dtype,
        per_channel=per_channel, num_representative=0 if rep is None else int(rep.shape[0]),
        input_quant=in_q, output_quant=out_q, translate_seconds=translate_s,
        fp32_seconds=fp32_s, int8_seconds=int8_s, ranges_source=ranges_source,
    )


def _convert_int8(tf: Any, concrete_fn: Callable[[], Any], proto: Any, rep: np.ndarray, io_dtype: str,
                  per_channel: bool, int16_activations: bool, ranges: Any, float_model: bytes | None,
                  use_cache: bool = False, code: str = "") -> tuple[bytes, str]:
    """The INT8 (or 16x8) flatbuffer: from ``float_model`` and ``ranges`` when they cover every tensor,
    else through the converter and TensorFlow's own calibrator."""
    if ranges is not None and float_model is not None:
        if callable(ranges):
            ranges = ranges()
        shared_route = "shared calibration ranges (one onnxruntime pass over the FP32 ONNX model)"
        key = cc.key_of("tflite-int8", float_model, json.dumps(sorted((k, list(v)) for k, v in ranges.items())),
                        io_dtype, str(per_channel), tf.__version__, code)
        model = cc.load(key, use_cache)
        if model is not None:
            return model, shared_route
        try:
            with _quiet_native_stderr():
                model, plan = quantize_with_ranges(float_model, proto, ranges, io_dtype, per_channel)
        except Exception as exc:
            raise ExportError(f"the TFLite quantizer failed (INT8): {first_line(exc)}",
                              "run with --verbose for the converter's log, or export FP32 only") from exc
        if model is not None:
            cc.store(key, model, use_cache)
            return model, shared_route
        why = (f"TensorFlow's calibrator: {len(plan.unplaced)} tensor(s) had no shared range "
               f"({', '.join(plan.unplaced[:2])})")
    else:
        why = ("TensorFlow's calibrator (16x8 models are calibrated by it)" if int16_activations
               else "TensorFlow's calibrator")
    return _convert(tf, concrete_fn(), _nhwc(rep), io_dtype, per_channel, int16_activations), why


def _quiet_native_stderr():
    """Silence the converter's native logging for one conversion (replayed nowhere; ``--verbose`` shows it).

    The MLIR converter writes absl warnings ("Ignored output_format") and a quantizer banner straight to
    file descriptor 2, past TF_CPP_MIN_LOG_LEVEL, which buries the progress a user is watching.
    """
    from ghostnet_edge.utils.native_stderr import quiet_native_stderr

    return quiet_native_stderr(enabled=not os.environ.get("GHOSTEDGE_VERBOSE"))
