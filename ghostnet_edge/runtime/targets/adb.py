"""The ``adb[:SERIAL]`` target: an Android phone timed by TFLite's own ``benchmark_model`` binary.

Why benchmark_model and not our Python runner: phones have no Python. The user gives the binary's
path (``--benchmark-model``; prebuilt ``android_aarch64_benchmark_model`` from the TFLite nightly
builds, see the README). A session:

1. finds the phone (``adb devices`` / ``adb -s SERIAL get-state``) and refuses an unauthorized,
   offline or ambiguous one with a hint;
2. pushes the binary to ``/data/local/tmp`` and reads each core's ``cpuinfo_max_freq`` to find the
   big cores, which ``taskset`` pins the run to (little cores would make a 1-thread number 2-3x
   slower and vary from run to run as the scheduler migrates);
3. per model: pushes it, runs ``taskset MASK benchmark_model --graph=... --num_threads --warmup_runs
   --num_runs --min_secs --max_secs --use_xnnpack``, parses the timing lines;
4. removes everything it pushed, whatever happened.

benchmark_model prints summary statistics, not per-run latencies, so ``latency_ms`` carries what it
prints: mean, std, min, max, count, and the median/p5/p95 that versions since 2.13 add (``p50`` is
that median; ``p90``/``p99`` are null). The remote command is one string for the phone's shell, built
only from ``shlex.quote``-d words.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ghostnet_edge.errors import TargetError
from ghostnet_edge.runtime import protocol
from ghostnet_edge.runtime.config import BenchConfig
from ghostnet_edge.runtime.targets.base import ProgressFn, Session, Target

if TYPE_CHECKING:
    from ghostnet_edge.runtime.artifacts import ArtifactInfo

REMOTE_DIR = "/data/local/tmp"
REMOTE_BINARY = f"{REMOTE_DIR}/ghostedge_benchmark_model"
COMMAND_TIMEOUT_S = 120.0
SETUP_ALLOWANCE_S = 300.0
README_HINT = ("download android_aarch64_benchmark_model from the TFLite nightly builds (README: "
               "'Measuring on an Android phone') and pass --benchmark-model PATH")
# A constant snippet: no user input ends up in it.
CPU_FREQ_CMD = ('for f in /sys/devices/system/cpu/cpu[0-9]*/cpufreq/cpuinfo_max_freq; '
                'do echo "$f $(cat "$f")"; done')

_NUM = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
_STAT_RE = re.compile(r"count=(\d+)(?:\s+first=" + _NUM + r")?(?:\s+curr=" + _NUM + r")?(?:\s+min=" + _NUM +
                      r")?(?:\s+max=" + _NUM + r")?(?:\s+avg=" + _NUM + r")?(?:\s+std=" + _NUM +
                      r")?(?:\s+p5=" + _NUM + r")?(?:\s+median=" + _NUM + r")?(?:\s+p95=" + _NUM + r")?")
_SUMMARY_RE = re.compile(r"Inference timings in us: Init: " + _NUM + r", First inference: " + _NUM +
                         r", Warmup \(avg\): " + _NUM + r", Inference \(avg\): " + _NUM)
# "Memory footprint delta from the start of the tool" since TF 2.5, "Peak memory footprint" before.
_MEM_RE = re.compile(r"(?:Memory footprint delta from the start of the tool|Peak memory footprint) \(MB\): init="
                     + _NUM + r" overall=" + _NUM)
_PEAK_RE = re.compile(r"Overall peak memory footprint \(MB\) via periodic monitoring: " + _NUM)
_SIZE_RE = re.compile(r"The input model file size \(MB\): " + _NUM)
_FREQ_RE = re.compile(r"/cpu(\d+)/cpufreq/cpuinfo_max_freq\s+(\d+)")


# ------------------------------------------------------------------------------------ pure parsers


def parse_stat_line(line: str) -> dict[str, float] | None:
    """``count=50 first=.. curr=.. min=.. max=.. avg=.. std=.. [p5=.. median=.. p95=..]`` (us)."""
    m = _STAT_RE.search(line)
    if not m:
        return None
    keys = ("count", "first", "curr", "min", "max", "avg", "std", "p5", "median", "p95")
    return {k: float(v) for k, v in zip(keys, m.groups(), strict=True) if v is not None}


def parse_benchmark_output(text: str) -> dict[str, Any]:
    """Everything ``benchmark_model`` printed that the harness uses; times in microseconds.

    ``warmup`` and ``inference`` are the statistics lines that follow the "Running benchmark for at
    least N iterations" lines (warm-up first, the timed runs second); ``summary`` is the "Inference
    timings in us" line, present only when the run finished.
    """
    out: dict[str, Any] = {"warmup": None, "inference": None, "summary": None, "memory": None,
                           "peak_memory_mb": None, "model_size_mb": None, "xnnpack": False}
    stat_lines = []
    for raw in text.splitlines():
        line = raw.strip()
        if "count=" in line and (stat := parse_stat_line(line)) is not None:
            stat_lines.append(stat)
        elif (m := _SUMMARY_RE.search(line)) is not None:
            out["summary"] = dict(zip(("init", "first", "warmup_avg", "inference_avg"),
                                      map(float, m.groups()), strict=True))
        elif (m := _MEM_RE.search(line)) is not None:
            out["memory"] = {"init_mb": float(m.group(1)), "overall_mb": float(m.group(2))}
        elif (m := _PEAK_RE.search(line)) is not None:
            out["peak_memory_mb"] = float(m.group(1))
        elif (m := _SIZE_RE.search(line)) is not None:
            out["model_size_mb"] = float(m.group(1))
        elif "XNNPACK delegate" in line and ("Created" in line or "applied" in line):
            out["xnnpack"] = True
    if stat_lines:
        out["warmup"] = stat_lines[0]
    if len(stat_lines) >= 2:
        out["inference"] = stat_lines[1]
    return out


def latency_from_stats(stat: dict[str, float]) -> dict[str, float | int | None]:
    """Our ``latency_ms`` block from a benchmark_model statistics line (us -> ms)."""
    ms = {k: v / 1000.0 for k, v in stat.items() if k != "count"}
    mean, std = ms.get("avg"), ms.get("std")
    return {"p50": ms.get("median"), "p90": None, "p99": None, "mean": mean, "std": std,
            "cv": (std / mean) if mean and std is not None else None, "n": int(stat["count"]),
            "min": ms.get("min"), "max": ms.get("max"), "p5": ms.get("p5"), "p95": ms.get("p95")}


def big_cores(freq_lines: str) -> list[int]:
    """Cores outside the slowest cluster (all cores when every core has the same top frequency)."""
    freqs = {int(c): int(f) for c, f in _FREQ_RE.findall(freq_lines)}
    if not freqs:
        return []
    slowest = min(freqs.values())
    big = sorted(c for c, f in freqs.items() if f > slowest)
    return big or sorted(freqs)


def cpu_mask(cores: Sequence[int]) -> str:
    """taskset's hexadecimal CPU mask for ``cores`` (``[4, 5, 6, 7]`` -> ``"f0"``)."""
    return format(sum(1 << c for c in cores), "x")


def benchmark_command(binary: str, graph: str, config: BenchConfig, mask: str | None) -> str:
    """The one shell string ``adb shell`` runs on the phone; every word quoted."""
    argv = ([ "taskset", mask] if mask else []) + [
        binary, f"--graph={graph}", f"--num_threads={config.threads}", f"--warmup_runs={config.warmup}",
        "--warmup_min_secs=0", f"--num_runs={config.min_runs}", f"--min_secs={config.min_seconds:g}",
        f"--max_secs={config.max_seconds:g}", f"--use_xnnpack={'true' if config.xnnpack else 'false'}"]
    return shlex.join(argv)


def record_from_output(text: str, config: BenchConfig, cpu: str, runtime_version: str | None,
                       stderr: str = "", returncode: int | None = 0) -> dict[str, Any]:
    """A runner record (see targets/base.py) from benchmark_model's output."""
    parsed = parse_benchmark_output(text)
    rec: dict[str, Any] = {
        "status": "ok", "error": None, "runtime": "benchmark_model", "runtime_version": runtime_version,
        "delegate": "xnnpack" if config.xnnpack and parsed["xnnpack"] else "none", "threads": config.threads,
        "cpu": cpu, "latencies_ms": [], "peak_rss_mb": parsed["peak_memory_mb"],
        "memory_footprint_mb": parsed["memory"], "load_ms": None, "first_inference_ms": None,
    }
    if parsed["summary"]:
        rec["load_ms"] = parsed["summary"]["init"] / 1000.0
        rec["first_inference_ms"] = parsed["summary"]["first"] / 1000.0
    elif parsed["warmup"] and "first" in parsed["warmup"]:
        rec["first_inference_ms"] = parsed["warmup"]["first"] / 1000.0
    if parsed["inference"]:
        rec["latency_summary"] = latency_from_stats(parsed["inference"])
    if parsed["summary"] is None:
        tail = " | ".join(ln.strip() for ln in (text + "\n" + stderr).strip().splitlines()[-2:] if ln.strip())
        rec["status"] = "partial" if parsed["warmup"] or parsed["inference"] else "failed"
        measured = ("the timed runs' statistics" if parsed["inference"] else
                    "only the warm-up" if parsed["warmup"] else "nothing")
        rec["error"] = (f"benchmark_model did not finish (exit status {returncode}); {measured} was measured"
                        + (f": {tail}" if tail else ""))
        if rec["status"] == "partial" and not parsed["inference"]:
            rec["latency_summary"] = None
    return rec


# --------------------------------------------------------------------------------------- the target


def find_adb() -> str:
    """``$GHOSTEDGE_ADB`` or ``adb`` on PATH."""
    adb = os.environ.get("GHOSTEDGE_ADB") or shutil.which("adb")
    if not adb:
        raise TargetError("adb is not installed (not on PATH)",
                          "install Android platform-tools (apt-get install adb) or set GHOSTEDGE_ADB=/path/to/adb")
    return adb


class AdbSession(Session):
    def __init__(self, target: AdbTarget, serial: str, mask: str | None, cpu: str, binary_id: str) -> None:
        self.t = target
        self.serial = serial
        self.mask = mask
        self.cpu = cpu
        self.binary_id = binary_id
        self.pushed: dict[str, str] = {}

    def measure(self, artifact: ArtifactInfo, config: BenchConfig, inputs: Any = None,
                on_progress: ProgressFn | None = None) -> dict[str, Any]:
        assert artifact.path is not None
        key = str(artifact.path.resolve())
        if key not in self.pushed:
            remote = f"{REMOTE_DIR}/ghostedge_model{len(self.pushed)}.tflite"
            try:
                self.t.push(self.serial, artifact.path, remote)
            except TargetError as exc:  # the phone went away between two models: keep earlier results
                return {"status": "failed", "error": exc.message, "latencies_ms": []}
            self.pushed[key] = remote
        cmd = benchmark_command(REMOTE_BINARY, self.pushed[key], config, self.mask)
        done = protocol.run_streaming([self.t.adb, "-s", self.serial, "shell", cmd],
                                      timeout=config.max_seconds + SETUP_ALLOWANCE_S)
        rec = record_from_output(done.stdout, config, self.cpu, self.binary_id, done.stderr,
                                 done.returncode)
        if rec["status"] != "ok" and done.returncode not in (0, None):
            rec["error"] = f"phone {self.serial} disconnected or the run failed: {rec['error']}"
        return rec

    def cleanup(self) -> str | None:
        paths = [REMOTE_BINARY, *self.pushed.values()]
        try:
            done = self.t.shell(self.serial, shlex.join(["rm", "-f", *paths]), check=False)
        except TargetError as exc:
            return exc.message
        return None if done.returncode == 0 else (done.stderr.strip() or f"exit status {done.returncode}")


class AdbTarget(Target):
    """A phone over adb; runs .tflite with benchmark_model."""

    formats = ("tflite",)

    def __init__(self, serial: str | None = None) -> None:
        self.serial = serial
        self.name = f"adb:{serial}" if serial else "adb"
        self._adb: str | None = None

    @property
    def adb(self) -> str:
        if self._adb is None:
            self._adb = find_adb()
        return self._adb

    def run_adb(self, args: Sequence[str], timeout: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess:
        try:
            return subprocess.run([self.adb, *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  errors="replace", timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise TargetError(f"adb {' '.join(args[:3])} did not answer within {timeout:.0f} s",
                              "check the USB cable / `adb devices`") from exc

    def shell(self, serial: str, command: str, check: bool = True) -> subprocess.CompletedProcess:
        done = self.run_adb(["-s", serial, "shell", command])
        if check and done.returncode != 0:
            raise TargetError(f"adb shell on {serial} failed: {(done.stderr or done.stdout).strip()[-300:]}",
                              "check `adb -s SERIAL shell` by hand")
        return done

    def push(self, serial: str, local: Path | str, remote: str) -> None:
        done = self.run_adb(["-s", serial, "push", str(local), remote], timeout=COMMAND_TIMEOUT_S + 300)
        if done.returncode != 0:
            raise TargetError(f"adb push to {serial}:{remote} failed: {(done.stderr or done.stdout).strip()[-300:]}",
                              "check free space in /data/local/tmp and that the phone is still connected")

    def resolve_serial(self) -> str:
        """The phone to use: the given serial (checked) or the only one attached."""
        if self.serial:
            done = self.run_adb(["-s", self.serial, "get-state"])
            state = done.stdout.strip()
            if done.returncode != 0 or state != "device":
                why = (done.stderr or done.stdout).strip() or state or "no answer"
                raise TargetError(f"phone {self.serial} is not available ({why})",
                                  "connect it, enable USB debugging and accept the computer's key; see `adb devices`")
            return self.serial
        done = self.run_adb(["devices"])
        rows = [ln.split() for ln in done.stdout.splitlines()[1:] if ln.strip()]
        ready = [r[0] for r in rows if len(r) >= 2 and r[1] == "device"]
        others = [f"{r[0]} ({r[1]})" for r in rows if len(r) >= 2 and r[1] != "device"]
        if len(ready) == 1:
            return ready[0]
        if not ready:
            extra = f"; attached but not usable: {', '.join(others)}" if others else ""
            raise TargetError(f"no Android phone is ready over adb{extra}",
                              "connect one with USB debugging on and accept the RSA key prompt (`adb devices`)")
        raise TargetError(f"{len(ready)} phones are attached: {', '.join(ready)}",
                          f"pick one with --target adb:{ready[0]}")

    def device_cpu(self, serial: str, cores: Sequence[int]) -> str:
        props = {}
        for prop in ("ro.product.model", "ro.soc.model", "ro.board.platform"):
            props[prop] = self.shell(serial, shlex.join(["getprop", prop]), check=False).stdout.strip()
        soc = props["ro.soc.model"] or props["ro.board.platform"]
        core_list = ",".join(str(c) for c in cores) if cores else "all"
        return f"{props['ro.product.model'] or 'Android phone'} ({soc or 'unknown SoC'}), cores {core_list}"

    @contextlib.contextmanager
    def session(self, config: BenchConfig) -> Iterator[Session]:
        binary = config.benchmark_model
        if not binary:
            raise TargetError("the adb target needs TFLite's benchmark_model binary for the phone", README_HINT)
        if not Path(binary).is_file():
            raise TargetError(f"benchmark_model binary {binary} does not exist", README_HINT)
        serial = self.resolve_serial()
        self.name = f"adb:{serial}"
        binary_id = "sha256:" + hashlib.sha256(Path(binary).read_bytes()).hexdigest()[:12]
        sess = AdbSession(self, serial, None, "", binary_id)
        try:
            self.push(serial, binary, REMOTE_BINARY)
            self.shell(serial, shlex.join(["chmod", "755", REMOTE_BINARY]))
            cores = big_cores(self.shell(serial, CPU_FREQ_CMD, check=False).stdout)
            sess.mask = cpu_mask(cores) if cores else None
            sess.cpu = self.device_cpu(serial, cores)
            yield sess
        finally:
            why = sess.cleanup()
            if why:
                print(f"warning: could not remove ghostedge files from {serial}:{REMOTE_DIR}: {why}", file=sys.stderr)
