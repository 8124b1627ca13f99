"""``manifest.json``: everything needed to trust, reproduce and use an export folder.

Pure functions over already-computed values, so the tests can build and check a manifest without
exporting anything. The manifest lists the sha256 and size of every other file in the folder, so a
copy can be checked with ``sha256sum`` alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ghostnet_edge.utils.atomic import sha256_file

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 1


def file_entry(path: Path, root: Path) -> dict[str, Any]:
    path = Path(path)
    return {"path": path.relative_to(root).as_posix(), "sha256": sha256_file(path), "bytes": path.stat().st_size}


def file_entries(root: Path, exclude: Iterable[str] = (MANIFEST_NAME,)) -> list[dict[str, Any]]:
    """sha256 and size of every file under ``root`` (sorted by path), except ``exclude``."""
    root = Path(root)
    skip = set(exclude)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.relative_to(root).as_posix() not in skip)
    return [file_entry(p, root) for p in files]


def source_entry(checkpoint: Path | None, model_name: str, trained: bool, seed: int,
                 meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Where the weights came from: a checkpoint (with its hash) or a named random initialisation."""
    meta = dict(meta or {})
    entry: dict[str, Any] = {"model": model_name, "trained": trained}
    if checkpoint is not None:
        entry.update({"checkpoint": str(checkpoint), "checkpoint_sha256": sha256_file(checkpoint),
                      "checkpoint_bytes": Path(checkpoint).stat().st_size})
    else:
        entry.update({"checkpoint": None, "checkpoint_sha256": None, "weights": f"random init (seed {seed})"})
    for key in ("accuracy", "epochs_done", "seed"):
        if meta.get(key) is not None:
            entry[f"checkpoint_{key}"] = meta[key]
    return entry


def tflite_io_entry(result: Any) -> dict[str, Any] | None:
    """Input/output dtype, scale and zero point of the INT8 TFLite model (``real = scale * (q - zp)``)."""
    if result is None or result.int8_path is None:
        return None

    def q(pair: tuple[float, int] | None) -> dict[str, Any]:
        if pair is None:
            return {"dtype": "float32", "scale": None, "zero_point": None}
        return {"dtype": result.io_dtype, "scale": float(pair[0]), "zero_point": int(pair[1])}

    return {"input": {"layout": "NHWC", "shape": list(result.input_shape_nhwc), **q(result.input_quant)},
            "output": q(result.output_quant),
            "formula": "real = scale * (quantized - zero_point); quantized = round(real / scale) + zero_point"}


def build_manifest(*, root: Path, source: dict[str, Any], preprocessing: dict[str, Any],
                   labels: list[str], calibration: dict[str, Any] | None, verification: dict[str, Any],
                   artifacts: list[dict[str, Any]], quantization: dict[str, Any] | None,
                   tflite_io: dict[str, Any] | None, config: dict[str, Any], versions: dict[str, str],
                   warnings: list[str], timings: dict[str, float]) -> dict[str, Any]:
    """Assemble the manifest; call it after every other file is in ``root``."""
    return {
        "schema_version": SCHEMA_VERSION,
        "generator": "ghostedge export",
        "source": source,
        "preprocessing": preprocessing,
        "num_classes": len(labels),
        "labels_file": "labels.txt",
        "calibration": calibration,
        "verification": verification,
        "quantization": quantization,
        "tflite_int8_io": tflite_io,
        "artifacts": artifacts,
        "files": file_entries(root),
        "config": config,
        "versions": versions,
        "warnings": warnings,
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
    }


def verify_manifest(root: Path, manifest: Mapping[str, Any]) -> list[str]:
    """Files whose hash or size no longer match (empty list: the folder is intact)."""
    problems = []
    for entry in manifest.get("files", []):
        p = Path(root) / entry["path"]
        if not p.is_file():
            problems.append(f"{entry['path']}: missing")
        elif p.stat().st_size != entry["bytes"] or sha256_file(p) != entry["sha256"]:
            problems.append(f"{entry['path']}: changed")
    return problems
