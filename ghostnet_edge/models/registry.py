"""Named model variants and their default configs (timm style), and the one place models are created.

A name says architecture, width and input form: ``ghostnet_100`` (ImageNet, 224x224), ``ghostnet_cifar_050``
(the same network for 32x32 inputs: stem stride 1, 10 classes, CIFAR statistics), ``ghost_vgg16_cifar_s4``
(VGG-16 with Ghost modules of ratio 4). Any width parses (``ghostnet_075``); the names in
:func:`list_models` are the ones shipped and tested. The later GhostNet family (``ghostnetv2_*``,
``ghostnetv3_*``, ``repghostnet_*``) takes timm's names and defaults (224x224, crop 0.875, bicubic);
GhostNetV3 and RepGhostNet also have a folded (deployed) form: ``create_model(name, reparameterized=True)``.

Nothing heavy is imported at module level: :func:`get_spec`, :func:`parse_model_name` and
:func:`check_input_size` are plain Python, so data and CLI code can read a spec without loading torch.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from ghostnet_edge.errors import ModelError

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn


@dataclass(frozen=True)
class ModelSpec:
    name: str                 # "ghostnet_100", "ghostnet_cifar_050", "mobilenetv3_large_100", ...
    arch: str                 # "ghostnet" | "ghostnetv2" | "ghostnetv3" | "repghostnet" | "mobilenetv3_large" | ...
    width: float
    num_classes: int          # 1000 for ImageNet forms, 10 for CIFAR forms
    input_size: tuple[int, int, int]   # (C, H, W): (3, 224, 224) or (3, 32, 32)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize_size: int          # shorter side before the centre crop: 256 for 224, 32 for 32
    interpolation: str        # "bilinear" ("bicubic" for timm's later GhostNets)
    stem_stride: int          # 2 for ImageNet forms, 1 for the small-input (32x32) forms
    dropout: float


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_CROP_PCT = 0.875   # 224 of 256: resize_size = round(input / crop_pct) for the ImageNet forms

MIN_WIDTH, MAX_WIDTH = 0.1, 4.0
MAX_SIDE = 4096


class ArchInfo(NamedTuple):
    """What the registry needs to know about an architecture without building it."""

    stride: int            # downsampling after the stem (product of the table's strides); tests check it
    dropout: float
    has_width: bool        # channel width multiplier in the name
    cifar_only: bool       # only the 32x32 form exists (no strided stem)
    ghost_plugin: bool = False
    interpolation: str = "bilinear"   # resize of the ImageNet form's preprocessing (the CIFAR forms: bilinear)
    # The smallest last feature map the network can take. GhostNetV2/V3's DFC attention average-pools
    # its input by 2 again, so in the last stage (1x1 at input side = total stride) it has nothing to pool.
    min_last_map: int = 1
    reparameterizable: bool = False   # trains with branches that fold into single convs (reparam.py)
    widths: tuple[float, ...] = ()    # published widths, for hints


# timm's default cfg for its later GhostNets uses bicubic resizing (what their ImageNet weights were
# evaluated with); ghostnet keeps bilinear, the cfg of the original timm/reference ghostnet_100.
_TIMM_GHOST = {"stride": 16, "dropout": 0.2, "has_width": True, "cifar_only": False, "interpolation": "bicubic"}

ARCHS: dict[str, ArchInfo] = {
    "ghostnet": ArchInfo(stride=16, dropout=0.2, has_width=True, cifar_only=False, widths=(0.5, 1.0, 1.3)),
    "ghostnetv2": ArchInfo(**_TIMM_GHOST, min_last_map=2, widths=(1.0, 1.3, 1.6)),
    "ghostnetv3": ArchInfo(**_TIMM_GHOST, min_last_map=2, reparameterizable=True, widths=(0.5, 1.0, 1.3, 1.6)),
    "repghostnet": ArchInfo(**_TIMM_GHOST, reparameterizable=True,
                            widths=(0.5, 0.58, 0.8, 1.0, 1.11, 1.3, 1.5, 2.0)),
    "mobilenetv3_large": ArchInfo(stride=16, dropout=0.2, has_width=True, cifar_only=False),
    "mobilenetv3_small": ArchInfo(stride=16, dropout=0.2, has_width=True, cifar_only=False),
    "mobilenetv2": ArchInfo(stride=16, dropout=0.2, has_width=True, cifar_only=False),
    "vgg16": ArchInfo(stride=32, dropout=0.5, has_width=False, cifar_only=True),
    "resnet56": ArchInfo(stride=4, dropout=0.0, has_width=False, cifar_only=True),
    "ghost_vgg16": ArchInfo(stride=32, dropout=0.5, has_width=False, cifar_only=True, ghost_plugin=True),
    "ghost_resnet56": ArchInfo(stride=4, dropout=0.0, has_width=False, cifar_only=True, ghost_plugin=True),
}

# The GhostNet family built by ghostnet.build_ghostnet (from ghostnet.GHOST_FAMILIES).
GHOST_ARCHS = ("ghostnet", "ghostnetv2", "ghostnetv3", "repghostnet")

_REGISTERED: tuple[str, ...] = (
    "ghostnet_050", "ghostnet_100", "ghostnet_130",
    "ghostnet_cifar_050", "ghostnet_cifar_100", "ghostnet_cifar_130",
    "ghostnetv2_100", "ghostnetv2_130", "ghostnetv2_160",
    "ghostnetv3_050", "ghostnetv3_100", "ghostnetv3_130",
    "repghostnet_100",
    "ghostnetv2_cifar_100", "ghostnetv3_cifar_100", "repghostnet_cifar_100",
    "mobilenetv3_large_075", "mobilenetv3_large_100",
    "mobilenetv3_small_075", "mobilenetv3_small_100",
    "mobilenetv2_035", "mobilenetv2_050", "mobilenetv2_100",
    "mobilenetv3_large_cifar_075", "mobilenetv3_large_cifar_100",
    "mobilenetv3_small_cifar_075", "mobilenetv3_small_cifar_100",
    "mobilenetv2_cifar_050", "mobilenetv2_cifar_100",
    "vgg16_cifar", "resnet56_cifar", "ghost_vgg16_cifar", "ghost_resnet56_cifar",
)

_WIDTH_NAME = re.compile(r"^(?P<arch>[a-z0-9_]+?)(?P<cifar>_cifar)?(?:_(?P<width>\d+))?$")
_PLUGIN_NAME = re.compile(r"^(?P<arch>ghost_(?:vgg16|resnet56))_cifar(?:_s(?P<s>\d+)(?:d(?P<d>\d+))?)?$")
_FIXED_NAME = re.compile(r"^(?P<arch>vgg16|resnet56)_cifar$")


class ParsedName(NamedTuple):
    arch: str
    width: float
    cifar: bool
    ratio: int = 2       # Ghost plug-in only: s
    dw_size: int = 3     # Ghost plug-in only: d


def list_models() -> list[str]:
    """The registered (shipped and tested) model names."""
    return sorted(_REGISTERED)


def _unknown(name: str, why: str = "") -> ModelError:
    close = difflib.get_close_matches(name, _REGISTERED, n=3, cutoff=0.6)
    hint = (f"did you mean {', '.join(close)}? " if close else "") + \
        f"registered models: {', '.join(list_models())}; any width parses, e.g. ghostnet_075, ghostnet_cifar_110"
    return ModelError(f"unknown model {name!r}" + (f": {why}" if why else ""), hint)


def format_model_name(arch: str, width: float = 1.0, cifar: bool = False, ratio: int = 2,
                      dw_size: int = 3) -> str:
    """The canonical name of a variant (inverse of :func:`parse_model_name`)."""
    info = ARCHS[arch]
    if info.ghost_plugin:
        suffix = "" if (ratio, dw_size) == (2, 3) else (f"_s{ratio}" + ("" if dw_size == 3 else f"d{dw_size}"))
        return f"{arch}_cifar{suffix}"
    if not info.has_width:
        return f"{arch}_cifar"
    return f"{arch}{'_cifar' if cifar else ''}_{round(width * 100):03d}"


def validate_width(width: float, arch: str = "") -> float:
    """A width the networks can be built with: 0.1 .. 4.0 in steps of 0.01 (the name has 2 decimals)."""
    try:
        width = float(width)
    except (TypeError, ValueError):
        raise ModelError(f"width must be a number, got {width!r}", "use e.g. 0.5, 1.0 or 1.3") from None
    if not MIN_WIDTH <= width <= MAX_WIDTH:
        raise ModelError(f"width {width:g}{' for ' + arch if arch else ''} is outside {MIN_WIDTH:g}..{MAX_WIDTH:g}",
                         _widths_hint(arch))
    if abs(width * 100 - round(width * 100)) > 1e-6:
        raise ModelError(f"width {width} has more than 2 decimals", "round it, e.g. 0.75 (name suffix _075)")
    return round(width, 2)


def _widths_hint(arch: str) -> str:
    info = ARCHS.get(arch)
    if arch in ("", "ghostnet") or info is None or not info.widths:
        return "GhostNet's paper widths are 0.5, 1.0 and 1.3 (names ghostnet_050/_100/_130)"
    names = "/".join(f"_{round(w * 100):03d}" for w in info.widths)
    return f"{arch}'s published widths are {', '.join(map(str, info.widths))} (names {arch}{names})"


def parse_model_name(name: str) -> ParsedName:
    """Split a model name into architecture, width and form; raise ModelError for anything else."""
    if not isinstance(name, str) or not name.strip():
        raise _unknown(str(name), "empty name")
    key = name.strip().lower()
    if m := _PLUGIN_NAME.match(key):
        ratio = int(m["s"]) if m["s"] else 2
        dw = int(m["d"]) if m["d"] else 3
        if ratio < 2 or dw < 1 or dw % 2 == 0:
            raise ModelError(f"bad Ghost plug-in setting in {name!r}: s={ratio}, d={dw}",
                             "s is an integer >= 2 and d an odd kernel size, e.g. ghost_vgg16_cifar_s4d3")
        return ParsedName(m["arch"], 1.0, True, ratio, dw)
    if m := _FIXED_NAME.match(key):
        return ParsedName(m["arch"], 1.0, True)
    if key in ARCHS and ARCHS[key].cifar_only:
        raise _unknown(name, f"{key} exists only in its 32x32 form, {key}_cifar")
    m = _WIDTH_NAME.match(key)
    if not m or m["arch"] not in ARCHS or not ARCHS[m["arch"]].has_width:
        raise _unknown(name)
    width = validate_width(int(m["width"]) / 100 if m["width"] else 1.0, m["arch"])
    return ParsedName(m["arch"], width, bool(m["cifar"]))


def _base_spec(parsed: ParsedName) -> ModelSpec:
    info = ARCHS[parsed.arch]
    name = format_model_name(parsed.arch, parsed.width, parsed.cifar, parsed.ratio, parsed.dw_size)
    if parsed.cifar:
        return ModelSpec(name=name, arch=parsed.arch, width=parsed.width, num_classes=10, input_size=(3, 32, 32),
                         mean=CIFAR_MEAN, std=CIFAR_STD, resize_size=32, interpolation="bilinear",
                         stem_stride=1, dropout=info.dropout)
    return ModelSpec(name=name, arch=parsed.arch, width=parsed.width, num_classes=1000, input_size=(3, 224, 224),
                     mean=IMAGENET_MEAN, std=IMAGENET_STD, resize_size=256, interpolation=info.interpolation,
                     stem_stride=2, dropout=info.dropout)


def total_stride(spec: ModelSpec) -> int:
    """Downsampling factor from the input to the last feature map."""
    return spec.stem_stride * ARCHS[spec.arch].stride


def check_input_size(spec: ModelSpec, size: tuple[int, int] | tuple[int, int, int] | int) -> tuple[int, int]:
    """Raise ModelError unless the network can take an input of ``size`` (H, W); return (H, W).

    Sides must be multiples of the total stride (32 for ImageNet GhostNet, 16 for its 32x32 form). Smaller
    inputs leave no feature map to pool, and at odd sizes a stride-2 conv's PyTorch padding (1 on both
    sides) differs from TensorFlow's SAME padding (0 before, 1 after), so exported TFLite models would
    need extra Pad ops and per-stage costs would not halve cleanly.
    """
    if isinstance(size, int):
        h = w = size
    elif len(size) == 3:
        if size[0] != spec.input_size[0]:
            raise ModelError(f"{spec.name} takes {spec.input_size[0]} input channels, not {size[0]}",
                             f"create the model with input_size=({size[0]}, H, W), or give "
                             f"{spec.input_size[0]}-channel images")
        h, w = size[1], size[2]
    else:
        h, w = size
    stride = total_stride(spec)
    min_map = ARCHS[spec.arch].min_last_map
    ok = [stride * k for k in (1, 2, 4, 7, 8) if min_map <= k and stride * k <= MAX_SIDE][:4]
    for side in (h, w):
        if not isinstance(side, int) or isinstance(side, bool):
            raise ModelError(f"input size must be whole pixels, got {side!r}", f"use e.g. {spec.input_size[1]}")
        if side < stride:
            raise ModelError(f"input side {side} is too small for {spec.name}: it downsamples by {stride}",
                             f"use a multiple of {stride}, e.g. {', '.join(map(str, ok))}")
        if side < stride * min_map:
            raise ModelError(f"input side {side} is too small for {spec.name}: it downsamples by {stride} and "
                             f"its DFC attention pools the last {side // stride}x{side // stride} map by 2 again",
                             f"use a multiple of {stride} from {stride * min_map}, e.g. {', '.join(map(str, ok))}")
        if side > MAX_SIDE:
            raise ModelError(f"input side {side} is larger than {MAX_SIDE}",
                             f"classification nets take small inputs; {spec.name} is made for "
                             f"{spec.input_size[1]}x{spec.input_size[2]}")
        if side % stride:
            lower, upper = side // stride * stride, (side // stride + 1) * stride
            raise ModelError(f"input side {side} is not a multiple of {spec.name}'s total stride {stride}",
                             f"use {lower} or {upper}")
    return h, w


def get_spec(name: str, **overrides: Any) -> ModelSpec:
    """The spec of a named variant, with fields replaced by ``overrides`` (e.g. ``num_classes=10``).

    Overriding ``width`` renames the spec (``ghostnet_100`` + width=0.75 -> ``ghostnet_075``); overriding
    only ``input_size`` of an ImageNet form scales ``resize_size`` to keep the 0.875 centre crop.
    """
    parsed = parse_model_name(name)
    fields = {f.name for f in dataclasses.fields(ModelSpec)}
    unknown = sorted(set(overrides) - fields - {"name", "arch"})
    if unknown or "name" in overrides or "arch" in overrides:
        bad = unknown or [k for k in ("name", "arch") if k in overrides]
        raise ModelError(f"cannot override {', '.join(bad)} of a model spec",
                         f"overridable fields: {', '.join(sorted(fields - {'name', 'arch'}))}; "
                         "change the model name to change the architecture")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    info = ARCHS[parsed.arch]
    if "width" in overrides:
        width = validate_width(overrides.pop("width"), parsed.arch)
        if not info.has_width and width != 1.0:
            raise ModelError(f"{parsed.arch} has no width multiplier", "leave the width at 1.0")
        parsed = parsed._replace(width=width)
    spec = _base_spec(parsed)
    if "input_size" in overrides:
        size = overrides["input_size"]
        size = (spec.input_size[0], size, size) if isinstance(size, int) else tuple(int(v) for v in size)
        if len(size) == 2:
            size = (spec.input_size[0], *size)
        if len(size) != 3 or size[0] < 1:
            raise ModelError(f"input_size must be (C, H, W), got {overrides['input_size']!r}",
                             "e.g. (3, 224, 224)")
        overrides["input_size"] = size
        if "resize_size" not in overrides:
            crop = spec.input_size[1] / spec.resize_size
            overrides["resize_size"] = int(round(min(size[1:]) / crop))
    for key in ("mean", "std"):
        if key in overrides:
            overrides[key] = tuple(float(v) for v in overrides[key])
            if len(overrides[key]) != 3 or (key == "std" and min(overrides[key]) <= 0):
                raise ModelError(f"{key} must be 3 numbers{' > 0' if key == 'std' else ''}, "
                                 f"got {overrides[key]!r}", "e.g. (0.485, 0.456, 0.406)")
    spec = dataclasses.replace(spec, **overrides)
    _validate(spec)
    return spec


def _validate(spec: ModelSpec) -> None:
    if isinstance(spec.num_classes, bool) or not isinstance(spec.num_classes, int) or spec.num_classes < 1:
        raise ModelError(f"num_classes must be a positive integer, got {spec.num_classes!r}",
                         "it is the number of class folders of your data set")
    if not 0.0 <= float(spec.dropout) < 1.0:
        raise ModelError(f"dropout must be in [0, 1), got {spec.dropout}", "the default is 0.2")
    if spec.stem_stride not in (1, 2):
        raise ModelError(f"stem_stride must be 1 or 2, got {spec.stem_stride}",
                         "2 for 224x224 inputs, 1 for the 32x32 (_cifar_) forms")
    if ARCHS[spec.arch].cifar_only and spec.stem_stride != 1:
        raise ModelError(f"{spec.arch} has no strided stem", "leave stem_stride at 1")
    if spec.interpolation not in ("bilinear", "bicubic", "nearest"):
        raise ModelError(f"unknown interpolation {spec.interpolation!r}", "use bilinear, bicubic or nearest")
    if spec.resize_size < min(spec.input_size[1:]):
        raise ModelError(f"resize_size {spec.resize_size} is smaller than the crop {spec.input_size[1:]}",
                         "resize_size is the shorter side before the centre crop; it must be >= the crop")
    check_input_size(spec, spec.input_size[1:])


def build_model(spec: ModelSpec, reparameterized: bool = False) -> nn.Module:
    """Construct the network a spec describes (random weights, torch's global generator).

    ``reparameterized`` builds the folded (deployed) form of an architecture that has one (GhostNetV3,
    RepGhostNet: ``ARCHS[arch].reparameterizable``), the layout of folded checkpoints; other
    architectures have a single form and ignore it.
    """
    in_chans = spec.input_size[0]
    arch = spec.arch
    if arch in GHOST_ARCHS:
        from ghostnet_edge.models.ghostnet import build_ghostnet

        return build_ghostnet(arch, spec.num_classes, spec.width, spec.dropout, spec.stem_stride, in_chans,
                              reparameterized=reparameterized)
    if arch in ("mobilenetv3_large", "mobilenetv3_small"):
        from ghostnet_edge.models.mobilenetv3 import MobileNetV3

        return MobileNetV3(arch.rsplit("_", 1)[1], spec.num_classes, spec.width, spec.dropout, spec.stem_stride,
                           in_chans)
    if arch == "mobilenetv2":
        from ghostnet_edge.models.mobilenetv2 import MobileNetV2

        return MobileNetV2(spec.num_classes, spec.width, spec.dropout, spec.stem_stride, in_chans)
    from ghostnet_edge.models import ghost_plugin

    base_arch = arch.removeprefix("ghost_")
    if base_arch == "vgg16":
        model = ghost_plugin.vgg16_cifar(spec.num_classes, in_chans, spec.dropout)
    elif base_arch == "resnet56":
        model = ghost_plugin.resnet56_cifar(spec.num_classes, in_chans, dropout=spec.dropout)
    else:  # pragma: no cover - ARCHS and this function are edited together
        raise ModelError(f"no builder for architecture {arch!r}")
    if ARCHS[arch].ghost_plugin:
        parsed = parse_model_name(spec.name)
        model = ghost_plugin.ghostify(model, parsed.ratio, parsed.dw_size)
    return model


def create_model(name: str, num_classes: int | None = None, *, seed: int | None = None,
                 reparameterized: bool = False, **overrides: Any) -> nn.Module:
    """Build a named variant; the resolved :class:`ModelSpec` is attached as ``model.spec``.

    ``seed`` makes the random initialisation reproducible without touching the caller's global torch
    generator state. ``reparameterized`` builds the folded form (see :func:`build_model`).
    """
    import torch

    spec = get_spec(name, num_classes=num_classes, **overrides)
    if seed is None:
        model = build_model(spec, reparameterized)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            model = build_model(spec, reparameterized)
    model.spec = spec
    return model
