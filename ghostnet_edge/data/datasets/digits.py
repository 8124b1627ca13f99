"""The ``digits`` source: scikit-learn's bundled 8x8 digits as 32x32 RGB, split here.

Nothing is downloaded (the images ship with scikit-learn); the decoded array is built once per process
and the train/val split is a seeded stratified one.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ghostnet_edge.data.datasets.base import ArrayDataset, stratified_split
from ghostnet_edge.data.transforms import Preprocess


@lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.empty((len(digits.images), 32, 32, 3), dtype=np.uint8)
    for i, img in enumerate(digits.images):  # values 0..16
        small = Image.fromarray(np.rint(img * (255.0 / 16.0)).astype(np.uint8))
        big = np.asarray(small.resize((32, 32), Image.BILINEAR))
        images[i] = big[:, :, None]
    images.setflags(write=False)
    return images, digits.target.astype(np.int64)


def digits_dataset(split: str, preprocess: Preprocess | None, split_seed: int = 0,
                   val_fraction: float = 0.2) -> ArrayDataset:
    """scikit-learn's 1,797 8x8 digits as 32x32 RGB; a stratified split fixed by ``split_seed``.

    The split seed is separate from the training seed on purpose: a seed sweep should measure the
    spread caused by training, on the same validation images.
    """
    images, labels = _digits_arrays()
    train_idx, val_idx = stratified_split(labels, val_fraction, split_seed)
    idx = train_idx if split == "train" else val_idx
    ds = ArrayDataset(images[idx], labels[idx], [str(d) for d in range(10)], preprocess, "digits")
    ds.layout = "digits"
    return ds
