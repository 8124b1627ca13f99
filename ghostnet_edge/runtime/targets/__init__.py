"""Benchmark targets and ``parse_target``.

==============================================  ====================================================
``host``                                        this machine (subprocess per artifact)
``qemu-aarch64[:CPU]``                          emulated ARM, guest instruction counts (``qemu.py``)
``ssh://user@host[:port][?python=&key=&known_hosts=]``  a Linux board over OpenSSH
``adb[:SERIAL]``                                an Android phone with TFLite's ``benchmark_model``
==============================================  ====================================================
"""

from __future__ import annotations

from ghostnet_edge.errors import TargetError
from ghostnet_edge.runtime.targets.base import Session, Target

__all__ = ["Session", "Target", "parse_target"]

_USAGE = "use host, qemu-aarch64[:cpu], ssh://user@host[:port] or adb[:serial]"


def parse_target(spec: str) -> Target:
    """A :class:`Target` from its string form; a malformed string raises TargetError."""
    spec = (spec or "").strip()
    if spec == "host":
        from ghostnet_edge.runtime.targets.host import HostTarget

        return HostTarget()
    if spec.startswith("ssh://"):
        from ghostnet_edge.runtime.targets.ssh import SshTarget

        return SshTarget.from_url(spec)
    if spec == "adb" or spec.startswith("adb:"):
        from ghostnet_edge.runtime.targets.adb import AdbTarget

        return AdbTarget(serial=spec[4:] or None)
    if spec == "qemu-aarch64" or spec.startswith("qemu-aarch64:"):
        try:
            from ghostnet_edge.runtime.targets.qemu import QemuTarget
        except ImportError as exc:
            raise TargetError("the qemu-aarch64 target is not available in this installation",
                              "update ghostedge; meanwhile measure on host, ssh://... or adb") from exc
        return QemuTarget.from_spec(spec)
    raise TargetError(f"unknown target {spec!r}", _USAGE)
