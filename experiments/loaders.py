"""Data order and DataLoaders: one permutation per (seed, epoch), cut into global batches that the
ranks share, so one process and N processes see the same global batches and a resumed run replays
the same epochs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from experiments.seeding import epoch_seed, worker_init_fn


class GlobalBatchSampler(Sampler[int]):
    """This rank's indices: its slice of each global batch of one seeded permutation per epoch.

    With one rank it is a plain shuffled (or ordered) pass. Under DDP the trailing partial global
    batch is dropped so that every rank takes the same number of steps.
    """

    def __init__(
        self,
        size: int,
        global_batch: int,
        seed: int,
        shuffle: bool = True,
        drop_last: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if global_batch % world_size:
            raise ValueError(
                f"dataset.batch_size={global_batch} (the global batch) is not divisible by the "
                f"{world_size} processes; choose a multiple of {world_size}."
            )
        self.size, self.global_batch, self.seed = size, global_batch, seed
        self.shuffle, self.rank, self.world_size = shuffle, rank, world_size
        self.drop_last = drop_last or world_size > 1
        self.local_batch = global_batch // world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def num_batches(self) -> int:
        full, rest = divmod(self.size, self.global_batch)
        return full + (1 if rest and not self.drop_last else 0)

    def __len__(self) -> int:
        if self.world_size == 1:
            return self.size if not self.drop_last else self.num_batches() * self.global_batch
        return self.num_batches() * self.local_batch

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            gen = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
            order = torch.randperm(self.size, generator=gen)
        else:
            order = torch.arange(self.size)
        if self.world_size == 1:
            yield from order[: len(self)].tolist()
            return
        batches = order[: self.num_batches() * self.global_batch].view(-1, self.world_size, self.local_batch)
        yield from batches[:, self.rank].reshape(-1).tolist()


class ShardSampler(Sampler[int]):
    """Every ``world_size``-th index from ``rank``: each sample evaluated exactly once across ranks."""

    def __init__(self, size: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(range(rank, size, world_size))

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)


class EpochLoader:
    """A loader whose ``epoch(e)`` replays the same batches for the same (seed, e)."""

    def __init__(
        self, loader: Any, sampler: GlobalBatchSampler | None, generator: torch.Generator, seed: int
    ):
        self.loader, self.sampler, self.generator, self.seed = loader, sampler, generator, seed

    def epoch(self, epoch: int) -> Any:
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        # Worker seeds (and a device loader's shuffling) come from this generator.
        self.generator.manual_seed(epoch_seed(self.seed, epoch) + 1)
        return self.loader

    def __len__(self) -> int:
        return len(self.loader)


def train_loader(
    dataset: Dataset,
    collate: Callable,
    batch_size: int,
    seed: int,
    num_workers: int = 0,
    drop_last: bool = True,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
) -> EpochLoader:
    """The training loader: seeded per epoch, sharded across ranks by global batch."""
    sampler = GlobalBatchSampler(len(dataset), batch_size, seed, True, drop_last, rank, world_size)
    generator = torch.Generator()
    loader = DataLoader(
        dataset,
        batch_size=sampler.local_batch,
        sampler=sampler,
        collate_fn=collate,
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=False,  # the sampler already cut whole batches
        worker_init_fn=worker_init_fn,
        generator=generator,
        persistent_workers=False,
    )
    return EpochLoader(loader, sampler, generator, seed)


def eval_loader(
    dataset: Dataset,
    collate: Callable,
    batch_size: int,
    num_workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
) -> DataLoader:
    """The evaluation loader: every sample once across ranks, in order."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=ShardSampler(len(dataset), rank, world_size),
        collate_fn=collate,
        num_workers=num_workers,
        pin_memory=pin_memory,
        worker_init_fn=worker_init_fn,
    )


class DeviceEpochLoader(EpochLoader):
    """A data set's own device-resident loader (``DatasetBundle.device_loader``) behind the same interface.

    Under DDP each rank asks for its stride of every permutation (``num_replicas``/``rank``), with the
    global batch split evenly across ranks.
    """

    def __init__(
        self,
        make: Callable[..., Any],
        batch_size: int,
        drop_last: bool,
        device: torch.device,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size % world_size:
            raise ValueError(
                f"dataset.batch_size={batch_size} (the global batch) is not divisible by the "
                f"{world_size} processes; choose a multiple of {world_size}."
            )
        self.make, self.batch_size, self.drop_last, self.device = (
            make,
            batch_size // world_size,
            drop_last,
            device,
        )
        self.shard = {"num_replicas": world_size, "rank": rank} if world_size > 1 else {}
        super().__init__(None, None, torch.Generator(device=device), seed)
        self._len = len(self.epoch(0))

    def epoch(self, epoch: int) -> Any:
        self.generator.manual_seed(epoch_seed(self.seed, epoch) + 1)
        return self.make(
            "train", self.batch_size, True, self.drop_last, self.device, self.generator, **self.shard
        )

    def __len__(self) -> int:
        return self._len
