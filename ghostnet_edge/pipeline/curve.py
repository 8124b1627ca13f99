"""``ghostedge curve``: sweep models x seeds x formats x targets into the accuracy-vs-latency curve.

The sweep is a chain of steps, each writing one output in a work folder and skipped when that output
exists, so an interrupted sweep continues where it stopped::

    work/sweep.json                            settings a resume must match (data, epochs, ...)
    work/train/<model>/seed_<s>/               checkpoint trained here (--weights: used where it is)
    work/export/<model>/seed_<s>/              ONNX + TFLite FP32/INT8 artifacts + manifest.json
    work/eval/<model>/seed_<s>/<format>.json   top-1/top-5 of one artifact on the eval split
    work/bench/<target>/<model>/<format>.json  latency (or guest instructions) of one artifact
    work/failures.jsonl                        every step that failed in the latest run, with its reason
    work/points.csv, curve.md, curve.png, curve.svg

A step that fails (a conversion that breaks, a target that drops) is recorded in ``failures.jsonl``
and the sweep goes on; the points it would have fed are written with status ``missing`` and the
reason, and the plot is drawn from whatever points exist and lists the missing ones.

Latency is a property of the architecture and the format, not of the seed: it is measured once per
(model, format, target) on the first seed's artifact and the tables say which seed that was.

What goes into the tables and the plot (notes, titles, labels) is decided here; the files themselves
are written by :func:`ghostnet_edge.report.curve.write_curve`.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ghostnet_edge.errors import GhostEdgeError
from ghostnet_edge.pipeline import stages
from ghostnet_edge.report.curve import write_curve
from ghostnet_edge.report.paper import LATENCY_ONLY_MODELS, published_accuracy
from ghostnet_edge.report.plot import PlotOptions
from ghostnet_edge.report.points import (
    DEFAULT_FORMATS,
    FORMATS,
    CurvePoint,
    TableContext,
    int8_rows,
    is_qemu_target,
)
from ghostnet_edge.utils.atomic import atomic_write_json, atomic_write_text, ensure_writable_dir
from ghostnet_edge.utils.spread import spread

Log = Callable[[str], None]

# Calibration draw d of seed s samples its images with seed s + DRAW_SEED_STEP * d: apart from every
# other seed's draws for any sweep of fewer than this many seeds.
DRAW_SEED_STEP = 1000
TRAIN_HEARTBEAT_S = 120.0  # how often parallel training says it is alive when no run has finished


def training_heartbeat(finished: int, total: int, jobs: int, elapsed_s: float) -> str:
    """One progress line for parallel training: runs done, elapsed, and a rough ETA once one finished.

    The ETA assumes the remaining runs take as long as the finished ones on average (the sweep orders
    models as given, so it is only a guide when widths differ).
    """
    line = f"  ... training: {finished}/{total} run(s) done, {jobs} at a time, {elapsed_s / 60:.1f} min elapsed"
    if finished:
        remaining = elapsed_s / finished * (total - finished)   # runs finish at the rate seen so far
        line += f", about {remaining / 60:.0f} min to go"
    return line


def _stderr_log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class CurveConfig:
    """Everything a sweep needs. Settings that change results are checked on resume (``sweep.json``)."""

    models: tuple[str, ...] = ()
    seeds: tuple[int, ...] = (0, 1, 2)
    formats: tuple[str, ...] = DEFAULT_FORMATS
    targets: tuple[str, ...] = ("host",)
    data: str = "digits"                 # "digits" | "cifar10" | a folder of class sub-folders
    work: Path = Path("runs/curve")
    epochs: int = 5
    limit_train: int | None = None       # class-balanced subset of the training split (None = all)
    limit_eval: int | None = None        # images evaluated per artifact (None = the whole eval split)
    limit_val: int | None = None         # images the training loop validates on after each epoch (monitoring)
    batch_size: int = 64
    weights: Path | None = None          # folder of given checkpoints: <model>/seed_<s>/ (skips training)
    latency_only: bool = False
    paper_overlay: bool = False
    calib: Path | None = None            # INT8 calibration images; default: the training split of `data`
                                         # (latency-only: seeded noise)
    calib_count: int = 128
    # INT8 calibration draws per seed: draw 0 calibrates with the seed itself (as with one draw), draw d
    # with seed + DRAW_SEED_STEP * d; INT8 points then spread over seeds x draws.
    calib_draws: int = 1
    bench_runs: int = 30                 # at least this many timed runs ...
    bench_seconds: float = 2.0           # ... and at least this long (host/ssh; qemu counts a few runs)
    bench_warmup: int = 5
    threads: int = 1                     # inference threads (export checks, evaluation, latency)
    train_threads: int | None = None     # training threads per run; None = every core (1 with train_jobs > 1)
    train_jobs: int = 1                  # training runs at once, each in its own process
    qemu_formats: tuple[str, ...] | None = None  # formats counted on qemu targets (None: all of `formats`)
    title: str = ""
    command: str = ""                    # recorded in curve.md; default: cli_command(config)
    extra_notes: list[str] = field(default_factory=list)

    def resume_key(self) -> dict[str, Any]:
        """Settings whose change would make finished work wrong to reuse."""
        return {"data": self.data, "epochs": self.epochs, "limit_train": self.limit_train, "limit_val": self.limit_val,
                "limit_eval": self.limit_eval, "batch_size": self.batch_size,
                "weights": str(self.weights) if self.weights else None, "latency_only": self.latency_only,
                "calib": str(self.calib) if self.calib else None, "calib_count": self.calib_count}
        # calib_draws is not in the key: more draws add folders beside the finished ones, draw 0 is unchanged


@dataclass
class Failure:
    step: str           # "train" | "export" | "eval" | "bench"
    model: str
    seed: int | None
    format: str | None
    target: str | None
    reason: str


@dataclass
class CurveResult:
    work: Path
    points: list[CurvePoint]
    failures: list[Failure]
    csv: Path
    markdown: Path
    png: Path
    svg: Path
    missing: list[str]
    counters: dict[str, int]     # "<step>_done" (ran now) and "<step>_reused" (found in the work folder)
    seconds: float


def validate_config(config: CurveConfig) -> CurveConfig:
    """Reject bad settings up front with one clear error each (before any hour of training starts)."""
    if config.latency_only and not config.models:
        config = replace(config, models=LATENCY_ONLY_MODELS)
    if not config.models:
        raise GhostEdgeError("no model to sweep", "pass --models, e.g. --models ghostnet_cifar_050,ghostnet_cifar_100")
    bad = [f for f in (*config.formats, *(config.qemu_formats or ())) if f not in FORMATS]
    if bad or not config.formats:
        raise GhostEdgeError(f"unknown format(s): {', '.join(bad) or '(none given)'}",
                             f"choose from: {', '.join(FORMATS)}")
    if not config.latency_only and not config.seeds:
        raise GhostEdgeError("no seed given", "pass --seeds, e.g. --seeds 0,1,2")
    if len(set(config.seeds)) != len(config.seeds):
        raise GhostEdgeError(f"duplicate seeds: {list(config.seeds)}", "give each seed once")
    if len(set(config.models)) != len(config.models):
        raise GhostEdgeError(f"duplicate models: {list(config.models)}", "give each model once")
    if config.epochs < 1 and not config.latency_only and config.weights is None:
        raise GhostEdgeError(f"--epochs must be >= 1 (got {config.epochs})", "pass --epochs 1 or more")
    if not config.targets:
        raise GhostEdgeError("no target given", "pass --target host (and/or qemu-aarch64, ssh://..., adb)")
    if config.weights is not None and not Path(config.weights).is_dir():
        raise GhostEdgeError(f"--weights {config.weights} is not a folder",
                             "point it at a folder holding <model>/seed_<s>/ checkpoints "
                             "(e.g. a previous sweep's work/train)")
    if config.calib_draws < 1:
        raise GhostEdgeError(f"--calib-draws must be at least 1 (got {config.calib_draws})",
                             "1 is one draw per seed; 5 gives each seed five calibration draws")
    if config.calib_draws > 1 and config.latency_only:
        raise GhostEdgeError("--calib-draws measures INT8 accuracy, which --latency-only does not",
                             "leave out --calib-draws, or sweep trained models")
    for model in config.models:
        stages.check_model(model)
    for target in config.targets:
        stages.check_target(target)
    return config


class _Sweep:
    """The state of one run: where things go, what failed, what was reused."""

    def __init__(self, config: CurveConfig, log: Log) -> None:
        self.cfg = config
        self.work = ensure_writable_dir(Path(config.work))
        self.log = log
        self.failures: list[Failure] = []
        self.counters: dict[str, int] = {}
        self.trained_now: set[tuple[str, int]] = set()
        self._calibration: dict[tuple[str, int], Any] = {}   # images handed to every export, made once
        self.failures_path = self.work / "failures.jsonl"
        atomic_write_text(self.failures_path, "")  # the latest run's failures only: old ones are retried

    # ---- bookkeeping -------------------------------------------------------------------------
    def count(self, key: str) -> None:
        self.counters[key] = self.counters.get(key, 0) + 1

    def fail(self, step: str, model: str, seed: int | None, fmt: str | None, target: str | None,
             exc: BaseException) -> Failure:
        reason = _reason(exc)
        f = Failure(step, model, seed, fmt, target, reason)
        self.failures.append(f)
        # Rewritten whole each time (tiny file) so a crash never leaves half a JSON line behind.
        atomic_write_text(self.failures_path, "".join(json.dumps(asdict(x)) + "\n" for x in self.failures))
        where = "/".join(str(x) for x in (model, f"seed_{seed}" if seed is not None else None, fmt, target) if x)
        self.log(f"  FAILED {step} {where}: {reason}")
        return f

    def failure_for(self, step: str, model: str, seed: int | None = None, fmt: str | None = None,
                    target: str | None = None) -> Failure | None:
        for f in self.failures:
            if f.step == step and f.model == model and (seed is None or f.seed in (None, seed)) and \
                    (fmt is None or f.format in (None, fmt)) and (target is None or f.target in (None, target)):
                return f
        return None

    def measures(self, fmt: str, target: str) -> bool:
        """Whether (format, target) is a point of this sweep: the target runs it and it was asked for."""
        if is_qemu_target(target) and self.cfg.qemu_formats is not None and fmt not in self.cfg.qemu_formats:
            return False
        return stages.runs_on(fmt, target)

    # ---- paths ---------------------------------------------------------------------------------
    def train_dir(self, model: str, seed: int) -> Path:
        return self.work / "train" / model / f"seed_{seed}"

    def export_dir(self, model: str, seed: int, draw: int = 0) -> Path:
        # Further draws are siblings, not sub-folders: an export replaces its whole folder.
        return self.work / "export" / model / (f"seed_{seed}" + (f".draw_{draw}" if draw else ""))

    def eval_json(self, model: str, seed: int, fmt: str, draw: int = 0) -> Path:
        return self.work / "eval" / model / f"seed_{seed}" / (f"{fmt}.draw_{draw}.json" if draw else f"{fmt}.json")

    def bench_json(self, target: str, model: str, fmt: str) -> Path:
        return self.work / "bench" / _safe(target) / model / f"{fmt}.json"

    # ---- steps ---------------------------------------------------------------------------------
    def checkpoint(self, model: str, seed: int) -> Path | None:
        """The checkpoint of (model, seed): given (--weights), already trained, or trained now."""
        cfg = self.cfg
        try:
            if cfg.weights is not None:
                ckpt = stages.find_given_checkpoint(Path(cfg.weights), model, seed)
                self.count("train_given")
                return ckpt
            if self.failure_for("train", model, seed) is not None:
                return None  # already failed in this run (parallel pre-training): not tried twice
            done = stages.finished_checkpoint(self.train_dir(model, seed))
            if done is not None:
                if (model, seed) not in self.trained_now:
                    self.count("train_reused")
                return done
            self.log(f"  train {model} seed {seed} ({cfg.epochs} epochs on {cfg.data})")
            t0 = time.perf_counter()
            ckpt = stages.train_one(model, seed, cfg.data, self.train_dir(model, seed), epochs=cfg.epochs,
                                    limit_train=cfg.limit_train, limit_val=cfg.limit_val,
                                    batch_size=cfg.batch_size, threads=cfg.train_threads)
            self.count("train_done")
            self.log(f"    done in {time.perf_counter() - t0:.1f} s -> {ckpt}")
            return ckpt
        except Exception as exc:  # noqa: BLE001 - one failed run must not end the sweep
            self.fail("train", model, seed, None, None, exc)
            return None

    def train_parallel(self, pairs: list[tuple[str, int]]) -> None:
        """Train the unfinished (model, seed) runs ``train_jobs`` at a time, one process (one thread) each.

        Why processes: two single-threaded runs side by side keep both cores busy without the OpenMP
        barriers of one two-threaded run, which stall badly on a shared machine. Each run is seeded
        and single-threaded, so its result is the same as when run alone.
        """
        cfg = self.cfg
        todo = [(m, s) for m, s in pairs if stages.finished_checkpoint(self.train_dir(m, s)) is None]
        if cfg.weights is not None or cfg.train_jobs <= 1 or len(todo) < 2:
            return
        import concurrent.futures as cf
        import multiprocessing as mp

        jobs = min(cfg.train_jobs, len(todo))
        self.log(f"training {len(todo)} run(s), {jobs} at a time ({cfg.epochs} epochs on {cfg.data}, "
                 f"{cfg.train_threads or 1} thread(s) each)")
        t0 = time.perf_counter()
        # spawn, not fork: a forked copy of a process that already ran torch/TF threads can deadlock.
        with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(stages.train_one, m, s, cfg.data, self.train_dir(m, s), epochs=cfg.epochs,
                                   limit_train=cfg.limit_train, limit_val=cfg.limit_val,
                                   batch_size=cfg.batch_size, threads=cfg.train_threads or 1): (m, s)
                       for m, s in todo}
            pending, finished = set(futures), 0
            while pending:
                done, pending = cf.wait(pending, timeout=TRAIN_HEARTBEAT_S, return_when=cf.FIRST_COMPLETED)
                if not done:  # a long run: say it is alive and when the training part should end
                    self.log(training_heartbeat(finished, len(todo), jobs, time.perf_counter() - t0))
                for fut in done:
                    m, s = futures[fut]
                    finished += 1
                    try:
                        ckpt = fut.result()
                    except Exception as exc:  # noqa: BLE001 - recorded; the other runs go on
                        self.fail("train", m, s, None, None, exc)
                        continue
                    self.trained_now.add((m, s))
                    self.count("train_done")
                    self.log(f"  trained {m} seed {s} ({finished}/{len(todo)}, "
                             f"{time.perf_counter() - t0:.0f} s into training) -> {ckpt}")

    def calibration(self, seed: int) -> Any:
        """The images INT8 calibration (and the export's held-out verification) draws from: the given
        folder, or (in memory, made once per sweep) a draw of the training split or seeded noise."""
        cfg = self.cfg
        if cfg.calib is not None:
            return Path(cfg.calib)
        # +NUM_VERIFY: the export holds that many images out of these to check every artifact on.
        count = cfg.calib_count + stages.NUM_VERIFY
        key = ("noise", seed) if cfg.latency_only else ("data", 0)
        if key not in self._calibration:
            self._calibration[key] = (stages.noise_images(count, stages.input_size(cfg.models[0]), seed)
                                      if cfg.latency_only else stages.calibration_images(cfg.data, count, seed=0))
        return self._calibration[key]

    def export(self, model: str, seed: int, source: Path | str, draw: int = 0) -> Path | None:
        """ONNX/TFLite artifacts of one checkpoint (or model name), or None when only PyTorch is swept.

        ``draw`` > 0 is another INT8 calibration draw of the same checkpoint (its own folder and seed).
        """
        needed = [f for f in self.cfg.formats if FORMATS[f].file is not None]
        if not needed:
            return None
        out = self.export_dir(model, seed, draw)
        try:
            if stages.export_done(out, needed):
                self.count("export_reused")
                return out
            calib = self.calibration(seed)
            what = f"seed {seed}" + (f" calibration draw {draw}" if draw else "")
            self.log(f"  export {model} {what}: {', '.join(needed)} (INT8 calibrated on {_describe_images(calib)})")
            t0 = time.perf_counter()
            stages.export_one(source, out, needed, calib=calib, num_calib=self.cfg.calib_count,
                              seed=seed + DRAW_SEED_STEP * draw, threads=self.cfg.threads)
            self.count("export_done")
            self.log(f"    done in {time.perf_counter() - t0:.1f} s -> {out}")
            return out
        except Exception as exc:  # noqa: BLE001 - a broken conversion is one failed point, not the end
            self.fail("export", model, seed, None, None, exc)
            return None

    def artifact(self, fmt: str, ckpt: Path | str, export_dir: Path | None) -> Path | str | None:
        if FORMATS[fmt].file is None:
            return ckpt
        if export_dir is None:
            return None
        path = stages.artifact_path(export_dir, fmt)
        return path if path is not None and path.exists() else None

    def evaluate(self, model: str, seed: int, fmt: str, artifact: Path, draw: int = 0) -> float | None:
        out = self.eval_json(model, seed, fmt, draw)
        if out.exists():
            self.count("eval_reused")
            return float(json.loads(out.read_text())["top1_pct"])
        try:
            t0 = time.perf_counter()
            res = stages.evaluate_one(artifact, fmt, self.cfg.data, limit=self.cfg.limit_eval,
                                      batch_size=self.cfg.batch_size, threads=self.cfg.threads)
            res["seconds"] = round(time.perf_counter() - t0, 3)
            atomic_write_json(out, res)
            self.count("eval_done")
            self.log(f"  eval {model} seed {seed}{f' draw {draw}' if draw else ''} {fmt}: top-1 "
                     f"{res['top1_pct']:.2f} % (n={res.get('n')})")
            return float(res["top1_pct"])
        except Exception as exc:  # noqa: BLE001
            self.fail("eval", model, seed, fmt, None, exc)
            return None

    def bench(self, model: str, fmt: str, target: str, artifact: Path | str, seed: int) -> dict[str, Any] | None:
        """Latency of one artifact (``seed``'s, recorded in the JSON) on one target, measured once."""
        out = self.bench_json(target, model, fmt)
        if out.exists():
            self.count("bench_reused")
            return json.loads(out.read_text())
        try:
            res = stages.bench_one(artifact, fmt, target, runs=self.cfg.bench_runs, warmup=self.cfg.bench_warmup,
                                   seconds=self.cfg.bench_seconds, threads=self.cfg.threads)
            res["seed"] = seed
            atomic_write_json(out, res)
            self.count("bench_done")
            x = (f"{res['instructions']:.3g} guest instructions" if res.get("instructions") is not None
                 else f"p50 {res['latency_ms_p50']:.3f} ms")
            self.log(f"  bench {model} {fmt} on {target}: {x}")
            return res
        except Exception as exc:  # noqa: BLE001
            self.fail("bench", model, None, fmt, target, exc)
            return None


def _describe_images(images: Any) -> str:
    """A folder's path, a data set's repr, or an array's shape, for the log."""
    shape = getattr(images, "shape", None)
    return f"{shape[0]} noise images" if shape is not None else str(images)


def _safe(target: str) -> str:
    """A target string as one folder name (``ssh://pi@host:22`` -> ``ssh___pi@host_22``)."""
    return "".join(c if c.isalnum() or c in "-_.@" else "_" for c in target)


def _reason(exc: BaseException) -> str:
    """One line saying why a step failed: the GhostEdgeError message (+hint), or type + message."""
    if isinstance(exc, GhostEdgeError):
        return exc.message + (f" (hint: {exc.hint})" if exc.hint else "")
    msg = str(exc).strip().splitlines()
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    loc = f" at {Path(where.filename).name}:{where.lineno}" if where else ""
    return f"{type(exc).__name__}: {msg[0][:300] if msg else ''}{loc}"


def cli_command(cfg: CurveConfig) -> str:
    """The ``ghostedge curve`` command line that reproduces ``cfg`` (recorded in curve.md)."""
    parts = ["ghostedge", "curve", "--models", ",".join(cfg.models), "--seeds", ",".join(map(str, cfg.seeds)),
             "--formats", ",".join(cfg.formats)]
    for t in cfg.targets:
        parts += ["--target", t]
    if cfg.latency_only:
        parts.append("--latency-only")
    else:
        parts += ["--data", cfg.data, "--epochs", str(cfg.epochs)]
    for flag, value in (("--limit-train", cfg.limit_train), ("--limit-val", cfg.limit_val),
                        ("--limit-eval", cfg.limit_eval), ("--train-threads", cfg.train_threads),
                        ("--train-jobs", cfg.train_jobs if cfg.train_jobs > 1 else None),
                        ("--qemu-formats", ",".join(cfg.qemu_formats) if cfg.qemu_formats is not None else None),
                        ("--weights", cfg.weights), ("--calib", cfg.calib),
                        ("--calib-draws", cfg.calib_draws if cfg.calib_draws > 1 else None)):
        if value is not None:
            parts += [flag, str(value)]
    if cfg.paper_overlay:
        parts.append("--paper-overlay")
    parts += ["--work", str(cfg.work)]
    return " ".join(shlex.quote(p) for p in parts)


def _check_resume(work: Path, config: CurveConfig) -> None:
    """Refuse to mix a resumed sweep with different settings (its finished runs would be wrong)."""
    path = work / "sweep.json"
    key = config.resume_key()
    if path.exists():
        try:
            old = json.loads(path.read_text()).get("resume_key", {})
        except (OSError, ValueError):
            old = {}
        changed = {k: (old.get(k), v) for k, v in key.items() if k in old and old.get(k) != v}
        if changed:
            what = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(changed.items()))
            raise GhostEdgeError(f"work folder {work} holds a sweep made with other settings ({what})",
                                 "use the same settings to resume it, or pass another --work folder")
    from ghostnet_edge.utils.versions import package_versions

    atomic_write_json(path, {"resume_key": key, "models": list(config.models), "seeds": list(config.seeds),
                             "formats": list(config.formats), "targets": list(config.targets),
                             "versions": package_versions()})


def run_curve(config: CurveConfig, log: Log | None = None) -> CurveResult:
    """Run (or resume) the sweep and write ``points.csv``, ``curve.md``, ``curve.png`` and ``curve.svg``."""
    log = log or _stderr_log
    t_start = time.perf_counter()
    config = validate_config(config)
    work = ensure_writable_dir(Path(config.work))
    _check_resume(work, config)
    sweep = _Sweep(config, log)
    if config.latency_only:
        points = _latency_only(sweep)
    else:
        points, per_seed = _trained(sweep)
    per_seed_int8 = {} if config.latency_only else per_seed
    return _write_outputs(sweep, points, per_seed_int8, time.perf_counter() - t_start)


def _trained(sweep: _Sweep) -> tuple[list[CurvePoint], dict[tuple[str, str], dict[int, float]]]:
    cfg = sweep.cfg
    per_seed: dict[tuple[str, str], dict[int, float]] = {}
    # Further calibration draws: (model, INT8 format) -> seed -> top-1 of draws 1.. (draw 0 is per_seed's)
    more_draws: dict[tuple[str, str], dict[int, list[float]]] = {}
    lat_artifacts: dict[tuple[str, str], tuple[int, Path | str]] = {}
    sweep.train_parallel([(m, s) for m in cfg.models for s in cfg.seeds])
    for model in cfg.models:
        sweep.log(f"[{model}]")
        for seed in cfg.seeds:
            ckpt = sweep.checkpoint(model, seed)
            if ckpt is None:
                continue
            export_dir = sweep.export(model, seed, ckpt)
            for fmt in cfg.formats:
                art = sweep.artifact(fmt, ckpt, export_dir)
                if art is None:
                    if sweep.failure_for("export", model, seed) is None:
                        sweep.fail("export", model, seed, fmt, None,
                                   GhostEdgeError(f"the export wrote no {fmt} artifact"))
                    continue
                acc = sweep.evaluate(model, seed, fmt, art)
                if acc is not None:
                    per_seed.setdefault((model, fmt), {})[seed] = acc
                lat_artifacts.setdefault((model, fmt), (seed, art))
            int8 = [f for f in cfg.formats if FORMATS[f].precision == "int8" and FORMATS[f].file is not None]
            for draw in range(1, cfg.calib_draws if int8 else 1):
                draw_dir = sweep.export(model, seed, ckpt, draw)
                for fmt in int8:
                    art = sweep.artifact(fmt, ckpt, draw_dir)
                    acc = sweep.evaluate(model, seed, fmt, art, draw) if art is not None else None
                    if acc is not None:
                        more_draws.setdefault((model, fmt), {}).setdefault(seed, []).append(acc)
    points = []
    for model in cfg.models:
        for fmt in cfg.formats:
            for target in cfg.targets:
                if not sweep.measures(fmt, target):
                    continue
                points.append(_point(sweep, model, fmt, target, per_seed.get((model, fmt), {}),
                                     lat_artifacts.get((model, fmt)), more_draws.get((model, fmt), {})))
    return points, _mean_over_draws(per_seed, more_draws)


def _mean_over_draws(per_seed: dict[tuple[str, str], dict[int, float]],
                     more_draws: dict[tuple[str, str], dict[int, list[float]]]) -> dict[tuple[str, str], dict[int, float]]:
    """Per seed, INT8 top-1 averaged over its calibration draws: what the paired INT8-vs-FP32 table
    compares with the FP32 top-1 of the same checkpoint (the FP32 artifacts do not depend on the draw)."""
    out = {key: dict(accs) for key, accs in per_seed.items()}
    for key, seeds in more_draws.items():
        for seed, values in seeds.items():
            if seed in out.get(key, {}):
                out[key][seed] = sum([out[key][seed], *values]) / (1 + len(values))
    return out


def _point(sweep: _Sweep, model: str, fmt: str, target: str, accs: dict[int, float],
           lat: tuple[int, Path | str] | None, draws: dict[int, list[float]] | None = None) -> CurvePoint:
    cfg = sweep.cfg
    p = CurvePoint(model=model, format=fmt, target=target, input_size=stages.input_size(model))
    reasons = []
    if accs:
        # every (seed, calibration draw) top-1 counts once in an INT8 point's spread
        s = spread([accs[k] for k in sorted(accs)] + [v for k in sorted(draws or {}) for v in draws[k]])
        p.n_seeds, p.seeds = len(accs), ";".join(str(k) for k in sorted(accs))
        p.n_draws = 1 + min(len((draws or {}).get(k, [])) for k in accs)  # draws every seed has
        p.acc_mean, p.acc_std, p.acc_min, p.acc_max = s.mean, s.std, s.min, s.max
    missing_seeds = [s for s in cfg.seeds if s not in accs]
    for seed in missing_seeds:
        f = (sweep.failure_for("train", model, seed) or sweep.failure_for("export", model, seed)
             or sweep.failure_for("eval", model, seed, fmt))
        reasons.append(f"seed {seed}: {f.step} failed: {f.reason}" if f else f"seed {seed}: no accuracy")
    if lat is not None:
        p.latency_seed = lat[0]
        res = sweep.bench(model, fmt, target, lat[1], lat[0])
        if res is not None:
            p.latency_seed = res.get("seed", lat[0])  # a reused measurement may be of another seed's artifact
            p.latency_ms_p50 = res.get("latency_ms_p50")
            p.instructions = res.get("instructions")
        else:
            f = sweep.failure_for("bench", model, None, fmt, target)
            reasons.append(f"bench failed: {f.reason}" if f else "bench failed")
    else:
        reasons.append("no artifact to measure")
    p.status = "ok" if p.plottable and not missing_seeds else ("partial" if p.plottable else "missing")
    p.reason = "; ".join(reasons)
    return p


def _latency_only(sweep: _Sweep) -> list[CurvePoint]:
    """Random-init models at their own input size: latency measured here against *published* accuracy.

    No checkpoint is needed: the export stage and the PyTorch runner build a model name with seeded
    random weights, and a dense network's latency does not depend on its weight values.
    """
    cfg = sweep.cfg
    seed = cfg.seeds[0] if cfg.seeds else 0
    points = []
    for model in cfg.models:
        sweep.log(f"[{model}] latency only (random weights, seed {seed})")
        pub = published_accuracy(model)
        export_dir = sweep.export(model, seed, model)
        for fmt in cfg.formats:
            art = sweep.artifact(fmt, model, export_dir)
            for target in cfg.targets:
                if not sweep.measures(fmt, target):
                    continue
                p = CurvePoint(model=model, format=fmt, target=target, input_size=stages.input_size(model),
                               acc_source="published", latency_seed=seed)
                reasons = []
                if pub is not None:
                    p.acc_mean = p.acc_min = p.acc_max = pub.top1_pct
                    p.acc_std = 0.0
                else:
                    reasons.append("no published accuracy for this width")
                if art is not None:
                    res = sweep.bench(model, fmt, target, art, seed)
                    if res is not None:
                        p.latency_ms_p50, p.instructions = res.get("latency_ms_p50"), res.get("instructions")
                    else:
                        f = sweep.failure_for("bench", model, None, fmt, target)
                        reasons.append(f"bench failed: {f.reason}" if f else "bench failed")
                else:
                    f = sweep.failure_for("export", model, seed)
                    reasons.append(f"export failed: {f.reason}" if f else f"no {fmt} artifact")
                p.status = "ok" if p.plottable else "missing"
                p.reason = "; ".join(reasons)
                points.append(p)
    return points


def _write_outputs(sweep: _Sweep, points: list[CurvePoint], per_seed: dict[tuple[str, str], dict[int, float]],
                   seconds: float) -> CurveResult:
    cfg = sweep.cfg
    work = sweep.work
    command = cfg.command or cli_command(cfg)
    notes = list(cfg.extra_notes)
    if cfg.latency_only:
        notes.append("latency-only: random-initialised weights at each model's own input size; the accuracy "
                     "column is the paper's published ImageNet top-1 (GhostNet Table 7; MobileNetV3-Small 1.0 "
                     "from the MobileNetV3 paper), not measured here")
        if any(FORMATS[f].precision == "int8" for f in cfg.formats):
            notes.append("INT8 calibration: " + (f"images from {cfg.calib}" if cfg.calib else
                         f"{cfg.calib_count} seeded random-noise images (fine for latency, meaningless for accuracy)"))
    else:
        budget = f"{cfg.epochs} epochs" + (f" on a class-balanced subset of {cfg.limit_train} training images"
                                            if cfg.limit_train else " on the whole training split")
        notes.append(f"accuracy: top-1 % on the eval split of `{cfg.data}`"
                     + (f" (first {cfg.limit_eval} images)" if cfg.limit_eval else "")
                     + f", spread over seeds {', '.join(map(str, cfg.seeds))}; "
                     + (f"checkpoints given in {cfg.weights} (trained elsewhere: --epochs does not apply)"
                        if cfg.weights else f"training budget {budget}"))
        if cfg.calib_draws > 1:
            notes.append(f"INT8 accuracy: spread over {len(cfg.seeds)} seeds x {cfg.calib_draws} calibration draws "
                         f"of {cfg.calib_count} images each (draw d of seed s calibrates with seed "
                         f"s + {DRAW_SEED_STEP} d); the paired INT8-vs-FP32 table averages each seed's draws")
        notes.append(f"latency: measured once per (model, format, target) on seed {cfg.seeds[0]}'s artifact "
                     "(latency belongs to the architecture and format, not the seed)")
    if any(is_qemu_target(t) for t in cfg.targets):
        notes.append("qemu targets: x is guest instructions per inference counted by QEMU TCG, not time"
                     + (f"; counted for {', '.join(cfg.qemu_formats)} only" if cfg.qemu_formats is not None else ""))
    notes.append(f"host threads: {cfg.threads}; bench: {cfg.bench_warmup} warm-up + {cfg.bench_runs} timed runs, batch 1")
    rows = int8_rows(per_seed, cfg.formats)
    title = cfg.title or ("GhostNet vs MobileNet: published ImageNet top-1 vs latency measured here"
                          if cfg.latency_only else f"Accuracy vs latency on {cfg.data}")
    ctx = TableContext(title=title, dataset="published ImageNet accuracy (paper)" if cfg.latency_only else cfg.data,
                       command=command, notes=notes)
    y_label = "published ImageNet top-1 (%), paper" if cfg.latency_only else "top-1 accuracy (%)"
    note = ("accuracy: published (paper); latency/instructions measured here on random-init weights"
            if cfg.latency_only else f"latency measured on seed {cfg.seeds[0]}'s artifact; accuracy over seeds "
            f"{', '.join(map(str, cfg.seeds))}"
            + (f" (INT8: x {cfg.calib_draws} calibration draws each)" if cfg.calib_draws > 1 else ""))
    overlay = cfg.paper_overlay and all(stages.input_size(m) == 224 for m in cfg.models)
    if cfg.paper_overlay and not overlay:
        sweep.log("  note: --paper-overlay skipped: the paper's points are ImageNet 224x224; some models here are not")
    files = write_curve(work, points, rows, ctx, PlotOptions(title=title, y_label=y_label, paper_overlay=overlay,
                                                             note=note, spread_legend=not cfg.latency_only,
                                                             spread_over="seeds" if cfg.calib_draws == 1 else
                                                             "seeds (INT8: seeds x calibration draws)"))
    sweep.log(f"wrote {files.csv}, {files.markdown}, {files.png}, {files.svg}"
              + (f"; {len(sweep.failures)} failed step(s) in {sweep.failures_path}" if sweep.failures else ""))
    return CurveResult(work=work, points=points, failures=list(sweep.failures), csv=files.csv, markdown=files.markdown,
                       png=files.png, svg=files.svg, missing=files.missing, counters=dict(sorted(sweep.counters.items())),
                       seconds=seconds)

