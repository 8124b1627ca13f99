"""How an artifact's outputs are compared with PyTorch's: one definition for every format.

The export's checks of every artifact (:func:`check_fp32`, :func:`check_int8`), the per-layer reports
and the benchmarks all score outputs with these functions, so "agreement" or "SQNR" means the same
number wherever it is printed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from ghostnet_edge.export.config import DEFAULT_MIN_AGREEMENT, DEFAULT_TOLERANCE

# Identical tensors have no noise: their SQNR is reported as this many dB instead of infinity, which JSON
# (the manifest, the quantization report) cannot hold.
SQNR_CAP_DB = 200.0


def fp32_tolerance(reference: np.ndarray, tol: float) -> float:
    """The max |difference| an FP32 artifact may show: ``tol`` absolute, relative to the logits above 1.

    Float rounding grows with the magnitude of the logits (a network with logits in the hundreds differs
    from itself by more than 1e-4 between two runtimes), so every format is held to ``tol`` per unit of
    logit scale.
    """
    return float(tol * max(1.0, float(np.abs(reference).max())))


# An FP32 artifact may also differ from PyTorch by this many times PyTorch's own float32 error (its
# distance to the same network run in float64): two float32 implementations that each stay within e of
# the exact result can be 2e apart, and summation orders (Winograd, blocked GEMMs) add to that.
FLOAT_ERROR_FACTOR = 4.0


def fp32_allowed(reference: np.ndarray, tol: float, float_error: float | None = None) -> float:
    """The FP32 limit: :func:`fp32_tolerance`, or ``FLOAT_ERROR_FACTOR`` x PyTorch's own float32 error
    for an ill-conditioned network (such as one with untrained weights), whose logits no float32 runtime
    can reproduce more closely than PyTorch reproduces its own float64 result.

    Ill-conditioned means PyTorch's own error is above the default tolerance: for any other network a
    stricter ``tol`` the user asks for is held exactly, even where float32 cannot meet it.
    """
    base = fp32_tolerance(reference, tol)
    if float_error is None or float_error <= fp32_tolerance(reference, DEFAULT_TOLERANCE):
        return base
    return max(base, FLOAT_ERROR_FACTOR * float(float_error))


def max_abs_diff(reference: np.ndarray, test: np.ndarray) -> float:
    """Largest absolute difference between two arrays of the same shape."""
    return float(np.max(np.abs(np.asarray(reference, np.float64) - np.asarray(test, np.float64))))


def top1_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of rows whose arg-max class is the same in ``a`` and ``b``."""
    return float(np.mean(np.argmax(a, axis=1) == np.argmax(b, axis=1)))


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows whose arg-max is the label."""
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio, 10 log10(sum ref^2 / sum (ref - test)^2), in dB.

    Capped at +-``SQNR_CAP_DB``: identical tensors give the cap, an all-zero reference minus it.
    """
    ref = np.asarray(reference, dtype=np.float64)
    return db_from_sums(float(np.sum(ref ** 2)), float(np.sum((ref - np.asarray(test, dtype=np.float64)) ** 2)))


def db_from_sums(signal_sq: float, noise_sq: float) -> float:
    """``10 log10(signal_sq / noise_sq)`` capped at +-``SQNR_CAP_DB`` (no noise: the cap; no signal: minus it)."""
    if noise_sq <= 0.0:
        return SQNR_CAP_DB
    if signal_sq <= 0.0:
        return -SQNR_CAP_DB
    return max(-SQNR_CAP_DB, min(SQNR_CAP_DB, 10.0 * math.log10(signal_sq / noise_sq)))


def square_sums(reference: np.ndarray, test: np.ndarray) -> tuple[float, float]:
    """``(sum ref^2, sum (ref - test)^2)`` of one batch, for SQNRs summed over batches.

    float32 BLAS dot products: a per-layer report reads every activation of every image (hundreds of MB
    at 224x224), where float64 copies cost more than the models' own run. float32 accumulation errs by
    well under 1e-3 relative here, i.e. under 0.005 dB, below the 0.01 dB a report shows.
    """
    ref = np.ascontiguousarray(reference, dtype=np.float32).reshape(-1)
    diff = ref - np.asarray(test, dtype=np.float32).reshape(-1)
    return float(np.dot(ref, ref)), float(np.dot(diff, diff))


@dataclass
class Check:
    """One artifact's verification result (what the manifest and the CLI table show)."""

    artifact: str
    kind: str                     # "fp32" | "int8"
    num_images: int
    passed: bool
    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float
    logits_sqnr_db: float
    tolerance: float | None = None
    min_agreement: float | None = None
    accuracy_reference: float | None = None
    accuracy: float | None = None
    accuracy_delta: float | None = None
    reason: str = ""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _common(artifact: str, kind: str, ref: np.ndarray, out: np.ndarray,
            labels: np.ndarray | None) -> Check:
    if out.shape != ref.shape:
        raise ValueError(f"{artifact} gives logits of shape {out.shape}, PyTorch {ref.shape}")
    diff = np.abs(ref.astype(np.float64) - out.astype(np.float64))
    check = Check(artifact=artifact, kind=kind, num_images=int(len(ref)), passed=True,
                  max_abs_diff=float(diff.max()), mean_abs_diff=float(diff.mean()),
                  top1_agreement=top1_agreement(ref, out), logits_sqnr_db=sqnr_db(ref, out))
    if labels is not None:
        check.accuracy_reference = accuracy(ref, labels)
        check.accuracy = accuracy(out, labels)
        check.accuracy_delta = check.accuracy - check.accuracy_reference
    if not np.all(np.isfinite(out)):
        check.passed = False
        check.reason = "the artifact produced NaN or infinite logits"
    return check


def check_fp32(artifact: str, ref: np.ndarray, out: np.ndarray, tolerance: float = DEFAULT_TOLERANCE,
               labels: np.ndarray | None = None) -> Check:
    """FP32 passes when max |logit difference| to PyTorch is at most ``tolerance``."""
    check = _common(artifact, "fp32", ref, out, labels)
    check.tolerance = tolerance
    if check.passed and not check.max_abs_diff <= tolerance:
        check.passed = False
        check.reason = (f"max |logit difference| to PyTorch is {check.max_abs_diff:.3g}, above the "
                        f"tolerance {tolerance:.3g}")
    return check


def check_int8(artifact: str, ref: np.ndarray, out: np.ndarray, min_agreement: float = DEFAULT_MIN_AGREEMENT,
               labels: np.ndarray | None = None, enforce: bool = True) -> Check:
    """INT8 passes when its top-1 agrees with PyTorch on at least ``min_agreement`` of the images.

    ``enforce=False`` (a network without trained weights, whose near-tied logits make agreement
    meaningless) records the shortfall as a note instead of failing.
    """
    check = _common(artifact, "int8", ref, out, labels)
    check.min_agreement = min_agreement
    if check.passed and check.top1_agreement < min_agreement:
        msg = (f"top-1 agreement with PyTorch is {check.top1_agreement:.3f} on {check.num_images} held-out "
               f"images, below the minimum {min_agreement:.3f}")
        if enforce:
            check.passed = False
            check.reason = msg
        else:
            check.notes.append(msg + " (not enforced: the network has no trained weights)")
    return check
