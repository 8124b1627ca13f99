"""One calibration pass for both INT8 formats: ranges collected once, cached, and handed to onnxruntime's
quantizer and to TensorFlow's, with the results those quantizers give when they calibrate themselves."""

from __future__ import annotations

import hashlib
import importlib
import json
from pathlib import Path

import numpy as np
import pytest

from ghostnet_edge.calib import ranges as cr
from ghostnet_edge.errors import ExportError

MODEL = "ghostnet_cifar_050"


def _sha(p: Path) -> str:
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


@pytest.fixture(scope="module", params=[MODEL, "mobilenetv3_large_cifar_100"])
def onnx_model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """GhostNet 0.5x and MobileNetV3-L (32x32; its hard-sigmoid is one ONNX node that the translator
    splits), trained weights where the repository has them, through the ONNX stage."""
    from ghostnet_edge.export.onnx.convert import export_onnx
    from ghostnet_edge.models import create_model, get_spec

    name = request.param
    out = tmp_path_factory.mktemp("ranges") / "model.onnx"
    model = create_model(name, seed=0).eval()
    ref = Path(__file__).resolve().parents[1] / "references" / "cifar10" / name / "model.safetensors"
    if ref.is_file():
        from ghostnet_edge.models.checkpoint import load_checkpoint

        model.load_state_dict(load_checkpoint(ref).state_dict)
    export_onnx(model, get_spec(name).input_size, out)
    return out


@pytest.fixture(scope="module")
def calib() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((24, 3, 32, 32)).astype(np.float32)


# ---- the pass and its cache ---------------------------------------------------------------------------------


def test_ranges_key_covers_model_images_method_and_runtime(calib: np.ndarray) -> None:
    base = cr.ranges_key(b"model", calib, "minmax", "1.0")
    assert base == cr.ranges_key(b"model", calib.copy(), "minmax", "1.0")
    other = calib.copy()
    other[0, 0, 0, 0] += 1e-3
    assert len({base, cr.ranges_key(b"model2", calib, "minmax", "1.0"), cr.ranges_key(b"model", other, "minmax", "1.0"),
                cr.ranges_key(b"model", calib, "entropy", "1.0"), cr.ranges_key(b"model", calib, "minmax", "1.1"),
                cr.ranges_key(b"model", calib[:12], "minmax", "1.0")}) == 6


def test_collect_caches_and_survives_a_corrupt_entry(onnx_model: Path, calib: np.ndarray, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    first = cr.collect_ranges(onnx_model, calib, "minmax", threads=1, cache_dir=tmp_path)
    assert not first.cache_hit and first.num_images == len(calib) and len(first.ranges) > 100
    assert all(lo <= hi for lo, hi in first.ranges.values())
    again = cr.collect_ranges(onnx_model, calib, "minmax", threads=1, cache_dir=tmp_path)
    assert again.cache_hit and again.ranges == first.ranges and again.key == first.key
    (tmp_path / f"{first.key}.json").write_text("{ not json")
    healed = cr.collect_ranges(onnx_model, calib, "minmax", threads=1, cache_dir=tmp_path)
    assert not healed.cache_hit and healed.ranges == first.ranges
    assert json.loads((tmp_path / f"{first.key}.json").read_text())["method"] == "minmax"
    nocache = cr.collect_ranges(onnx_model, calib, "minmax", threads=1, use_cache=False, cache_dir=tmp_path / "x")
    assert nocache.ranges == first.ranges and not (tmp_path / "x").exists()
    # The cache keeps the most recently used MAX_CACHED files.
    monkeypatch.setattr(cr, "MAX_CACHED", 1)
    other = cr.collect_ranges(onnx_model, calib[:8], "minmax", threads=1, cache_dir=tmp_path)
    assert [p.name for p in tmp_path.glob("*.json")] == [f"{other.key}.json"]


def test_array_digest_hashes_the_float32_c_order_bytes_without_a_copy_when_it_can() -> None:
    import hashlib

    from ghostnet_edge.utils.hashing import array_digest

    x = np.random.default_rng(3).standard_normal((4, 3, 5, 5)).astype(np.float32)
    want = hashlib.sha256(x.tobytes()).digest()
    assert array_digest(x) == want
    assert array_digest(np.asfortranarray(x)) == want          # another layout: hashed as C order
    assert array_digest(x.astype(np.float64)) == want          # another dtype: hashed as float32
    assert array_digest(x.transpose(0, 2, 3, 1)) != want       # NHWC is other bytes
    # the cache key is what it was when it hashed a copy
    old = hashlib.sha256()
    old.update(hashlib.sha256(b"model").digest())
    old.update(repr(x.shape).encode())
    old.update(want)
    old.update(b"minmax\0onnxruntime 1.0\0format " + str(cr._FORMAT).encode())
    assert cr.ranges_key(b"model", x, "minmax", "1.0") == old.hexdigest()


def test_skipped_activation_inputs_take_their_activations_range(onnx_model: Path, calib: np.ndarray,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Leaving Relu/Clip inputs unmeasured changes no measured range (beyond float rounding of the
    fused kernels) and gives each skipped tensor its activation's output range."""
    import onnx

    skipped = cr.activation_inputs(onnx.load(str(onnx_model)))
    assert len(skipped) > 5
    fast = cr.collect_ranges(onnx_model, calib, "minmax", threads=1, use_cache=False).ranges
    monkeypatch.setattr(cr, "activation_inputs", lambda _model: {})
    full = cr.collect_ranges(onnx_model, calib, "minmax", threads=1, use_cache=False).ranges
    assert set(fast) == set(full)
    for name, (lo, hi) in full.items():
        got = fast[name] if name not in skipped else fast[skipped[name]]
        assert got == pytest.approx((lo, hi) if name not in skipped else full[skipped[name]], rel=1e-4, abs=1e-5)
        if name in skipped:
            assert fast[name] == fast[skipped[name]]


def test_collect_rejects_bad_input(onnx_model: Path) -> None:
    with pytest.raises(ExportError, match="expected"):
        cr.collect_ranges(onnx_model, np.zeros((0, 3, 32, 32), np.float32), use_cache=False)
    with pytest.raises(Exception, match="calibration method"):
        cr.collect_ranges(onnx_model, np.zeros((1, 3, 32, 32), np.float32), "kl", use_cache=False)


@pytest.mark.parametrize("method", ["minmax", "percentile"])
def test_onnx_int8_from_shared_ranges_equals_onnxruntimes_own_calibration(onnx_model: Path, calib: np.ndarray,
                                                                         tmp_path: Path, method: str) -> None:
    """The QDQ model from the shared pass is the one ``quantize_static`` makes calibrating itself (same
    calibrator, batches and session options), through both ways of handing it the ranges: the same
    graph, and the same scales and codes up to the float rounding of the fused Conv+Relu kernels that
    the shared pass keeps (its Relu inputs take their Relu's range, as onnxruntime's quantizer sets)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from ghostnet_edge.export.onnx import quantize as q

    own = tmp_path / "own.onnx"
    with cr.optimized_calibration_sessions(1):
        quantize_static(str(onnx_model), str(own), cr.ArrayDataReader(calib, "input"), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=getattr(CalibrationMethod, {"minmax": "MinMax", "percentile": "Percentile"}[method]),
                        extra_options={"WeightSymmetric": True, "CalibStridedMinMax": 1})
    ranges = cr.collect_ranges(onnx_model, calib, method, threads=1, use_cache=False)
    act = q.ActivationChoice("uint8", False, "x86_64", "test")
    for cache_file in (True, False):
        out = tmp_path / f"shared-{cache_file}.onnx"
        q.quantize_onnx(onnx_model, out, calib, method, act, ranges=ranges, work_dir=tmp_path,
                        cache_file=cache_file)
        a, b = onnx.load(str(own)), onnx.load(str(out))
        assert [n.op_type for n in a.graph.node] == [n.op_type for n in b.graph.node]
        _same_initializers(a, b)
    with pytest.raises(ExportError, match="collected with"):
        q.quantize_onnx(onnx_model, tmp_path / "x.onnx", calib, "entropy", act, ranges=ranges, work_dir=tmp_path)


def _same_initializers(a: object, b: object) -> None:
    from onnx import numpy_helper

    ia = {i.name: numpy_helper.to_array(i) for i in a.graph.initializer}
    ib = {i.name: numpy_helper.to_array(i) for i in b.graph.initializer}
    assert set(ia) == set(ib)
    for name, x in ia.items():
        y = ib[name]
        assert x.dtype == y.dtype and x.shape == y.shape, name
        if x.dtype.kind == "f":
            np.testing.assert_allclose(y, x, rtol=1e-3, atol=1e-8, err_msg=name)
        elif x.dtype.itemsize == 1:
            assert np.abs(x.astype(np.int32) - y.astype(np.int32)).max(initial=0) <= 1, name
        else:
            np.testing.assert_allclose(y, x, rtol=1e-3, atol=1, err_msg=name)


# ---- TFLite: placing the ranges ---------------------------------------------------------------------------------


def test_tensor_scope() -> None:
    from ghostnet_edge.export.tflite.ranges import tensor_scope

    assert tensor_scope("blocks/b.0/ghost1/primary_conv/primary_conv.2/Relu/Relu;blocks/b.0/x/Conv/BiasAdd") == \
        "blocks/b.0/ghost1/primary_conv/primary_conv.2/Relu"
    assert tensor_scope("a/Concat/concat") == "a/Concat"
    assert tensor_scope("serving_default_image:0") == ""
    assert tensor_scope("StatefulPartitionedCall:0") == ""


@pytest.fixture(scope="module")
def tf_pair(onnx_model: Path, calib: np.ndarray) -> dict:
    """The float flatbuffer, TensorFlow's own calibration of it, and its own INT8 model, on ``calib``."""
    pytest.importorskip("tensorflow")
    import tensorflow as tf
    from tensorflow.lite.python.optimize import calibrator as tf_calibrator

    from ghostnet_edge.export.tflite.translate import load_onnx, onnx_to_tf_function

    proto = load_onnx(onnx_model)
    concrete, _ = onnx_to_tf_function(proto)
    rep = np.ascontiguousarray(calib.transpose(0, 2, 3, 1))
    module = tf.Module()
    module.serving = concrete

    def converter(calibrate_only: bool = False) -> object:
        conv = tf.lite.TFLiteConverter.from_concrete_functions([concrete], module)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([r[None]] for r in rep)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = conv.inference_output_type = tf.int8
        conv._experimental_calibrate_only = calibrate_only
        return conv

    float_models: list[bytes] = []
    original = tf_calibrator.Calibrator.calibrate

    def spy(self: object, gen: object) -> bytes:
        float_models.append(bytes(self._model_content))
        return original(self, gen)

    tf_calibrator.Calibrator.calibrate = spy
    try:
        tf_int8 = bytes(converter().convert())
    finally:
        tf_calibrator.Calibrator.calibrate = original
    tf_plain = tf.lite.TFLiteConverter.from_concrete_functions([concrete], module)
    return {"proto": proto, "float": float_models[0], "tf_int8": tf_int8,
            "tf_calibrated": bytes(converter(True).convert()), "fp32": bytes(tf_plain.convert())}


def _stats(model: bytes) -> dict[int, tuple[float, float]]:
    from ghostnet_edge.export.tflite.metadata import schema

    m = schema().ModelT.InitFromPackedBuf(bytearray(model), 0)
    return {i: (float(t.quantization.min[0]), float(t.quantization.max[0]))
            for i, t in enumerate(m.subgraphs[0].tensors)
            if t.quantization is not None and t.quantization.min is not None and len(t.quantization.min)}


def test_shared_ranges_cover_every_tensor_the_calibrator_measures(tf_pair: dict, onnx_model: Path,
                                                                   calib: np.ndarray) -> None:
    """Placed by name, the ONNX pass's ranges cover exactly the tensors TensorFlow's calibrator measures,
    and agree with its numbers, except where the calibrator's logging saw a tensor overwritten by an
    in-place ADD/MUL after it: there its range is wider and contains ours."""
    from ghostnet_edge.export.tflite import ranges as tr
    from ghostnet_edge.export.tflite.metadata import schema

    s = schema()
    model_t = s.ModelT.InitFromPackedBuf(bytearray(tf_pair["float"]), 0)
    ranges = cr.collect_ranges(onnx_model, calib, "minmax", threads=1, use_cache=False).ranges
    proto = tf_pair["proto"]
    plan = tr.tflite_stats(model_t, tr.op_names_of(model_t, s), tr.onnx_scopes(proto), ranges,
                           ["input"], [o.name for o in proto.graph.output], tr.onnx_hard_swish_inputs(proto))
    assert plan.complete, plan.unplaced
    theirs = _stats(tf_pair["tf_calibrated"])
    assert set(plan.stats) == set(theirs)
    names = tr.op_names_of(model_t, s)
    consumers: dict[int, set[str]] = {}
    for op in model_t.subgraphs[0].operators:
        for i in op.inputs:
            consumers.setdefault(int(i), set()).add(names[op.opcodeIndex])
    # The hard-swish tensors (translate._hard_swish) all feed its MUL: not counted against the bound.
    sg = model_t.subgraphs[0]
    hard_swish = set(tr.hard_swish_stats(model_t, names, lambda i: tr.tensor_scope(tr._name(sg.tensors[i])),
                                         tr.onnx_hard_swish_inputs(proto), ranges))
    wider = 0
    for idx, (lo, hi) in theirs.items():
        mine = plan.stats[idx]
        scale = max(hi - lo, 1e-6)
        if abs(mine[0] - lo) <= 1e-4 * scale and abs(mine[1] - hi) <= 1e-4 * scale:
            continue
        assert consumers.get(idx, set()) & {"ADD", "MUL"}, (idx, mine, (lo, hi))
        assert lo <= mine[0] + 1e-4 * scale and mine[1] <= hi + 1e-4 * scale
        wider += idx not in hard_swish
    assert wider < len(theirs) // 4


def test_quantizing_the_fp32_flatbuffer_gives_the_converters_model(tf_pair: dict) -> None:
    """Written with TensorFlow's own calibration numbers, the direct quantizer call reproduces the
    converter's INT8 model: every op, tensor, scale and weight; only TF's conversion-metadata entry differs."""
    from tensorflow.lite.python.optimize import calibrator as tf_calibrator

    from ghostnet_edge.export.tflite.metadata import schema
    from ghostnet_edge.export.tflite.ranges import quantize_calibrated, write_stats

    s = schema()
    calibrated = write_stats(bytes(tf_calibrator.add_intermediate_tensors(tf_pair["fp32"])),
                             _stats(tf_pair["tf_calibrated"]))
    mine = quantize_calibrated(calibrated, "int8", per_channel=True)
    a = s.ModelT.InitFromPackedBuf(bytearray(mine), 0)
    r = s.ModelT.InitFromPackedBuf(bytearray(tf_pair["tf_int8"]), 0)
    ops = [(o.opcodeIndex, list(o.inputs), list(o.outputs)) for o in a.subgraphs[0].operators]
    assert ops == [(o.opcodeIndex, list(o.inputs), list(o.outputs)) for o in r.subgraphs[0].operators]

    def q(t: object) -> tuple:
        qp = t.quantization
        return (t.name, t.type, list(t.shape), None if qp is None or qp.scale is None else list(qp.scale),
                None if qp is None or qp.zeroPoint is None else list(qp.zeroPoint))

    assert [q(t) for t in a.subgraphs[0].tensors] == [q(t) for t in r.subgraphs[0].tensors]
    meta = {int(x.buffer) for x in (a.metadata or [])} | {int(x.buffer) for x in (r.metadata or [])}
    for i, (ba, br) in enumerate(zip(a.buffers, r.buffers, strict=True)):
        if i not in meta:
            assert (None if ba.data is None else bytes(ba.data)) == (None if br.data is None else bytes(br.data))


def test_convert_with_shared_ranges_and_the_fallback(onnx_model: Path, calib: np.ndarray, tmp_path: Path) -> None:
    """With every range given the INT8 file is made from them (same bytes twice); with one missing the
    converter's own calibrator makes it, and the result says so."""
    pytest.importorskip("tensorflow")
    from ghostnet_edge.export.tflite.convert import convert_onnx_to_tflite
    from ghostnet_edge.export.tflite.inspect import read_graph

    ranges = dict(cr.collect_ranges(onnx_model, calib, "minmax", threads=1, use_cache=False).ranges)
    runs = []
    for i in range(2):
        res = convert_onnx_to_tflite(onnx_model, tmp_path / f"f{i}.tflite", tmp_path / f"q{i}.tflite", calib,
                                     ranges=lambda: ranges)
        runs.append(res)
        assert res.ranges_source.startswith("shared calibration ranges")
    assert _sha(tmp_path / "q0.tflite") == _sha(tmp_path / "q1.tflite")
    graph = read_graph(tmp_path / "q0.tflite")
    assert {op.name for op in graph.ops} - {"QUANTIZE", "DEQUANTIZE"} and all(
        t.dtype in ("INT8", "INT32") for t in graph.tensors if not t.constant)
    dropped = dict(ranges)
    import onnx

    dropped.pop(onnx.load(str(onnx_model)).graph.output[0].name)
    res = convert_onnx_to_tflite(onnx_model, None, tmp_path / "fallback.tflite", calib, ranges=dropped)
    assert res.ranges_source.startswith("TensorFlow's calibrator: 1 tensor(s) had no shared range")
    assert (tmp_path / "fallback.tflite").stat().st_size > 0


def test_precomputed_ranges_choose_the_cache_file_when_onnxruntime_has_it() -> None:
    import inspect

    ort_quantize = importlib.import_module("onnxruntime.quantization.quantize")
    has = "calibration_cache_path" in inspect.signature(ort_quantize.quantize_static).parameters
    from ghostnet_edge.export.onnx.quantize import _precomputed_ranges

    rng = cr.TensorRanges("minmax", {"x": (0.0, 1.0)}, 1)
    with _precomputed_ranges(rng) as kwargs:
        assert ("calibration_cache_path" in kwargs) == has


# ---- report helpers --------------------------------------------------------------------------------------------


def test_report_image_count_keeps_a_pixel_budget() -> None:
    from ghostnet_edge.export.config import report_image_count

    assert report_image_count(32, (32, 32), 32) == 32
    assert report_image_count(32, (224, 224), 32) == 8
    assert report_image_count(32, (512, 512), 32) == 4
    assert report_image_count(32, (32, 32), 5) == 5
    assert report_image_count(2, (224, 224), 32) == 2


def test_square_sums_match_float64() -> None:
    from ghostnet_edge.export.checks import db_from_sums, sqnr_db, square_sums

    rng = np.random.default_rng(1)
    ref = rng.standard_normal((8, 64, 56, 56)).astype(np.float32)
    test = ref + 0.01 * rng.standard_normal(ref.shape).astype(np.float32)
    assert abs(db_from_sums(*square_sums(ref, test)) - sqnr_db(ref, test)) < 0.005
    assert db_from_sums(1.0, 0.0) == 200.0 and db_from_sums(0.0, 1.0) == -200.0
