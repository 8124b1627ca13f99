"""How many images the per-layer quantization report needs, and what its drop rule changes.

    python benchmarks/layer_report.py EXPORT_DIR [--sizes 8,32,128] [--sets 3] [--top 5]

EXPORT_DIR is a `ghostedge export --int8` folder (``model_fp32.tflite``, ``model_int8.tflite``,
``manifest.json``); the images are CIFAR-10 test images (``$GHOSTEDGE_CIFAR_TAR`` or ``../shared``),
preprocessed as the manifest says, in disjoint seeded sets.

It prints, for each set size n: how well the per-layer SQNR drops computed on disjoint sets of n images
agree (Spearman rank correlation, mean over pairs of sets) and how many of the ``top`` worst layers two
sets name alike; then, on the largest set, the worst layers under the report's two drop rules: against
the noisiest input read from the graph's edges (the report's rule), and against the previous tensor in
execution order (the rule it replaced), which blames squeeze-excite multiplies for their gate's order.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Rank correlation of two equally long vectors (ties broken by position)."""
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def previous_tensor_drops(layers: list) -> list[float | None]:
    """The replaced rule: each layer's drop against the tensor measured just before it."""
    out, prev = [], None
    for e in layers:
        out.append(None if prev is None else prev - e.sqnr_db)
        prev = e.sqnr_db
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("export_dir", type=Path)
    ap.add_argument("--sizes", default="8,32,128")
    ap.add_argument("--sets", type=int, default=3, help="disjoint image sets per size")
    ap.add_argument("--top", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from ghostnet_edge.data.datasets import open_dataset
    from ghostnet_edge.data.loader import iterate_batches
    from ghostnet_edge.export import report as rp
    from ghostnet_edge.export.tflite.layers import per_layer_sqnr
    from ghostnet_edge.models import get_spec

    manifest = json.loads((args.export_dir / "manifest.json").read_text())
    model = manifest["source"]["model"]
    sizes = [int(s) for s in args.sizes.split(",")]
    need = max(sizes) * args.sets
    ds = open_dataset("cifar10", "val", get_spec(model)).subset(need, seed=args.seed)
    images = np.concatenate([x for x, _ in iterate_batches(ds, 256, as_torch=False)])
    order = np.random.default_rng(args.seed).permutation(len(images))
    int8, fp32 = args.export_dir / "model_int8.tflite", args.export_dir / "model_fp32.tflite"
    print(f"{model}: per-layer report of {int8} on CIFAR-10 test images; {args.sets} disjoint sets per size")
    print(f"{'images':>7} {'spearman(drop)':>15} {'top-' + str(args.top) + ' shared':>12}")
    largest = None
    for n in sizes:
        drops = []
        for k in range(args.sets):
            layers = per_layer_sqnr(int8, fp32, images[order[k * n:(k + 1) * n]])
            rows = rp.tflite_layer_rows(layers)
            drops.append({r["tensor"]: r["drop_db"] for r in rows if r["drop_db"] is not None})
            largest = layers
        names = sorted(set.intersection(*(set(d) for d in drops)))
        rho, shared = [], []
        for a, b in itertools.combinations(drops, 2):
            rho.append(spearman(np.array([a[t] for t in names]), np.array([b[t] for t in names])))
            top = [set(sorted(names, key=lambda t, d=d: -d[t])[:args.top]) for d in (a, b)]
            shared.append(len(top[0] & top[1]))
        print(f"{n:>7} {np.mean(rho):>15.3f} {np.mean(shared):>9.1f}/{args.top}")

    rows = rp.tflite_layer_rows(largest)
    old = previous_tensor_drops(largest)
    print(f"\nworst {args.top} layers on {max(sizes)} images, by the report's rule (drop vs the noisiest input):")
    for r in rp.worst(rows, args.top):
        print(f"  {r['drop_db']:>6.2f} dB  SQNR {r['sqnr_db']:>6.2f}  {r['op']:<16} {r['tensor'][:90]}")
    print(f"worst {args.top} by the replaced rule (drop vs the previous tensor in execution order):")
    for i in sorted(range(len(old)), key=lambda i: -(old[i] if old[i] is not None else -1e9))[:args.top]:
        e = largest[i]
        print(f"  {old[i]:>6.2f} dB  SQNR {e.sqnr_db:>6.2f}  {e.op:<16} {e.name[:90]}"
              f"  (by the graph: {rows[i]['drop_db']} dB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
