"""The whole export: every artifact, manifest hashes, checks, byte-identical repeats, --force, bad input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from ghostnet_edge.errors import (
    CheckpointError,
    DataError,
    ExportError,
    GhostEdgeError,
    MissingDependencyError,
    ModelError,
)
from ghostnet_edge.export.labels import label_indices, resolve_labels
from ghostnet_edge.export.manifest import verify_manifest
from ghostnet_edge.export.options import parse_formats, parse_input_size, validate_config
from ghostnet_edge.export.pipeline import ExportConfig, export_artifacts

MODEL = "ghostnet_cifar_050"
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(scope="module")
def cifar_dir(cifar_tar: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ghostnet_edge.calib.sampler import extract_tar_images

    root = tmp_path_factory.mktemp("cifar") / "images"
    assert extract_tar_images(cifar_tar, root, per_class=5) == 50
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A GhostNet 0.5x CIFAR checkpoint with class names (seeded weights, saved by the models stage)."""
    from ghostnet_edge.models import create_model, save_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "ghost.pt"
    model = create_model(MODEL, seed=0)
    save_checkpoint(path, model, {"class_names": CIFAR_CLASSES, "seed": 0})
    return path


@pytest.fixture(autouse=True)
def _private_cache(private_cache: Path) -> None:
    """Every test here uses a cache of its own session (see conftest)."""


def _cfg(checkpoint: Path | None, calib: Path, out: Path, **kw) -> ExportConfig:
    base = {"num_calib": 24, "num_verify": 12, "threads": 1, "min_agreement": 0.5}
    base.update(kw)
    return ExportConfig(checkpoint=checkpoint, calib=calib, out=out, **base)


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".staging-" in p.name or ".old-" in p.name)


@pytest.fixture(scope="module")
def full(checkpoint: Path, cifar_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One complete export (ONNX + TFLite, FP32 + INT8) of a checkpoint, calibrated on real CIFAR photos."""
    base = tmp_path_factory.mktemp("exports")
    # Module fixtures run before the function-scoped private cache is set: point at the same folder.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GHOSTEDGE_CACHE", str(tmp_path_factory.getbasetemp() / "ghostedge-cache"))
        report = export_artifacts(_cfg(checkpoint, cifar_dir, base / "a"))
    return {"report": report, "out": base / "a", "base": base}


@pytest.mark.slow
def test_every_artifact_is_written_and_verified(full: dict) -> None:
    out: Path = full["out"]
    names = sorted(p.name for p in out.iterdir())
    assert names == ["labels.txt", "manifest.json", "model.onnx", "model_fp32.tflite", "model_int8.onnx",
                     "model_int8.tflite", "quant_report.json", "quant_report.md"]
    checks = {a.name: a.check for a in full["report"].artifacts}
    assert checks["model.onnx"]["max_abs_diff"] <= 1e-4 and checks["model.onnx"]["passed"]
    assert checks["model_fp32.tflite"]["passed"]
    for name in ("model_int8.onnx", "model_int8.tflite"):
        assert 0.5 <= checks[name]["top1_agreement"] <= 1.0
        assert checks[name]["accuracy_delta"] is not None  # class folders match the checkpoint's names
    assert (out / "labels.txt").read_text().split() == CIFAR_CLASSES
    assert _leftovers(full["base"]) == []


@pytest.mark.slow
def test_manifest_hashes_sources_and_records_calibration(full: dict, checkpoint: Path) -> None:
    from ghostnet_edge.utils.atomic import sha256_file

    out: Path = full["out"]
    m = json.loads((out / "manifest.json").read_text())
    assert verify_manifest(out, m) == []
    listed = {f["path"] for f in m["files"]}
    assert listed == {p.name for p in out.iterdir()} - {"manifest.json"}
    assert m["source"]["checkpoint_sha256"] == sha256_file(checkpoint) and m["source"]["trained"]
    assert m["calibration"]["count"] == 24 and m["calibration"]["num_classes"] >= 5
    assert len(m["calibration"]["list_sha256"]) == 64
    # One calibration pass gave both INT8 models their ranges.
    shared = m["calibration"]["ranges"]
    assert shared["tensors"] > 100 and shared["cache_hit"] in (True, False) and shared["onnx_int8"] == "these ranges"
    assert shared["tflite_int8"].startswith("shared calibration ranges")
    assert m["verification"]["count"] == 12 and m["verification"]["labelled"]
    assert m["preprocessing"]["mean"] and m["preprocessing"]["input_size"] == [3, 32, 32]
    assert m["quantization"]["activation_type"] in ("uint8", "int8") and m["quantization"]["activation_reason"]
    io = m["tflite_int8_io"]
    assert io["input"]["dtype"] == "int8" and io["input"]["scale"] > 0 and io["input"]["layout"] == "NHWC"
    assert isinstance(io["output"]["zero_point"], int)
    assert {a["file"] for a in m["artifacts"]} == {"model.onnx", "model_int8.onnx", "model_fp32.tflite",
                                                  "model_int8.tflite"}
    assert "torch" in m["versions"] and "onnxruntime" in m["versions"]
    # Tampering is detected.
    (out / "labels.txt").write_text("x\n")
    try:
        assert verify_manifest(out, m) == ["labels.txt: changed"]
    finally:
        (out / "labels.txt").write_text("\n".join(CIFAR_CLASSES) + "\n")


@pytest.mark.slow
def test_quant_report_points_at_layers(full: dict) -> None:
    rep = json.loads((full["out"] / "quant_report.json").read_text())
    assert [a["artifact"] for a in rep["artifacts"]] == ["model_int8.onnx", "model_int8.tflite"]
    for sec in rep["artifacts"]:
        assert sec["num_layers"] > 10 and len(sec["worst_layers"]) == 10
        assert all(r["sqnr_db"] is not None for r in sec["worst_layers"])
    assert "| layer | op | SQNR dB | drop dB |" in (full["out"] / "quant_report.md").read_text()


@pytest.mark.slow
def test_embedded_metadata_lets_an_app_feed_the_model(full: dict) -> None:
    import onnx

    from ghostnet_edge.export.tflite import read_embedded_metadata

    props = {p.key: p.value for p in onnx.load(str(full["out"] / "model.onnx")).metadata_props}
    assert json.loads(props["ghostedge.labels"]) == CIFAR_CLASSES
    assert json.loads(props["ghostedge.preprocessing"])["std"]
    meta = read_embedded_metadata(full["out"] / "model_int8.tflite")
    assert json.dumps(meta)  # serialisable
    text = json.dumps(meta)
    assert "NHWC" in text and "airplane" in text


@pytest.mark.slow
def test_same_inputs_give_byte_identical_artifacts(full: dict, checkpoint: Path, cifar_dir: Path) -> None:
    """Again, with 2 threads: TFLite then converts beside the calibration and the ONNX quantization,
    the calibration ranges come from the cache, and the converter process makes the TFLite INT8 layer
    report; same bytes, and the same per-layer report."""
    out2 = full["base"] / "b"
    report = export_artifacts(_cfg(checkpoint, cifar_dir, out2, threads=2))
    assert "stages beside the converter (this process)" in report.timings
    assert "tflite_int8_layer_report (converter process)" in report.timings
    assert report.manifest["calibration"]["ranges"]["cache_hit"]
    for name in ("model.onnx", "model_int8.onnx", "model_fp32.tflite", "model_int8.tflite", "labels.txt"):
        assert (out2 / name).read_bytes() == (full["out"] / name).read_bytes(), name

    def layers(out: Path) -> dict:
        qr = json.loads((out / "quant_report.json").read_text())
        return {sec["artifact"]: sec["layers"] for sec in qr["artifacts"]}

    here, there = layers(full["out"]), layers(out2)
    assert here["model_int8.tflite"] and here == there


def test_force_replaces_without_mixing(checkpoint: Path, cifar_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "exp"
    out.mkdir()
    (out / "old_file.txt").write_text("from a previous export")
    cfg = _cfg(checkpoint, cifar_dir, out, formats=("onnx",), int8=False)
    with pytest.raises(GhostEdgeError, match="already exists") as err:
        export_artifacts(cfg)
    assert "--force" in err.value.hint
    assert sorted(p.name for p in out.iterdir()) == ["old_file.txt"]
    report = export_artifacts(ExportConfig(**{**cfg.__dict__, "force": True}))
    assert sorted(p.name for p in out.iterdir()) == ["labels.txt", "manifest.json", "model.onnx"]
    assert [a.name for a in report.artifacts] == ["model.onnx"]
    assert _leftovers(tmp_path) == []


def test_failed_check_writes_nothing(checkpoint: Path, cifar_dir: Path, tmp_path: Path) -> None:
    """A failed check leaves no folder; with --force over an old export, the old one stays untouched."""
    out = tmp_path / "exp"
    with pytest.raises(ExportError, match="model.onnx failed its check") as err:
        export_artifacts(_cfg(checkpoint, cifar_dir, out, formats=("onnx",), int8=False, tolerance=1e-15))
    assert "nothing was written" in err.value.message
    assert not out.exists() and _leftovers(tmp_path) == []
    out.mkdir()
    (out / "model.onnx").write_bytes(b"old export")
    with pytest.raises(ExportError):
        export_artifacts(_cfg(checkpoint, cifar_dir, out, formats=("onnx",), int8=False, tolerance=1e-15,
                              force=True))
    assert [p.name for p in out.iterdir()] == ["model.onnx"] and (out / "model.onnx").read_bytes() == b"old export"
    assert _leftovers(tmp_path) == []


def test_random_weights_warn_and_input_size_override(cifar_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "exp"
    report = export_artifacts(ExportConfig(model=MODEL, calib=cifar_dir, out=out, formats=("onnx",), int8=False,
                                           num_verify=4, threads=1, input_size=64))
    assert any("random weights" in w for w in report.warnings)
    m = json.loads((out / "manifest.json").read_text())
    assert m["source"]["trained"] is False and m["source"]["checkpoint_sha256"] is None
    assert m["preprocessing"]["input_size"] == [3, 64, 64]
    assert (out / "labels.txt").read_text().splitlines()[0] == "class_0"


@pytest.mark.slow
def test_max_drop_with_labelled_data_uses_nncf(checkpoint: Path, cifar_dir: Path, tmp_path: Path) -> None:
    """--max-drop + --val-data: NNCF's accuracy-aware quantization, accuracy of both models recorded."""
    pytest.importorskip("nncf")
    import shutil

    val = tmp_path / "val"
    for cls in ("cat", "dog", "ship"):
        shutil.copytree(cifar_dir / cls, val / cls)
    out = tmp_path / "exp"
    from google.protobuf.internal import enum_type_wrapper as etw

    native_or = "__or__" in vars(etw.EnumTypeWrapper)   # protobuf >= 7 has it; older ones get NNCF's shim
    report = export_artifacts(_cfg(checkpoint, cifar_dir, out, formats=("onnx",), num_calib=8, max_drop=0.5,
                                   val_data=val))
    q = report.manifest["quantization"]
    assert q["tool"] == "nncf.quantize_with_accuracy_control" and q["max_drop"] == 0.5
    assert q["validation"]["num_images"] == 15 and isinstance(q["float_nodes"], list)
    assert 0.0 <= q["validation"]["accuracy_int8"] <= 1.0
    assert [a.name for a in report.artifacts] == ["model.onnx", "model_int8.onnx"]
    assert ("__or__" in vars(etw.EnumTypeWrapper)) == native_or  # NNCF's import shim was removed again


# ---- bad input: one clear error each, nothing written ----------------------------------------------------


def _corrupt(tmp: Path) -> Path:
    p = tmp / "broken.pt"
    p.write_bytes(b"PK\x03\x04 definitely not a torch file" * 10)
    return p


@pytest.mark.parametrize("case", ["missing_ckpt", "corrupt_ckpt", "wrong_arch", "calib_missing", "calib_empty",
                                  "calib_no_images", "calib_unreadable", "input_size", "no_calib_for_int8",
                                  "bad_format", "bad_method"])
def test_bad_input_fails_cleanly(case: str, checkpoint: Path, cifar_dir: Path, tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "exp"
    calib, ckpt, kw = cifar_dir, checkpoint, {"formats": ("onnx",)}
    expected: type[GhostEdgeError] = GhostEdgeError
    words = ""
    if case == "missing_ckpt":
        ckpt, expected, words = tmp_path / "nope.pt", CheckpointError, "does not exist"
    elif case == "corrupt_ckpt":
        ckpt, expected = _corrupt(tmp_path), CheckpointError
    elif case == "wrong_arch":
        kw["model"], expected, words = "ghostnet_cifar_100", CheckpointError, "does not fit"
    elif case == "calib_missing":
        calib, expected, words = tmp_path / "no_such_dir", DataError, "does not exist"
    elif case == "calib_empty":
        calib, expected, words = tmp_path / "empty", DataError, "is empty"
        calib.mkdir()
    elif case == "calib_no_images":
        calib, expected, words = tmp_path / "docs", DataError, "no image files"
        calib.mkdir()
        (calib / "a.txt").write_text("hello")
    elif case == "calib_unreadable":
        calib = tmp_path / "imgs"
        shutil.copytree(cifar_dir / "cat", calib / "cat")
        (calib / "cat" / "zz_broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
        expected, words = DataError, "zz_broken.jpg"
        kw.update(num_calib=100, num_verify=1)  # every image is drawn
    elif case == "input_size":
        kw["input_size"], expected, words = 30, ModelError, "multiple"
    elif case == "no_calib_for_int8":
        calib, expected, words = None, GhostEdgeError, "calibration images"
        kw.update(int8=True, verify_data=cifar_dir)
    elif case == "bad_format":
        kw["formats"], words = ("onnx", "coreml"), "coreml"
    elif case == "bad_method":
        kw["calib_method"], words = "kl", "calibration method"
    with pytest.raises(expected) as err:
        export_artifacts(_cfg(ckpt, calib, out, int8=kw.pop("int8", True), **kw))
    assert words in err.value.message
    assert err.value.hint
    assert not out.exists() and _leftovers(tmp_path) == []


def test_missing_tensorflow_names_the_package(checkpoint: Path, cifar_dir: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry in sys.modules makes every `import tensorflow` fail as if it were not installed.
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    out = tmp_path / "exp"
    with pytest.raises(MissingDependencyError) as err:
        export_artifacts(_cfg(checkpoint, cifar_dir, out, formats=("onnx", "tflite")))
    assert "'tensorflow'" in err.value.message and "pip install" in err.value.hint
    assert not out.exists() and _leftovers(tmp_path) == []


# ---- small pure helpers -------------------------------------------------------------------------------------


def test_option_parsing() -> None:
    assert parse_formats("tflite, onnx") == ("onnx", "tflite")
    assert parse_input_size("160x224") == (160, 224) and parse_input_size(224) == (224, 224)
    assert parse_input_size((3, 96, 128)) == (96, 128) and parse_input_size(None) is None
    with pytest.raises(ModelError):
        parse_input_size("big")
    with pytest.raises(GhostEdgeError, match="--val-data"):
        validate_config(ExportConfig(model=MODEL, calib=Path("."), max_drop=0.01))
    with pytest.raises(GhostEdgeError, match="CHECKPOINT or --model"):
        validate_config(ExportConfig(calib=Path(".")))


def test_labels_resolution(imagenet_samples: Path) -> None:
    names, wnids, src = resolve_labels({"class_names": CIFAR_CLASSES}, 10, None)
    assert names == CIFAR_CLASSES and wnids is None and src == "checkpoint"
    names, wnids, src = resolve_labels({}, 1000, imagenet_samples / "imagenet_class_index.json")
    assert names[0] == "tench" and wnids[0] == "n01440764"
    assert label_indices(["n01440764", "n01530575"], names, wnids).tolist() == [0, 10]
    assert label_indices(["cat", None], CIFAR_CLASSES) is None
    np.testing.assert_array_equal(label_indices(["cat", "dog"], CIFAR_CLASSES), [3, 5])
    assert resolve_labels({}, 3, None)[0] == ["class_0", "class_1", "class_2"]


def test_report_and_manifest_helpers(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from ghostnet_edge.export import manifest as mf
    from ghostnet_edge.export import report as rp

    # A chain t0 -> t1 -> t2 -> t3 with a squeeze-excite branch: gate g (from t1, little noise) and the
    # multiply m = t1 * g. The multiply's drop is taken against its noisier input t1, not against g,
    # the tensor just before it in execution order.
    def layer(name, op, sqnr, *inputs):
        return SimpleNamespace(name=name, op=op, sqnr_db=sqnr, inputs=inputs)

    layers = [layer("t0", "QUANTIZE", 40.0, "<graph input>"), layer("t1", "CONV_2D", 30.0, "t0"),
              layer("g", "HARD_SWISH", 55.0, "t1"), layer("m", "MUL", 29.0, "t1", "g"),
              layer("t2", "CONV_2D", 32.0, "m"), layer("t3", "CONV_2D", 12.0, "t2")]
    rows = rp.tflite_layer_rows(layers)
    assert [r["drop_db"] for r in rows] == [None, 10.0, -25.0, 1.0, -3.0, 20.0]
    assert [r["tensor"] for r in rp.worst(rows, 2)] == ["t3", "t1"]
    sec = rp.artifact_section("m.tflite", rows, {"top1_agreement": 0.9}, 4)
    assert sec["min_sqnr_db"] == 12.0 and sec["output_sqnr_db"] == 12.0
    md = rp.render_markdown(rp.build_quant_report([sec], {"count": 4, "num_classes": 2, "method": "minmax"}))
    assert "`t3` | CONV_2D | 12.0 (low) | 20.0" in md
    # a layer none of whose inputs was measured has no drop instead of one against an unrelated tensor
    assert rp.tflite_layer_rows([layer("x", "ADD", 20.0, "unmeasured")])[0]["drop_db"] is None
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.bin").write_bytes(b"abc")
    (tmp_path / "manifest.json").write_text("{}")
    entries = mf.file_entries(tmp_path)
    assert entries == [{"path": "sub/a.bin", "bytes": 3,
                        "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}]
    assert mf.tflite_io_entry(None) is None
    res = SimpleNamespace(int8_path=Path("x"), io_dtype="uint8", input_shape_nhwc=(1, 32, 32, 3),
                          input_quant=(0.02, 128), output_quant=(0.1, 3))
    io = mf.tflite_io_entry(res)
    assert io["input"] == {"layout": "NHWC", "shape": [1, 32, 32, 3], "dtype": "uint8", "scale": 0.02,
                           "zero_point": 128}
    src = mf.source_entry(None, MODEL, False, 7)
    assert src["weights"] == "random init (seed 7)" and src["checkpoint_sha256"] is None


def test_input_size_override_keeps_the_checkpoints_other_settings() -> None:
    import dataclasses

    from ghostnet_edge.export.options import with_input_size
    from ghostnet_edge.models import get_spec

    trained = dataclasses.replace(get_spec("ghostnet_050"), stem_stride=1, dropout=0.1)   # as a checkpoint may set
    bigger = with_input_size(trained, (320, 320))
    assert bigger.input_size == (3, 320, 320) and bigger.resize_size == round(320 / 0.875)
    assert (bigger.stem_stride, bigger.dropout, bigger.mean) == (1, 0.1, trained.mean)


def test_fp32_limit_rises_to_pytorchs_own_float32_error_only_when_it_is_larger() -> None:
    """An ill-conditioned network (untrained weights with huge logits) is held to 4x PyTorch's own distance
    from float64, a well-conditioned one to the plain tolerance."""
    import torch

    from ghostnet_edge.export.checks import FLOAT_ERROR_FACTOR, fp32_allowed, fp32_tolerance
    from ghostnet_edge.export.reference import run_torch, torch_float_error

    ref = np.array([[0.5, -2.0, 3.0]])
    assert fp32_allowed(ref, 1e-4) == fp32_tolerance(ref, 1e-4) == pytest.approx(3e-4)
    assert fp32_allowed(ref, 1e-4, float_error=1e-6) == pytest.approx(3e-4)
    assert fp32_allowed(ref, 1e-4, float_error=1e-3) == pytest.approx(FLOAT_ERROR_FACTOR * 1e-3)
    # a well-conditioned network (PyTorch's own error within the default tolerance) keeps a strict --tolerance
    assert fp32_allowed(ref, 1e-15, float_error=1e-6) == pytest.approx(3e-15)

    torch.manual_seed(0)
    net = torch.nn.Sequential(*[torch.nn.Linear(64, 64) for _ in range(12)])
    for layer in net:  # weights scaled up 30x: huge logits, of which float32 keeps about 7 digits
        layer.weight.data.mul_(30.0)
    x = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    ref32 = run_torch(net, x)
    err = torch_float_error(net, x, ref32)
    assert 0 < err < 1e-5 * np.abs(ref32).max()          # float32's rounding, relative to the logits
    assert next(net.parameters()).dtype == torch.float32   # the float64 copy leaves the model alone


def test_the_artifact_table_drives_the_pipeline() -> None:
    """Every row names a converter the pipeline has and a runtime the runner knows; the plan follows
    --formats and --int8 in the table's order."""
    from ghostnet_edge.export import steps
    from ghostnet_edge.export.artifacts import ARTIFACTS
    from ghostnet_edge.export.job import planned_artifacts
    from ghostnet_edge.runtime.backends import BACKENDS

    assert {a.convert for a in ARTIFACTS} <= set(steps.CONVERTERS)
    assert {a.runtime for a in ARTIFACTS} <= set(BACKENDS)
    assert [a.stage for a in ARTIFACTS] == ["onnx", "onnx_int8", "tflite", "tflite_int8"]
    keys = lambda **kw: [a.key for a in planned_artifacts(ExportConfig(**kw))]  # noqa: E731
    assert keys() == ["onnx", "onnx-int8", "tflite", "tflite-int8"]
    assert keys(formats=("tflite",)) == ["tflite", "tflite-int8"]
    assert keys(formats=("onnx",), int8=False) == ["onnx"]


def test_main_process_threads_leave_the_converters_core_while_it_works(tmp_path: Path) -> None:
    """PyTorch and onnxruntime in the main process get one thread fewer than the cores while the converter
    process works (importing TensorFlow before its job, converting after), and every thread once it idles."""
    import torch

    from ghostnet_edge.export.job import ExportJob, Timer
    from ghostnet_edge.export.reference import torch_threads

    class FakeWorker:
        waiting = False

        def idle(self) -> bool:
            return self.waiting

    def job(worker: object) -> ExportJob:
        return ExportJob(ExportConfig(model="ghostnet_050"), tmp_path, Timer(), [], None, None, {}, False, 2, worker)

    assert job(None).own_threads == 2                      # no converter process: every core
    worker = FakeWorker()
    j = job(worker)
    assert j.own_threads == 1                              # before its job: importing TensorFlow
    j.region = (0.0, 0.0)
    assert j.own_threads == 1                              # converting
    worker.waiting = True
    assert j.own_threads == 2                              # waiting for this process's ranges
    worker.waiting = False
    j.tflite_result = object()
    assert j.own_threads == 2                              # done

    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_pytorch_reference_runs_a_few_images_at_a_time() -> None:
    """run_torch calls the model on REFERENCE_PIXEL_BUDGET's worth of images at a time, in order, and the
    logits agree with one call on all of them to float32 rounding."""
    import torch

    from ghostnet_edge.export.reference import reference_batch, run_torch

    assert reference_batch(224 * 224) == 4 and reference_batch(32 * 32) == 196 and reference_batch(10**9) == 1
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(8, 5))
    sizes: list[int] = []
    net.register_forward_pre_hook(lambda _m, args: sizes.append(len(args[0])))
    x = np.random.default_rng(3).standard_normal((9, 3, 224, 224)).astype(np.float32)
    out = run_torch(net, x)
    assert sizes == [4, 4, 1]
    with torch.no_grad():
        whole = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(out, whole, rtol=0, atol=1e-5)
    assert run_torch(net, x, batch=9).shape == (9, 5) and sizes[-1] == 9
