"""Build the aarch64 sysroot and the instruction-count plugin the ``qemu-aarch64`` target needs.

    bash scripts/build_sysroot.sh [--force] [--no-apt]
    python -m ghostnet_edge.runtime.qemu.build [--force] [--no-apt]

Idempotent and quick when nothing changed: the sysroot carries a stamp with the hash of its recipe
(:func:`ghostnet_edge.runtime.qemu.sysroot.recipe`) and is rebuilt only when the recipe changes; the
plugin's file name carries the hash of its C source. A build is staged in a temporary folder next to
the final one and renamed into place, so a crash or Ctrl-C never leaves a half-built sysroot where the
target would use it; a lock file keeps two concurrent builds (two CI jobs) from racing.

Steps: qemu-user (apt-get, only when ``qemu-aarch64`` is missing), ``dpkg --add-architecture arm64``
and ``apt-get update`` (only when arm64 packages are not known yet), ``apt-get download`` of the exact
arm64 .debs (``dpkg -x``, never installed), the aarch64 wheels (``pip download --platform`` +
``pip install --target --no-deps``), ARM cpuinfo per CPU model, precompiled bytecode, a smoke test of
every runtime under emulation, and the plugin (gcc against our API v1 header).

Stdlib only (plus ``pip`` run as a subprocess of this interpreter).
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import json
import os
import py_compile
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ghostnet_edge.errors import TargetError
from ghostnet_edge.runtime.qemu import sysroot as sr
from ghostnet_edge.utils.atomic import atomic_dir, ensure_writable_dir, file_lock

Log = Callable[[str], None]
APT_LOCK_TIMEOUT_S = 300
# Top-level folders of the root that CPU views link to (proc/ and sys/ are per view).
SHARED_TOP = ("etc", "lib", "usr", "opt")
SMOKE_SCRIPT = r"""
import json, sys
mods = {"numpy": "numpy", "litert": "ai_edge_litert.interpreter", "tflite-runtime": "tflite_runtime.interpreter",
        "onnxruntime": "onnxruntime"}
out = {"python": sys.version.split()[0]}
for key, mod in mods.items():
    m = __import__(mod, fromlist=["__name__"])
    top = sys.modules[mod.split(".")[0]]
    out[key] = str(getattr(top, "__version__", None) or getattr(m, "__version__", "imported"))
print(json.dumps(out))
"""
MARKER_SCRIPT = r"""
import os
def mark(fd):
    try:
        os.lseek(fd, 0, 0)
    except OSError:
        pass
mark(-1000001)
total = sum(range(1000))
mark(-1000002)
"""


@dataclass
class BuildReport:
    """What a build did and what it left."""

    root: Path
    plugin: Path
    built_root: bool
    built_plugin: bool
    seconds: float
    size_bytes: int
    steps: dict[str, float] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ helpers


def _run(argv: Sequence[str], what: str, cwd: Path | None = None, env: dict[str, str] | None = None,
         timeout: float = 900) -> str:
    """Run a command; on failure raise TargetError with its last output lines."""
    try:
        proc = subprocess.run(list(argv), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                              check=False)
    except FileNotFoundError as exc:
        raise TargetError(f"{what}: {argv[0]} is not installed", f"install {argv[0]} and retry") from exc
    except subprocess.TimeoutExpired as exc:
        raise TargetError(f"{what}: timed out after {timeout:.0f} s", "check the network and retry") from exc
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise TargetError(f"{what} failed (exit {proc.returncode}): {tail}",
                          "fix the cause above and re-run " + sr.BUILD_COMMAND)
    return proc.stdout


def _privileged() -> list[str] | None:
    """Prefix that runs a command as root: [] when we are root, ['sudo', '-n'] when allowed, else None."""
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True, check=False).returncode == 0:
        return ["sudo", "-n"]
    return None


def _apt_get(*args: str) -> list[str]:
    return ["apt-get", "-o", f"DPkg::Lock::Timeout={APT_LOCK_TIMEOUT_S}", *args]


def tree_size(path: Path) -> int:
    """Bytes of all regular files under ``path`` (symlinks not followed)."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(dirpath, name))
                if not os.path.islink(os.path.join(dirpath, name)):
                    total += st.st_size
    return total


# ------------------------------------------------------------------------------------- system parts


def ensure_qemu(allow_apt: bool, log: Log) -> None:
    """Install Debian's qemu-user when ``qemu-aarch64`` is missing (and we may)."""
    if shutil.which("qemu-aarch64"):
        return
    prefix = _privileged() if allow_apt else None
    if prefix is None:
        raise TargetError("qemu-aarch64 is not installed and this build may not install it",
                          "install it: sudo apt-get install qemu-user  (then re-run " + sr.BUILD_COMMAND + ")")
    log("installing Debian's qemu-user (qemu-aarch64 is missing)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    _run(prefix + _apt_get("update", "-qq"), "apt-get update", env=env)
    _run(prefix + _apt_get("install", "-y", "-qq", "--no-install-recommends", "qemu-user"),
         "apt-get install qemu-user", env=env)


def ensure_gcc(allow_apt: bool, log: Log) -> str:
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if cc:
        return cc
    prefix = _privileged() if allow_apt else None
    if prefix is None:
        raise TargetError("no C compiler (gcc) to build the qemu instruction-count plugin",
                          "install it: sudo apt-get install gcc")
    log("installing gcc (to build the qemu plugin)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    _run(prefix + _apt_get("install", "-y", "-qq", "--no-install-recommends", "gcc", "libc6-dev"),
         "apt-get install gcc", env=env)
    return shutil.which("gcc") or "gcc"


def parse_policy_candidates(text: str) -> dict[str, str | None]:
    """``{package: candidate version or None}`` from ``apt-cache policy a:arm64 b:arm64 ...`` output."""
    out: dict[str, str | None] = {}
    current = None
    for line in text.splitlines():
        if line and not line[0].isspace() and line.rstrip().endswith(":"):
            current = line.rstrip()[:-1].split(":")[0]
            out[current] = None
        elif current and line.strip().startswith("Candidate:"):
            value = line.split(":", 1)[1].strip()
            out[current] = None if value in ("(none)", "") else value
    return out


def resolve_debs(packages: Sequence[str], allow_apt: bool, log: Log) -> dict[str, str]:
    """Exact arm64 versions of ``packages``; adds the arm64 architecture and updates apt only if needed."""
    foreign = _run(["dpkg", "--print-foreign-architectures"], "dpkg --print-foreign-architectures").split()
    names = [f"{p}:arm64" for p in packages]

    def candidates() -> dict[str, str | None]:
        got = parse_policy_candidates(_run(["apt-cache", "policy", *names], "apt-cache policy"))
        return {p: got.get(p) for p in packages}

    found = candidates() if "arm64" in foreign else dict.fromkeys(packages)
    if any(v is None for v in found.values()):
        prefix = _privileged() if allow_apt else None
        if prefix is None:
            raise TargetError("apt does not know the arm64 packages the sysroot needs",
                              "run as root once: dpkg --add-architecture arm64 && apt-get update  (then re-run "
                              + sr.BUILD_COMMAND + ")")
        if "arm64" not in foreign:
            log("adding the arm64 architecture to dpkg (packages are only downloaded, never installed)")
            _run(prefix + ["dpkg", "--add-architecture", "arm64"], "dpkg --add-architecture arm64")
        log("apt-get update (arm64 package lists)")
        _run(prefix + _apt_get("update", "-qq"), "apt-get update")
        found = candidates()
    missing = [p for p, v in found.items() if v is None]
    if missing:
        raise TargetError(f"apt has no arm64 candidate for: {', '.join(missing)}",
                          "this recipe is for Debian 12 (bookworm); check /etc/apt/sources.list*")
    return {p: str(v) for p, v in found.items()}


def download_debs(versions: dict[str, str], dest: Path) -> list[Path]:
    """``apt-get download`` the exact versions into ``dest`` (works without root)."""
    args = _apt_get("download", *[f"{p}:arm64={v}" for p, v in versions.items()])
    if os.geteuid() == 0:
        args[1:1] = ["-o", "APT::Sandbox::User=root"]  # no _apt user sandbox warning for a private dir
    _run(args, "apt-get download (arm64 .debs)", cwd=dest)
    debs = sorted(dest.glob("*.deb"))
    if len(debs) != len(versions):
        raise TargetError(f"apt-get download left {len(debs)} .debs for {len(versions)} packages",
                          "re-run " + sr.BUILD_COMMAND)
    return debs


def pip_platform_args() -> list[str]:
    args = ["--only-binary=:all:", "--python-version", sr.GUEST_PYTHON_VERSION, "--implementation", "cp",
            "--abi", "cp" + sr.GUEST_PYTHON_VERSION.replace(".", "")]
    for plat in sr.WHEEL_PLATFORMS:
        args += ["--platform", plat]
    return args


def install_wheels(site: Path, downloads: Path) -> list[str]:
    """Download the pinned aarch64 wheels and unpack them into ``site``; returns the wheel file names."""
    pins = [f"{name}=={version}" for name, version in sr.GUEST_WHEELS.items()]
    pip = [sys.executable, "-m", "pip"]
    _run(pip + ["download", "-q", "--no-deps", "--dest", str(downloads), *pip_platform_args(), *pins],
         "pip download (aarch64 wheels)")
    wheels = sorted(downloads.glob("*.whl"))
    if len(wheels) != len(pins):
        raise TargetError(f"pip downloaded {len(wheels)} wheels for {len(pins)} pins", "re-run " + sr.BUILD_COMMAND)
    # --no-compile: we compile everything ourselves below, deterministically and under guest paths.
    _run(pip + ["install", "-q", "--no-deps", "--no-compile", "--target", str(site), *pip_platform_args(),
                *map(str, wheels)], "pip install --target (aarch64 wheels)")
    return [w.name for w in wheels]


def write_cpu_files(root: Path, cpu: str) -> None:
    """``proc/cpuinfo`` and ``sys/devices/system/cpu/*`` for ``cpu`` under ``root``."""
    (root / "proc").mkdir(parents=True, exist_ok=True)
    (root / "proc" / "cpuinfo").write_text(sr.cpuinfo_text(cpu))
    cpu_dir = root / "sys" / "devices" / "system" / "cpu"
    cpu_dir.mkdir(parents=True, exist_ok=True)
    for name in ("possible", "present", "online"):
        (cpu_dir / name).write_text(f"0-{sr.N_CORES - 1}\n")


def make_cpu_views(root: Path) -> None:
    """One folder per non-default CPU model: symlinks to the shared tree, its own proc/ and sys/."""
    for cpu in sr.CPU_MODELS:
        if cpu == sr.DEFAULT_CPU:
            continue
        view = root / sr.VIEWS_DIR / cpu
        view.mkdir(parents=True)
        for top in SHARED_TOP:
            if (root / top).exists():
                # Relative links: the root is renamed into place after it is built.
                os.symlink(os.path.join("..", "..", top), view / top)
        write_cpu_files(view, cpu)


def precompile(root: Path) -> dict[str, Any]:
    """Compile every ``.py`` of the guest stdlib and site to unchecked-hash ``.pyc``.

    Why: a guest that compiles on import spends its first runs compiling (and writes into the
    sysroot), so instruction counts would depend on the run's history. Python 3.11 bytecode is
    portable across 3.11.x and architectures, so the host's 3.11 compiles it; the recorded file names
    are the guest paths (``ddir``), so the result does not depend on where the cache is. Unchecked-hash
    pycs never look at source mtimes. Files that are not valid Python 3 (lib2to3 test data) are
    skipped.
    """
    if sys.version_info[:2] != tuple(int(v) for v in sr.GUEST_PYTHON_VERSION.split(".")):
        raise TargetError(f"the sysroot build needs Python {sr.GUEST_PYTHON_VERSION} to precompile the guest's "
                          f"bytecode (this is {sys.version.split()[0]})",
                          "run it with the project's virtualenv: .venv/bin/python -m ghostnet_edge.runtime.qemu.build")
    mode = py_compile.PycInvalidationMode.UNCHECKED_HASH
    ok = {}
    for rel in (f"usr/lib/python{sr.GUEST_PYTHON_VERSION}", sr.GUEST_SITE.lstrip("/")):
        ok[rel] = compileall.compile_dir(str(root / rel), ddir="/" + rel, quiet=2, workers=0,
                                         invalidation_mode=mode)
    return {"all_compiled": all(ok.values()), "pyc_files": count_pyc(root)}


def count_pyc(root: Path) -> int:
    return sum(1 for _ in root.rglob("*.pyc"))


def guest_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """A clean, fixed environment for guest processes (QEMU passes it through to the guest).

    Fixed hash seed and one thread for every pool, so runs repeat instruction for instruction;
    nothing from the host's environment (QEMU_* variables, PYTHON*) leaks in.
    """
    env = {
        "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp",
        "PYTHONPATH": sr.GUEST_SITE, "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    env.update(extra or {})
    return env


def smoke_test(root: Path, qemu: str) -> dict[str, str]:
    """Import every runtime under emulation; fail if the guest had to compile anything.

    Bytecode writing is left on here on purpose: a .pyc that appears means precompilation missed it.
    """
    before = count_pyc(root)
    env = guest_env()
    env.pop("PYTHONDONTWRITEBYTECODE")
    out = _run([qemu, "-cpu", sr.DEFAULT_CPU, "-L", str(root), str(root / sr.GUEST_PYTHON), "-c", SMOKE_SCRIPT],
               "importing the runtimes under qemu-aarch64", env=env, timeout=300)
    after = count_pyc(root)
    if after != before:
        raise TargetError(f"the guest compiled {after - before} modules that precompilation missed",
                          "report this; the instruction counts would not repeat")
    return json.loads(out.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------- plugin


def build_plugin(cc: str, out: Path) -> None:
    """gcc -shared -fPIC -O2 the plugin into ``out`` (written to a temporary name, then renamed)."""
    src = sr.plugin_source_dir()
    ensure_writable_dir(out.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".so", dir=out.parent)
    os.close(fd)
    try:
        _run([cc, "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-I", str(src),
              "-o", tmp, str(src / "insn_count.c")], "building the qemu plugin")
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def check_plugin(root: Path, qemu: str, plugin: Path) -> dict[str, Any]:
    """Run a marker script under the plugin; the counts must be there, the markers paired, and the
    per-TB counts (``tbs=``, what ``--profile`` uses) must add up to the marked count exactly."""
    with tempfile.TemporaryDirectory(prefix="ghostedge-plugin-") as tmp:
        out, tbs = Path(tmp) / "counts.json", Path(tmp) / "tbs.txt"
        _run([qemu, "-cpu", sr.DEFAULT_CPU, "-L", str(root), "-plugin", f"{plugin},out={out},tbs={tbs}",
              str(root / sr.GUEST_PYTHON), "-c", MARKER_SCRIPT], "running the qemu plugin", env=guest_env(),
             timeout=300)
        try:
            counts = json.loads(out.read_text())
            tb_lines = [ln.split() for ln in tbs.read_text().splitlines() if ln and not ln.startswith("#")]
        except (OSError, ValueError) as exc:
            raise TargetError(f"the qemu plugin wrote no counts ({exc})",
                              "this qemu-aarch64 may lack plugin support (--enable-plugins); use Debian's qemu-user 7.2"
                              ) from exc
    if counts.get("marker_pairs") != 1 or not counts.get("marked_insns"):
        raise TargetError(f"the qemu plugin did not see the markers: {counts}", "report this")
    tb_sum = sum(int(parts[2]) for parts in tb_lines)
    if tb_sum != counts["marked_insns"] or counts.get("tb_marked_insns") != counts["marked_insns"]:
        raise TargetError(f"the qemu plugin's per-TB counts ({tb_sum}) do not add up to its marked count "
                          f"({counts['marked_insns']})", "report this")
    return counts


# -------------------------------------------------------------------------------------------- build


def root_is_current(root: Path) -> bool:
    stamp = sr.read_stamp(root)
    return bool(stamp and stamp.get("recipe_hash") == sr.recipe_hash() and (root / sr.GUEST_PYTHON).is_file())


def build_root(root: Path, qemu: str, allow_apt: bool, log: Log, steps: dict[str, float]) -> dict[str, Any]:
    """Build the sysroot into a staging folder and rename it over ``root``; returns its manifest."""
    t = time.perf_counter()

    def step(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        steps[name] = round(now - t, 2)
        log(f"  {name}: {now - t:.1f} s")
        t = now

    versions = resolve_debs(sr.DEBIAN_PACKAGES, allow_apt, log)
    step("resolve arm64 packages")
    with tempfile.TemporaryDirectory(prefix="ghostedge-sysroot-dl-") as dl, atomic_dir(root, force=True) as staging:
        debs = download_debs(versions, Path(dl))
        step(f"apt-get download {len(debs)} .debs")
        for deb in debs:
            _run(["dpkg", "-x", str(deb), str(staging)], f"dpkg -x {deb.name}")
        step("dpkg -x")
        wheels_dir = Path(dl) / "wheels"
        wheels_dir.mkdir()
        wheels = install_wheels(staging / sr.GUEST_SITE.lstrip("/"), wheels_dir)
        step(f"aarch64 wheels ({len(wheels)})")
        write_cpu_files(staging, sr.DEFAULT_CPU)
        make_cpu_views(staging)
        compiled = precompile(staging)
        step(f"precompile ({compiled['pyc_files']} .pyc)")
        versions_seen = smoke_test(staging, qemu)
        step("smoke test under qemu")
        manifest = {
            "recipe_hash": sr.recipe_hash(), "recipe": sr.recipe(), "debs": versions, "wheels": wheels,
            "guest": versions_seen, "precompiled": compiled, "qemu": qemu,
            "built_by_python": sys.version.split()[0], "size_bytes": tree_size(staging),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        # The stamp goes in last: a root without it is treated as incomplete.
        (staging / sr.STAMP_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def build_sysroot(force: bool = False, allow_apt: bool = True, log: Log = print) -> BuildReport:
    """Make sure the sysroot and the plugin exist and are current; build what is missing."""
    t0 = time.perf_counter()
    steps: dict[str, float] = {}
    root, plugin = sr.sysroot_dir(), sr.plugin_path()
    # two builds at once would download and rename over each other
    with file_lock(root.parent / ".sysroot-aarch64.lock"):
        ensure_qemu(allow_apt, log)
        qemu, qemu_version = sr.find_qemu()
        built_root = force or not root_is_current(root)
        if built_root:
            log(f"building the aarch64 sysroot in {root} (recipe {sr.recipe_hash()}, qemu {qemu_version})")
            manifest = build_root(root, str(qemu), allow_apt, log, steps)
        else:
            manifest = sr.read_stamp(root) or {}
            log(f"aarch64 sysroot up to date: {root} (recipe {sr.recipe_hash()})")
        built_plugin = force or not plugin.is_file()
        if built_plugin:
            t = time.perf_counter()
            build_plugin(ensure_gcc(allow_apt, log), plugin)
            steps["plugin"] = round(time.perf_counter() - t, 2)
            log(f"  built the instruction-count plugin {plugin}")
        t = time.perf_counter()
        counts = check_plugin(root, str(qemu), plugin)
        steps["plugin check"] = round(time.perf_counter() - t, 2)
        log(f"  plugin check: {counts['marked_insns']} guest instructions between the markers")
    size = int(manifest.get("size_bytes") or tree_size(root))
    return BuildReport(root=root, plugin=plugin, built_root=built_root, built_plugin=built_plugin,
                       seconds=time.perf_counter() - t0, size_bytes=size, steps=steps, manifest=manifest)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="build_sysroot", description=__doc__.split("\n\n")[0])
    parser.add_argument("--force", action="store_true", help="rebuild even when the stamp says it is current")
    parser.add_argument("--no-apt", action="store_true",
                        help="never run apt-get/dpkg as root (fail with the commands to run instead)")
    args = parser.parse_args(argv)

    def log(msg: str) -> None:
        print(f"[sysroot] {msg}", flush=True)

    try:
        rep = build_sysroot(force=args.force, allow_apt=not args.no_apt, log=log)
    except TargetError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    what = "built" if rep.built_root else "reused"
    guest = rep.manifest.get("guest", {})
    log(f"{what} {rep.root} ({rep.size_bytes / 1e6:.0f} MB; python {guest.get('python')}, numpy "
        f"{guest.get('numpy')}, litert {guest.get('litert')}, onnxruntime {guest.get('onnxruntime')}, "
        f"tflite-runtime {guest.get('tflite-runtime')}); plugin {rep.plugin.name}; {rep.seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
