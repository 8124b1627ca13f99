"""Hard-swish in the TFLite route: the translator's two forms, and the INT8 model of the x86 one.

The x86 form (``--tflite-target x86``; ``translate._hard_swish``: a 1x1 depthwise conv and a MUL) exists
so that LiteRT's XNNPACK delegate takes the whole INT8 MobileNetV3; the builtin HARD_SWISH op's int8
kernel (the ARM form: NEON code there) runs outside it on x86. These tests pin what that needs: FP32 equal to the ONNX graph in both forms, no HARD_SWISH in the
INT8 model, every tensor of it calibrated from the shared ranges (no fallback to TensorFlow's
calibrator), the ranges of the form's inner tensors equal to their values, and every node delegated.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("tensorflow")

from torch import nn  # noqa: E402

from ghostnet_edge.errors import ExportError  # noqa: E402
from ghostnet_edge.export.tflite import inspect as tfl_inspect  # noqa: E402
from ghostnet_edge.export.tflite import translate as tr  # noqa: E402
from ghostnet_edge.export.tflite._testing import count_depthwise_convs, export_onnx_for_tests  # noqa: E402

MODEL = "mobilenetv3_large_cifar_100"  # 32x32, trained weights in references/: hard-swish on 4-D maps and [1, C]


class _Both(nn.Module):
    """Hard-swish on a conv's output (the converter folds the 1/6 into it) and on a Linear's [N, C]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 6)
        self.act1, self.act2 = nn.Hardswish(), nn.Hardswish()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.conv(x) * 4.0)  # values well past both kinks of hard-swish (-3 and 3)
        return self.act2(self.fc(y.mean((2, 3))) * 4.0)


def _run_tf(onnx_path: Path, x: np.ndarray, form: str) -> np.ndarray:
    fn, _ = tr.onnx_to_tf_function(onnx_path, hard_swish=form)
    return fn(np.ascontiguousarray(x.transpose(0, 2, 3, 1)))["logits"].numpy()


def test_both_forms_equal_the_onnx_graph_in_fp32(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _Both().eval()
    path = export_onnx_for_tests(model, tmp_path / "hs.onnx", (3, 8, 8))
    assert [n.op_type for n in onnx.load(str(path)).graph.node].count("HardSwish") == 2
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert tr.TARGET_HARD_SWISH == {"arm": "builtin", "x86": "depthwise"}
    for form in tr.HARD_SWISH_FORMS:
        np.testing.assert_allclose(_run_tf(path, x, form), ref, rtol=1e-5, atol=1e-5, err_msg=form)
    with pytest.raises(ExportError, match="not a hard-swish form"):
        _run_tf(path, x, "fused-please")


def test_builtin_form_is_one_hard_swish_op_and_the_depthwise_form_none(tmp_path: Path) -> None:
    from ghostnet_edge.export.tflite.convert import convert_onnx_to_tflite

    torch.manual_seed(0)
    path = export_onnx_for_tests(_Both().eval(), tmp_path / "hs.onnx", (3, 8, 8))
    counts = {}
    for form in tr.HARD_SWISH_FORMS:
        res = convert_onnx_to_tflite(path, tmp_path / f"{form}.tflite", None, hard_swish=form)
        counts[form] = tfl_inspect.op_counts(res.fp32_path)
    assert counts["builtin"].get("HARD_SWISH") == 2 and "DEPTHWISE_CONV_2D" not in counts["builtin"]
    # depthwise: the 1/6 folded into the conv and the fully connected op, one 1x1 depthwise conv and
    # one MUL of two activations per hard-swish, nothing else added.
    assert "HARD_SWISH" not in counts["depthwise"]
    assert counts["depthwise"]["DEPTHWISE_CONV_2D"] == 2 and counts["depthwise"]["MUL"] == 2
    assert counts["depthwise"]["CONV_2D"] == counts["builtin"]["CONV_2D"] == 1
    assert counts["depthwise"]["FULLY_CONNECTED"] == counts["builtin"]["FULLY_CONNECTED"] == 1


@pytest.fixture(scope="module")
def mnv3(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A small MobileNetV3 (trained weights where the repository has them) converted with shared ranges."""
    from ghostnet_edge.calib import ranges as cr
    from ghostnet_edge.export.tflite.convert import convert_onnx_to_tflite
    from ghostnet_edge.models import create_model, get_spec

    d = tmp_path_factory.mktemp("hard_swish")
    model = create_model(MODEL, seed=0).eval()
    ref = Path(__file__).resolve().parents[1] / "references" / "cifar10" / MODEL / "model.safetensors"
    if ref.is_file():  # trained activations cross both kinks of hard-swish; random ones barely leave 0
        from ghostnet_edge.models.checkpoint import load_checkpoint

        model.load_state_dict(load_checkpoint(ref).state_dict)
    size = tuple(get_spec(MODEL).input_size)
    path = export_onnx_for_tests(model, d / "model.onnx", size)
    calib = np.random.default_rng(0).standard_normal((16, *size)).astype(np.float32)
    ranges = dict(cr.collect_ranges(path, calib, "minmax", threads=1, use_cache=False).ranges)
    res = convert_onnx_to_tflite(path, d / "fp32.tflite", d / "int8.tflite", calib, ranges=ranges,
                                 hard_swish="depthwise")
    proto = onnx.load(str(path))
    return {"model": model, "onnx": path, "proto": proto, "calib": calib, "ranges": ranges, "res": res,
            "n_hard_swish": [n.op_type for n in proto.graph.node].count("HardSwish")}


def test_int8_mobilenetv3_has_no_hard_swish_and_every_range_placed(mnv3: dict) -> None:
    res = mnv3["res"]
    assert mnv3["n_hard_swish"] > 5
    assert res.ranges_source.startswith("shared calibration ranges"), res.ranges_source
    report = tfl_inspect.assert_fully_integer(
        res.int8_path, float_io=False,
        expected_depthwise=count_depthwise_convs(mnv3["model"]) + mnv3["n_hard_swish"])
    assert "HARD_SWISH" not in report.op_counts and "HARD_SWISH" not in tfl_inspect.op_counts(res.fp32_path)
    assert "QUANTIZE" not in report.op_counts and "DEQUANTIZE" not in report.op_counts


def test_placement_is_complete_and_exact_for_the_hard_swish_tensors(mnv3: dict) -> None:
    """Every float tensor gets a range; those of the form's inner tensors (``x / 6`` from the op that
    makes ``x``, ``relu6(x + 3)`` from the depthwise conv) equal the min/max the FP32 model computes
    on the calibration images; without the HardSwish inputs they would stay unplaced."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    from tensorflow.lite.python.optimize import calibrator as tf_calibrator

    from ghostnet_edge.export.tflite import ranges as rg
    from ghostnet_edge.export.tflite.metadata import schema

    s = schema()
    fp32 = Path(mnv3["res"].fp32_path).read_bytes()
    model_t = s.ModelT.InitFromPackedBuf(bytearray(tf_calibrator.add_intermediate_tensors(fp32)), 0)
    proto, names = mnv3["proto"], rg.op_names_of(model_t, s)
    args = (model_t, names, rg.onnx_scopes(proto), mnv3["ranges"], ["input"], [o.name for o in proto.graph.output])
    plan = rg.tflite_stats(*args, hard_swish=rg.onnx_hard_swish_inputs(proto))
    assert plan.complete, plan.unplaced
    assert not rg.tflite_stats(*args).complete  # the hard-swish tensors need the HardSwish inputs

    sg = model_t.subgraphs[0]
    made_by = {int(o): names[op.opcodeIndex] for op in sg.operators for o in op.outputs}
    inner = rg.hard_swish_stats(model_t, names, lambda i: rg.tensor_scope(rg._name(sg.tensors[i])),
                                rg.onnx_hard_swish_inputs(proto), mnv3["ranges"])
    kinds = {made_by[i] for i in inner}
    assert len(inner) == 2 * mnv3["n_hard_swish"] and "DEPTHWISE_CONV_2D" in kinds and "CONV_2D" in kinds
    assert all(plan.stats[i] == inner[i] for i in inner)

    it = Interpreter(model_content=fp32, experimental_preserve_all_tensors=True,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    by_name = {d["name"]: d["index"] for d in it.get_tensor_details()}
    seen: dict[int, list[float]] = {}
    for img in mnv3["calib"]:
        it.set_tensor(it.get_input_details()[0]["index"], img.transpose(1, 2, 0)[None])
        it.invoke()
        for i in inner:
            v = it.get_tensor(by_name[rg._name(sg.tensors[i])])
            lo, hi = seen.get(i, [np.inf, -np.inf])
            seen[i] = [min(lo, float(v.min())), max(hi, float(v.max()))]
    for i, (lo, hi) in inner.items():
        # equal up to float32 rounding of the op's arithmetic (the ONNX pass computed x, TFLite x / 6)
        assert seen[i] == pytest.approx([lo, hi], rel=1e-5, abs=1e-6 * max(abs(lo), abs(hi))), \
            (rg._name(sg.tensors[i]), made_by[i])


def test_every_int8_node_runs_in_xnnpack(mnv3: dict) -> None:
    """The point of the form: LiteRT's XNNPACK delegate takes the INT8 graph whole (one partition, no
    TFLite builtin kernel), as it does the FP32 one."""
    from ghostnet_edge.runtime.op_profile import profile

    for path in (mnv3["res"].int8_path, mnv3["res"].fp32_path):
        info = tfl_inspect.io_quantization(path)["input"]
        x = np.zeros(info["shape"], np.int8 if info["dtype"] == "INT8" else np.float32)
        prof = profile(str(path), "litert", 1, True, x, 2, 1)
        if "error" in prof:
            pytest.skip(f"LiteRT's profiler is unavailable here: {prof['error']}")
        builtin = [op["tag"] for op in prof["ops"] if op["level"] == "tflite"]
        assert builtin == [], (Path(path).name, builtin)
        assert {op["partition"] for op in prof["ops"]} == {1}, Path(path).name


def test_export_for_x86_writes_the_depthwise_form_and_arm_the_builtin(tmp_path: Path, private_cache: Path) -> None:
    """``ghostedge export --tflite-target``: the choice is recorded in the manifest's config; arm (the
    default) keeps LiteRT's HARD_SWISH, x86 has none; both are checked against PyTorch like any export."""
    from ghostnet_edge.export.config import ExportConfig
    from ghostnet_edge.export.pipeline import export_artifacts

    images = np.random.default_rng(0).integers(0, 256, size=(24, 32, 32, 3), dtype=np.uint8)
    counts = {}
    for target in ("arm", "x86"):
        cfg = ExportConfig(model="mobilenetv3_large_cifar_100", calib=images, out=tmp_path / target,
                           formats=("tflite",), num_calib=16, num_verify=8, threads=1,
                           **({} if target == "arm" else {"tflite_target": "x86"}))
        report = export_artifacts(cfg)
        assert report.manifest["config"]["tflite_target"] == target
        assert report.manifest["calibration"]["ranges"]["tflite_int8"].startswith("shared calibration ranges")
        counts[target] = tfl_inspect.op_counts(tmp_path / target / "model_int8.tflite")
    assert counts["arm"]["HARD_SWISH"] > 5 and "HARD_SWISH" not in counts["x86"]
    assert counts["x86"]["DEPTHWISE_CONV_2D"] == counts["arm"]["DEPTHWISE_CONV_2D"] + counts["arm"]["HARD_SWISH"]
