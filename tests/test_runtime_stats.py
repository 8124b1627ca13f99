"""Latency statistics (pure functions) and the runner-output parser."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ghostnet_edge.runtime import protocol, stats


@pytest.mark.parametrize("q", [0, 5, 50, 90, 99, 100])
def test_percentile_matches_numpy_linear(q: float) -> None:
    values = list(np.random.default_rng(3).exponential(2.0, size=37))
    assert stats.percentile(values, q) == pytest.approx(float(np.percentile(values, q)), rel=1e-12)


def test_summarize_known_values() -> None:
    s = stats.summarize([1.0, 2.0, 3.0, 4.0, 10.0])
    assert s is not None
    assert s["p50"] == 3.0
    assert s["p90"] == pytest.approx(7.6)          # 4 + 0.6 * (10 - 4)
    assert s["mean"] == 4.0
    assert s["std"] == pytest.approx(math.sqrt(12.5))  # sample std, n - 1
    assert s["cv"] == pytest.approx(math.sqrt(12.5) / 4.0)
    assert (s["n"], s["min"], s["max"]) == (5, 1.0, 10.0)


def test_summarize_edge_cases() -> None:
    assert stats.summarize([]) is None
    one = stats.summarize([2.5])
    assert one is not None and one["std"] == 0.0 and one["cv"] == 0.0 and one["p99"] == 2.5
    with pytest.raises(ValueError):
        stats.percentile([1.0], 101)


def test_noisy_flag_and_steadiest_attempt() -> None:
    steady = stats.summarize([10.0, 10.1, 9.9, 10.0])
    noisy = stats.summarize([10.0, 30.0, 10.0, 10.0])
    assert not stats.is_noisy(steady, 0.05)
    assert stats.is_noisy(noisy, 0.05)
    assert not stats.is_noisy(None, 0.05)
    assert not stats.is_noisy({"cv": None}, 0.05)       # benchmark_model line without std
    assert stats.steadiest([noisy, None, steady]) == 2


def test_partial_record_rebuilt_from_progress_lines() -> None:
    info = {"pid": 42, "runtime": "litert", "runtime_version": "2.1.0", "delegate": "xnnpack", "threads": 1,
            "cpu": "x", "input_shape": [1, 32, 32, 3], "input_dtype": "float32", "load_ms": 5.0}
    stderr = (protocol.INFO_PREFIX + json.dumps(info) + "\n"
              + protocol.PARTIAL_PREFIX + json.dumps({"offset": 0, "latencies_ns": [1_000_000, 2_000_000]}) + "\n"
              + protocol.PARTIAL_PREFIX + json.dumps({"offset": 2, "latencies_ns": [3_000_000]}) + "\n"
              + protocol.PARTIAL_PREFIX + '{"offset": 3, "latencies_ns": [4000')   # cut off by the drop
    rec = protocol.parse_runner_output(protocol.Completed(255, "", stderr, 1.0))
    assert rec["status"] == "partial"
    assert rec["latencies_ms"] == [1.0, 2.0, 3.0]
    assert rec["pid"] == 42 and rec["runtime"] == "litert"
    assert "after 3 timed runs" in rec["error"]


def test_runner_output_without_anything_is_failed() -> None:
    rec = protocol.parse_runner_output(protocol.Completed(1, "", "Traceback...\nImportError: boom\n", 0.1))
    assert rec["status"] == "failed" and "ImportError: boom" in rec["error"]
