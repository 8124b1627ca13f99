"""load_rgb: every odd image mode becomes 8-bit RGB; broken files raise BadImageError naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from ghostnet_edge.data.images import load_rgb
from ghostnet_edge.errors import BadImageError


def _save(img: Image.Image, path: Path, **kw) -> Path:
    img.save(path, **kw)
    return path


def test_grayscale_is_replicated(tmp_path):
    gray = np.arange(12 * 10, dtype=np.uint8).reshape(12, 10)
    out = load_rgb(_save(Image.fromarray(gray), tmp_path / "g.png"))
    arr = np.asarray(out)
    assert out.mode == "RGB" and arr.shape == (12, 10, 3)
    for c in range(3):
        np.testing.assert_array_equal(arr[..., c], gray)


def test_16bit_grayscale_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257 * 100, 65535, 257 * 7]], dtype=np.uint16)
    path = _save(Image.fromarray(values), tmp_path / "g16.png")
    assert Image.open(path).mode.startswith("I")
    arr = np.asarray(load_rgb(path))
    np.testing.assert_array_equal(arr[0, :, 0], [0, 100, 255, 7])
    # Image.convert("RGB") would clip: everything above 255 turns white
    assert np.asarray(Image.open(path).convert("RGB"))[0, 1, 0] == 255


def test_32bit_int_with_8bit_values_kept(tmp_path):
    img = Image.fromarray(np.array([[0, 17, 255]], dtype=np.int32), mode=None).convert("I")
    from ghostnet_edge.data.images import to_rgb

    np.testing.assert_array_equal(np.asarray(to_rgb(img))[0, :, 1], [0, 17, 255])


def test_float_image_in_unit_range(tmp_path):
    from ghostnet_edge.data.images import to_rgb

    img = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert img.mode == "F"
    np.testing.assert_array_equal(np.asarray(to_rgb(img))[0, :, 0], [0, 128, 255])


def test_cmyk_jpeg_converts(tmp_path):
    cmyk = Image.new("CMYK", (16, 8), (255, 0, 0, 0))  # pure cyan
    out = np.asarray(load_rgb(_save(cmyk, tmp_path / "c.jpg", quality=95)))
    assert out.shape == (8, 16, 3)
    r, g, b = out[4, 8].astype(int)
    assert r < 20 and g > 235 and b > 235


def test_rgba_is_composited_on_white(tmp_path):
    rgba = np.zeros((2, 3, 4), dtype=np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)     # opaque: kept
    rgba[0, 1] = (0, 0, 0, 0)          # transparent black: white, not black
    rgba[0, 2] = (0, 0, 0, 128)        # half: grey
    out = np.asarray(load_rgb(_save(Image.fromarray(rgba, "RGBA"), tmp_path / "a.png")))
    assert tuple(out[0, 0]) == (10, 20, 30)
    assert tuple(out[0, 1]) == (255, 255, 255)
    assert 120 <= out[0, 2, 0] <= 135


def test_la_and_palette_transparency(tmp_path):
    la = Image.fromarray(np.array([[[50, 255], [50, 0]]], dtype=np.uint8), "LA")
    out = np.asarray(load_rgb(_save(la, tmp_path / "la.png")))
    assert tuple(out[0, 0]) == (50, 50, 50) and tuple(out[0, 1]) == (255, 255, 255)

    pal = Image.new("P", (2, 1))
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.putpixel((0, 0), 0)
    pal.putpixel((1, 0), 1)
    pal.info["transparency"] = 1                     # index 1 (blue) is transparent
    out = np.asarray(load_rgb(_save(pal, tmp_path / "p.png", transparency=1)))
    assert tuple(out[0, 0]) == (255, 0, 0)
    assert tuple(out[0, 1]) == (255, 255, 255)
    plain = Image.new("P", (1, 1))
    plain.putpalette([0, 200, 0] + [0] * 765)
    assert tuple(np.asarray(load_rgb(_save(plain, tmp_path / "p2.gif")))[0, 0]) == (0, 200, 0)


def test_exif_orientation_applied(tmp_path):
    img = Image.new("RGB", (20, 10), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = _save(img, tmp_path / "o.jpg", exif=exif.tobytes())
    assert Image.open(path).size == (20, 10)
    assert load_rgb(path).size == (10, 20)


def test_one_pixel_image(tmp_path):
    out = load_rgb(_save(Image.new("RGB", (1, 1), (1, 2, 3)), tmp_path / "1.png"))
    assert out.size == (1, 1) and tuple(np.asarray(out)[0, 0]) == (1, 2, 3)


@pytest.mark.parametrize("fmt,cut", [("JPEG", 100), ("JPEG", 2), ("PNG", 300)])
def test_truncated_files_are_detected(tmp_path, fmt, cut):
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    path = tmp_path / f"t.{fmt.lower()}"
    img.save(path, format=fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - cut])
    with pytest.raises(BadImageError) as err:
        load_rgb(path)
    assert str(path) in str(err.value) and err.value.hint


def test_truncation_detected_even_if_someone_enabled_lenient_loading(tmp_path, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    path = tmp_path / "t.jpg"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(BadImageError, match="truncated"):
        load_rgb(path)


def test_not_an_image_and_missing(tmp_path):
    fake = tmp_path / "notes.jpg"
    fake.write_text("this is a text file, not a JPEG\n")
    with pytest.raises(BadImageError, match="not an image"):
        load_rgb(fake)
    with pytest.raises(BadImageError, match="not found"):
        load_rgb(tmp_path / "missing.png")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(BadImageError):
        load_rgb(empty)


def test_real_imagenet_samples_all_rgb(imagenet_samples):
    files = sorted(imagenet_samples.glob("*.JPEG"))
    assert len(files) == 100
    sizes = set()
    for f in files:
        img = load_rgb(f)
        assert img.mode == "RGB"
        sizes.add(img.size)
    assert len(sizes) > 10
    gray = np.asarray(load_rgb(imagenet_samples / "n03908714_pencil_sharpener.JPEG"))
    assert Image.open(imagenet_samples / "n03908714_pencil_sharpener.JPEG").mode == "L"
    np.testing.assert_array_equal(gray[..., 0], gray[..., 2])
