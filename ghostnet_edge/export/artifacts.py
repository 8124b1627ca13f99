"""The artifacts an export writes, as one table: file, format, precision, how each is made, which
runtime runs it, how it is checked and whether it gets a per-layer report.

The export pipeline iterates over this table (``export/pipeline.py``), and everything that names an
exported file (the curve, the calibration draws, the CLI's summary) reads it from here, so a file is
renamed or added in one place.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Artifact:
    key: str            # the name formats are selected by: "onnx", "onnx-int8", "tflite", "tflite-int8"
    file: str           # file name inside the export folder
    format: str         # "onnx" | "tflite": the converter stage that writes it and the runtime that runs it
    precision: str      # "fp32" | "int8"
    convert: str        # the step that makes it (``export/steps.py``: CONVERTERS)
    runtime: str        # what runs it for the checks and reports (``runtime/backends`` names)
    check: str          # "max-diff" (FP32: max |logit difference|, relative above 1) | "agreement" (INT8)
    layer_report: bool  # has a per-layer SQNR section in quant_report

    @property
    def stage(self) -> str:
        """The prefix of its timing stages: ``onnx_int8`` -> ``onnx_int8_verify``..."""
        return self.key.replace("-", "_")


ARTIFACTS: tuple[Artifact, ...] = (
    Artifact("onnx", "model.onnx", "onnx", "fp32", "onnx_export", "onnxruntime", "max-diff", False),
    Artifact("onnx-int8", "model_int8.onnx", "onnx", "int8", "onnx_quantize", "onnxruntime", "agreement", True),
    Artifact("tflite", "model_fp32.tflite", "tflite", "fp32", "tflite_convert", "auto", "max-diff", False),
    Artifact("tflite-int8", "model_int8.tflite", "tflite", "int8", "tflite_convert", "auto", "agreement", True),
)
BY_KEY: dict[str, Artifact] = {a.key: a for a in ARTIFACTS}


def artifact_file(fmt: str, precision: str) -> str:
    """The file of one format ("onnx" | "tflite") and precision ("fp32" | "int8")."""
    for a in ARTIFACTS:
        if a.format == fmt and a.precision == precision:
            return a.file
    raise KeyError(f"no {precision} {fmt} artifact")


ONNX_FP32 = artifact_file("onnx", "fp32")
ONNX_INT8 = artifact_file("onnx", "int8")
TFLITE_FP32 = artifact_file("tflite", "fp32")
TFLITE_INT8 = artifact_file("tflite", "int8")
LABELS = "labels.txt"
