"""Which speed options a run uses: channels_last memory format and bf16 autocast.

``benchmarks/train_speed.py`` measures every combination side by side; the automatic choice here is
what it found on CPUs like the one the project is developed on, plus one hardware rule:

* bf16 autocast only pays off with native bf16 arithmetic (``avx512_bf16`` / ``amx_bf16``); without it
  every bf16 conv is emulated and slower than fp32, so "auto" turns it on only on such CPUs.
* channels_last: measured on the development CPU (AMD EPYC, AVX2, 2 threads) it makes the GhostNet
  32x32 forms slower (the depthwise convs dominate and oneDNN's NHWC depthwise kernels lose on
  small maps), so "auto" leaves it off; ``--channels-last`` turns it on where it helps.

Both options keep determinism available: the same seed and thread count give the same bytes.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

# Set from benchmarks/train_speed.py on the development CPU; see the module docstring.
AUTO_CHANNELS_LAST = False


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def native_bf16() -> bool:
    """The CPU computes bf16 natively (otherwise autocast to bf16 is emulated and slow)."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def resolve_speed(channels_last: bool | None, bf16: bool | None, threads: int) -> dict[str, Any]:
    """Fill in the automatic choices; the result is recorded in the checkpoint meta."""
    return {
        "channels_last": AUTO_CHANNELS_LAST if channels_last is None else bool(channels_last),
        "bf16": native_bf16() if bf16 is None else bool(bf16),
        "threads": int(threads),
        "auto": {"channels_last": channels_last is None, "bf16": bf16 is None},
    }
