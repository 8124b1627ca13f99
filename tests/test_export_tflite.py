"""The TFLite route: translator, FP32/INT8 conversion, metadata, inspection, verification.

Most tests use ``TinyGhostNet`` (every op kind of GhostNet at 32x32, converts in about a second); the
GhostNet checks use ``ghostnet_edge.models`` at the real sizes (ghostnet_100 at 224, ghostnet_cifar_050 at 32).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("tensorflow")

from ghostnet_edge.errors import ExportError, GhostEdgeError  # noqa: E402
from ghostnet_edge.export import checks  # noqa: E402
from ghostnet_edge.export.tflite import inspect as tfl_inspect  # noqa: E402
from ghostnet_edge.export.tflite import metadata as md  # noqa: E402
from ghostnet_edge.export.tflite._testing import (  # noqa: E402
    count_depthwise_convs,
    export_onnx_for_tests,
    tiny_ghostnet,
)
from ghostnet_edge.export.tflite.convert import convert_onnx_to_tflite  # noqa: E402
from ghostnet_edge.export.tflite.layers import per_layer_sqnr  # noqa: E402
from ghostnet_edge.export.tflite.translate import _padding, onnx_to_tf_function  # noqa: E402
from ghostnet_edge.runtime.backends import open_model, run_artifact  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LABELS = [f"class_{i}" for i in range(10)]
PREP = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "resize_size": 32, "interpolation": "bilinear"}


def _fp32_check(path: Path, ref: np.ndarray, x: np.ndarray) -> checks.Check:
    """The export's FP32 check of one .tflite file: the one runner, the format-neutral check."""
    return checks.check_fp32(path.name, ref, run_artifact(path, x), checks.fp32_tolerance(ref, 1e-4))


def _fp32_diff(path: Path, ref: np.ndarray, x: np.ndarray) -> float:
    check = _fp32_check(path, ref, x)
    assert check.passed, check.reason
    return check.max_abs_diff



def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("tflite_tiny")
    model = tiny_ghostnet(seed=0)
    onnx_path = export_onnx_for_tests(model, d / "tiny.onnx", (3, 32, 32))
    rng = np.random.default_rng(0)
    rep = rng.standard_normal((32, 3, 32, 32)).astype(np.float32)
    x = rng.standard_normal((16, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    res = convert_onnx_to_tflite(onnx_path, d / "tiny_fp32.tflite", d / "tiny_int8.tflite", rep,
                                 labels=LABELS, preprocessing=PREP)
    return {"dir": d, "model": model, "onnx": onnx_path, "rep": rep, "x": x, "ref": ref, "res": res}


# ------------------------------------------------------------------------------------------------
# translator


def test_padding_rule_keeps_same_only_where_tf_pads_like_torch() -> None:
    # stride 1, pad 1, 3x3: TF's SAME pads 1/1 like PyTorch.
    assert _padding({"pads": [1, 1, 1, 1]}, (16, 16), (3, 3), [1, 1], [1, 1], "n") == ("SAME", None)
    # stride 2 on an even size: PyTorch reads top/left pad 1 and no bottom/right pad; TF SAME would pad 0/1.
    assert _padding({"pads": [1, 1, 1, 1]}, (16, 16), (3, 3), [2, 2], [1, 1], "n") == ("VALID", [1, 0, 1, 0])
    # stride 2 on an odd size: both sides are read, which is TF's SAME.
    assert _padding({"pads": [1, 1, 1, 1]}, (15, 15), (3, 3), [2, 2], [1, 1], "n") == ("SAME", None)
    assert _padding({"pads": [0, 0, 0, 0]}, (16, 16), (1, 1), [1, 1], [1, 1], "n") == ("VALID", None)
    # 5x5 stride 2 pad 2 on an even size
    assert _padding({"pads": [2, 2, 2, 2]}, (8, 8), (5, 5), [2, 2], [1, 1], "n") == ("VALID", [2, 1, 2, 1])


def test_translator_matches_onnxruntime(tiny: dict) -> None:
    ort = pytest.importorskip("onnxruntime")
    concrete, nhwc = onnx_to_tf_function(tiny["onnx"])
    assert nhwc == (1, 32, 32, 3)
    sess = ort.InferenceSession(str(tiny["onnx"]), providers=["CPUExecutionProvider"])
    for img in tiny["x"][:4]:
        want = sess.run(None, {"input": img[None]})[0]
        got = concrete(image=img[None].transpose(0, 2, 3, 1))["logits"].numpy()
        assert np.abs(got - want).max() <= 1e-5 * max(1.0, np.abs(want).max())


def _onnx_with_node(op_type: str, name: str) -> onnx.ModelProto:
    from onnx import TensorProto, helper

    node = helper.make_node(op_type, ["input"], ["logits"], name=name)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 8, 8])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_unsupported_op_is_named_with_its_node() -> None:
    with pytest.raises(ExportError) as err:
        onnx_to_tf_function(_onnx_with_node("Erf", "/blocks/0/act/Erf"))
    assert "Erf" in err.value.message and "/blocks/0/act/Erf" in err.value.message
    assert err.value.hint


def test_bad_onnx_inputs_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="does not exist"):
        onnx_to_tf_function(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file at all")
    with pytest.raises(ExportError, match="cannot read ONNX"):
        onnx_to_tf_function(bad)


class _OpZoo(torch.nn.Module):
    """Ops the GhostNet graph lacks but other CNNs have: unfused BN, max/avg pool with padding, grouped
    conv, sigmoid, subtract/divide by constants, view-based flatten (shape arithmetic when unsimplified)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, 1, 1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.mp = torch.nn.MaxPool2d(3, 2, 1)
        self.gconv = torch.nn.Conv2d(8, 12, 3, 2, 1, groups=4)
        self.dw = torch.nn.Conv2d(12, 24, 5, 1, 2, groups=12)  # depthwise with multiplier 2
        self.ap = torch.nn.AvgPool2d(2, 2)
        self.fc = torch.nn.Linear(24 * 2 * 2, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(torch.relu(self.conv(x)))  # BN after ReLU cannot fold into the conv
        x = self.mp(x)
        x = torch.sigmoid(self.gconv(x)) - 0.25
        x = self.ap(torch.nn.functional.leaky_relu(self.dw(x) / 3.0, 0.1))
        return self.fc(x.view(x.size(0), -1))


def test_translator_covers_other_cnn_ops(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(1)
    model = _OpZoo()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
        model.bn.running_mean.copy_(torch.randn(8, generator=gen) * 0.1)
        model.bn.running_var.copy_(torch.rand(8, generator=gen) + 0.5)
    model.eval()
    path = export_onnx_for_tests(model, tmp_path / "zoo.onnx", (3, 16, 16), simplify=False)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"BatchNormalization", "MaxPool", "AveragePool", "Shape", "Reshape"} <= ops
    x = np.random.default_rng(2).standard_normal((3, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    res = convert_onnx_to_tflite(path, tmp_path / "zoo.tflite", None)
    diff = _fp32_diff(res.fp32_path, ref, x)
    assert diff <= 1e-5
    counts = tfl_inspect.op_counts(res.fp32_path)
    assert counts.get("DEPTHWISE_CONV_2D") == 1  # the multiplier-2 depthwise conv
    assert counts.get("CONV_2D") == 1 + 4  # the plain conv + one per group of the grouped conv


# ------------------------------------------------------------------------------------------------
# conversion, FP32 and INT8


def test_fp32_matches_pytorch(tiny: dict) -> None:
    diff = _fp32_diff(tiny["res"].fp32_path, tiny["ref"], tiny["x"])
    # Logits here reach ~30; the FP32 model agrees to float32 rounding (a few 1e-6 relative).
    assert diff <= 1e-5 * np.abs(tiny["ref"]).max()
    assert tfl_inspect.tensor_types(tiny["res"].fp32_path)  # parses
    off = _fp32_check(tiny["res"].fp32_path, tiny["ref"] + 1.0, tiny["x"])
    assert not off.passed and "above the tolerance" in off.reason


def test_int8_is_fully_integer_with_depthwise_and_integer_se_gate(tiny: dict) -> None:
    path = tiny["res"].int8_path
    report = tfl_inspect.assert_fully_integer(path, float_io=False,
                                              expected_depthwise=count_depthwise_convs(tiny["model"]))
    assert report.io_dtypes == ("INT8", "INT8")
    assert "QUANTIZE" not in report.op_counts and "DEQUANTIZE" not in report.op_counts
    assert report.op_counts["HARD_SWISH"] == 1
    # The SE gate: MUL of a [1,H,W,C] activation by a [1,1,1,C] gate, in INT8, one per bottleneck.
    g = tfl_inspect.read_graph(path)
    gates = [op for op in g.ops if op.name == "MUL" and len(op.inputs) == 2
             and not any(g.tensors[i].constant for i in op.inputs)
             and {g.tensors[i].shape[1] for i in op.inputs} >= {1} and len({g.tensors[i].shape for i in op.inputs}) == 2]
    assert len(gates) == 2
    assert all(g.tensors[i].dtype == "INT8" for op in gates for i in (*op.inputs, *op.outputs))
    assert tiny["res"].input_quant is not None and tiny["res"].input_quant[0] > 0
    # The I/O-only reader (metadata and its checks) sees the very tensors of the full reader.
    for model in (path, tiny["res"].fp32_path):
        full, io = tfl_inspect.read_graph(model), tfl_inspect.read_io(model)
        assert io.inputs == [full.tensors[i] for i in full.inputs]
        assert io.outputs == [full.tensors[i] for i in full.outputs]


def test_int8_tracks_pytorch(tiny: dict) -> None:
    q = run_artifact(tiny["res"].int8_path, tiny["x"])
    ref = tiny["ref"]
    cos = np.sum(q * ref, axis=1) / (np.linalg.norm(q, axis=1) * np.linalg.norm(ref, axis=1))
    assert cos.min() > 0.9, cos
    check = checks.check_int8("model_int8.tflite", ref, q, min_agreement=0.75)
    assert check.passed and check.top1_agreement >= 0.75
    flipped = checks.check_int8("model_int8.tflite", -ref, q, min_agreement=0.9)
    assert not flipped.passed and "below the minimum" in flipped.reason


def test_per_layer_sqnr_maps_int8_to_fp32_tensors(tiny: dict) -> None:
    layers = per_layer_sqnr(tiny["res"].int8_path, tiny["res"].fp32_path, tiny["x"][:2])
    ops = [layer.op for layer in layers]
    assert ops.count("DEPTHWISE_CONV_2D") == count_depthwise_convs(tiny["model"])
    assert ops[-1] == "FULLY_CONNECTED"
    # INT8 activations of a calibrated net are 15-40 dB away from FP32; 0 dB would mean a wrong mapping.
    assert all(layer.sqnr_db > 10 for layer in layers), [(layer.op, round(layer.sqnr_db, 1)) for layer in layers]
    assert layers[0].sqnr_db > 30


def test_float_and_uint8_io_and_per_tensor_weights(tiny: dict) -> None:
    d = tiny["dir"]
    r_float = convert_onnx_to_tflite(tiny["onnx"], None, d / "io_float.tflite", tiny["rep"], io_dtype="float32")
    rep = tfl_inspect.assert_fully_integer(r_float.int8_path, float_io=True)
    assert rep.io_dtypes == ("FLOAT32", "FLOAT32") and r_float.input_quant is None
    assert rep.op_counts["QUANTIZE"] == 1 and rep.op_counts["DEQUANTIZE"] == 1
    with pytest.raises(ExportError, match="expected INT8"):
        tfl_inspect.assert_fully_integer(r_float.int8_path, float_io=False)
    # The same integer graph inside: float I/O and int8 I/O give the same logits up to one output step.
    a = run_artifact(r_float.int8_path, tiny["x"][:4])
    b = run_artifact(tiny["res"].int8_path, tiny["x"][:4])
    assert np.abs(a - b).max() <= 2 * tiny["res"].output_quant[0] + 1e-6

    r_u8 = convert_onnx_to_tflite(tiny["onnx"], None, d / "io_u8.tflite", tiny["rep"], io_dtype="uint8",
                                  per_channel=False)
    assert tfl_inspect.io_quantization(r_u8.int8_path)["input"]["dtype"] == "UINT8"
    tfl_inspect.assert_fully_integer(r_u8.int8_path)

    def filter_scales(path: Path) -> list[int]:
        g = tfl_inspect.read_graph(path)
        return [len(g.tensors[op.inputs[1]].scale) for op in g.ops if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D")]

    assert max(filter_scales(r_u8.int8_path)) == 1  # per-tensor
    assert max(filter_scales(tiny["res"].int8_path)) > 1  # per-channel by default


def test_conversion_is_byte_identical(tiny: dict) -> None:
    d = tiny["dir"]
    again = convert_onnx_to_tflite(tiny["onnx"], d / "again_fp32.tflite", d / "again_int8.tflite", tiny["rep"],
                                   labels=LABELS, preprocessing=PREP)
    assert _sha(again.fp32_path) == _sha(tiny["res"].fp32_path)
    assert _sha(again.int8_path) == _sha(tiny["res"].int8_path)
    other = convert_onnx_to_tflite(tiny["onnx"], None, d / "other_int8.tflite", tiny["rep"][:8])
    assert _sha(other.int8_path) != _sha(tiny["res"].int8_path)  # the calibration data matters


@pytest.mark.slow
def test_conversion_is_byte_identical_across_processes(tiny: dict) -> None:
    d = tiny["dir"]
    np.save(d / "rep.npy", tiny["rep"])
    code = (
        "import json, sys, numpy as np\n"
        "from pathlib import Path\n"
        "from ghostnet_edge.export.tflite.convert import convert_onnx_to_tflite\n"
        "d = Path(sys.argv[1])\n"
        f"convert_onnx_to_tflite(d / 'tiny.onnx', None, d / 'proc_int8.tflite', np.load(d / 'rep.npy'), "
        f"labels={LABELS!r}, preprocessing=json.loads({json.dumps(json.dumps(PREP))}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run([sys.executable, "-c", code, str(d)], check=True, env=env, capture_output=True, timeout=300)
    assert _sha(d / "proc_int8.tflite") == _sha(tiny["res"].int8_path)


# ------------------------------------------------------------------------------------------------
# metadata, runtimes


def test_signature_labels_and_preprocessing_are_embedded(tiny: dict) -> None:
    for path in (tiny["res"].fp32_path, tiny["res"].int8_path):
        meta = md.read_embedded_metadata(path)
        assert meta["signatures"] == [{"key": "serving_default", "inputs": ["image"], "outputs": ["logits"]}]
        assert meta["labels"] == LABELS
        assert meta["preprocessing"]["mean"] == PREP["mean"]
        assert meta["preprocessing"]["layout"] == "NHWC" and meta["preprocessing"]["input_shape"] == [1, 32, 32, 3]
        assert meta["info"]["source_onnx_sha256"] == _sha(tiny["onnx"])
        assert {"min_runtime_version", md.LABELS, md.PREPROCESSING, md.INFO} <= set(meta["entries"])
    assert md.read_embedded_metadata(tiny["res"].int8_path)["info"]["num_representative"] == 32


@pytest.mark.parametrize("backend", ["litert", "tflite-runtime"])
def test_models_load_in_both_runtimes_through_the_signature(tiny: dict, backend: str) -> None:
    if backend == "tflite-runtime":
        pytest.importorskip("tflite_runtime.interpreter", reason="tflite-runtime 2.14 needs numpy < 2 and is not in the numpy-2 lock; its board path runs in tests/test_runner_pythons.py (Python 3.9-3.11 venvs)")
    model = open_model(tiny["res"].fp32_path, backend).model
    interp = model.interp
    assert model.runtime == backend
    assert interp.get_signature_list() == {"serving_default": {"inputs": ["image"], "outputs": ["logits"]}}
    runner = interp.get_signature_runner("serving_default")
    out = runner(image=tiny["x"][:1].transpose(0, 2, 3, 1))["logits"]
    assert np.abs(out - tiny["ref"][:1]).max() <= 1e-5 * np.abs(tiny["ref"]).max()
    # INT8: ai-edge-litert runs it in XNNPACK, tflite-runtime 2.14 on its reference kernels, which round
    # requantization differently; a step here and there compounds through this random-weight net, so
    # both are held to tracking the FP32 model rather than to bit equality.
    fp32 = run_artifact(tiny["res"].fp32_path, tiny["x"])
    q = run_artifact(tiny["res"].int8_path, tiny["x"], runtime=backend)
    assert checks.sqnr_db(fp32, q) > 12
    assert checks.top1_agreement(q, fp32) >= 0.75


def test_runtime_falls_back_to_tflite_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("tflite_runtime.interpreter", reason="tflite-runtime 2.14 needs numpy < 2 and is not in the numpy-2 lock; its board path runs in tests/test_runner_pythons.py (Python 3.9-3.11 venvs)")
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)  # makes the import fail
    from ghostnet_edge.runtime import device_runner as dr

    assert dr.pick_runtime("tflite", "auto") == "tflite-runtime"


def test_metadata_repack_keeps_model_and_alignment(tiny: dict) -> None:
    raw = tiny["res"].int8_path.read_bytes()
    once = md.embed_metadata(raw, {md.LABELS: b'["a"]'})
    twice = md.embed_metadata(once, {md.LABELS: b'["b"]'})
    assert md.metadata_entries(twice)[md.LABELS] == b'["b"]'
    assert sorted(md.metadata_entries(twice)) == sorted(md.metadata_entries(raw))  # replaced, not duplicated
    assert tfl_inspect.tflite_ops(twice) == tfl_inspect.tflite_ops(raw)
    s = md.schema()
    model = s.Model.GetRootAs(twice, 0)
    for i in range(model.BuffersLength()):
        buf = model.Buffers(i)
        if buf.DataLength() > 0:
            start = buf._tab.Vector(buf._tab.Offset(4))
            assert start % 16 == 0, f"buffer {i} is not 16-byte aligned"
    repacked = tiny["dir"] / "repacked_twice.tflite"
    repacked.write_bytes(twice)
    assert np.array_equal(run_artifact(repacked, tiny["x"][:2]), run_artifact(tiny["res"].int8_path, tiny["x"][:2]))


def test_assert_fully_integer_rejects_a_float_model(tiny: dict) -> None:
    with pytest.raises(ExportError, match="not fully integer") as err:
        tfl_inspect.assert_fully_integer(tiny["res"].fp32_path)
    assert "FLOAT32" in err.value.message
    with pytest.raises(ExportError, match="DEPTHWISE_CONV_2D"):
        tfl_inspect.assert_fully_integer(tiny["res"].int8_path, expected_depthwise=99)


# ------------------------------------------------------------------------------------------------
# bad input


def test_bad_conversion_requests_raise_and_write_nothing(tiny: dict, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    onnx_path, rep = tiny["onnx"], tiny["rep"]
    out = tmp_path / "m.tflite"
    cases = [
        ({"out_fp32": None, "out_int8": None}, "nothing to convert"),
        ({"out_fp32": None, "out_int8": out}, "needs representative"),
        ({"out_fp32": None, "out_int8": out, "representative": rep[:, :, :16]}, "has shape"),
        ({"out_fp32": None, "out_int8": out, "representative": (rep * 255).astype(np.uint8)}, "dtype"),
        ({"out_fp32": None, "out_int8": out, "representative": np.full_like(rep, np.nan)}, "NaN"),
        ({"out_fp32": out, "out_int8": None, "labels": ["a", "b"]}, "2 labels"),
        ({"out_fp32": None, "out_int8": out, "representative": rep, "io_dtype": "int4"}, "unknown"),
    ]
    for kwargs, match in cases:
        with pytest.raises(ExportError, match=match) as err:
            convert_onnx_to_tflite(onnx_path, **kwargs)
        assert err.value.hint
    with pytest.raises(ExportError, match="does not exist"):
        convert_onnx_to_tflite(tmp_path / "nope.onnx", out, None)

    # A failure after conversion (here: while embedding metadata) leaves neither the file nor a temp file.
    def boom(*a: object, **k: object) -> bytes:
        raise ExportError("simulated failure")

    monkeypatch.setattr(md, "embed_metadata", boom)
    with pytest.raises(ExportError, match="simulated"):
        convert_onnx_to_tflite(onnx_path, out, None)
    assert list(tmp_path.iterdir()) == []


def test_runner_rejects_wrong_input_and_missing_files(tiny: dict, tmp_path: Path) -> None:
    with pytest.raises(GhostEdgeError, match="takes"):
        run_artifact(tiny["res"].int8_path, tiny["x"][:, :, :16])
    with pytest.raises(GhostEdgeError, match="does not exist"):
        run_artifact(tmp_path / "none.tflite", tiny["x"])
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\0" * 64)
    with pytest.raises(ExportError, match="not a TFLite model"):
        md.read_embedded_metadata(junk)


# ------------------------------------------------------------------------------------------------
# the real GhostNets


def _ghostnet(name: str) -> torch.nn.Module:
    models = pytest.importorskip("ghostnet_edge.models", reason="ghostnet_edge.models is not available")
    torch.manual_seed(0)
    return models.create_model(name).eval()


@pytest.mark.slow
@pytest.mark.parametrize(("name", "size"), [("ghostnet_100", 224), ("ghostnet_cifar_050", 32)])
def test_ghostnet_int8_is_fully_integer(tmp_path: Path, name: str, size: int) -> None:
    model = _ghostnet(name)
    onnx_path = export_onnx_for_tests(model, tmp_path / f"{name}.onnx", (3, size, size))
    rng = np.random.default_rng(0)
    rep = rng.standard_normal((8, 3, size, size)).astype(np.float32)
    x = rng.standard_normal((2, 3, size, size)).astype(np.float32)
    res = convert_onnx_to_tflite(onnx_path, tmp_path / "fp32.tflite", tmp_path / "int8.tflite", rep)
    n_dw = count_depthwise_convs(model)
    report = tfl_inspect.assert_fully_integer(res.int8_path, expected_depthwise=n_dw)
    assert report.depthwise_convs == n_dw > 0 and report.grouped_conv2d == 0
    assert "QUANTIZE" not in report.op_counts and "DEQUANTIZE" not in report.op_counts
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    diff = _fp32_diff(res.fp32_path, ref, x)
    assert diff <= 1e-4
    q = run_artifact(res.int8_path, x)
    assert q.shape == ref.shape and np.isfinite(q).all()


def _recording(context: Callable[[], Any], record: Callable[[Any], object]) -> Callable[[], Any]:
    """``context`` (a context-manager factory) that calls ``record`` with what it yielded once it exits."""
    import contextlib

    @contextlib.contextmanager
    def wrapped():  # noqa: ANN202
        with context() as value:
            yield value
        record(value)

    return wrapped


def test_handover_gives_the_packed_object_once_for_exactly_its_bytes() -> None:
    from ghostnet_edge.export.tflite.unpacked import Handover

    h, obj = Handover(), object()
    h.offer(b"model", obj)
    assert h.take(b"other") is None and h.take(b"mode") is None
    assert h.take(bytearray(b"model")) is obj
    assert h.take(b"model") is None and h.given == 1


def test_converter_hands_over_its_model_object_and_the_file_is_the_same(tiny: dict, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """TensorFlow's conversion-metadata step and ghostedge's metadata embedding take the model object the
    step before them packed, instead of unpacking its bytes; the .tflite file is the one unpacking gives."""
    import contextlib

    from ghostnet_edge.export.tflite import convert as tc
    from ghostnet_edge.export.tflite import unpacked

    given: list[int] = []
    monkeypatch.setattr(tc, "handed_over", _recording(unpacked.handed_over, lambda h: given.append(h.given)))
    handed = convert_onnx_to_tflite(tiny["onnx"], tmp_path / "handed.tflite", None, labels=LABELS, preprocessing=PREP)
    assert given == [2]  # TensorFlow's metadata step, then ghostedge's
    monkeypatch.setattr(tc, "handed_over", lambda: contextlib.nullcontext(unpacked.Handover()))
    plain = convert_onnx_to_tflite(tiny["onnx"], tmp_path / "plain.tflite", None, labels=LABELS, preprocessing=PREP)
    assert handed.fp32_path.read_bytes() == plain.fp32_path.read_bytes()
    assert _sha(plain.fp32_path) == _sha(tiny["res"].fp32_path)


def test_converter_skips_reloading_its_saved_model_and_the_file_is_the_same(tiny: dict, tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """TensorFlow's reload of the SavedModel it converts from is skipped (one per conversion); the
    .tflite file is the one the reload gives."""
    import contextlib

    from ghostnet_edge.export.tflite import convert as tc
    from ghostnet_edge.export.tflite import saved_model_reload

    skipped: list[int] = []
    monkeypatch.setattr(tc, "skip_saved_model_reload",
                        _recording(saved_model_reload.skip_saved_model_reload, lambda s: skipped.append(len(s))))
    fast = convert_onnx_to_tflite(tiny["onnx"], tmp_path / "fast.tflite", None, labels=LABELS, preprocessing=PREP,
                                  use_cache=False)
    assert skipped == [1]
    monkeypatch.setattr(tc, "skip_saved_model_reload", lambda: contextlib.nullcontext([]))
    plain = convert_onnx_to_tflite(tiny["onnx"], tmp_path / "plain.tflite", None, labels=LABELS, preprocessing=PREP,
                                   use_cache=False)
    assert fast.fp32_path.read_bytes() == plain.fp32_path.read_bytes()
    assert _sha(plain.fp32_path) == _sha(tiny["res"].fp32_path)


def test_converter_process_import_hooks_leave_the_converted_files_unchanged(tiny: dict, tmp_path: Path) -> None:
    """TensorFlow imported with the converter process's hooks (no Keras, no SciPy, namespaces loaded on
    first use) converts to the same FP32 and INT8 files as TensorFlow imported plainly (this process), and
    never loads the namespaces a conversion does not read."""
    np.save(tmp_path / "rep.npy", tiny["rep"])
    code = f"""
import json, sys
from pathlib import Path
import numpy as np
from ghostnet_edge.export.tflite.tf_import import install_import_hooks, load_translation_namespaces
install_import_hooks()
import tensorflow
lazy = [type(sys.modules["tensorflow._api.v2.nn"]).__name__]
load_translation_namespaces()
lazy.append(type(sys.modules["tensorflow._api.v2.nn"]).__name__)
from ghostnet_edge.export.tflite.convert import convert_onnx_to_tflite
d = Path({str(tmp_path)!r})
convert_onnx_to_tflite(Path({str(tiny["onnx"])!r}), d / "fp32.tflite", d / "int8.tflite", np.load(d / "rep.npy"),
                       labels={LABELS!r}, preprocessing={PREP!r})
print(json.dumps([lazy, "keras" in sys.modules and sys.modules["keras"] is not None,
                  "tensorflow.python.distribute.multi_process_runner" in sys.modules, "scipy" in sys.modules]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [["_LazyModule", "module"], False, False, False]
    assert (tmp_path / "fp32.tflite").read_bytes() == tiny["res"].fp32_path.read_bytes()
    assert (tmp_path / "int8.tflite").read_bytes() == tiny["res"].int8_path.read_bytes()
