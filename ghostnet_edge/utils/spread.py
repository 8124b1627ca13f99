"""Spread over seeds, and the INT8 cost as paired per-seed differences.

Why paired: INT8 and FP32 of the *same* checkpoint share everything but the quantisation, so their
difference per seed isolates the quantisation cost from the seed-to-seed noise (Picard 2021 shows
one seed can sit a full point away from another). Averaging INT8 and FP32 separately and subtracting
would mix the two.

The verdict rule (stated in every table that prints it): the INT8 drop is called *larger than the
seed-to-seed spread* when ``|mean(INT8 - FP32)| > std(FP32 across seeds)``, both in percentage
points, std with ``ddof=1``. With fewer than two paired seeds there is no spread to compare with,
and the verdict says so instead of guessing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

VERDICT_RULE = "drop is 'larger' when |mean(INT8 - FP32)| > std of FP32 accuracy across seeds (ddof=1)"


@dataclass(frozen=True)
class Spread:
    """mean / std (ddof=1, 0 for one value) / min / max of a set of per-seed values."""

    n: int
    mean: float
    std: float
    min: float
    max: float

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def spread(values: Sequence[float]) -> Spread:
    """Summarise per-seed values. Raises ValueError on an empty list (a caller bug, not user input)."""
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not vals:
        raise ValueError("spread() needs at least one value")
    n = len(vals)
    mean = math.fsum(vals) / n
    # ddof=1: three seeds are a sample of the seed distribution, not the whole of it.
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else 0.0
    return Spread(n=n, mean=mean, std=std, min=min(vals), max=max(vals))


@dataclass(frozen=True)
class PairedDiff:
    """INT8 minus FP32 accuracy of the same checkpoints, per seed, in percentage points."""

    seeds: tuple[int, ...]
    diffs: tuple[float, ...]
    diff: Spread
    fp32: Spread
    verdict: str          # "larger than seed spread" | "within seed spread" | "n/a (...)"

    def to_dict(self) -> dict[str, object]:
        return {"seeds": list(self.seeds), "diffs": list(self.diffs), "diff": self.diff.to_dict(),
                "fp32": self.fp32.to_dict(), "verdict": self.verdict}


def drop_verdict(mean_diff: float, fp32_std: float, n_pairs: int) -> str:
    """Apply :data:`VERDICT_RULE`; a pure function so the rule is tested on its own."""
    if n_pairs < 2:
        return "n/a (needs >= 2 seeds)"
    return "larger than seed spread" if abs(mean_diff) > fp32_std else "within seed spread"


def paired_differences(fp32: Mapping[int, float], int8: Mapping[int, float]) -> PairedDiff | None:
    """Pair INT8 and FP32 accuracy by seed (only seeds present in both) and summarise the differences.

    Returns None when no seed has both values (e.g. every INT8 export failed).
    """
    seeds = tuple(sorted(s for s in fp32 if s in int8 and fp32[s] is not None and int8[s] is not None))
    if not seeds:
        return None
    diffs = tuple(float(int8[s]) - float(fp32[s]) for s in seeds)
    d = spread(diffs)
    f = spread([fp32[s] for s in seeds])
    return PairedDiff(seeds=seeds, diffs=diffs, diff=d, fp32=f, verdict=drop_verdict(d.mean, f.std, len(seeds)))
