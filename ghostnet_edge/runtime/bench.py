"""``bench``: latency of artifacts on a target, as :class:`BenchResult` records the curve reads.

For each artifact: open the target once (copy the runner, check the device), measure, and when the
coefficient of variation is above ``cv_threshold`` (another process got in the way) measure again,
up to ``remeasure`` more times, keeping the steadiest attempt. Every attempt's CV is kept in the
result so a reader can see how noisy the machine was.

JSON written by ``ghostedge bench --json`` (see :func:`results_document`)::

    {"ghostedge_bench": 1, "target": ..., "config": {...}, "machine": {...}, "versions": {...},
     "results": [BenchResult.to_dict(), ...]}

one BenchResult::

    {"artifact", "format": "tflite|onnx|torch", "precision": "fp32|int8|fp16|unknown", "model",
     "target", "runtime", "runtime_version", "delegate", "threads", "cpu", "input_shape",
     "size_bytes", "latency_ms": {"p50","p90","p99","mean","std","cv","n","min","max"} | null,
     "first_inference_ms", "load_ms", "peak_rss_mb", "noisy", "remeasured", "attempt_cvs",
     "instructions": null | {...}, "parity": null | {...}, "profile": null | {...},
     "status": "ok|partial|failed", "error"}

``profile`` (``--profile``) is the per-operator profile of :mod:`ghostnet_edge.runtime.profile`:
time per node on the host and on boards, guest instructions per symbol on qemu-aarch64. It is taken
once per artifact (on the first attempt; a re-measurement for noise does not profile again).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ghostnet_edge.errors import GhostEdgeError
from ghostnet_edge.runtime import stats

# The config and result types live in runtime.config so the targets can import them without importing
# this module (which imports the targets); the redundant aliases re-export them for callers that import
# them from here.
from ghostnet_edge.runtime.config import RUNTIME_CHOICES as RUNTIME_CHOICES
from ghostnet_edge.runtime.config import BenchConfig as BenchConfig
from ghostnet_edge.runtime.config import BenchResult as BenchResult

Log = Callable[[str], None]


def result_from_record(artifact: Any, target: str, rec: dict[str, Any]) -> BenchResult:
    """A BenchResult from one runner record (device runner JSON, benchmark_model summary, partial)."""
    latency = rec.get("latency_summary") or stats.summarize(rec.get("latencies_ms") or [])
    status = rec.get("status", "failed")
    # qemu-aarch64 records carry instruction counts and deliberately no latency (emulated time is not ARM time).
    if status == "ok" and latency is None and not rec.get("instructions"):
        status = "failed"
    return BenchResult(
        artifact=str(artifact.path or artifact.spec), format=artifact.format, precision=artifact.precision,
        model=artifact.model, target=target, runtime=rec.get("runtime"),
        runtime_version=rec.get("runtime_version"), delegate=rec.get("delegate"), threads=rec.get("threads"),
        cpu=rec.get("cpu"), input_shape=rec.get("input_shape"), size_bytes=artifact.size_bytes,
        latency_ms=latency, first_inference_ms=rec.get("first_inference_ms"), load_ms=rec.get("load_ms"),
        peak_rss_mb=rec.get("peak_rss_mb"), instructions=rec.get("instructions"),
        profile=_profile_of(rec), status=status, error=rec.get("error"),
    )


def _profile_of(rec: dict[str, Any]) -> dict[str, Any] | None:
    if rec.get("profile") is None:
        return None
    from ghostnet_edge.runtime.profile import summarize

    return summarize(rec["profile"])


def parity_report(outputs: Any, reference: Any) -> dict[str, Any]:
    """How closely an artifact's outputs follow the PyTorch reference on the same inputs."""
    import numpy as np

    a, b = np.asarray(outputs, np.float32), np.asarray(reference, np.float32)
    if a.shape != b.shape:
        return {"n": int(b.shape[0]), "error": f"output shape {list(a.shape)} differs from reference {list(b.shape)}"}
    diff = np.abs(a - b)
    return {"n": int(a.shape[0]), "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
            "top1_agreement": float(np.mean(a.argmax(1) == b.argmax(1)))}


def _reference_outputs(reference: str, n: int, seed: int, threads: int) -> tuple[Any, Any]:
    """Seeded inputs at the reference model's size, and the reference's eager outputs on them."""
    import numpy as np

    from ghostnet_edge.runtime.backends import load_runner

    ref = load_runner(reference, runtime="torch", threads=threads)
    x = np.random.default_rng(seed).standard_normal((n, *ref.input_size)).astype(np.float32)
    return x, ref.run(x)


def measure_artifact(session: Any, artifact: Any, target_name: str, config: BenchConfig,
                     inputs: Any = None, reference_out: Any = None, log: Log | None = None,
                     progress: Callable[[int], None] | None = None) -> BenchResult:
    """Measure once, re-measure while noisy, keep the steadiest attempt."""
    attempts: list[BenchResult] = []
    records: list[dict[str, Any]] = []
    profile = None
    for attempt in range(config.remeasure + 1):
        # The per-operator profile is taken once, with the first attempt.
        cfg = config if attempt == 0 or not getattr(config, "profile", False) else replace(config, profile=False)
        rec = session.measure(artifact, cfg, inputs=inputs if attempt == 0 else None, on_progress=progress)
        res = result_from_record(artifact, target_name, rec)
        records.append(rec)
        attempts.append(res)
        if attempt == 0:
            profile = res.profile
        if res.status != "ok" or not stats.is_noisy(res.latency_ms, config.cv_threshold):
            break
        if log and attempt < config.remeasure:
            log(f"  {artifact.label}: CV {res.latency_ms['cv']:.3f} > {config.cv_threshold} - measuring again")
    # The steadiest complete attempt wins; a re-measurement that failed (device gone) does not
    # throw away an earlier complete one.
    complete = [i for i, a in enumerate(attempts) if a.status == "ok" and a.latency_ms is not None]
    best = complete[stats.steadiest([attempts[i].latency_ms for i in complete])] if complete else len(attempts) - 1
    result = attempts[best]
    if profile is None and getattr(config, "profile", False) and attempts[0].status == "ok":
        profile = {"error": f"target {target_name} returned no per-operator profile for this runtime"}
    result.profile = profile
    result.remeasured = len(attempts) - 1
    result.attempt_cvs = [round(float(a.latency_ms["cv"]), 5) for a in attempts
                          if a.latency_ms is not None and a.latency_ms.get("cv") is not None]
    result.noisy = stats.is_noisy(result.latency_ms, config.cv_threshold)
    if reference_out is not None and records[0].get("outputs") is not None:
        result.parity = parity_report(records[0]["outputs"], reference_out)
    return result


def bench(artifacts: Sequence[str | Path], target: str = "host", config: BenchConfig | None = None,
          log: Log | None = None, progress: Callable[[int], None] | None = None) -> list[BenchResult]:
    """Latency of each artifact on ``target``; bad input raises before anything runs.

    ``progress(runs_so_far)`` follows the timed loop as the device reports it (about every 0.5 s).

    A target that cannot be opened raises TargetError; a run that dies midway becomes a result with
    status "partial" (what was measured is kept) and the remaining artifacts are still measured.
    """
    from ghostnet_edge.runtime.artifacts import inspect_artifact
    from ghostnet_edge.runtime.targets import parse_target

    config = (config or BenchConfig()).validate()
    if not artifacts:
        raise GhostEdgeError("no artifact to measure", "pass one or more .tflite/.onnx/.pt files or model names")
    tgt = parse_target(target)
    infos = [inspect_artifact(a) for a in artifacts]
    for info in infos:
        tgt.check_artifact(info)
    inputs = reference_out = None
    if config.reference:
        inputs, reference_out = _reference_outputs(config.reference, config.parity_samples, config.seed,
                                                   config.threads)
    results: list[BenchResult] = []
    with tgt.session(config) as session:
        session.check(infos, config)
        for info in infos:
            t0 = time.perf_counter()
            res = measure_artifact(session, info, tgt.name, config, inputs, reference_out, log, progress)
            results.append(res)
            if log:
                p50 = f"p50 {res.latency_ms['p50']:.3f} ms" if res.latency_ms else "no timing"
                log(f"  {info.label}: {res.status}, {p50} ({time.perf_counter() - t0:.1f} s)")
    return results


def results_document(results: Sequence[BenchResult], target: str, config: BenchConfig) -> dict[str, Any]:
    """The JSON file ``ghostedge bench --json`` writes (the curve reads ``results``)."""
    from ghostnet_edge.utils.versions import machine_description, package_versions

    return {"ghostedge_bench": 1, "target": target, "config": config.to_dict(),
            "machine": machine_description(), "versions": package_versions(),
            "results": [r.to_dict() for r in results]}
