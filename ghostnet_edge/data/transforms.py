"""The one preprocessing implementation used by training, evaluation, calibration and export checks.

Pillow + NumPy only (no torchvision), written to give the same pixels as the torchvision PIL path the
reference GhostNet repository validates with:

* eval: ``Resize(resize_size)`` on the shorter side with ``img.resize(size, Image.BILINEAR)`` (Pillow's
  own antialiasing, like torchvision's PIL path; the long side is ``int(resize * long / short)``), then
  ``CenterCrop(input)`` with offsets ``round((h - crop) / 2)``, then ``/255``, ``(x - mean) / std``, CHW;
* train, 32x32 forms: the CIFAR recipe, 4-pixel zero-padded random crop + horizontal flip;
* train, larger forms: ImageNet ``RandomResizedCrop(scale=(0.08, 1), ratio=(3/4, 4/3))`` + flip.

Randomness always comes from a ``numpy.random.Generator`` the caller passes in, so a sample's
augmentation is a pure function of (seed, epoch, index) and does not depend on batch order, worker
count or the number of distributed ranks.

:meth:`Preprocess.describe` is what the export manifest embeds so that a phone app can reproduce the
exact input pipeline.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

_INTERPOLATIONS = {
    "nearest": Image.NEAREST,
    "bilinear": Image.BILINEAR,
    "bicubic": Image.BICUBIC,
    "lanczos": Image.LANCZOS,
}

# Inputs at most this large use the CIFAR training recipe (pad + crop) instead of random-resized-crop:
# cutting an 8% area crop out of a 32x32 image leaves almost nothing to learn from.
SMALL_INPUT_MAX = 64


# --------------------------------------------------------------------------------------------------
# Pure functions (tests call these directly)
# --------------------------------------------------------------------------------------------------


def resized_shorter_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(new_width, new_height) with the shorter side ``size``; torchvision's rounding (floor)."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def resize_shorter(img: Image.Image, size: int, interpolation: str = "bilinear") -> Image.Image:
    """Resize so the shorter side is ``size``; unchanged when it already is (as torchvision does)."""
    new_w, new_h = resized_shorter_size(img.width, img.height, size)
    if (new_w, new_h) == img.size:
        return img
    return img.resize((new_w, new_h), _pil_filter(interpolation))


def center_crop(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Centre crop an HWC array to ``size=(h, w)``, zero-padding first when it is smaller.

    Offsets use Python's ``round`` on ``(h - crop) / 2`` like torchvision, so odd margins put the extra
    pixel at the same side.
    """
    crop_h, crop_w = size
    h, w = arr.shape[:2]
    if crop_h > h or crop_w > w:
        pad_top = (crop_h - h) // 2 if crop_h > h else 0
        pad_left = (crop_w - w) // 2 if crop_w > w else 0
        pad_bottom = (crop_h - h + 1) // 2 if crop_h > h else 0
        pad_right = (crop_w - w + 1) // 2 if crop_w > w else 0
        pad = [(pad_top, pad_bottom), (pad_left, pad_right)] + [(0, 0)] * (arr.ndim - 2)
        arr = np.pad(arr, pad, mode="constant", constant_values=0)
        h, w = arr.shape[:2]
    top = int(round((h - crop_h) / 2.0))
    left = int(round((w - crop_w) / 2.0))
    return arr[top : top + crop_h, left : left + crop_w]


def normalize(arr: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 ``(..., H, W, C)`` -> float32 ``(x / 255 - mean) / std``, all in float32 like ToTensor+Normalize."""
    x = arr.astype(np.float32) / np.float32(255.0)
    x -= np.asarray(mean, dtype=np.float32)
    x /= np.asarray(std, dtype=np.float32)
    return x


def to_chw(arr: np.ndarray) -> np.ndarray:
    """``(..., H, W, C)`` -> contiguous ``(..., C, H, W)``."""
    return np.ascontiguousarray(np.moveaxis(arr, -1, -3))


def normalize_chw(arr: np.ndarray, mean: Sequence[float], std: Sequence[float],
                  out: np.ndarray | None = None) -> np.ndarray:
    """``to_chw(normalize(arr, mean, std))`` bit for bit, written channel-first into ``out`` (new when None).

    The same float32 operations in the same order, done in place on the channel-first copy: no
    float intermediate in HWC order to transpose afterwards. 256 images at 224x224: 0.04 s against 0.33 s
    (``benchmarks/export_parts.py`` on the project's AMD EPYC), which the calibration images of every
    export pay.
    """
    if out is None:
        out = np.empty((*arr.shape[:-3], arr.shape[-1], *arr.shape[-3:-1]), dtype=np.float32)
    out[...] = np.moveaxis(arr, -1, -3)
    out /= np.float32(255.0)
    out -= np.asarray(mean, dtype=np.float32)[:, None, None]
    out /= np.asarray(std, dtype=np.float32)[:, None, None]
    return out


def draw_crop_flip(rng: np.random.Generator, n: int, padding: int, flip_p: float = 0.5) -> np.ndarray:
    """CIFAR augmentation parameters for ``n`` images: int rows ``(top, left, flip)``.

    ``top``/``left`` index the zero-padded image (0..2*padding, like torchvision's RandomCrop on a
    padded input); drawing them for a whole epoch at once is what keeps the loader fast.
    """
    offsets = rng.integers(0, 2 * padding + 1, size=(n, 2))
    flips = (rng.random(n) < flip_p).astype(np.int64)
    return np.column_stack([offsets, flips]).astype(np.int64)


def crop_flip(images: np.ndarray, params: np.ndarray, padding: int) -> np.ndarray:
    """Zero-pad an ``NHWC`` batch by ``padding``, cut each image's crop and flip it, in one gather."""
    n, h, w = images.shape[:3]
    padded = np.pad(images, [(0, 0), (padding, padding), (padding, padding), (0, 0)], mode="constant")
    params = np.asarray(params, dtype=np.int64).reshape(n, 3)
    rows = params[:, 0:1] + np.arange(h)                                   # (n, h)
    cols = params[:, 1:2] + np.where(params[:, 2:3] == 1, np.arange(w)[::-1], np.arange(w))  # (n, w)
    return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def random_resized_crop_box(
    width: int,
    height: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
) -> tuple[int, int, int, int]:
    """torchvision's ``RandomResizedCrop.get_params``: (top, left, h, w), 10 tries then a centre crop."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _pil_filter(interpolation: str) -> int:
    try:
        return _INTERPOLATIONS[interpolation]
    except KeyError:
        from ghostnet_edge.errors import DataError

        raise DataError(f"unknown interpolation {interpolation!r}",
                        f"use one of {', '.join(sorted(_INTERPOLATIONS))}") from None


def _as_pil(img: Image.Image | np.ndarray) -> Image.Image:
    return img if isinstance(img, Image.Image) else Image.fromarray(np.ascontiguousarray(img))


def _as_array(img: Image.Image | np.ndarray) -> np.ndarray:
    return np.asarray(img) if isinstance(img, Image.Image) else img


def _spec_value(spec: Any, key: str) -> Any:
    """Read ``key`` from a ModelSpec-like object or a checkpoint ``meta`` mapping."""
    if isinstance(spec, Mapping):
        return spec[key]
    return getattr(spec, key)


# --------------------------------------------------------------------------------------------------
# Preprocess
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preprocess:
    """Image (PIL or uint8 HWC RGB array) -> float32 CHW array normalised with the model's mean/std."""

    input_size: tuple[int, int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize_size: int
    interpolation: str = "bilinear"
    train: bool = False
    padding: int = 4
    rrc_scale: tuple[float, float] = (0.08, 1.0)
    rrc_ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    hflip: float = 0.5
    _filter: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_size", tuple(int(v) for v in self.input_size))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        object.__setattr__(self, "_filter", _pil_filter(self.interpolation))

    @classmethod
    def from_spec(cls, spec: Any, train: bool = False) -> Preprocess:
        """Build from a ``ModelSpec`` or a checkpoint ``meta`` dict (same field names)."""
        interpolation = "bilinear"
        try:
            interpolation = _spec_value(spec, "interpolation") or "bilinear"
        except (KeyError, AttributeError):
            pass
        return cls(
            input_size=tuple(_spec_value(spec, "input_size")),
            mean=tuple(_spec_value(spec, "mean")),
            std=tuple(_spec_value(spec, "std")),
            resize_size=int(_spec_value(spec, "resize_size")),
            interpolation=interpolation,
            train=train,
        )

    def with_train(self, train: bool) -> Preprocess:
        """The same preprocessing with training augmentation switched on or off."""
        from dataclasses import replace

        return replace(self, train=train)

    @property
    def crop_size(self) -> tuple[int, int]:
        return self.input_size[1], self.input_size[2]

    @property
    def small_input(self) -> bool:
        """32x32-style forms train with pad+crop; larger ones with random-resized-crop."""
        return max(self.crop_size) <= SMALL_INPUT_MAX

    # ---- geometry ---------------------------------------------------------------------------------

    def geometry_is_identity(self, height: int, width: int) -> bool:
        """True when eval resize + crop would return an image of this size unchanged."""
        return min(height, width) == self.resize_size and (height, width) == self.crop_size

    def eval_geometry(self, img: Image.Image | np.ndarray) -> np.ndarray:
        """Resize the shorter side, centre crop: uint8 HWC of the input size."""
        arr = _as_array(img)
        if self.geometry_is_identity(arr.shape[0], arr.shape[1]):
            return arr
        resized = resize_shorter(_as_pil(img), self.resize_size, self.interpolation)
        return center_crop(np.asarray(resized), self.crop_size)

    def train_geometry(self, img: Image.Image | np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Random crop (CIFAR pad+crop or random-resized-crop) and horizontal flip: uint8 HWC."""
        if self.small_input:
            return self.crop_flip(self.eval_geometry(img)[None], self.draw_crop_flip(rng, 1))[0]
        pil = _as_pil(img)
        top, left, h, w = random_resized_crop_box(pil.width, pil.height, rng, self.rrc_scale, self.rrc_ratio)
        crop = pil.crop((left, top, left + w, top + h))
        arr = np.asarray(crop.resize((self.crop_size[1], self.crop_size[0]), self._filter))
        if rng.random() < self.hflip:
            arr = arr[:, ::-1]
        return arr

    def draw_crop_flip(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Parameters of the small-input (CIFAR) augmentation for ``n`` images."""
        return draw_crop_flip(rng, n, self.padding, self.hflip)

    def crop_flip(self, images: np.ndarray, params: np.ndarray) -> np.ndarray:
        """Apply small-input augmentation ``params`` to a uint8 NHWC batch already at the input size."""
        return crop_flip(images, params, self.padding)

    # ---- full pipeline ----------------------------------------------------------------------------

    def finish(self, arr: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """uint8 ``HWC`` or ``NHWC`` at the input size -> normalised float32 ``CHW`` / ``NCHW`` (into
        ``out`` when given)."""
        return normalize_chw(arr, self.mean, self.std, out)

    def __call__(self, img: Image.Image | np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """One RGB image -> float32 CHW. Training mode needs ``rng`` (seeded by the caller)."""
        if self.train:
            if rng is None:
                raise ValueError("training preprocessing needs a seeded numpy Generator (rng=...)")
            return self.finish(self.train_geometry(img, rng))
        return self.finish(self.eval_geometry(img))

    def eval_geometry_batch(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """uint8 HWC images (an NHWC array or a list of any sizes) -> uint8 NHWC at the input size."""
        if isinstance(images, np.ndarray) and self.geometry_is_identity(images.shape[1], images.shape[2]):
            return images  # the common CIFAR case: nothing to do, no per-image Python loop
        return np.stack([self.eval_geometry(img) for img in images])

    def eval_batch(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """uint8 HWC images -> float32 ``NCHW`` with the eval geometry."""
        return self.finish(self.eval_geometry_batch(images))

    def describe(self) -> dict[str, Any]:
        """Everything an app needs to reproduce the eval input, for the export manifest."""
        c, h, w = self.input_size
        return {
            "input_size": [c, h, w],
            "layout": "NCHW",
            "dtype": "float32",
            "color": "RGB",
            "decode": "8-bit RGB; EXIF orientation applied; alpha composited on white; 16-bit scaled /257",
            "resize": {
                "shorter_side": self.resize_size,
                "interpolation": self.interpolation,
                "antialias": True,
                "long_side": "floor(resize * long / short)",
                "library": "Pillow Image.resize",
            },
            "crop": {"type": "center", "size": [h, w], "offset": "round((side - crop) / 2), zero-pad if smaller"},
            "scale": 1.0 / 255.0,
            "mean": list(self.mean),
            "std": list(self.std),
            "formula": "(pixel / 255 - mean) / std, per RGB channel",
        }
