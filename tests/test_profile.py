"""``ghostedge bench --profile``: per-operator time on the host, guest instructions per symbol on qemu.

Real runtimes, real artifacts: the tiny models of ``runtime/tiny_models.py`` and a seeded GhostNet
0.5x exported by the project's own pipeline (``export_artifacts``). The qemu tests skip, with the
build command in the reason, when qemu-user, the sysroot or this checkout's plugin is missing.

The rules the sums are held to:

- onnxruntime: the per-node kernel times of the profiled pass must be within 30 % of the pass's own
  whole-run time (its ``model_run`` events). On the small GhostNet this holds at 128x128; at its
  native 32x32 each of its ~280 nodes computes for ~3 us and onnxruntime's per-node profiling
  overhead (a few us per node, partly inside the timed window) dominates, so there the model is
  exported at 128x128.
- LiteRT: XNNPACK's (and TFLite's) operator events nest inside the interpreter's ``Invoke`` event,
  each truncated to whole microseconds, so their sum is at most ``Invoke`` + one microsecond per
  node, and at least 70 % of it (the rest is delegate glue between XNNPACK partitions).
- qemu-aarch64: the per-symbol counts are a partition of the plugin's marked count, so they must add
  up to it within 1 % (they do exactly).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ghostnet_edge.runtime import device_runner as dr
from ghostnet_edge.runtime import op_profile
from ghostnet_edge.runtime import profile as prof
from ghostnet_edge.runtime.bench import BenchConfig, bench
from ghostnet_edge.runtime.qemu import symbols
from ghostnet_edge.runtime.qemu import sysroot as sr
from ghostnet_edge.runtime.tiny_models import build_tiny_models

FAST = BenchConfig(warmup=2, min_runs=5, min_seconds=0.0, remeasure=0, profile=True, profile_runs=10)
ORT_TOLERANCE = 0.30
LITERT_MIN_COVERAGE = 0.70


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="session")
def tiny(cache_dir: Path) -> dict[str, Path]:
    return build_tiny_models(cache_dir / "runtime")


def _export(out: Path, calib: Path, input_size: int | None) -> dict[str, Path]:
    from ghostnet_edge.export.config import ExportConfig
    from ghostnet_edge.export.pipeline import export_artifacts

    export_artifacts(ExportConfig(model="ghostnet_cifar_050", calib=calib, out=out, input_size=input_size,
                                  num_calib=16, num_verify=4, threads=1, min_agreement=0.0))
    return {"onnx": out / "model.onnx", "onnx_int8": out / "model_int8.onnx", "fp32": out / "model_fp32.tflite",
            "int8": out / "model_int8.tflite"}


@pytest.fixture(scope="module")
def ghostnet(tmp_path_factory: pytest.TempPathFactory, imagenet_samples: Path) -> dict[str, Path]:
    """Seeded GhostNet 0.5x (CIFAR variant) at its native 32x32: ONNX and TFLite, FP32 and INT8."""
    return _export(tmp_path_factory.mktemp("ghostnet32") / "export", imagenet_samples, None)


@pytest.fixture(scope="module")
def ghostnet128(tmp_path_factory: pytest.TempPathFactory, imagenet_samples: Path) -> dict[str, Path]:
    """The same GhostNet exported at 128x128, so each node does enough work to be timed (see above)."""
    return _export(tmp_path_factory.mktemp("ghostnet128") / "export", imagenet_samples, 128)


@pytest.fixture(scope="module")
def qemu_ready(qemu_sysroot: sr.SysrootStatus) -> sr.SysrootStatus:
    return qemu_sysroot


def _profile(path: Path, config: BenchConfig = FAST, target: str = "host") -> Any:
    [res] = bench([path], target, config)
    assert res.status == "ok", res.error
    assert res.profile is not None and "error" not in res.profile, res.profile
    return res


def _check_rows(p: dict[str, Any]) -> None:
    rows = p["rows"]
    assert rows and all(r["cost"] >= 0 for r in rows)
    assert rows[0]["cost"] > 0 and p["total"] > 0
    assert [r["cost"] for r in rows] == sorted((r["cost"] for r in rows), reverse=True)
    assert sum(r["share"] for r in rows) == pytest.approx(1.0)
    assert sum(r["cost"] for r in rows) == pytest.approx(p["total"])


# ------------------------------------------------------------------------------- pure parts


def test_xnnpack_operator_names_map_to_tflite_ops() -> None:
    assert prof.tflite_op_of("Convolution (NHWC, QC8) DWConv") == "DEPTHWISE_CONV_2D"
    assert prof.tflite_op_of("Convolution (NHWC, F32) IGEMM") == "CONV_2D"
    assert prof.tflite_op_of("Fully Connected (NC, QS8, QC8W) GEMM").startswith("CONV_2D 1x1")
    assert prof.tflite_op_of("Copy (NC, X8)").startswith("CONCATENATION")
    assert prof.tflite_op_of("HardSwish (NC)") == "HARD_SWISH"
    assert prof.tflite_op_of("Mean (ND) Reduce2").startswith("MEAN")
    assert prof.tflite_op_of("Something New (ND)") == "?"


def test_kernel_families() -> None:
    lib = "/x/libpywrap_litert_common.so"
    assert symbols.family_of("xnn_qs8_qc8w_dwconv_minmax_fp32_ukernel_9p16c__neonv8_mla8_ld64", lib) == \
        "xnn_qs8_qc8w_dwconv"
    assert symbols.family_of("xnn_f32_gemm_minmax_ukernel_6x8__asm_aarch64_neonfma_cortex_a75_prfm", lib) == \
        "xnn_f32_gemm"
    assert symbols.family_of("xnn_xx_copy_ukernel__scalar_memcpy", lib) == "xnn_xx_copy"
    assert symbols.family_of("xnn_compute_igemm", lib) == "xnnpack (operator/runtime code)"
    mangled = "_ZN6tflite3ops7builtin11activations13HardSwishEvalEP13TfLiteContextP10TfLiteNode"
    assert symbols.family_of(mangled, lib) == "tflite::ops::builtin::activations"
    assert symbols.family_of("_ZN6tflite13optimized_ops4AddEv", lib) == "tflite::optimized_ops"
    assert symbols.family_of("unknown (libonnxruntime.so.1)", "/x/libonnxruntime.so.1") == \
        "unknown (libonnxruntime.so.1)"
    assert symbols.family_of("expf", "/lib/aarch64-linux-gnu/libm.so.6") == "libm"


def test_litert_events_aggregate_per_node_and_partition() -> None:
    """Two runs of: Invoke, XNNPACK ops 0-1 (partition 1), a builtin node, XNNPACK op 0 (partition 2)."""

    class Ev:
        def __init__(self, tag: str, t: int, us: int, md: int = 0) -> None:
            self.tag, self.event_type, self.elapsed_time_us, self.event_metadata1 = tag.encode(), t, us, md

    run = [Ev("Invoke", 1, 100), Ev("Convolution (NHWC, F32) IGEMM", 8, 40, 0), Ev("Add (ND)", 8, 5, 1),
           Ev("HARD_SWISH", 2, 30, 7), Ev("Fully Connected (NC, F32) GEMM", 8, 20, 0), Ev("Invoke", 32, 2**32)]
    raw = op_profile._litert_aggregate(run + run, runs=2, warmup=1, walls=[110_000, 110_000], xnnpack=True, threads=1)
    assert raw["runs"] == 2 and raw["reference_us"] == 200
    assert [(o["tag"], o["level"], o["partition"], o["total_us"], o["count"]) for o in raw["ops"]] == [
        ("Convolution (NHWC, F32) IGEMM", "xnnpack", 1, 80, 2), ("Add (ND)", "xnnpack", 1, 10, 2),
        ("HARD_SWISH", "tflite", None, 60, 2), ("Fully Connected (NC, F32) GEMM", "xnnpack", 2, 40, 2)]
    p = prof.summarize(raw)
    _check_rows(p)
    assert p["total"] == pytest.approx(0.095) and p["coverage"] == pytest.approx(0.95)
    assert p["rows"][0]["op"] == "CONV_2D" and p["rows"][1]["name"] == "node 7"
    assert {g["name"] for g in p["by_op"]} == {"CONV_2D", "ADD", "HARD_SWISH", "CONV_2D 1x1 / FULLY_CONNECTED"}


def test_elf_symbols_resolve_through_the_load_segments(tmp_path: Path) -> None:
    """A shared library with known functions: every function's address resolves to its own name."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler")
    src = tmp_path / "k.c"
    src.write_text("int kern_one(int x) { return x * 3 + 1; }\n"
                   "static int helper(int x) { return x ^ 5; }\n"
                   "int kern_two(int x) { int s = 0; for (int i = 0; i < x; i++) s += helper(i); return s; }\n")
    lib = tmp_path / "libk.so"
    subprocess.run([cc, "-shared", "-fPIC", "-O1", "-fno-inline", "-o", str(lib), str(src)], check=True)
    elf = symbols.read_elf_symbols(lib)
    assert elf.error is None and elf.table == "symtab"
    nm = subprocess.run(["nm", str(lib)], capture_output=True, text=True, check=False).stdout
    addrs = {parts[2]: int(parts[0], 16) for parts in (ln.split() for ln in nm.splitlines()) if len(parts) == 3}
    for name in ("kern_one", "kern_two", "helper"):
        assert elf.lookup(addrs[name]) == name
        assert elf.lookup(addrs[name] + 4) == name
    # The same through a fake guest map: the library mapped at 0x5500000000 with its file offsets.
    maps = "".join(f"{0x5500000000 + off:x}-{0x5500000000 + off + size:x} r-xp {off:08x} 00:00 0 {lib}\n"
                   for off, _vaddr, size in elf.segments)
    sym = symbols.Symbolizer(maps)
    vaddr = 0x5500000000 + _file_offset(elf, addrs["kern_two"])
    assert sym.resolve(vaddr) == (str(lib), "kern_two")
    assert sym.resolve(0x10)[1] == "unknown (no mapping)"


def _file_offset(elf: symbols.ElfSymbols, vaddr: int) -> int:
    for off, seg_vaddr, size in elf.segments:
        if seg_vaddr <= vaddr < seg_vaddr + size:
            return off + vaddr - seg_vaddr
    raise AssertionError("address outside every PT_LOAD segment")


# ------------------------------------------------------------------------------------ host, time


@pytest.mark.parametrize("name", ["tiny_fp32.tflite", "tiny_int8.tflite", "tiny_fp32.onnx", "tiny_int8.onnx"])
def test_host_profile_of_tiny_models(tiny: dict[str, Path], name: str) -> None:
    res = _profile(tiny[name])
    p = res.profile
    _check_rows(p)
    assert p["kind"] == "time" and p["runs"] == FAST.profile_runs
    ref = p["reference"]["value"]
    # Node events lie inside the whole-run event (one microsecond of truncation per node allowed).
    assert p["total"] <= ref + len(p["rows"]) * 1e-3
    if name.endswith(".tflite"):
        assert p["runtime"] == "litert" and any(r["level"] == "xnnpack" for r in p["rows"])
        assert p["rows"][0]["op"] == "CONV_2D"
    else:
        assert p["runtime"] == "onnxruntime" and all(r["level"] == "onnx" for r in p["rows"])
        assert any("Conv" in r["op"] for r in p["rows"][:2])


@pytest.mark.parametrize("key", ["onnx", "onnx_int8"])
def test_onnxruntime_node_times_add_up_within_30_percent(ghostnet128: dict[str, Path], key: str) -> None:
    p = _profile(ghostnet128[key]).profile
    _check_rows(p)
    ratio = p["total"] / p["reference"]["value"]
    assert abs(ratio - 1.0) <= ORT_TOLERANCE, (p["total"], p["reference"])
    assert p["wall_ms"] >= p["reference"]["value"] * 0.99


@pytest.mark.parametrize("key", ["fp32", "int8"])
def test_litert_operator_times_add_up(ghostnet128: dict[str, Path], key: str) -> None:
    p = _profile(ghostnet128[key]).profile
    _check_rows(p)
    ref = p["reference"]["value"]
    assert LITERT_MIN_COVERAGE * ref <= p["total"] <= ref + len(p["rows"]) * 1e-3
    assert any("partition" in n for n in p["notes"])
    # GhostNet's ghost modules concatenate: XNNPACK runs each CONCATENATION as copies.
    ops = {g["name"] for g in p["by_op"]}
    assert {"DEPTHWISE_CONV_2D", "CONV_2D 1x1 / FULLY_CONNECTED", "CONCATENATION / copy"} <= ops


def test_litert_builtin_kernels_are_profiled_as_tflite_nodes(ghostnet: dict[str, Path]) -> None:
    cfg = BenchConfig(**{**FAST.to_dict(), "xnnpack": False})
    p = _profile(ghostnet["int8"], cfg).profile
    _check_rows(p)
    assert all(r["level"] == "tflite" for r in p["rows"])
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "CONCATENATION"} <= {r["op"] for r in p["rows"]}
    assert all(isinstance(r["index"], int) for r in p["rows"])
    assert "builtin" in p["engine"]


def test_profile_is_taken_once_and_only_when_asked(tiny: dict[str, Path]) -> None:
    [plain] = bench([tiny["tiny_int8.onnx"]], "host", BenchConfig(warmup=1, min_runs=3, min_seconds=0.0, remeasure=0))
    assert plain.profile is None and "profile" not in plain.to_dict()


def test_runner_reports_why_tflite_runtime_has_no_profile(tiny: dict[str, Path]) -> None:
    if dr.module_version("tflite_runtime.interpreter") is None:
        pytest.skip("tflite-runtime is not installed on this host")
    [res] = bench([tiny["tiny_int8.tflite"]], "host", BenchConfig(**{**FAST.to_dict(), "runtime": "tflite-runtime"}))
    assert res.status == "ok" and "no per-operator profiler" in res.profile["error"]


# ---------------------------------------------------------------------------- qemu, instructions


def _check_symbols(res: Any) -> dict[str, Any]:
    p = res.profile
    assert p is not None and "error" not in p, p
    assert p["kind"] == "instructions"
    _check_rows(p)
    marked = res.instructions["marked_total"]
    rows_total = sum(r["cost"] for r in p["rows"]) * p["runs"]
    assert abs(rows_total - marked) <= 0.01 * marked
    assert p["sum_check"]["ratio"] == pytest.approx(1.0, abs=0.01)
    assert sum(f["cost"] for f in p["by_family"]) == pytest.approx(p["total"])
    assert p["total"] == pytest.approx(res.instructions["per_inference"], rel=0.01)
    return p


@pytest.mark.parametrize("key", ["int8", "fp32"])
def test_qemu_instructions_per_symbol_add_up(qemu_ready: sr.SysrootStatus, ghostnet: dict[str, Path],
                                             key: str) -> None:
    res = _profile(ghostnet[key], BenchConfig(profile=True, remeasure=0), target="qemu-aarch64")
    p = _check_symbols(res)
    families = [f["name"] for f in p["by_family"]]
    want = "xnn_qs8_qc8w_dwconv" if key == "int8" else "xnn_f32_dwconv"
    assert want in families[:4], families[:8]
    assert all(f.startswith("xnn_") or f.startswith("unknown") or f in ("xnnpack (operator/runtime code)",)
               for f in families[:2])
    assert p["symbol_tables"].get("libpywrap_litert_common.so") == "symtab"
    assert p["unknown_share"] < 0.2


def test_qemu_builtin_kernels_are_named(qemu_ready: sr.SysrootStatus, tiny: dict[str, Path]) -> None:
    res = _profile(tiny["tiny_int8.tflite"], BenchConfig(profile=True, remeasure=0, xnnpack=False),
                   target="qemu-aarch64")
    p = _check_symbols(res)
    assert any(f.startswith("tflite::") for f in (g["name"] for g in p["by_family"][:6]))


def test_qemu_onnxruntime_counts_add_up_even_when_stripped(qemu_ready: sr.SysrootStatus,
                                                           tiny: dict[str, Path]) -> None:
    res = _profile(tiny["tiny_fp32.onnx"], BenchConfig(profile=True, remeasure=0), target="qemu-aarch64")
    p = _check_symbols(res)
    # The wheel's onnxruntime is one stripped extension module: its code is counted, as unknown.
    assert p["by_family"][0]["name"].startswith("unknown (onnxruntime_pybind11_state")


# -------------------------------------------------------------------------------------------- CLI


def _cli(args: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="200", TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "ghostnet_edge", *args], capture_output=True, text=True,
                          env=env, timeout=600, check=False)


def test_cli_prints_the_table_and_writes_the_json(tiny: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "prof" / "profile.json"
    out.parent.mkdir()
    out.write_text("old")
    done = _cli(["bench", str(tiny["tiny_int8.tflite"]), str(tiny["tiny_fp32.onnx"]), "--min-runs", "3",
                 "--min-seconds", "0", "--warmup", "1", "--remeasure", "0", "--profile-json", str(out),
                 "--profile-top", "5"])
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "tiny_int8.tflite (int8, litert xnnpack 1t): top" in text and "by operator" in text
    assert "Convolution (NHWC, QC8) IGEMM" in text and "CONV_2D" in text
    assert "tiny_fp32.onnx (fp32, onnxruntime" in text and "share" in text and "covered" in text
    doc = json.loads(out.read_text())
    assert doc["ghostedge_profile"] == prof.PROFILE_VERSION and len(doc["results"]) == 2
    assert all(r["profile"]["rows"] for r in doc["results"])
    assert sorted(p.name for p in out.parent.iterdir()) == ["profile.json"]   # no temporary left


def test_profile_json_is_replaced_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that fails at the rename leaves the old file whole and no temporary file behind."""
    from ghostnet_edge.runtime.bench import BenchResult

    res = BenchResult(artifact="m.tflite", format="tflite", precision="int8", model="m", target="host",
                      profile={"kind": "time", "rows": []})
    out = tmp_path / "p.json"
    prof.write_profile_json(out, [res], "host", FAST)
    first = out.read_text()
    assert json.loads(first)["results"][0]["profile"] == {"kind": "time", "rows": []}

    def boom(src: Any, dst: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        prof.write_profile_json(out, [res, res], "host", FAST)
    assert out.read_text() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json"]


def test_cli_qemu_profile_table(qemu_ready: sr.SysrootStatus, tiny: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "q.json"
    done = _cli(["bench", str(tiny["tiny_int8.tflite"]), "--target", "qemu-aarch64", "--profile",
                 "--profile-json", str(out), "--profile-top", "5"])
    assert done.returncode == 0, done.stderr
    assert "on cortex-a76: top 5 of" in done.stdout and "by kernel" in done.stdout
    assert "xnn_qs8_qc8w_igemm" in done.stdout and "100.00% of the plugin's whole-inference count" in done.stdout
    doc = json.loads(out.read_text())
    assert doc["results"][0]["profile"]["sum_check"]["ratio"] == pytest.approx(1.0, abs=0.01)
