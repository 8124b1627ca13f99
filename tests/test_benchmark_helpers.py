"""The pure helpers of the benchmark scripts (benchmarks/ is a folder of scripts, loaded by path)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str) -> ModuleType:
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


def test_int8_speedup_names_the_operator_furthest_from_the_target() -> None:
    m = _load("int8_speedup")
    fp32 = {"CONV_2D": {"ms": 5.0, "kernels": ["F32 GEMM"]}, "DEPTHWISE_CONV_2D": {"ms": 1.3, "kernels": ["F32 DW"]},
            "CONCATENATION": {"ms": 0.5, "kernels": ["copy"]}}
    int8 = {"CONV_2D": {"ms": 4.5, "kernels": ["QS8 GEMM"]}, "DEPTHWISE_CONV_2D": {"ms": 1.0, "kernels": ["QS8 DW"]},
            "HARD_SWISH": {"ms": 2.0, "kernels": ["TFLite builtin kernel"]}}
    lim = m.limiting_operator(fp32, int8)
    assert lim["op"] == "HARD_SWISH" and lim["int8_ms"] == 2.0 and lim["fp32_ms"] == 0.0
    del int8["HARD_SWISH"]
    lim = m.limiting_operator(fp32, int8)  # 4.5 - 5.0 / 1.3 = 0.65 beats 1.0 - 1.3 / 1.3 = 0.0
    assert lim["op"] == "CONV_2D" and lim["kernels"] == ["QS8 GEMM"]
    assert m.limiting_operator({}, {}) is None


def test_int8_speedup_measures_mobilenetv3_in_both_hard_swish_forms() -> None:
    m = _load("int8_speedup")
    got = m.variants(["ghostnet_100", "mobilenetv3_large_100"])
    assert got == [("ghostnet_100", "arm"), ("mobilenetv3_large_100", "arm"), ("mobilenetv3_large_100", "x86")]
