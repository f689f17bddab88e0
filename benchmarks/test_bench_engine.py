"""Input-pipeline overhead of the training engine (pytest-benchmark; run with ``pytest benchmarks/``).

One training epoch of a small CNN through :meth:`Trainer.fit` on 256 GalSim galaxies (64x64 px,
g/r/i; ~205 in the training split), fed (a) from in-memory tensors, (b) from the galaxy set on
disk through the lazy dataset (HDF5 reads in the main process), (c) the same with two
DataLoader workers. One intra-op thread. Everything else (model, batches, validation, checkpoint) is identical, so
the differences are the cost of reading and decoding the images.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from sim2obs.models.engine import TensorDictDataset, Trainer, TrainerConfig, galaxy_set_dataset

TARGETS = ["log_mstar"]
torch.set_num_threads(1)  # steadier timings on a few shared cores; the workers are separate processes


@pytest.fixture(scope="module")
def galaxy_set(tmp_path_factory):
    from sim2obs.simgen.galsim_bulge_disk import generate

    return generate({"n": 256, "stamp": 64, "shard_size": 128}, tmp_path_factory.mktemp("bench") / "set",
                    cluster={"kind": "synchronous"}, progress=False)


def in_memory(path, split: str) -> TensorDictDataset:
    """The same objects, images and targets as ``galaxy_set_dataset(path, split)``, held in RAM."""
    from sim2obs.galaxyset import open_galaxy_set

    gs = open_galaxy_set(path)
    images = torch.from_numpy(np.ascontiguousarray(gs.images("image", split=split)))
    targets = torch.from_numpy(np.stack([gs.column(t, split) for t in TARGETS], 1).astype(np.float32))
    return TensorDictDataset({"image": images}, targets, ids=torch.from_numpy(gs.ids[gs.indices(split)]))


class SmallCNN(nn.Module):
    """(B, 3, 64, 64) -> (B, 1): two 3x3 convolutions, pooling, a linear head."""

    def __init__(self, in_channels: int = 3, n_targets: int = 1):
        super().__init__()
        self.in_channels = in_channels
        self.n_targets = n_targets
        self.body = nn.Sequential(nn.Conv2d(in_channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(32, n_targets)

    def forward(self, x):
        return self.head(self.body(x))


@pytest.mark.parametrize("source, workers", [("memory", 0), ("galaxy_set", 0), ("galaxy_set", 2)])
def test_epoch_input_pipeline(benchmark, tmp_path, galaxy_set, source, workers):
    if source == "memory":
        train, val = in_memory(galaxy_set, "train"), in_memory(galaxy_set, "val")
    else:
        train = galaxy_set_dataset(galaxy_set, "train", targets=TARGETS)
        val = galaxy_set_dataset(galaxy_set, "val", targets=TARGETS)
    cfg = TrainerConfig(device="cpu", precision="fp32", channels_last=False, epochs=1, batch_size=32,
                        num_workers=workers, optimiser="adam", schedule="none", augment=None, progress=False,
                        restore_best=False)
    counter = itertools.count()
    seconds = []

    def one_epoch():
        torch.manual_seed(0)
        result = Trainer(cfg).fit(SmallCNN(), train, val, tmp_path / f"run{next(counter)}")
        seconds.append(result.history[0]["seconds"])
        return result

    result = benchmark.pedantic(one_epoch, rounds=5, iterations=1, warmup_rounds=1)
    n_batches = -(-len(train) // cfg.batch_size)
    benchmark.extra_info.update({"source": source, "num_workers": workers, "n_train": len(train),
                                 "n_val": len(val), "batches": n_batches,
                                 "train_val_seconds_median": float(np.median(seconds)),
                                 "ms_per_train_batch_upper": 1000 * float(np.median(seconds)) / n_batches})
    assert np.isfinite(result.history[0]["val_loss"])
