"""A torch ``Dataset`` over one split of a galaxy set, safe with several DataLoader workers.

Two ways of serving images, chosen per dataset by ``in_memory``:

- held in memory (the default whenever the split's image stacks fit in ``max_memory_gb``, 2 GiB unless
  told otherwise): every stack of the split is read once, when the dataset is made, in one contiguous
  read per shard (:meth:`GalaxySet.images`), and items are then rows of those arrays. DataLoader
  workers started by ``fork`` share the arrays copy-on-write; with ``spawn`` each receives a copy.
- read lazily from the shards (larger splits): each process keeps its own HDF5 handles and dataset
  objects; a batch is read shard by shard (:meth:`GalaxySetDataset.__getitems__`), and the training
  engine shuffles such a split in blocks of consecutive objects (:attr:`GalaxySetDataset.read_block`)
  so that a batch is a few slice reads.

Either way the DataLoader asks for whole batches through ``__getitems__`` (PyTorch's batched-fetch
protocol), so the per-item Python overhead is paid once per batch wherever it can be.

A held split with no transform has nothing for DataLoader workers to overlap: they only add an
inter-process copy of every batch (a plain 2-worker DataLoader served 0.24-0.30x the in-process rate on
2 busy cores, ``benchmarks/test_bench_loader.py``). Such a dataset says so (:attr:`served_in_process`)
and the training engine then serves it in its own process; workers remain for lazy reads and transforms.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from sim2obs.errors import Sim2obsValueError

if TYPE_CHECKING:  # annotations only: the reader imports this module (GalaxySet.torch_dataset), not the reverse
    from sim2obs.galaxyset import GalaxySet

#: Default memory cap (GiB) for holding a split's images in RAM (``in_memory="auto"``).
DEFAULT_MAX_MEMORY_GB = 2.0


class GalaxySetDataset(Dataset):
    """Items of one split of a galaxy set.

    Each item is a dict ``{"inputs": {stack: float32 tensor (C, H, W)}, "target": float32
    tensor (len(targets),), "id": int64 object id, "index": global index}``. The target columns are
    held in memory. ``transform`` maps the ``inputs`` dict of one item to a new dict
    (preprocessing, augmentation); ``target_transform`` maps the target tensor. Transforms get copies,
    so in-place transforms are safe; without a transform, items of a split held in memory are views
    of the held arrays (as :class:`sim2obs.models.engine.TensorDictDataset` items are): treat them as
    read-only.

    ``in_memory``: ``"auto"`` holds the split's images in RAM when they take at most
    ``max_memory_gb`` GiB (float32 bytes of every requested stack), ``True`` always, ``False`` never
    (images read from the shards on access). :attr:`held_in_memory` says which was chosen.

    :attr:`read_block`: how many consecutive objects the training engine shuffles together
    (:class:`sim2obs.models.engine.data.BlockShuffleSampler`): 8 for a split read lazily (a batch then
    costs a few slice reads, not one per object), 1 (per-object shuffling) for a held one; set it to 1
    to shuffle a lazy split object by object.
    """

    #: Consecutive objects shuffled together by the training engine when the split is read lazily.
    LAZY_READ_BLOCK = 8

    def __init__(self, galaxy_set: GalaxySet, split: str | None = None, inputs: Sequence[str] | None = None,
                 targets: Sequence[str] = (), transform: Callable | None = None,
                 target_transform: Callable | None = None, in_memory: bool | str = "auto",
                 max_memory_gb: float = DEFAULT_MAX_MEMORY_GB):
        if in_memory not in ("auto", True, False):
            raise Sim2obsValueError("in_memory must be 'auto', True or False", value=in_memory)
        if not max_memory_gb >= 0:
            raise Sim2obsValueError("max_memory_gb must be >= 0", value=max_memory_gb)
        self.galaxy_set = galaxy_set
        self.split = split
        self.inputs = tuple(inputs) if inputs is not None else tuple(s.name for s in galaxy_set.schema.stacks)
        specs = [galaxy_set.schema.stack(name) for name in self.inputs]
        self.targets = tuple(targets)
        self.indices = galaxy_set.indices(split)
        columns = [galaxy_set.column(t)[self.indices].astype(np.float32) for t in self.targets]
        self._targets = torch.from_numpy(np.stack(columns, axis=1) if columns
                                         else np.zeros((len(self.indices), 0), np.float32))
        self._ids = galaxy_set.ids[self.indices].astype(np.int64)
        self.transform = transform
        self.target_transform = target_transform
        self.image_bytes = len(self.indices) * sum(4 * int(np.prod(s.shape)) for s in specs)
        self.held_in_memory = in_memory is True or (in_memory == "auto"
                                                    and self.image_bytes <= max_memory_gb * 1024 ** 3)
        self._images: dict[str, torch.Tensor] | None = None
        self.read_block = 1 if self.held_in_memory else self.LAZY_READ_BLOCK
        if self.held_in_memory:
            self._images = {name: torch.from_numpy(galaxy_set.images(name, indices=self.indices))
                            for name in self.inputs}

    @property
    def served_in_process(self) -> bool:
        """True when items are rows of the held arrays with no transform: nothing for DataLoader
        workers to overlap, so the training engine serves such a dataset in its own process."""
        return self._images is not None and self.transform is None and self.target_transform is None

    def __len__(self) -> int:
        return len(self.indices)

    def _item(self, images: dict[str, torch.Tensor], row: int, position: int, fresh: bool) -> dict:
        """Item ``position`` with its images at ``row`` of ``images`` (``fresh``: not the held arrays)."""
        inputs = {name: t[row] for name, t in images.items()}
        if self.transform is not None:
            inputs = self.transform(inputs if fresh else {name: t.clone() for name, t in inputs.items()})
        target = self._targets[position]
        if self.target_transform is not None:
            target = self.target_transform(target.clone())
        return {"inputs": inputs, "target": target, "id": int(self._ids[position]),
                "index": int(self.indices[position])}

    def __getitem__(self, i: int) -> dict:
        n, position = len(self), int(i)
        position += n if position < 0 else 0
        if not 0 <= position < n:
            raise IndexError(f"dataset position {i} outside [0, {n})")
        if self._images is not None:
            return self._item(self._images, position, position, fresh=False)
        index = int(self.indices[position])
        images = {name: torch.from_numpy(self.galaxy_set.read_image(name, index)).unsqueeze(0)
                  for name in self.inputs}
        return self._item(images, 0, position, fresh=True)

    def __getitems__(self, positions: Sequence[int]) -> list[dict]:
        """A batch of items at once (called by ``torch.utils.data.DataLoader``): rows of the held
        arrays, or from disk one slice read per run of consecutive objects, shard and stack."""
        pos = np.asarray(positions, dtype=np.int64).reshape(-1)
        if pos.size and (pos.min() < -len(self) or pos.max() >= len(self)):
            raise IndexError(f"dataset positions outside [0, {len(self)})")
        pos %= max(len(self), 1)
        if self._images is not None:
            return [self._item(self._images, p, p, fresh=False) for p in pos.tolist()]
        images = {name: torch.from_numpy(self.galaxy_set.images(name, indices=self.indices[pos]))
                  for name in self.inputs}
        return [self._item(images, row, p, fresh=True) for row, p in enumerate(pos.tolist())]
