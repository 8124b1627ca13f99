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


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """This machine's CPU feature flags (empty where ``/proc/cpuinfo`` cannot be read), or those of a
    ``/proc/cpuinfo`` text, e.g. another machine's or a test's."""
    return _machine_flags() if cpuinfo is None else parse_cpu_flags(cpuinfo)


# Cached apart from cpu_flags so that parsing a given text never evicts this machine's flags.
@lru_cache(maxsize=1)
def _machine_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            return parse_cpu_flags(fh.read())
    except OSError:
        return frozenset()
