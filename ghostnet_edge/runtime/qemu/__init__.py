"""Emulated ARM (``qemu-aarch64`` target): the cached aarch64 sysroot, its build, the TCG plugin.

- ``sysroot.py``        where the sysroot and plugin live, the recipe and its hash, ``check_sysroot()``
- ``build.py``          builds both (``scripts/build_sysroot.sh``); stdlib only
- ``guest_main.py``     the guest-side entry: runs ``device_runner.py`` with progress lines off
- ``plugin/``           ``insn_count.c``: guest instructions between the runner's markers, by class

The target itself is ``ghostnet_edge/runtime/targets/qemu.py``.
"""
