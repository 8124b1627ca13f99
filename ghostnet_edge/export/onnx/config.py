"""How the FP32 ONNX graph is produced.

Batch is dynamic by default: evaluation and calibration then run in batches through one file, and
runtimes that want a fixed shape (the TFLite converter, mobile runtimes) pin it to 1 themselves.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

# Opset 17 is the oldest with every op the networks need, and the newest every consumer here (onnxruntime,
# onnxsim, our ONNX->TFLite translator, onnx2tf) handles without surprises.
DEFAULT_OPSET = 17
MIN_OPSET = 17
MAX_OPSET = 21


@dataclass(frozen=True)
class OnnxExportConfig:
    opset: int = DEFAULT_OPSET
    input_name: str = "input"
    output_name: str = "logits"
    dynamic_batch: bool = True
    simplify: bool = True

    def to_dict(self) -> dict:
        return asdict(self)
