"""Guest instructions per symbol: the plugin's per-TB counts, resolved on the host.

The instruction-count plugin (``plugin/insn_count.c``, argument ``tbs=PATH``) writes one line per
translation block that ran between the runner's markers: guest start address, length, instructions
executed there. QEMU's own ``qemu_plugin_insn_symbol`` cannot name them: under user-mode emulation it
only knows the ELF images QEMU itself loaded (the Python binary and ld.so, and only with its log on),
while the kernels live in shared libraries the guest's ld.so maps. So the guest runner writes its
``/proc/self/maps`` (``qemu/guest_main.py --maps-out``), and here every address is turned into
(library, function) with the library's own ELF symbol tables (``.symtab`` when the library has one,
else ``.dynsym``), read with this module's small ELF64 reader (standard library only).

What comes out is exact in sum: every marked instruction is attributed to one row, so the rows add
up to the plugin's marked count (the qemu target checks it). A row is ``unknown`` when its address is
in a stripped part of a library (no symbol covers it: onnxruntime's wheel, for instance, keeps only
its exported symbols) or in no file mapping at all.

Kernel families group the rows for reading: ``xnn_<datatype>_<op>`` for XNNPACK micro-kernels
(``xnn_qs8_qc8w_dwconv``, ``xnn_f32_gemm``, ...), ``xnnpack (operator/runtime code)`` for the rest of
XNNPACK, the C++ namespace for TFLite kernels (``tflite::optimized_ops``, ``tflite::reference_ops``,
``tflite::ops::builtin::hard_swish``...), the library name for libc/libm/libstdc++/Python/NumPy, and
``unknown (<library>)`` for stripped code.
"""

from __future__ import annotations

import bisect
import os
import re
import shutil
import struct
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# ----------------------------------------------------------------------------------------- ELF64

SHT_SYMTAB, SHT_DYNSYM = 2, 11
# The stubs through which a library calls functions of another (memcpy, expf, ...): no symbol covers them.
PLT_NAME = "PLT stubs (calls into other libraries)"
STT_FUNC, STT_GNU_IFUNC = 2, 10
PT_LOAD = 1


@dataclass
class ElfSymbols:
    """Function symbols of one ELF64 little-endian file, sorted by address, and its PT_LOAD segments."""

    path: str
    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    segments: list[tuple[int, int, int]] = field(default_factory=list)  # (p_offset, p_vaddr, p_filesz)
    plt: list[tuple[int, int]] = field(default_factory=list)             # .plt/.plt.sec address ranges
    table: str = "none"          # "symtab", "dynsym" or "none"
    error: str | None = None

    def file_offset_to_vaddr(self, offset: int) -> int:
        """The link-time address of a file offset (through the PT_LOAD segment that holds it)."""
        for p_offset, p_vaddr, p_filesz in self.segments:
            if p_offset <= offset < p_offset + max(p_filesz, 1):
                return p_vaddr + (offset - p_offset)
        return offset

    def lookup(self, vaddr: int) -> str | None:
        """The function containing link-time address ``vaddr`` (``PLT_NAME`` in a PLT), or None."""
        if any(lo <= vaddr < hi for lo, hi in self.plt):
            return PLT_NAME
        i = bisect.bisect_right(self.starts, vaddr) - 1
        while i >= 0:
            if self.starts[i] <= vaddr < self.ends[i]:
                return self.names[i]
            # Symbols may nest or be listed with size 0; look one step further back, then give up.
            if self.starts[i] < vaddr and i > 0 and self.starts[i - 1] == self.starts[i]:
                i -= 1
                continue
            return None
        return None


def read_elf_symbols(path: str | Path) -> ElfSymbols:
    """Function symbols (``STT_FUNC``/``STT_GNU_IFUNC`` with a size) of an ELF64 LE file; never raises."""
    out = ElfSymbols(str(path))
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        out.error = str(exc)
        return out
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        out.error = "not an ELF64 little-endian file"
        return out
    try:
        (e_phoff, e_shoff) = struct.unpack_from("<QQ", data, 0x20)
        (e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx) = struct.unpack_from("<HHHHH", data, 0x36)
        for i in range(e_phnum):
            p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz = struct.unpack_from("<IIQQQQ", data,
                                                                                     e_phoff + i * e_phentsize)
            if p_type == PT_LOAD:
                out.segments.append((p_offset, p_vaddr, p_filesz))
        sections = [struct.unpack_from("<IIQQQQIIQQ", data, e_shoff + i * e_shentsize) for i in range(e_shnum)]
        if 0 < e_shstrndx < len(sections):
            names_off = sections[e_shstrndx][4]
            for sec in sections:
                end = data.find(b"\0", names_off + sec[0])
                if data[names_off + sec[0]:end] in (b".plt", b".plt.sec", b".iplt") and sec[3]:
                    out.plt.append((sec[3], sec[3] + sec[5]))
        by_type = {SHT_SYMTAB: None, SHT_DYNSYM: None}
        for sec in sections:
            if sec[1] in by_type and by_type[sec[1]] is None:
                by_type[sec[1]] = sec
        syms: dict[int, tuple[int, str]] = {}
        for kind, label in ((SHT_SYMTAB, "symtab"), (SHT_DYNSYM, "dynsym")):
            sec = by_type[kind]
            if sec is None:
                continue
            _name, _type, _flags, _addr, offset, size, link, _info, _align, entsize = sec
            strtab = sections[link]
            str_off, str_size = strtab[4], strtab[5]
            strings = data[str_off:str_off + str_size]
            entsize = entsize or 24
            found = 0
            for st_name, st_info, _other, st_shndx, st_value, st_size in struct.iter_unpack(
                    "<IBBHQQ", data[offset:offset + size - size % entsize]):
                if st_info & 0xF not in (STT_FUNC, STT_GNU_IFUNC) or st_shndx == 0 or not st_value:
                    continue
                end = strings.find(b"\0", st_name)
                name = strings[st_name:end if end >= 0 else None].decode("utf-8", "replace")
                prev = syms.get(st_value)
                # Keep the larger of two symbols at one address (aliases); symtab wins ties.
                if prev is None or st_size > prev[0]:
                    syms[st_value] = (max(int(st_size), 1), name)
                found += 1
            if found and out.table == "none":
                out.table = label
    except (struct.error, IndexError) as exc:
        out.error = f"unreadable ELF: {exc}"
        return out
    for start in sorted(syms):
        size, name = syms[start]
        out.starts.append(start)
        out.ends.append(start + size)
        out.names.append(name)
    return out


# ----------------------------------------------------------------------------------------- maps


@dataclass(frozen=True)
class Mapping:
    start: int
    end: int
    offset: int
    path: str


def parse_maps(text: str) -> list[Mapping]:
    """Executable file mappings of a ``/proc/PID/maps`` text, sorted by start."""
    out = []
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 6 or "x" not in parts[1]:
            continue
        path = parts[5].strip()
        if not path or path.startswith("["):
            continue
        lo, _, hi = parts[0].partition("-")
        try:
            out.append(Mapping(int(lo, 16), int(hi, 16), int(parts[2], 16), path))
        except ValueError:
            continue
    return sorted(out, key=lambda m: m.start)


def host_path(guest_path: str, root: Path | None) -> str:
    """Where a mapped file is on the host: QEMU shows host paths; a guest path is looked up under ``root``."""
    if os.path.isfile(guest_path):
        return guest_path
    if root is not None:
        candidate = str(root) + guest_path
        if os.path.isfile(candidate):
            return candidate
    return guest_path


# ---------------------------------------------------------------------------------------- TB file


def read_tbs(path: str | Path) -> list[tuple[int, int, int, str]]:
    """``(vaddr, n_insns, marked_insns, qemu_symbol)`` rows of the plugin's ``tbs=`` file."""
    rows = []
    for line in Path(path).read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 3)
        rows.append((int(parts[0], 16), int(parts[1]), int(parts[2]), parts[3] if len(parts) > 3 else "-"))
    return rows


# -------------------------------------------------------------------------------------- families

_XNN_TYPES = {"f16", "f32", "f64", "bf16", "qs8", "qu8", "qs16", "qs32", "qc8w", "qc4w", "qb4w", "qd8", "qp8",
              "qdu8", "pf16", "pf32", "pqs8", "x8", "x16", "x24", "x32", "x64", "xx", "s8", "u8", "s16", "u16",
              "s32", "u32", "u64", "cs16", "s4", "u4", "qs4", "qu4"}
# (needle in the library's path, family), first match wins.
_LIBS = (("numpy", "numpy"), ("libopenblas", "openblas"), ("onnxruntime", "onnxruntime"), ("libc.so", "libc"),
         ("libm.so", "libm"), ("libstdc++", "libstdc++"), ("ld-linux", "ld.so"), ("libgcc_s", "libgcc"),
         ("libpthread", "libc"), ("python3", "python"), ("libpython", "python"))


def _mangled_scope(name: str) -> list[str]:
    """Leading namespace/class names of an Itanium-mangled ``_ZN...`` name (no demangler needed)."""
    if not name.startswith("_ZN"):
        return []
    i, out = 3, []
    while i < len(name) and name[i] in "KVrL":
        i += 1
    while i < len(name) and name[i].isdigit():
        j = i
        while j < len(name) and name[j].isdigit():
            j += 1
        n = int(name[i:j])
        out.append(name[j:j + n])
        i = j + n
        if i < len(name) and name[i] in "IE":
            break
    return out


def family_of(symbol: str, library: str) -> str:
    """The kernel family a symbol belongs to (see the module docstring)."""
    lib = os.path.basename(library)
    if symbol.startswith("unknown"):
        return f"unknown ({lib or 'no mapping'})"
    if symbol == PLT_NAME:
        return "PLT stubs"
    if symbol.startswith("xnn_"):
        if "ukernel" in symbol:
            tokens = symbol.split("__")[0].split("_")[1:]
            kept = []
            for tok in tokens:
                kept.append(tok)
                if tok not in _XNN_TYPES:
                    break
            return "xnn_" + "_".join(kept)
        return "xnnpack (operator/runtime code)"
    if symbol.startswith(("pytorch_", "cpuinfo_")):
        return symbol.split("_")[0]
    scope = _mangled_scope(symbol)
    if scope and scope[0] in ("tflite", "litert"):
        depth = 4 if scope[1:3] == ["ops", "builtin"] else 2
        keep = [s for s in scope[:depth] if not s.startswith("_")]
        return "::".join(keep)
    if scope and scope[0] in ("ruy", "gemmlowp", "Eigen", "onnxruntime", "MlasGemm", "absl"):
        return scope[0]
    if symbol.startswith("Mlas") or "Mlas" in symbol[:12]:
        return "onnxruntime (MLAS)"
    for needle, fam in _LIBS:
        if needle in library:
            return fam
    return lib or "unknown"


# ------------------------------------------------------------------------------------- attribution


class Symbolizer:
    """Address -> (library, function) for one guest process, from its maps; ELF tables cached."""

    def __init__(self, maps_text: str, root: Path | None = None) -> None:
        self.maps = parse_maps(maps_text)
        self.starts = [m.start for m in self.maps]
        self.root = root
        self.elves: dict[str, ElfSymbols] = {}

    def _elf(self, path: str) -> ElfSymbols:
        if path not in self.elves:
            self.elves[path] = read_elf_symbols(host_path(path, self.root))
        return self.elves[path]

    def resolve(self, vaddr: int) -> tuple[str, str]:
        i = bisect.bisect_right(self.starts, vaddr) - 1
        if i < 0 or vaddr >= self.maps[i].end:
            return "", "unknown (no mapping)"
        m = self.maps[i]
        elf = self._elf(m.path)
        link = elf.file_offset_to_vaddr(m.offset + (vaddr - m.start))
        name = elf.lookup(link)
        return m.path, name if name else f"unknown ({os.path.basename(m.path)})"

    def tables(self) -> dict[str, str]:
        """Which symbol table each library that was used came from (``symtab``/``dynsym``/``none``)."""
        return {os.path.basename(p): e.table for p, e in self.elves.items()}


def demangle(names: Iterable[str]) -> dict[str, str]:
    """C++ names made readable with ``c++filt`` when the host has it (else unchanged)."""
    names = [n for n in names if n.startswith("_Z")]
    tool = shutil.which("c++filt")
    if not names or tool is None:
        return {}
    try:
        done = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    out = done.stdout.splitlines()
    return dict(zip(names, out, strict=True)) if len(out) == len(names) else {}


def _short(name: str, limit: int = 110) -> str:
    name = re.sub(r"\s+", " ", name)
    return name if len(name) <= limit else name[:limit - 3] + "..."


def symbol_profile(tbs: list[tuple[int, int, int, str]], maps_text: str, runs: int, marked_total: int,
                   root: Path | None = None) -> dict[str, Any]:
    """The per-symbol instruction profile of one emulated run (per inference), with families.

    ``rows`` holds every symbol that ran (largest first), ``by_family`` the family sums; both are per
    inference (the marked count divided by ``runs``). ``sum_check`` compares the rows' sum with the
    plugin's marked count.
    """
    sym = Symbolizer(maps_text, root)
    per: dict[tuple[str, str], int] = {}
    qemu_named = 0
    for vaddr, _n, marked, qname in tbs:
        lib, name = sym.resolve(vaddr)
        per[(lib, name)] = per.get((lib, name), 0) + marked
        if qname != "-":
            qemu_named += marked
    total = sum(per.values())
    readable = demangle(name for (_lib, name) in per)
    rows = []
    for (lib, name), insns in sorted(per.items(), key=lambda kv: -kv[1]):
        rows.append({
            "name": _short(readable.get(name, name)), "symbol": name, "library": os.path.basename(lib),
            "family": family_of(name, lib), "cost": insns / runs, "share": insns / total if total else 0.0,
        })
    fams: dict[str, dict[str, Any]] = {}
    for r in rows:
        f = fams.setdefault(r["family"], {"name": r["family"], "cost": 0.0, "symbols": 0})
        f["cost"] += r["cost"]
        f["symbols"] += 1
    by_family = sorted(fams.values(), key=lambda f: -f["cost"])
    for f in by_family:
        f["share"] = f["cost"] * runs / total if total else 0.0
    unknown = sum(r["cost"] for r in rows if r["symbol"].startswith("unknown"))
    return {
        "kind": "instructions", "unit": "guest instructions per inference", "rows": rows, "by_family": by_family,
        "group_label": "kernel family", "total": total / runs, "runs": runs,
        "sum_check": {"rows_total": total, "marked_total": marked_total,
                      "ratio": total / marked_total if marked_total else None},
        "unknown_share": unknown * runs / total if total else 0.0,
        "symbol_tables": sym.tables(), "qemu_symbol_share": qemu_named / total if total else 0.0,
        "notes": [
            "each translation block is attributed to the function of its first instruction, resolved from the "
            "guest's /proc/self/maps and the libraries' ELF symbol tables (QEMU's qemu_plugin_insn_symbol names "
            f"only {100 * (qemu_named / total if total else 0):.1f}% of these instructions: it knows no "
            "shared-library symbols in user mode)",
        ],
    }
