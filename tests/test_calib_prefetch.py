"""The image sets decoded ahead of need in a process of their own (calib/prefetch.py): the same cache entries
the export's own decoding makes, and nothing left behind when an image cannot be read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ghostnet_edge.calib import prefetch as pf
from ghostnet_edge.calib.cache import cache_key, calibration_tensors
from ghostnet_edge.data import Preprocess


def _images(root: Path, n: int) -> list[Path]:
    files = []
    for i in range(n):
        path = root / f"c{i % 2}" / f"{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (30 + i, 40, 3), dtype=np.uint8)).save(path)
        files.append(path)
    return files


def _pre() -> Preprocess:
    return Preprocess(input_size=(3, 24, 24), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                      resize_size=28, interpolation="bicubic")


def test_prefetched_sets_are_the_cache_entries_the_export_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 ) -> None:
    monkeypatch.setenv("GHOSTEDGE_CACHE", str(tmp_path / "cache"))
    files = _images(tmp_path / "imgs", 7)
    sets = [files[:3], files[3:]]
    expected = [calibration_tensors(s, _pre(), use_cache=False).array for s in sets]
    job = pf.start(sets, _pre())
    assert job is not None and job.wait()
    for s, want in zip(sets, expected, strict=True):
        got = calibration_tensors(s, _pre())
        assert got.cache_hit  # decoded by the child, not here
        np.testing.assert_array_equal(got.array, want)


def test_an_unreadable_image_is_left_to_the_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("GHOSTEDGE_CACHE", str(cache))
    files = _images(tmp_path / "imgs", 4)
    files[2].write_bytes(b"not a png")
    job = pf.start([files[:2], files], _pre())
    assert job is not None
    job.wait()
    entries = sorted(p.name for p in (cache / "calib").iterdir())
    assert entries == [f"{cache_key(files[:2], _pre().describe())}.npy"]  # the good set only, no partial file


def test_nothing_to_decode_starts_nothing() -> None:
    assert pf.start([[], []], _pre()) is None
