"""The host side of the device runner: its command line, running it, reading what it printed.

Every target that runs ``device_runner.py`` (host subprocess, ssh boards, qemu-aarch64) goes through
these functions, so a result means the same thing wherever it was measured:

- :func:`runner_args` turns a :class:`~ghostnet_edge.runtime.config.BenchConfig` into the runner's flags;
- :func:`run_streaming` runs a command, forwarding progress lines as they arrive (a target that drops
  mid-run still leaves every line received so far);
- :func:`parse_runner_output` turns stdout/stderr into one record, rebuilding a *partial* record from
  the ``GHOSTEDGE_INFO``/``GHOSTEDGE_PARTIAL`` progress lines when the final JSON never arrived.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ghostnet_edge.runtime import device_runner as dr
from ghostnet_edge.runtime.config import BenchConfig

RUNNER_PATH = Path(dr.__file__).resolve()
INFO_PREFIX = dr.INFO_PREFIX
PARTIAL_PREFIX = dr.PARTIAL_PREFIX

ProgressFn = Callable[[int], None]


def runner_args(model: str, config: BenchConfig, *, inputs: str | None = None, save_outputs: str | None = None,
                markers: bool = False, json_out: str | None = None, profile: bool | None = None) -> list[str]:
    """The device runner's flags (after the script path) for one model and one config.

    ``profile`` (default: ``config.profile``) adds the runner's per-operator profile pass; the qemu
    target passes False (it profiles with the instruction-count plugin instead).
    """
    args = ["--model", model, "--runtime", config.runtime, "--threads", str(config.threads),
            "--warmup", str(config.warmup), "--min-runs", str(config.min_runs),
            "--min-seconds", repr(float(config.min_seconds)), "--max-seconds", repr(float(config.max_seconds)),
            "--seed", str(config.seed)]
    if not config.xnnpack:
        args.append("--no-xnnpack")
    if inputs:
        args += ["--inputs", inputs]
    if save_outputs:
        args += ["--save-outputs", save_outputs]
    if markers:
        args.append("--markers")
    if getattr(config, "profile", False) if profile is None else profile:
        args += ["--profile", "--profile-runs", str(int(getattr(config, "profile_runs", 20)))]
    if json_out:
        args += ["--json", json_out]
    return args


@dataclass
class Completed:
    """What a runner command left behind."""

    returncode: int | None       # None: killed by the harness after its time limit
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False


def run_streaming(argv: Sequence[str], timeout: float, on_progress: ProgressFn | None = None,
                  env: dict[str, str] | None = None, cwd: str | Path | None = None) -> Completed:
    """Run ``argv``; stderr is read line by line so ``on_progress(runs_so_far)`` can follow the run.

    The process is killed after ``timeout`` seconds (what it printed is kept). stdin is closed so an
    ssh that would ask a question fails instead of hanging.
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, errors="replace", env=env, cwd=cwd)
    err_lines: list[str] = []
    out_chunks: list[str] = []
    runs = [0]

    def read_err() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            err_lines.append(line)
            if on_progress is not None and line.startswith(PARTIAL_PREFIX):
                try:
                    chunk = json.loads(line[len(PARTIAL_PREFIX):])
                    runs[0] = int(chunk["offset"]) + len(chunk["latencies_ns"])
                    on_progress(runs[0])
                except (ValueError, KeyError, TypeError):
                    pass

    def read_out() -> None:
        assert proc.stdout is not None
        out_chunks.append(proc.stdout.read())

    threads = [threading.Thread(target=read_err, daemon=True), threading.Thread(target=read_out, daemon=True)]
    for t in threads:
        t.start()
    timed_out = False
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        proc.kill()
        proc.wait()
    except BaseException:  # Ctrl-C: do not leave the runner behind
        proc.kill()
        proc.wait()
        raise
    for t in threads:
        t.join(timeout=5)
    return Completed(None if timed_out else proc.returncode, "".join(out_chunks), "".join(err_lines),
                     time.perf_counter() - t0, timed_out)


def _last_json_object(text: str) -> dict[str, Any] | None:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict) and "ghostedge_runner" in obj:
                return obj
    return None


def partial_from_progress(stderr: str) -> dict[str, Any] | None:
    """A record rebuilt from progress lines, or None when the runner never got to timing."""
    info: dict[str, Any] | None = None
    lat_ns: list[int] = []
    for line in stderr.splitlines():
        try:
            if line.startswith(INFO_PREFIX):
                info = json.loads(line[len(INFO_PREFIX):])
            elif line.startswith(PARTIAL_PREFIX):
                chunk = json.loads(line[len(PARTIAL_PREFIX):])
                offset = int(chunk["offset"])
                # Chunks arrive in order; an offset that does not line up means lines were lost.
                if offset == len(lat_ns):
                    lat_ns.extend(int(v) for v in chunk["latencies_ns"])
        except (ValueError, KeyError, TypeError):
            continue  # a line cut off by the disconnect
    if info is None:
        return None
    rec = dict(info)
    rec.update(ghostedge_runner=dr.RESULT_VERSION, status="partial" if lat_ns else "failed",
               latencies_ms=[v / 1e6 for v in lat_ns], first_inference_ms=None, peak_rss_mb=None,
               markers=None)
    return rec


def stderr_tail(stderr: str, lines: int = 6) -> str:
    """The last meaningful stderr lines (progress lines left out), for error messages."""
    keep = [ln for ln in stderr.strip().splitlines()
            if ln.strip() and not ln.startswith((INFO_PREFIX, PARTIAL_PREFIX))]
    return " | ".join(keep[-lines:])


def parse_runner_output(done: Completed) -> dict[str, Any]:
    """One record from a runner run: its final JSON, else a partial one from progress lines.

    The record always has ``status`` ("ok" | "partial" | "failed") and ``error``; a failed record
    also carries ``hint``/``kind`` when the runner itself explained the failure.
    """
    rec = _last_json_object(done.stdout)
    if rec is not None:
        return rec
    rec = partial_from_progress(done.stderr)
    why = "timed out" if done.timed_out else f"exited with status {done.returncode}"
    tail = stderr_tail(done.stderr)
    if rec is not None:
        n = len(rec["latencies_ms"])
        rec["error"] = f"the runner stopped before finishing ({why}) after {n} timed runs" + (f": {tail}" if tail else "")
        rec["kind"] = "disconnected"
        return rec
    return {"ghostedge_runner": dr.RESULT_VERSION, "status": "failed", "kind": "crashed",
            "error": f"the runner {why} without a result" + (f": {tail}" if tail else ""), "hint": None,
            "latencies_ms": []}
