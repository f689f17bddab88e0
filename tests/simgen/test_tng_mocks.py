"""The TNG mock pipeline end to end on a tiny mini-simulation: schema, units, projections,
maps, resume after a kill, malformed snapshots, and the web-API source (a local fake server)."""
from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import time

import h5py
import illustris_python as il
import numpy as np
import pytest

from sim2obs import open_galaxy_set
from sim2obs.errors import ConfigError, DataFormatError
from sim2obs.simgen import canonical_config, prepare_set
from sim2obs.simgen import particle_maps as pm
from sim2obs.simgen import tng_mocks as tm
from tests.simgen.fake_tng import KEY, SIM, SNAP, FakeTNG, serve

SYNC = {"kind": "synchronous"}
TINY = {"generator": "tng", "image_px": 40, "rebin_px": [20], "kin_px": 16, "shard_size": 2,
        "source": {"minisim": {"n_galaxies": 8, "star_particles_min": 300, "star_particles_max": 600, "seed": 7}},
        "selection": {"log_mstar_30kpc_min": 9.3}}


def tiny(**changes):
    cfg = {**TINY, **changes}
    cfg["source"] = {**TINY["source"], **changes.get("source", {})}
    return cfg


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    data = tmp_path_factory.mktemp("tng")
    path = prepare_set(TINY, data_dir=data, cluster=SYNC, progress=False)
    cfg = tm.coerce_config(TINY)
    base = tm._minisim_root(cfg, path) / "output"
    return {"gs": open_galaxy_set(path), "data": data, "path": path, "base": base, "cfg": cfg}


def test_schema_objects_and_splits(tiny_set):
    gs, cfg = tiny_set["gs"], tiny_set["cfg"]
    assert set(gs.schema.stack_names) == {"r_40", "gr_40", "r_20", "gr_20", "vmap", "sigmamap", "kinmask"}
    assert gs.schema.stack("r_20").shape == (1, 20, 20) and gs.schema.stack("vmap").shape == (1, 16, 16)
    sub, proj, ids = gs.column("subhalo_id"), gs.column("projection"), gs.column("id")
    assert len(gs) == 3 * len(np.unique(sub)) and len(np.unique(sub)) >= 3
    np.testing.assert_array_equal(ids, sub * 3 + proj)
    split = gs.split_of()
    for s in np.unique(sub):  # the three projections of a galaxy share one split
        assert len(set(split[sub == s])) == 1 and sorted(proj[sub == s]) == [0, 1, 2]
    assert (gs.column("log_mstar_30kpc") >= cfg.selection.log_mstar_30kpc_min).all()
    assert (gs.column("log_msub") < cfg.selection.log_msub_max).all()
    fdm = gs.column("f_dm_rhalf")
    assert ((fdm > 0) & (fdm < 1)).all()
    mtot = 10 ** gs.column("log_mtot_rhalf")
    parts = 10 ** gs.column("log_mstar_rhalf") + 10 ** gs.column("log_mdm_rhalf") + \
        np.where(gs.column("log_mgas_rhalf") > 0, 10 ** gs.column("log_mgas_rhalf"), 0)
    np.testing.assert_allclose(mtot, parts, rtol=1e-9)
    np.testing.assert_allclose(gs.column("fov_kpc"), 6 * gs.column("rhalf_kpc"))


def test_wind_particles_are_dropped(tiny_set):
    gs, base = tiny_set["gs"], tiny_set["base"]
    winds = 0
    for sid in np.unique(gs.column("subhalo_id")):
        t_form = il.snapshot.loadSubhalo(str(base), 99, int(sid), "stars", fields=["GFM_StellarFormationTime",
                                                                                  "Masses"])["GFM_StellarFormationTime"]
        n = gs.column("n_star_particles")[gs.column("subhalo_id") == sid]
        assert (n == (t_form > 0).sum()).all()
        winds += int((t_form <= 0).sum())
    assert winds > 0, "the mini-simulation should hold wind particles for this test to mean something"


def test_maps_conserve_light_and_flag_empty_pixels(tiny_set):
    gs = tiny_set["gs"]
    r40, r20 = gs.images("r_40"), gs.images("r_20")
    np.testing.assert_allclose(r40.sum(axis=(1, 2, 3)), r20.sum(axis=(1, 2, 3)), rtol=1e-4)
    # the frame holds most of the light within R_half: more than the projected R_half luminosity
    assert (np.log10(r40.sum(axis=(1, 2, 3))) > gs.column("log_lr_rhalf")).all()
    mask, v, s = gs.images("kinmask"), gs.images("vmap"), gs.images("sigmamap")
    assert set(np.unique(mask)) <= {0.0, 1.0} and (mask == 0).any() and (mask == 1).any()
    assert (v[mask == 0] == 0).all() and (s[mask == 0] == 0).all() and (s >= 0).all()
    gr = gs.images("gr_40")
    lit = r40 > 0
    assert (np.abs(gr[lit]) < 3).all() and (gr[~lit] == 0).all()


def _raw_subhalo(base, sid):
    stars = il.snapshot.loadSubhalo(str(base), 99, int(sid), "stars", fields=["Coordinates", "Masses",
                                                                              "GFM_StellarFormationTime",
                                                                              "GFM_StellarPhotometrics"])
    sub = il.groupcat.loadSingle(str(base), 99, subhaloID=int(sid))
    head = il.groupcat.loadHeader(str(base), 99)
    return stars, sub, head


def test_units_and_projection_axes_at_redshift_half(tmp_path):
    """At z = 0.5 positions scale by a/h and masses by 1e10/h; the image axes are the box axes
    (los+1, los+2): the light's second moments along image columns and rows match the particles'."""
    # coupling 0: the galaxy this check was sized on (generator 1.0's draw; with physics A's
    # concentration coupling, 1.1, row 0 is a more compact galaxy whose SPH smoothing widens its
    # minor axis by 37 %, beyond the 35 % allowed here, with the units and axes still right)
    minisim = {**TINY["source"]["minisim"], "redshift": 0.5, "n_galaxies": 4, "concentration_coupling": 0.0}
    cfg = tiny(source={"minisim": minisim}, dust={"enabled": False}, image_px=60, rebin_px=[30])
    gs = open_galaxy_set(prepare_set(cfg, data_dir=tmp_path, cluster=SYNC, progress=False))
    base = tm._minisim_root(tm.coerce_config(cfg), gs.path) / "output"
    row = 0
    sid = int(gs.column("subhalo_id")[row])
    stars, sub, head = _raw_subhalo(base, sid)
    a, h, box = head["Time"], head["HubbleParam"], head["BoxSize"]
    assert math.isclose(a, 1 / 1.5)
    keep = stars["GFM_StellarFormationTime"] > 0
    d = stars["Coordinates"][keep] - sub["SubhaloPos"]
    d -= box * np.round(d / box)
    pos, mass = d * a / h, stars["Masses"][keep] * 1e10 / h
    r = np.linalg.norm(pos, axis=1)
    order = np.argsort(r)
    rhalf = r[order][np.searchsorted(np.cumsum(mass[order]), 0.5 * mass.sum())]
    assert math.isclose(gs.column("rhalf_kpc")[row], rhalf, rel_tol=0.02)
    assert math.isclose(gs.column("log_mstar_rhalf")[row], np.log10(mass[r < rhalf].sum()), abs_tol=0.01)
    lum = pm.band_luminosity(stars["GFM_StellarPhotometrics"][keep][:, 5], pm.MSUN_R_AB)
    hw = 3 * gs.column("rhalf_kpc")[row]
    centres = -hw + (np.arange(60) + 0.5) * (2 * hw / 60)
    for los in range(3):
        i = np.flatnonzero((gs.column("subhalo_id") == sid) & (gs.column("projection") == los))[0]
        img = gs.read_image("r_60", int(i))[0]
        inside = (np.abs(pos[:, (los + 1) % 3]) < hw) & (np.abs(pos[:, (los + 2) % 3]) < hw)
        want = [np.average(pos[inside, (los + k) % 3] ** 2, weights=lum[inside]) for k in (1, 2)]
        got = [np.average(centres[None, :] ** 2 * np.ones_like(img), weights=img),
               np.average(centres[:, None] ** 2 * np.ones_like(img), weights=img)]
        np.testing.assert_allclose(got, want, rtol=0.35)  # SPH smoothing widens the light a little
        if max(want) / min(want) > 1.5:  # an elongated projection: the axes must not be swapped
            assert (got[0] > got[1]) == (want[0] > want[1])


def test_bad_config_values_name_the_key():
    with pytest.raises(ConfigError, match="simgen.rebin_px"):
        tm.coerce_config(tiny(rebin_px=[40]))
    with pytest.raises(ConfigError, match="simgen.source.kind"):
        tm.coerce_config(tiny(source={"kind": "ftp"}))
    with pytest.raises(ConfigError, match="simgen.source.base_path"):
        tm.coerce_config(tiny(source={"kind": "basepath"}))
    with pytest.raises(ConfigError, match="simgen.image_pix"):
        tm.coerce_config(tiny(image_pix=30))
    with pytest.raises(ConfigError, match="n_galaxie"):
        tm.coerce_config(tiny(source={"minisim": {"n_galaxie": 3}}))
    assert canonical_config(TINY)["generator"] == "tng"


# --------------------------------------------------------------------------------------------
# Malformed simulations
# --------------------------------------------------------------------------------------------
@pytest.fixture
def sim_copy(tiny_set, tmp_path):
    root = tmp_path / "sim"
    shutil.copytree(tiny_set["base"].parent, root)
    return root / "output"


def _basepath_cfg(base):
    return tiny(source={"kind": "basepath", "base_path": str(base)})


def test_missing_field_names_file_and_field(sim_copy, tmp_path):
    chunk = sim_copy / "snapdir_099" / "snap_099.1.hdf5"
    with h5py.File(chunk, "a") as f:
        del f["PartType4/GFM_StellarPhotometrics"]
    with pytest.raises(DataFormatError) as err:
        prepare_set(_basepath_cfg(sim_copy), out=tmp_path / "set", cluster=SYNC, progress=False)
    assert "snap_099.1.hdf5" in str(err.value) and "PartType4/GFM_StellarPhotometrics" in str(err.value)
    assert not (tmp_path / "set" / "manifest.json").exists()


def test_wrong_shape_names_file_and_field(sim_copy, tmp_path):
    chunk = sim_copy / "snapdir_099" / "snap_099.0.hdf5"
    with h5py.File(chunk, "a") as f:
        coords = f["PartType1/Coordinates"][:]
        del f["PartType1/Coordinates"]
        f["PartType1/Coordinates"] = coords[:, :2]
    with pytest.raises(DataFormatError, match=r"snap_099\.0\.hdf5.*PartType1/Coordinates.*shape"):
        prepare_set(_basepath_cfg(sim_copy), out=tmp_path / "set", cluster=SYNC, progress=False)


def test_missing_offsets_file_is_named(sim_copy, tmp_path):
    offsets = sim_copy.parent / "postprocessing" / "offsets" / "offsets_099.hdf5"
    offsets.unlink()
    with pytest.raises(DataFormatError, match="offsets_099.hdf5"):
        prepare_set(_basepath_cfg(sim_copy), out=tmp_path / "set", cluster=SYNC, progress=False)


def test_basepath_source_reads_the_same_galaxies(tiny_set, tmp_path):
    """A TNG basePath (here the mini-simulation's) gives the same set as the minisim source."""
    gs = open_galaxy_set(prepare_set(_basepath_cfg(tiny_set["base"]), out=tmp_path / "set", cluster=SYNC,
                                     progress=False))
    ref = tiny_set["gs"]
    np.testing.assert_array_equal(gs.ids, ref.ids)
    np.testing.assert_array_equal(gs.images("r_20"), ref.images("r_20"))
    np.testing.assert_array_equal(gs.column("log_ml_r"), ref.column("log_ml_r"))


# --------------------------------------------------------------------------------------------
# Resume after a kill
# --------------------------------------------------------------------------------------------
def test_resume_after_kill_renders_only_missing_shards(tiny_set, tmp_path):
    out = tmp_path / "set"
    script = ("import sys; from sim2obs.simgen import prepare_set; "
              f"prepare_set({TINY!r}, out=sys.argv[1], cluster={{'kind': 'synchronous'}}, progress=False)")
    proc = subprocess.Popen([sys.executable, "-c", script, str(out)], env={**os.environ, "OMP_NUM_THREADS": "1"})
    first = out / "part-00000.h5"
    deadline = time.time() + 120
    while not first.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    assert first.exists(), "the first shard was never written"
    assert not (out / "manifest.json").exists(), "the run finished before it could be killed"
    stamp = first.stat().st_mtime_ns
    prepare_set(TINY, out=out, cluster=SYNC, progress=False)
    gs = open_galaxy_set(out, check="full")
    assert first.stat().st_mtime_ns == stamp  # kept, not rendered again
    assert gs.content_hash == tiny_set["gs"].content_hash
    assert gs.provenance["shards_rendered_this_run"] < gs.manifest["shards"].__len__()


# --------------------------------------------------------------------------------------------
# The web-API source
# --------------------------------------------------------------------------------------------
def _cutout_bytes(base, sid, folder) -> bytes:
    """A cutout file as the TNG API serves it, cut from the mini-simulation (no header cosmology)."""
    path = folder / f"{sid}.hdf5"
    with h5py.File(path, "w") as f:
        for name, (ptype, fields) in tm._field_lists().items():
            data = il.snapshot.loadSubhalo(str(base), 99, int(sid), ptype, fields=fields)
            if data["count"]:
                g = f.create_group(f"PartType{ptype}")
                for field in fields:
                    g[field] = data[field]
    return path.read_bytes()


def test_api_source_matches_the_snapshot(tiny_set, tmp_path):
    base, ref = tiny_set["base"], tiny_set["gs"]
    sids = sorted(set(ref.column("subhalo_id").tolist()))[:2]
    head = il.groupcat.loadHeader(str(base), 99)
    snap_head = dict(h5py.File(il.snapshot.snapPath(str(base), 99), "r")["Header"].attrs)
    subs = il.groupcat.loadSubhalos(str(base), 99, fields=["SubhaloPos", "SubhaloMass", "SubhaloMassType"])
    records = {s: {"id": s, "pos_x": float(subs["SubhaloPos"][s, 0]), "pos_y": float(subs["SubhaloPos"][s, 1]),
                   "pos_z": float(subs["SubhaloPos"][s, 2]), "mass": float(subs["SubhaloMass"][s]),
                   "mass_stars": float(subs["SubhaloMassType"][s, 4])} for s in sids}
    simulation = {"name": SIM, "hubble": float(head["HubbleParam"]), "omega_0": float(snap_head["Omega0"]),
                  "omega_L": float(snap_head["OmegaLambda"]), "omega_B": float(snap_head["OmegaBaryon"]),
                  "boxsize": float(head["BoxSize"]), "mass_dm": float(snap_head["MassTable"][1])}
    cutouts = {s: _cutout_bytes(base, s, tmp_path) for s in sids}
    with serve(FakeTNG(cutouts, records, simulation, redshift=float(head["Redshift"]))) as fake:
        cfg = tiny(source={"kind": "api", "snapshot": SNAP,
                           "api": {"simulation": SIM, "base_url": f"{fake.base}/api", "api_key": KEY,
                                   "cache_dir": str(tmp_path / "cache"), "subhalo_ids": sids}})
        gs = open_galaxy_set(prepare_set(cfg, out=tmp_path / "set", cluster=SYNC, progress=False))
        n_requests = fake.count("cutout.hdf5")
    assert n_requests == len(sids)  # each cutout downloaded once (selection and mocks share the cache)
    assert "secret-key" not in (tmp_path / "set" / "manifest.json").read_text()
    rows = np.flatnonzero(np.isin(ref.column("subhalo_id"), sids))
    np.testing.assert_array_equal(gs.ids, ref.ids[rows])
    for stack in ("r_40", "vmap", "sigmamap"):
        np.testing.assert_allclose(gs.images(stack), ref.images(stack, indices=rows), rtol=1e-5, atol=1e-6)
    for col in ("log_mstar_rhalf", "log_mtot_rhalf", "log_ml_r", "sigma_e", "kin_bt"):
        np.testing.assert_allclose(gs.column(col), ref.column(col)[rows], rtol=1e-6)
