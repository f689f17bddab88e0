"""Data: the in-memory dataset with the galaxy-set item contract, the galaxy-set dataset for
``_target_`` configs, and the loaders of the loop (sharded per process; every epoch's shuffling and
worker seeds keyed on (seed, epoch, rank), also for persistent workers)."""
from __future__ import annotations

import os
import random
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, get_worker_info
from torch.utils.data.distributed import DistributedSampler

from sim2obs.errors import Sim2obsValueError
from sim2obs.models.engine.config import TrainerConfig
from sim2obs.models.engine.distributed import _Runtime
from sim2obs.models.engine.seeding import _STREAM_AUGMENT, _STREAM_EVAL, _STREAM_WORKERS, _derive_seed

__all__ = ["BlockShuffleSampler", "TensorDictDataset", "galaxy_set_dataset"]


class TensorDictDataset(Dataset):
    """An in-memory dataset with the galaxy-set item contract.

    ``inputs``: ``{stack: (N, C, H, W)}`` float tensors (other shapes ``(N, ...)`` are allowed,
    e.g. catalogue features); ``targets``: ``(N, T)``; ``ids``: ``(N,)`` int (default 0..N-1).
    Item ``i`` is ``{"inputs": {stack: (C, H, W)}, "target": (T,), "id": int, "index": i}``.
    """

    def __init__(self, inputs: Mapping[str, Tensor], targets: Tensor, ids: Tensor | None = None):
        n = len(targets)
        for name, t in inputs.items():
            if len(t) != n:
                raise Sim2obsValueError(f"input stack {name!r} has {len(t)} rows, targets {n}", value=len(t))
        if ids is not None and len(ids) != n:
            raise Sim2obsValueError(f"ids have {len(ids)} rows, targets {n}", value=len(ids))
        self.inputs = dict(inputs)
        self.targets = targets
        self.ids = ids

    #: Items are rows of in-memory tensors: the engine serves them in-process (see ``_workers_for``).
    served_in_process = True

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> dict:
        return {"inputs": {name: t[i] for name, t in self.inputs.items()}, "target": self.targets[i],
                "id": int(self.ids[i]) if self.ids is not None else int(i), "index": int(i)}


def galaxy_set_dataset(path: str | os.PathLike, split: str, inputs: Sequence[str] | None = None,
                       targets: Sequence[str] = (), in_memory: bool | str = "auto",
                       max_memory_gb: float | None = None) -> Dataset:
    """``open_galaxy_set(path).torch_dataset(split, inputs, targets, ...)``, for ``_target_`` configs.

    The split's images are held in memory when they fit in ``max_memory_gb`` (default 2 GiB) and read
    lazily otherwise; ``in_memory`` True / False forces either (:class:`sim2obs.torchdata.GalaxySetDataset`).
    The set is opened with the schema check only: every image the dataset serves is checked for NaN/inf
    as it is read, so the whole set is not decompressed once more just to be scanned."""
    from sim2obs.galaxyset import open_galaxy_set  # deferred: import speed (h5py and the format's readers)

    gs = open_galaxy_set(path, check="schema")
    return gs.torch_dataset(split, inputs=inputs, targets=list(targets), in_memory=in_memory,
                            max_memory_gb=max_memory_gb)



def _workers_for(dataset: Dataset, requested: int) -> int:
    """DataLoader workers for ``dataset``: none when it declares ``served_in_process`` (items are rows of
    arrays already in memory, no per-item work), where workers would only add an inter-process copy of
    every batch (measured 0.78-1.05x the in-process throughput on 2 cores); else ``requested``."""
    return 0 if getattr(dataset, "served_in_process", False) else int(requested)


class _EpochSeeded(Dataset):
    """``dataset`` for persistent DataLoader workers, re-seeded at every epoch.

    Workers stay alive across epochs (starting them costs seconds per epoch), so PyTorch's seeding of a
    fresh worker happens only once. The sampler (:class:`_WithEpochSeed`) hands every index out as
    ``(index, epoch_seed)``; the first item of a new epoch in a worker seeds torch, numpy and ``random``
    from (epoch seed, worker id). Worker-side draws are thus keyed on (seed, epoch, rank, worker), as with
    workers restarted every epoch, and a resumed run draws what the uninterrupted one did."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self._seed: int | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def _reseed(self, epoch_seed: int) -> None:
        if epoch_seed != self._seed:
            info = get_worker_info()
            seed = _derive_seed(epoch_seed, info.id if info is not None else 0)
            torch.manual_seed(seed)
            random.seed(seed)
            np.random.seed(seed % 2**32)
            self._seed = epoch_seed

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, epoch_seed = key
        self._reseed(epoch_seed)
        return self.dataset[index]

    def __getitems__(self, keys: Sequence[tuple[int, int]]) -> list:
        self._reseed(keys[0][1])
        indices = [k[0] for k in keys]
        batch = getattr(self.dataset, "__getitems__", None)
        return batch(indices) if callable(batch) else [self.dataset[i] for i in indices]


class _WithEpochSeed:
    """A sampler yielding ``(index, seed)`` pairs of ``sampler``'s indices; set :attr:`seed` per epoch."""

    def __init__(self, sampler):
        self.sampler = sampler
        self.seed = 0

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        seed = self.seed
        return ((index, seed) for index in self.sampler)



def make_loader(rt: _Runtime, dataset: Dataset, sampler, batch_size: int, drop_last: bool,
                generator: torch.Generator, workers: int) -> DataLoader:
    """The loop's DataLoader: pinned memory on CUDA; workers persist across epochs (restarting them cost
    seconds per epoch); the training loader re-seeds them per epoch through :class:`_EpochSeeded`."""
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      pin_memory=rt.device.type == "cuda", drop_last=drop_last, generator=generator,
                      persistent_workers=workers > 0)


def eval_loader(rt: _Runtime, cfg: TrainerConfig, dataset: Dataset,
                make: Callable[..., DataLoader] = make_loader) -> DataLoader:
    """Unshuffled, unpadded shard ``rank::world`` of ``dataset`` (built by ``make``, as
    :func:`make_loader`)."""
    if len(dataset) == 0:
        raise Sim2obsValueError("dataset is empty", value=0)
    generator = torch.Generator().manual_seed(_derive_seed(cfg.seed, _STREAM_EVAL, rt.rank))
    sampler = range(rt.rank, len(dataset), rt.world)
    return make(rt, dataset, sampler, max(1, cfg.batch_size // rt.world), False, generator,
                _workers_for(dataset, cfg.num_workers))


class BlockShuffleSampler(DistributedSampler):
    """A ``DistributedSampler`` that shuffles blocks of ``block`` consecutive dataset positions instead
    of single positions: each batch is ``batch / block`` random blocks, which a dataset read lazily from
    disk serves with a few slice reads instead of one read per object (2-3x the images per second from
    an uncompressed set; ``benchmarks/test_bench_engine.py`` times the lazy path with it). Each process takes its own stretch of the
    shuffled order (padded as ``DistributedSampler`` pads); the order is keyed on (seed, epoch)."""

    def __init__(self, dataset: Dataset, block: int, num_replicas: int, rank: int, seed: int,
                 drop_last: bool = False):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed,
                         drop_last=drop_last)
        if int(block) < 1:
            raise Sim2obsValueError("the read block must be at least 1 object", value=block)
        self.block = int(block)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        n = len(self.dataset)
        starts = torch.arange(0, n, self.block)[torch.randperm((n + self.block - 1) // self.block, generator=g)]
        order = [i for s in starts.tolist() for i in range(s, min(s + self.block, n))]
        if self.drop_last:
            order = order[:self.total_size]
        elif order:  # pad with the first positions again, as DistributedSampler does
            order = (order * (self.total_size // len(order) + 1))[:self.total_size]
        # each process takes one contiguous stretch of the shuffled order (blocks stay whole)
        return iter(order[self.rank * self.num_samples:(self.rank + 1) * self.num_samples])


class TrainLoader:
    """The training loader of one process: a shuffled shard (``DistributedSampler``; blocks of
    ``dataset.read_block`` consecutive items when the dataset declares one, :class:`BlockShuffleSampler`)
    of ``batch_size / world`` items per step; :meth:`start_epoch` keys the epoch's shuffling, worker seeds and
    augmentation draws on (seed, epoch, rank). ``make`` builds the DataLoader (as :func:`make_loader`)."""

    def __init__(self, rt: _Runtime, cfg: TrainerConfig, dataset: Dataset,
                 make: Callable[..., DataLoader] = make_loader):
        self.rt, self.seed = rt, cfg.seed
        block = int(getattr(dataset, "read_block", 1))  # lazy galaxy-set splits read runs of objects
        self.sampler = (BlockShuffleSampler(dataset, block, rt.world, rt.rank, cfg.seed) if block > 1 else
                        DistributedSampler(dataset, num_replicas=rt.world, rank=rt.rank, shuffle=True,
                                           seed=cfg.seed, drop_last=False))
        self.generator = torch.Generator()
        workers = _workers_for(dataset, cfg.num_workers)
        self.seeded = _WithEpochSeed(self.sampler) if workers > 0 else None  # persistent workers: _EpochSeeded
        self.loader = make(rt, dataset if self.seeded is None else _EpochSeeded(dataset),
                           self.sampler if self.seeded is None else self.seeded, cfg.batch_size // rt.world,
                           cfg.drop_last, self.generator, workers)
        if len(self.loader) == 0:
            raise Sim2obsValueError("the training set gives no batch", value=len(dataset))

    def __len__(self) -> int:
        return len(self.loader)

    def start_epoch(self, epoch: int) -> torch.Generator:
        """Seed ``epoch``'s shuffling and workers; return its augmentation generator."""
        self.sampler.set_epoch(epoch)
        self.generator.manual_seed(_derive_seed(self.seed, _STREAM_WORKERS, epoch, self.rt.rank))
        if self.seeded is not None:
            self.seeded.seed = _derive_seed(self.seed, _STREAM_WORKERS, epoch, self.rt.rank)
        return torch.Generator().manual_seed(_derive_seed(self.seed, _STREAM_AUGMENT, epoch, self.rt.rank))
