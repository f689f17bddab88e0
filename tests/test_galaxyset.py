"""The galaxy-set format: round trip, sharding, readers, and every bad-file case."""
import json
import multiprocessing as mp

import h5py
import numpy as np
import pytest
import torch

from sim2obs import ColumnSpec, DataFormatError, GalaxySetSchema, GalaxySetWriter, StackSpec, open_galaxy_set
from sim2obs.errors import Sim2obsValueError
from sim2obs.galaxyset import MANIFEST_NAME, assign_splits
from sim2obs.provenance import file_sha256

SCHEMA = GalaxySetSchema(
    stacks=(StackSpec("image", ("g", "r"), 12, 12, unit="nanomaggy", pixel_scale_arcsec=0.396),
            StackSpec("vmap", ("v", "sigma"), 5, 5, unit="km/s")),
    columns=(ColumnSpec("id", "int64"), ColumnSpec("log_mstar", "float64", "dex(solMass)", "stellar mass"),
             ColumnSpec("ml_g", "float64", "solMass / solLum", error="ml_g_err"),
             ColumnSpec("ml_g_err", "float64", "solMass / solLum"), ColumnSpec("flag", "int32")),
)


def make_arrays(n, offset=0, seed=0):
    rng = np.random.default_rng(seed + offset)
    return ({"image": rng.normal(size=(n, 2, 12, 12)).astype(np.float32),
             "vmap": rng.normal(size=(n, 2, 5, 5)).astype(np.float32)},
            {"id": np.arange(offset, offset + n) * 10, "log_mstar": rng.uniform(9, 11, n),
             "ml_g": rng.uniform(0.5, 5, n), "ml_g_err": np.full(n, 0.1), "flag": np.zeros(n, np.int32)})


def write_set(path, n=23, shard_size=10, seed=0, compression_level=4):
    writer = GalaxySetWriter(path, SCHEMA, n, shard_size, build_key="test", compression_level=compression_level)
    writer.prepare()
    codes, _ = assign_splits(n, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=1)
    images, catalog = make_arrays(n, seed=seed)
    for i in range(writer.n_shards):
        a, b = writer.shard_range(i)
        writer.write_shard(i, {k: v[a:b] for k, v in images.items()}, {k: v[a:b] for k, v in catalog.items()},
                           codes[a:b])
    writer.finalize("unit", {"source": "test", "seed": seed})
    return images, catalog, codes


def test_round_trip_numpy_astropy_pandas(tmp_path):
    images, catalog, codes = write_set(tmp_path / "s")
    gs = open_galaxy_set(tmp_path / "s")
    assert gs.n == 23 and len(gs._shard_files) == 3
    np.testing.assert_array_equal(gs.images("image"), images["image"])
    np.testing.assert_array_equal(gs.images("vmap", split="val"), images["vmap"][codes == 1])
    table = gs.catalog(split="train")
    assert len(table) == (codes == 0).sum()
    assert str(table["log_mstar"].unit) == "dex(solMass)"
    np.testing.assert_allclose(table["ml_g"], catalog["ml_g"][codes == 0])
    df = gs.to_pandas()
    assert list(df["id"]) == list(catalog["id"]) and set(df["split"]) == {"train", "val", "test"}
    assert df.attrs["units"]["ml_g"] == "solMass / solLum"
    assert gs.schema.column("ml_g").error == "ml_g_err"
    # random access across shard boundaries
    np.testing.assert_array_equal(gs.images("image", indices=[22, 0, 10]), images["image"][[22, 0, 10]])


def test_content_hash_ignores_sharding_but_not_data(tmp_path):
    write_set(tmp_path / "a", shard_size=10)
    write_set(tmp_path / "b", shard_size=7)
    write_set(tmp_path / "c", shard_size=10, seed=5)
    ha, hb, hc = (open_galaxy_set(tmp_path / k).content_hash for k in "abc")
    assert ha == hb
    assert ha != hc
    open_galaxy_set(tmp_path / "a").verify()


def test_assign_splits_exact_and_seeded():
    codes, names = assign_splits(101, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=3)
    assert names == ("train", "val", "test")
    assert np.bincount(codes).tolist() == [81, 10, 10]
    np.testing.assert_array_equal(codes, assign_splits(101, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=3)[0])
    assert not np.array_equal(codes, assign_splits(101, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=4)[0])
    with pytest.raises(Sim2obsValueError):
        assign_splits(10, {"train": 0.8, "test": 0.3}, seed=0)


def test_torch_dataset_with_workers(tmp_path):
    images, catalog, codes = write_set(tmp_path / "s")
    gs = open_galaxy_set(tmp_path / "s")
    ds = gs.torch_dataset("train", targets=["log_mstar", "ml_g"])
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2,
                                         multiprocessing_context=mp.get_context("fork"))
    seen_ids, seen_targets, seen_images = [], [], []
    for batch in loader:
        assert batch["inputs"]["image"].shape[1:] == (2, 12, 12)
        assert batch["inputs"]["vmap"].shape[1:] == (2, 5, 5)
        seen_ids += batch["id"].tolist()
        seen_targets.append(batch["target"])
        seen_images.append(batch["inputs"]["image"])
    train = codes == 0
    assert seen_ids == list(catalog["id"][train])
    np.testing.assert_allclose(torch.cat(seen_targets)[:, 1], catalog["ml_g"][train], rtol=1e-6)
    np.testing.assert_array_equal(torch.cat(seen_images).numpy(), images["image"][train])


def test_writer_refuses_bad_arrays_and_writes_nothing(tmp_path):
    writer = GalaxySetWriter(tmp_path / "s", SCHEMA, 5, 5, build_key="k")
    writer.prepare()
    images, catalog = make_arrays(5)
    codes = np.zeros(5, np.int8)
    bad = dict(images, image=images["image"].copy())
    bad["image"][2, 0, 3, 3] = np.nan
    with pytest.raises(Sim2obsValueError, match="image.*NaN"):
        writer.write_shard(0, bad, catalog, codes)
    with pytest.raises(Sim2obsValueError, match="wrong shape"):
        writer.write_shard(0, dict(images, vmap=images["vmap"][:, :1]), catalog, codes)
    with pytest.raises(Sim2obsValueError, match="log_mstar.*NaN"):
        writer.write_shard(0, images, dict(catalog, log_mstar=np.full(5, np.inf)), codes)
    with pytest.raises(Sim2obsValueError, match="missing"):
        writer.write_shard(0, images, {k: v for k, v in catalog.items() if k != "flag"}, codes)
    assert list((tmp_path / "s").iterdir()) == []
    with pytest.raises(Sim2obsValueError, match="shards are missing"):
        writer.finalize("x", {})


def test_writer_refuses_to_mix_builds(tmp_path):
    write_set(tmp_path / "s")
    other = GalaxySetWriter(tmp_path / "s", SCHEMA, 23, 10, build_key="other")
    with pytest.raises(Sim2obsValueError, match="different build"):
        other.prepare()
    other.prepare(overwrite=True)
    assert not list((tmp_path / "s").glob("part-*.h5")) and not (tmp_path / "s" / MANIFEST_NAME).exists()


# ---- bad files: every case names the file and the field --------------------------------------
def _resign(path):
    """Update the manifest's recorded sizes so that only the damage inside the file is seen."""
    mpath = path / MANIFEST_NAME
    m = json.loads(mpath.read_text())
    for s in m["shards"]:
        s["bytes"] = (path / s["file"]).stat().st_size
        s["sha256"] = file_sha256(path / s["file"])
    mpath.write_text(json.dumps(m))


def _damage(path, shard, fn):
    with h5py.File(path / f"part-{shard:05d}.h5", "a") as f:
        fn(f)
    _resign(path)


@pytest.mark.parametrize("case, field", [
    ("missing_column", "catalog/ml_g"),
    ("missing_stack", "images/vmap"),
    ("wrong_image_shape", "images/image"),
    ("wrong_column_shape", "catalog/log_mstar"),
    ("nan_label", "catalog/ml_g"),
    ("inf_image", "images/image"),
    ("bad_split_code", "split"),
])
def test_schema_errors_name_file_and_field(tmp_path, case, field):
    path = tmp_path / "s"
    write_set(path)

    def damage(f):
        if case == "missing_column":
            del f["catalog/ml_g"]
        elif case == "missing_stack":
            del f["images/vmap"]
        elif case == "wrong_image_shape":
            del f["images/image"]
            f["images"].create_dataset("image", data=np.zeros((10, 2, 11, 12), np.float32))
        elif case == "wrong_column_shape":
            del f["catalog/log_mstar"]
            f["catalog"].create_dataset("log_mstar", data=np.zeros(9))
        elif case == "nan_label":
            f["catalog/ml_g"][4] = np.nan
        elif case == "inf_image":
            f["images/image"][7, 1, 2, 2] = np.inf
        elif case == "bad_split_code":
            f["split"][0] = 9

    _damage(path, 1, damage)
    with pytest.raises(DataFormatError) as err:
        open_galaxy_set(path)
    assert err.value.path.endswith("part-00001.h5")
    assert err.value.field == field
    assert "part-00001.h5" in str(err.value) and field in str(err.value)


def test_truncated_shard_is_reported(tmp_path):
    path = tmp_path / "s"
    write_set(path)
    shard = path / "part-00002.h5"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFormatError, match="part-00002.h5.*truncated"):
        open_galaxy_set(path)
    _resign(path)  # even when the manifest agrees with the short file, HDF5 itself refuses it
    with pytest.raises(DataFormatError, match="part-00002.h5"):
        open_galaxy_set(path)


def test_missing_manifest_shard_and_bad_json(tmp_path):
    path = tmp_path / "s"
    write_set(path)
    (path / "part-00000.h5").rename(path / "moved.h5")
    with pytest.raises(DataFormatError, match="part-00000.h5.*missing"):
        open_galaxy_set(path)
    (path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(DataFormatError, match="manifest.json.*JSON"):
        open_galaxy_set(path)
    with pytest.raises(DataFormatError, match="no galaxy-set manifest"):
        open_galaxy_set(tmp_path / "nowhere")


def test_verify_detects_modified_data(tmp_path):
    path = tmp_path / "s"
    write_set(path)
    size = (path / "part-00000.h5").stat().st_size
    with h5py.File(path / "part-00000.h5", "a") as f:  # same size: only the checksum can tell
        f["catalog/log_mstar"][0] += 1.0
    assert (path / "part-00000.h5").stat().st_size == size
    gs = open_galaxy_set(path, check="schema")
    with pytest.raises(DataFormatError, match="sha256|content hash"):
        gs.verify()


def test_large_set_checks_images_on_access(tmp_path, monkeypatch):
    path = tmp_path / "s"
    write_set(path)
    _damage(path, 0, lambda f: f["images/image"].__setitem__((3, 0, 0, 0), np.nan))
    monkeypatch.setattr("sim2obs.galaxyset.reader._AUTO_IMAGE_SCAN_BYTES", 0)  # pretend the set is huge
    gs = open_galaxy_set(path)  # schema-only check passes
    gs.read_image("image", 2)
    with pytest.raises(DataFormatError, match="object 3"):
        gs.read_image("image", 3)
    with pytest.raises(DataFormatError, match="images/image"):
        gs.images("image", indices=[1, 3])


def test_images_reads_any_order_repeats_and_shard_crossings(tmp_path):
    images, _, _ = write_set(tmp_path / "s")  # 23 objects in shards of 10
    gs = open_galaxy_set(tmp_path / "s")
    idx = [12, 3, 9, 10, 11, 3, 22, 0, 19, 20]
    np.testing.assert_array_equal(gs.images("image", indices=idx), images["image"][idx])
    np.testing.assert_array_equal(gs.images("vmap", indices=range(23)), images["vmap"])
    assert gs.images("image", indices=[]).shape == (0, 2, 12, 12)
    with pytest.raises(IndexError):
        gs.images("image", indices=[23])


def test_torch_dataset_in_memory_and_lazy_give_the_same_batches(tmp_path):
    write_set(tmp_path / "s", n=40)
    gs = open_galaxy_set(tmp_path / "s")
    held = gs.torch_dataset("train", targets=["log_mstar"])
    lazy = gs.torch_dataset("train", targets=["log_mstar"], max_memory_gb=0)
    forced = gs.torch_dataset("train", targets=["log_mstar"], in_memory=True, max_memory_gb=0)
    assert held.held_in_memory and forced.held_in_memory and not lazy.held_in_memory
    assert held.image_bytes == len(held) * 4 * (2 * 12 * 12 + 2 * 5 * 5)

    def batches(ds, workers):
        loader = torch.utils.data.DataLoader(ds, batch_size=5, shuffle=True, num_workers=workers,
                                             generator=torch.Generator().manual_seed(3),
                                             multiprocessing_context=mp.get_context("fork") if workers else None)
        return [b for b in loader]

    ref = batches(lazy, 0)
    for ds, workers in ((held, 0), (held, 2), (forced, 0)):
        for a, b in zip(ref, batches(ds, workers), strict=True):
            assert torch.equal(a["id"], b["id"]) and torch.equal(a["index"], b["index"])
            assert torch.equal(a["target"], b["target"])
            for name in ("image", "vmap"):
                assert torch.equal(a["inputs"][name], b["inputs"][name])
    assert torch.equal(held[-1]["inputs"]["image"], lazy[len(lazy) - 1]["inputs"]["image"])
    with pytest.raises(IndexError):
        held[len(held)]
    with pytest.raises(Sim2obsValueError, match="in_memory"):
        gs.torch_dataset("train", in_memory="yes")


def test_in_place_transforms_do_not_change_held_images(tmp_path):
    write_set(tmp_path / "s")
    gs = open_galaxy_set(tmp_path / "s")

    def zero_in_place(inputs):
        for t in inputs.values():
            t.zero_()
        return inputs

    ds = gs.torch_dataset("train", transform=zero_in_place)
    assert ds.held_in_memory
    assert float(ds[0]["inputs"]["image"].abs().sum()) == 0
    ds.__getitems__([0, 1])
    clean = gs.torch_dataset("train")
    np.testing.assert_array_equal(clean[0]["inputs"]["image"].numpy(), gs.images("image", "train")[0])
    assert float(ds._images["image"].abs().sum()) > 0


def test_dataset_checks_the_images_it_serves(tmp_path, monkeypatch):
    from sim2obs.models.engine import galaxy_set_dataset

    _, _, codes = write_set(tmp_path / "s")
    bad = int(np.flatnonzero(codes[:10] == 0)[0])  # a training object in shard 0
    _damage(tmp_path / "s", 0, lambda f: f["images/image"].__setitem__((bad, 0, 0, 0), np.inf))
    with pytest.raises(DataFormatError, match=f"object {bad}"):
        galaxy_set_dataset(tmp_path / "s", "train")  # held in memory: checked when read
    lazy = galaxy_set_dataset(tmp_path / "s", "train", max_memory_gb=0)
    with pytest.raises(DataFormatError, match=f"object {bad}"):
        lazy.__getitems__(list(range(len(lazy))))
    galaxy_set_dataset(tmp_path / "s", "test", in_memory=True)  # the damage is not in this split
