"""Guest-side entry of the qemu-aarch64 target: ``device_runner.py`` with its progress lines off.

Runs inside the emulated aarch64 Python (stdlib only; nothing from ghostnet_edge is importable there):

    python3.11 guest_main.py RUNNER_DIR [--maps-out PATH] [device_runner flags...]

Why not run ``device_runner.py`` directly: its progress lines are flushed every 0.5 s of *wall* time
from inside the timed loop, i.e. between the two markers the instruction-count plugin watches. Under
emulation that wall clock is QEMU's speed, so how many flushes land in the marked region (and the
guest instructions they cost) would change from run to run. With progress off, the marked region runs
the same guest code every time and the count repeats. Everything else (flags, loading, the timed loop,
the JSON result, exit codes) is the runner's own code, unchanged.

``--maps-out PATH`` (for ``bench --profile``): once the runner is done, and while every library it
loaded is still mapped, the guest's ``/proc/self/maps`` (QEMU's guest view: guest addresses, file
names) is written to PATH, so the host can turn the plugin's per-code-address counts into symbols.
"""

from __future__ import annotations

import sys


def write_maps(path: str) -> None:
    """Copy /proc/self/maps to ``path`` (temporary name, then rename)."""
    import os

    with open("/proc/self/maps") as fh:
        text = fh.read()
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: guest_main.py RUNNER_DIR [--maps-out PATH] [device_runner flags...]", file=sys.stderr)
        return 2
    maps_out = None
    if len(argv) >= 3 and argv[1] == "--maps-out":
        maps_out = argv[2]
        argv = [argv[0], *argv[3:]]
    sys.path.insert(0, argv[0])
    import device_runner as dr

    class QuietProgress(dr.Progress):
        """A Progress that never writes (the runner builds one on stderr in main())."""

        def __init__(self, stream=None, every_s: float = dr.PROGRESS_EVERY_S) -> None:
            super().__init__(None, every_s)

    dr.Progress = QuietProgress
    code = dr.main(argv[1:])
    if maps_out:
        try:
            write_maps(maps_out)
        except OSError as exc:  # the counts stay valid; the host reports that symbols are missing
            print(f"guest_main: cannot write {maps_out}: {exc}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
