"""Published reference numbers, copied into the package because a user's checkout has no ``../shared``.

Sources
-------
- Han, Wang, Tian, Guo, Xu, Xu: *GhostNet: More Features from Cheap Operations*, CVPR 2020.
  ``FIGURE7``: Figure 7, ImageNet top-1 against latency on an ARM phone with TFLite, batch 1. The
  points were **read off the published plot by eye, about +-1 ms and +-0.1 pp**; the paper does not
  say which width each point is, so no width is attached to them here.
  ``TABLE7``: Table 7 (ImageNet), as printed.
- Howard et al.: *Searching for MobileNetV3*, ICCV 2019, Table 3: MobileNetV3-Small 1.0 (67.4 %),
  which GhostNet's Table 7 does not list but the latency-only sweep measures.

The latency-only curve pairs *our measured* widths with these *published* accuracies; every plot
and table that uses them says "published accuracy" so nobody mistakes them for our own training.
"""

from __future__ import annotations

from dataclasses import dataclass

FIGURE7_SOURCE = (
    "GhostNet (Han et al., CVPR 2020) Figure 7: ImageNet top-1 vs latency on an ARM phone, TFLite, "
    "batch 1; read off the plot by eye, +-1 ms, +-0.1 pp"
)
TABLE7_SOURCE = "GhostNet (Han et al., CVPR 2020) Table 7, ImageNet"
MBV3_SOURCE = "MobileNetV3 (Howard et al., ICCV 2019) Table 3, ImageNet"


@dataclass(frozen=True)
class Figure7Point:
    """One marker of the paper's Figure 7 (family, phone latency in ms, ImageNet top-1 in %)."""

    family: str
    latency_ms: float
    top1_pct: float


@dataclass(frozen=True)
class PublishedAccuracy:
    """One row of a published ImageNet table, keyed by our model name."""

    model: str          # our spec name, e.g. "ghostnet_100"
    family: str         # the paper's family label
    width: float
    params_m: float | None
    flops_m: float | None
    top1_pct: float
    top5_pct: float | None
    source: str


FIGURE7: tuple[Figure7Point, ...] = (
    Figure7Point("GhostNet", 31.0, 73.9),
    Figure7Point("GhostNet", 34.0, 74.3),
    Figure7Point("GhostNet", 41.0, 75.2),
    Figure7Point("GhostNet", 47.0, 75.7),
    Figure7Point("GhostNet", 54.0, 76.1),
    Figure7Point("GhostNet", 67.0, 76.9),
    Figure7Point("MobileNetV3", 32.0, 73.3),
    Figure7Point("MobileNetV3", 38.5, 74.3),
    Figure7Point("MobileNetV3", 46.5, 75.2),
    Figure7Point("MobileNetV3", 66.0, 76.6),
    Figure7Point("MobileNetV2", 81.5, 74.4),
)

TABLE7: tuple[PublishedAccuracy, ...] = (
    PublishedAccuracy("ghostnet_050", "GhostNet", 0.5, 2.6, 42, 66.2, 86.6, TABLE7_SOURCE),
    PublishedAccuracy("ghostnet_100", "GhostNet", 1.0, 5.2, 141, 73.9, 91.4, TABLE7_SOURCE),
    PublishedAccuracy("ghostnet_130", "GhostNet", 1.3, 7.3, 226, 75.7, 92.7, TABLE7_SOURCE),
    PublishedAccuracy("mobilenetv3_small_075", "MobileNetV3-Small", 0.75, 2.4, 44, 65.4, None, TABLE7_SOURCE),
    PublishedAccuracy("mobilenetv3_large_075", "MobileNetV3-Large", 0.75, 4.0, 155, 73.3, None, TABLE7_SOURCE),
    PublishedAccuracy("mobilenetv3_large_100", "MobileNetV3-Large", 1.0, 5.4, 219, 75.2, None, TABLE7_SOURCE),
    PublishedAccuracy("mobilenetv2_035", "MobileNetV2", 0.35, 1.7, 59, 60.3, 82.9, TABLE7_SOURCE),
    PublishedAccuracy("mobilenetv2_100", "MobileNetV2", 1.0, 3.5, 300, 71.8, 91.0, TABLE7_SOURCE),
)

TIMM_SOURCE = "timm 1.0.31 weights' published ImageNet top-1 (GhostNetV2 NeurIPS 2022, GhostNetV3 2024)"
REPGHOST_SOURCE = "RepGhost (Chen et al., 2022), ImageNet"

# Not in GhostNet's Table 7; from the MobileNetV3 paper so the Small 1.0 point is not left bare, and the
# successors' published figures (parameters and MACs of the deployed form, as ghostedge counts them).
OTHER_PUBLISHED: tuple[PublishedAccuracy, ...] = (
    PublishedAccuracy("mobilenetv3_small_100", "MobileNetV3-Small", 1.0, 2.5, 56, 67.4, None, MBV3_SOURCE),
    PublishedAccuracy("ghostnetv2_100", "GhostNetV2", 1.0, 6.2, 167, 75.19, None, TIMM_SOURCE),
    PublishedAccuracy("ghostnetv2_130", "GhostNetV2", 1.3, 9.0, 269, 76.75, None, TIMM_SOURCE),
    PublishedAccuracy("ghostnetv2_160", "GhostNetV2", 1.6, 12.4, 399, 77.84, None, TIMM_SOURCE),
    PublishedAccuracy("ghostnetv3_100", "GhostNetV3", 1.0, 6.1, 167, 76.94, None, TIMM_SOURCE),
    PublishedAccuracy("repghostnet_100", "RepGhostNet", 1.0, 4.1, 142, 74.2, None, REPGHOST_SOURCE),
)

# The widths the paper measures, in the order the latency-only sweep runs them (MobileNetV2 last:
# it is optional and the slowest to convert).
LATENCY_ONLY_MODELS: tuple[str, ...] = (
    "ghostnet_050", "ghostnet_100", "ghostnet_130",
    "mobilenetv3_large_075", "mobilenetv3_large_100",
    "mobilenetv3_small_075", "mobilenetv3_small_100",
    "mobilenetv2_100",
)
# The successors at 1.0x, for `ghostedge curve --latency-only --models ...` beside V1 (not in the default
# sweep: each adds minutes of conversion and emulation).
SUCCESSOR_MODELS: tuple[str, ...] = ("ghostnetv2_100", "ghostnetv3_100", "repghostnet_100")


def published_accuracy(model: str) -> PublishedAccuracy | None:
    """The published ImageNet row for one of our model names, or None when no paper lists it."""
    for row in TABLE7 + OTHER_PUBLISHED:
        if row.model == model:
            return row
    return None


def figure7_points(family: str | None = None) -> list[Figure7Point]:
    """Figure 7's markers, optionally for one family ("GhostNet", "MobileNetV3", "MobileNetV2")."""
    return [p for p in FIGURE7 if family is None or p.family == family]
