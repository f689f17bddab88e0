"""Lazy reads: ``GalaxySet.images`` reads runs of nearby objects at once and returns exactly the asked
objects, in the asked order; the engine shuffles lazy splits in blocks of consecutive objects."""
import numpy as np
import pytest
import torch

from sim2obs import open_galaxy_set
from sim2obs.models.engine.data import BlockShuffleSampler
from tests.test_galaxyset import write_set


def _write(path, compression: int, n=41, shard_size=6):
    return write_set(path, n, shard_size, seed=3, compression_level=compression)[0]


@pytest.mark.parametrize("compression", [0, 4])
def test_any_index_set_comes_back_exactly(tmp_path, compression):
    images = _write(tmp_path / "s", compression)
    gs = open_galaxy_set(tmp_path / "s")
    assert gs._raw("image") == (compression == 0)
    rng = np.random.default_rng(0)
    cases = [[0], [40], [5, 6, 7, 12, 13], list(range(41)), [3, 9, 1, 9, 30, 29, 35], [4, 5, 11, 12, 17, 18, 23]]
    cases += [rng.choice(41, size=k, replace=bool(k % 2) or k > 41).tolist() for k in (2, 7, 15, 30, 60)]
    for idx in cases:  # gaps up to and beyond the raw-gap merge, runs across shard edges, repeats, any order
        np.testing.assert_array_equal(gs.images("image", indices=idx), images["image"][idx], err_msg=str(idx))
        np.testing.assert_array_equal(gs.images("vmap", indices=idx), images["vmap"][idx], err_msg=str(idx))


def test_a_gap_object_with_bad_pixels_does_not_fail_a_read_that_skips_it(tmp_path):
    import h5py

    images = _write(tmp_path / "s", 0)
    gs = open_galaxy_set(tmp_path / "s", check="schema")
    path = gs._shard_files[0]
    gs.close()
    with h5py.File(path, "r+") as f:
        f["images/image"][2, 0, 0, 0] = np.nan  # object 2 lies between 1 and 3: read, then dropped
    gs = open_galaxy_set(tmp_path / "s", check="schema")
    np.testing.assert_array_equal(gs.images("image", indices=[1, 3]), images["image"][[1, 3]])
    with pytest.raises(Exception, match="object 2"):
        gs.images("image", indices=[1, 2, 3])


def _epoch(sampler, epoch):
    sampler.set_epoch(epoch)
    return list(iter(sampler))


def test_block_shuffle_covers_every_position_once_in_runs_and_reshuffles():
    data = list(range(50))
    sampler = BlockShuffleSampler(data, block=8, num_replicas=1, rank=0, seed=3)
    first, second = _epoch(sampler, 0), _epoch(sampler, 1)
    assert sorted(first) == data and sorted(second) == data and first != second
    assert first == _epoch(BlockShuffleSampler(data, 8, 1, 0, seed=3), 0)  # keyed on (seed, epoch)
    blocks = [p // 8 for p in first]  # each block of 8 consecutive positions comes whole and in order
    assert [b for j, b in enumerate(blocks) if j == 0 or b != blocks[j - 1]] == list(dict.fromkeys(blocks))
    assert all(first[j + 1] == first[j] + 1 for j in range(49) if blocks[j + 1] == blocks[j])
    assert list(dict.fromkeys(blocks)) != sorted(set(blocks))  # the blocks themselves are shuffled


def test_block_shuffle_deals_blocks_to_processes_and_pads_like_distributed_sampler():
    data = list(range(45))
    parts = [_epoch(BlockShuffleSampler(data, 4, num_replicas=3, rank=r, seed=0), 2) for r in range(3)]
    assert all(len(p) == 15 for p in parts)
    assert set().union(*parts) == set(data)
    with pytest.raises(Exception, match="at least 1"):
        BlockShuffleSampler(data, 0, 1, 0, 0)


def test_the_engine_shuffles_a_lazy_split_in_blocks(tmp_path):
    from sim2obs.models.engine.config import TrainerConfig
    from sim2obs.models.engine.data import TrainLoader
    from sim2obs.models.engine.distributed import _Runtime

    _write(tmp_path / "s", 0, n=120, shard_size=40)
    gs = open_galaxy_set(tmp_path / "s", check="schema")
    lazy = gs.torch_dataset("train", targets=["log_mstar"], in_memory=False)
    held = gs.torch_dataset("train", targets=["log_mstar"])
    assert (lazy.read_block, held.read_block) == (8, 1)
    rt = _Runtime(device=torch.device("cpu"), precision="fp32", channels_last=False, rank=0, world=1)
    cfg = TrainerConfig(device="cpu", batch_size=16, num_workers=0)
    assert isinstance(TrainLoader(rt, cfg, lazy).sampler, BlockShuffleSampler)
    assert not isinstance(TrainLoader(rt, cfg, held).sampler, BlockShuffleSampler)
    lazy.read_block = 1  # a user can ask for per-object shuffling
    assert not isinstance(TrainLoader(rt, cfg, lazy).sampler, BlockShuffleSampler)
