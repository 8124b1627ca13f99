"""Run ``.tflite`` files and check them against PyTorch's logits.

Interpreter choice: ai-edge-litert first (its XNNPACK runs the INT8 graph), then tflite-runtime (where it
is the only one installed; its 2.14 XNNPACK leaves INT8 graphs on the slow reference kernels), then
``tf.lite``. Inputs arrive NCHW (the layout every other stage uses) and are transposed to the model's
NHWC here; INT8 inputs/outputs are (de)quantized with the model's own scale and zero point. INT8
results are not bit-identical across interpreters: XNNPACK (ai-edge-litert) and the reference kernels
(tflite-runtime 2.14, or any interpreter with delegates off) round requantization differently.

FP32 tolerance: the translated graph runs the same float math as PyTorch in a different order (XNNPACK's
blocked GEMMs, BN folded into weights by onnxsim), which moves logits by ~1e-6 relative; we require
``max |tflite - torch| <= 1e-4 * max(1, max |torch|)`` (:data:`FP32_TOL`), i.e. 1e-4 absolute for
logits of order 1 and relative above that, because random-init networks give logits in the tens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ghostnet_edge.errors import ExportError, MissingDependencyError
from ghostnet_edge.export.checks import db_from_sums, sqnr_db, square_sums, top1_agreement  # noqa: F401

FP32_TOL = 1e-4
BACKENDS = ("auto", "ai-edge-litert", "tflite-runtime", "tensorflow")


def _interpreter_class(backend: str) -> tuple[Any, str]:
    if backend not in BACKENDS:
        raise ExportError(f"unknown TFLite interpreter '{backend}'", f"choose one of {', '.join(BACKENDS)}")
    tried = []
    order = ("ai-edge-litert", "tflite-runtime", "tensorflow") if backend == "auto" else (backend,)
    for name in order:
        try:
            if name == "ai-edge-litert":
                from ai_edge_litert.interpreter import Interpreter, OpResolverType
            elif name == "tflite-runtime":
                from tflite_runtime.interpreter import Interpreter, OpResolverType
            else:
                import tensorflow as tf

                Interpreter, OpResolverType = tf.lite.Interpreter, tf.lite.experimental.OpResolverType
            return (Interpreter, OpResolverType), name
        except ImportError:
            tried.append(name)
    raise MissingDependencyError("ai_edge_litert", "ai-edge-litert", f"running TFLite models (tried {', '.join(tried)})")


def interpreter_backend(backend: str = "auto") -> str:
    """The interpreter package that would run models (``ai-edge-litert``...); raises when none is installed."""
    return _interpreter_class(backend)[1]


def make_interpreter(model: Path | str | bytes, num_threads: int = 1, backend: str = "auto",
                     preserve_all_tensors: bool = False) -> tuple[Any, str]:
    """An allocated interpreter and the backend's name. ``preserve_all_tensors`` turns delegates off
    (XNNPACK owns its intermediate tensors) so every intermediate can be read after ``invoke``."""
    from ghostnet_edge.runtime.tflite_check import problem_message, verify_tflite_bytes, verify_tflite_file

    (cls, resolver), name = _interpreter_class(backend)
    kwargs: dict[str, Any] = {"num_threads": int(num_threads)}
    # The interpreters do not verify the flatbuffer (a cut file crashes them): verify it first.
    if isinstance(model, bytes | bytearray):
        kwargs["model_content"] = bytes(model)
        label, problems = "the converted model", verify_tflite_bytes(kwargs["model_content"])
    else:
        path = Path(model)
        if not path.is_file():
            raise ExportError(f"TFLite file {path} does not exist", "convert the model first")
        kwargs["model_path"] = str(path)
        label, problems = str(path), verify_tflite_file(path)
    if problems:
        raise ExportError(problem_message(label, problems), "convert the model again (ghostedge export)")
    if preserve_all_tensors:
        kwargs["experimental_preserve_all_tensors"] = True
        kwargs["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        interp = cls(**kwargs)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ExportError(f"{name} cannot load the TFLite model: {exc}",
                          "the file is corrupt or needs a newer runtime; convert it again") from exc
    return interp, name


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype: np.dtype) -> np.ndarray:
    """Float -> int8/uint8 with the model's input parameters (half away from zero, like TFLite's QUANTIZE)."""
    info = np.iinfo(dtype)
    v = np.asarray(x, dtype=np.float32) / np.float32(scale)
    r = np.sign(v) * np.floor(np.abs(v) + 0.5)
    return np.clip(r + zero_point, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return (q.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)


def _check_batch(nchw: Any, shape_nhwc: list[int]) -> np.ndarray:
    x = np.asarray(nchw)
    _, h, w, c = shape_nhwc
    if x.ndim != 4 or x.shape[1:] != (c, h, w):
        raise ExportError(f"input batch has shape {tuple(x.shape)}, the TFLite model takes (N, {c}, {h}, {w}) NCHW",
                          "preprocess the images at the model's input size")
    return x.astype(np.float32, copy=False)


def run_interpreter(interp: Any, nchw_batch: np.ndarray) -> np.ndarray:
    """Logits (float32) for an NCHW batch, one image per invoke (the model has batch 1)."""
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    x = _check_batch(nchw_batch, list(inp["shape"]))
    in_scale, in_zp = inp["quantization"]
    out_scale, out_zp = out["quantization"]
    results = []
    for img in x:
        feed = img.transpose(1, 2, 0)[None]
        if inp["dtype"] != np.float32:
            feed = quantize(feed, in_scale, in_zp, inp["dtype"])
        interp.set_tensor(inp["index"], feed)
        interp.invoke()
        y = interp.get_tensor(out["index"])
        results.append(dequantize(y, out_scale, out_zp) if out["dtype"] != np.float32 else y.astype(np.float32))
    return np.concatenate(results, axis=0)


def run_tflite(path: Path | str, nchw_batch: np.ndarray, num_threads: int = 1, backend: str = "auto") -> np.ndarray:
    """Float logits ``(N, classes)`` of a ``.tflite`` model for a preprocessed NCHW float batch."""
    interp, _ = make_interpreter(path, num_threads=num_threads, backend=backend)
    return run_interpreter(interp, nchw_batch)


def fp32_tolerance(reference: np.ndarray, tol: float = FP32_TOL) -> float:
    """The allowed max abs difference: ``tol`` absolute, relative to the logits' scale above 1."""
    from ghostnet_edge.export import checks

    return checks.fp32_tolerance(reference, tol)


def verify_tflite_fp32(path: Path | str, torch_logits: np.ndarray, inputs: np.ndarray,
                       tol: float | None = FP32_TOL, backend: str = "auto") -> float:
    """Max abs difference between the FP32 model's logits and PyTorch's; raises past the tolerance.

    ``tol=None`` only measures. The bound is ``tol * max(1, max|torch_logits|)`` (see module docstring).
    """
    ref = np.asarray(torch_logits, dtype=np.float32)
    got = run_tflite(path, inputs, backend=backend)
    if got.shape != ref.shape:
        raise ExportError(f"TFLite logits have shape {got.shape}, PyTorch's {ref.shape}",
                          "pass the PyTorch logits of the same inputs")
    diff = float(np.abs(got - ref).max())
    if tol is not None and diff > fp32_tolerance(ref, tol):
        raise ExportError(f"FP32 TFLite model {path} differs from PyTorch by {diff:.3g} "
                          f"(allowed {fp32_tolerance(ref, tol):.3g})",
                          "the ONNX->TF translation is wrong for some op; run the per-layer comparison")
    return diff


def verify_tflite_int8(path: Path | str, torch_logits: np.ndarray, inputs: np.ndarray,
                       min_agreement: float | None = None, backend: str = "auto") -> float:
    """Top-1 agreement of the INT8 model with PyTorch (fraction of images with the same arg-max).

    Raises :class:`ExportError` below ``min_agreement`` when one is given.
    """
    ref = np.asarray(torch_logits, dtype=np.float32)
    got = run_tflite(path, inputs, backend=backend)
    if got.shape != ref.shape:
        raise ExportError(f"TFLite logits have shape {got.shape}, PyTorch's {ref.shape}",
                          "pass the PyTorch logits of the same inputs")
    agree = top1_agreement(got, ref)
    if min_agreement is not None and agree < min_agreement:
        raise ExportError(f"INT8 TFLite model {path} agrees with PyTorch on {agree:.1%} of top-1 predictions "
                          f"(required {min_agreement:.1%})",
                          "calibrate on more (and more representative) images, or keep the FP32 model")
    return agree


@dataclass(frozen=True)
class LayerSqnr:
    name: str
    op: str
    shape: tuple[int, ...]
    sqnr_db: float
    # The op's activation inputs, by tensor name (GRAPH_INPUT for the model's float input). The report
    # measures each layer's drop against the noisiest measured one.
    inputs: tuple[str, ...] = ()


GRAPH_INPUT = "<graph input>"


def per_layer_sqnr(int8_path: Path | str, fp32_path: Path | str, nchw_batch: np.ndarray,
                   backend: str = "auto", num_threads: int = 1) -> list[LayerSqnr]:
    """SQNR of every INT8 activation against the FP32 model's tensor of the same name, in graph order.

    Both files come from the same translated TF graph, so the converter gives matching ops the same
    tensor names (derived from the ONNX node names). Intermediates are read with delegates off.
    """
    from ghostnet_edge.export.tflite.inspect import read_graph

    gq, gf = read_graph(int8_path), read_graph(fp32_path)
    f_by_name = {t.name: t for t in gf.tensors if not t.constant}
    producer = {o: op.name for op in gq.ops for o in op.outputs}
    op_of = {o: op for op in gq.ops for o in op.outputs}
    pairs = [(t, f_by_name[t.name]) for t in gq.tensors
             if not t.constant and t.index in producer and t.name in f_by_name and t.scale
             and t.dtype in ("INT8", "UINT8")]
    # The QUANTIZE that turns a float image into int8 is measured against the float model's input, so
    # the first layer's drop is taken against the input's own rounding, not against a perfect image.
    measured = {t.index for t, _ in pairs}
    for op in gq.ops:
        if op.name == "QUANTIZE" and set(op.inputs) & set(gq.inputs) and gf.inputs:
            tq = gq.tensors[op.outputs[0]]
            if tq.index not in measured and tq.scale and tq.dtype in ("INT8", "UINT8"):
                pairs.append((tq, gf.tensors[gf.inputs[0]]))
    pairs.sort(key=lambda pair: pair[0].index)
    iq, _ = make_interpreter(int8_path, num_threads, backend=backend, preserve_all_tensors=True)
    if_, _ = make_interpreter(fp32_path, num_threads, backend=backend, preserve_all_tensors=True)
    # Squared signal and noise summed image by image: keeping every activation of every image costs
    # gigabytes at 224x224.
    sums: dict[str, list[float]] = {}
    for img in np.asarray(nchw_batch, dtype=np.float32):
        run_interpreter(iq, img[None])
        run_interpreter(if_, img[None])
        for tq, tf_ in pairs:
            if len(tq.scale) != 1:
                continue
            q = dequantize(iq.get_tensor(tq.index), tq.scale[0], tq.zero_point[0])
            sig, err = square_sums(if_.get_tensor(tf_.index), q)
            acc = sums.setdefault(tq.name, [0.0, 0.0])
            acc[0] += sig
            acc[1] += err
    out = []
    for tq, _ in pairs:
        if tq.name not in sums:
            continue
        sources = tuple(GRAPH_INPUT if i in gq.inputs else gq.tensors[i].name
                        for i in op_of[tq.index].inputs if i >= 0 and not gq.tensors[i].constant)
        out.append(LayerSqnr(tq.name, producer[tq.index], tq.shape, db_from_sums(*sums[tq.name]), sources))
    return out
