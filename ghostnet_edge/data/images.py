"""Decode any image file into one predictable form: an 8-bit RGB ``PIL.Image``.

Every later stage (training, evaluation, calibration, export checks) assumes RGB uint8 input, so all
the odd cases are settled here, once:

* grayscale ``L``/``1`` is replicated to three channels;
* 16-bit and 32-bit grayscale (``I;16*``, ``I``) is scaled to 8 bits (``v / 257``) instead of being
  clipped at 255 the way ``Image.convert`` does, which would turn most 16-bit photos white;
  an ``I`` image whose values all fit in 0..255 is taken as already 8-bit;
* float ``F`` images in 0..1 are scaled by 255, others clipped to 0..255;
* anything with transparency (``RGBA``, ``LA``, ``PA``, palette images with a ``transparency`` entry)
  is **composited on white**. Dropping alpha instead would expose whatever colour the encoder left in
  fully transparent pixels (often black or garbage); white is what a gallery or browser shows and what
  logo/product images on the web are designed against;
* ``CMYK`` (and Adobe's inverted CMYK JPEGs, which Pillow already un-inverts on decode) uses Pillow's
  plain conversion, no colour profile: good enough for classification, and needs no ImageCms;
* the EXIF orientation tag is applied, so a phone photo taken in portrait is seen upright.

A file that is missing, not an image, truncated or otherwise undecodable raises
:class:`~ghostnet_edge.errors.BadImageError` naming the file. Truncation is only detected because the
whole image is decoded here (``.load()``) with ``ImageFile.LOAD_TRUNCATED_IMAGES`` off.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from ghostnet_edge.errors import BadImageError

# File name suffixes treated as images when a folder is scanned (lower case).
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)

_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_WHITE = (255, 255, 255)
# Formats whose EXIF block, when present, always shows up as ``img.info["exif"]``.
_EXIF_IN_INFO = frozenset({"JPEG", "PNG", "WEBP", "GIF", "BMP", "PPM"})


def is_image_file(path: Path | str) -> bool:
    """Whether a folder scan should treat ``path`` as an image (by suffix; hidden files are not)."""
    p = Path(path)
    return p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


def load_rgb(path: Path | str) -> Image.Image:
    """Decode ``path`` fully and return it as an upright 8-bit RGB image.

    Raises :class:`BadImageError` for a missing, unreadable, truncated or non-image file.
    """
    path = Path(path)
    # Another library may have switched Pillow to silently pad truncated files with grey; that would
    # hide exactly the corruption this function exists to report, so it is switched back off.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            # A large-but-allowed image only warns; it is a legitimate photo, not an error.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                img = _apply_exif_orientation(img)
                return to_rgb(img)
    except FileNotFoundError as exc:
        raise BadImageError(str(path), "file not found") from exc
    except IsADirectoryError as exc:
        raise BadImageError(str(path), "is a folder, not an image file") from exc
    except PermissionError as exc:
        raise BadImageError(str(path), "permission denied") from exc
    except UnidentifiedImageError as exc:
        raise BadImageError(str(path), "not an image Pillow can identify (wrong extension or corrupt header)") from exc
    except Image.DecompressionBombError as exc:
        raise BadImageError(str(path), f"too many pixels to decode safely ({exc})") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # Pillow reports truncated/corrupt data as OSError ("image file is truncated"), and broken
        # headers or chunks as SyntaxError/ValueError/EOFError depending on the format plugin.
        raise BadImageError(str(path), f"corrupt or truncated image data ({exc})") from exc


def _apply_exif_orientation(img: Image.Image) -> Image.Image:
    """Rotate/flip by the EXIF orientation tag; a broken EXIF block leaves the pixels as stored.

    The pixels themselves decoded fine at this point, so unreadable metadata is no reason to reject
    the image.
    """
    if img.format in _EXIF_IN_INFO and "exif" not in img.info:
        return img  # no EXIF block at all: skip the parse, which costs as much as decoding a 32x32 JPEG
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - any metadata parse failure, see docstring
        return img


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert an already decoded image of any Pillow mode to 8-bit RGB (rules in the module doc)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P" and "transparency" in img.info:
        return _composite_on_white(img.convert("RGBA"))
    if mode in _ALPHA_MODES:
        return _composite_on_white(img.convert("RGBA"))
    if mode.startswith("I;16") or mode == "I":
        return _gray_array_to_rgb(_high_depth_to_uint8(np.asarray(img), mode))
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        scale = 255.0 if np.nanmax(arr, initial=0.0) <= 1.0 else 1.0
        arr = np.nan_to_num(arr * scale, nan=0.0)
        return _gray_array_to_rgb(np.clip(np.rint(arr), 0, 255).astype(np.uint8))
    try:
        return img.convert("RGB")
    except ValueError as exc:  # e.g. LAB/HSV modes Pillow cannot convert directly
        raise OSError(f"unsupported colour mode {mode}") from exc


def _high_depth_to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    """Map 16/32-bit grayscale to 0..255 (``/257`` maps 65535 exactly to 255)."""
    values = arr.astype(np.int64)
    if mode == "I" and values.size and values.min() >= 0 and values.max() <= 255:
        return values.astype(np.uint8)  # an 8-bit image that was merely stored as 32-bit
    values = np.clip(values, 0, 65535)
    return np.rint(values / 257.0).astype(np.uint8)


def _gray_array_to_rgb(gray: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2)))


def _composite_on_white(rgba: Image.Image) -> Image.Image:
    background = Image.new("RGBA", rgba.size, _WHITE + (255,))
    return Image.alpha_composite(background, rgba).convert("RGB")
