"""Choosing, decoding and caching the images INT8 calibration (and verification) sees."""

from ghostnet_edge.calib.cache import TensorBatch, cache_key, cache_root, calibration_tensors, decode_images
from ghostnet_edge.calib.sampler import (
    IMAGE_EXTENSIONS,
    MIN_RECOMMENDED_CALIB,
    ImageSet,
    draw,
    label_of,
    list_images,
    select_calibration_images,
    split_calibration_verification,
)

__all__ = [
    "IMAGE_EXTENSIONS", "MIN_RECOMMENDED_CALIB", "ImageSet", "TensorBatch", "cache_key", "cache_root",
    "calibration_tensors", "decode_images", "draw", "label_of", "list_images", "select_calibration_images",
    "split_calibration_verification",
]
