"""Latency statistics: pure functions over a list of per-run latencies in milliseconds.

Built on the standard library's ``statistics`` (no NumPy) so they are trivially testable and identical wherever the numbers come from
(our device runner, TFLite's benchmark_model summary lines, a partial run).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

DEFAULT_CV_THRESHOLD = 0.05


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100, whole or tenths) with linear interpolation between closest ranks.

    The standard library's ``statistics.quantiles(method="inclusive")`` is the same definition as
    ``numpy.percentile(..., method="linear")``, so tests can cross-check it.
    """
    if not values:
        raise ValueError("percentile of an empty sequence")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile q must be in [0, 100], got {q}")
    xs = [float(v) for v in values]
    if len(xs) == 1 or q == 0:
        return min(xs)
    if q == 100:
        return max(xs)
    steps = 100 if float(q).is_integer() else 1000
    cut = round(q * steps / 100)
    if abs(cut * 100 / steps - q) > 1e-9:
        raise ValueError(f"percentile q must be a whole number or have one decimal, got {q}")
    return statistics.quantiles(xs, n=steps, method="inclusive")[cut - 1]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and *sample* standard deviation (n-1; 0 for a single run)."""
    if not values:
        raise ValueError("mean of an empty sequence")
    xs = [float(v) for v in values]
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def summarize(latencies_ms: Sequence[float]) -> dict[str, float | int] | None:
    """p50/p90/p99, mean, std, coefficient of variation, n, min and max; None for no runs."""
    if not latencies_ms:
        return None
    mean, std = mean_std(latencies_ms)
    return {
        "p50": percentile(latencies_ms, 50),
        "p90": percentile(latencies_ms, 90),
        "p99": percentile(latencies_ms, 99),
        "mean": mean,
        "std": std,
        "cv": std / mean if mean > 0 else 0.0,
        "n": len(latencies_ms),
        "min": min(latencies_ms),
        "max": max(latencies_ms),
    }


def is_noisy(summary: dict[str, float | int] | None, threshold: float = DEFAULT_CV_THRESHOLD) -> bool:
    """A measurement whose coefficient of variation exceeds ``threshold`` (none at all is not noisy)."""
    return summary is not None and summary.get("cv") is not None and float(summary["cv"]) > threshold


def steadiest(summaries: Sequence[dict[str, float | int] | None]) -> int:
    """Index of the attempt with the lowest CV (the one least disturbed by other load)."""
    best, best_cv = 0, math.inf
    for i, s in enumerate(summaries):
        if s is not None and s.get("cv") is not None and float(s["cv"]) < best_cv:
            best, best_cv = i, float(s["cv"])
    return best
