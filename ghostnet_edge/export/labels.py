"""Class names for labels.txt, and each held-out image's class index in them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

CLASS_INDEX_FILE = "imagenet_class_index.json"


def find_class_index(*folders: Path | None) -> Path | None:
    """``imagenet_class_index.json`` in or above one of ``folders`` (the ImageNet samples ship one)."""
    for folder in folders:
        if folder is None:
            continue
        folder = Path(folder)
        for candidate in (folder, folder.parent, folder.parent.parent):
            if (candidate / CLASS_INDEX_FILE).is_file():
                return candidate / CLASS_INDEX_FILE
    return None


def resolve_labels(meta: dict[str, Any], num_classes: int, class_index: Path | None,
                   ) -> tuple[list[str], list[str] | None, str]:
    """Class names for labels.txt, ImageNet wnids when known, and where the names came from."""
    names = meta.get("class_names")
    if names and len(names) == num_classes:
        return [str(n) for n in names], None, "checkpoint"
    if num_classes == 1000 and class_index is not None:
        from ghostnet_edge.data.datasets import read_class_index

        wnids, human = read_class_index(class_index)
        if len(wnids) == 1000:
            return human, wnids, f"{class_index.name}"
    return [f"class_{i}" for i in range(num_classes)], None, "none (class_<index> placeholders)"


def label_indices(labels: Sequence[str | None], class_names: Sequence[str],
                  wnids: Sequence[str] | None = None) -> np.ndarray | None:
    """Class index of each image (from its folder name or wnid prefix), or None unless all are known."""
    index = {n: i for i, n in enumerate(class_names)}
    if wnids:
        index.update({w: i for i, w in enumerate(wnids)})
    out = []
    for lab in labels:
        if lab is None or lab not in index:
            return None
        out.append(index[lab])
    return np.asarray(out, dtype=np.int64) if out else None
