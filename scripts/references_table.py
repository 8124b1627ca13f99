"""The README's table of INT8 over calibration draws on every committed CIFAR-10 reference.

    python scripts/references_table.py            # prints the markdown table

Reads references/cifar10/*/RUN.md, metrics.jsonl and int8_draws.json (written by
``bash scripts/measure_int8_draws.sh NAME``); every number in the table comes from those files.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REFERENCES = Path(__file__).resolve().parents[1] / "references" / "cifar10"
GOAL_MEAN, GOAL_WORST = 0.3, 0.6   # points: the mean over draws, and every single draw


def cell(summary: dict) -> str:
    d = summary["delta_vs_fp32"]
    return f"{d['mean']:+.2f} +- {d['std']:.2f} ({summary['worst_delta']:+.2f})"


def table(root: Path = REFERENCES) -> str:
    refs = []
    for ref in sorted(p for p in root.iterdir() if (p / "int8_draws.json").is_file()):
        draws = json.loads((ref / "int8_draws.json").read_text())
        final = json.loads((ref / "metrics.jsonl").read_text().splitlines()[-1])
        refs.append((ref.name, final, draws, {(s["format"], s["num_calib"]): s for s in draws["summary"]}))
    sizes = sorted({n for *_, by in refs for _, n in by})
    rows = []
    for name, final, draws, by in refs:
        for fmt, label in (("tflite", "TFLite full integer"), ("onnx", "ONNX QDQ")):
            ok = all(abs(s["delta_vs_fp32"]["mean"]) <= GOAL_MEAN and s["worst_delta"] >= -GOAL_WORST
                     for (f, _), s in by.items() if f == fmt)
            cells = [cell(by[fmt, n]) if (fmt, n) in by else "-" for n in sizes]
            rows.append((name, f"{final['val_top1']:.2f}", label, cells, sizes, draws["seeds"], ok))
    out = ["| reference | FP32 top-1 % | INT8 | " + " | ".join(f"{n} calib. images" for n in sizes)
           + " | goal met |", "|---|---:|---|" + "---:|" * len(sizes) + "---|"]
    for name, fp32, label, cells, _, _, ok in rows:
        out.append(f"| {name} | {fp32} | {label} | " + " | ".join(cells) + f" | {'yes' if ok else 'no'} |")
    out.append("")
    out.append(f"Each cell: INT8 top-1 minus FP32 top-1 on the 10,000 test images, mean +- std over "
               f"{len(rows[0][5]) if rows else 0} calibration draws (worst draw); goal: mean within "
               f"{GOAL_MEAN} points and every draw within {GOAL_WORST}.")
    return "\n".join(out)


if __name__ == "__main__":
    print(table())
    sys.exit(0)
