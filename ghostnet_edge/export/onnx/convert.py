"""PyTorch -> FP32 ONNX: one simplified, byte-deterministic file.

Why the TorchScript-based exporter (``dynamo=False``): in torch 2.13 the default ``dynamo=True``
path needs ``onnxscript`` (not a dependency here) and emits a graph with un-folded BatchNorm and
generated value names. The TorchScript path folds BatchNorm into Conv with constant folding, names
nodes after module paths (``/blocks/0/.../Conv``), and gives the same bytes for the same weights.
onnxsim then removes the shape arithmetic the exporter leaves around Flatten/Concat.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ghostnet_edge.errors import ExportError, require
from ghostnet_edge.export.onnx.config import MAX_OPSET, MIN_OPSET, OnnxExportConfig
from ghostnet_edge.utils.atomic import atomic_write_bytes

PRODUCER_NAME = "ghostedge"


@dataclass(frozen=True)
class OnnxExportResult:
    path: Path
    opset: int
    num_nodes: int
    op_types: dict[str, int]
    simplified: bool


def _torch_export_bytes(model: Any, input_size: tuple[int, int, int], config: OnnxExportConfig) -> bytes:
    import torch

    model = model.eval()
    dummy = torch.zeros((1, *input_size), dtype=torch.float32)
    dynamic_axes = ({config.input_name: {0: "batch"}, config.output_name: {0: "batch"}}
                    if config.dynamic_batch else None)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # The legacy-exporter deprecation notice is expected: we choose that path on purpose.
        warnings.simplefilter("ignore")
        with torch.no_grad():
            torch.onnx.export(model, (dummy,), buf, dynamo=False, opset_version=config.opset,
                              input_names=[config.input_name], output_names=[config.output_name],
                              dynamic_axes=dynamic_axes, do_constant_folding=True,
                              export_params=True, training=torch.onnx.TrainingMode.EVAL)
    return buf.getvalue()


def import_onnxsim() -> Any:
    """onnxsim, imported without SymPy.

    onnxsim's package import loads its model-statistics module, which imports SymPy when installed (half a
    second, on the export's critical path) only to print symbolic sizes of dynamic shapes; SymPy is an
    optional dependency there, and neither the simplifier nor this project uses those statistics. So
    SymPy is hidden while onnxsim is imported, and only if nothing imported it before; anything that
    imports it afterwards (PyTorch's symbolic tracing) gets it as usual.
    """
    import sys

    if "onnxsim" in sys.modules:
        return sys.modules["onnxsim"]
    hide = "sympy" not in sys.modules
    if hide:
        sys.modules["sympy"] = None  # type: ignore[assignment] - makes `import sympy` raise ImportError
    try:
        return require("onnxsim", "onnxsim", "simplifying the ONNX graph")
    finally:
        if hide and "sympy" in sys.modules and sys.modules["sympy"] is None:
            del sys.modules["sympy"]


def simplify_model(model: Any, config: OnnxExportConfig) -> Any:
    """Run onnxsim; its own numeric check is skipped because :mod:`verify` checks against PyTorch."""
    onnxsim = import_onnxsim()
    try:
        simplified, ok = onnxsim.simplify(model, check_n=0)
    except Exception as exc:  # onnxsim raises bare RuntimeErrors from its C++ core
        raise ExportError(f"onnxsim could not simplify the exported graph: {exc}",
                          "pass --no-simplify to keep the unsimplified graph, and report the model") from exc
    if not ok:
        raise ExportError("onnxsim reported that the simplified graph does not match the original",
                          "pass --no-simplify to keep the unsimplified graph")
    return simplified


def canonicalize(model: Any, metadata: dict[str, str] | None = None) -> Any:
    """Make serialization depend only on the graph: fixed producer, no doc strings, sorted metadata.

    The exporter stamps ``producer_version`` with the torch version and onnxsim may leave doc strings
    with stack traces; neither belongs in a file whose hash is compared between exports. Unnamed
    nodes get ``<OpType>_<index>`` so tools and the per-layer report can refer to them.
    """
    from ghostnet_edge import __version__

    model.producer_name = PRODUCER_NAME
    model.producer_version = __version__
    model.doc_string = ""
    model.graph.doc_string = ""
    for i, node in enumerate(model.graph.node):
        node.doc_string = ""
        if not node.name:
            node.name = f"{node.op_type}_{i}"
    del model.metadata_props[:]
    for key in sorted(metadata or {}):
        entry = model.metadata_props.add()
        entry.key = key
        entry.value = metadata[key]
    return model


def op_histogram(model: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


def export_onnx(model: Any, input_size: tuple[int, int, int], out_path: Path | str,
                config: OnnxExportConfig | None = None,
                metadata: dict[str, str] | None = None) -> OnnxExportResult:
    """Export ``model`` (an ``nn.Module`` taking NCHW float32) to one simplified ONNX file.

    ``metadata`` (for example the preprocessing and labels as JSON strings) is stored in the
    model's ``metadata_props`` so an app can read it from the file alone.
    """
    config = config or OnnxExportConfig()
    if not MIN_OPSET <= config.opset <= MAX_OPSET:
        raise ExportError(f"opset {config.opset} is not supported",
                          f"choose an opset between {MIN_OPSET} and {MAX_OPSET}")
    onnx = require("onnx", "onnx", "ONNX export")
    try:
        raw = _torch_export_bytes(model, input_size, config)
    except Exception as exc:  # torch raises many types; all mean "this model does not export"
        raise ExportError(f"torch.onnx.export failed: {exc}",
                          "check that the model runs on an input of this size in PyTorch") from exc
    proto = onnx.load_from_string(raw)
    if config.simplify:
        proto = simplify_model(proto, config)
    proto = canonicalize(proto, metadata)
    onnx.checker.check_model(proto)
    path = atomic_write_bytes(out_path, proto.SerializeToString())
    return OnnxExportResult(path=Path(path), opset=config.opset, num_nodes=len(proto.graph.node),
                            op_types=op_histogram(proto), simplified=config.simplify)
