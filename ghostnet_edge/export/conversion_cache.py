"""Converted models kept for an export repeated with the same inputs.

A conversion is a pure function of its inputs: the TFLite converter gives the same bytes for the same
ONNX file, hard-swish form and TensorFlow version, and the INT8 quantizer the same bytes for the same
float model, ranges and options (the export tests compare reruns byte for byte). So a repeated export
(same checkpoint, images and options) takes them from here instead of converting again. The key is a
sha256 over every input, the converter's version and the source of the ghostedge modules that drive it,
so neither an upgrade nor an edit of the translator can bring back a stale model. Whatever is reused is
still checked against PyTorch like a fresh conversion; ``--no-cache`` converts everything anew.

Entries live in ``$GHOSTEDGE_CACHE/conversions`` (beside the calibration caches); the least recently
used beyond :data:`MAX_ENTRIES` are removed (a GhostNet 1.0x FP32 model is 21 MB).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ghostnet_edge.utils.paths import cache_home

MAX_ENTRIES = 24


def cache_dir() -> Path:
    return cache_home() / "conversions"


def source_digest(*modules: str) -> str:
    """sha256 of the named modules' source files (``ghostnet_edge.export.tflite.translate``...)."""
    import importlib.util

    h = hashlib.sha256()
    for name in modules:
        spec = importlib.util.find_spec(name)
        origin = spec.origin if spec is not None else None
        h.update(name.encode())
        h.update(Path(origin).read_bytes() if origin and Path(origin).is_file() else b"?")
    return h.hexdigest()


def key_of(kind: str, *parts: bytes | str) -> str:
    h = hashlib.sha256(kind.encode())
    for part in parts:
        data = part if isinstance(part, bytes) else part.encode()
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def load(key: str, enabled: bool = True) -> bytes | None:
    """The stored model ``key``, or None (absent, damaged, unreadable or ``enabled`` off)."""
    if not enabled:
        return None
    path = cache_dir() / f"{key}.bin"
    try:
        stored = path.read_bytes()
    except OSError:
        return None
    data, digest = stored[:-32], stored[-32:]
    if len(stored) <= 32 or hashlib.sha256(data).digest() != digest:
        return None   # damaged: converted again and overwritten
    try:
        os.utime(path)  # recently used: pruned last
    except OSError:
        pass
    return data


def store(key: str, data: bytes, enabled: bool = True) -> None:
    """Keep ``data`` under ``key``; a full or read-only cache is skipped, never an error."""
    if not enabled:
        return
    from ghostnet_edge.calib.cache import prune
    from ghostnet_edge.utils.atomic import atomic_write_bytes

    path = cache_dir() / f"{key}.bin"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data + hashlib.sha256(data).digest())
        prune(path.parent, MAX_ENTRIES, "*.bin")
    except Exception:  # noqa: BLE001 - the model is already in memory; the export goes on
        pass
