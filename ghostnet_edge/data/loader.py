"""Batches for training and evaluation: seeded order, distributed sharding, numpy -> torch.

No torch ``DataLoader`` with worker processes: the target machines have 2 cores that the model
already uses, and CIFAR-size batches come out of the cached uint8 array in a few milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ghostnet_edge.data.datasets import ImageDataset

_TAG_ORDER = 0x0D0D  # keeps the epoch-order stream apart from the augmentation stream


def epoch_order(n: int, shuffle: bool, seed: int, epoch: int) -> np.ndarray:
    """Sample order of one epoch: a permutation seeded by ``(seed, epoch)``, or 0..n-1."""
    if not shuffle:
        return np.arange(n, dtype=np.int64)
    return np.random.default_rng([seed, epoch, _TAG_ORDER]).permutation(n).astype(np.int64)


def shard(order: np.ndarray, rank: int, world_size: int, pad: bool = True) -> np.ndarray:
    """This rank's share of ``order``, like ``DistributedSampler``: every ``world_size``-th index.

    With ``pad`` the order is first padded by repeating its start so every rank gets the same number of
    samples (training needs equal step counts on every rank or the gradient all-reduce hangs); eval
    passes ``pad=False`` so no image is counted twice.
    """
    if world_size <= 1:
        return order
    if pad and len(order) % world_size:
        extra = world_size - len(order) % world_size
        order = np.concatenate([order, np.resize(order, extra)])
    return order[rank::world_size]


def num_batches(n: int, batch_size: int, drop_last: bool) -> int:
    return n // batch_size if drop_last else -(-n // batch_size)


def iterate_batches(
    dataset: ImageDataset,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    epoch: int = 0,
    *,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = False,
    as_torch: bool = True,
    pad_shards: bool | None = None,
) -> Iterator[tuple]:
    """Yield ``(images NCHW float32, labels int64)`` batches as torch tensors (or numpy arrays).

    The order depends only on ``(seed, epoch)`` and each sample's augmentation on
    ``(seed, epoch, index)``, which is what makes a resumed or distributed run repeat exactly.
    """
    if batch_size <= 0:
        raise ValueError("batch_size must be positive")
    dataset.set_epoch(epoch, seed)
    order = epoch_order(len(dataset), shuffle, seed, epoch)
    mine = shard(order, rank, world_size, pad=shuffle if pad_shards is None else pad_shards)
    count = num_batches(len(mine), batch_size, drop_last)
    if as_torch:
        import torch
    for b in range(count):
        x, y = dataset.load_batch(mine[b * batch_size : (b + 1) * batch_size])
        if as_torch:
            yield torch.from_numpy(x), torch.from_numpy(y)
        else:
            yield x, y


def prefetch(batches: Iterator[tuple], depth: int = 2) -> Iterator[tuple]:
    """Yield the items of ``batches`` while a background thread prepares the next ``depth`` of them.

    For GPU training: the host both augments batches and launches kernels, and numpy releases the GIL
    in its array work, so the next batch is made while this one's kernels are queued. The items and their
    order are those of ``batches``: a prefetched run sees the same data as one without.
    """
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def work() -> None:
        try:
            for item in batches:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as exc:  # handed to the consumer, raised there
            q.put(exc)

    thread = threading.Thread(target=work, name="batch-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()

