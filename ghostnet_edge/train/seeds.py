"""Train the same configuration over several seeds and report the spread.

One seed's accuracy can sit a full point away from another's, so a single number says little; the
sweep reports mean, sample std (ddof=1), min and max of the final top-1, and per epoch the band the
curves span. Finished seeds are reused and interrupted ones resumed, so re-running a sweep only does
the missing work.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ghostnet_edge.train.config import TrainConfig, TrainResult
from ghostnet_edge.utils.atomic import atomic_write_json, atomic_write_text
from ghostnet_edge.utils.spread import spread

STD_NOTE = "std is the sample standard deviation over seeds (ddof=1; 0 for a single seed)"


def summarize_spread(values: Sequence[float]) -> dict[str, Any]:
    """``{"n", "mean", "std", "min", "max", "ddof"}`` of per-seed values (std with ddof=1)."""
    return {**spread(values).to_dict(), "ddof": 1}


def epoch_band(histories: Sequence[Sequence[dict[str, Any]]], key: str = "val_top1") -> list[dict[str, Any]]:
    """Per epoch: mean, mean +- 1 std and min-max of ``key`` over the runs that reached that epoch."""
    longest = max((len(h) for h in histories), default=0)
    band = []
    for e in range(longest):
        values = [h[e][key] for h in histories if len(h) > e and h[e].get(key) is not None]
        if not values:
            continue
        s = summarize_spread(values)
        band.append({"epoch": e + 1, "n": s["n"], "mean": s["mean"], "std": s["std"],
                     "lo_1std": s["mean"] - s["std"], "hi_1std": s["mean"] + s["std"],
                     "min": s["min"], "max": s["max"]})
    return band


@dataclass
class SeedSweep:
    out: Path
    seeds: list[int]
    results: dict[int, TrainResult]
    final_top1: dict[str, Any]
    band: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "seeds": self.seeds, "note": STD_NOTE,
                "final_top1_per_seed": {str(s): r.final_top1 for s, r in self.results.items()},
                "checkpoints": {str(s): str(r.checkpoint) for s, r in self.results.items()},
                "final_top1": self.final_top1, "epoch_band": self.band}


def train_seeds(config: TrainConfig, seeds: Sequence[int]) -> SeedSweep:
    """One run per seed in ``config.out/seed_<s>/``; writes ``spread.json`` and ``spread.md`` there."""
    from ghostnet_edge.errors import GhostEdgeError
    from ghostnet_edge.train.loop import train, with_seed

    seeds = [int(s) for s in dict.fromkeys(seeds)]
    if not seeds:
        raise GhostEdgeError("no seeds given", "pass --seeds 3407 0 1 (or --seed S for one run)")
    out = Path(config.out)
    results: dict[int, TrainResult] = {}
    for s in seeds:
        results[s] = train(with_seed(config, s, out / f"seed_{s}"))
    finals = [r.final_top1 for r in results.values()]
    sweep = SeedSweep(out=out, seeds=seeds, results=results, final_top1=summarize_spread(finals),
                      band=epoch_band([r.history for r in results.values()]))
    atomic_write_json(out / "spread.json", sweep.to_dict())
    atomic_write_text(out / "spread.md", spread_markdown(sweep, config))
    return sweep


def spread_markdown(sweep: SeedSweep, config: TrainConfig) -> str:
    f = sweep.final_top1
    lines = [
        f"# {config.model} on {config.data}: top-1 over {len(sweep.seeds)} seeds",
        "",
        f"{config.epochs} epochs, batch {config.batch_size}, lr {config.lr} ({config.schedule}). {STD_NOTE}.",
        "",
        "| seed | final top-1 (%) | best top-1 (%) |",
        "|---:|---:|---:|",
        *[f"| {s} | {_fmt(r.final_top1)} | {_fmt(r.best_top1)} |" for s, r in sweep.results.items()],
        "",
        "| final top-1 (%) | mean | std | min | max |",
        "|---|---:|---:|---:|---:|",
        f"| {f['n']} seeds | {_fmt(f['mean'])} | {_fmt(f['std'])} | {_fmt(f['min'])} | {_fmt(f['max'])} |",
        "",
        "| epoch | mean | -1 std | +1 std | min | max |",
        "|---:|---:|---:|---:|---:|---:|",
        *[f"| {b['epoch']} | {_fmt(b['mean'])} | {_fmt(b['lo_1std'])} | {_fmt(b['hi_1std'])} | "
          f"{_fmt(b['min'])} | {_fmt(b['max'])} |" for b in sweep.band],
        "",
    ]
    return "\n".join(lines)


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"
