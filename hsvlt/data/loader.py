"""DataLoaders for training and evaluation, on one process or many."""

import signal

import torch
from torch.utils.data import DataLoader, Sampler

from hsvlt.data.base import MultiLabelDataset, SampleDataset, collate
from hsvlt.data.transforms import Transform


class EpochSampler(Sampler[int]):
    """A shuffled order fixed by (seed, epoch), padded to a multiple of the world size and sharded over
    ranks; `skip` drops the first samples of this rank's share (resuming part-way through an epoch).
    It yields (epoch, index) pairs, so that augmentation in (persistent) workers knows the epoch."""

    def __init__(self, size: int, seed: int = 0, rank: int = 0, world_size: int = 1, shuffle: bool = True):
        self.size, self.seed, self.rank, self.world_size, self.shuffle = size, seed, rank, world_size, shuffle
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def shard(self) -> list[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = list(range(self.size))
        padding = (-len(order)) % self.world_size
        order += order[:padding]
        return order[self.rank :: self.world_size]

    def __iter__(self):
        return iter([(self.epoch, index) for index in self.shard()[self.skip :]])

    def __len__(self) -> int:
        return max(0, -(-self.size // self.world_size) - self.skip)


class ShardSampler(Sampler[int]):
    """Evaluation: rank r takes samples r, r + W, r + 2W, ...; no padding, so nothing is counted twice."""

    def __init__(self, size: int, rank: int = 0, world_size: int = 1):
        self.indices = list(range(rank, size, world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def ignore_stop_signals(worker_id: int) -> None:
    """In a data-loading worker: leave SIGTERM and Ctrl-C to the main process. A cluster (or `timeout`, or a
    terminal) signals the whole process group; a worker that died of it would end training with a DataLoader
    error instead of the main process stopping at its next step with a fresh last.pt."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _loader(samples: SampleDataset, sampler: Sampler, batch_size: int, workers: int, drop_last: bool) -> DataLoader:
    return DataLoader(
        samples,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        drop_last=drop_last,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        worker_init_fn=ignore_stop_signals,
    )


def train_loader(
    dataset: MultiLabelDataset,
    transform: Transform,
    batch_size: int,
    workers: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[DataLoader, EpochSampler]:
    """The sampler is returned too: call its `set_epoch` every epoch."""
    sampler = EpochSampler(len(dataset), seed, rank, world_size)
    return _loader(SampleDataset(dataset, transform, seed), sampler, batch_size, workers, drop_last=True), sampler


def eval_loader(
    dataset: MultiLabelDataset, transform: Transform, batch_size: int, workers: int, rank: int = 0, world_size: int = 1
) -> DataLoader:
    samples = SampleDataset(dataset, transform)
    return _loader(samples, ShardSampler(len(dataset), rank, world_size), batch_size, workers, drop_last=False)
