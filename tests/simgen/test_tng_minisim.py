"""The TNG-format mini-simulation: read back through illustris_python, checked against its
analytic model, units, determinism, the marker and config validation."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import illustris_python as il
import numpy as np
import pytest

from sim2obs.errors import ConfigError, Sim2obsValueError
from sim2obs.simgen import tng_minisim as ms

SNAP = 99
SMALL = dict(n_galaxies=16, seed=11, star_particles_min=200, star_particles_max=400, gas_particles_max=120,
             dm_particle_mass=5e-3, n_groupcat_chunks=3, n_snapshot_chunks=3, satellite_fraction=0.6,
             edge_fraction=0.3)
HIGH_Z = dict(SMALL, n_galaxies=6, seed=5, redshift=0.5, satellite_fraction=0.0)
TINY = dict(n_galaxies=3, seed=3, star_particles_min=30, star_particles_max=40, dm_particle_mass=2e-2,
            n_groupcat_chunks=2, n_snapshot_chunks=2)
STAR_FIELDS = ["Coordinates", "Velocities", "Masses", "ParticleIDs", "GFM_StellarFormationTime", "GFM_Metallicity",
               "GFM_InitialMass", "GFM_StellarPhotometrics"]
SUB_FIELDS = ["SubhaloPos", "SubhaloVel", "SubhaloMass", "SubhaloMassType", "SubhaloLenType",
              "SubhaloHalfmassRadType", "SubhaloMassInRadType", "SubhaloSFR", "SubhaloGrNr", "SubhaloFlag",
              "SubhaloStellarPhotometrics"]
GROUP_FIELDS = ["GroupPos", "GroupMass", "GroupLenType", "GroupFirstSub", "GroupNsubs", "Group_M_Crit200",
                "Group_R_Crit200"]


def _snap_header(base: str) -> dict:
    # illustris_python 1.1.1 has no snapshot.loadHeader: read chunk 0's Header as it does
    with h5py.File(il.snapshot.snapPath(base, SNAP), "r") as f:
        return dict(f["Header"].attrs.items())


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    root = tmp_path_factory.mktemp("minisim") / "sim"
    base = ms.write_minisim(SMALL, root)
    return {"root": root, "base": str(base), "subs": il.groupcat.loadSubhalos(str(base), SNAP, fields=SUB_FIELDS),
            "halos": il.groupcat.loadHalos(str(base), SNAP, fields=GROUP_FIELDS), "header": _snap_header(str(base)),
            "truth": ms.read_truth(root)}


@pytest.fixture(scope="module")
def sim_z05(tmp_path_factory):
    root = tmp_path_factory.mktemp("minisim_z05") / "sim"
    base = ms.write_minisim(HIGH_Z, root)
    return {"root": root, "base": str(base), "subs": il.groupcat.loadSubhalos(str(base), SNAP, fields=SUB_FIELDS),
            "header": _snap_header(str(base)), "truth": ms.read_truth(root)}


def _offsets_physical(coords, centre, header):
    """Particle offsets from ``centre`` (periodic), physical kpc."""
    box = header["BoxSize"]
    d = np.asarray(coords, float) - np.asarray(centre, float)
    d -= box * np.round(d / box)
    return d * header["Time"] / header["HubbleParam"]


# --------------------------------------------------------------------------------------------
# Layout and illustris_python
# --------------------------------------------------------------------------------------------
def test_layout_and_headers(sim):
    root, base, cfg = sim["root"], sim["base"], ms.coerce_minisim_config(SMALL)
    assert sorted(p.name for p in (root / "output" / "groups_099").iterdir()) == \
        [f"fof_subhalo_tab_099.{i}.hdf5" for i in range(3)]
    assert sorted(p.name for p in (root / "output" / "snapdir_099").iterdir()) == \
        [f"snap_099.{i}.hdf5" for i in range(3)]
    assert (root / "postprocessing" / "offsets" / "offsets_099.hdf5").is_file()
    gh = il.groupcat.loadHeader(base, SNAP)
    sh = sim["header"]
    for key in ("BoxSize", "HubbleParam", "Omega0", "OmegaLambda", "OmegaBaryon", "Redshift", "Time"):
        assert gh[key] == pytest.approx(sh[key])
    assert gh["Nsubgroups_Total"] == cfg.n_galaxies == sim["subs"]["count"]
    assert gh["Ngroups_Total"] == sim["halos"]["count"] and gh["NumFiles"] == 3
    assert sh["HubbleParam"] == pytest.approx(0.6774) and sh["Time"] == pytest.approx(1.0)
    assert sh["MassTable"][1] == pytest.approx(SMALL["dm_particle_mass"]) and sh["NumFilesPerSnapshot"] == 3
    totals = np.zeros(6, np.int64)
    n_groups = n_subs = 0
    for i in range(3):
        with h5py.File(il.snapshot.snapPath(base, SNAP, i), "r") as f:
            totals += f["Header"].attrs["NumPart_ThisFile"]
            assert "Masses" not in f.get("PartType1", {})  # DM mass lives in MassTable
        with h5py.File(il.groupcat.gcPath(base, SNAP, i), "r") as f:
            n_groups += f["Header"].attrs["Ngroups_ThisFile"]
            n_subs += f["Header"].attrs["Nsubgroups_ThisFile"]
    assert np.array_equal(totals, il.snapshot.getNumPart(sh))
    assert (n_groups, n_subs) == (gh["Ngroups_Total"], gh["Nsubgroups_Total"])
    assert np.array_equal(sim["subs"]["SubhaloLenType"].sum(axis=0), totals)


def test_groups_and_satellites(sim):
    subs, halos = sim["subs"], sim["halos"]
    first, nsubs, grnr = halos["GroupFirstSub"], halos["GroupNsubs"], subs["SubhaloGrNr"]
    assert (nsubs > 1).any(), "some groups must hold satellites"
    assert np.array_equal(grnr, np.repeat(np.arange(halos["count"]), nsubs))
    assert np.array_equal(first, np.concatenate([[0], np.cumsum(nsubs)[:-1]]))
    group_len = np.zeros_like(halos["GroupLenType"])
    np.add.at(group_len, grnr, subs["SubhaloLenType"])
    assert np.array_equal(group_len, halos["GroupLenType"])
    assert np.all(np.diff(halos["GroupLenType"].sum(axis=1)) <= 0)  # ordered by length, as in TNG
    assert np.allclose(halos["GroupPos"], subs["SubhaloPos"][first])
    assert np.all(halos["Group_R_Crit200"] > 0) and np.all(halos["Group_M_Crit200"] > 0)
    assert np.allclose(subs["SubhaloMass"], subs["SubhaloMassType"].sum(axis=1), rtol=1e-5)
    assert np.all(subs["SubhaloFlag"] == 1)


def test_load_subhalo_and_halo(sim):
    base, subs, halos = sim["base"], sim["subs"], sim["halos"]
    for i in range(subs["count"]):
        stars = il.snapshot.loadSubhalo(base, SNAP, i, "stars", STAR_FIELDS)
        n4 = subs["SubhaloLenType"][i, 4]
        assert stars["count"] == n4
        for name in STAR_FIELDS:
            assert len(stars[name]) == n4
        assert stars["GFM_StellarPhotometrics"].shape == (n4, 8) and stars["Coordinates"].shape == (n4, 3)
        dm = il.snapshot.loadSubhalo(base, SNAP, i, "dm", ["Coordinates"])
        assert dm.shape == (subs["SubhaloLenType"][i, 1], 3)
        mass4 = stars["Masses"].sum()
        assert mass4 == pytest.approx(subs["SubhaloMassType"][i, 4], rel=1e-4)  # winds included, as in TNG
        assert np.all(stars["GFM_InitialMass"] >= stars["Masses"] * (1 - 1e-6))
    ids = []
    for g in range(halos["count"]):
        dm = il.snapshot.loadHalo(base, SNAP, g, "dm", ["Coordinates", "ParticleIDs"])
        assert dm["count"] == halos["GroupLenType"][g, 1]
        first, n = halos["GroupFirstSub"][g], halos["GroupNsubs"][g]
        parts = [il.snapshot.loadSubhalo(base, SNAP, s, "dm", ["ParticleIDs"]) for s in range(first, first + n)]
        assert np.array_equal(dm["ParticleIDs"], np.concatenate(parts))  # ordered by subhalo within a group
        ids.append(dm["ParticleIDs"])
    ids = np.concatenate(ids)
    assert np.unique(ids).size == ids.size


def test_subhalo_spanning_snapshot_chunks(sim):
    base, subs = sim["base"], sim["subs"]
    with h5py.File(il.groupcat.offsetPath(base, SNAP), "r") as f:
        chunk_start = f["FileOffsets/SnapByType"][:, 4]
        sub_start = f["Subhalo/SnapByType"][:, 4]
    n4 = subs["SubhaloLenType"][:, 4]
    spanning = [i for i in range(subs["count"])
                if np.any((chunk_start > sub_start[i]) & (chunk_start < sub_start[i] + n4[i]))]
    assert spanning, "some subhalo's stars must span two snapshot chunks"
    i = spanning[0]
    whole = il.snapshot.loadSubhalo(base, SNAP, i, "stars", ["Coordinates", "ParticleIDs", "GFM_Metallicity"])
    lo, hi = sub_start[i], sub_start[i] + n4[i]
    pieces = {"Coordinates": [], "ParticleIDs": [], "GFM_Metallicity": []}
    n_chunks_used = 0
    for c in range(len(chunk_start)):
        with h5py.File(il.snapshot.snapPath(base, SNAP, c), "r") as f:
            n_here = f["Header"].attrs["NumPart_ThisFile"][4]
            a, b = max(lo, chunk_start[c]), min(hi, chunk_start[c] + n_here)
            if b > a:
                n_chunks_used += 1
                for name in pieces:
                    pieces[name].append(f["PartType4"][name][a - chunk_start[c]:b - chunk_start[c]])
    assert n_chunks_used >= 2
    for name, parts in pieces.items():
        assert np.array_equal(whole[name], np.concatenate(parts))


# --------------------------------------------------------------------------------------------
# Physics against the analytic model
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["sim", "sim_z05"])
def test_enclosed_masses_match_model(which, request):
    s = request.getfixturevalue(which)
    base, subs, header, truth = s["base"], s["subs"], s["header"], s["truth"]
    h = header["HubbleParam"]
    m_dm = header["MassTable"][1] * 1e10 / h
    zs = []
    for i in range(subs["count"]):
        row = ms.truth_row(truth, i)
        centre = subs["SubhaloPos"][i]
        stars = il.snapshot.loadSubhalo(base, SNAP, i, "stars", ["Coordinates", "Masses", "GFM_StellarFormationTime"])
        real = stars["GFM_StellarFormationTime"] > 0
        r_st = np.linalg.norm(_offsets_physical(stars["Coordinates"][real], centre, header), axis=1)
        m_st = stars["Masses"][real].astype(float) * 1e10 / h
        dm = il.snapshot.loadSubhalo(base, SNAP, i, "dm", ["Coordinates"])
        r_dm = np.linalg.norm(_offsets_physical(dm, centre, header), axis=1)
        assert m_st.sum() == pytest.approx(row["m_star_msun"], rel=1e-4)
        assert r_dm.size * m_dm == pytest.approx(row["m_dm_particles_msun"], rel=1e-6)
        assert r_dm.max() <= row["r_trunc_kpc"] + 0.02  # float32 SubhaloPos: ~0.01 kpc
        radii = np.array([0.5, 1.0, 2.0, 3.0]) * row["r_half_kpc"]
        for r_part, m_part, comp in ((r_st, m_st, "stars"), (r_dm, np.full(r_dm.size, m_dm), "dm")):
            if r_part.size < 50:
                continue
            model = ms.analytic_enclosed_mass(row, radii, comp)
            total = m_part.sum()
            measured = np.array([m_part[r_part < r].sum() for r in radii])
            p = np.clip(model / total, 1e-6, 1 - 1e-6)
            sigma = np.sqrt(p * (1 - p) * np.sum(m_part ** 2)) + 1e-3 * model
            z = (measured - model) / sigma
            assert np.all(np.abs(z) < 5), (i, comp, measured, model)
            zs.extend(z)
    zs = np.asarray(zs)
    assert len(zs) >= 16
    assert np.sqrt(np.mean(zs ** 2)) < 2.0 and abs(np.mean(zs)) < 1.0


def test_half_mass_radius_and_truncation(sim):
    base, subs, truth, header = sim["base"], sim["subs"], sim["truth"], sim["header"]
    h = header["HubbleParam"]
    rh_cat = subs["SubhaloHalfmassRadType"][:, 4] / h  # physical kpc (a = 1)
    for i in range(subs["count"]):  # the catalogue radius halves the type-4 particle mass (to a few
        # particles: SubhaloPos is float32, ~6 pc at 75 Mpc/h)
        stars = il.snapshot.loadSubhalo(base, SNAP, i, "stars", ["Coordinates", "Masses"])
        r = np.linalg.norm(_offsets_physical(stars["Coordinates"], subs["SubhaloPos"][i], header), axis=1)
        m = stars["Masses"].astype(float)
        assert abs(m[r < rh_cat[i]].sum() - 0.5 * m.sum()) <= 4 * m.max()
    assert np.median(rh_cat / truth["r_half_kpc"]) == pytest.approx(1.0, abs=0.1)  # and matches the model
    central = truth["is_central"] == 1
    assert np.all(truth["r_trunc_kpc"][central] >= 3 * truth["r_half_kpc"][central])
    # SubhaloMassType[1] is the full analytic halo mass, not the truncated particle sum
    m_dm_cat = subs["SubhaloMassType"][:, 1] * 1e10 / h
    assert np.allclose(m_dm_cat, truth["m_dm_analytic_msun"], rtol=1e-5)
    assert np.all(m_dm_cat[central] > truth["m_dm_particles_msun"][central])


def test_disks_rotate_about_their_spin_axis(sim):
    base, subs, header, truth = sim["base"], sim["subs"], sim["header"], sim["truth"]
    checked = 0
    for i in np.flatnonzero(truth["bulge_fraction"] < 0.4):
        stars = il.snapshot.loadSubhalo(base, SNAP, i, "stars", ["Coordinates", "Velocities", "Masses",
                                                                  "GFM_StellarFormationTime"])
        real = stars["GFM_StellarFormationTime"] > 0
        x = _offsets_physical(stars["Coordinates"][real], subs["SubhaloPos"][i], header)
        v = stars["Velocities"][real] * np.sqrt(header["Time"]) - subs["SubhaloVel"][i]
        spin = np.sum(stars["Masses"][real, None] * np.cross(x, v), axis=0)
        assert np.dot(spin / np.linalg.norm(spin), truth["spin_axis"][i]) > 0.9
        checked += 1
    assert checked >= 2


def test_winds_photometry_and_star_formation(sim):
    base, subs, header = sim["base"], sim["subs"], sim["header"]
    h = header["HubbleParam"]
    from astropy.cosmology import FlatLambdaCDM

    cosmo = FlatLambdaCDM(H0=100 * h, Om0=header["Omega0"], Ob0=header["OmegaBaryon"])
    t_obs = cosmo.age(header["Redshift"]).to_value("Gyr")
    n_wind, young_mass, sfr_total = 0, 0.0, 0.0
    for i in range(subs["count"]):
        stars = il.snapshot.loadSubhalo(base, SNAP, i, "stars", STAR_FIELDS)
        wind = stars["GFM_StellarFormationTime"] <= 0
        n_wind += wind.sum()
        real = ~wind
        assert np.all(stars["GFM_StellarFormationTime"][real].astype(float) <= header["Time"])
        mags = stars["GFM_StellarPhotometrics"]
        assert np.all(mags[wind] >= 90) and np.all(np.abs(mags[real]) < 30)
        lum = 10 ** (-0.4 * mags[real])
        total = -2.5 * np.log10(lum.sum(axis=0))
        assert np.allclose(total, subs["SubhaloStellarPhotometrics"][i], atol=1e-3)
        gas = il.snapshot.loadSubhalo(base, SNAP, i, "gas", ["StarFormationRate", "Masses"])
        sfr = gas["StarFormationRate"].sum() if subs["SubhaloLenType"][i, 0] else 0.0
        assert sfr == pytest.approx(subs["SubhaloSFR"][i], rel=1e-4, abs=1e-8)
        a_form = stars["GFM_StellarFormationTime"][real].astype(float)
        age = t_obs - cosmo.age(1 / a_form - 1).to_value("Gyr")
        young_mass += stars["GFM_InitialMass"][real][age < 1.0].sum() * 1e10 / h
        sfr_total += subs["SubhaloSFR"][i]
    assert n_wind > 0
    assert sfr_total > 0
    assert 0.6 < (young_mass / 1e9) / sfr_total < 1.6  # stars formed in the last Gyr match the SFR


def test_ssp_mass_to_light():
    r, g = ms.PHOTOMETRIC_BANDS.index("r"), ms.PHOTOMETRIC_BANDS.index("g")
    log_ml = ms.ssp_log_mass_to_light(np.array([1.0, 5.0, 10.0, 10.0, 10.0]),
                                      ms.Z_SUN * np.array([1.0, 1.0, 1.0, 0.2, 2.0]))
    ml_r = 10 ** log_ml[[1, 2], r]  # r-band M/L (Msun/Lsun) of solar-metallicity 5 and 10 Gyr populations
    assert np.all((ml_r >= 1.0) & (ml_r <= 3.0)), ml_r
    assert ml_r[1] > ml_r[0]  # older: more mass per unit light
    colour = ms.SOLAR_ABS_MAG[g] - ms.SOLAR_ABS_MAG[r] + 2.5 * (log_ml[:, g] - log_ml[:, r])
    assert colour[0] < colour[1] < colour[2]  # older: redder
    assert colour[3] < colour[2] < colour[4]  # metal-rich: redder
    assert 0.6 < colour[2] < 0.9
    mags = ms.ssp_magnitudes(np.array([1e10]), np.array([10.0]), np.array([ms.Z_SUN]))
    assert mags[0, r] == pytest.approx(ms.SOLAR_ABS_MAG[r] - 2.5 * (10 - log_ml[2, r]))


def test_analytic_enclosed_mass_limits(sim):
    row = ms.truth_row(sim["truth"], 0)
    far = 1e4 * row["r200_kpc"]
    assert ms.analytic_enclosed_mass(row, far, "stars") == pytest.approx(row["m_star_msun"], rel=1e-4)
    assert ms.analytic_enclosed_mass(row, far, "dm") == pytest.approx(row["m_dm_particles_msun"])
    assert ms.analytic_enclosed_mass(row, row["r200_kpc"], "dm_nfw") == pytest.approx(row["m200_dm_msun"])
    r = np.geomspace(0.1, 300, 30)
    total = ms.analytic_enclosed_mass(row, r, "total")
    assert np.all(np.diff(total) >= -1e-9 * total[-1])
    assert ms.analytic_enclosed_mass(row, far, "total") == pytest.approx(
        row["m_star_msun"] + row["m_dm_particles_msun"] + row["m_gas_msun"], rel=1e-4)
    with pytest.raises(Sim2obsValueError):
        ms.analytic_enclosed_mass(row, 1.0, "bh")


# --------------------------------------------------------------------------------------------
# Units
# --------------------------------------------------------------------------------------------
def test_positions_in_box_and_wrapping(sim):
    base, header, subs = sim["base"], sim["header"], sim["subs"]
    box = header["BoxSize"]
    for ptype in ("gas", "dm", "stars"):
        x = il.snapshot.loadSubset(base, SNAP, ptype, ["Coordinates"])
        assert np.all((x >= 0) & (x < box))
    assert np.all((subs["SubhaloPos"] >= 0) & (subs["SubhaloPos"] < box))
    wrapped = 0
    for i in range(subs["count"]):
        dm = il.snapshot.loadSubhalo(base, SNAP, i, "dm", ["Coordinates"])
        wrapped += np.any((dm.min(axis=0) < 0.01 * box) & (dm.max(axis=0) > 0.99 * box))
    assert wrapped >= 1, "some galaxy must straddle the periodic boundary"


def test_velocities_scaled_by_sqrt_a(sim_z05):
    base, subs, header = sim_z05["base"], sim_z05["subs"], sim_z05["header"]
    a = header["Time"]
    assert a == pytest.approx(1 / 1.5) and header["Redshift"] == pytest.approx(0.5)
    differs = 0
    for i in range(subs["count"]):
        stars = il.snapshot.loadSubhalo(base, SNAP, i, "stars", ["Velocities", "Masses", "GFM_StellarFormationTime"])
        real = stars["GFM_StellarFormationTime"] > 0
        mean_code = np.average(stars["Velocities"][real], axis=0, weights=stars["Masses"][real])
        assert np.allclose(mean_code * np.sqrt(a), subs["SubhaloVel"][i], atol=0.5)
        dm = il.snapshot.loadSubhalo(base, SNAP, i, "dm", ["Velocities"])
        assert np.allclose(dm.mean(axis=0) * np.sqrt(a), subs["SubhaloVel"][i], atol=0.5)
        differs += np.abs(mean_code - subs["SubhaloVel"][i]).max() > 5.0
    assert differs >= 1
    # formation scale factors never exceed the snapshot's (compared in float64)
    stars = il.snapshot.loadSubset(base, SNAP, "stars", ["GFM_StellarFormationTime"])
    assert float(stars.max()) <= a


# --------------------------------------------------------------------------------------------
# Determinism, marker, atomicity, config
# --------------------------------------------------------------------------------------------
def _key_datasets(base: Path) -> dict:
    out = {}
    with h5py.File(base / "snapdir_099" / "snap_099.0.hdf5", "r") as f:
        for name in ("PartType4/Coordinates", "PartType4/GFM_StellarPhotometrics", "PartType4/ParticleIDs",
                     "PartType1/Coordinates", "PartType1/Velocities"):
            out[name] = f[name][()]
    out["SubhaloMassType"] = il.groupcat.loadSubhalos(str(base), SNAP, fields=["SubhaloMassType"])
    return out


def test_deterministic(tmp_path):
    a = _key_datasets(ms.write_minisim(TINY, tmp_path / "a"))
    b = _key_datasets(ms.write_minisim(TINY, tmp_path / "b"))
    c = _key_datasets(ms.write_minisim(dict(TINY, seed=4), tmp_path / "c"))
    for name in a:
        assert a[name].tobytes() == b[name].tobytes(), name
    assert a["PartType4/Coordinates"].tobytes() != c["PartType4/Coordinates"].tobytes()


def test_marker_and_reuse(tmp_path, monkeypatch):
    root = tmp_path / "sim"
    base = ms.write_minisim(TINY, root)
    marker = json.loads((root / ms.MARKER_NAME).read_text())
    assert marker["config_hash"] == ms.config_hash(ms.coerce_minisim_config(TINY))
    assert ms.is_complete(root, TINY) and not ms.is_complete(root, dict(TINY, seed=9))
    stamp = (root / ms.MARKER_NAME).stat().st_mtime_ns

    def no_build(*args, **kwargs):
        raise AssertionError("regenerated")

    with monkeypatch.context() as m:
        m.setattr("sim2obs.simgen.tng.minisim_writer._build", no_build)
        assert ms.write_minisim(dict(TINY), root) == base  # reused, not rebuilt
    assert (root / ms.MARKER_NAME).stat().st_mtime_ns == stamp
    with pytest.raises(Sim2obsValueError):  # another config at the same root needs overwrite
        ms.write_minisim(dict(TINY, seed=9), root)
    ms.write_minisim(dict(TINY, seed=9), root, overwrite=True)
    assert json.loads((root / ms.MARKER_NAME).read_text())["config"]["seed"] == 9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sim"]  # no temporary or old folders left


def test_failed_build_leaves_nothing(tmp_path, monkeypatch):
    def broken(cfg, where):
        (where / "output").mkdir()
        raise RuntimeError("disk full")

    monkeypatch.setattr("sim2obs.simgen.tng.minisim_writer._build", broken)
    with pytest.raises(RuntimeError):
        ms.write_minisim(TINY, tmp_path / "sim")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bad, key", [
    ({"n_galaxy": 5}, "minisim.n_galaxy"),
    ({"OmegaBaryon": 0.5}, "minisim.OmegaBaryon"),
    ({"star_particles_min": 500, "star_particles_max": 100}, "minisim.star_particles_max"),
    ({"wind_fraction": 1.5}, "minisim.wind_fraction"),
    ({"redshift": -1.0}, "minisim.redshift"),
    ({"n_snapshot_chunks": 0}, "minisim.n_snapshot_chunks"),
    ({"dm_particle_mass": "heavy"}, "minisim.dm_particle_mass"),
])
def test_bad_config_names_key(bad, key, tmp_path):
    with pytest.raises(ConfigError) as info:
        ms.coerce_minisim_config(bad)
    assert info.value.key == key
    with pytest.raises(ConfigError):
        ms.write_minisim(bad, tmp_path / "never")
    assert not (tmp_path / "never").exists()
