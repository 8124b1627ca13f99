"""A repeated export reuses its converted TFLite models: same bytes, no translation, damaged entries and
--no-cache convert again."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ghostnet_edge.export import conversion_cache as cc


def test_store_load_and_damage(private_cache: Path) -> None:
    key = cc.key_of("test", b"model", "options")
    assert key != cc.key_of("test", b"mode", "loptions")   # parts are length-delimited
    assert cc.load(key) is None
    cc.store(key, b"flatbuffer bytes")
    assert cc.load(key) == b"flatbuffer bytes" and cc.load(key, enabled=False) is None
    path = cc.cache_dir() / f"{key}.bin"
    path.write_bytes(path.read_bytes()[:-1] + b"!")           # damaged on disk
    assert cc.load(key) is None
    cc.store(key, b"again", enabled=False)
    assert cc.load(key) is None


def test_a_repeated_conversion_is_reused_byte_for_byte(private_cache: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    from ghostnet_edge.export.tflite._testing import TinyGhostNet, export_onnx_for_tests
    from ghostnet_edge.export.tflite.convert import convert_onnx_to_tflite

    onnx_path = export_onnx_for_tests(TinyGhostNet(num_classes=3), tmp_path / "tiny.onnx", (3, 16, 16))
    rep = np.random.default_rng(0).standard_normal((8, 3, 16, 16)).astype(np.float32)
    from ghostnet_edge.calib.ranges import collect_ranges

    ranges = dict(collect_ranges(onnx_path, rep, "minmax", threads=1, use_cache=False).ranges)

    def run(name: str, use_cache: bool = True):
        return convert_onnx_to_tflite(onnx_path, tmp_path / f"{name}_f.tflite", tmp_path / f"{name}_q.tflite", rep,
                                      labels=["a", "b", "c"], ranges=ranges, use_cache=use_cache)

    first, second = run("first"), run("second")
    assert first.translate_seconds > 0 and second.translate_seconds == 0     # nothing translated again
    assert second.ranges_source == first.ranges_source
    for kind in ("f", "q"):
        assert (tmp_path / f"first_{kind}.tflite").read_bytes() == (tmp_path / f"second_{kind}.tflite").read_bytes()
    assert run("fresh", use_cache=False).translate_seconds > 0
    for entry in cc.cache_dir().glob("*.bin"):                               # damage every entry
        entry.write_bytes(b"\0" * 64)
    third = run("third")
    assert third.translate_seconds > 0
    assert (tmp_path / "third_q.tflite").read_bytes() == (tmp_path / "first_q.tflite").read_bytes()
