"""Guest instructions per inference of named models on an emulated ARM core, with repeatability.

    python -m ghostnet_edge.runtime.qemu.measure [--models ghostnet_100 mobilenetv3_large_100]
        [--cpu cortex-a76] [--repeat 2] [--runtime litert] [--no-xnnpack] [--out DIR] [--json OUT]

For each model: seeded random weights, the project's ONNX export and TFLite FP32 + full-integer INT8
conversion (calibrated on seeded noise: instruction counts depend on the graph and the kernels the
runtime picks, not on the weights' values), then each TFLite file is run ``--repeat`` times in separate
qemu processes. The table shows instructions per inference by class and the spread between the
processes. These are instruction counts for the named CPU model, not times.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from ghostnet_edge.errors import GhostEdgeError


def export_model(name: str, out: Path, calib: int = 32, seed: int = 0) -> dict[str, Path]:
    """ONNX + TFLite FP32/INT8 of ``name`` with seeded weights (reused when already in ``out``)."""
    import numpy as np
    import torch

    from ghostnet_edge.export.onnx.convert import export_onnx
    from ghostnet_edge.export.tflite.convert import convert_onnx_to_tflite
    from ghostnet_edge.models import create_model, get_spec

    paths = {"fp32": out / f"{name}_fp32.tflite", "int8": out / f"{name}_int8.tflite"}
    if all(p.is_file() for p in paths.values()):
        return paths
    out.mkdir(parents=True, exist_ok=True)
    spec = get_spec(name)
    model = create_model(name, seed=seed).eval()
    onnx_path = out / f"{name}.onnx"
    with torch.no_grad():
        export_onnx(model, spec.input_size, onnx_path)
    rep = np.random.default_rng(seed).standard_normal((calib, *spec.input_size)).astype(np.float32)
    convert_onnx_to_tflite(onnx_path, paths["fp32"], paths["int8"], representative=rep)
    return paths


def spread(values: list[int]) -> int:
    """Largest difference between repeated counts of the same run."""
    return max(values) - min(values) if values else 0


def measure(models: list[str], cpu: str, repeat: int, runtime: str, xnnpack: bool, out: Path,
            log: Any = print) -> list[dict[str, Any]]:
    from ghostnet_edge.runtime.targets.qemu import count_instructions

    rows = []
    for name in models:
        t0 = time.perf_counter()
        paths = export_model(name, out)
        log(f"{name}: artifacts ready ({time.perf_counter() - t0:.0f} s)")
        for precision, path in paths.items():
            counts = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                counts.append(count_instructions(path, cpu, runtime, xnnpack=xnnpack))
                log(f"  {path.name}: {counts[-1]['per_inference'] / 1e6:.3f} M instructions/inference "
                    f"({time.perf_counter() - t0:.0f} s in qemu)")
            c = counts[0]
            rows.append({
                "model": name, "precision": precision, "cpu_model": cpu, "runtime": c["runtime"],
                "delegate": c["delegate"], "per_inference": c["per_inference"], "simd_fp": c["simd_fp"],
                "load_store": c["load_store"], "other": c["other"], "runs_per_process": c["runs"],
                "processes": repeat, "marked_totals": [x["marked_total"] for x in counts],
                "spread_marked_total": spread([x["marked_total"] for x in counts]),
                "emulated_wall_s_per_inference": c["emulated_wall_s"] / c["runs"],
                "unit": c["unit"],
            })
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["ghostnet_100", "mobilenetv3_large_100"])
    p.add_argument("--cpu", default="cortex-a76")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--runtime", default="litert")
    p.add_argument("--no-xnnpack", action="store_true")
    p.add_argument("--out", type=Path, default=None, help="artifact folder (default: the cache)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    from ghostnet_edge.runtime.qemu.sysroot import cache_root
    from ghostnet_edge.utils.atomic import atomic_write_json

    out = args.out or cache_root() / "qemu-measure-artifacts"
    try:
        rows = measure(args.models, args.cpu, args.repeat, args.runtime, not args.no_xnnpack, out)
    except GhostEdgeError as exc:
        print(f"error: {exc.message}\nhint: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    print(f"\nguest instructions per inference on {args.cpu} (QEMU TCG count, not time), "
          f"{args.runtime}{'' if not args.no_xnnpack else ' without XNNPACK'}:")
    print(f"{'model':<24}{'prec':<6}{'M instr':>10}{'SIMD/FP':>10}{'ld/st':>10}{'other':>10}{'spread':>8}")
    for r in rows:
        print(f"{r['model']:<24}{r['precision']:<6}{r['per_inference'] / 1e6:>10.3f}{r['simd_fp'] / 1e6:>10.3f}"
              f"{r['load_store'] / 1e6:>10.3f}{r['other'] / 1e6:>10.3f}{r['spread_marked_total']:>8d}")
    if args.json:
        atomic_write_json(args.json, {"cpu": args.cpu, "runtime": args.runtime, "xnnpack": not args.no_xnnpack,
                                      "rows": rows})
    print(json.dumps({"rows": len(rows)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
