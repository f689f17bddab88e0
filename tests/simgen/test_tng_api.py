"""TNG web-API client against a local fake server (no network), and the cutout reader."""
from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest

from sim2obs.errors import ConfigError, DataFormatError
from tests.simgen.fake_tng import HEADER, KEY, SIM, SNAP, FakeTNG, serve
from sim2obs.simgen.tng_api import (DM_FIELDS, GAS_FIELDS, PIPELINE_FIELDS, STAR_FIELDS, TNGAPIError,
                                    TNGAuthError, TNGNotFoundError, TNGWebAPI, read_cutout)


# --------------------------------------------------------------------------------------------
# Cutout files
# --------------------------------------------------------------------------------------------
def write_cutout(path, n_star=20, n_dm=30, n_gas=10, drop=(), header=None, phot_cols=8, seed=0) -> Path:
    """A small TNG-like cutout. ``drop``: "PartType4/Masses" drops a field, "PartType1" a type."""
    rng = np.random.default_rng(seed)
    attrs = dict(HEADER if header is None else header)
    counts = {0: n_gas, 1: n_dm, 4: n_star}
    fields = {
        4: {"Coordinates": (n_star, 3), "Velocities": (n_star, 3), "Masses": (n_star,),
            "GFM_StellarFormationTime": (n_star,), "GFM_Metallicity": (n_star,),
            "GFM_InitialMass": (n_star,), "GFM_StellarPhotometrics": (n_star, phot_cols)},
        1: {"Coordinates": (n_dm, 3), "Velocities": (n_dm, 3)},
        0: {"Coordinates": (n_gas, 3), "Velocities": (n_gas, 3), "Masses": (n_gas,),
            "StarFormationRate": (n_gas,)},
    }
    with h5py.File(path, "w") as f:
        h = f.create_group("Header")
        for k, v in attrs.items():
            h.attrs[k] = np.asarray(v, dtype=np.float64) if k == "MassTable" else v
        h.attrs["NumPart_ThisFile"] = np.array(
            [0 if f"PartType{k}" in drop else counts.get(k, 0) for k in range(6)], dtype=np.int32)
        for k, group in fields.items():
            if f"PartType{k}" in drop or counts[k] == 0:
                continue
            g = f.create_group(f"PartType{k}")
            for name, shape in group.items():
                if f"PartType{k}/{name}" not in drop:
                    dtype = np.float64 if name == "Coordinates" else np.float32
                    g.create_dataset(name, data=rng.normal(size=shape).astype(dtype))
    return Path(path)


@pytest.fixture(scope="module")
def cutout_bytes(tmp_path_factory) -> dict[int, bytes]:
    folder = tmp_path_factory.mktemp("served")
    return {5: write_cutout(folder / "5.hdf5", n_star=400, n_dm=600, seed=5).read_bytes(),
            6: write_cutout(folder / "6.hdf5", n_gas=0, seed=6).read_bytes(),
            7: write_cutout(folder / "7.hdf5", drop=("PartType4/GFM_StellarPhotometrics",)).read_bytes()}


@pytest.fixture
def fake(cutout_bytes):
    with serve(FakeTNG(cutout_bytes)) as state:
        yield state


@pytest.fixture
def api(fake, tmp_path):
    return TNGWebAPI(api_key=KEY, base_url=f"{fake.base}/api", cache_dir=tmp_path / "cache",
                     timeout=5, retries=3, backoff=0.001)


# --------------------------------------------------------------------------------------------
# JSON, search, errors
# --------------------------------------------------------------------------------------------
def test_subhalo_sends_key_and_is_cached(api, fake, tmp_path):
    rec = api.subhalo(SIM, SNAP, 3)
    assert rec["id"] == 3 and rec["mass_stars"] == 3.0 and rec["halfmassrad_stars"] == 4.0
    assert fake.count() == 1 and fake.requests[0]["key"] == KEY
    assert api.subhalo(SIM, SNAP, 3) == rec
    # a new client on the same cache, even without a key, answers from disk
    offline = TNGWebAPI(api_key="", base_url=api.base_url, cache_dir=api.cache_dir)
    assert offline.subhalo(SIM, SNAP, 3) == rec
    assert fake.count() == 1
    api.subhalo(SIM, SNAP, 3, refresh=True)
    assert fake.count() == 2


def test_api_key_from_env_and_missing_key(fake, tmp_path, monkeypatch):
    monkeypatch.delenv("TNG_API_KEY", raising=False)
    nokey = TNGWebAPI(base_url=f"{fake.base}/api", cache_dir=tmp_path / "c1")
    with pytest.raises(ConfigError, match="TNG_API_KEY"):
        nokey.subhalo(SIM, SNAP, 1)
    assert fake.count() == 0
    monkeypatch.setenv("TNG_API_KEY", KEY)
    assert TNGWebAPI(base_url=f"{fake.base}/api", cache_dir=tmp_path / "c2").subhalo(SIM, SNAP, 1)["id"] == 1
    assert fake.requests[-1]["key"] == KEY


def test_search_follows_pagination_and_caches(api, fake):
    ids = api.search_subhalos(SIM, SNAP, mass_stars__gt=2.5, page_size=2)
    assert ids == [3, 4, 5, 6, 7]
    assert fake.count("/subhalos/") == 3
    assert [r["query"].get("offset") for r in fake.requests] == [None, "2", "4"]
    assert all(r["query"]["mass_stars__gt"] == "2.5" for r in fake.requests)
    assert api.search_subhalos(SIM, SNAP, mass_stars__gt=2.5, page_size=2) == ids
    assert fake.count() == 3
    assert api.search_subhalos(SIM, SNAP, mass_stars__gt=2.5, limit=3, page_size=2, refresh=True) == [3, 4, 5]
    assert fake.count() == 5  # two pages were enough


def test_snapshot_header_from_records(api):
    hdr = api.snapshot_header(SIM, SNAP)
    assert hdr["HubbleParam"] == 0.6774 and hdr["OmegaBaryon"] == 0.0486 and hdr["BoxSize"] == 75000.0
    assert hdr["Redshift"] == 0.5 and hdr["Time"] == pytest.approx(1 / 1.5)
    np.testing.assert_array_equal(hdr["MassTable"], [0, 5.06e-4, 0, 0, 0, 0])


def test_wrong_key_403_names_the_api_key(api, fake):
    api.api_key = "wrong"
    with pytest.raises(TNGAuthError, match="api key") as err:
        api.subhalo(SIM, SNAP, 1)
    assert err.value.status == 403
    assert fake.count() == 1  # not retried


def test_404_names_the_subhalo_and_url(api, fake):
    with pytest.raises(TNGNotFoundError) as err:
        api.subhalo(SIM, SNAP, 999)
    assert "subhalo 999" in str(err.value) and "/subhalos/999/" in str(err.value)
    with pytest.raises(TNGNotFoundError, match=r"subhalo 998.*cutout\.hdf5"):
        api.cutout(SIM, SNAP, 998)
    assert fake.count() == 2


@pytest.mark.parametrize("statuses", [[500], [503, 502]])
def test_transient_errors_are_retried(api, fake, statuses):
    fake.fail_statuses = list(statuses)
    assert api.subhalo(SIM, SNAP, 2)["id"] == 2
    assert fake.count() == len(statuses) + 1


def test_retries_exhausted(api, fake):
    api.retries = 1
    fake.fail_statuses = [500, 500, 500]
    with pytest.raises(TNGAPIError, match="gave up after 2 attempts.*HTTP 500") as err:
        api.subhalo(SIM, SNAP, 2)
    assert err.value.status == 500 and fake.count() == 2


def test_timeout_is_retried(api, fake):
    api.timeout = 0.2
    fake.sleep_next = 1.0
    assert api.subhalo(SIM, SNAP, 4)["id"] == 4
    assert fake.count() == 2


# --------------------------------------------------------------------------------------------
# Cutouts
# --------------------------------------------------------------------------------------------
def _index_entry(path: Path) -> dict:
    return json.loads((path.parent / "index.json").read_text())[path.name]


def test_cutout_download_validate_cache(api, fake, cutout_bytes):
    path = api.cutout(SIM, SNAP, 5)
    assert path.read_bytes() == cutout_bytes[5]
    assert path.parent == api.cache_dir / SIM / "snap_099" and "subhalo_5_" in path.name
    assert not path.with_name(path.name + ".part").exists()
    req = fake.requests[-1]
    assert req["path"].endswith("/subhalos/5/cutout.hdf5") and req["key"] == KEY
    assert req["query"]["stars"].split(",") == sorted(STAR_FIELDS)
    assert set(req["query"]["dm"].split(",")) == set(DM_FIELDS)
    assert set(req["query"]["gas"].split(",")) == set(GAS_FIELDS)
    entry = _index_entry(path)
    assert entry["sha256"] == hashlib.sha256(cutout_bytes[5]).hexdigest()
    assert entry["size"] == len(cutout_bytes[5]) and entry["subhalo_id"] == 5
    # cached: no request, also from a fresh client without a key
    assert api.cutout(SIM, SNAP, 5) == path
    assert TNGWebAPI(api_key="", base_url=api.base_url, cache_dir=api.cache_dir).cutout(SIM, SNAP, 5) == path
    assert fake.count() == 1
    # other fields -> another file
    other = api.cutout(SIM, SNAP, 5, {"stars": ["Coordinates", "Masses"]})
    assert other != path and fake.count() == 2
    assert fake.requests[-1]["query"] == {"stars": "Coordinates,Masses"}


def test_cutout_checksum_mismatch_downloads_again(api, fake, cutout_bytes):
    path = api.cutout(SIM, SNAP, 5)
    raw = bytearray(path.read_bytes())
    raw[-10] ^= 0xFF
    path.write_bytes(bytes(raw))
    assert api.cutout(SIM, SNAP, 5).read_bytes() == cutout_bytes[5]
    assert fake.count("cutout") == 2


def test_cutout_without_index_entry_is_adopted(api, fake, cutout_bytes):
    path = api.cutout(SIM, SNAP, 5)
    (path.parent / "index.json").unlink()
    assert api.cutout(SIM, SNAP, 5) == path
    assert fake.count() == 1 and _index_entry(path)["size"] == len(cutout_bytes[5])


def test_resume_partial_download_with_range(api, fake, cutout_bytes):
    data = cutout_bytes[5]
    part = api.cutout_path(SIM, SNAP, 5)
    part = part.with_name(part.name + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:len(data) // 2])
    path = api.cutout(SIM, SNAP, 5)
    assert fake.count() == 1 and fake.requests[0]["range"] == f"bytes={len(data) // 2}-"
    assert path.read_bytes() == data and not part.exists()


def test_server_ignoring_range_restarts(api, fake, cutout_bytes):
    data = cutout_bytes[5]
    part = api.cutout_path(SIM, SNAP, 5)
    part = part.with_name(part.name + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:1000])
    fake.ignore_range = True
    assert api.cutout(SIM, SNAP, 5).read_bytes() == data
    assert fake.count() == 1 and fake.requests[0]["range"] == "bytes=1000-"


def test_invalid_resumed_file_is_downloaded_from_scratch(api, fake, cutout_bytes):
    data = cutout_bytes[5]
    part = api.cutout_path(SIM, SNAP, 5)
    part = part.with_name(part.name + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\0" * 2000)  # not the file's first bytes
    assert api.cutout(SIM, SNAP, 5).read_bytes() == data
    assert [r["range"] for r in fake.requests] == ["bytes=2000-", None]


def test_dropped_connection_resumes(api, fake, cutout_bytes):
    data = cutout_bytes[5]
    fake.truncate_next = 1
    assert api.cutout(SIM, SNAP, 5).read_bytes() == data
    assert [r["range"] for r in fake.requests] == [None, f"bytes={len(data) // 2}-"]


def test_cutout_500_then_success(api, fake, cutout_bytes):
    fake.fail_statuses = [500]
    assert api.cutout(SIM, SNAP, 6).read_bytes() == cutout_bytes[6]
    assert fake.count("cutout") == 2


def test_cutout_missing_type_is_valid_missing_field_is_not(api, fake):
    path = api.cutout(SIM, SNAP, 6)  # no gas at all
    assert read_cutout(path)["gas"]["Coordinates"].shape == (0, 3)
    with pytest.raises(DataFormatError, match="PartType4/GFM_StellarPhotometrics") as err:
        api.cutout(SIM, SNAP, 7)
    assert "subhalo_7_" in str(err.value)
    assert not list(api.cutout_path(SIM, SNAP, 7).parent.glob("subhalo_7_*.hdf5*"))
    # a request without that field accepts the same file
    assert api.cutout(SIM, SNAP, 7, {"stars": ["Coordinates", "Masses"]}).exists()


# --------------------------------------------------------------------------------------------
# read_cutout
# --------------------------------------------------------------------------------------------
def test_read_cutout_shapes_and_values(tmp_path):
    path = write_cutout(tmp_path / "c.hdf5", n_star=20, n_dm=30, n_gas=10)
    parts = read_cutout(path)
    assert set(parts) == {"header", "stars", "dm", "gas"}
    assert set(parts["stars"]) == set(STAR_FIELDS) and set(parts["dm"]) == set(DM_FIELDS)
    assert set(parts["gas"]) == set(GAS_FIELDS)
    assert parts["stars"]["Coordinates"].shape == (20, 3) and parts["stars"]["Masses"].shape == (20,)
    assert parts["stars"]["GFM_StellarPhotometrics"].shape == (20, 8)
    assert parts["dm"]["Velocities"].shape == (30, 3) and parts["gas"]["StarFormationRate"].shape == (10,)
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(parts["stars"]["Coordinates"], f["PartType4/Coordinates"][()])
        np.testing.assert_array_equal(parts["gas"]["Masses"], f["PartType0/Masses"][()])
    assert parts["stars"]["Coordinates"].dtype == np.float64 and parts["stars"]["Masses"].dtype == np.float32
    hdr = parts["header"]
    assert hdr["HubbleParam"] == 0.6774 and hdr["BoxSize"] == 75000.0
    np.testing.assert_array_equal(hdr["MassTable"], HEADER["MassTable"])


def test_read_cutout_missing_field_names_file_and_field(tmp_path):
    path = write_cutout(tmp_path / "c.hdf5", drop=("PartType4/Masses",))
    with pytest.raises(DataFormatError) as err:
        read_cutout(path)
    assert err.value.field == "PartType4/Masses" and str(path) in str(err.value)


def test_read_cutout_wrong_shape(tmp_path):
    path = write_cutout(tmp_path / "c.hdf5", phot_cols=5)
    with pytest.raises(DataFormatError, match=r"PartType4/GFM_StellarPhotometrics.*\(N, 8\)"):
        read_cutout(path)


def test_read_cutout_missing_dm_gives_empty_arrays(tmp_path):
    parts = read_cutout(write_cutout(tmp_path / "c.hdf5", drop=("PartType1",)))
    assert parts["dm"]["Coordinates"].shape == (0, 3) and parts["dm"]["Velocities"].shape == (0, 3)
    assert parts["stars"]["Coordinates"].shape == (20, 3)


def test_read_cutout_group_missing_but_counted(tmp_path):
    path = write_cutout(tmp_path / "c.hdf5")
    with h5py.File(path, "a") as f:
        del f["PartType0"]
    with pytest.raises(DataFormatError, match="PartType0"):
        read_cutout(path)


def test_read_cutout_header_fallback(tmp_path):
    minimal = {k: v for k, v in HEADER.items() if k not in ("OmegaBaryon", "Redshift")}
    path = write_cutout(tmp_path / "c.hdf5", header=minimal)
    with pytest.raises(DataFormatError) as err:
        read_cutout(path)
    assert err.value.field in ("Header/Redshift", "Header/OmegaBaryon")
    hdr = read_cutout(path, header={"OmegaBaryon": 0.05, "Redshift": 0.1, "HubbleParam": 0.5})["header"]
    assert hdr["OmegaBaryon"] == 0.05 and hdr["Redshift"] == 0.1
    assert hdr["HubbleParam"] == 0.6774  # the file's own value wins


def test_read_cutout_not_hdf5(tmp_path):
    path = tmp_path / "junk.hdf5"
    path.write_bytes(b"<html>error</html>")
    with pytest.raises(DataFormatError, match="junk.hdf5"):
        read_cutout(path)


def test_pipeline_fields_are_the_single_definition():
    assert PIPELINE_FIELDS == {"stars": STAR_FIELDS, "dm": DM_FIELDS, "gas": GAS_FIELDS}
    assert "GFM_StellarPhotometrics" in STAR_FIELDS and "StarFormationRate" in GAS_FIELDS


def test_concurrent_requests_download_once(api, fake, cutout_bytes):
    api.progress = True  # tqdm bar on stderr must not disturb the download
    fake.sleep_next = 0.2  # the first answer is slow: the second caller must wait on the lock
    out = []
    threads = [threading.Thread(target=lambda: out.append(api.cutout(SIM, SNAP, 5))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(out) == 2 and out[0] == out[1] and out[0].read_bytes() == cutout_bytes[5]
    assert fake.count("cutout") == 1
