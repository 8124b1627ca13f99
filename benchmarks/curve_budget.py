"""How long the committed CIFAR-10 curve sweep takes, from speeds measured side by side in one run.

    python benchmarks/curve_budget.py                      # train speed of every model, then the budget
    python benchmarks/curve_budget.py --export --qemu      # also time one export and one qemu count per model
    python benchmarks/curve_budget.py --threads 1 --ref-ips 600 --limit-val 2000   # the committed budget

For each model of the sweep it measures eager training throughput (SGD steps on 32x32 batches, the
given thread count) and evaluation throughput, optionally one full export (ONNX + TFLite, FP32 + INT8)
and one emulated-ARM instruction count, and prints the ratios to GhostNet 0.5x measured in the same
run. Then it adds up the sweep: seeds x (epochs x (train + per-epoch val) + export + eval of every
format) + host latency + qemu counts, and prints the largest epoch count that fits the budget.

Numbers measured on a busy machine are slower than on an idle one; the ratios hold better than the
absolute values, so the script also accepts ``--ref-ips`` (GhostNet 0.5x img/s on an idle machine)
to rescale every model's speed by its measured ratio.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

MODELS = ("ghostnet_cifar_050", "ghostnet_cifar_100", "ghostnet_cifar_130",
          "mobilenetv3_small_cifar_100", "mobilenetv3_large_cifar_100")
FORMATS = ("torch", "onnx", "onnx-int8", "tflite", "tflite-int8")
TRAIN_IMAGES, VAL_IMAGES = 50_000, 10_000


def train_ips(model_name: str, threads: int, batch: int = 128, steps: int = 6, warmup: int = 2) -> float:
    """Images per second of SGD steps (forward, loss, backward, update) on random 32x32 batches."""
    import torch

    from ghostnet_edge.models import create_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = create_model(model_name).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, 32, 32)
    y = torch.randint(0, 10, (batch,))
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return batch / statistics.median(times)


def eval_ips(model_name: str, threads: int, batch: int = 256, steps: int = 4) -> float:
    import torch

    from ghostnet_edge.models import create_model

    torch.set_num_threads(threads)
    model = create_model(model_name).eval()
    x = torch.randn(batch, 3, 32, 32)
    times = []
    with torch.inference_mode():
        model(x)
        for _ in range(steps):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    return batch / statistics.median(times)


def export_seconds(model_name: str, calib: Any, num_calib: int, threads: int) -> float:
    from ghostnet_edge.export.pipeline import ExportConfig, export_artifacts

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        export_artifacts(ExportConfig(model=model_name, calib=calib, out=Path(tmp) / "x", num_calib=num_calib,
                                      threads=threads))
        return time.perf_counter() - t0


def qemu_seconds(model_name: str, calib: Any, threads: int) -> float:
    """Wall time of one instruction count (INT8 TFLite) under qemu-aarch64."""
    from ghostnet_edge.export.pipeline import ExportConfig, export_artifacts
    from ghostnet_edge.runtime.targets.qemu import count_instructions

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "x"
        export_artifacts(ExportConfig(model=model_name, calib=calib, out=out, formats=("tflite",), num_calib=16,
                                      threads=threads))
        t0 = time.perf_counter()
        count_instructions(out / "model_int8.tflite")
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2, help="training threads (the sweep trains on every core)")
    ap.add_argument("--epochs", type=int, default=None, help="print the budget for this many epochs")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--budget-min", type=float, default=150.0)
    ap.add_argument("--export", action="store_true", help="time one export per model (else 45 s assumed)")
    ap.add_argument("--qemu", action="store_true", help="time one qemu count per model (else 60 s assumed)")
    ap.add_argument("--ref-ips", type=float, default=None,
                    help="GhostNet 0.5x training img/s on an idle machine: rescale all speeds by their ratio")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--limit-val", type=int, default=VAL_IMAGES,
                    help="images the training loop validates on after each epoch (the sweep's --limit-val)")
    args = ap.parse_args()
    models = [m for m in args.models.split(",") if m]

    calib = None
    if args.export or args.qemu:
        from ghostnet_edge.pipeline.stages import calibration_images

        calib = calibration_images("cifar10", 160)

    rows = []
    for m in models:
        row = {"model": m, "train_ips": train_ips(m, args.threads), "eval_ips": eval_ips(m, 1)}
        row["export_s"] = export_seconds(m, calib, 128, 1) if args.export else 45.0
        row["qemu_s"] = qemu_seconds(m, calib, 1) if args.qemu else 60.0
        rows.append(row)
        print(f"{m:30s} train {row['train_ips']:7.1f} img/s  eval {row['eval_ips']:7.1f} img/s  "
              f"export {row['export_s']:5.1f} s  qemu {row['qemu_s']:5.1f} s", flush=True)
    ref = rows[0]["train_ips"]
    scale = (args.ref_ips / ref) if args.ref_ips else 1.0
    print(f"\nratios to {rows[0]['model']} (measured side by side in this run); scale applied: {scale:.2f}")
    for r in rows:
        print(f"  {r['model']:30s} train speed x{r['train_ips'] / ref:.2f}")

    def total_seconds(epochs: int) -> float:
        total = 0.0
        for r in rows:
            tips, eips = r["train_ips"] * scale, r["eval_ips"] * scale
            per_run = epochs * (TRAIN_IMAGES / tips + args.limit_val / eips) + r["export_s"]
            per_run += len(FORMATS) * VAL_IMAGES / eips  # each artifact on the whole test split (TFLite ~ eager)
            total += args.seeds * per_run
            total += len(FORMATS) * 6.0 + (len(FORMATS) - 1) * r["qemu_s"]  # host latency + qemu counts
        return total

    for e in ([args.epochs] if args.epochs else [1, 2, 3, 4, 5, 10, 20]):
        print(f"  {e:3d} epochs: {total_seconds(e) / 60:6.1f} min")
    fits = max((e for e in range(1, 200) if total_seconds(e) <= args.budget_min * 60), default=0)
    print(f"largest epoch count within {args.budget_min:.0f} min: {fits}")


if __name__ == "__main__":
    main()
