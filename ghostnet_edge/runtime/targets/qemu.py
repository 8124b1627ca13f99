"""The ``qemu-aarch64[:CPU]`` target: the real aarch64 runtimes under QEMU user-mode emulation.

The aarch64 builds of ai-edge-litert, tflite-runtime and onnxruntime run the very ``device_runner.py``
the boards run, inside Debian's arm64 Python, under ``qemu-aarch64 -cpu CPU -L SYSROOT``; no device,
binfmt or chroot is needed, so the ARM code path (NEON/dot-product kernels, XNNPACK's aarch64
micro-kernels, the ARM int8 arithmetic) is exercised in CI.

What it reports, per artifact:

- ``instructions``: guest instructions per inference for the named CPU model, total and by class
  (SIMD/FP, load/store, other), counted by a TCG plugin between the runner's two markers (the timed
  loop only: interpreter start, imports, model loading and warm-up are left out). This is a
  deterministic, machine-independent *count*, not a time;
- ``parity`` (with :meth:`QemuTarget.run`): the outputs against a host run of the same artifact on the
  same inputs: int8 must match exactly, fp32 within float rounding.

With ``--profile`` (``config.profile``), also ``profile``: guest instructions per symbol and per
kernel family for the marked region (the plugin's per-TB counts, named on the host by
:mod:`ghostnet_edge.runtime.qemu.symbols`); the rows add up to ``per_inference`` exactly.

What it never reports: latency. Emulated wall time measures QEMU, not an ARM core (FP32 runs ~350x
slower than native, INT8 ~115x, and XNNPACK on/off take the same emulated time), so ``latency_ms`` is
always null; the emulated wall time is kept only as ``instructions["emulated_wall_s"]``.

Determinism: fixed guest environment (hash seed 0, one thread for every pool, no bytecode writes),
a precompiled sysroot, runner progress lines off inside the marked region (``qemu/guest_main.py``),
and ``--threads 1`` (the plugin's counters are exact for a single-threaded guest only). Two processes
then count the same instructions to within a handful.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from ghostnet_edge.errors import TargetError
from ghostnet_edge.runtime import protocol
from ghostnet_edge.runtime.config import BenchConfig, BenchResult
from ghostnet_edge.runtime.qemu import build as qbuild
from ghostnet_edge.runtime.qemu import sysroot as sr
from ghostnet_edge.runtime.targets.base import ProgressFn, Session, Target

if TYPE_CHECKING:
    from ghostnet_edge.runtime.artifacts import ArtifactInfo

TARGET_PREFIX = "qemu-aarch64"
GUEST_MAIN = Path(__file__).resolve().parents[1] / "qemu" / "guest_main.py"
INSTRUCTION_UNIT = "guest instructions (QEMU TCG count), not time"
# Emulation is slow: a few runs are enough for a count that repeats exactly.
DEFAULT_WARMUP = 1
DEFAULT_RUNS = 3
DEFAULT_TIMEOUT_S = 1800.0
# Host vs guest outputs. fp32 may differ by summation order / FMA contraction between the x86 and ARM
# kernels. int8 kernels are integer arithmetic, but XNNPACK's ARM and x86 kernels requantize with
# different rounding schemes, so a value can land one step apart: measured, GhostNet 0.5x CIFAR int8
# matches bit for bit and GhostNet 1.0x at 224 has 81 of 8000 logits one output step apart. So int8
# passes when exact, or when no output is more than INT8_MAX_STEPS quantization steps off.
FP32_ATOL = 1e-5
FP32_RTOL = 1e-5
INT8_MAX_STEPS = 1


# ---------------------------------------------------------------------------------------- pure parts


def parse_spec(spec: str) -> str:
    """The CPU model of ``qemu-aarch64[:CPU]`` (default Cortex-A76); ``max`` and unknown ones refused."""
    spec = (spec or "").strip()
    if spec != TARGET_PREFIX and not spec.startswith(TARGET_PREFIX + ":"):
        raise TargetError(f"not a qemu target: {spec!r}", f"use {TARGET_PREFIX} or {TARGET_PREFIX}:CPU")
    cpu = spec[len(TARGET_PREFIX) + 1:] or sr.DEFAULT_CPU
    return sr.check_cpu(cpu)


def guest_command(status: sr.SysrootStatus, cpu: str, counts_path: Path | str, runner_args: list[str],
                  tbs_path: Path | str | None = None, maps_path: Path | str | None = None) -> list[str]:
    """``qemu-aarch64 -cpu CPU -L ROOT -plugin ...,out=COUNTS ROOT/usr/bin/python3.11 guest_main.py ...``.

    With ``tbs_path`` and ``maps_path`` (``--profile``), the plugin also writes its per-TB counts and
    the guest its memory map, which :mod:`ghostnet_edge.runtime.qemu.symbols` turns into symbols.
    """
    root = status.cpu_root(cpu)
    plugin = f"{status.plugin},out={counts_path}" + (f",tbs={tbs_path}" if tbs_path else "")
    maps = ["--maps-out", str(maps_path)] if maps_path else []
    return [str(status.qemu), "-cpu", cpu, "-L", str(root), "-plugin", plugin,
            str(root / sr.GUEST_PYTHON), str(GUEST_MAIN), str(protocol.RUNNER_PATH.parent), *maps, *runner_args]


def instructions_from_counts(counts: dict[str, Any], runs: int, cpu: str) -> dict[str, Any]:
    """Per-inference instruction counts from the plugin's JSON and the number of timed runs.

    Raises TargetError when the counts cannot be trusted (markers not seen exactly once, no runs);
    a guest that ran more than one thread is flagged ``counts_exact: False`` (the plugin's counters are
    not atomic).
    """
    pairs = int(counts.get("marker_pairs", 0))
    if pairs != 1 or int(counts.get("unpaired_markers", 0)) != 0:
        raise TargetError(f"the instruction-count markers were seen {pairs} times (expected one pair; "
                          f"{counts.get('unpaired_markers', 0)} unpaired)",
                          "the guest runner must be run with --markers, once per process")
    if runs < 1:
        raise TargetError("no timed runs between the markers", "run at least one timed inference")
    marked = int(counts["marked_insns"])
    out: dict[str, Any] = {
        "per_inference": marked / runs,
        "simd_fp": int(counts["simd_fp"]) / runs,
        "load_store": int(counts["load_store"]) / runs,
        "other": int(counts["other"]) / runs,
        "cpu_model": cpu,
        "unit": INSTRUCTION_UNIT,
        "runs": runs,
        "marked_total": marked,
        "process_total": int(counts.get("total_insns", 0)),
        "guest_threads": int(counts.get("vcpus", 1)),
        "counts_exact": int(counts.get("vcpus", 1)) == 1,
    }
    return out


def parity_report(guest: Any, host: Any, precision: str, output_step: float | None = None) -> dict[str, Any]:
    """How the emulated ARM outputs compare with the host's on the same inputs.

    ``ok`` means, for int8: bit-identical, or at most ``INT8_MAX_STEPS`` output quantization steps
    (``output_step``, the output tensor's scale, when known) apart; otherwise within
    ``FP32_ATOL + FP32_RTOL * |host|``.
    """
    import numpy as np

    a, b = np.asarray(guest, np.float32), np.asarray(host, np.float32)
    if a.shape != b.shape:
        return {"against": "host", "ok": False, "n": int(b.shape[0]) if b.ndim else 1,
                "error": f"output shape {list(a.shape)} differs from the host's {list(b.shape)}"}
    diff = np.abs(a - b)
    exact = bool(np.array_equal(a, b))
    within = bool(np.all(diff <= FP32_ATOL + FP32_RTOL * np.abs(b)))
    flat_a, flat_b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    max_diff = float(diff.max()) if diff.size else 0.0
    steps = round(max_diff / output_step, 3) if output_step else None
    if precision == "int8":
        ok = exact or (steps is not None and steps <= INT8_MAX_STEPS + 1e-3)
        tolerance = f"exact, or <= {INT8_MAX_STEPS} output quantization step" if output_step else "exact"
    else:
        ok, tolerance = within, f"atol {FP32_ATOL} + rtol {FP32_RTOL}"
    return {
        "against": "host", "n": int(a.shape[0]), "precision": precision,
        "max_abs_diff": max_diff, "max_diff_steps": steps,
        "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
        "exact": exact, "differing_values": int(np.count_nonzero(a != b)), "values": int(a.size),
        "top1_agreement": float(np.mean(flat_a.argmax(1) == flat_b.argmax(1))),
        "ok": ok, "tolerance": tolerance,
    }


def emulation_config(config: Any, warmup: int, runs: int) -> Any:
    """``config`` with the run counts emulation needs: a few runs, no minimum time, no time cap."""
    changes = {"warmup": warmup, "min_runs": runs, "min_seconds": 0.0, "max_seconds": 1e9}
    if dataclasses.is_dataclass(config):
        return dataclasses.replace(config, **changes)
    return SimpleNamespace(**{**vars(config), **changes})


# ------------------------------------------------------------------------------------------- target


class QemuSession(Session):
    """Measure artifacts in the emulated guest; one qemu process per artifact."""

    def __init__(self, target: QemuTarget, status: sr.SysrootStatus) -> None:
        self.target = target
        self.status = status

    def check(self, artifacts: Any, config: Any) -> None:
        if int(getattr(config, "threads", 1)) != 1:
            raise TargetError(f"the qemu-aarch64 target counts instructions single-threaded (got --threads "
                              f"{config.threads})", "pass --threads 1; a multi-threaded guest's counts are not exact")
        if getattr(config, "runtime", "auto") == "torch":
            raise TargetError("qemu-aarch64 runs .tflite/.onnx artifacts, not PyTorch",
                              "use --runtime auto, litert, tflite-runtime or onnxruntime")

    def measure(self, artifact: ArtifactInfo, config: BenchConfig, inputs: Any = None,
                on_progress: ProgressFn | None = None) -> dict[str, Any]:
        """One emulated run: the runner's record, with ``instructions`` and without latency."""
        self.check([artifact], config)
        if artifact.path is None:
            raise TargetError(f"{artifact.spec} is not a file", "qemu-aarch64 runs .tflite/.onnx files")
        cpu = self.target.cpu
        cfg = emulation_config(config, self.target.warmup, self.target.runs)
        with tempfile.TemporaryDirectory(prefix="ghostedge-qemu-") as tmp:
            counts_path = Path(tmp) / "counts.json"
            in_path = out_path = None
            if inputs is not None:
                import numpy as np

                in_path, out_path = os.path.join(tmp, "inputs.npy"), os.path.join(tmp, "outputs.npy")
                np.save(in_path, np.asarray(inputs, dtype=np.float32))
            args = protocol.runner_args(str(Path(artifact.path).resolve()), cfg, inputs=in_path,
                                        save_outputs=out_path, markers=True, profile=False)
            profile = bool(getattr(config, "profile", False))
            tbs_path = Path(tmp) / "tbs.txt" if profile else None
            maps_path = Path(tmp) / "maps.txt" if profile else None
            argv = guest_command(self.status, cpu, counts_path, args, tbs_path, maps_path)
            done = protocol.run_streaming(argv, timeout=self.target.timeout_s, env=qbuild.guest_env(), cwd=tmp)
            rec = protocol.parse_runner_output(done)
            rec = self._finish(rec, counts_path, done.seconds)
            if profile and rec.get("status") == "ok" and rec.get("instructions"):
                rec["profile"] = self._symbol_profile(rec["instructions"], tbs_path, maps_path)
            if out_path and os.path.exists(out_path) and rec.get("status") == "ok":
                import numpy as np

                rec["outputs"] = np.load(out_path)
        return rec

    def _symbol_profile(self, instr: dict[str, Any], tbs_path: Path | None, maps_path: Path | None) -> dict[str, Any]:
        """Guest instructions per symbol for the marked region (per inference), or an ``error``."""
        from ghostnet_edge.runtime.qemu import symbols

        try:
            tbs = symbols.read_tbs(tbs_path) if tbs_path else []
            maps_text = maps_path.read_text() if maps_path else ""
        except OSError as exc:
            return {"error": f"the plugin or the guest left no per-address data ({exc})"}
        prof = symbols.symbol_profile(tbs, maps_text, int(instr["runs"]), int(instr["marked_total"]),
                                      root=self.status.cpu_root(self.target.cpu))
        prof["reference"] = {"name": "plugin's whole-inference count (marked region / runs)",
                             "value": instr["per_inference"]}
        prof["coverage"] = prof["total"] / instr["per_inference"] if instr["per_inference"] else None
        prof["cpu_model"] = self.target.cpu
        return prof

    def _finish(self, rec: dict[str, Any], counts_path: Path, seconds: float) -> dict[str, Any]:
        """Attach instruction counts; move emulated times out of the latency fields."""
        cpu = self.target.cpu
        emulated = [float(v) for v in rec.get("latencies_ms") or []]
        rec["latencies_ms"] = []            # never emulated time as latency
        rec["first_inference_ms"] = None
        rec["load_ms"] = None
        rec["peak_rss_mb"] = None           # QEMU's own memory, not the guest's
        rec["cpu"] = f"{cpu} (QEMU {self.status.qemu_version} user-mode emulation)"
        rec["latency_not_measured"] = "emulated wall time is not ARM latency; see instructions"
        if rec.get("status") != "ok":
            rec["instructions"] = None
            return rec
        try:
            counts = json.loads(counts_path.read_text())
        except (OSError, ValueError):
            rec.update(status="failed", instructions=None,
                       error="qemu exited without instruction counts (the plugin wrote nothing)")
            return rec
        runs = (rec.get("markers") or {}).get("runs_between") or len(emulated)
        try:
            instr = instructions_from_counts(counts, int(runs), cpu)
        except TargetError as exc:
            rec.update(status="failed", instructions=None, error=exc.message)
            return rec
        instr["emulated_wall_s"] = round(sum(emulated) / 1000.0, 4)
        instr["qemu_process_s"] = round(seconds, 3)
        instr["qemu_version"] = self.status.qemu_version
        rec["instructions"] = instr
        return rec


class QemuTarget(Target):
    """Emulated aarch64 with a named CPU model (default Cortex-A76; ``max`` is refused)."""

    formats = ("tflite", "onnx")

    def __init__(self, cpu: str = sr.DEFAULT_CPU, warmup: int = DEFAULT_WARMUP, runs: int = DEFAULT_RUNS,
                 timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.cpu = sr.check_cpu(cpu)
        if runs < 1 or warmup < 0:
            raise TargetError(f"qemu runs must be >= 1 and warm-up >= 0 (got {runs}, {warmup})",
                              f"e.g. runs={DEFAULT_RUNS}, warmup={DEFAULT_WARMUP}")
        self.warmup, self.runs, self.timeout_s = warmup, runs, timeout_s
        self.name = TARGET_PREFIX if self.cpu == sr.DEFAULT_CPU else f"{TARGET_PREFIX}:{self.cpu}"

    @classmethod
    def from_spec(cls, spec: str) -> QemuTarget:
        return cls(parse_spec(spec))

    @contextlib.contextmanager
    def session(self, config: Any) -> Iterator[QemuSession]:
        status = sr.check_sysroot()
        if self.cpu not in status.cpus:
            raise TargetError(f"the sysroot at {status.root} has no view for {self.cpu}", "re" + sr.build_hint())
        yield QemuSession(self, status)

    def run(self, artifact: str | Path, config: BenchConfig | None = None, samples: int = 2) -> BenchResult:
        """Instruction counts on this CPU model and output parity with a host run on the same inputs."""
        from ghostnet_edge.runtime.artifacts import inspect_artifact
        from ghostnet_edge.runtime.targets.host import HostTarget

        config = (config or BenchConfig()).validate()
        info = inspect_artifact(artifact)
        self.check_artifact(info)
        inputs, output_step = parity_inputs(info, config.runtime, samples, config.seed)
        host_cfg = dataclasses.replace(config, warmup=0, min_runs=1, min_seconds=0.0)
        with self.session(config) as session:
            session.check([info], config)
            rec = session.measure(info, config, inputs=inputs)
        parity = None
        if rec.get("outputs") is not None:
            with HostTarget().session(host_cfg) as host:
                host_rec = host.measure(info, host_cfg, inputs=inputs)
            if host_rec.get("outputs") is None:
                parity = {"against": "host", "ok": False, "error": f"host run failed: {host_rec.get('error')}"}
            else:
                parity = parity_report(rec["outputs"], host_rec["outputs"], info.precision, output_step)
        return BenchResult(
            artifact=str(info.path), format=info.format, precision=info.precision, model=info.model,
            target=self.name, runtime=rec.get("runtime"), runtime_version=rec.get("runtime_version"),
            delegate=rec.get("delegate"), threads=rec.get("threads"), cpu=rec.get("cpu"),
            input_shape=rec.get("input_shape"), size_bytes=info.size_bytes, latency_ms=None,
            first_inference_ms=None, load_ms=None, peak_rss_mb=None, instructions=rec.get("instructions"),
            parity=parity, status=rec.get("status", "failed"), error=rec.get("error"),
        )


def parity_inputs(info: ArtifactInfo, runtime: str, samples: int, seed: int) -> tuple[Any, float | None]:
    """Seeded standard-normal float32 NCHW inputs at the artifact's own input size, and its output step.

    The size comes from opening the artifact on the host with the runner's own loader, so host and
    guest are fed the very same array (no reliance on the two platforms' random generators). The
    output step is the scale of an integer output tensor (None for float outputs).
    """
    import numpy as np

    from ghostnet_edge.runtime import device_runner as dr

    try:
        model = dr.load_model(str(info.path), runtime, 1, True)
    except dr.RunnerError as exc:
        raise TargetError(f"cannot open {info.path} on the host: {exc.message}", exc.hint or None) from exc
    c, h, w = model.chw_shape()
    step = None
    out = getattr(model, "out", None)  # TFLite models: the output tensor's details
    if isinstance(out, dict) and np.dtype(out["dtype"]).kind in "iu" and out["quantization"][0]:
        step = float(out["quantization"][0])
    return np.random.default_rng(seed).standard_normal((samples, c, h, w)).astype(np.float32), step


def count_instructions(artifact: str | Path, cpu: str = sr.DEFAULT_CPU, runtime: str = "auto", *,
                       xnnpack: bool = True, runs: int = DEFAULT_RUNS, warmup: int = DEFAULT_WARMUP) -> dict[str, Any]:
    """Guest instructions per inference of ``artifact`` on ``cpu`` (for the latency benchmark).

    Returns the ``instructions`` dict (``per_inference``, ``simd_fp``, ``load_store``, ``other``,
    ``cpu_model``, ``unit``, ...) plus ``runtime``/``runtime_version``; raises TargetError when the
    target is not set up or the run failed.
    """
    from ghostnet_edge.runtime.artifacts import inspect_artifact

    config = BenchConfig(runtime=runtime, xnnpack=xnnpack, threads=1).validate()
    target = QemuTarget(cpu, warmup=warmup, runs=runs)
    info = inspect_artifact(artifact)
    target.check_artifact(info)
    with target.session(config) as session:
        rec = session.measure(info, config)
    if rec.get("status") != "ok" or not rec.get("instructions"):
        raise TargetError(f"counting instructions of {info.label} on {cpu} failed: {rec.get('error')}",
                          rec.get("hint") or "run it with `ghostedge bench --target qemu-aarch64 -v` to see more")
    return {**rec["instructions"], "runtime": rec.get("runtime"), "runtime_version": rec.get("runtime_version"),
            "delegate": rec.get("delegate")}


def available() -> bool:
    """True when qemu-user, the sysroot and the plugin are all in place."""
    return sr.available()
