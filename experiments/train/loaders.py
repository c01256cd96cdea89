"""Data order and DataLoaders: one permutation per (seed, epoch), cut into global batches that the
ranks share, so one process and N processes see the same global batches and a resumed run replays
the same epochs. ``epoch(e, start=k)`` begins epoch ``e`` at its batch ``k`` without loading the first
``k`` batches: the index list is cut, so a mid-epoch resume costs nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from experiments.train.seeding import epoch_seed, rank_seed, worker_init_fn


class GlobalBatchSampler(Sampler[int]):
    """This rank's indices: its slice of each global batch of one seeded permutation per epoch.

    With one rank it is a plain shuffled (or ordered) pass. Under DDP the trailing partial global
    batch is dropped so that every rank takes the same number of steps (docs/harness.md, "DDP").
    ``start`` (set with the epoch) skips that many whole global batches at the front.
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
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def num_batches(self) -> int:
        full, rest = divmod(self.size, self.global_batch)
        return full + (1 if rest and not self.drop_last else 0)

    def __len__(self) -> int:
        if self.world_size == 1:
            full = self.size if not self.drop_last else self.num_batches() * self.global_batch
            return max(full - self.start * self.global_batch, 0)
        return max(self.num_batches() - self.start, 0) * self.local_batch

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            gen = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
            order = torch.randperm(self.size, generator=gen)
        else:
            order = torch.arange(self.size)
        if self.world_size == 1:
            skip = self.start * self.global_batch
            yield from order[skip : skip + len(self)].tolist()
            return
        batches = order[: self.num_batches() * self.global_batch].view(-1, self.world_size, self.local_batch)
        yield from batches[self.start :, self.rank].reshape(-1).tolist()


class ShardSampler(Sampler[int]):
    """Every ``world_size``-th index from ``rank``: each sample evaluated exactly once across ranks."""

    def __init__(self, size: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(range(rank, size, world_size))

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)


class EpochLoader:
    """A loader whose ``epoch(e)`` replays the same batches for the same (seed, e).

    ``epoch(e, start=k)`` leaves out the first ``k`` batches. The DataLoader's worker seeds come from
    ``generator``, seeded per (seed, epoch, rank), never from the global RNG. With ``num_workers=0`` a
    mid-epoch resume is exact (augmentation draws from the restored global RNG); with workers, batch
    ``k + j`` goes to worker ``j % workers`` instead of ``(k + j) % workers``, so random per-sample
    augmentation after a mid-epoch resume is equal in distribution only (docs/harness.md).
    ``generator_state`` is accepted for symmetry with ``DeviceEpochLoader`` and not needed here: the
    DataLoader draws its base seed afresh from the reseeded generator each epoch.
    """

    def __init__(
        self,
        loader: Any,
        sampler: GlobalBatchSampler | None,
        generator: torch.Generator,
        seed: int,
        rank: int = 0,
    ):
        self.loader, self.sampler, self.generator, self.seed = loader, sampler, generator, seed
        self.rank = rank
        self.steps = len(loader) if loader is not None else 0  # batches in a whole epoch

    def epoch(self, epoch: int, start: int = 0, generator_state: torch.Tensor | None = None) -> Any:
        if self.sampler is not None:
            self.sampler.set_epoch(epoch, start)
        # Worker seeds come from this generator: one stream per (seed, epoch, rank).
        self.generator.manual_seed(rank_seed(epoch_seed(self.seed, epoch) + 1, self.rank))
        return self.loader

    def __len__(self) -> int:
        return self.steps


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
    return EpochLoader(loader, sampler, generator, seed, rank)


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
    global batch split evenly across ranks. The loader shuffles and augments with one generator: every
    rank draws the same permutation, then (under DDP) the generator is reseeded per rank so that ranks
    augment independently. ``epoch(e, start=k, generator_state=g)`` resumes at batch ``k`` with the
    generator as it was after batch ``k`` (``g``), so a mid-epoch resume replays the same augmentations.
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
            drop_last or world_size > 1,  # as GlobalBatchSampler: every rank takes the same number of steps
            device,
        )
        self.shard = {"num_replicas": world_size, "rank": rank} if world_size > 1 else {}
        super().__init__(None, None, torch.Generator(device=device), seed, rank)
        self.steps = len(self.epoch(0))

    def epoch(self, epoch: int, start: int = 0, generator_state: torch.Tensor | None = None) -> Any:
        self.generator.manual_seed(epoch_seed(self.seed, epoch) + 1)
        loader = self.make(
            "train", self.batch_size, True, self.drop_last, self.device, self.generator, **self.shard
        )
        after_permutation = None
        if generator_state is not None:
            state = generator_state.cpu()
            after_permutation = lambda: self.generator.set_state(state)  # noqa: E731
        elif self.shard:
            per_rank = rank_seed(epoch_seed(self.seed, epoch) + 1, self.rank)
            after_permutation = lambda: self.generator.manual_seed(per_rank)  # noqa: E731
        return _positioned(loader, start, after_permutation)


def _positioned(loader: Any, start: int, after_permutation: Callable[[], None] | None) -> Any:
    """``loader`` (a ``data.cifar_device.DeviceLoader``) cut to begin at batch ``start``, calling
    ``after_permutation`` once the epoch's permutation is drawn (to set the augmentation stream)."""
    if not start and after_permutation is None:
        return loader
    base = type(loader)
    if not hasattr(base, "_indices"):
        raise ValueError(
            f"{base.__name__} has no _indices(); a device-resident loader must expose its permutation "
            "for a mid-epoch resume (set dataset.device_resident=false)."
        )

    class Positioned(base):
        def _indices(self) -> torch.Tensor:
            order = base._indices(self)
            if after_permutation is not None:
                after_permutation()
            return order[start * self.batch_size :]

        def __len__(self) -> int:
            return max(base.__len__(self) - start, 0)

    loader.__class__ = Positioned
    return loader
