"""Make a ``.tflite`` file self-describing: labels and preprocessing inside the flatbuffer.

The TFLite schema has a ``metadata`` table: ``(name, buffer index)`` pairs that every runtime ignores and
any tool can read. The official writer (tflite-support) cannot be installed next to TensorFlow 2.19
(pip cannot resolve both), so we write the entries ourselves with the ``flatbuffers`` package and the
schema bindings that ai-edge-litert and TensorFlow ship (``schema_py_generated.py``) - the same object-API
unpack/append/repack the official writer does. Entries are JSON under the names in
:data:`METADATA_NAMES`. The signature (``serving_default``: input ``image`` NHWC, output ``logits``),
which Android's ``Interpreter.getSignatureRunner`` reads, is written by the converter itself
(``convert.py`` hands it a SavedModel-style signature) and reported by :func:`read_embedded_metadata`.

Repacking keeps weight buffers 16-byte aligned like the converter does (the generated ``Pack`` would
align them to 1 byte), so runtimes can map weights in place.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ghostnet_edge.errors import ExportError

LABELS = "ghostedge.labels"
PREPROCESSING = "ghostedge.preprocessing"
INFO = "ghostedge.info"
METADATA_NAMES = (LABELS, PREPROCESSING, INFO)
_FILE_IDENTIFIER = b"TFL3"
_BUFFER_ALIGNMENT = 16


def schema() -> Any:
    """The TFLite flatbuffer schema bindings (light: ai-edge-litert's copy, else TensorFlow's)."""
    try:
        from ai_edge_litert import schema_py_generated as s
    except ImportError:
        try:
            from tensorflow.lite.python import schema_py_generated as s
        except ImportError as exc:
            from ghostnet_edge.errors import MissingDependencyError

            raise MissingDependencyError("ai_edge_litert", "ai-edge-litert", "reading TFLite files") from exc
    return s


def load_model_bytes(path: Path | str) -> bytes:
    """Read a ``.tflite`` file, refusing files that are not TFLite flatbuffers."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"TFLite file {path} does not exist", "convert the model first (ghostedge export)")
    data = path.read_bytes()
    if len(data) < 8 or data[4:8] != _FILE_IDENTIFIER:
        raise ExportError(f"{path} is not a TFLite model (no TFL3 identifier)",
                          "pass a .tflite file written by the TFLite converter")
    return data


class _AlignedBuffer:
    """Packs one ``BufferT`` with its data vector aligned to 16 bytes (duck-types ``BufferT.Pack``)."""

    def __init__(self, buf: Any, s: Any) -> None:
        self.buf = buf
        self.s = s

    def Pack(self, builder: Any) -> int:  # noqa: N802 - the flatbuffers object API's method name
        buf, s = self.buf, self.s
        data_off = None
        if buf.data is not None and len(buf.data):
            payload = np.asarray(buf.data, dtype=np.uint8).tobytes()
            builder.StartVector(1, len(payload), _BUFFER_ALIGNMENT)
            # Same raw copy as flatbuffers' CreateNumpyVector, which has no alignment argument.
            builder.head = builder.head - len(payload)
            builder.Bytes[builder.head:builder.head + len(payload)] = payload
            data_off = builder.EndVector()
        s.BufferStart(builder)
        if data_off is not None:
            s.BufferAddData(builder, data_off)
        s.BufferAddOffset(builder, buf.offset)
        s.BufferAddSize(builder, buf.size)
        return s.BufferEnd(builder)


def embed_metadata(model: bytes, entries: dict[str, bytes]) -> bytes:
    """Return ``model`` with ``entries`` (name -> bytes) in its metadata table, replacing same-named ones.

    Deterministic: the same model and entries give the same bytes (entries are added in sorted order).
    """
    import flatbuffers

    s = schema()
    model_t = s.ModelT.InitFromPackedBuf(bytearray(model), 0)
    model_t.metadata = list(model_t.metadata or [])
    model_t.buffers = list(model_t.buffers or [])
    by_name = {(m.name.decode() if isinstance(m.name, bytes) else m.name): m for m in model_t.metadata}
    for name in sorted(entries):
        payload = np.frombuffer(bytes(entries[name]), dtype=np.uint8)
        if name in by_name:
            model_t.buffers[by_name[name].buffer].data = payload
            continue
        buf = s.BufferT()
        buf.data = payload
        model_t.buffers.append(buf)
        meta = s.MetadataT()
        meta.name = name
        meta.buffer = len(model_t.buffers) - 1
        model_t.metadata.append(meta)
    model_t.buffers = [_AlignedBuffer(b, s) for b in model_t.buffers]
    builder = flatbuffers.Builder(max(1024, len(model) + 4096))
    builder.Finish(model_t.Pack(builder), file_identifier=_FILE_IDENTIFIER)
    return bytes(builder.Output())


def json_entries(labels: list[str] | None, preprocessing: dict[str, Any] | None,
                 info: dict[str, Any] | None) -> dict[str, bytes]:
    """The ghostedge metadata entries as compact, key-sorted JSON (stable bytes)."""
    out: dict[str, bytes] = {}
    for name, value in ((LABELS, labels), (PREPROCESSING, preprocessing), (INFO, info)):
        if value is not None:
            out[name] = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode("utf-8")
    return out


def signatures(model: bytes) -> list[dict[str, Any]]:
    """The model's signature defs: ``[{"key", "inputs", "outputs"}]`` as Android's tooling sees them."""
    s = schema()
    m = s.Model.GetRootAs(model, 0)
    out = []
    for i in range(m.SignatureDefsLength()):
        sd = m.SignatureDefs(i)
        out.append({
            "key": (sd.SignatureKey() or b"").decode(),
            "inputs": [(sd.Inputs(j).Name() or b"").decode() for j in range(sd.InputsLength())],
            "outputs": [(sd.Outputs(j).Name() or b"").decode() for j in range(sd.OutputsLength())],
        })
    return out


def metadata_entries(model: bytes) -> dict[str, bytes]:
    """Every metadata entry of the model (name -> raw bytes), including the converter's own."""
    s = schema()
    m = s.Model.GetRootAs(model, 0)
    out = {}
    for i in range(m.MetadataLength()):
        md = m.Metadata(i)
        name = (md.Name() or b"").decode()
        buf = m.Buffers(md.Buffer())
        out[name] = buf.DataAsNumpy().tobytes() if not buf.DataIsNone() else b""
    return out


def read_embedded_metadata(path: Path | str) -> dict[str, Any]:
    """What an app needs from the file: labels, preprocessing, ghostedge info, signatures, entry names."""
    model = load_model_bytes(path)
    entries = metadata_entries(model)

    def decode(name: str) -> Any:
        if name not in entries:
            return None
        try:
            return json.loads(entries[name].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ExportError(f"metadata entry '{name}' in {path} is not valid JSON: {exc}",
                              "convert the model again") from exc

    return {
        "labels": decode(LABELS),
        "preprocessing": decode(PREPROCESSING),
        "info": decode(INFO),
        "signatures": signatures(model),
        "entries": sorted(entries),
    }
