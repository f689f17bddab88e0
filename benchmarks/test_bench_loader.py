"""The galaxy-set loader alone against in-memory tensors (pytest-benchmark; ``pytest benchmarks/ -s``).

A galaxy set of ``N`` objects of 64x64 px x 3 bands (smooth profiles plus noise, written by
:class:`GalaxySetWriter` in the real on-disk format: one gzip chunk per object, 2 shards), iterated as a
training split by ``torch.utils.data.DataLoader`` (batch 64, shuffled) without any model: the rate at
which images can be handed to a GPU. References in the same group and run: the same images as
in-memory tensors (:class:`TensorDictDataset`). Variants: the galaxy-set dataset holding the split in
memory (the default below ``max_memory_gb``) with 0 and 2 persistent workers, and the lazy path
(``max_memory_gb=0``: images decompressed from the shards per batch).

The engine's path (``galaxy_set_engine``): 2 workers asked for, as a training config does, and the
number the training engine actually starts (:func:`sim2obs.models.engine._workers_for`): a held split
with no transform is served in the engine's own process, because its items are rows of arrays already
in memory and workers could only add an inter-process copy of every batch (the plain 2-worker
DataLoader line shows that copy). Workers remain for lazy reads and transforms, where they overlap
real work. Decision (issue 16): the held-split 2-worker DataLoader is not made copy-free; the engine
does not use it, and this benchmark measures the path it does use.

``RATIO`` lines give images/s over ``EPOCHS`` epochs after the dataset (and workers) exist, relative to
the in-memory reference timed right before in the same round, and the one-off cost of building the
dataset (reading and decompressing the split). One intra-op thread; 2 cores assumed.
"""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from sim2obs import ColumnSpec, GalaxySetSchema, GalaxySetWriter, StackSpec, open_galaxy_set
from sim2obs.galaxyset import assign_splits
from sim2obs.models.engine import TensorDictDataset, _workers_for

N, SIZE, SHARD, BATCH, EPOCHS = 1280, 64, 640, 64, 3
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def galaxy_set(tmp_path_factory):
    path = tmp_path_factory.mktemp("loader") / "set"
    schema = GalaxySetSchema(stacks=(StackSpec("image", ("g", "r", "i"), SIZE, SIZE, unit="nanomaggy"),),
                             columns=(ColumnSpec("id", "int64"), ColumnSpec("log_mstar", "float64", "dex(solMass)")))
    writer = GalaxySetWriter(path, schema, N, SHARD, build_key="bench")
    writer.prepare()
    codes, _ = assign_splits(N, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=0)
    rng = np.random.default_rng(0)
    r = np.hypot(*(np.mgrid[:SIZE, :SIZE] - (SIZE - 1) / 2))
    for s in range(writer.n_shards):
        a, b = writer.shard_range(s)
        profile = np.exp(-r / rng.uniform(2, 8, (b - a, 1, 1, 1))) * rng.uniform(1, 20, (b - a, 3, 1, 1))
        images = (profile + rng.normal(0, 0.05, (b - a, 3, SIZE, SIZE))).astype(np.float32)
        writer.write_shard(s, {"image": images}, {"id": np.arange(a, b), "log_mstar": rng.uniform(9, 11, b - a)},
                           codes[a:b])
    writer.finalize("bench", {"source": "synthetic", "seed": 0})
    return path


def _memory(path) -> TensorDictDataset:
    gs = open_galaxy_set(path)
    return TensorDictDataset({"image": torch.from_numpy(gs.images("image", "train"))},
                             torch.from_numpy(gs.column("log_mstar", "train").astype(np.float32)[:, None]),
                             ids=torch.from_numpy(gs.ids[gs.indices("train")]))


def _epochs(dataset, workers: int) -> tuple[float, int]:
    """Seconds for EPOCHS shuffled passes (after the loader's first batch: workers started) and images seen."""
    loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=workers,
                        persistent_workers=workers > 0, generator=torch.Generator().manual_seed(0))
    next(iter(loader))
    seen = 0
    t0 = time.perf_counter()
    for _ in range(EPOCHS):
        for batch in loader:
            seen += len(batch["inputs"]["image"])
    return time.perf_counter() - t0, seen


@pytest.mark.parametrize("source, workers", [("memory_tensors", 0), ("galaxy_set", 0), ("galaxy_set", 2),
                                             ("galaxy_set_engine", 2), ("galaxy_set_lazy", 0)])
def test_loader_alone(benchmark, galaxy_set, source, workers):
    benchmark.group = "loader-64x64x3"
    reference, measured, built, started = [], [], [], []

    def dataset():
        t0 = time.perf_counter()
        gs = open_galaxy_set(galaxy_set, check="schema")
        ds = (_memory(galaxy_set) if source == "memory_tensors"
              else gs.torch_dataset("train", targets=["log_mstar"], max_memory_gb=0 if source.endswith("lazy") else 2))
        built.append(time.perf_counter() - t0)
        return ds

    def setup():
        if source != "memory_tensors":
            seconds, seen = _epochs(_memory(galaxy_set), 0)
            reference.append(seen / seconds)

    def run():
        ds = dataset()
        started.append(_workers_for(ds, workers) if source.endswith("engine") else workers)
        seconds, seen = _epochs(ds, started[-1])
        measured.append(seen / seconds)
        return seen

    seen = benchmark.pedantic(run, setup=setup, rounds=3, iterations=1)
    assert seen == EPOCHS * round(0.8 * N)
    info = {"images_per_s": measured, "build_seconds": built, "workers": workers, "workers_started": started[-1]}
    line = f"\nRATIO loader {source} workers={workers} (started {started[-1]}): {np.median(measured):,.0f} images/s"
    if reference:
        ratio = float(np.median(np.array(measured) / np.array(reference)))
        info.update(ratio_vs_memory=ratio, reference_images_per_s=reference)
        line += f" = {ratio:.3f} x in-memory tensors ({np.median(reference):,.0f}/s)"
    line += f"; building the dataset {np.median(built):.2f} s for {round(0.8 * N)} images"
    benchmark.extra_info.update(info)
    print(line)
