"""The one Preprocess: torchvision-equal geometry, normalisation, seeded augmentation, describe()."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from ghostnet_edge.data.transforms import (
    Preprocess,
    center_crop,
    crop_flip,
    draw_crop_flip,
    normalize,
    normalize_chw,
    random_resized_crop_box,
    resize_shorter,
    resized_shorter_size,
    to_chw,
)
from ghostnet_edge.models import get_spec


def test_resized_shorter_size_uses_floor_like_torchvision():
    assert resized_shorter_size(500, 333, 256) == (384, 256)    # int(256 * 500 / 333) = 384.38 -> 384
    assert resized_shorter_size(333, 500, 256) == (256, 384)
    assert resized_shorter_size(121, 68, 256) == (455, 256)     # int(455.5) = 455
    assert resized_shorter_size(300, 300, 32) == (32, 32)


def test_resize_shorter_is_identity_when_already_that_size():
    img = Image.new("RGB", (32, 40), (9, 9, 9))
    assert resize_shorter(img, 32) is img
    assert resize_shorter(img, 16).size == (16, 20)


def test_center_crop_offsets_and_padding():
    arr = np.arange(7 * 9).reshape(7, 9)[..., None]
    out = center_crop(arr, (4, 4))
    # top = round(1.5) = 2 (round half to even), left = round(2.5) = 2
    assert out[0, 0, 0] == arr[2, 2, 0] and out.shape == (4, 4, 1)
    small = np.full((2, 3, 3), 7, np.uint8)
    padded = center_crop(small, (4, 5))
    assert padded.shape == (4, 5, 3)
    assert padded[0].sum() == 0 and padded[1, 1:4].min() == 7 and padded[:, 0].sum() == 0


def test_normalize_and_chw():
    arr = np.array([[[255, 0, 51]]], dtype=np.uint8)
    out = normalize(arr, (0.5, 0.5, 0.2), (0.5, 0.25, 0.1))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0], [1.0, -2.0, 0.0], atol=1e-6)
    x = np.zeros((2, 4, 5, 3))
    assert to_chw(x).shape == (2, 3, 4, 5) and to_chw(x[0]).shape == (3, 4, 5)


def test_eval_pipeline_imagenet_shapes_and_constant_image():
    pre = Preprocess.from_spec(get_spec("ghostnet_100"))
    assert pre.resize_size == 256 and pre.crop_size == (224, 224)
    img = Image.new("RGB", (300, 500), (128, 64, 32))
    out = pre(img)
    assert out.shape == (3, 224, 224) and out.dtype == np.float32
    expected = (np.array([128, 64, 32], np.float32) / 255 - np.array(pre.mean, np.float32)) / np.array(pre.std, np.float32)
    np.testing.assert_allclose(out[:, 100, 100], expected, rtol=1e-6)


def test_eval_pipeline_matches_step_by_step_reference():
    """Resize 256 on the shorter side with Pillow bilinear, centre crop 224, normalise: pixel for pixel."""
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (300, 410, 3), dtype=np.uint8))
    pre = Preprocess.from_spec(get_spec("ghostnet_100"))
    resized = np.asarray(img.resize((349, 256), Image.BILINEAR))        # int(256 * 410 / 300) = 349
    crop = resized[16:240, 62:286]                                      # round(32/2)=16, round(125/2)=62
    ref = ((crop.astype(np.float32) / 255 - np.float32(pre.mean)) / np.float32(pre.std)).transpose(2, 0, 1)
    np.testing.assert_array_equal(pre(img), ref)


def test_cifar_eval_leaves_32x32_untouched_and_accepts_arrays():
    pre = Preprocess.from_spec(get_spec("ghostnet_cifar_100"))
    arr = np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(pre(arr), pre(Image.fromarray(arr)))
    np.testing.assert_array_equal(pre(arr), to_chw(normalize(arr, pre.mean, pre.std)))
    assert pre(Image.new("RGB", (64, 48))).shape == (3, 32, 32)


def test_normalize_chw_is_normalize_then_to_chw_bit_for_bit():
    every_value = np.arange(256 * 3, dtype=np.int64).reshape(16, 16, 3) % 256
    for arr in (every_value.astype(np.uint8), np.stack([every_value.astype(np.uint8)] * 2)[:, 1:, 2:]):
        for mean, std in (((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), ((0.5,) * 3, (0.5,) * 3)):
            ref = to_chw(normalize(arr, mean, std))
            got = normalize_chw(arr, mean, std)
            assert got.dtype == np.float32 and got.shape == ref.shape
            np.testing.assert_array_equal(got.view(np.uint32), ref.view(np.uint32))
    out = np.zeros((3, 16, 16), np.float32)
    assert normalize_chw(every_value.astype(np.uint8), (0.5,) * 3, (0.5,) * 3, out) is out


def test_crop_flip_matches_a_plain_reference():
    rng = np.random.default_rng(3)
    images = rng.integers(0, 255, (6, 32, 32, 3), dtype=np.uint8)
    params = draw_crop_flip(np.random.default_rng(4), 6, padding=4)
    assert params.min() >= 0 and params[:, :2].max() <= 8 and set(params[:, 2]) <= {0, 1}
    out = crop_flip(images, params, padding=4)
    for img, (top, left, flip), got in zip(images, params, out, strict=True):
        ref = np.pad(img, [(4, 4), (4, 4), (0, 0)])[top : top + 32, left : left + 32]
        ref = ref[:, ::-1] if flip else ref
        np.testing.assert_array_equal(got, ref)


def test_train_augmentation_is_seeded():
    pre = Preprocess.from_spec(get_spec("ghostnet_cifar_050"), train=True)
    img = np.random.default_rng(5).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    a = pre(img, np.random.default_rng(11))
    b = pre(img, np.random.default_rng(11))
    np.testing.assert_array_equal(a, b)
    outs = {pre(img, np.random.default_rng(s)).tobytes() for s in range(12)}
    assert len(outs) > 6
    with pytest.raises(ValueError):
        pre(img)


def test_random_resized_crop_box_bounds_and_fallback():
    rng = np.random.default_rng(0)
    for _ in range(200):
        top, left, h, w = random_resized_crop_box(400, 300, rng)
        assert 0 <= top and top + h <= 300 and 0 <= left and left + w <= 400
        assert h * w <= 400 * 300 and 3 / 4 - 0.05 <= w / h <= 4 / 3 + 0.05
    # a 1000x10 strip cannot hold any crop of the allowed ratios -> centre crop of ratio 4/3
    top, left, h, w = random_resized_crop_box(1000, 10, np.random.default_rng(0))
    assert (h, w) == (10, 13) and left == (1000 - 13) // 2
    pre = Preprocess.from_spec(get_spec("ghostnet_100"), train=True)
    out = pre(Image.new("RGB", (500, 375), (1, 2, 3)), np.random.default_rng(0))
    assert out.shape == (3, 224, 224)


def test_from_spec_and_from_meta_agree_and_describe_is_json():
    spec = get_spec("ghostnet_cifar_130")
    meta = {"input_size": list(spec.input_size), "mean": list(spec.mean), "std": list(spec.std),
            "resize_size": spec.resize_size, "interpolation": spec.interpolation}
    assert Preprocess.from_spec(spec) == Preprocess.from_spec(meta)
    d = Preprocess.from_spec(get_spec("ghostnet_100")).describe()
    json.dumps(d)
    assert d["input_size"] == [3, 224, 224] and d["resize"]["shorter_side"] == 256
    assert d["resize"]["interpolation"] == "bilinear" and d["crop"]["size"] == [224, 224]
    assert d["mean"] == list(get_spec("ghostnet_100").mean) and d["layout"] == "NCHW"
