"""Per-operator profiles for the device runner's ``--profile`` (companion of ``device_runner.py``).

Like ``tflite_check.py`` this file sits next to ``device_runner.py`` wherever the runner runs (host,
ssh boards, the qemu guest) and needs only the standard library, NumPy and the runtime itself; it
imports nothing from ghostnet_edge. The runner loads it only when ``--profile`` is given.

``--profile``: after the timed loop, a separate profiled pass of ``--profile-runs`` inferences
(profiling changes timings a little, so the latency numbers above never include it). Per-operator
events are aggregated here, per node, so what travels back is small; the host turns them into the
table (ghostnet_edge/runtime/profile.py).

- onnxruntime: SessionOptions.enable_profiling, the JSON trace's per-node "*_kernel_time" events
  that fall inside the timed "model_run" events (warm-up runs are left out).
- ai-edge-litert: the classic Interpreter's Python API exposes no profiler, so the pass runs the same
  file through LiteRT's CompiledModel C API (libLiteRt.so in the wheel, through ctypes; the wheel
  ships no headers, the declarations follow litert/c/litert_profiler.h and litert_profiler_event.h
  as of 2.3), with the runtime option enable_profiling and the same CPU path: XNNPACK with
  num_threads, or the builtin kernels (kernel_mode "builtin") for --no-xnnpack. XNNPACK reports its
  own operators (one event per XNNPACK operator of each delegated partition); ops it did not take
  run as TFLite builtins and are reported as TFLite nodes.
- tflite-runtime: no profiler reachable from Python (reported as the reason).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time

# LiteRtProfilerEventType (litert/c/litert_profiler_event.h)
EV_DEFAULT, EV_OPERATOR, EV_DELEGATE_OPERATOR, EV_DELEGATE_PROFILED_OPERATOR = 1, 2, 4, 8
LITERT_CPU = 1  # kLiteRtHwAcceleratorCpu
LITERT_LOCK_WRITE = 1


class ProfileUnavailable(Exception):
    """This runtime offers no per-operator profile here; the message says why."""


class ProfileError(Exception):
    """A profiler call failed."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def _ort_profile(path: str, threads: int, native, runs: int, warmup: int) -> dict:
    import onnxruntime as ort

    tmp = tempfile.mkdtemp(prefix="ghostedge-ortprof-")
    try:
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(tmp, "ort")
        sess = ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])
        feed = {sess.get_inputs()[0].name: native}
        for _ in range(warmup):
            sess.run(None, feed)
        walls = []
        for _ in range(runs):
            t0 = time.perf_counter_ns()
            sess.run(None, feed)
            walls.append(time.perf_counter_ns() - t0)
        trace = sess.end_profiling()
        with open(trace) as fh:
            events = json.load(fh)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    model_runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                        key=lambda e: e["ts"])[warmup:]
    windows = [(int(e["ts"]), int(e["ts"]) + int(e["dur"])) for e in model_runs]
    ops = {}
    for e in events:
        name = e.get("name", "")
        if e.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        ts = int(e["ts"])
        if not any(lo <= ts <= hi for lo, hi in windows):
            continue
        args = e.get("args") or {}
        node = name[: -len("_kernel_time")]
        rec = ops.get(node)
        if rec is None:
            idx = args.get("node_index")
            rec = ops[node] = {"pos": len(ops), "tag": node, "op": args.get("op_name", "?"), "level": "onnx",
                               "node": int(idx) if str(idx).isdigit() else None,
                               "kernel": args.get("provider", ""), "total_us": 0, "count": 0}
        rec["total_us"] += int(e["dur"])
        rec["count"] += 1
    return {"source": "onnxruntime SessionOptions.enable_profiling (per-node kernel time)",
            "engine": "onnxruntime " + ort.__version__, "runs": len(windows), "warmup": warmup,
            "wall_us": sum(walls) / 1000.0, "reference_us": sum(hi - lo for lo, hi in windows),
            "reference_name": "onnxruntime model_run event", "resolution_us": 1, "ops": list(ops.values()),
            "notes": ["ONNX nodes of the graph onnxruntime optimised (fused nodes such as QLinearConv or "
                      "FusedConv appear as such)"]}


def _litert_lib():
    import ctypes

    try:
        import ai_edge_litert
    except ImportError as exc:
        raise ProfileUnavailable("ai-edge-litert is not installed") from exc
    path = os.path.join(os.path.dirname(ai_edge_litert.__file__), "libLiteRt.so")
    if not os.path.isfile(path):
        raise ProfileUnavailable(f"this ai-edge-litert has no libLiteRt.so ({path}), so no LiteRT profiler")
    lib = ctypes.CDLL(path)
    for name in ("LiteRtCompiledModelGetProfiler", "LiteRtStartProfiler", "LiteRtGetNumProfilerEvents",
                 "LiteRtGetProfilerEvents", "LiteRtCreateOpaqueOptions", "LiteRtAddOpaqueOptions"):
        if not hasattr(lib, name):
            raise ProfileUnavailable(f"{path} does not export {name} (LiteRT older than 2.x?)")
    return lib


def _litert_profile(path: str, threads: int, xnnpack: bool, native, runs: int, warmup: int) -> dict:
    import ctypes as C

    lib = _litert_lib()
    P = C.c_void_p
    libc = C.CDLL(None)
    libc.strdup.restype = C.c_void_p
    libc.strdup.argtypes = [C.c_char_p]

    class MemoryUsage(C.Structure):
        _fields_ = [("total_allocated_bytes", C.c_size_t), ("in_use_allocated_bytes", C.c_size_t),
                    ("private_footprint_bytes", C.c_size_t)]

    class ProfiledEventData(C.Structure):
        _fields_ = [("tag", C.c_char_p), ("event_type", C.c_int), ("start_timestamp_us", C.c_uint64),
                    ("elapsed_time_us", C.c_uint64), ("begin_mem_usage", MemoryUsage),
                    ("end_mem_usage", MemoryUsage), ("event_metadata1", C.c_uint64),
                    ("event_metadata2", C.c_uint64), ("event_source", C.c_int)]

    class Layout(C.Structure):
        _fields_ = [("bits", C.c_uint32), ("dimensions", C.c_int32 * 8), ("strides", C.c_uint32 * 8)]

    class RankedTensorType(C.Structure):
        _fields_ = [("element_type", C.c_int), ("layout", Layout)]

    sigs = {
        "LiteRtCreateEnvironment": [C.c_int, P, C.POINTER(P)], "LiteRtDestroyEnvironment": [P],
        "LiteRtCreateModelFromFile": [P, C.c_char_p, C.POINTER(P)], "LiteRtDestroyModel": [P],
        "LiteRtCreateOptions": [C.POINTER(P)], "LiteRtDestroyOptions": [P],
        "LiteRtSetOptionsHardwareAccelerators": [P, C.c_int],
        "LiteRtCreateOpaqueOptions": [C.c_char_p, P, P, C.POINTER(P)], "LiteRtAddOpaqueOptions": [P, P],
        "LiteRtCreateCompiledModel": [P, P, P, C.POINTER(P)], "LiteRtDestroyCompiledModel": [P],
        "LiteRtGetModelSignature": [P, C.c_size_t, C.POINTER(P)],
        "LiteRtGetNumSignatureInputs": [P, C.POINTER(C.c_size_t)],
        "LiteRtGetNumSignatureOutputs": [P, C.POINTER(C.c_size_t)],
        "LiteRtGetSignatureInputTensorByIndex": [P, C.c_size_t, C.POINTER(P)],
        "LiteRtGetSignatureOutputTensorByIndex": [P, C.c_size_t, C.POINTER(P)],
        "LiteRtGetRankedTensorType": [P, C.POINTER(RankedTensorType)],
        "LiteRtGetCompiledModelInputBufferRequirements": [P, C.c_size_t, C.c_size_t, C.POINTER(P)],
        "LiteRtGetCompiledModelOutputBufferRequirements": [P, C.c_size_t, C.c_size_t, C.POINTER(P)],
        "LiteRtCreateManagedTensorBufferFromRequirements": [P, C.POINTER(RankedTensorType), P, C.POINTER(P)],
        "LiteRtDestroyTensorBuffer": [P], "LiteRtGetTensorBufferPackedSize": [P, C.POINTER(C.c_size_t)],
        "LiteRtLockTensorBuffer": [P, C.POINTER(P), C.c_int], "LiteRtUnlockTensorBuffer": [P],
        "LiteRtRunCompiledModel": [P, C.c_size_t, C.c_size_t, C.POINTER(P), C.c_size_t, C.POINTER(P)],
        "LiteRtCompiledModelGetProfiler": [P, C.POINTER(P)], "LiteRtStartProfiler": [P],
        "LiteRtStopProfiler": [P], "LiteRtResetProfiler": [P],
        "LiteRtGetNumProfilerEvents": [P, C.POINTER(C.c_int)],
        "LiteRtGetProfilerEvents": [P, C.c_int, C.POINTER(ProfiledEventData)],
    }
    f = {}
    for name, argtypes in sigs.items():
        fn = getattr(lib, name)
        fn.argtypes = argtypes
        fn.restype = None if name.startswith("LiteRtDestroy") else C.c_int
        f[name] = fn

    def check(status, what):
        if status != 0:
            raise ProfileError(f"LiteRT profiler: {what} failed (LiteRT status {status})",
                              "profile with --runtime onnxruntime on the .onnx file, or report this")

    cleanup = []
    try:
        env, model, opts, compiled = P(), P(), P(), P()
        check(f["LiteRtCreateEnvironment"](0, None, C.byref(env)), "creating the environment")
        cleanup.append(("LiteRtDestroyEnvironment", env))
        check(f["LiteRtCreateModelFromFile"](env, path.encode(), C.byref(model)), "loading the model")
        cleanup.append(("LiteRtDestroyModel", model))
        check(f["LiteRtCreateOptions"](C.byref(opts)), "creating options")
        cleanup.append(("LiteRtDestroyOptions", opts))
        check(f["LiteRtSetOptionsHardwareAccelerators"](opts, LITERT_CPU), "selecting the CPU")
        cpu = f"num_threads = {int(threads)}\n" + ("" if xnnpack else 'kernel_mode = "builtin"\n')
        free = C.cast(libc.free, P)
        # Opaque options as LiteRT's own option classes make them: an identifier and a TOML payload
        # (malloc'ed: LiteRT frees it with the destructor given).
        for ident, toml in (("runtime_options_string", "enable_profiling = true\n"), ("xnnpack", cpu)):
            opaque = P()
            check(f["LiteRtCreateOpaqueOptions"](ident.encode(), libc.strdup(toml.encode()), free, C.byref(opaque)),
                  f"creating the {ident} options")
            check(f["LiteRtAddOpaqueOptions"](opts, opaque), f"adding the {ident} options")
        check(f["LiteRtCreateCompiledModel"](env, model, opts, C.byref(compiled)), "compiling the model")
        cleanup.append(("LiteRtDestroyCompiledModel", compiled))
        sig = P()
        n_in, n_out = C.c_size_t(), C.c_size_t()
        check(f["LiteRtGetModelSignature"](model, 0, C.byref(sig)), "reading signature 0")
        check(f["LiteRtGetNumSignatureInputs"](sig, C.byref(n_in)), "counting inputs")
        check(f["LiteRtGetNumSignatureOutputs"](sig, C.byref(n_out)), "counting outputs")
        buffers = []
        for kind, count in (("Input", n_in.value), ("Output", n_out.value)):
            bufs = []
            for i in range(count):
                tensor, req, buf, ttype = P(), P(), P(), RankedTensorType()
                check(f[f"LiteRtGetSignature{kind}TensorByIndex"](sig, i, C.byref(tensor)), f"{kind} tensor {i}")
                check(f["LiteRtGetRankedTensorType"](tensor, C.byref(ttype)), f"{kind} tensor {i} type")
                check(f[f"LiteRtGetCompiledModel{kind}BufferRequirements"](compiled, 0, i, C.byref(req)),
                      f"{kind} buffer requirements")
                check(f["LiteRtCreateManagedTensorBufferFromRequirements"](env, C.byref(ttype), req, C.byref(buf)),
                      f"allocating {kind} buffer {i}")
                cleanup.append(("LiteRtDestroyTensorBuffer", buf))
                bufs.append(buf)
            buffers.append(bufs)
        ins, outs = buffers
        size, mem = C.c_size_t(), P()
        check(f["LiteRtGetTensorBufferPackedSize"](ins[0], C.byref(size)), "sizing the input")
        data = native.tobytes()
        if size.value != len(data):
            raise ProfileError(f"LiteRT profiler: the input buffer has {size.value} bytes, the input {len(data)}",
                              "report this")
        check(f["LiteRtLockTensorBuffer"](ins[0], C.byref(mem), LITERT_LOCK_WRITE), "locking the input")
        C.memmove(mem, data, len(data))
        check(f["LiteRtUnlockTensorBuffer"](ins[0]), "unlocking the input")
        in_arr, out_arr = (P * len(ins))(*ins), (P * len(outs))(*outs)

        def run():
            check(f["LiteRtRunCompiledModel"](compiled, 0, len(ins), in_arr, len(outs), out_arr), "running the model")

        for _ in range(warmup):
            run()
        prof = P()
        check(f["LiteRtCompiledModelGetProfiler"](compiled, C.byref(prof)), "getting the profiler")
        if not prof.value:
            raise ProfileUnavailable("LiteRT created no profiler for this compiled model")
        check(f["LiteRtResetProfiler"](prof), "resetting the profiler")
        check(f["LiteRtStartProfiler"](prof), "starting the profiler")
        walls = []
        for _ in range(runs):
            t0 = time.perf_counter_ns()
            run()
            walls.append(time.perf_counter_ns() - t0)
        check(f["LiteRtStopProfiler"](prof), "stopping the profiler")
        n = C.c_int()
        check(f["LiteRtGetNumProfilerEvents"](prof, C.byref(n)), "counting events")
        events = (ProfiledEventData * n.value)()
        if n.value:
            check(f["LiteRtGetProfilerEvents"](prof, n.value, events), "reading events")
        return _litert_aggregate(events, runs, warmup, walls, xnnpack, threads)
    finally:
        for name, handle in reversed(cleanup):
            f[name](handle)


def _litert_aggregate(events, runs: int, warmup: int, walls: list, xnnpack: bool, threads: int) -> dict:
    """Per-node sums of LiteRT profiler events, keyed by position in each run (stable from run to run).

    One run's events: "Invoke" (DEFAULT) and then, in execution order, one OPERATOR event per TFLite
    node the interpreter ran itself (metadata1 = node index) and one DELEGATE(_PROFILED)_OPERATOR
    event per XNNPACK operator (metadata1 = operator index inside its delegated partition; a new
    partition starts when that index does not grow).
    """
    ops, invokes, other = [], 0, {}
    pos, run_no, partition, last_level, last_md = -1, 0, 0, None, -1
    unstable = 0
    for e in events:
        tag = (e.tag or b"").decode("utf-8", "replace")
        t = int(e.event_type)
        if t == EV_DEFAULT and tag == "Invoke":
            run_no += 1
            pos, partition, last_level, last_md = 0, 0, None, -1
            invokes += int(e.elapsed_time_us)
            continue
        if t in (EV_OPERATOR, EV_DELEGATE_OPERATOR, EV_DELEGATE_PROFILED_OPERATOR) and pos >= 0:
            level = "tflite" if t == EV_OPERATOR else "xnnpack"
            md = int(e.event_metadata1)
            if level == "xnnpack" and (last_level != "xnnpack" or md <= last_md):
                partition += 1
            last_level, last_md = level, md
            if run_no == 1:
                ops.append({"pos": pos, "tag": tag, "level": level, "node": md,
                            "partition": partition if level == "xnnpack" else None,
                            "total_us": 0, "count": 0})
            if pos < len(ops) and ops[pos]["tag"] == tag:
                ops[pos]["total_us"] += int(e.elapsed_time_us)
                ops[pos]["count"] += 1
            else:
                unstable += 1
            pos += 1
        elif t == EV_DEFAULT:
            other[tag] = other.get(tag, 0) + int(e.elapsed_time_us)
    notes = []
    if xnnpack:
        n_part = max([o["partition"] or 0 for o in ops] or [0])
        n_builtin = sum(1 for o in ops if o["level"] == "tflite")
        notes.append(f"XNNPACK took the graph in {n_part} partition(s); its per-operator events are shown "
                     f"(XNNPACK operator names, e.g. 'Fully Connected' is how it runs 1x1 convolutions); "
                     f"{n_builtin} TFLite node(s) ran outside XNNPACK as builtin kernels")
    if unstable:
        notes.append(f"{unstable} event(s) did not line up with the first run's order and were left out")
    return {"source": "LiteRT profiler (CompiledModel C API via ctypes, runtime option enable_profiling)",
            "engine": "LiteRT CompiledModel, CPU " + (f"XNNPACK, {threads} thread(s)" if xnnpack else
                                                      "builtin kernels (kernel_mode builtin)"),
            "runs": run_no, "warmup": warmup, "wall_us": sum(walls) / 1000.0, "reference_us": invokes,
            "reference_name": "LiteRT 'Invoke' event (interpreter invoke)", "resolution_us": 1,
            "overhead_us": other, "ops": ops, "notes": notes}


def profile(path: str, runtime: str, threads: int, xnnpack: bool, native, runs: int, warmup: int) -> dict:
    """The per-operator profile of ``path`` on ``runtime`` (see the module docstring): ``runs`` profiled
    inferences of the prepared input ``native`` after ``warmup`` untimed ones. Never raises: a runtime
    without a profiler, or a profiler call that fails, gives ``{"error": ..., "runtime": ...}``."""
    try:
        if runtime == "onnxruntime":
            out = _ort_profile(path, threads, native, runs, warmup)
        elif runtime == "litert":
            out = _litert_profile(path, threads, xnnpack, native, runs, warmup)
        else:
            raise ProfileUnavailable(f"{runtime}'s Python API exposes no per-operator profiler "
                                     "(install ai-edge-litert on this machine to profile .tflite files)")
    except ProfileUnavailable as exc:
        return {"error": str(exc), "runtime": runtime}
    except ProfileError as exc:
        return {"error": exc.message, "hint": exc.hint, "runtime": runtime}
    except (OSError, ValueError, RuntimeError, AttributeError, KeyError) as exc:
        return {"error": f"profiling failed: {type(exc).__name__}: {exc}", "runtime": runtime}
    out["runtime"] = runtime
    return out
