"""Data: decoding (``load_rgb``), the one preprocessing (``Preprocess``), data sets and batches."""

from ghostnet_edge.data.datasets import (
    ArrayDataset,
    FileDataset,
    ImageDataset,
    align_classes,
    balanced_indices,
    class_mapping,
    detect_layout,
    find_cifar_tar,
    open_dataset,
    stratified_split,
)
from ghostnet_edge.data.images import load_rgb
from ghostnet_edge.data.loader import iterate_batches
from ghostnet_edge.data.transforms import Preprocess

__all__ = [
    "ArrayDataset", "FileDataset", "ImageDataset", "Preprocess", "align_classes", "balanced_indices",
    "class_mapping", "detect_layout", "find_cifar_tar", "iterate_batches", "load_rgb", "open_dataset",
    "stratified_split",
]
