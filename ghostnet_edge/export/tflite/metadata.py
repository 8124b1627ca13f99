"""Make a ``.tflite`` file self-describing: labels and preprocessing inside the file, two ways.

1. **Standard TFLite Metadata**, the format of tflite-support (``metadata_schema.fbs``, file identifier
   ``M001``) that Android Studio, the TFLite Task Library, ``MetadataDisplayer`` and codegen read: a
   ``ModelMetadata`` flatbuffer stored in a model buffer that the ``Model.metadata`` entry named
   ``TFLITE_METADATA`` points at, plus *associated files* (here ``labels.txt``) packed as a zip archive
   appended to the flatbuffer, exactly as tflite-support's ``MetadataPopulator`` does it (stored, not
   compressed, with offsets counted from the start of the file). We write both ourselves - the
   ``ModelMetadata`` table with ``flatbuffers.Builder`` calls written from the schema, the archive with
   :mod:`zipfile` (fixed timestamps, attributes and order, so the bytes are deterministic) - because
   tflite-support cannot be installed next to current TensorFlow. What goes in (see
   :func:`image_classifier_metadata`): name, description, version, author ``ghostedge``, license
   ``Apache-2.0``, min_parser_version ``1.0.0``; input ``image`` with ImageProperties (RGB, its size),
   NormalizationOptions in the schema's 0-255 pixel scale (``mean * 255``, ``std * 255``: the schema
   normalises ``(pixel - mean) / std`` with pixels in [0, 255]) and Stats (the normalised value range
   per channel); output ``logits`` with ``labels.txt`` as a TENSOR_AXIS_LABELS file. Quantization stays
   in the tensors, where the schema says it belongs.
2. **ghostedge's JSON entries** (:data:`METADATA_NAMES`): the full preprocessing recipe (resize size,
   interpolation, crop rule, which the standard schema cannot express), labels and export provenance.
   ``ghostedge eval`` reads these first and falls back to the standard metadata for models that only
   have that (:func:`read_embedded_metadata`).

Both live in the TFLite schema's ``metadata`` table: ``(name, buffer index)`` pairs that every runtime
ignores. They are written with the object-API unpack/append/repack the official writer uses, through the
schema bindings that ai-edge-litert and TensorFlow ship (``schema_py_generated.py``). The signature
(``serving_default``: input ``image`` NHWC, output ``logits``), which Android's
``Interpreter.getSignatureRunner`` reads, is written by the converter itself (``convert.py`` hands it a
SavedModel-style signature) and reported by :func:`read_embedded_metadata`.

Repacking keeps weight buffers 16-byte aligned like the converter does (the generated ``Pack`` would
align them to 1 byte), so runtimes can map weights in place, and re-appends any packed files (their zip
offsets are absolute, so the archive is rebuilt after the flatbuffer changes size).

:func:`check_metadata_agrees` is the gate before an artifact is written: the metadata must describe the
tensors it sits next to (input size and channels, integer vs float input, one label per output).
"""

from __future__ import annotations

import io
import json
import math
import struct
import zipfile
import zlib
from dataclasses import dataclass
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

# Standard TFLite Metadata (tflite-support's metadata_schema.fbs).
STANDARD = "TFLITE_METADATA"            # the Model.metadata entry MetadataPopulator/MetadataDisplayer use
METADATA_IDENTIFIER = b"M001"
MIN_PARSER_VERSION = "1.0.0"            # we use no field or type added after schema 1.0.0
LABELS_FILE = "labels.txt"
AUTHOR = "ghostedge"
LICENSE = "Apache-2.0"
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
# Enums and union tags of the schema (values as declared there).
_COLOR_SPACES = {0: "UNKNOWN", 1: "RGB", 2: "GRAYSCALE"}
_CONTENT_TYPES = {0: "NONE", 1: "FeatureProperties", 2: "ImageProperties", 3: "BoundingBoxProperties",
                  4: "AudioProperties"}
_PROCESS_UNIT_TYPES = {0: "NONE", 1: "NormalizationOptions", 2: "ScoreCalibrationOptions",
                       3: "ScoreThresholdingOptions", 4: "BertTokenizerOptions",
                       5: "SentencePieceTokenizerOptions", 6: "RegexTokenizerOptions"}
_FILE_TYPES = {0: "UNKNOWN", 1: "DESCRIPTIONS", 2: "TENSOR_AXIS_LABELS", 3: "TENSOR_VALUE_LABELS",
               4: "TENSOR_AXIS_SCORE_CALIBRATION", 5: "VOCABULARY", 6: "SCANN_INDEX_FILE"}
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)       # the earliest date a zip entry can carry: no build time leaks in


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


def embed_metadata(model: bytes, entries: dict[str, bytes],
                   associated_files: dict[str, bytes] | None = None, model_t: Any = None) -> bytes:
    """Return ``model`` with ``entries`` (name -> bytes) in its metadata table, replacing same-named ones.

    ``associated_files`` (name -> bytes) are packed as the zip archive appended to the model (the
    standard metadata's associated files); None keeps the files the model already carries, ``{}`` drops
    them. Deterministic: the same model, entries and files give the same bytes (entries are added in
    sorted order, files in sorted order with fixed zip attributes). ``model_t``, when the caller has it, is
    ``model`` already unpacked (a ``ModelT``, edited here; ignored for a model with associated files).
    """
    import flatbuffers

    flat, packed = split_packed_files(model)
    files = packed if associated_files is None else associated_files
    s = schema()
    if model_t is None or packed:
        model_t = s.ModelT.InitFromPackedBuf(bytearray(flat), 0)
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
    builder = flatbuffers.Builder(max(1024, len(flat) + 4096))
    builder.Finish(model_t.Pack(builder), file_identifier=_FILE_IDENTIFIER)
    return pack_associated_files(bytes(builder.Output()), files)


# ------------------------------------------------------------------------------------------------
# associated files: a zip archive appended to the flatbuffer (tflite-support's layout)


def pack_associated_files(model: bytes, files: dict[str, bytes]) -> bytes:
    """``model`` followed by a zip archive of ``files`` (none: ``model`` unchanged).

    The layout of tflite-support's ``MetadataPopulator``: the archive starts right after the flatbuffer
    and its offsets count from the start of the file (what :mod:`zipfile` writes when it appends to
    a stream), entries are stored uncompressed. Byte-deterministic: sorted names, the 1980-01-01 zip
    date, Unix 0644 attributes, the same on every platform and Python version.
    """
    if not files:
        return bytes(model)
    buf = io.BytesIO()
    buf.write(model)
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_STORED
            info.create_system = 3                      # Unix, whatever platform writes it
            info.external_attr = 0o100644 << 16         # a regular file, rw-r--r--
            zf.writestr(info, bytes(files[name]))
    return buf.getvalue()


def split_packed_files(model: bytes) -> tuple[bytes, dict[str, bytes]]:
    """(the flatbuffer alone, the associated files appended to it as a zip: name -> bytes)."""
    files: dict[str, bytes] = {}
    start = len(model)
    try:
        with zipfile.ZipFile(io.BytesIO(model)) as zf:
            for info in zf.infolist():
                files[info.filename] = zf.read(info)
                start = min(start, info.header_offset)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, KeyError, zlib.error,
            NotImplementedError, RuntimeError):
        return bytes(model), {}          # no archive (or the bytes only look like one): nothing packed
    if not files:
        return bytes(model), {}
    return bytes(model[:start]), files


def packed_files(model: bytes) -> dict[str, bytes]:
    """The associated files packed into the model (name -> bytes); {} when there are none."""
    return split_packed_files(model)[1]


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
    """What an app needs from the file: labels, preprocessing, ghostedge info, signatures, entry names.

    ``labels`` and ``preprocessing`` come from ghostedge's own entries; a model that only carries
    standard TFLite Metadata (another tool's export, or ours with those entries stripped) gets them
    from that instead: the TENSOR_AXIS_LABELS file of the output and the input's NormalizationOptions
    (divided by 255), resizing the shorter side straight to the input size. ``standard`` is the
    parsed standard metadata (None without it), ``associated_files`` the names packed into the file.
    """
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

    standard = _parse_entry(entries, path)
    files = packed_files(model)
    labels, preprocessing = decode(LABELS), decode(PREPROCESSING)
    if standard is not None:
        if labels is None:
            labels = standard_labels(standard, files)
        if preprocessing is None:
            preprocessing = _standard_preprocessing(standard, model)
    return {
        "labels": labels,
        "preprocessing": preprocessing,
        "info": decode(INFO),
        "signatures": signatures(model),
        "entries": sorted(entries),
        "standard": standard,
        "associated_files": sorted(files),
    }


# ------------------------------------------------------------------------------------------------
# standard TFLite Metadata: the ModelMetadata flatbuffer (metadata_schema.fbs, "M001")


@dataclass(frozen=True)
class ClassifierMetadata:
    """The standard metadata of an image classifier, as :func:`build_metadata_buffer` writes it."""

    name: str
    description: str
    version: str
    height: int
    width: int
    channels: int
    mean: tuple[float, ...] | None = None       # NormalizationOptions, in the schema's 0-255 pixel scale
    std: tuple[float, ...] | None = None
    stats_min: tuple[float, ...] | None = None  # the normalised input's value range, per channel
    stats_max: tuple[float, ...] | None = None
    labels: tuple[str, ...] | None = None       # packed as labels.txt, a TENSOR_AXIS_LABELS file
    input_description: str = ""
    output_description: str = ""
    author: str = AUTHOR
    license: str = LICENSE
    input_name: str = INPUT_NAME
    output_name: str = OUTPUT_NAME

    @property
    def color_space(self) -> int:
        """ColorSpaceType: RGB for 3 channels, GRAYSCALE for 1, UNKNOWN otherwise."""
        return {3: 1, 1: 2}.get(self.channels, 0)

    def associated_files(self) -> dict[str, bytes]:
        """The files packed next to the metadata: ``labels.txt`` (one name per line, like the export's)."""
        if self.labels is None:
            return {}
        return {LABELS_FILE: ("\n".join(self.labels) + "\n").encode("utf-8")}


def build_metadata_buffer(meta: ClassifierMetadata) -> bytes:
    """The ``ModelMetadata`` flatbuffer (identifier ``M001``) for ``meta``: deterministic bytes.

    Written field by field from ``metadata_schema.fbs`` (field ids are declaration order; a union is
    a ``_type`` byte at id n and the table at n + 1). Scalars equal to their default are omitted, as
    every flatbuffers writer does.
    """
    import flatbuffers

    b = flatbuffers.Builder(1024)

    def floats(values: tuple[float, ...]) -> int:
        b.StartVector(4, len(values), 4)
        for v in reversed(values):
            b.PrependFloat32(float(v))
        return b.EndVector()

    def offsets(items: list[int]) -> int:
        b.StartVector(4, len(items), 4)
        for off in reversed(items):
            b.PrependUOffsetTRelative(off)
        return b.EndVector()

    def table(n_fields: int, refs: tuple[tuple[int, int | None], ...] = (),
              u32: tuple[tuple[int, int], ...] = (), u8: tuple[tuple[int, int], ...] = (),
              i8: tuple[tuple[int, int], ...] = ()) -> int:
        b.StartObject(n_fields)
        for slot, off in refs:
            if off is not None:
                b.PrependUOffsetTRelativeSlot(slot, off, 0)
        for slot, v in u32:
            b.PrependUint32Slot(slot, v, 0)
        for slot, v in u8:
            b.PrependUint8Slot(slot, v, 0)
        for slot, v in i8:
            b.PrependInt8Slot(slot, v, 0)
        return b.EndObject()

    # input: TensorMetadata{name, description, content: Content{ImageProperties}, process_units, stats}
    in_name, in_desc = b.CreateString(meta.input_name), b.CreateString(meta.input_description)
    size = table(2, u32=((0, meta.width), (1, meta.height)))                      # ImageSize
    image = table(2, refs=((1, size),), i8=((0, meta.color_space),))               # ImageProperties
    in_content = table(3, refs=((1, image),), u8=((0, 2),))                        # Content, ImageProperties
    units = None
    if meta.mean is not None and meta.std is not None:
        mean, std = floats(meta.mean), floats(meta.std)
        norm = table(2, refs=((0, mean), (1, std)))                                 # NormalizationOptions
        units = offsets([table(2, refs=((1, norm),), u8=((0, 1),))])               # [ProcessUnit]
    stats = None
    if meta.stats_min is not None and meta.stats_max is not None:
        smax, smin = floats(meta.stats_max), floats(meta.stats_min)
        stats = table(2, refs=((0, smax), (1, smin)))                               # Stats{max, min}
    tensor_in = table(7, refs=((0, in_name), (1, in_desc), (3, in_content), (4, units), (5, stats)))

    # output: TensorMetadata{name, description, content: Content{FeatureProperties}, associated_files}
    out_name, out_desc = b.CreateString(meta.output_name), b.CreateString(meta.output_description)
    feature = table(0)                                                              # FeatureProperties
    out_content = table(3, refs=((1, feature),), u8=((0, 1),))
    files = None
    if meta.labels is not None:
        f_name = b.CreateString(LABELS_FILE)
        f_desc = b.CreateString("Class names, one per line, in the order of the output values.")
        files = offsets([table(5, refs=((0, f_name), (1, f_desc)), i8=((2, 2),))])  # TENSOR_AXIS_LABELS
    tensor_out = table(7, refs=((0, out_name), (1, out_desc), (3, out_content), (6, files)))

    inputs, outputs = offsets([tensor_in]), offsets([tensor_out])
    subgraph = table(10, refs=((2, inputs), (3, outputs)))                         # SubGraphMetadata
    subgraphs = offsets([subgraph])
    strings = [b.CreateString(x) for x in (meta.name, meta.description, meta.version, meta.author,
                                            meta.license, MIN_PARSER_VERSION)]
    name, desc, version, author, license_, min_parser = strings
    root = table(8, refs=((0, name), (1, desc), (2, version), (3, subgraphs), (4, author), (5, license_),
                          (7, min_parser)))                                         # ModelMetadata
    b.Finish(root, file_identifier=METADATA_IDENTIFIER)
    return bytes(b.Output())


class _Damaged(Exception):
    """A read outside the metadata buffer, or an impossible structure."""


class _Reader:
    """Bounds-checked reads from one flatbuffer: the metadata comes from a file, so nothing is trusted."""

    def __init__(self, buf: bytes) -> None:
        self.buf = bytes(buf)

    def need(self, pos: int, size: int) -> None:
        if pos < 0 or size < 0 or pos + size > len(self.buf):
            raise _Damaged(f"{size} bytes at {pos} lie outside the {len(self.buf)}-byte buffer")

    def unpack(self, fmt: str, pos: int) -> Any:
        self.need(pos, struct.calcsize(fmt))
        return struct.unpack_from(fmt, self.buf, pos)[0]

    def table(self, pos: int) -> _Table:
        vt = pos - self.unpack("<i", pos)
        vsize = self.unpack("<H", vt)
        if vsize < 4 or vsize % 2:
            raise _Damaged(f"vtable at {vt} has size {vsize}")
        self.need(vt, vsize)
        return _Table(self, pos, vt, vsize)


class _Table:
    def __init__(self, r: _Reader, pos: int, vt: int, vsize: int) -> None:
        self.r, self.pos, self.vt, self.vsize = r, pos, vt, vsize

    def _field(self, slot: int) -> int | None:
        at = 4 + 2 * slot
        if at + 2 > self.vsize:
            return None
        off = self.r.unpack("<H", self.vt + at)
        return self.pos + off if off else None

    def scalar(self, slot: int, fmt: str, default: Any = 0) -> Any:
        p = self._field(slot)
        return default if p is None else self.r.unpack(fmt, p)

    def _target(self, slot: int) -> int | None:
        p = self._field(slot)
        return None if p is None else p + self.r.unpack("<I", p)

    def string(self, slot: int) -> str | None:
        p = self._target(slot)
        if p is None:
            return None
        n = self.r.unpack("<I", p)
        self.r.need(p + 4, n)
        return self.r.buf[p + 4:p + 4 + n].decode("utf-8", errors="replace")

    def _vector(self, slot: int, elem: int) -> tuple[int, int] | None:
        p = self._target(slot)
        if p is None:
            return None
        n = self.r.unpack("<I", p)
        self.r.need(p + 4, n * elem)
        return p + 4, n

    def floats(self, slot: int) -> list[float] | None:
        v = self._vector(slot, 4)
        return None if v is None else [float(x) for x in struct.unpack_from(f"<{v[1]}f", self.r.buf, v[0])]

    def sub(self, slot: int) -> _Table | None:
        p = self._target(slot)
        return None if p is None else self.r.table(p)

    def tables(self, slot: int) -> list[_Table]:
        v = self._vector(slot, 4)
        if v is None:
            return []
        start, n = v
        return [self.r.table(start + 4 * i + self.r.unpack("<I", start + 4 * i)) for i in range(n)]


def _no_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None and v != []}


def _associated_file(t: _Table) -> dict[str, Any]:
    kind = t.scalar(2, "<b")
    return _no_none({"name": t.string(0), "description": t.string(1), "type": _FILE_TYPES.get(kind, str(kind)),
                     "locale": t.string(3), "version": t.string(4)})


def _tensor_metadata(t: _Table) -> dict[str, Any]:
    content = None
    c = t.sub(3)
    if c is not None:
        kind = c.scalar(0, "<B")
        props: dict[str, Any] | None = None
        p = c.sub(1)
        if kind == 2 and p is not None:                   # ImageProperties
            size = p.sub(1)
            props = _no_none({"color_space": _COLOR_SPACES.get(p.scalar(0, "<b"), "UNKNOWN"),
                              "default_size": None if size is None else
                              {"width": size.scalar(0, "<I"), "height": size.scalar(1, "<I")}})
        elif p is not None:
            props = {}
        content = _no_none({"content_properties_type": _CONTENT_TYPES.get(kind, str(kind)),
                            "content_properties": props})
    units = []
    for u in t.tables(4):
        kind = u.scalar(0, "<B")
        o = u.sub(1)
        options = _no_none({"mean": o.floats(0), "std": o.floats(1)}) if kind == 1 and o is not None else None
        units.append(_no_none({"options_type": _PROCESS_UNIT_TYPES.get(kind, str(kind)), "options": options}))
    st = t.sub(5)
    stats = None if st is None else _no_none({"max": st.floats(0), "min": st.floats(1)})
    return _no_none({"name": t.string(0), "description": t.string(1), "content": content,
                     "process_units": units, "stats": stats,
                     "associated_files": [_associated_file(f) for f in t.tables(6)]})


def parse_metadata_buffer(buf: bytes) -> dict[str, Any]:
    """A ``ModelMetadata`` flatbuffer as a dict shaped like tflite-support's JSON (the fields we use).

    Raises ExportError when the buffer is not ``M001`` metadata or is damaged.
    """
    if len(buf) < 8 or bytes(buf[4:8]) != METADATA_IDENTIFIER:
        raise ExportError("the TFLITE_METADATA buffer is not TFLite metadata (no M001 identifier)",
                          "convert the model again")
    r = _Reader(buf)
    try:
        root = r.table(r.unpack("<I", 0))
        subgraphs = [_no_none({"name": g.string(0), "description": g.string(1),
                               "input_tensor_metadata": [_tensor_metadata(t) for t in g.tables(2)],
                               "output_tensor_metadata": [_tensor_metadata(t) for t in g.tables(3)],
                               "associated_files": [_associated_file(f) for f in g.tables(4)]})
                     for g in root.tables(3)]
        return _no_none({"name": root.string(0), "description": root.string(1), "version": root.string(2),
                         "subgraph_metadata": subgraphs, "author": root.string(4), "license": root.string(5),
                         "associated_files": [_associated_file(f) for f in root.tables(6)],
                         "min_parser_version": root.string(7)})
    except (_Damaged, struct.error, RecursionError) as exc:
        raise ExportError(f"the TFLITE_METADATA buffer is damaged: {exc}", "convert the model again") from exc


def _parse_entry(entries: dict[str, bytes], where: Any) -> dict[str, Any] | None:
    if STANDARD not in entries:
        return None
    try:
        return parse_metadata_buffer(entries[STANDARD])
    except ExportError as exc:
        raise ExportError(f"{where}: {exc.message}", exc.hint) from exc


def read_standard_metadata(model: bytes) -> dict[str, Any] | None:
    """The model's standard TFLite Metadata as a dict (see :func:`parse_metadata_buffer`); None without."""
    return _parse_entry(metadata_entries(model), "the model")


def _first(items: list[dict[str, Any]] | None) -> dict[str, Any]:
    return items[0] if items else {}


def standard_labels(standard: dict[str, Any], files: dict[str, bytes]) -> list[str] | None:
    """The output's TENSOR_AXIS_LABELS file, one label per line; None when there is none or it is not packed."""
    out = _first(_first(standard.get("subgraph_metadata")).get("output_tensor_metadata"))
    for f in out.get("associated_files", []):
        if f.get("type") == "TENSOR_AXIS_LABELS" and f.get("name") in files:
            text = files[f["name"]].decode("utf-8", errors="replace")
            return text[:-1].split("\n") if text.endswith("\n") else text.split("\n")
    return None


def standard_normalization(standard: dict[str, Any]) -> tuple[list[float], list[float]] | None:
    """(mean, std) of the input's NormalizationOptions, in the schema's 0-255 scale; None without."""
    tm = _first(_first(standard.get("subgraph_metadata")).get("input_tensor_metadata"))
    for unit in tm.get("process_units", []):
        opts = unit.get("options") or {}
        if unit.get("options_type") == "NormalizationOptions" and opts.get("mean") and opts.get("std"):
            return list(opts["mean"]), list(opts["std"])
    return None


def _standard_preprocessing(standard: dict[str, Any], model: bytes) -> dict[str, Any] | None:
    """Preprocessing in ghostedge's terms from standard metadata alone (for models without our entries)."""
    from ghostnet_edge.export.tflite.inspect import io_quantization

    norm = standard_normalization(standard)
    shape = io_quantization(model)["input"]["shape"]
    if norm is None or len(shape) != 4:
        return None
    _, h, w, c = shape
    mean, std = (v * c if len(v) == 1 else v for v in norm)
    return {"input_size": [c, h, w], "mean": [m / 255.0 for m in mean], "std": [s / 255.0 for s in std],
            "resize_size": min(h, w), "interpolation": "bilinear", "layout": "NHWC", "source": STANDARD}


# ------------------------------------------------------------------------------------------------
# what ghostedge writes, and the check before an artifact is written


def _resize_of(prep: dict[str, Any]) -> tuple[int | None, str]:
    resize = prep.get("resize") if isinstance(prep.get("resize"), dict) else {}
    size = prep.get("resize_size", resize.get("shorter_side"))
    return (int(size) if size is not None else None), str(prep.get("interpolation",
                                                              resize.get("interpolation", "bilinear")))


def _io_kind(in_dtype: str, out_dtype: str, precision: str | None) -> str:
    if in_dtype in ("INT8", "UINT8"):
        return f"INT8 full-integer, {in_dtype.lower()} input and {out_dtype.lower()} output"
    if precision == "int8":
        return "INT8 inside, float32 input and output"
    return "FP32"


def image_classifier_metadata(model: bytes, labels: list[str] | None, preprocessing: dict[str, Any] | None,
                              info: dict[str, Any] | None = None, name: str | None = None) -> ClassifierMetadata:
    """The standard metadata ghostedge writes for an exported classifier (tensors read from ``model``).

    ``preprocessing`` is the export's (mean/std in the 0-1 scale of ``(pixel / 255 - mean) / std``); the
    schema's NormalizationOptions apply to 0-255 pixels, so they get ``mean * 255`` and ``std * 255``.
    """
    from ghostnet_edge.export.tflite.inspect import io_quantization

    io = io_quantization(model)
    shape = io["input"]["shape"]
    if len(shape) != 4:
        raise ExportError(f"the model's input has shape {shape}; standard image metadata needs NHWC",
                          "export an image classifier with one (1, H, W, C) input")
    _, h, w, c = (int(v) for v in shape)
    in_dtype, out_dtype = io["input"]["dtype"], io["output"]["dtype"]
    info = info or {}
    prep = preprocessing or {}
    mean = std = smin = smax = None
    if prep.get("mean") is not None and prep.get("std") is not None:
        m01 = [float(v) for v in prep["mean"]]
        s01 = [float(v) for v in prep["std"]]
        mean = tuple(float(np.float32(v * 255.0)) for v in m01)
        std = tuple(float(np.float32(v * 255.0)) for v in s01)
        smin = tuple(float(np.float32((0.0 - m) / s)) for m, s in zip(m01, s01, strict=False))
        smax = tuple(float(np.float32((1.0 - m) / s)) for m, s in zip(m01, s01, strict=False))
    resize, interp = _resize_of(prep)
    n_out = int(io["output"]["shape"][-1]) if io["output"]["shape"] else 0
    kind = _io_kind(in_dtype, out_dtype, info.get("precision"))
    name = name or "ghostedge model"
    sha = str(info.get("source_onnx_sha256") or "")
    ghostedge_version = (info.get("versions") or {}).get("ghostedge")
    version = "+".join(x for x in (ghostedge_version, f"onnx.{sha[:12]}" if sha else None) if x) or "1"
    colour = {3: "RGB", 1: "grayscale"}.get(c, f"{c}-channel")
    geometry = (f"Resize the shorter side to {resize} ({interp}, antialiased), centre-crop {h}x{w}"
                if resize else f"Resize to {h}x{w}")
    in_desc = (f"{colour} image, {h}x{w} pixels, NHWC {in_dtype.lower()}. {geometry}, then normalise each "
               "channel: (pixel - mean) / std with pixels in 0-255 (the NormalizationOptions).")
    if in_dtype in ("INT8", "UINT8"):
        in_desc += (" Then quantise with this tensor's scale and zero point: q = round(x / scale) + zero_point, "
                    f"clamped to {in_dtype.lower()}.")
    out_desc = f"Class logits (before softmax), {n_out} values in the order of {LABELS_FILE}."
    if out_dtype in ("INT8", "UINT8"):
        out_desc += " Dequantise with this tensor's scale and zero point: (q - zero_point) * scale."
    desc = (f"{name}: image classifier exported by ghostedge ({kind}). Input '{INPUT_NAME}': one {colour} "
            f"image, {h}x{w}. Output '{OUTPUT_NAME}': {n_out} class logits, one per line of {LABELS_FILE}.")
    return ClassifierMetadata(name=name, description=desc, version=version, height=h, width=w, channels=c,
                              mean=mean, std=std, stats_min=smin, stats_max=smax,
                              labels=tuple(labels) if labels is not None else None,
                              input_description=in_desc, output_description=out_desc)


def standard_entry(meta: ClassifierMetadata) -> dict[str, bytes]:
    """``{TFLITE_METADATA: buffer}`` for :func:`embed_metadata` (files: ``meta.associated_files()``)."""
    return {STANDARD: build_metadata_buffer(meta)}


def check_metadata_agrees(model: bytes | Path | str, labels: list[str] | None = None,
                          preprocessing: dict[str, Any] | None = None, int8: bool | None = None) -> dict[str, Any]:
    """Raise ExportError unless the model's metadata describes its tensors; return what was checked.

    The gate before a ``.tflite`` is written. Checked: standard metadata present and parseable, one
    subgraph with one metadata entry per input/output tensor; the input is NHWC with batch 1 and its
    channel count matches the colour space and the normalisation (and ghostedge's preprocessing entry's
    input size); mean/std finite and std > 0; an integer input tensor has a scale; the input type
    matches INT8 vs float (``int8`` when given, else the ``ghostedge.info`` entry's precision/io_dtype);
    the labels file is packed, has one line per output value and equals ``labels`` / ghostedge's label
    entry; NormalizationOptions equal ``preprocessing``'s mean/std x 255.
    """
    from ghostnet_edge.export.tflite.inspect import read_io

    where = str(model) if isinstance(model, str | Path) else "the converted model"
    data = load_model_bytes(model) if isinstance(model, str | Path) else bytes(model)
    hint = "this is an export bug: report it with the model and the command line"
    entries = metadata_entries(data)
    standard = _parse_entry(entries, where)
    if standard is None:
        raise ExportError(f"{where} has no standard TFLite metadata ({STANDARD} entry)",
                          "re-export it with this ghostedge; apps and MetadataDisplayer need it")
    graph = read_io(data)
    problems: list[str] = []
    subgraphs = standard.get("subgraph_metadata", [])
    if len(subgraphs) != 1:
        raise ExportError(f"{where}: the standard metadata has {len(subgraphs)} subgraph entries, expected 1", hint)
    sg = subgraphs[0]
    ins, outs = sg.get("input_tensor_metadata", []), sg.get("output_tensor_metadata", [])
    if len(ins) != len(graph.inputs) or len(outs) != len(graph.outputs):
        problems.append(f"metadata for {len(ins)} input(s)/{len(outs)} output(s) but the model has "
                        f"{len(graph.inputs)}/{len(graph.outputs)}")
    if problems or not ins or not outs:
        raise ExportError(f"{where}: metadata and tensors disagree: {'; '.join(problems) or 'no tensor metadata'}",
                          hint)
    t_in, t_out = graph.inputs[0], graph.outputs[0]
    md_in, md_out = ins[0], outs[0]

    # input geometry and colour
    shape = tuple(t_in.shape)
    if len(shape) != 4 or shape[0] != 1:
        problems.append(f"input tensor shape {list(shape)} is not NHWC with batch 1")
        h = w = c = -1
    else:
        _, h, w, c = shape
    content = md_in.get("content", {})
    props = content.get("content_properties", {})
    if content.get("content_properties_type") != "ImageProperties":
        problems.append(f"input content is {content.get('content_properties_type')}, not ImageProperties")
    colour = props.get("color_space", "UNKNOWN")
    want_c = {"RGB": 3, "GRAYSCALE": 1}.get(colour)
    if want_c is not None and c != want_c:
        problems.append(f"input colour space {colour} needs {want_c} channels, the tensor has {c}")
    size = props.get("default_size")
    if size is not None and (size.get("width"), size.get("height")) != (w, h):
        problems.append(f"metadata image size {size.get('width')}x{size.get('height')} (WxH), tensor {w}x{h}")
    norm = standard_normalization(standard)
    if norm is not None:
        mean, std = norm
        for what, vals in (("mean", mean), ("std", std)):
            if len(vals) not in (1, c):
                problems.append(f"{len(vals)} normalisation {what} values for {c} channels")
            if not all(math.isfinite(v) for v in vals):
                problems.append(f"normalisation {what} is not finite: {vals}")
        if not all(v > 0 for v in std):
            problems.append(f"normalisation std must be > 0: {std}")
    stats = md_in.get("stats", {})
    for key in ("min", "max"):
        if key in stats and len(stats[key]) not in (1, c):
            problems.append(f"{len(stats[key])} input stats {key} values for {c} channels")

    # input type: INT8 vs float
    if t_in.dtype in ("INT8", "UINT8") and not (t_in.scale and t_in.scale[0] > 0):
        problems.append(f"{t_in.dtype} input tensor without a quantization scale")
    if t_in.dtype not in ("INT8", "UINT8", "FLOAT32"):
        problems.append(f"input tensor type {t_in.dtype} is neither float32 nor 8-bit integer")
    info = _json_entry(entries, INFO)
    if int8 is None and isinstance(info, dict) and info.get("precision") in ("int8", "fp32"):
        want_dtype = "FLOAT32" if info["precision"] == "fp32" else str(info.get("io_dtype", "int8")).upper()
        if t_in.dtype != want_dtype:
            problems.append(f"the export says {info['precision']} with {want_dtype.lower()} input, "
                            f"the input tensor is {t_in.dtype}")
    elif int8 is not None and (t_in.dtype in ("INT8", "UINT8")) != int8:
        problems.append(f"expected an {'integer' if int8 else 'float'} input, the input tensor is {t_in.dtype}")

    # labels: one per output value
    n_out = int(t_out.shape[-1]) if t_out.shape else 0
    files = packed_files(data)
    label_files = [f for f in md_out.get("associated_files", []) if f.get("type") == "TENSOR_AXIS_LABELS"]
    found = None
    if label_files:
        name = label_files[0].get("name")
        if name not in files:
            problems.append(f"the labels file {name} is named in the metadata but not packed in the model")
        else:
            found = standard_labels(standard, files)
            if found is not None and len(found) != n_out:
                problems.append(f"{len(found)} labels in {name} for {n_out} output values")
    expected = labels if labels is not None else _json_entry(entries, LABELS)
    if expected is not None:
        if found is None:
            problems.append(f"the model has no packed {LABELS_FILE} although the export has {len(expected)} labels")
        elif list(found) != list(expected):
            problems.append(f"the packed labels differ from the export's ({found[:3]}... vs {list(expected)[:3]}...)")

    # normalisation and size agree with the export's preprocessing
    prep = preprocessing if preprocessing is not None else _json_entry(entries, PREPROCESSING)
    if isinstance(prep, dict):
        if prep.get("input_size") is not None and list(prep["input_size"]) != [c, h, w]:
            problems.append(f"preprocessing input_size {list(prep['input_size'])} vs tensor (C,H,W) {[c, h, w]}")
        if prep.get("mean") is not None and prep.get("std") is not None:
            if norm is None:
                problems.append("the export has mean/std but the metadata has no NormalizationOptions")
            else:
                for what, want, got in (("mean", prep["mean"], norm[0]), ("std", prep["std"], norm[1])):
                    want255 = [float(np.float32(float(v) * 255.0)) for v in want]
                    if len(got) != len(want255) or any(abs(a - b) > 1e-6 * max(1.0, abs(a))
                                                       for a, b in zip(got, want255, strict=False)):
                        problems.append(f"normalisation {what} {got} is not the export's {list(want)} x 255")
    if problems:
        raise ExportError(f"{where}: metadata and tensors disagree: {'; '.join(problems)}", hint)
    return {"input_shape": list(shape), "input_dtype": t_in.dtype, "output_size": n_out,
            "labels": len(found) if found is not None else None,
            "normalization": norm, "color_space": colour}


def _json_entry(entries: dict[str, bytes], name: str) -> Any:
    try:
        return json.loads(entries[name].decode("utf-8")) if name in entries else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
