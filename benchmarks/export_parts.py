"""Side by side, in one run: the parts of ``ghostedge export`` that were made faster without changing output.

Each pair runs the old way and the new way alternately, ``--repeats`` times, and prints both times and the
ratio:

* TensorFlow's import in a fresh interpreter, plain against with the converter process's Keras hook
  (``export/tflite/tf_import.NotLoaded``), and with that hook against with both of its hooks (Keras,
  and TensorFlow's namespaces loaded on first use: ``tf_import.install_import_hooks``);
* TensorFlow's import followed by ``tf.nn`` (what the converter loads before its first job), with those
  hooks hiding Keras only against hiding SciPy too (``tf_import.NOT_LOADED``);
* PyTorch's import in a fresh interpreter, plain against with its meta kernels deferred, as in
  ``ghostedge export``'s process (``export/torch_import.py``);
* onnxsim's import in a fresh interpreter, plain and without SymPy (``export/onnx/convert.import_onnxsim``);
* normalising 256 images at 224x224: ``to_chw(normalize(...))`` against ``normalize_chw`` (the results are
  compared bit for bit);
* onnxruntime's ``quantize_static`` of GhostNet 1.0x (random weights, 64 random calibration images, ranges
  given), its own per-channel weight rounding against ``vectorized_weight_rounding`` (the models are
  compared byte for byte);
* the same, its own ``find_by_name``, ``get_initializer``, ``initializer_extend`` and
  ``replace_input_of_all_nodes`` against ``linear_graph_edits``
  (``export/onnx/graph_edits.py``; compared byte for byte);
* the held-out checks' runs on one thread, 32 images: onnxruntime on the whole batch against chunks of
  ``device_runner.run_chunk`` images, and PyTorch in batches of 16 against ``reference.reference_batch``
  (the logits are compared);
* the TFLite FP32 conversion of GhostNet 1.0x with each step's model object unpacked from its bytes
  against handed over from the step before (``export/tflite/unpacked.py``; compared byte for byte);
* the same conversion with TensorFlow loading back the SavedModel it converts from against without
  (``export/tflite/saved_model_reload.py``; compared byte for byte);
* reading a GhostNet 1.0x ``.tflite`` file's input and output tensors: the whole graph (``read_graph``)
  against only those tensors (``read_io``), what the metadata and its checks read seven times an export.

Usage::

    python benchmarks/export_parts.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout without installing the package
    sys.path.insert(0, str(REPO))

_TF_PLAIN = "import time; t = time.perf_counter(); import tensorflow; print(time.perf_counter() - t)"
_TF_KERAS = ("import sys, time; from ghostnet_edge.export.tflite.tf_import import NotLoaded; "
             "sys.meta_path.insert(0, NotLoaded(('keras',))); " + _TF_PLAIN)
# TensorFlow's import and then tf.nn (what the converter process loads before its first job), with the
# hooks hiding Keras only against hiding SciPy too.
_TF_NN = ("; from ghostnet_edge.export.tflite.tf_import import load_translation_namespaces; "
          "load_translation_namespaces(); print(time.perf_counter() - t)")
_TF_NN_KERAS = ("import sys, time; from ghostnet_edge.export.tflite import tf_import as h; "
                "sys.meta_path[:0] = [h.NotLoaded(('keras',)), h.LazyApiNamespaces()]; "
                "t = time.perf_counter(); import tensorflow" + _TF_NN)
_TF_NN_HOOKS = ("import time; from ghostnet_edge.export.tflite.tf_import import install_import_hooks; "
                "install_import_hooks(); t = time.perf_counter(); import tensorflow" + _TF_NN)
_TORCH_PLAIN = "import time; t = time.perf_counter(); import torch; print(time.perf_counter() - t)"
_TORCH_DEFERRED = ("import time; from ghostnet_edge.export.torch_import import defer_meta_kernels; "
                   "defer_meta_kernels(); " + _TORCH_PLAIN)
_TF_HOOKS = ("import time; from ghostnet_edge.export.tflite.tf_import import install_import_hooks; "
             "install_import_hooks(); " + _TF_PLAIN)
_SIM_PLAIN = "import time, torch; t = time.perf_counter(); import onnxsim; print(time.perf_counter() - t)"
_SIM_HIDDEN = ("import time, torch; from ghostnet_edge.export.onnx.convert import import_onnxsim; "
               "t = time.perf_counter(); import_onnxsim(); print(time.perf_counter() - t)")


def _child_seconds(code: str) -> float:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"})
    return float(out.stdout.strip().splitlines()[-1])


def _timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _pair(name: str, old: Callable[[], float], new: Callable[[], float], repeats: int) -> None:
    olds, news = [], []
    for _ in range(repeats):  # alternated, so a change of machine speed hits both alike
        olds.append(old())
        news.append(new())
    o, n = min(olds), min(news)
    print(f"  {name:<44s} old {o:6.3f} s   new {n:6.3f} s   {o / n:5.1f}x   "
          f"(all: {', '.join(f'{v:.2f}' for v in olds)} / {', '.join(f'{v:.2f}' for v in news)})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    import numpy as np

    print("best of", args.repeats, "(old = before the change, new = now; the export's own code for both)")
    _pair("TensorFlow import (converter process)", lambda: _child_seconds(_TF_PLAIN),
          lambda: _child_seconds(_TF_KERAS), args.repeats)
    _pair("TensorFlow import: + namespaces on first use", lambda: _child_seconds(_TF_KERAS),
          lambda: _child_seconds(_TF_HOOKS), args.repeats)
    _pair("TensorFlow import + tf.nn: SciPy not loaded", lambda: _child_seconds(_TF_NN_KERAS),
          lambda: _child_seconds(_TF_NN_HOOKS), args.repeats)
    _pair("PyTorch import: meta kernels deferred", lambda: _child_seconds(_TORCH_PLAIN),
          lambda: _child_seconds(_TORCH_DEFERRED), args.repeats)
    _pair("onnxsim import (after torch)", lambda: _child_seconds(_SIM_PLAIN),
          lambda: _child_seconds(_SIM_HIDDEN), args.repeats)

    from ghostnet_edge.data.transforms import normalize, normalize_chw, to_chw

    images = np.random.default_rng(0).integers(0, 256, (256, 224, 224, 3), dtype=np.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    out = np.empty((256, 3, 224, 224), np.float32)
    ref = np.stack([to_chw(normalize(im, mean, std)) for im in images])
    for i, im in enumerate(images):
        normalize_chw(im, mean, std, out[i])
    assert np.array_equal(ref.view(np.uint32), out.view(np.uint32)), "normalize_chw differs"
    _pair("normalise 256 images at 224x224",
          lambda: _timed(lambda: [to_chw(normalize(im, mean, std)) for im in images]),
          lambda: _timed(lambda: [normalize_chw(im, mean, std, out[i]) for i, im in enumerate(images)]),
          args.repeats)

    from ghostnet_edge.calib.ranges import collect_ranges
    from ghostnet_edge.export.onnx import weight_params as wp
    from ghostnet_edge.export.onnx.convert import export_onnx
    from ghostnet_edge.export.onnx.quantize import quantize_onnx
    from ghostnet_edge.models import create_model, get_spec

    with tempfile.TemporaryDirectory(prefix="ghostedge-parts-") as tmp:
        tmp = Path(tmp)
        src = tmp / "model.onnx"
        export_onnx(create_model("ghostnet_100", seed=0).eval(), get_spec("ghostnet_100").input_size, src)
        x = np.random.default_rng(1).standard_normal((64, 3, 224, 224)).astype(np.float32)
        ranges = collect_ranges(src, x, "minmax", threads=2, use_cache=False)
        original = wp.vectorized_weight_rounding

        def quantize(vectorized: bool) -> float:
            wp.vectorized_weight_rounding = original if vectorized else _unchanged
            try:
                out_path = tmp / f"q_{vectorized}.onnx"
                return _timed(lambda: quantize_onnx(src, out_path, x, ranges=ranges, threads=2, work_dir=tmp))
            finally:
                wp.vectorized_weight_rounding = original

        _pair("onnxruntime quantize_static, GhostNet 1.0x", lambda: quantize(False), lambda: quantize(True),
              args.repeats)
        digests = {hashlib.sha256((tmp / f"q_{v}.onnx").read_bytes()).hexdigest() for v in (False, True)}
        print(f"  quantized models byte-identical: {len(digests) == 1}")

        def quantize_edits(fast: bool) -> float:
            out_path = tmp / f"e_{fast}.onnx"
            return _timed(lambda: quantize_onnx(src, out_path, x, ranges=ranges, threads=2, work_dir=tmp,
                                                fast_graph_edits=fast))

        _pair("quantize_static, linear graph edits", lambda: quantize_edits(False), lambda: quantize_edits(True),
              args.repeats)
        digests = {hashlib.sha256((tmp / f"e_{v}.onnx").read_bytes()).hexdigest() for v in (False, True)}
        print(f"  quantized models byte-identical: {len(digests) == 1}")
        print("  calls per quantization: " + _graph_edit_calls(lambda: quantize_edits(True)))
        _held_out_runs(src, args.repeats)

        tflite = _tflite_of(src, tmp)
        if tflite is not None:
            _handover_pair(src, tmp, args.repeats)
            _reload_pair(src, tmp, args.repeats)
            from ghostnet_edge.export.tflite.inspect import read_graph, read_io

            full = read_graph(tflite)
            assert read_io(tflite).inputs == [full.tensors[i] for i in full.inputs], "read_io differs"
            _pair("a .tflite's I/O tensors, GhostNet 1.0x FP32", lambda: _timed(lambda: read_graph(tflite)),
                  lambda: _timed(lambda: read_io(tflite)), args.repeats)
    return 0


def _held_out_runs(onnx_path: Path, repeats: int) -> None:
    """The held-out checks' runs, one thread, 32 images at 224: onnxruntime on the whole batch against chunks
    of ``run_chunk`` images, and PyTorch's reference in batches of 16 against ``reference_batch``."""
    import numpy as np

    from ghostnet_edge.export.reference import reference_batch, run_torch, torch_threads
    from ghostnet_edge.models import create_model
    from ghostnet_edge.runtime import device_runner as dr

    x = np.random.default_rng(2).standard_normal((32, 3, 224, 224)).astype(np.float32)

    def whole() -> np.ndarray:  # a new session each time, as each held-out check opens its model
        model = dr.load_model(str(onnx_path), "onnxruntime", 1)
        return model.run_native(model.prepare(x))

    def chunked() -> np.ndarray:
        return dr.load_model(str(onnx_path), "onnxruntime", 1).run(x)

    a, b = whole(), chunked()
    _pair(f"onnxruntime, 32 images, new session: one run / chunks of {dr.run_chunk(224 * 224)}",
          lambda: _timed(whole), lambda: _timed(chunked), repeats)
    print(f"  logits identical: {np.array_equal(a, b)} (max |diff| {np.abs(a - b).max():.2g})")
    net = create_model("ghostnet_100", seed=0).eval()
    with torch_threads(1):
        a, b = run_torch(net, x, 16), run_torch(net, x)
        _pair(f"PyTorch reference, 32 images: batches of 16 / {reference_batch(224 * 224)}",
              lambda: _timed(lambda: run_torch(net, x, 16)), lambda: _timed(lambda: run_torch(net, x)), repeats)
    print(f"  logits max |diff|: {np.abs(a - b).max():.2g}")


def _graph_edit_calls(run: Callable[[], object]) -> str:
    """How often one quantization calls the replaced functions, and the model's size."""
    from onnxruntime.quantization import onnx_model

    from ghostnet_edge.export.onnx import graph_edits as ge

    counts = {"indexed_first_by_name": 0, "get_initializer": 0, "initializer_extend": 0,
              "replace_input_of_all_nodes": 0}
    originals = {name: getattr(ge, name) for name in counts}

    def counted(name: str) -> Callable[..., object]:
        def call(*a: object) -> object:
            counts[name] += 1
            return originals[name](*a)
        return call

    sizes: dict[str, int] = {}
    init = onnx_model.ONNXModel.__init__

    def sized(self: object, model: object) -> None:
        init(self, model)
        sizes.setdefault("nodes", len(model.graph.node))                 # type: ignore[attr-defined]
        sizes.setdefault("initializers", len(model.graph.initializer))   # type: ignore[attr-defined]

    for name in counts:
        setattr(ge, name, counted(name))
    onnx_model.ONNXModel.__init__ = sized
    try:
        run()
    finally:
        for name, fn in originals.items():
            setattr(ge, name, fn)
        onnx_model.ONNXModel.__init__ = init
    return (f"find_by_name {counts['indexed_first_by_name']}, get_initializer {counts['get_initializer']}, "
            f"initializer_extend {counts['initializer_extend']}, replace_input_of_all_nodes "
            f"{counts['replace_input_of_all_nodes']} (float model: {sizes.get('nodes')} nodes, "
            f"{sizes.get('initializers')} initializers)")


def _tflite_of(onnx_path: Path, tmp: Path) -> bytes | None:
    """The FP32 ``.tflite`` of ``onnx_path`` (None without TensorFlow)."""
    try:
        from ghostnet_edge.export.tflite.convert import convert_onnx_to_tflite
    except ImportError:
        return None
    out = tmp / "model_fp32.tflite"
    try:
        convert_onnx_to_tflite(onnx_path, out, None)
    except Exception:  # noqa: BLE001 - TensorFlow absent: that part is skipped
        return None
    return out.read_bytes()


def _handover_pair(onnx_path: Path, tmp: Path, repeats: int) -> None:
    """The FP32 conversion (translation, converter, metadata) with its model objects unpacked again at each
    step against handed over (``export/tflite/unpacked.py``)."""
    import contextlib

    from ghostnet_edge.export.tflite import unpacked

    _conversion_pair("TFLite FP32 conversion, GhostNet 1.0x: model objects handed over", "handed_over",
                     lambda: contextlib.nullcontext(unpacked.Handover()), unpacked.handed_over, onnx_path, tmp,
                     repeats)


def _reload_pair(onnx_path: Path, tmp: Path, repeats: int) -> None:
    """The FP32 conversion with TensorFlow's reload of its temporary SavedModel against without it
    (``export/tflite/saved_model_reload.py``)."""
    import contextlib

    from ghostnet_edge.export.tflite.saved_model_reload import skip_saved_model_reload

    _conversion_pair("TFLite FP32 conversion, GhostNet 1.0x: no reload of the SavedModel", "skip_saved_model_reload",
                     lambda: contextlib.nullcontext([]), skip_saved_model_reload, onnx_path, tmp, repeats)


def _conversion_pair(title: str, name: str, old: Callable[[], object], new: Callable[[], object], onnx_path: Path,
                     tmp: Path, repeats: int) -> None:
    """The FP32 conversion with ``export/tflite/convert``'s ``name`` set to ``old`` against ``new``; the
    files are compared byte for byte."""
    from ghostnet_edge.export.tflite import convert as tc

    real = getattr(tc, name)

    def convert(which: str, value: Callable[[], object]) -> float:
        setattr(tc, name, value)
        try:
            return _timed(lambda: tc.convert_onnx_to_tflite(onnx_path, tmp / f"{name}_{which}.tflite", None))
        finally:
            setattr(tc, name, real)

    _pair(title, lambda: convert("old", old), lambda: convert("new", new), repeats)
    same = (tmp / f"{name}_old.tflite").read_bytes() == (tmp / f"{name}_new.tflite").read_bytes()
    print(f"  converted files byte-identical: {same}")


def _unchanged():  # noqa: ANN202 - the stand-in for vectorized_weight_rounding: onnxruntime's own rounding
    import contextlib

    return contextlib.nullcontext(False)


if __name__ == "__main__":
    sys.exit(main())
