"""The qemu-aarch64 target: real qemu-user, the real aarch64 sysroot and runtimes, the real TCG plugin.

The sysroot is built once by ``bash scripts/build_sysroot.sh`` (CI's setup runs it); tests that need
it skip with that command in the reason when it is absent. Artifacts are a real GhostNet
(``ghostnet_cifar_050``, 32x32) exported by the project's ONNX and TFLite stages, so each emulated
inference stays short.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ghostnet_edge.errors import TargetError
from ghostnet_edge.runtime.qemu import build as qbuild
from ghostnet_edge.runtime.qemu import sysroot as sr
from ghostnet_edge.runtime.targets import qemu as tq

MODEL = "ghostnet_cifar_050"


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def status(qemu_sysroot: sr.SysrootStatus) -> sr.SysrootStatus:
    return qemu_sysroot


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory, status: sr.SysrootStatus) -> dict[str, Path]:
    """ONNX, TFLite FP32 and full-integer INT8 of a seeded GhostNet 0.5x at 32x32."""
    import torch

    from ghostnet_edge.export.onnx.convert import export_onnx
    from ghostnet_edge.export.tflite.convert import convert_onnx_to_tflite
    from ghostnet_edge.models import create_model, get_spec

    out = tmp_path_factory.mktemp("qemu-artifacts")
    spec = get_spec(MODEL)
    model = create_model(MODEL, seed=0).eval()
    with torch.no_grad():
        export_onnx(model, spec.input_size, out / "model.onnx")
    rep = np.random.default_rng(0).standard_normal((16, *spec.input_size)).astype(np.float32)
    convert_onnx_to_tflite(out / "model.onnx", out / "model_fp32.tflite", out / "model_int8.tflite",
                           representative=rep)
    return {"onnx": out / "model.onnx", "fp32": out / "model_fp32.tflite", "int8": out / "model_int8.tflite"}


def _guest(status: sr.SysrootStatus, cpu: str, code: str, plugin_out: Path | None = None) -> str:
    root = status.cpu_root(cpu)
    argv = [str(status.qemu), "-cpu", cpu, "-L", str(root)]
    if plugin_out is not None:
        argv += ["-plugin", f"{status.plugin},out={plugin_out}"]
    argv += [str(root / sr.GUEST_PYTHON), "-c", code]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=qbuild.guest_env(), check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


# ------------------------------------------------------------------------- pure parts (no qemu needed)


def test_cpu_max_is_refused_with_the_reason() -> None:
    with pytest.raises(TargetError) as err:
        tq.QemuTarget("max")
    assert "SME" in err.value.message and "int8" in err.value.message
    assert "cortex-a76" in err.value.hint
    from ghostnet_edge.runtime.targets import parse_target

    with pytest.raises(TargetError, match="refused"):
        parse_target("qemu-aarch64:max")
    with pytest.raises(TargetError, match="unknown qemu-aarch64 CPU model"):
        parse_target("qemu-aarch64:pentium")


def test_parse_spec_defaults_to_cortex_a76() -> None:
    assert tq.parse_spec("qemu-aarch64") == "cortex-a76"
    assert tq.parse_spec("qemu-aarch64:Cortex-A72") == "cortex-a72"
    assert tq.QemuTarget("cortex-a53").name == "qemu-aarch64:cortex-a53"
    assert tq.QemuTarget().name == "qemu-aarch64"


def test_missing_sysroot_names_the_build_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("qemu-aarch64") is None:
        pytest.skip("qemu-aarch64 not installed (the missing-qemu message is tested separately)")
    monkeypatch.setenv("GHOSTEDGE_CACHE", str(tmp_path))
    with pytest.raises(TargetError) as err:
        sr.check_sysroot()
    assert "sysroot" in err.value.message and str(tmp_path) in err.value.message
    assert sr.BUILD_COMMAND in err.value.hint
    assert not tq.available()
    # Through the target as bench() opens it: the same one error, before anything runs.
    with pytest.raises(TargetError, match="sysroot"):
        with tq.QemuTarget().session(None):
            pass


def test_missing_qemu_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(TargetError) as err:
        sr.check_sysroot()
    assert "qemu-aarch64" in err.value.message and "apt-get install qemu-user" in err.value.hint


def test_stale_stamp_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("qemu-aarch64") is None:
        pytest.skip("qemu-aarch64 not installed")
    monkeypatch.setenv("GHOSTEDGE_CACHE", str(tmp_path))
    root = sr.sysroot_dir()
    (root / "usr" / "bin").mkdir(parents=True)
    (root / sr.STAMP_NAME).write_text(json.dumps({"recipe_hash": "0" * 16}))
    with pytest.raises(TargetError, match="another recipe"):
        sr.check_sysroot()


def test_recipe_hash_follows_the_recipe(monkeypatch: pytest.MonkeyPatch) -> None:
    before = sr.recipe_hash()
    assert before == sr.recipe_hash()
    monkeypatch.setitem(sr.GUEST_WHEELS, "numpy", "1.26.3")
    assert sr.recipe_hash() != before


def test_cpuinfo_text_is_linux_arm64_format() -> None:
    text = sr.cpuinfo_text("cortex-a76", cores=2)
    blocks = [b for b in text.split("\n\n") if b]
    assert len(blocks) == 2
    assert "CPU implementer\t: 0x41" in blocks[0] and "CPU part\t: 0xd0b" in blocks[0]
    assert "asimddp" in blocks[1].split("Features\t:")[1].splitlines()[0]
    assert "asimddp" not in sr.cpuinfo_text("cortex-a72")


def test_instructions_from_counts() -> None:
    counts = {"marked_insns": 300, "simd_fp": 120, "load_store": 90, "other": 90, "marker_pairs": 1,
              "total_insns": 10_000, "unpaired_markers": 0, "vcpus": 1}
    out = tq.instructions_from_counts(counts, 3, "cortex-a76")
    assert out["per_inference"] == 100 and out["simd_fp"] == 40 and out["load_store"] == 30
    assert out["cpu_model"] == "cortex-a76" and "not time" in out["unit"] and out["counts_exact"]
    assert not tq.instructions_from_counts({**counts, "vcpus": 3}, 3, "cortex-a76")["counts_exact"]
    with pytest.raises(TargetError, match="markers"):
        tq.instructions_from_counts({**counts, "marker_pairs": 0}, 3, "cortex-a76")
    with pytest.raises(TargetError, match="markers"):
        tq.instructions_from_counts({**counts, "unpaired_markers": 1}, 3, "cortex-a76")


def test_parity_report_int8_exact_fp32_tolerance() -> None:
    host = np.array([[0.5, -1.0, 2.0], [1.0, 0.0, -0.25]], np.float32)
    assert tq.parity_report(host.copy(), host, "int8")["ok"]
    nudged = host + np.float32(1e-6)
    int8 = tq.parity_report(nudged, host, "int8")
    assert not int8["ok"] and int8["differing_values"] == 6 and int8["top1_agreement"] == 1.0
    assert tq.parity_report(nudged, host, "fp32")["ok"]
    assert not tq.parity_report(host + np.float32(1e-3), host, "fp32")["ok"]
    assert not tq.parity_report(host[:1], host, "fp32")["ok"]
    # int8 with a known output step: one step apart passes (ARM vs x86 requantization rounding), two fail.
    step = np.float32(0.25)
    one = tq.parity_report(host + step, host, "int8", output_step=float(step))
    assert one["ok"] and one["max_diff_steps"] == 1.0 and not one["exact"]
    assert not tq.parity_report(host + 2 * step, host, "int8", output_step=float(step))["ok"]


def test_parse_policy_candidates() -> None:
    text = ("libc6:arm64:\n  Installed: (none)\n  Candidate: 2.36-9+deb12u14\n  Version table:\n"
            "zlib1g:arm64:\n  Installed: (none)\n  Candidate: 1:1.2.13.dfsg-1\n"
            "libfoo:arm64:\n  Installed: (none)\n  Candidate: (none)\n")
    assert qbuild.parse_policy_candidates(text) == {"libc6": "2.36-9+deb12u14", "zlib1g": "1:1.2.13.dfsg-1",
                                                    "libfoo": None}


def test_guest_environment_is_fixed_and_single_threaded() -> None:
    env = qbuild.guest_env()
    assert env["PYTHONHASHSEED"] == "0" and env["OPENBLAS_NUM_THREADS"] == "1"
    assert env["PYTHONPATH"] == sr.GUEST_SITE and not any(k.startswith("QEMU") for k in env)


# ------------------------------------------------------------------------------ real qemu + sysroot


@pytest.mark.qemu
def test_build_is_a_quick_noop_when_current(status: sr.SysrootStatus) -> None:
    logs: list[str] = []
    rep = qbuild.build_sysroot(allow_apt=False, log=logs.append)
    assert not rep.built_root and not rep.built_plugin
    assert rep.seconds < 30 and any("up to date" in line for line in logs)
    assert rep.manifest["guest"]["onnxruntime"] == sr.GUEST_WHEELS["onnxruntime"]


@pytest.mark.qemu
@pytest.mark.parametrize("cpu", list(sr.CPU_MODELS))
def test_cpuinfo_matches_the_hwcaps_qemu_reports(status: sr.SysrootStatus, cpu: str) -> None:
    """The guest's /proc/cpuinfo (ours) and getauxval(AT_HWCAP) (QEMU's) name the same features."""
    code = r"""
import struct
H1 = "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs sb paca pacg".split()
H2 = "dcpodp sve2 sveaes svepmull svebitperm svesha3 svesm4 flagm2 frint svei8mm svef32mm svef64mm svebf16 i8mm bf16 dgh rng bti mte".split()
av = dict(struct.iter_unpack("<QQ", open("/proc/self/auxv", "rb").read()))
names = [n for i, n in enumerate(H1) if av.get(16, 0) >> i & 1] + [n for i, n in enumerate(H2) if av.get(26, 0) >> i & 1]
feat = [l.split(":", 1)[1].split() for l in open("/proc/cpuinfo") if l.startswith("Features")][0]
part = [l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("CPU part")][0]
print(" ".join(names)); print(" ".join(feat)); print(part)
"""
    hwcaps, features, part = _guest(status, cpu, code).strip().splitlines()
    assert hwcaps == features
    assert part == sr.CPU_MODELS[cpu].part


MARKED_TEMPLATE = r"""
import os
{setup}
def mark(fd):
    try:
        os.lseek(fd, 0, 0)
    except OSError:
        pass
mark(-1000001)
{work}
mark(-1000002)
"""


@pytest.mark.qemu
def test_plugin_counts_markers_and_classes(status: sr.SysrootStatus, tmp_path: Path) -> None:
    """Twice the work between the markers is twice the instructions; the classes follow the code."""
    jobs = {
        "loop1": ("", "x = 0\nfor i in range(2000):\n    x += i * 3"),
        "loop2": ("", "x = 0\nfor i in range(4000):\n    x += i * 3"),
        "numpy": ("import numpy as np\na = np.ones(50_000, np.float32)",
                  "for _ in range(10):\n    a *= np.float32(1.0001)"),
    }
    counts = {}
    for name, (setup, work) in jobs.items():
        out = tmp_path / f"{name}.json"
        _guest(status, "cortex-a76", MARKED_TEMPLATE.format(setup=setup, work=work), plugin_out=out)
        counts[name] = json.loads(out.read_text())
    for c in counts.values():
        assert c["marker_pairs"] == 1 and c["unpaired_markers"] == 0 and c["vcpus"] == 1
        assert c["simd_fp"] + c["load_store"] + c["other"] == c["marked_insns"]
        assert c["total_insns"] > c["marked_insns"] > 0
    loop1, loop2, vec = counts["loop1"], counts["loop2"], counts["numpy"]
    assert 1.8 < loop2["marked_insns"] / loop1["marked_insns"] < 2.1
    # The interpreter loop is integer code and memory traffic; NumPy's in-place multiply is NEON.
    assert loop2["simd_fp"] / loop2["marked_insns"] < 0.01
    assert loop2["load_store"] / loop2["marked_insns"] > 0.2
    assert vec["simd_fp"] / vec["marked_insns"] > 0.15


@pytest.mark.qemu
@pytest.mark.slow
def test_int8_tflite_exact_parity_and_counts_repeat(status: sr.SysrootStatus, artifacts: dict[str, Path]) -> None:
    first = tq.QemuTarget("cortex-a76").run(artifacts["int8"])
    second = tq.QemuTarget("cortex-a76").run(artifacts["int8"])
    for res in (first, second):
        assert res.status == "ok", res.error
        assert res.runtime == "litert" and res.precision == "int8" and res.target == "qemu-aarch64"
        assert res.latency_ms is None           # emulated time is never reported as latency
        assert res.parity["ok"] and res.parity["exact"] and res.parity["differing_values"] == 0
        ins = res.instructions
        assert ins["cpu_model"] == "cortex-a76" and ins["unit"].endswith("not time") and ins["counts_exact"]
        assert ins["per_inference"] > 100_000
        assert ins["simd_fp"] + ins["load_store"] + ins["other"] == pytest.approx(ins["per_inference"])
        assert ins["simd_fp"] > 0.2 * ins["per_inference"]
    # Two processes, same artifact and inputs: the count repeats to within a few instructions.
    assert abs(first.instructions["marked_total"] - second.instructions["marked_total"]) <= 64


@pytest.mark.qemu
def test_fp32_tflite_parity_within_1e5(status: sr.SysrootStatus, artifacts: dict[str, Path]) -> None:
    res = tq.QemuTarget().run(artifacts["fp32"])
    assert res.status == "ok", res.error
    assert res.precision == "fp32" and res.parity["ok"]
    assert res.parity["max_abs_diff"] <= 1e-5 and res.parity["top1_agreement"] == 1.0


@pytest.mark.qemu
def test_onnxruntime_imports_and_runs_under_emulation(status: sr.SysrootStatus, artifacts: dict[str, Path]) -> None:
    res = tq.QemuTarget().run(artifacts["onnx"])
    assert res.status == "ok", res.error
    assert res.runtime == "onnxruntime" and res.runtime_version == sr.GUEST_WHEELS["onnxruntime"]
    assert res.parity["ok"] and res.parity["max_abs_diff"] <= 1e-5
    assert res.instructions["per_inference"] > 100_000 and res.latency_ms is None


@pytest.mark.qemu
def test_cpu_model_changes_the_arm_code_path(status: sr.SysrootStatus, artifacts: dict[str, Path]) -> None:
    """Cortex-A72 has no dot-product instructions: same int8 outputs, a different (longer) kernel path."""
    a76 = tq.count_instructions(artifacts["int8"], "cortex-a76", runs=1)
    a72 = tq.QemuTarget("cortex-a72", runs=1).run(artifacts["int8"])
    assert a72.status == "ok", a72.error
    assert a72.parity["exact"]
    assert a72.instructions["cpu_model"] == "cortex-a72"
    assert a72.instructions["per_inference"] > 1.2 * a76["per_inference"]


@pytest.mark.qemu
def test_torch_runtime_and_threads_are_refused(status: sr.SysrootStatus, artifacts: dict[str, Path]) -> None:
    from ghostnet_edge.runtime.artifacts import inspect_artifact
    from ghostnet_edge.runtime.bench import BenchConfig

    info = inspect_artifact(artifacts["int8"])
    with tq.QemuTarget().session(BenchConfig()) as session:
        with pytest.raises(TargetError, match="single-threaded"):
            session.check([info], BenchConfig(threads=2))
        with pytest.raises(TargetError, match="not PyTorch"):
            session.check([info], BenchConfig(runtime="torch"))


# ----------------------------------------------------------------------------------------------- CLI


def _tiny_onnx(path: Path) -> Path:
    """A one-Conv ONNX classifier-shaped model (enough for `bench` to accept the file)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.full((4, 3, 3, 3), 0.1, np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["input", "w"], ["logits"], pads=[1, 1, 1, 1])], "tiny",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4, 8, 8])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_cli_bench_without_sysroot_fails_with_one_clear_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    if shutil.which("qemu-aarch64") is None:
        pytest.skip("qemu-aarch64 not installed (the missing-qemu message is tested separately)")
    from ghostnet_edge.cli import main

    model = _tiny_onnx(tmp_path / "tiny.onnx")
    monkeypatch.setenv("GHOSTEDGE_CACHE", str(tmp_path / "empty-cache"))
    out = tmp_path / "bench.json"
    assert main(["bench", "--target", "qemu-aarch64", str(model), "--json", str(out)]) == 2
    err = capsys.readouterr().err
    assert "error: the aarch64 sysroot for qemu-aarch64 is missing" in err
    assert "hint: build it" in err and sr.BUILD_COMMAND in err
    assert not out.exists()
    assert main(["bench", "--target", "qemu-aarch64:max", str(model)]) == 2
    assert "SME" in capsys.readouterr().err


@pytest.mark.qemu
def test_cli_bench_reports_instructions_not_latency(status: sr.SysrootStatus, artifacts: dict[str, Path],
                                                    tmp_path: Path) -> None:
    from ghostnet_edge.cli import main

    out = tmp_path / "bench.json"
    assert main(["bench", "--target", "qemu-aarch64", str(artifacts["int8"]), "--json", str(out)]) == 0
    res = json.loads(out.read_text())["results"][0]
    assert res["status"] == "ok" and res["target"] == "qemu-aarch64"
    assert res["latency_ms"] is None and res["first_inference_ms"] is None
    assert res["instructions"]["cpu_model"] == "cortex-a76" and res["instructions"]["per_inference"] > 100_000
