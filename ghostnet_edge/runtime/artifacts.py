"""What an artifact is before anything runs it: format, precision, model name, size, preprocessing.

``bench`` and ``eval`` accept ``.tflite``, ``.onnx``, a PyTorch checkpoint (``.pt``/``.pth``/
``.safetensors``) or a registered model name (random weights, for an eager-mode reference). A missing
file, a file that is not a model, or an unknown name is refused here with one clear error, before any
target is contacted.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ghostnet_edge.errors import GhostEdgeError, ModelError

TORCH_SUFFIXES = (".pt", ".pth", ".safetensors")
MODEL_SUFFIXES = (".tflite", ".onnx", *TORCH_SUFFIXES)
# ONNX operators that only appear in quantised graphs (QDQ or QOperator form).
QUANT_OPS = frozenset({
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul",
    "QLinearAdd", "QLinearMul", "QLinearGlobalAveragePool", "QLinearSigmoid", "QLinearLeakyRelu",
    "ConvInteger", "MatMulInteger", "QGemm",
})


@dataclass
class ArtifactInfo:
    """One thing to measure or evaluate."""

    spec: str                  # what the user passed
    path: Path | None          # None for a bare model name
    format: str                # "tflite" | "onnx" | "torch"
    precision: str             # "fp32" | "int8" | "fp16" | "unknown"
    model: str                 # model name (manifest, metadata, checkpoint meta, or the file stem)
    size_bytes: int | None
    meta: dict[str, Any] = field(default_factory=dict)   # preprocessing / class names where known

    @property
    def label(self) -> str:
        return self.path.name if self.path is not None else self.spec


def _looks_like_path(spec: str) -> bool:
    return "/" in spec or "\\" in spec or Path(spec).suffix.lower() in MODEL_SUFFIXES or spec.startswith(".")


def sniff_format(path: Path) -> str:
    """Format from the file's first bytes, cross-checked with its suffix; raise if it is not a model.

    A ``.tflite`` is also verified as a whole (:mod:`ghostnet_edge.runtime.tflite_check`), so a
    truncated or damaged file is refused here, before any interpreter opens it.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
    except OSError as exc:
        raise GhostEdgeError(f"cannot read {path}: {exc.strerror}", "check the file's permissions") from exc
    suffix = path.suffix.lower()
    if len(head) >= 8 and head[4:8] == b"TFL3":
        # The interpreters do not verify the flatbuffer: a cut file segfaults them. Verify it here,
        # where every command (bench, eval, curve) first looks at an artifact.
        from ghostnet_edge.runtime.tflite_check import check_tflite_file

        check_tflite_file(path)
        return "tflite"
    if suffix == ".onnx" and head[:1] == b"\x08":
        return "onnx"
    if suffix in TORCH_SUFFIXES:
        from ghostnet_edge.models.checkpoint import sniff_format as sniff_checkpoint

        if sniff_checkpoint(head[:16]) != "unknown":
            return "torch"
    kind = {".tflite": "a TFLite flatbuffer", ".onnx": "an ONNX model"}.get(suffix, "a model file")
    raise GhostEdgeError(f"{path} is not {kind} (its first bytes do not match)" if suffix in MODEL_SUFFIXES
                         else f"{path} is not a model file ({suffix or 'no suffix'})",
                         "pass a .tflite or .onnx written by `ghostedge export`, a .pt/.pth/.safetensors "
                         "checkpoint, or a model name such as ghostnet_100")


def tflite_precision(path: Path) -> str:
    """int8 when the graph holds integer tensors, fp16 for float16 weights, else fp32."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            return "unknown"
    try:
        details = Interpreter(model_path=str(path)).get_tensor_details()
    except (ValueError, RuntimeError) as exc:
        raise GhostEdgeError(f"{path} cannot be read as a TFLite model: {str(exc).strip().splitlines()[-1]}",
                             "re-export it; the file may be truncated") from exc
    dtypes = {getattr(d["dtype"], "__name__", str(d["dtype"])) for d in details}
    if dtypes & {"int8", "uint8", "int16"}:
        return "int8"
    return "fp16" if "float16" in dtypes else "fp32"


def onnx_precision(path: Path) -> str:
    """int8 for QDQ/QOperator graphs or integer initializers, fp16 for float16 ones, else fp32."""
    try:
        import onnx
    except ImportError:
        return "unknown"
    model = _load_onnx(path)
    if any(n.op_type in QUANT_OPS for n in model.graph.node):
        return "int8"
    types = {init.data_type for init in model.graph.initializer}
    if types & {onnx.TensorProto.INT8, onnx.TensorProto.UINT8}:
        return "int8"
    return "fp16" if onnx.TensorProto.FLOAT16 in types else "fp32"


def _load_onnx(path: Path) -> Any:
    import onnx

    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends
        raise GhostEdgeError(f"{path} cannot be parsed as an ONNX model: {exc}",
                             "re-export it; the file may be truncated") from exc


def onnx_metadata(path: Path) -> dict[str, Any]:
    """``metadata_props`` with JSON values decoded and the ``ghostedge.`` prefix dropped.

    The export stores ``ghostedge.model``, ``ghostedge.labels`` and ``ghostedge.preprocessing`` there.
    """
    out: dict[str, Any] = {}
    for prop in _load_onnx(path).metadata_props:
        key = prop.key.removeprefix("ghostedge.")
        try:
            out[key] = json.loads(prop.value)
        except ValueError:
            out[key] = prop.value
    return out


def read_manifest(path: Path) -> dict[str, Any]:
    """``manifest.json`` next to an exported artifact, or {} when there is none."""
    man = path.parent / "manifest.json"
    if not man.is_file():
        return {}
    try:
        data = json.loads(man.read_text())
    except (OSError, ValueError) as exc:
        raise GhostEdgeError(f"{man} is not valid JSON: {exc}", "re-run the export to rewrite it") from exc
    if not isinstance(data, dict):
        return {}
    labels = path.parent / str(data.get("labels_file") or "labels.txt")
    if "class_names" not in data and labels.is_file():
        data["class_names"] = [ln.strip() for ln in labels.read_text().splitlines() if ln.strip()]
    return data


def _dicts(obj: Any) -> Iterator[dict[str, Any]]:
    """Every dict inside nested dicts/lists, depth first, parents before children."""
    if isinstance(obj, dict):
        yield obj
        children: Any = obj.values()
    elif isinstance(obj, list):
        children = obj
    else:
        return
    for child in children:
        yield from _dicts(child)


def find_key(obj: Any, key: str, want: type | tuple[type, ...] = str) -> Any:
    """First value of ``key`` (of type ``want``) anywhere in nested dicts/lists, depth first."""
    return next((d[key] for d in _dicts(obj) if isinstance(d.get(key), want)), None)


def _as_preprocess(d: dict[str, Any]) -> dict[str, Any] | None:
    if not all(k in d for k in ("input_size", "mean", "std")):
        return None
    resize = d["resize"] if isinstance(d.get("resize"), dict) else {}
    size = d.get("resize_size", resize.get("shorter_side"))
    if size is None:
        return None
    return {"input_size": [int(v) for v in d["input_size"]], "mean": [float(v) for v in d["mean"]],
            "std": [float(v) for v in d["std"]], "resize_size": int(size),
            "interpolation": d.get("interpolation", resize.get("interpolation", "bilinear"))}


def find_preprocess(obj: Any) -> dict[str, Any] | None:
    """A preprocessing description (input_size, mean, std, resize) anywhere in a manifest/metadata.

    Accepts checkpoint-meta style (``resize_size``, ``interpolation``) and the data stage's
    ``Preprocess.describe()`` style (``resize: {shorter_side, interpolation}``).
    """
    return next((p for d in _dicts(obj) if (p := _as_preprocess(d)) is not None), None)


def describe_meta(*sources: Any) -> dict[str, Any]:
    """Model name, preprocessing and class names gathered from manifests/metadata, first found wins."""
    meta: dict[str, Any] = {}
    for src in sources:
        if not src:
            continue
        meta.setdefault("model", find_key(src, "model"))
        meta.setdefault("preprocess", find_preprocess(src))
        meta.setdefault("class_names", find_key(src, "class_names", list) or find_key(src, "labels", list))
        for k in ("model", "preprocess", "class_names"):
            if meta[k] is None:
                meta.pop(k)
    return meta


def inspect_artifact(spec: str | Path) -> ArtifactInfo:
    """Check that ``spec`` is something ghostedge can run, and say what it is."""
    spec = str(spec)
    path = Path(spec).expanduser()
    if not path.exists():
        if _looks_like_path(spec):
            raise GhostEdgeError(f"artifact {spec} does not exist",
                                 "check the path; `ghostedge export` writes .onnx/.tflite files into its --out folder")
        return _model_name(spec)
    if path.is_dir():
        raise GhostEdgeError(f"{spec} is a folder, not a model file",
                             "pass the .tflite/.onnx files inside it (e.g. its *.tflite)")
    fmt = sniff_format(path)
    manifest = read_manifest(path)
    if fmt == "tflite":
        precision, meta = tflite_precision(path), describe_meta(manifest)
    elif fmt == "onnx":
        precision, meta = onnx_precision(path), describe_meta(manifest, onnx_metadata(path))
    else:
        precision, meta = "fp32", describe_meta(manifest)
    return ArtifactInfo(spec=spec, path=path, format=fmt, precision=precision,
                        model=str(meta.get("model") or path.stem), size_bytes=path.stat().st_size, meta=meta)


def _model_name(name: str) -> ArtifactInfo:
    """A registered model name: measured in PyTorch eager mode with random weights."""
    try:
        from ghostnet_edge.models import get_spec
    except ImportError as exc:
        raise GhostEdgeError(f"{name} is neither a file nor a usable model name (the models stage is missing)",
                             "pass a .tflite/.onnx/.pt file") from exc
    try:
        spec = get_spec(name)
    except ModelError as exc:
        raise GhostEdgeError(f"{name} is neither an existing file nor a known model name ({exc.message})",
                             "pass a .tflite/.onnx/.pt file, or a name from `ghostedge models`") from exc
    pre = {"input_size": list(spec.input_size), "mean": list(spec.mean), "std": list(spec.std),
           "resize_size": spec.resize_size, "interpolation": spec.interpolation}
    return ArtifactInfo(spec=name, path=None, format="torch", precision="fp32", model=spec.name, size_bytes=None,
                        meta={"model": spec.name, "preprocess": pre})
