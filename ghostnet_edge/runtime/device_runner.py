#!/usr/bin/env python3
"""ghostedge device runner: time one model on this machine and print one JSON object.

This file is copied as-is to ARM boards (ssh target), run under qemu-user (qemu-aarch64 target) and
run in a subprocess on the host. It therefore needs only Python >= 3.8, NumPy and ONE interpreter
(ai-edge-litert, tflite-runtime or onnxruntime), and it imports nothing from ghostnet_edge. Its one
companion is ``tflite_check.py`` (standard library only), which must sit in the same folder: every
.tflite is verified with it before an interpreter opens it (the interpreters crash on a cut file).

    python3 device_runner.py --model PATH [--runtime auto|litert|tflite-runtime|onnxruntime]
        [--threads 1] [--no-xnnpack] [--warmup 10] [--min-runs 50] [--min-seconds 2.0]
        [--max-seconds 60] [--inputs X.npy] [--save-outputs Y.npy] [--seed 0] [--markers]
        [--profile [--profile-runs 20]] [--json OUT]
    python3 device_runner.py --probe        # what this machine has (python, numpy, interpreters)

Protocol (the host side lives in ghostnet_edge/runtime/protocol.py):
- stdout: exactly one JSON object, the result (also written to --json OUT, atomically).
- stderr: progress lines so that a dropped connection still leaves what was measured:
  ``GHOSTEDGE_INFO {...}`` once the model is loaded (runtime, load and first-inference times, pid),
  ``GHOSTEDGE_PARTIAL {"offset": k, "latencies_ns": [...]}`` with the timed runs since the last line.
- exit status: 0 ok, 3 the model cannot be loaded or fed (a truncated/damaged .tflite included),
  4 numpy, the interpreter or tflite_check.py is missing,
  5 stopped early (SIGTERM/SIGINT: the result is marked partial and keeps the runs measured so far).

Why a timed loop of its own and not the runtime's benchmark tool: the same loop then runs on every
target (host, qemu, boards) so numbers are comparable, and it can bracket the loop with the marker
syscalls the qemu instruction-count plugin looks for.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import signal
import sys
import tempfile
import time

RESULT_VERSION = 1
INFO_PREFIX = "GHOSTEDGE_INFO "
PARTIAL_PREFIX = "GHOSTEDGE_PARTIAL "
# lseek() on a negative fd fails with EBADF without side effects; the qemu plugin watches for these
# two fd values to bracket the timed loop (see ghostnet_edge/runtime/qemu).
MARKER_START_FD = -1000001
MARKER_END_FD = -1000002
PROGRESS_EVERY_S = 0.5

EXIT_OK = 0
EXIT_MODEL = 3
EXIT_MISSING = 4
EXIT_STOPPED = 5

RUNTIMES = ("litert", "tflite-runtime", "onnxruntime")
# CPU part numbers of ARM cores ("CPU part" in /proc/cpuinfo), for a readable "cpu" field.
ARM_PARTS = {
    "0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76",
    "0xd0c": "Neoverse-N1", "0xd0d": "Cortex-A77", "0xd40": "Neoverse-V1", "0xd41": "Cortex-A78",
    "0xd44": "Cortex-X1", "0xd46": "Cortex-A510", "0xd47": "Cortex-A710", "0xd48": "Cortex-X2",
    "0xd49": "Neoverse-N2", "0xd4b": "Cortex-A78C", "0xd4d": "Cortex-A715", "0xd4e": "Cortex-X3",
    "0xd4f": "Neoverse-V2", "0xd80": "Cortex-A520", "0xd81": "Cortex-A720", "0xd82": "Cortex-X4",
}


class RunnerError(Exception):
    """A problem the user can act on; reported as JSON with an exit status."""

    def __init__(self, message: str, hint: str = "", code: int = EXIT_MODEL, kind: str = "model",
                 package: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.code = code
        self.kind = kind
        self.package = package  # the pip package that is missing, for kind "numpy"/"interpreter"


class Stopped(Exception):
    """SIGTERM/SIGINT or a closed stderr pipe: stop timing, report what was measured."""


# ----------------------------------------------------------------------------------------- machine


def cpu_name() -> str:
    """The CPU this runs on: x86 "model name", else ARM "CPU part" names, else platform.machine()."""
    names, parts = [], []
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key, value = key.strip().lower(), value.strip()
                if key == "model name" and value:
                    names.append(value)
                elif key == "cpu part" and value:
                    parts.append(value.lower())
    except OSError:
        pass
    if names and not parts:
        return names[0]
    if parts:
        counts = {}
        for p in parts:
            name = ARM_PARTS.get(p, "ARM part " + p)
            counts[name] = counts.get(name, 0) + 1
        return " + ".join(f"{n}x {name}" for name, n in counts.items())
    return platform.processor() or platform.machine()


def peak_rss_mb() -> float:
    """Peak resident set of this process; ru_maxrss is KiB on Linux (bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0


def module_version(name: str):
    """Version of an importable module, or None when it cannot be imported."""
    try:
        mod = __import__(name, fromlist=["__name__"])
    except Exception:  # any import failure means: not usable here
        return None
    return str(getattr(mod, "__version__", "unknown"))


def installed_version(module: str, dist: str):
    """Version of an installed distribution whose top-level module is findable, without importing it.

    A probe must be quick on a Raspberry Pi: importing onnxruntime or LiteRT there takes seconds, and
    a broken install still fails later with the runtime's own message.
    """
    import importlib.util

    try:
        if importlib.util.find_spec(module) is None:
            return None
    except (ImportError, ValueError):
        return None
    try:
        from importlib import metadata
    except ImportError:  # pragma: no cover - Python < 3.8
        return "unknown"
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


def probe() -> dict:
    """What this machine offers: used by the ssh target before copying a model."""
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "numpy": installed_version("numpy", "numpy"),
        "runtimes": {
            "litert": installed_version("ai_edge_litert", "ai-edge-litert"),
            "tflite-runtime": installed_version("tflite_runtime", "tflite-runtime"),
            "onnxruntime": installed_version("onnxruntime", "onnxruntime"),
        },
    }


# ------------------------------------------------------------------------------------------ models


def _np():
    try:
        import numpy as np
    except ImportError as exc:
        raise RunnerError(f"NumPy is not installed for {sys.executable}",
                          "install it on this machine: python3 -m pip install numpy",
                          EXIT_MISSING, "numpy", "numpy") from exc
    return np


def model_format(path: str) -> str:
    """'tflite' or 'onnx' from the file's first bytes (the suffix can lie)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        raise RunnerError(f"cannot read model {path}: {exc.strerror}", "check the path") from exc
    if len(head) >= 8 and head[4:8] == b"TFL3":
        return "tflite"
    if path.lower().endswith(".onnx") and head[:1] == b"\x08":  # protobuf field 1 (ir_version)
        return "onnx"
    raise RunnerError(f"{path} is neither a TFLite flatbuffer nor an ONNX model",
                      "pass a .tflite or .onnx file written by `ghostedge export`")


def _sibling(name: str):
    """The module ``NAME.py`` that ships beside this file, or None when it is not there.

    Imported from the package, it is the package's module; run as a script (host, boards) or imported
    from its folder (qemu guest), exactly the file next to this one is loaded, whatever else sys.path holds.
    """
    if __package__:  # imported as ghostnet_edge.runtime.device_runner
        import importlib

        return importlib.import_module(f"{__package__}.{name}")
    alias = f"ghostedge_{name}"
    mod = sys.modules.get(alias)
    if mod is None:
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
        if not os.path.isfile(path):
            return None
        import importlib.util

        spec = importlib.util.spec_from_file_location(alias, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        sys.modules[alias] = mod
    return mod


def _tflite_check():
    """``tflite_check.py``, the flatbuffer verifier (standard library only) that ships beside this file."""
    mod = _sibling("tflite_check")
    if mod is None:
        here = os.path.dirname(os.path.abspath(__file__))
        raise RunnerError(f"tflite_check.py is missing from {here}, so .tflite files cannot be verified",
                          "copy ghostnet_edge/runtime/tflite_check.py next to device_runner.py",
                          EXIT_MISSING, "runner")
    return mod


def verify_tflite(path: str) -> None:
    """Refuse a truncated or damaged .tflite before an interpreter reads past its end."""
    check = _tflite_check()
    try:
        problems = check.verify_tflite_file(path)
    except OSError as exc:
        raise RunnerError(f"cannot read model {path}: {exc.strerror or exc}", "check the path") from exc
    if problems:
        raise RunnerError(check.problem_message(path, problems), check.HINT)


def pick_runtime(fmt: str, wanted: str) -> str:
    if wanted == "torch":
        raise RunnerError("the torch runtime runs PyTorch checkpoints, not .tflite/.onnx files",
                          "use --runtime auto, litert, tflite-runtime or onnxruntime")
    if fmt == "onnx":
        if wanted not in ("auto", "onnxruntime"):
            raise RunnerError(f"runtime {wanted} cannot run an ONNX model", "use --runtime onnxruntime")
        return "onnxruntime"
    if wanted == "onnxruntime":
        raise RunnerError("onnxruntime cannot run a TFLite model", "use --runtime litert or tflite-runtime")
    if wanted != "auto":
        return wanted
    for name, module in (("litert", "ai_edge_litert.interpreter"), ("tflite-runtime", "tflite_runtime.interpreter")):
        if module_version(module) is not None:
            return name
    raise RunnerError(f"no TFLite interpreter is installed for {sys.executable}",
                      "install one: python3 -m pip install ai-edge-litert  (or tflite-runtime)",
                      EXIT_MISSING, "interpreter", "ai-edge-litert")


def layout_of(shape, native: str = "") -> str:
    """NCHW or NHWC of a 4-D input: where the 3 (or 1) image channels are, else the format's ``native``
    layout (TFLite: NHWC, ONNX: NCHW) for other channel counts; not 4-D: raise, the harness cannot feed it."""
    if len(shape) == 4:
        if shape[3] in (1, 3) and shape[1] not in (1, 3):
            return "NHWC"
        if shape[1] in (1, 3):
            return "NCHW"
        if shape[3] in (1, 3):
            return "NHWC"
        if native:
            return native
    raise RunnerError(f"model input shape {list(shape)} is not a batch of images (N,C,H,W) or (N,H,W,C)",
                      "export the model with one 4-D image input, e.g. `ghostedge export`")


class Model:
    """One loaded model: native input preparation, invoke, float outputs.

    ``prepare(x)`` turns a float32 batch (NCHW or NHWC) into the model's own input (layout, int8
    quantisation with the model's scale/zero point) so that the timed ``invoke`` does nothing else.
    """

    runtime = ""
    version = ""
    delegate = "none"
    input_shape: list = []
    input_dtype = "float32"
    layout = "NCHW"
    input_quant = None  # (scale, zero_point) for integer inputs
    batch_fixed = True  # False: an ONNX model with a dynamic batch dimension takes any batch at once

    def chw_shape(self) -> tuple:
        s = self.input_shape
        return (s[1], s[2], s[3]) if self.layout == "NCHW" else (s[3], s[1], s[2])

    def prepare(self, batch):
        np = _np()
        x = np.asarray(batch, dtype=np.float32)
        want = tuple(self.input_shape)
        c, h, w = self.chw_shape()
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4:
            raise RunnerError(f"inputs have shape {list(x.shape)}; expected a 4-D batch",
                              "save a float32 array shaped (N,C,H,W) or (N,H,W,C)")
        if self.layout == "NHWC" and x.shape[1:] == (c, h, w) and x.shape[3] != c:
            x = x.transpose(0, 2, 3, 1)
        elif self.layout == "NCHW" and x.shape[1:] == (h, w, c) and x.shape[1] != c:
            x = x.transpose(0, 3, 1, 2)
        if x.shape[1:] != want[1:]:
            raise RunnerError(f"inputs have shape {list(x.shape)} but the model takes {list(want)}",
                              "resize the inputs to the model's input size")
        if self.input_quant is not None:
            scale, zero = self.input_quant
            info = np.iinfo(np.dtype(self.input_dtype))
            # Half away from zero, as TFLite's own QUANTIZE op rounds (np.round would round half to even).
            v = x / np.float32(scale)
            x = np.clip(np.sign(v) * np.floor(np.abs(v) + 0.5) + zero, info.min, info.max)
        return np.ascontiguousarray(x.astype(self.input_dtype))

    def set_input(self, native) -> None:
        raise NotImplementedError

    def invoke(self) -> None:
        raise NotImplementedError

    def outputs(self):
        """The first output as float32 (dequantised for integer outputs)."""
        raise NotImplementedError

    def run(self, batch):
        """Float logits for a float batch; loops over samples when the model's batch is fixed at 1."""
        np = _np()
        x = self.prepare(batch)
        _, h, w = self.chw_shape()
        step = self.input_shape[0] if self.batch_fixed else run_chunk(h * w)
        if x.shape[0] != step and (self.batch_fixed or x.shape[0] > step):
            return np.concatenate([self.run_native(x[i:i + step]) for i in range(0, x.shape[0], step)])
        return self.run_native(x)

    def run_native(self, native):
        self.set_input(native)
        self.invoke()
        return self.outputs()


# A model that takes any batch still runs a few images at a time: onnxruntime's convolutions then keep one
# chunk's activations in the CPU's caches, and a new session does not first grow its memory arena to the
# whole batch. GhostNet 1.0x at 224, 32 images, one thread, a new session on the project's AMD EPYC:
# 0.41 s in one run, 0.28 s in chunks of 8, the same logits (benchmarks/export_parts.py,
# docs/results/export_parts_amd.md).
RUN_PIXEL_BUDGET = 8 * 224 * 224


def run_chunk(pixels_per_image: int) -> int:
    """Images per run of a dynamic-batch model: as many as fit RUN_PIXEL_BUDGET, at least one."""
    return max(1, RUN_PIXEL_BUDGET // max(1, pixels_per_image))


class TFLiteModel(Model):
    def __init__(self, path: str, runtime: str, threads: int, xnnpack: bool,
                 keep_intermediates: bool = False) -> None:
        if runtime == "litert":
            try:
                from ai_edge_litert import interpreter as tfl
            except ImportError as exc:
                raise RunnerError(f"ai-edge-litert is not installed for {sys.executable}",
                                  "python3 -m pip install ai-edge-litert", EXIT_MISSING, "interpreter",
                                  "ai-edge-litert") from exc
            self.version = module_version("ai_edge_litert") or "unknown"
        elif runtime == "tflite-runtime":
            try:
                import tflite_runtime.interpreter as tfl
            except ImportError as exc:
                raise RunnerError(f"tflite-runtime is not installed for {sys.executable}",
                                  "python3 -m pip install tflite-runtime", EXIT_MISSING, "interpreter",
                                  "tflite-runtime") from exc
            self.version = module_version("tflite_runtime") or "unknown"
        else:
            raise RunnerError(f"unknown TFLite runtime {runtime!r}", "use litert or tflite-runtime")
        self.runtime = runtime
        # XNNPACK is TFLite's default CPU delegate: AUTO applies it, BUILTIN_WITHOUT_DEFAULT_DELEGATES
        # is the documented way to run the plain builtin kernels instead.
        # keep_intermediates (per-layer reports read every tensor after invoke) needs the delegate off:
        # XNNPACK owns the tensors of the ops it takes.
        xnnpack = xnnpack and not keep_intermediates
        resolver = tfl.OpResolverType.AUTO if xnnpack else tfl.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        extra = {"experimental_preserve_all_tensors": True} if keep_intermediates else {}
        try:
            self.interp = tfl.Interpreter(model_path=path, num_threads=threads,
                                          experimental_op_resolver_type=resolver, **extra)
            self.interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise RunnerError(f"{runtime} cannot load {path}: {str(exc).strip().splitlines()[-1]}",
                              "re-export the model; it may be truncated or use ops this runtime lacks") from exc
        self.delegate = "xnnpack" if xnnpack else "none"
        ins, outs = self.interp.get_input_details(), self.interp.get_output_details()
        if len(ins) != 1:
            raise RunnerError(f"model has {len(ins)} inputs; the harness feeds one image input",
                              "export a single-input classifier")
        self.inp, self.out = ins[0], outs[0]
        self.input_shape = [int(d) for d in self.inp["shape"]]
        self.input_dtype = _np().dtype(self.inp["dtype"]).name
        self.layout = layout_of(self.input_shape, "NHWC")
        if self.input_dtype in ("int8", "uint8"):
            scale, zero = self.inp["quantization"]
            if not scale:
                raise RunnerError("integer input without quantisation parameters",
                                  "export with a quantised float interface or full-integer I/O")
            self.input_quant = (float(scale), int(zero))
        elif self.input_dtype not in ("float32",):
            raise RunnerError(f"model input type {self.input_dtype} cannot be fed",
                              "export with float32 or int8 input")

    def set_input(self, native) -> None:
        self.interp.set_tensor(self.inp["index"], native)

    def invoke(self) -> None:
        self.interp.invoke()

    def outputs(self):
        np = _np()
        y = self.interp.get_tensor(self.out["index"])
        if y.dtype in (np.int8, np.uint8, np.int16):
            scale, zero = self.out["quantization"]
            return (y.astype(np.float32) - zero) * np.float32(scale)
        return y.astype(np.float32)


class OnnxModel(Model):
    def __init__(self, path: str, threads: int, optimize: bool = True) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise RunnerError(f"onnxruntime is not installed for {sys.executable}",
                              "python3 -m pip install onnxruntime", EXIT_MISSING, "interpreter",
                              "onnxruntime") from exc
        self.runtime, self.version = "onnxruntime", ort.__version__
        so = ort.SessionOptions()
        # The paper measures one thread; intra-op threads are what --threads means, inter-op stays 1
        # and sequential execution keeps runs comparable.
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        if not optimize:  # keeps QDQ pairs as they are in the file (per-layer reports read them)
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        try:
            self.sess = ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for bad graphs
            raise RunnerError(f"onnxruntime cannot load {path}: {str(exc).strip().splitlines()[0][:300]}",
                              "re-export the model; it may be truncated or not an ONNX model") from exc
        ins = self.sess.get_inputs()
        if len(ins) != 1:
            raise RunnerError(f"model has {len(ins)} inputs; the harness feeds one image input",
                              "export a single-input classifier")
        self.name = ins[0].name
        shape = ins[0].shape
        if any(not isinstance(d, int) for d in shape[1:]):
            raise RunnerError(f"model input {self.name} has symbolic size {shape}",
                              "export with a fixed input size (only the batch may be dynamic)")
        self.batch_fixed = isinstance(shape[0], int)
        self.input_shape = [d if isinstance(d, int) else 1 for d in shape]
        if ins[0].type != "tensor(float)":
            raise RunnerError(f"model input type {ins[0].type} cannot be fed",
                              "export with a float32 input (QDQ models keep a float interface)")
        self.layout = layout_of(self.input_shape, "NCHW")
        self.feed = None

    def set_input(self, native) -> None:
        self.feed = {self.name: native}

    def invoke(self) -> None:
        self.result = self.sess.run(None, self.feed)

    def outputs(self):
        return _np().asarray(self.result[0], dtype=_np().float32)


def load_model(path: str, runtime: str = "auto", threads: int = 1, xnnpack: bool = True,
               keep_intermediates: bool = False) -> Model:
    """Open ``path`` with the chosen runtime; ``auto`` picks the first installed one for its format.

    ``keep_intermediates``: every tensor stays readable after a run (TFLite: delegates off; ONNX: graph
    optimisations off, so QDQ pairs stay as written).
    """
    if not os.path.isfile(path):
        raise RunnerError(f"model file {path} does not exist", "check the path")
    fmt = model_format(path)
    if fmt == "tflite":
        verify_tflite(path)
    _np()
    rt = pick_runtime(fmt, runtime)
    if fmt == "onnx":
        return OnnxModel(path, threads, optimize=not keep_intermediates)
    return TFLiteModel(path, rt, threads, xnnpack, keep_intermediates)


# ---------------------------------------------------------------------------------------- profile

PROFILE_RUNS = 20
PROFILE_WARMUP = 3


def _op_profile():
    """``op_profile.py``, the per-operator profiler that ships beside this file (loaded only for --profile)."""
    return _sibling("op_profile")


def profile_ops(args: argparse.Namespace, model: Model, native) -> dict:
    """``--profile``: after the timed loop, a separate profiled pass (see op_profile.py); its result, or
    an ``error`` entry saying why there is none, so the timing result is never lost to it."""
    mod = _op_profile()
    if mod is None:
        return {"error": "op_profile.py is missing next to device_runner.py", "runtime": model.runtime}
    return mod.profile(args.model, model.runtime, args.threads, not args.no_xnnpack, native,
                       max(1, args.profile_runs), PROFILE_WARMUP)


# ----------------------------------------------------------------------------------------- timing


def _marker(fd: int) -> None:
    try:
        os.lseek(fd, 0, 0)
    except OSError:
        pass  # EBADF by design: the syscall itself is the marker


class Progress:
    """Incremental stderr lines; a closed pipe (ssh dropped) stops the run instead of killing it."""

    def __init__(self, stream=None, every_s: float = PROGRESS_EVERY_S) -> None:
        self.stream = stream
        self.every_ns = int(every_s * 1e9)
        self.sent = 0
        self.last_ns = 0

    def emit(self, prefix: str, obj: dict) -> None:
        if self.stream is None:
            return
        try:
            self.stream.write(prefix + json.dumps(obj, separators=(",", ":")) + "\n")
            self.stream.flush()
        except (BrokenPipeError, OSError, ValueError) as exc:
            self.stream = None
            raise Stopped("progress stream closed") from exc

    def maybe_flush(self, lat_ns: list, now_ns: int, force: bool = False) -> None:
        if self.stream is None or (not force and now_ns - self.last_ns < self.every_ns):
            return
        self.last_ns = now_ns
        if len(lat_ns) > self.sent:
            chunk = lat_ns[self.sent:]
            offset, self.sent = self.sent, len(lat_ns)
            self.emit(PARTIAL_PREFIX, {"offset": offset, "latencies_ns": chunk})


def timed_loop(invoke, warmup: int = 10, min_runs: int = 50, min_seconds: float = 2.0,
               max_seconds: float = 60.0, markers: bool = False, progress: Progress | None = None) -> dict:
    """First inference, warm-up, then timed runs until BOTH min_runs and min_seconds are met.

    ``max_seconds`` caps the timed phase (the run is then still complete, with fewer runs), as
    MLPerf's minimum-duration rule and TFLite's benchmark_model do. Latencies are per-run
    ``perf_counter_ns`` differences around ``invoke`` only. A ``Stopped`` raised mid-loop is
    re-raised with the measured part attached as ``exc.partial``.
    """
    progress = progress or Progress(None)
    out = {"first_inference_ms": None, "warmup_runs": 0, "latencies_ns": [], "timed_seconds": 0.0,
           "marker_runs": None}
    lat = out["latencies_ns"]
    try:
        t0 = time.perf_counter_ns()
        invoke()
        out["first_inference_ms"] = (time.perf_counter_ns() - t0) / 1e6
        for _ in range(warmup):
            invoke()
            out["warmup_runs"] += 1
        clock = time.perf_counter_ns
        if markers:
            _marker(MARKER_START_FD)
        start = progress.last_ns = clock()
        min_end, max_end = start + int(min_seconds * 1e9), start + int(max_seconds * 1e9)
        while True:
            a = clock()
            invoke()
            b = clock()
            lat.append(b - a)
            if (len(lat) >= min_runs and b >= min_end) or b >= max_end:
                break
            progress.maybe_flush(lat, b)
        if markers:
            _marker(MARKER_END_FD)
            out["marker_runs"] = len(lat)
        out["timed_seconds"] = (clock() - start) / 1e9
        progress.maybe_flush(lat, clock(), force=True)
    except Stopped as exc:
        exc.partial = out
        raise
    except KeyboardInterrupt as exc:
        stop = Stopped("interrupted")
        stop.partial = out
        raise stop from exc
    return out


# -------------------------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Time one .tflite/.onnx model (ghostedge device runner).")
    p.add_argument("--model")
    p.add_argument("--runtime", default="auto", choices=("auto", "torch") + RUNTIMES)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-xnnpack", action="store_true")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--min-runs", type=int, default=50)
    p.add_argument("--min-seconds", type=float, default=2.0)
    p.add_argument("--max-seconds", type=float, default=60.0)
    p.add_argument("--inputs")
    p.add_argument("--save-outputs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--markers", action="store_true")
    p.add_argument("--profile", action="store_true", help="also a per-operator profile (a separate pass)")
    p.add_argument("--profile-runs", type=int, default=PROFILE_RUNS)
    p.add_argument("--json")
    p.add_argument("--probe", action="store_true")
    args = p.parse_args(argv)
    if not args.probe and not args.model:
        p.error("--model is required")
    if args.threads < 1 or args.min_runs < 1 or args.warmup < 0 or args.min_seconds < 0 or args.max_seconds <= 0:
        p.error("--threads and --min-runs must be >= 1, --warmup and --min-seconds >= 0, --max-seconds > 0")
    return args


def input_batch(model: Model, inputs, seed: int):
    """The float batch to feed: the user's .npy (first sample) or seeded standard-normal noise."""
    np = _np()
    if inputs:
        try:
            x = np.load(inputs, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise RunnerError(f"cannot read inputs {inputs}: {exc}", "save a float32 .npy array") from exc
        return x
    c, h, w = model.chw_shape()
    n = model.input_shape[0] if model.input_shape[0] > 0 else 1
    return np.random.default_rng(seed).standard_normal((n, c, h, w)).astype(np.float32)


def _atomic_write(path: str, write, suffix: str) -> None:
    """Write through a temporary file in the same folder and rename it: never a half-written file.

    (ghostnet_edge.utils.atomic does the same on the host; this script may not import the package.)
    """
    fd, tmp = tempfile.mkstemp(prefix=".runner.", suffix=suffix, dir=os.path.dirname(os.path.abspath(path)))
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_json_atomic(path: str, obj: dict) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as fh:
            json.dump(obj, fh)

    _atomic_write(path, write, ".json")


def save_npy_atomic(path: str, array) -> None:
    _atomic_write(path, lambda tmp: _np().save(tmp, array), ".npy")  # np.save keeps a name ending in .npy


def _on_signal(signum, frame):
    raise KeyboardInterrupt


def measure(args: argparse.Namespace, progress: Progress, loader=None) -> dict:
    """Load, feed, time; returns the result object (status ok or partial).

    ``loader(path, runtime, threads, xnnpack) -> Model`` defaults to :func:`load_model`; the host's
    PyTorch runner passes its own so eager models go through this very loop.
    """
    result = {
        "ghostedge_runner": RESULT_VERSION, "status": "ok", "error": None, "hint": None,
        "model": args.model, "runtime": None, "runtime_version": None, "delegate": None,
        "threads": args.threads, "cpu": cpu_name(), "machine": platform.machine(),
        "python": platform.python_version(), "pid": os.getpid(), "input_shape": None,
        "input_dtype": None, "layout": None, "load_ms": None, "first_inference_ms": None,
        "warmup_runs": 0, "latencies_ms": [], "timed_seconds": 0.0, "peak_rss_mb": None,
        "markers": None, "outputs_saved": None,
    }
    t0 = time.perf_counter_ns()
    model = (loader or load_model)(args.model, args.runtime, args.threads, not args.no_xnnpack)
    result["load_ms"] = (time.perf_counter_ns() - t0) / 1e6
    result.update(runtime=model.runtime, runtime_version=model.version, delegate=model.delegate,
                  input_shape=model.input_shape, input_dtype=model.input_dtype, layout=model.layout)
    batch = input_batch(model, args.inputs, args.seed)
    native = model.prepare(batch)
    if args.save_outputs:
        # Outputs for the whole given batch (parity with PyTorch), computed before timing.
        save_npy_atomic(args.save_outputs, model.run(batch))
        result["outputs_saved"] = args.save_outputs
    model.set_input(native[: max(1, model.input_shape[0])])
    progress.emit(INFO_PREFIX, {k: result[k] for k in ("pid", "runtime", "runtime_version", "delegate", "threads",
                                                       "cpu", "input_shape", "input_dtype", "load_ms")})
    try:
        timing = timed_loop(model.invoke, args.warmup, args.min_runs, args.min_seconds, args.max_seconds,
                            args.markers, progress)
    except Stopped as exc:
        timing = exc.partial
        result["status"] = "partial"
        result["error"] = f"stopped after {len(timing['latencies_ns'])} timed runs ({exc})"
    result["first_inference_ms"] = timing["first_inference_ms"]
    result["warmup_runs"] = timing["warmup_runs"]
    result["latencies_ms"] = [v / 1e6 for v in timing["latencies_ns"]]
    result["timed_seconds"] = timing["timed_seconds"]
    if args.markers:
        result["markers"] = {"start_fd": MARKER_START_FD, "end_fd": MARKER_END_FD,
                             "runs_between": timing["marker_runs"]}
    result["peak_rss_mb"] = peak_rss_mb()  # before profiling: the profiled pass loads the model again
    if args.profile:
        result["profile"] = (profile_ops(args, model, native[: max(1, model.input_shape[0])])
                             if result["status"] == "ok" else {"error": "the timed run did not finish"})
    return result


def main(argv=None, loader=None) -> int:
    args = parse_args(argv)
    if args.probe:
        print(json.dumps(probe()))
        return EXIT_OK
    signal.signal(signal.SIGTERM, _on_signal)
    progress = Progress(sys.stderr)
    try:
        result = measure(args, progress, loader)
    except RunnerError as exc:
        result = {"ghostedge_runner": RESULT_VERSION, "status": "failed", "error": exc.message,
                  "hint": exc.hint, "kind": exc.kind, "model": args.model, "cpu": cpu_name()}
        code = exc.code
    except (KeyboardInterrupt, Stopped):
        result = {"ghostedge_runner": RESULT_VERSION, "status": "failed", "error": "stopped before timing",
                  "hint": None, "kind": "stopped", "model": args.model}
        code = EXIT_STOPPED
    else:
        code = EXIT_OK if result["status"] == "ok" else EXIT_STOPPED
    if args.json:
        write_json_atomic(args.json, result)
    try:
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()
    except (BrokenPipeError, OSError):
        pass
    return code


if __name__ == "__main__":
    sys.exit(main())
