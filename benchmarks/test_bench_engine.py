"""Input-pipeline overhead of the training engine (pytest-benchmark; ``pytest benchmarks/ -s``).

Training a small CNN for three epochs through :meth:`Trainer.fit` on ``N`` GalSim galaxies (64x64 px,
g/r/i; default 1024, ~820 in the training split, ``SIM2OBS_BENCH_ENGINE_N``), fed (a) from in-memory tensors (the step-only reference), (b) from
the galaxy set through ``galaxy_set_dataset`` (split held in memory, read when the dataset is made, which
is inside the timed fit), (c) the same with ``num_workers=2`` (the engine serves a split held in memory
in-process: workers would only copy batches between processes), (d) the split read lazily from the shards
(``in_memory=False``; the engine shuffles it in blocks of 8 consecutive objects, ``read_block``) in the
training process and by one and two persistent DataLoader workers. One intra-op thread.
Everything else (model, batches, validation, checkpoint) is identical, so the differences are the cost
of reading, decoding and serving the images. ``RATIO`` lines: throughput relative to (a), taken round by
round side by side.
"""
from __future__ import annotations

import itertools
import os

import numpy as np
import pytest
import torch
from torch import nn

from sim2obs.models.engine import TensorDictDataset, Trainer, TrainerConfig, galaxy_set_dataset

TARGETS = ["log_mstar"]
N = int(os.environ.get("SIM2OBS_BENCH_ENGINE_N", "1024"))
torch.set_num_threads(1)  # steadier timings on a few shared cores; the workers are separate processes


@pytest.fixture(scope="module")
def galaxy_set(tmp_path_factory):
    from sim2obs.simgen.galsim_bulge_disk import generate

    return generate({"n": N, "stamp": 64, "shard_size": 256}, tmp_path_factory.mktemp("bench") / "set",
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


EPOCHS = 3  # the first epoch carries worker start-up; throughput is taken over the later ones


def _fit_seconds(train, val, workers: int, out) -> tuple[float, float, float]:
    """(first-epoch seconds, median seconds of the later epochs, final val loss) of one EPOCHS-long fit."""
    cfg = TrainerConfig(device="cpu", precision="fp32", channels_last=False, epochs=EPOCHS, batch_size=32,
                        num_workers=workers, optimiser="adam", schedule="none", augment=None, progress=False,
                        restore_best=False)
    torch.manual_seed(0)
    history = Trainer(cfg).fit(SmallCNN(), train, val, out).history
    seconds = [r["seconds"] for r in history]
    return seconds[0], float(np.median(seconds[1:])), history[-1]["val_loss"]


@pytest.mark.parametrize("source, workers", [("memory", 0), ("galaxy_set", 0), ("galaxy_set", 2),
                                             ("galaxy_set_lazy", 0), ("galaxy_set_lazy", 1), ("galaxy_set_lazy", 2)])
def test_epoch_input_pipeline(benchmark, tmp_path, galaxy_set, source, workers):
    """Loader + step against step-only: ``RATIO`` = epoch throughput from the galaxy set / from in-memory
    tensors (1.0 = the loader costs nothing), median over rounds, each round timing the in-memory
    reference right before (pedantic setup), so both see the same machine load."""
    benchmark.group = "engine-epoch"
    memory = in_memory(galaxy_set, "train"), in_memory(galaxy_set, "val")
    counter = itertools.count()
    reference, measured = [], []

    def make_datasets():  # construction (reading the split) is part of the measured fit
        if source == "memory":
            return memory
        held = "auto" if source == "galaxy_set" else False
        return (galaxy_set_dataset(galaxy_set, "train", targets=TARGETS, in_memory=held),
                galaxy_set_dataset(galaxy_set, "val", targets=TARGETS, in_memory=held))

    def setup():
        if source != "memory":
            reference.append(_fit_seconds(*memory, 0, tmp_path / f"ref{next(counter)}"))

    def one_fit():
        measured.append(_fit_seconds(*make_datasets(), workers, tmp_path / f"run{next(counter)}"))
        return measured[-1]

    result = benchmark.pedantic(one_fit, setup=setup, rounds=3, iterations=1)
    assert np.isfinite(result[2])
    n_train = len(memory[0])
    info = {"source": source, "num_workers": workers, "n_train": n_train, "epochs": EPOCHS,
            "first_epoch_seconds": [m[0] for m in measured], "later_epoch_seconds": [m[1] for m in measured]}
    if reference:
        ratio = float(np.median([r[1] / m[1] for r, m in zip(reference, measured)]))
        first = float(np.median([r[0] / m[0] for r, m in zip(reference, measured)]))
        info.update(throughput_ratio=ratio, first_epoch_ratio=first)
        print(f"\nRATIO engine epoch {source} workers={workers}: loader+step / step-only throughput = {ratio:.3f} "
              f"(epochs 2-{EPOCHS}); first epoch (with worker start-up) {first:.3f}")
    benchmark.extra_info.update(info)
