"""Standard TFLite Metadata (metadata_schema.fbs) in every .tflite: writer, reader, packed labels, the gate.

Uses ``TinyGhostNet`` (converts in about a second). Google's own reader (tflite-support's
``MetadataDisplayer``) and a C client read the real GhostNet exports in ``test_example_client.py``.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("tensorflow")

from ghostnet_edge.data import Preprocess  # noqa: E402
from ghostnet_edge.errors import ExportError  # noqa: E402
from ghostnet_edge.export.tflite import metadata as md  # noqa: E402
from ghostnet_edge.export.tflite._testing import export_onnx_for_tests, tiny_ghostnet  # noqa: E402
from ghostnet_edge.export.tflite.convert import convert_onnx_to_tflite  # noqa: E402

LABELS = [f"class_{i}" for i in range(10)]
# What the export pipeline hands the converter: Preprocess.describe() + the TFLite layout.
PREP = {**Preprocess(input_size=(3, 32, 32), mean=(0.4914, 0.4822, 0.4465), std=(0.247, 0.2435, 0.2616),
                     resize_size=32).describe(), "layout": "NHWC"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("tflite_md")
    onnx_path = export_onnx_for_tests(tiny_ghostnet(seed=0), d / "tiny.onnx", (3, 32, 32))
    rep = np.random.default_rng(0).standard_normal((16, 3, 32, 32)).astype(np.float32)
    res = convert_onnx_to_tflite(onnx_path, d / "fp32.tflite", d / "int8.tflite", rep, labels=LABELS,
                                 preprocessing=PREP)
    return {"dir": d, "onnx": onnx_path, "rep": rep, "fp32": res.fp32_path, "int8": res.int8_path}


def _meta(**kw: object) -> md.ClassifierMetadata:
    base = {"name": "m", "description": "d", "version": "1", "height": 32, "width": 32, "channels": 3,
            "mean": (125.307, 122.961, 113.8575), "std": (62.985, 62.0925, 66.708),
            "stats_min": (-1.99, -1.98, -1.71), "stats_max": (2.06, 2.13, 2.11), "labels": tuple(LABELS),
            "input_description": "in", "output_description": "out"}
    base.update(kw)
    return md.ClassifierMetadata(**base)  # type: ignore[arg-type]


def _restamp(model: bytes, meta: md.ClassifierMetadata, files: dict[str, bytes] | None = None) -> bytes:
    """``model`` with its standard metadata (and packed files) replaced."""
    return md.embed_metadata(model, md.standard_entry(meta), meta.associated_files() if files is None else files)


def _rename_entry(model: bytes, name: str) -> bytes:
    """Hide a metadata entry by renaming it in place (same length, so the flatbuffer stays valid)."""
    raw = name.encode()
    assert model.count(raw) == 1
    return model.replace(raw, raw[:-1] + b"~")


# ------------------------------------------------------------------------------------------------
# the ModelMetadata flatbuffer


def test_metadata_buffer_round_trips_and_is_deterministic() -> None:
    meta = _meta()
    buf = md.build_metadata_buffer(meta)
    assert buf[4:8] == b"M001" and buf == md.build_metadata_buffer(_meta())
    got = md.parse_metadata_buffer(buf)
    assert {k: got[k] for k in ("name", "description", "version", "author", "license", "min_parser_version")} == {
        "name": "m", "description": "d", "version": "1", "author": "ghostedge", "license": "Apache-2.0",
        "min_parser_version": "1.0.0"}
    (sg,) = got["subgraph_metadata"]
    (tin,), (tout,) = sg["input_tensor_metadata"], sg["output_tensor_metadata"]
    assert tin["name"] == "image" and tin["description"] == "in"
    assert tin["content"] == {"content_properties_type": "ImageProperties",
                              "content_properties": {"color_space": "RGB", "default_size": {"width": 32, "height": 32}}}
    assert tin["process_units"][0]["options_type"] == "NormalizationOptions"
    np.testing.assert_array_equal(tin["process_units"][0]["options"]["mean"], np.float32(meta.mean))
    np.testing.assert_array_equal(tin["stats"]["max"], np.float32(meta.stats_max))
    assert tout["content"]["content_properties_type"] == "FeatureProperties"
    assert tout["associated_files"][0]["name"] == "labels.txt"
    assert tout["associated_files"][0]["type"] == "TENSOR_AXIS_LABELS"
    # Optional parts left out are absent, not empty.
    bare = md.parse_metadata_buffer(md.build_metadata_buffer(_meta(mean=None, std=None, stats_min=None,
                                                                  stats_max=None, labels=None)))
    tin = bare["subgraph_metadata"][0]["input_tensor_metadata"][0]
    assert "process_units" not in tin and "stats" not in tin
    assert "associated_files" not in bare["subgraph_metadata"][0]["output_tensor_metadata"][0]


def test_damaged_metadata_buffers_are_export_errors() -> None:
    buf = md.build_metadata_buffer(_meta())
    with pytest.raises(ExportError, match="no M001"):
        md.parse_metadata_buffer(b"\0" * 4 + b"XXXX" + buf[8:])
    for cut in (12, len(buf) // 2, len(buf) - 9):
        with pytest.raises(ExportError, match="damaged") as err:
            md.parse_metadata_buffer(buf[:cut])
        assert err.value.hint
    # a root offset pointing far outside
    with pytest.raises(ExportError, match="damaged"):
        md.parse_metadata_buffer(b"\xff\xff\xff\x7f" + buf[4:])


# ------------------------------------------------------------------------------------------------
# the packed zip


def test_packed_files_are_deterministic_and_follow_tflite_support_layout(tiny: dict) -> None:
    flat, files = md.split_packed_files(tiny["int8"].read_bytes())
    assert files == {"labels.txt": ("\n".join(LABELS) + "\n").encode()}
    once = md.pack_associated_files(flat, {"b.txt": b"2", "a.txt": b"1"})
    assert once == md.pack_associated_files(flat, {"a.txt": b"1", "b.txt": b"2"})
    assert once.startswith(flat)
    with zipfile.ZipFile(io.BytesIO(once)) as zf:
        infos = zf.infolist()
        assert [i.filename for i in infos] == ["a.txt", "b.txt"]
        assert all(i.date_time == (1980, 1, 1, 0, 0, 0) and i.compress_type == zipfile.ZIP_STORED for i in infos)
        assert infos[0].header_offset == len(flat)      # offsets count from the start of the file
    assert md.split_packed_files(once) == (flat, {"a.txt": b"1", "b.txt": b"2"})
    assert md.pack_associated_files(flat, {}) == flat
    assert md.split_packed_files(flat) == (flat, {})


def test_repacking_keeps_or_replaces_the_packed_files(tiny: dict) -> None:
    model = tiny["int8"].read_bytes()
    again = md.embed_metadata(model, {md.LABELS: b'["x"]'})
    assert md.packed_files(again) == md.packed_files(model)      # re-appended after the bigger flatbuffer
    assert md.metadata_entries(again)[md.LABELS] == b'["x"]'
    assert md.packed_files(md.embed_metadata(model, {}, {})) == {}
    assert md.packed_files(md.embed_metadata(model, {}, {"labels.txt": b"a\n"})) == {"labels.txt": b"a\n"}


# ------------------------------------------------------------------------------------------------
# what the converter writes


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_every_conversion_carries_standard_metadata(tiny: dict, precision: str) -> None:
    from ghostnet_edge.runtime.tflite_check import verify_tflite_file

    path = tiny[precision]
    meta = md.read_embedded_metadata(path)
    std = meta["standard"]
    assert std["name"] == "tiny" and std["author"] == "ghostedge" and std["license"] == "Apache-2.0"
    assert std["version"].endswith(f"+onnx.{meta['info']['source_onnx_sha256'][:12]}")
    tin = std["subgraph_metadata"][0]["input_tensor_metadata"][0]
    mean, std_ = md.standard_normalization(std)
    np.testing.assert_allclose(mean, np.float32(np.array(PREP["mean"]) * 255), rtol=0)
    np.testing.assert_allclose(std_, np.float32(np.array(PREP["std"]) * 255), rtol=0)
    np.testing.assert_allclose(tin["stats"]["min"], -np.array(PREP["mean"]) / np.array(PREP["std"]), rtol=1e-6)
    assert ("int8" in tin["description"]) == (precision == "int8")
    assert meta["associated_files"] == ["labels.txt"]
    assert md.standard_labels(std, md.packed_files(path.read_bytes())) == LABELS
    assert meta["labels"] == LABELS and meta["preprocessing"]["mean"] == PREP["mean"]  # ghostedge's entries
    assert {md.STANDARD, md.LABELS, md.PREPROCESSING, md.INFO} <= set(meta["entries"])
    checked = md.check_metadata_agrees(path)
    assert checked["input_dtype"] == ("INT8" if precision == "int8" else "FLOAT32") and checked["labels"] == 10
    assert verify_tflite_file(path) == []                        # the appended zip does not upset the verifier


def test_the_converter_refuses_metadata_that_disagrees(tiny: dict, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    real = md.image_classifier_metadata

    def wrong(*a: object, **k: object) -> md.ClassifierMetadata:
        from dataclasses import replace

        return replace(real(*a, **k), labels=("a", "b"))          # 2 labels for 10 outputs

    monkeypatch.setattr(md, "image_classifier_metadata", wrong)
    with pytest.raises(ExportError, match="2 labels in labels.txt for 10 output values"):
        convert_onnx_to_tflite(tiny["onnx"], tmp_path / "m.tflite", None, labels=LABELS, preprocessing=PREP)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------
# the gate


def test_check_metadata_agrees_names_each_disagreement(tiny: dict) -> None:
    fp32, int8 = tiny["fp32"].read_bytes(), tiny["int8"].read_bytes()
    cases = [
        (_restamp(fp32, _meta(labels=("a", "b", "c"))), {}, "3 labels in labels.txt for 10 output values"),
        (_restamp(fp32, _meta(height=224, width=224)), {}, "metadata image size 224x224"),
        (_restamp(fp32, _meta(channels=1, mean=(1.0,), std=(2.0,))), {}, "GRAYSCALE needs 1 channels"),
        (_restamp(fp32, _meta(mean=(1.0, 2.0),)), {}, "2 normalisation mean values for 3 channels"),
        (_restamp(fp32, _meta(std=(1.0, 0.0, 1.0))), {}, "std must be > 0"),
        (_restamp(fp32, _meta(), {}), {}, "labels.txt is named in the metadata but not packed"),
        (_restamp(fp32, _meta(mean=(120.0, 120.0, 120.0))), {"preprocessing": PREP},
         "normalisation mean .* is not the export's"),
        (_restamp(fp32, _meta(labels=tuple("abcdefghij"))), {"labels": LABELS}, "packed labels differ"),
        (fp32, {"int8": True}, "expected an integer input, the input tensor is FLOAT32"),
        (int8, {"int8": False}, "expected an float input, the input tensor is INT8"),
        (md.embed_metadata(fp32, md.json_entries(None, None, {"precision": "int8", "io_dtype": "int8"})), {},
         "the export says int8 with int8 input, the input tensor is FLOAT32"),
        (fp32, {"preprocessing": {**PREP, "input_size": [3, 64, 64]}}, r"input_size \[3, 64, 64\]"),
    ]
    for model, kwargs, match in cases:
        with pytest.raises(ExportError, match=match) as err:
            md.check_metadata_agrees(model, **kwargs)
        assert "metadata and tensors disagree" in err.value.message and err.value.hint
    with pytest.raises(ExportError, match="no standard TFLite metadata"):
        md.check_metadata_agrees(_rename_entry(fp32, md.STANDARD))
    md.check_metadata_agrees(fp32, labels=LABELS, preprocessing=PREP, int8=False)   # and the real ones pass
    md.check_metadata_agrees(int8, labels=LABELS, preprocessing=PREP, int8=True)


# ------------------------------------------------------------------------------------------------
# readers: ghostedge eval on a model that only has the standard metadata


def test_eval_reads_labels_and_preprocessing_from_standard_metadata_alone(tiny: dict, tmp_path: Path) -> None:
    from ghostnet_edge.runtime.artifacts import describe_meta
    from ghostnet_edge.runtime.evaluate import _tflite_metadata

    model = tiny["int8"].read_bytes()
    for name in (md.LABELS, md.PREPROCESSING, md.INFO):
        model = _rename_entry(model, name)
    path = tmp_path / "standard_only.tflite"
    path.write_bytes(model)
    meta = md.read_embedded_metadata(path)
    assert meta["info"] is None and meta["labels"] == LABELS
    pre = meta["preprocessing"]
    assert pre["input_size"] == [3, 32, 32] and pre["resize_size"] == 32 and pre["source"] == md.STANDARD
    np.testing.assert_allclose(pre["mean"], PREP["mean"], rtol=1e-6)
    np.testing.assert_allclose(pre["std"], PREP["std"], rtol=1e-6)
    found = describe_meta(_tflite_metadata(path))
    assert found["class_names"] == LABELS and found["preprocess"]["resize_size"] == 32
    assert json.dumps(found)  # plain data, as the manifest-style readers expect
