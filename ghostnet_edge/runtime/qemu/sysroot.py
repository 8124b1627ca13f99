"""The cached aarch64 sysroot the ``qemu-aarch64`` target runs in: its recipe, location and checks.

Stdlib only: the CLI and ``parse_target`` import this to say *why* the target cannot be used.

What the sysroot is (built by ``scripts/build_sysroot.sh`` -> :mod:`ghostnet_edge.runtime.qemu.build`):

- Debian 12's arm64 Python 3.11 and the shared libraries it needs, unpacked with ``dpkg -x`` (never
  installed: nothing on the host changes except ``dpkg --add-architecture arm64``);
- the aarch64 wheels of NumPy, ai-edge-litert, onnxruntime and tflite-runtime in ``/opt/ghostedge/site``;
- an ARM ``/proc/cpuinfo`` and ``/sys/devices/system/cpu/{possible,present,online}``: QEMU's user mode
  shows the guest the *host's* x86 files, which makes onnxruntime warn about an unknown vendor (a probe
  reported a segfault) and lets cpuinfo-based kernel selection (XNNPACK picks Cortex-A53-specific GEMM
  kernels by CPU part) see the wrong core. ``qemu-aarch64 -L ROOT`` resolves absolute guest paths in
  ROOT first, so these files win;
- every ``.py`` precompiled (unchecked-hash ``.pyc``, recorded under guest paths), so a run never
  compiles or writes bytecode and two runs execute the same guest instructions.

The root is laid out for the default CPU model (Cortex-A76). Other CPU models get a *view*: a folder of
symlinks to the same ``usr``, ``lib``, ``etc``, ``opt`` with that model's own ``proc`` and ``sys``, so
the cpuinfo a runtime reads always matches the ``-cpu`` QEMU emulates (and the HWCAPs it reports).

The instruction-count plugin is built next to it, keyed by the hash of its C source, so an updated
checkout never uses a stale plugin.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ghostnet_edge.errors import TargetError
from ghostnet_edge.utils.paths import cache_home

# Bump when the build changes in a way the lists below do not show (layout, compile mode, files).
RECIPE_VERSION = 1

# The arm64 .debs of Debian 12 (bookworm) that make a working python3.11 with ssl/sqlite/ctypes/readline.
DEBIAN_PACKAGES: tuple[str, ...] = (
    "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "libc6", "libgcc-s1",
    "libstdc++6", "zlib1g", "libexpat1", "libssl3", "libffi8", "libbz2-1.0", "liblzma5", "libsqlite3-0",
    "libncursesw6", "libtinfo6", "libreadline8", "libuuid1", "libdb5.3", "libcrypt1", "libnsl2",
    "libtirpc3", "libgssapi-krb5-2", "libkrb5-3", "libk5crypto3", "libkrb5support0", "libcom-err2",
    "libkeyutils1",
)

# The interpreters of constraints.txt, as aarch64 cp311 wheels, plus the 2023 tflite-runtime that older
# boards still carry. tflite-runtime 2.14 is built for numpy 1, and numpy-2-built wheels (ai-edge-litert,
# onnxruntime) also run on numpy 1.26, so the guest keeps numpy 1.26 where all three import. Their
# pure-Python dependencies (protobuf, flatbuffers, sympy, ...) are not needed to load a model and run it,
# so --no-deps keeps it small.
GUEST_WHEELS: dict[str, str] = {
    "numpy": "1.26.4",
    "ai-edge-litert": "2.3.0",
    "onnxruntime": "1.32.0",
    "tflite-runtime": "2.14.0",
}
# The guest has glibc 2.36: every manylinux tag up to it is installable.
WHEEL_PLATFORMS: tuple[str, ...] = tuple(f"manylinux_2_{v}_aarch64" for v in (17, 24, 27, 28, 31, 34, 35, 36)) + (
    "manylinux2014_aarch64",)

GUEST_PYTHON = "usr/bin/python3.11"     # relative to the root
GUEST_SITE = "/opt/ghostedge/site"      # a guest path (qemu -L maps it into the root)
GUEST_PYTHON_VERSION = "3.11"
BUILD_COMMAND = "bash scripts/build_sysroot.sh"
BUILD_COMMAND_INSTALLED = "python -m ghostnet_edge.runtime.qemu.build"
STAMP_NAME = "ghostedge-sysroot.json"
VIEWS_DIR = ".cpu-views"
N_CORES = 4                             # the guest sees a fixed 4-core CPU, whatever the host has
DEFAULT_CPU = "cortex-a76"


@dataclass(frozen=True)
class CpuModel:
    """What ``/proc/cpuinfo`` says for one QEMU ``-cpu`` model (Linux arm64 format)."""

    name: str
    part: str
    variant: str
    revision: int
    features: str          # the HWCAP names QEMU 7.2 reports for this model (checked by a test)
    description: str


# Feature lists are exactly what QEMU 7.2's AT_HWCAP/AT_HWCAP2 give each model (no "evtstrm": that is
# a kernel timer feature QEMU does not report), so cpuinfo and getauxval() never disagree.
CPU_MODELS: dict[str, CpuModel] = {
    "cortex-a76": CpuModel("cortex-a76", "0xd0b", "0x4", 1,
                           "fp asimd aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop "
                           "asimddp", "Armv8.2-A with dot product (Raspberry Pi 5, Snapdragon 855 big cores)"),
    "cortex-a72": CpuModel("cortex-a72", "0xd08", "0x0", 3, "fp asimd aes pmull sha1 sha2 crc32 cpuid",
                           "Armv8.0-A without dot product (Raspberry Pi 4)"),
    "cortex-a53": CpuModel("cortex-a53", "0xd03", "0x0", 4, "fp asimd aes pmull sha1 sha2 crc32 cpuid",
                           "in-order Armv8.0-A little core (Raspberry Pi 3, phone little cores)"),
    "neoverse-n1": CpuModel("neoverse-n1", "0xd0c", "0x4", 1,
                            "fp asimd aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop "
                            "asimddp", "Armv8.2-A server core (AWS Graviton2, Ampere Altra)"),
}

# CPU models we refuse, with the reason the user sees.
REFUSED_CPUS: dict[str, str] = {
    "max": "QEMU 7.2's '-cpu max' emulates SME, and that emulation corrupts LiteRT int8 results (a probe "
           "found 3904 of 4000 outputs wrong); name a real core instead",
}


@dataclass(frozen=True)
class SysrootStatus:
    """A checked, usable sysroot: where everything is."""

    root: Path                  # the root for the default CPU model
    python: Path                # host path of the guest python (inside root)
    site: str                   # guest path of the wheels' folder
    plugin: Path                # the instruction-count plugin (.so)
    qemu: Path                  # the qemu-aarch64 binary
    qemu_version: str
    recipe_hash: str
    cpus: tuple[str, ...]
    manifest: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def cpu_root(self, cpu: str) -> Path:
        """The ``-L`` root whose /proc/cpuinfo describes ``cpu``."""
        check_cpu(cpu)
        return self.root if cpu == DEFAULT_CPU else self.root / VIEWS_DIR / cpu


# ------------------------------------------------------------------------------------------- places


def cache_root() -> Path:
    """``$GHOSTEDGE_CACHE`` or ``~/.cache/ghostedge`` (read at call time, so tests can redirect it)."""
    return cache_home()


def sysroot_dir() -> Path:
    """Where the aarch64 sysroot lives (it may not exist yet)."""
    return cache_root() / "sysroot-aarch64"


def plugin_source_dir() -> Path:
    return Path(__file__).resolve().parent / "plugin"


def plugin_source_hash() -> str:
    """Hash of the plugin's C sources: the built .so is named after it."""
    h = hashlib.sha256()
    for name in sorted(p.name for p in plugin_source_dir().iterdir() if p.suffix in (".c", ".h")):
        h.update(name.encode() + b"\0" + (plugin_source_dir() / name).read_bytes() + b"\0")
    return h.hexdigest()[:16]


def plugin_path() -> Path:
    """Where the instruction-count plugin built from this checkout's source lives."""
    return cache_root() / "qemu-plugin" / f"libinsn_count-{plugin_source_hash()}.so"


# ------------------------------------------------------------------------------------------- recipe


def cpuinfo_text(cpu: str, cores: int = N_CORES) -> str:
    """The ``/proc/cpuinfo`` of a ``cores``-core ``cpu``, in the Linux arm64 format."""
    model = CPU_MODELS[check_cpu(cpu)]
    block = ("processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: {f}\nCPU implementer\t: 0x41\n"
             "CPU architecture: 8\nCPU variant\t: {v}\nCPU part\t: {p}\nCPU revision\t: {r}\n\n")
    return "".join(block.format(i=i, f=model.features, v=model.variant, p=model.part, r=model.revision)
                   for i in range(cores))


def recipe() -> dict[str, Any]:
    """Everything the sysroot is made from; its hash is the stamp that says a cache is current."""
    return {
        "version": RECIPE_VERSION,
        "debian_release": "bookworm",
        "debian_packages": list(DEBIAN_PACKAGES),
        "wheels": dict(GUEST_WHEELS),
        "wheel_platforms": list(WHEEL_PLATFORMS),
        "python": GUEST_PYTHON_VERSION,
        "site": GUEST_SITE,
        "cores": N_CORES,
        "cpus": {name: cpuinfo_text(name) for name in CPU_MODELS},
    }


def recipe_hash() -> str:
    return hashlib.sha256(json.dumps(recipe(), sort_keys=True).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------- checks


def check_cpu(cpu: str) -> str:
    """``cpu`` if we can emulate it faithfully, else TargetError (``max`` is refused with its reason)."""
    name = (cpu or "").strip().lower()
    if name in REFUSED_CPUS:
        raise TargetError(f"qemu-aarch64 CPU model '{name}' is refused: {REFUSED_CPUS[name]}",
                          f"use qemu-aarch64:{DEFAULT_CPU} (dot product) or one of: {', '.join(CPU_MODELS)}")
    if name not in CPU_MODELS:
        raise TargetError(f"unknown qemu-aarch64 CPU model '{cpu}'",
                          f"choose one of: {', '.join(CPU_MODELS)} (e.g. qemu-aarch64:{DEFAULT_CPU})")
    return name


def build_hint() -> str:
    return (f"build it (about 30 s, ~300 MB, cached in {sysroot_dir().parent}) with: {BUILD_COMMAND}  "
            f"(from a ghostedge checkout; or: {BUILD_COMMAND_INSTALLED})")


def find_qemu() -> tuple[Path, str]:
    """The ``qemu-aarch64`` binary and its version, or TargetError saying how to install it."""
    exe = shutil.which("qemu-aarch64")
    if exe is None:
        raise TargetError("qemu-aarch64 (QEMU user-mode emulation) is not installed",
                          "install Debian's qemu-user: sudo apt-get install qemu-user  (or run "
                          f"{BUILD_COMMAND}, which installs it when run as root)")
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TargetError(f"{exe} does not run: {exc}", "reinstall qemu-user") from exc
    match = re.search(r"version\s+(\d+\.\d+(?:\.\d+)?)", out)
    return Path(exe), (match.group(1) if match else "unknown")


def read_stamp(root: Path) -> dict[str, Any] | None:
    """The build manifest of a sysroot, or None when there is none (or it is unreadable)."""
    try:
        data = json.loads((root / STAMP_NAME).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def check_sysroot(need_plugin: bool = True) -> SysrootStatus:
    """A usable sysroot (and plugin), or one TargetError naming the exact command that builds it."""
    qemu, qemu_version = find_qemu()
    root = sysroot_dir()
    if not root.is_dir():
        raise TargetError(f"the aarch64 sysroot for qemu-aarch64 is missing ({root})", build_hint())
    stamp = read_stamp(root)
    if stamp is None:
        raise TargetError(f"the aarch64 sysroot at {root} is incomplete (no {STAMP_NAME})", build_hint())
    want = recipe_hash()
    if stamp.get("recipe_hash") != want:
        raise TargetError(f"the aarch64 sysroot at {root} was built from another recipe "
                          f"({stamp.get('recipe_hash')}, this checkout needs {want})", "re" + build_hint())
    python = root / GUEST_PYTHON
    if not python.is_file():
        raise TargetError(f"the aarch64 sysroot at {root} has no {GUEST_PYTHON}", "re" + build_hint())
    plugin = plugin_path()
    if need_plugin and not plugin.is_file():
        raise TargetError(f"the qemu instruction-count plugin is not built for this checkout ({plugin})",
                          build_hint())
    cpus = tuple(c for c in CPU_MODELS if c == DEFAULT_CPU or (root / VIEWS_DIR / c / "proc" / "cpuinfo").is_file())
    return SysrootStatus(root=root, python=python, site=GUEST_SITE, plugin=plugin, qemu=qemu,
                         qemu_version=qemu_version, recipe_hash=want, cpus=cpus, manifest=stamp)


def available() -> bool:
    """True when the qemu-aarch64 target can run here (qemu, sysroot and plugin present)."""
    try:
        check_sysroot()
    except TargetError:
        return False
    return True
