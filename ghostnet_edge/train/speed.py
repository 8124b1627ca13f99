"""Which speed options a run uses: channels_last memory format and bf16 autocast.

``benchmarks/train_speed.py`` measures the options side by side in one run (2 threads, batch 128, full
SGD steps, interleaved rounds). On the development machine (AMD EPYC, AVX2 without AVX-512, 2 cores
shared with other jobs) it found, as ratios to eager fp32 NCHW measured in the same run
(``--no-bf16 --steps 3 --rounds 5``, 2026-11-22, results in ``docs/results/train_speed.json``):

* eager fp32: 268 / 140 / 109 img/s for ghostnet_cifar_050 / 100 / 130;
* data-parallel, 2 processes x 1 thread (``ghostedge train --procs 2``, see ``train/launch.py``):
  1.18x / 1.23x / 1.21x; a second run on a quieter machine 0.94x / 1.22x / 1.11x
  (``docs/results/train_speed_run2.json``) and 0.5x alone with ``--rounds 9`` 1.09x: faster every time
  for 1.0x and 1.3x, not a clear win for 0.5x; deterministic;
* channels_last: 0.94x / 1.27x / 1.06x, then 0.81x / 1.07x / 0.95x, and 0.90x / 0.99x / 0.93x in an
  earlier session: noise, not a gain;
* foreach SGD 0.87x-1.04x over the three runs; bf16 autocast 0.05x-0.09x (this CPU has no ``avx512_bf16``/``amx_bf16``,
  so every bf16 op is emulated); torch.compile 0.91x after a 390 s cold compile.

So the default is eager fp32 NCHW in one process on every CPU. bf16 autocast only when asked for
(``--bf16``): it changes the numerics, so a default that turned it on by CPU model would give a different
checkpoint, accuracy and bytes for the same seed on an Intel Xeon with ``avx512_bf16``/AMX than on an AMD
EPYC without it, and no measurement shows it faster even where it is native (on a Xeon with AMX and
``avx512_bf16``, foreach+bf16 measured 1.07x eager fp32 against foreach fp32's 1.73x). channels_last only
when asked for (``--channels-last``), several processes only when asked for (``--procs``, because it
changes BatchNorm's batch). Every option keeps determinism: the same seed, thread count and process
count give the same bytes on the same machine.
"""

from __future__ import annotations

from typing import Any

from ghostnet_edge.utils.cpu import cpu_flags

# From benchmarks/train_speed.py on the development CPU (see the module docstring): no gain, so off.
AUTO_CHANNELS_LAST = False
# Never on by default: bf16 changes a run's numerics, and a default must not depend on the CPU model.
AUTO_BF16 = False


def native_bf16() -> bool:
    """The CPU computes bf16 natively (otherwise autocast to bf16 is emulated and slow)."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def resolve_speed(channels_last: bool | None, bf16: bool | None, threads: int) -> dict[str, Any]:
    """Fill in the defaults (fp32, NCHW whatever the CPU); the result is recorded in the checkpoint meta."""
    return {
        "channels_last": AUTO_CHANNELS_LAST if channels_last is None else bool(channels_last),
        "bf16": AUTO_BF16 if bf16 is None else bool(bf16),
        "threads": int(threads),
        "auto": {"channels_last": channels_last is None, "bf16": bf16 is None},
    }
