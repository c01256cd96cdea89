"""Device-resident CIFAR: the uint8 splits live on the device as one tensor each, augmented there.

CIFAR-100 is 150 MB of uint8 (train) plus 30 MB (test), so on a GPU box the whole data set sits in
device memory and every batch is an index, a cast and ``augment_batch`` - no workers, no copies.
``DeviceResidentCifar`` is the bundle's ``device_loader``:
``device_loader(split, batch_size, shuffle, drop_last, device, generator)`` -> iterable of
``(images, labels)`` on ``device``, images normalised float32 (B, 3, 32, 32), labels int64 (B,).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from data.cifar.augment import augment_batch, normalize

SPLITS = ("train", "eval")


class DeviceLoader:
    """One pass (epoch) per ``iter()``: a fresh permutation when shuffling, augmentation on ``train``."""

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        batch_size: int,
        shuffle: bool,
        drop_last: bool,
        augment: bool,
        generator: torch.Generator | None,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be at least 1.")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank={rank} must lie in [0, num_replicas={num_replicas}).")
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.augment, self.generator = augment, generator
        self.num_replicas, self.rank = num_replicas, rank

    def _indices(self) -> Tensor:
        n = self.images.shape[0]
        gen_device = self.generator.device if self.generator is not None else torch.device("cpu")
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator, device=gen_device)
        else:
            order = torch.arange(n, device=gen_device)
        if self.num_replicas > 1:  # every rank draws the same permutation and keeps its stride
            if self.drop_last:
                order = order[: n - n % self.num_replicas]
            order = order[self.rank :: self.num_replicas]
        return order.to(self.images.device)

    def __len__(self) -> int:
        n, r = self.images.shape[0], self.num_replicas
        per_rank = n // r if self.drop_last else len(range(self.rank, n, r))  # as _indices slices
        return per_rank // self.batch_size if self.drop_last else -(-per_rank // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        order = self._indices()
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            idx = order[start : start + self.batch_size]
            x = self.images[idx].float().div_(255.0)
            if self.augment:
                x = augment_batch(x, self.generator)
            yield normalize(x), self.labels[idx]


class DeviceResidentCifar:
    """Both splits as CPU uint8 tensors (N, 3, 32, 32), copied to a device once, on first use."""

    def __init__(self, splits: dict[str, tuple[np.ndarray, Sequence[int]]]) -> None:
        if set(splits) != set(SPLITS):
            raise ValueError(f"Expected splits {SPLITS}, got {sorted(splits)}.")
        self._cpu = {
            name: (torch.from_numpy(np.ascontiguousarray(data)).permute(0, 3, 1, 2), torch.as_tensor(targets))
            for name, (data, targets) in splits.items()
        }
        self._on_device: dict[tuple[str, torch.device], tuple[Tensor, Tensor]] = {}

    def tensors(self, split: str, device: torch.device | str) -> tuple[Tensor, Tensor]:
        """The ``split``'s images (uint8, NCHW, contiguous) and labels (int64) on ``device``."""
        if split not in SPLITS:
            raise ValueError(f"Unknown split {split!r}; choose one of {SPLITS}.")
        key = (split, torch.device(device))
        if key not in self._on_device:
            images, labels = self._cpu[split]
            self._on_device[key] = (images.to(device).contiguous(), labels.to(device, torch.int64))
        return self._on_device[key]

    def __call__(
        self,
        split: str,
        batch_size: int,
        shuffle: bool,
        drop_last: bool,
        device: torch.device | str,
        generator: torch.Generator | None = None,
        *,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> DeviceLoader:
        images, labels = self.tensors(split, device)
        return DeviceLoader(
            images, labels, batch_size, shuffle, drop_last, split == "train", generator, num_replicas, rank
        )
