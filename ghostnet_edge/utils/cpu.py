"""What this CPU can do, read once from ``/proc/cpuinfo`` (x86 ``flags``, ARM ``Features``)."""

from __future__ import annotations

from functools import lru_cache


def parse_cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The lower-case feature flags in a ``/proc/cpuinfo`` text (first ``flags``/``Features`` line)."""
    for line in cpuinfo.splitlines():
        key = line.split(":", 1)[0].strip().lower()
        if key in ("flags", "features") and ":" in line:
            return frozenset(line.split(":", 1)[1].lower().split())
    return frozenset()


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """This machine's CPU feature flags (empty where ``/proc/cpuinfo`` cannot be read)."""
    try:
        with open("/proc/cpuinfo") as fh:
            return parse_cpu_flags(fh.read())
    except OSError:
        return frozenset()
