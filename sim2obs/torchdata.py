"""A lazy torch ``Dataset`` over a galaxy set, safe with several DataLoader workers."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from sim2obs.galaxyset import GalaxySet


class GalaxySetDataset(Dataset):
    """Items of one split of a galaxy set.

    Each item is a dict ``{"inputs": {stack: float32 tensor (C, H, W)}, "target": float32
    tensor (len(targets),), "id": int64 object id, "index": global index}``. Images are read
    from disk on access (each worker process opens its own HDF5 handles); the target columns
    are held in memory. ``transform`` maps the ``inputs`` dict to a new dict (preprocessing,
    augmentation); ``target_transform`` maps the target tensor.
    """

    def __init__(self, galaxy_set: GalaxySet, split: str | None = None, inputs: Sequence[str] | None = None,
                 targets: Sequence[str] = (), transform: Callable | None = None,
                 target_transform: Callable | None = None):
        self.galaxy_set = galaxy_set
        self.split = split
        self.inputs = tuple(inputs) if inputs is not None else tuple(s.name for s in galaxy_set.schema.stacks)
        for name in self.inputs:
            galaxy_set.schema.stack(name)
        self.targets = tuple(targets)
        self.indices = galaxy_set.indices(split)
        columns = [galaxy_set.column(t)[self.indices].astype(np.float32) for t in self.targets]
        self._targets = np.stack(columns, axis=1) if columns else np.zeros((len(self.indices), 0), np.float32)
        self._ids = galaxy_set.ids[self.indices].astype(np.int64)
        self.transform = transform
        self.target_transform = target_transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        index = int(self.indices[i])
        inputs = {name: torch.from_numpy(self.galaxy_set.read_image(name, index)) for name in self.inputs}
        if self.transform is not None:
            inputs = self.transform(inputs)
        target = torch.from_numpy(self._targets[i].copy())
        if self.target_transform is not None:
            target = self.target_transform(target)
        return {"inputs": inputs, "target": target, "id": int(self._ids[i]), "index": index}
