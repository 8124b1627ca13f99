"""ONNX stage: deterministic FP32 export, QDQ INT8 quantization, checks against PyTorch, per-layer SQNR."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from ghostnet_edge.errors import ExportError, GhostEdgeError
from ghostnet_edge.export import checks
from ghostnet_edge.export.onnx import layers as onnx_layers
from ghostnet_edge.export.onnx.quantize import (
    ArrayDataReader,
    choose_activation_type,
    cpu_flags,
    normalize_machine,
)
from ghostnet_edge.export.reference import run_torch
from ghostnet_edge.runtime.backends import run_artifact

MODEL = "ghostnet_cifar_050"


def _sha(p: Path) -> str:
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def images(cifar_tar: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, np.ndarray]:
    """Real CIFAR-10 test photos through the model's eval preprocessing: (calibration, held-out)."""
    from ghostnet_edge.calib import calibration_tensors, split_calibration_verification
    from ghostnet_edge.calib.sampler import extract_tar_images
    from ghostnet_edge.data import Preprocess
    from ghostnet_edge.models import get_spec

    root = tmp_path_factory.mktemp("cifar")
    extract_tar_images(cifar_tar, root, per_class=4)
    calib, verify = split_calibration_verification(root, num_calib=24, num_verify=16, seed=0)
    pre = Preprocess.from_spec(get_spec(MODEL))
    cache = tmp_path_factory.mktemp("cache")
    return (calibration_tensors(calib.files, pre, cache_dir=cache).array,
            calibration_tensors(verify.files, pre, cache_dir=cache).array)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from ghostnet_edge.export.onnx.convert import export_onnx
    from ghostnet_edge.models import create_model, get_spec

    out = tmp_path_factory.mktemp("onnx")
    model = create_model(MODEL, seed=0).eval()
    spec = get_spec(MODEL)
    res = export_onnx(model, spec.input_size, out / "model.onnx", metadata={"ghostedge.model": MODEL, "a": "1"})
    return {"model": model, "spec": spec, "path": res.path, "result": res, "dir": out}


# ---- pure helpers -----------------------------------------------------------------------------------------


def test_activation_type_per_target() -> None:
    vnni = choose_activation_type("auto", machine="x86_64", flags={"avx2", "avx512_vnni"})
    assert (vnni.dtype, vnni.reduce_range) == ("uint8", False) and "VPDPBUSD" in vnni.reason
    old = choose_activation_type("auto", machine="x86_64", flags={"avx2"})
    assert (old.dtype, old.reduce_range) == ("uint8", True)
    arm = choose_activation_type("auto", machine="aarch64", flags=set())
    assert arm.dtype == "int8" and "SDOT" in arm.reason
    forced = choose_activation_type("int8", machine="x86_64", flags={"avx512_vnni"})
    assert forced.dtype == "int8" and "requested" in forced.reason
    with pytest.raises(GhostEdgeError):
        choose_activation_type("fp8")


def test_cpu_flags_and_machine_names() -> None:
    assert cpu_flags("processor\t: 0\nflags\t\t: fpu avx2 AVX512_VNNI\n") == {"fpu", "avx2", "avx512_vnni"}
    assert "asimddp" in cpu_flags("Features\t: fp asimd asimddp\n")
    assert normalize_machine("AMD64") == "x86_64" and normalize_machine("arm64") == "arm"


def test_data_reader_batches_and_ranges() -> None:
    x = np.zeros((37, 3, 4, 4), np.float32)
    r = ArrayDataReader(x, "input", batch_size=16)
    assert [b["input"].shape[0] for b in r] == [16, 16, 5] and len(r) == 3
    r.set_range(1, 2)
    assert r.get_next()["input"].shape[0] == 16 and r.get_next() is None
    assert sum(b["input"].shape[0] for b in r) == 37  # iterating rewinds
    with pytest.raises(ValueError):
        ArrayDataReader(np.zeros((0, 3, 4, 4), np.float32))


def test_checks_pass_and_fail_on_the_right_side() -> None:
    ref = np.array([[1.0, 2.0, 0.0], [3.0, 0.0, 1.0]], np.float32)
    ok = checks.check_fp32("m", ref, ref + 5e-5, tolerance=1e-4, labels=np.array([1, 2]))
    assert ok.passed and ok.top1_agreement == 1.0 and ok.accuracy_delta == 0.0 and ok.accuracy_reference == 0.5
    bad = checks.check_fp32("m", ref, ref + 2e-4, tolerance=1e-4)
    assert not bad.passed and "above the tolerance" in bad.reason
    nan = checks.check_fp32("m", ref, ref * np.nan, tolerance=1e-4)
    assert not nan.passed and "NaN" in nan.reason
    swapped = np.roll(ref, 1, axis=1)  # every arg-max moves
    q = checks.check_int8("q", ref, swapped, min_agreement=0.8)
    assert not q.passed and q.top1_agreement == 0.0
    lenient = checks.check_int8("q", ref, swapped, min_agreement=0.8, enforce=False)
    assert lenient.passed and lenient.notes
    assert checks.sqnr_db(ref, ref) == 200.0 and 19 < checks.sqnr_db(ref, ref * 1.1) < 21


# ---- FP32 export --------------------------------------------------------------------------------------------


def test_fp32_export_matches_pytorch_on_real_images(exported: dict, images: tuple) -> None:
    import onnx

    proto = onnx.load(str(exported["path"]))
    assert proto.opset_import[0].version == 17
    assert [i.name for i in proto.graph.input] == ["input"] and [o.name for o in proto.graph.output] == ["logits"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"  # dynamic batch
    assert "BatchNormalization" not in exported["result"].op_types  # folded into Conv
    assert {p.key: p.value for p in proto.metadata_props} == {"a": "1", "ghostedge.model": MODEL}
    assert proto.producer_name == "ghostedge"
    _, xv = images
    ref = run_torch(exported["model"], xv)
    out = run_artifact(exported["path"], xv)
    check = checks.check_fp32("model.onnx", ref, out)
    assert check.passed, check.reason
    assert check.max_abs_diff <= 1e-4 and check.top1_agreement == 1.0


def test_fp32_export_is_byte_identical(exported: dict) -> None:
    from ghostnet_edge.export.onnx.convert import export_onnx

    again = export_onnx(exported["model"], exported["spec"].input_size, exported["dir"] / "again.onnx",
                        metadata={"a": "1", "ghostedge.model": MODEL})
    assert _sha(again.path) == _sha(exported["path"])


def test_bad_opset_is_refused(exported: dict, tmp_path: Path) -> None:
    from ghostnet_edge.export.onnx.config import OnnxExportConfig
    from ghostnet_edge.export.onnx.convert import export_onnx

    with pytest.raises(ExportError, match="opset 11"):
        export_onnx(exported["model"], exported["spec"].input_size, tmp_path / "m.onnx", OnnxExportConfig(opset=11))
    assert not (tmp_path / "m.onnx").exists()


# ---- INT8 ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quantized(exported: dict, images: tuple) -> dict:
    from ghostnet_edge.export.onnx.quantize import quantize_onnx

    xc, _ = images
    act = choose_activation_type("auto", machine="x86_64", flags={"avx512_vnni"})
    path = exported["dir"] / "model_int8.onnx"
    res = quantize_onnx(exported["path"], path, xc, "minmax", act, per_channel=True, threads=1)
    return {"path": path, "result": res, "act": act}


def test_int8_is_qdq_per_channel_with_uint8_activations(quantized: dict, exported: dict, images: tuple) -> None:
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(quantized["path"]))
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    dq = [n for n in proto.graph.node if n.op_type == "DequantizeLinear"]
    weight_dq = [n for n in dq if n.input[0] in inits and inits[n.input[0]].ndim == 4]
    assert weight_dq, "no quantized conv weights"
    assert all(inits[n.input[0]].dtype == np.int8 for n in weight_dq)
    assert all(inits[n.input[1]].ndim == 1 and inits[n.input[1]].size > 1 for n in weight_dq)  # per-channel
    act_zp = [inits[n.input[2]] for n in proto.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2]
    assert act_zp and all(z.dtype == np.uint8 for z in act_zp)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert '"activations": "uint8"' in meta["ghostedge.quantization"]
    # Runs in onnxruntime and agrees with PyTorch on held-out images.
    _, xv = images
    ref = run_torch(exported["model"], xv)
    q = run_artifact(quantized["path"], xv)
    check = checks.check_int8("model_int8.onnx", ref, q, min_agreement=0.5)
    assert check.passed and np.isfinite(q).all() and check.logits_sqnr_db > 10


def test_int8_is_byte_identical_and_methods_differ(quantized: dict, exported: dict, images: tuple) -> None:
    from ghostnet_edge.export.onnx.quantize import quantize_onnx

    xc, _ = images
    again = exported["dir"] / "again_int8.onnx"
    quantize_onnx(exported["path"], again, xc, "minmax", quantized["act"], threads=1)
    assert _sha(again) == _sha(quantized["path"])
    pct = exported["dir"] / "pct_int8.onnx"
    quantize_onnx(exported["path"], pct, xc, "percentile", quantized["act"], threads=1)
    assert _sha(pct) != _sha(quantized["path"])
    assert not list(exported["dir"].glob(".*"))  # no temporary files left


def test_int8_per_tensor_and_int8_activations(exported: dict, images: tuple) -> None:
    import onnx
    from onnx import numpy_helper

    from ghostnet_edge.export.onnx.quantize import quantize_onnx

    xc, _ = images
    path = exported["dir"] / "pt_int8.onnx"
    quantize_onnx(exported["path"], path, xc[:8], "minmax", choose_activation_type("int8"), per_channel=False,
                  threads=1)
    proto = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    weight_scales = [inits[n.input[1]] for n in proto.graph.node if n.op_type == "DequantizeLinear"
                     and n.input[0] in inits and inits[n.input[0]].ndim == 4]
    assert weight_scales and all(s.size == 1 for s in weight_scales)
    act_zp = [inits[n.input[2]] for n in proto.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2]
    assert all(z.dtype == np.int8 for z in act_zp)


def test_unknown_calibration_method(exported: dict, images: tuple, tmp_path: Path) -> None:
    from ghostnet_edge.export.onnx.quantize import quantize_onnx

    with pytest.raises(GhostEdgeError, match="calibration method"):
        quantize_onnx(exported["path"], tmp_path / "q.onnx", images[0], "kl")


def test_per_layer_sqnr_points_at_layers(quantized: dict, exported: dict, images: tuple, tmp_path: Path) -> None:
    _, xv = images
    layers = onnx_layers.per_layer_sqnr(exported["path"], quantized["path"], xv[:4], threads=1)
    assert len(layers) > 20
    names = [e.tensor for e in layers]
    assert "logits" in names and "input" in names
    assert [e.position for e in layers] == sorted(e.position for e in layers)  # graph order
    assert all(np.isfinite(e.sqnr_db) for e in layers)
    assert all(0 < e.sqnr_db < 100 for e in layers if e.op_type == "Conv")  # really quantized
    worst = onnx_layers.worst_layers(layers, 3)
    assert len(worst) == 3 and worst[0].drop_db >= worst[-1].drop_db
    # The in-graph sums against the two models run on their own: the logits' SQNR.
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    f, q = (ort.InferenceSession(str(p), opts).run(None, {"input": xv[:4]})[0].astype(np.float64)
            for p in (exported["path"], quantized["path"]))
    logits = next(e for e in layers if e.tensor == "logits")
    assert logits.sqnr_db == pytest.approx(10 * np.log10((f ** 2).sum() / ((f - q) ** 2).sum()), abs=0.01)
    # Folded Relu/Clip activations get their rounding-noise figure too (their bounds are constants).
    assert all(e.qdq_sqnr_db is not None for e in layers if e.op_type in ("Relu", "Clip"))


def test_onnxsim_is_imported_without_sympy_which_stays_importable() -> None:
    """Checked in a fresh interpreter: this one may have imported both already."""
    import subprocess
    import sys

    code = ("import sys\nfrom ghostnet_edge.export.onnx.convert import import_onnxsim\nsim = import_onnxsim()\n"
            "assert callable(sim.simplify) and 'sympy' not in sys.modules, sorted(sys.modules)[:5]\n"
            "import sympy\nprint(sympy.Symbol('x'))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "x", out.stderr[-800:]


_DEFERRED_EXPORT = """
import hashlib, sys
from pathlib import Path
from ghostnet_edge.export.torch_import import defer_meta_kernels, is_deferred
deferred = defer_meta_kernels() if sys.argv[1] == "defer" else False
from ghostnet_edge.export.onnx.convert import export_onnx
from ghostnet_edge.models import create_model, get_spec
out = Path(sys.argv[2]) / f"{sys.argv[1]}.onnx"
export_onnx(create_model("ghostnet_cifar_050", seed=0).eval(), get_spec("ghostnet_cifar_050").input_size, out,
            metadata={"a": "1", "ghostedge.model": "ghostnet_cifar_050"})
print(deferred, is_deferred("torch._meta_registrations"), hashlib.sha256(out.read_bytes()).hexdigest())
if deferred:  # reading a name runs the module, and the meta kernels then work
    import torch
    assert callable(torch._meta_registrations.register_meta) and not is_deferred("torch._meta_registrations")
    assert torch.nn.functional.conv2d(torch.empty(1, 3, 8, 8, device="meta"),
                                      torch.empty(4, 3, 3, 3, device="meta")).shape == (1, 4, 6, 6)
"""


def test_export_process_defers_meta_kernels_and_writes_the_same_onnx(exported: dict, tmp_path: Path) -> None:
    """``ghostedge export``'s PyTorch, without its meta kernels run, exports the same bytes, and never runs them."""
    import subprocess
    import sys

    lines = {}
    for mode in ("defer", "plain"):
        done = subprocess.run([sys.executable, "-c", _DEFERRED_EXPORT, mode, str(tmp_path)], capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-1500:]
        lines[mode] = done.stdout.split()
    assert lines["defer"][:2] == ["True", "True"] and lines["plain"][:2] == ["False", "False"]
    assert lines["defer"][2] == lines["plain"][2] == _sha(exported["path"])


def test_deferred_module_runs_once_on_first_read_from_any_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import threading

    from ghostnet_edge.export.torch_import import DeferModules, is_deferred

    pkg = tmp_path / "ge_deferred_demo.py"
    pkg.write_text("import time\nRUNS = globals().get('RUNS', 0) + 1\ntime.sleep(0.2)\nVALUE = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "meta_path", [DeferModules(("ge_deferred_demo",)), *sys.meta_path])
    monkeypatch.delitem(sys.modules, "ge_deferred_demo", raising=False)
    import ge_deferred_demo as demo

    assert is_deferred("ge_deferred_demo") and demo.__file__ == str(pkg)  # import attributes: no run
    seen: list[int] = []
    threads = [threading.Thread(target=lambda: seen.append(demo.VALUE)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [42] * 4 and demo.RUNS == 1 and not is_deferred("ge_deferred_demo")
    with pytest.raises(AttributeError):
        _ = demo.MISSING
    monkeypatch.delitem(sys.modules, "ge_deferred_demo")
