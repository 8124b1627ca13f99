"""The TFLite INT8 model's per-layer report: which layers quantization hurts.

Every INT8 activation is compared with the FP32 model's tensor of the same name on the same images.
Both models run through the one artifact runner (:func:`ghostnet_edge.runtime.backends.open_model`,
delegates off so every tensor stays readable); whole outputs are checked by
:mod:`ghostnet_edge.export.checks`, like every other format's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ghostnet_edge.export.checks import db_from_sums, square_sums


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return (q.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)


@dataclass(frozen=True)
class LayerSqnr:
    name: str
    op: str
    shape: tuple[int, ...]
    sqnr_db: float
    # The op's activation inputs, by tensor name (GRAPH_INPUT for the model's float input). The report
    # measures each layer's drop against the noisiest measured one.
    inputs: tuple[str, ...] = ()


GRAPH_INPUT = "<graph input>"


def per_layer_sqnr(int8_path: Path | str, fp32_path: Path | str, nchw_batch: np.ndarray,
                   runtime: str = "auto", num_threads: int = 1) -> list[LayerSqnr]:
    """SQNR of every INT8 activation against the FP32 model's tensor of the same name, in graph order.

    Both files come from the same translated TF graph, so the converter gives matching ops the same
    tensor names (derived from the ONNX node names). Intermediates are read with delegates off.
    """
    from ghostnet_edge.export.tflite.inspect import read_graph
    from ghostnet_edge.runtime.backends import open_model

    gq, gf = read_graph(int8_path), read_graph(fp32_path)
    f_by_name = {t.name: t for t in gf.tensors if not t.constant}
    producer = {o: op.name for op in gq.ops for o in op.outputs}
    op_of = {o: op for op in gq.ops for o in op.outputs}
    pairs = [(t, f_by_name[t.name]) for t in gq.tensors
             if not t.constant and t.index in producer and t.name in f_by_name and t.scale
             and t.dtype in ("INT8", "UINT8")]
    # The QUANTIZE that turns a float image into int8 is measured against the float model's input, so
    # the first layer's drop is taken against the input's own rounding, not against a perfect image.
    measured = {t.index for t, _ in pairs}
    for op in gq.ops:
        if op.name == "QUANTIZE" and set(op.inputs) & set(gq.inputs) and gf.inputs:
            tq = gq.tensors[op.outputs[0]]
            if tq.index not in measured and tq.scale and tq.dtype in ("INT8", "UINT8"):
                pairs.append((tq, gf.tensors[gf.inputs[0]]))
    pairs.sort(key=lambda pair: pair[0].index)
    mq = open_model(int8_path, runtime, num_threads, keep_intermediates=True)
    mf = open_model(fp32_path, runtime, num_threads, keep_intermediates=True)
    iq, if_ = mq.model.interp, mf.model.interp
    # Squared signal and noise summed image by image: keeping every activation of every image costs
    # gigabytes at 224x224.
    sums: dict[str, list[float]] = {}
    for img in np.asarray(nchw_batch, dtype=np.float32):
        mq.run(img[None])
        mf.run(img[None])
        for tq, tf_ in pairs:
            if len(tq.scale) != 1:
                continue
            q = dequantize(iq.get_tensor(tq.index), tq.scale[0], tq.zero_point[0])
            sig, err = square_sums(if_.get_tensor(tf_.index), q)
            acc = sums.setdefault(tq.name, [0.0, 0.0])
            acc[0] += sig
            acc[1] += err
    out = []
    for tq, _ in pairs:
        if tq.name not in sums:
            continue
        sources = tuple(GRAPH_INPUT if i in gq.inputs else gq.tensors[i].name
                        for i in op_of[tq.index].inputs if i >= 0 and not gq.tensors[i].constant)
        out.append(LayerSqnr(tq.name, producer[tq.index], tq.shape, db_from_sums(*sums[tq.name]), sources))
    return out
