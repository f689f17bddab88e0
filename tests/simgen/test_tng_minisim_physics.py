"""The mini-simulation's galaxy-formation physics (``physics: A | B``): A without its concentration
coupling unchanged since generator 1.0, B reproducible and different from A in exactly the
documented relations, bad values named."""
from __future__ import annotations

import hashlib
from pathlib import Path

import h5py
import numpy as np
import pytest

from sim2obs.errors import ConfigError
from sim2obs.simgen import default_set_path, tng_minisim as ms, tng_mocks
from sim2obs.simgen import tng_minisim_physics as phys

TINY = dict(n_galaxies=3, seed=3, star_particles_min=30, star_particles_max=40, dm_particle_mass=2e-2,
            n_groupcat_chunks=2, n_snapshot_chunks=2)
TINY_SAT = dict(TINY, n_galaxies=5, satellite_fraction=1.0, seed=7)


def _array_digest(root: Path) -> str:
    """sha256 (16 hex) of every dataset (name, dtype, shape, bytes) of the mini-sim's HDF5 files:
    the data, independent of the HDF5 library's file layout and of the marker's timestamp."""
    h = hashlib.sha256()
    for p in sorted(Path(root).rglob("*.hdf5")) + [Path(root) / ms.TRUTH_NAME]:
        with h5py.File(p, "r") as f:
            names: list[str] = []
            f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
            for n in sorted(names):
                a = np.ascontiguousarray(f[n][()])
                h.update(f"{p.relative_to(root)}:{n}:{a.dtype.str}:{a.shape}".encode())
                h.update(a.tobytes())
    return h.hexdigest()[:16]


def _file_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != ms.MARKER_NAME}


# --------------------------------------------------------------------------------------------
# Physics A: the default; without its concentration coupling, generator 1.0's data
# --------------------------------------------------------------------------------------------
# Computed with the generator as it was before the ``physics`` key existed (same machine, the
# pinned numpy/scipy/astropy/h5py of constraints.txt): a regression check of those data. Since
# generator 1.1 physics A couples M* to the halo concentration (issue 15), so the default's data
# and every config hash changed; ``concentration_coupling: 0`` draws 1.0's data again.
_BEFORE = {"tiny": "e1816407cceab952", "tiny_sat": "ffa986b6f8bac803"}


@pytest.mark.parametrize("name, cfg", [("tiny", TINY), ("tiny_sat", TINY_SAT)])
def test_physics_a_without_coupling_reproduces_the_data_from_before_the_key(name, cfg, tmp_path):
    ms.write_minisim(dict(cfg, physics="A", concentration_coupling=0.0), tmp_path / name)
    assert _array_digest(tmp_path / name) == _BEFORE[name]
    ms.write_minisim(dict(cfg, physics="A"), tmp_path / f"{name}_coupled")
    assert _array_digest(tmp_path / f"{name}_coupled") != _BEFORE[name]  # the default couples


def test_default_and_explicit_a_give_the_same_files(tmp_path):
    default = _file_bytes(Path(ms.write_minisim(TINY, tmp_path / "default")).parent)
    explicit = _file_bytes(Path(ms.write_minisim(dict(TINY, physics="A", concentration_coupling=None),
                                                 tmp_path / "explicit")).parent)
    assert default == explicit  # byte for byte, the truth file's config attribute included
    cfg = ms.coerce_minisim_config(dict(TINY, physics="A"))
    assert ms.minisim_config_dict(cfg)["physics"] == "A"  # every key names the folder since 1.1
    # default and explicit physics-A data nodes share one set folder, B has its own
    node = {"generator": "tng", "source": {"kind": "minisim", "minisim": {"n_galaxies": 600}}}
    explicit_node = {"generator": "tng", "source": {"kind": "minisim", "minisim": {"n_galaxies": 600, "physics": "A"}}}
    b_node = {"generator": "tng", "source": {"kind": "minisim", "minisim": {"n_galaxies": 600, "physics": "B"}}}
    assert default_set_path(node, "/d") == default_set_path(explicit_node, "/d") != default_set_path(b_node, "/d")
    assert tng_mocks.coerce_config(b_node).source.minisim["physics"] == "B"


# --------------------------------------------------------------------------------------------
# Physics B: reproducible, and different from A in the documented relations only
# --------------------------------------------------------------------------------------------
def test_physics_b_is_reproducible_and_differs_from_a(tmp_path):
    b1 = ms.write_minisim(dict(TINY, physics="B"), tmp_path / "b1")
    b2 = ms.write_minisim(dict(TINY, physics="B"), tmp_path / "b2")
    a = ms.write_minisim(TINY, tmp_path / "a")
    assert _array_digest(Path(b1).parent) == _array_digest(Path(b2).parent)
    assert _array_digest(Path(b1).parent) != _array_digest(Path(a).parent)
    cfg_b = ms.coerce_minisim_config(dict(TINY, physics="B"))
    assert ms.config_hash(cfg_b) != ms.config_hash(ms.coerce_minisim_config(TINY))
    assert ms.is_complete(Path(b1).parent, dict(TINY, physics="B")) and not ms.is_complete(Path(b1).parent, TINY)


def test_b_shifts_stellar_mass_and_concentration_by_the_documented_relations(tmp_path):
    """Same seed, A and B without the coupling: every subhalo draws the same host mass and the same
    deviates, so the differences are exactly the relations' (B13 vs M13, Duffy vs DM14)."""
    cfg = dict(TINY_SAT, n_galaxies=8)
    ta = ms.read_truth(Path(ms.write_minisim(dict(cfg, concentration_coupling=0.0), tmp_path / "a")).parent)
    tb = ms.read_truth(Path(ms.write_minisim(dict(cfg, physics="B", concentration_coupling=0.0),
                                             tmp_path / "b")).parent)
    m200, z, h = ta["m200_msun"], 0.0, ms.MiniSimConfig().h
    np.testing.assert_array_equal(m200, tb["m200_msun"])
    np.testing.assert_allclose(np.log10(tb["m_star_msun"] / ta["m_star_msun"]),
                               np.log10(phys.behroozi13_mstar(m200, z) / phys.moster13_mstar(m200, z)), atol=1e-9)
    unclipped = (ta["concentration"] > 2) & (ta["concentration"] < 40) & (tb["concentration"] > 2)
    assert unclipped.sum() >= 6
    np.testing.assert_allclose(np.log10(tb["concentration"] / ta["concentration"])[unclipped],
                               np.log10(phys.duffy08_c(m200, z, h) / phys.dutton_maccio14_c(m200, z, h))[unclipped],
                               atol=1e-9)


@pytest.mark.parametrize("log_m200, dex", [(11.0, -0.336), (11.5, -0.292), (12.0, -0.107), (12.5, -0.022)])
def test_documented_shmr_offsets(log_m200, dex):
    """The module docstring's numbers: B's stellar mass at fixed M200, relative to A's, z = 0."""
    m = 10 ** log_m200
    a, b = phys.PHYSICS["A"].mean_mstar(m, 0.0), phys.PHYSICS["B"].mean_mstar(m, 0.0)
    assert np.log10(b / a) == pytest.approx(dex, abs=0.002)
    # and B at z = 0: log M* = log(eps M1) at M_h = M1 (Behroozi et al. 2013 eq. 3)
    assert np.log10(phys.behroozi13_mstar(10 ** 11.514, 0.0)) == pytest.approx(11.514 - 1.777, abs=1e-9)
    c_a, c_b = (phys.PHYSICS[v].mean_concentration(m, 0.0, 0.6774) for v in "AB")
    c_ratio = c_b / c_a
    assert -0.15 < np.log10(c_ratio) < -0.10


def test_concentration_coupling_of_the_population():
    """Correlation of the log M* and log c residuals at fixed M200 (2000 draws): A (TNG-like) 0.5
    in low-mass haloes fading above ~1e12 Msun, B 0.5 at every mass; A with the key at 0: none.
    Standard errors ~0.03 (low mass, ~1200 haloes) and ~0.08 (high mass, ~250)."""
    from sim2obs.simgen.tng_minisim import _Cosmology, _SFHTable, _draw_population

    out = {}
    for name, extra in (("A", {}), ("B", {}), ("A0", {"concentration_coupling": 0.0})):
        cfg = ms.coerce_minisim_config(dict(n_galaxies=2000, seed=21, satellite_fraction=0.0, physics=name[0],
                                            **extra))
        cosmo = _Cosmology(cfg)
        pop = _draw_population(cfg, cosmo, _SFHTable(cosmo))
        p = ms.physics_of(cfg)
        ok = (pop["concentration"] > 2) & (pop["concentration"] < 40)
        d_c = np.log10(pop["concentration"] / p.mean_concentration(pop["m200_msun"], 0.0, cfg.h))[ok]
        d_m = (pop["log_mstar"] - np.log10(p.mean_mstar(pop["m200_msun"], 0.0)))[ok]
        log_m = np.log10(pop["m200_msun"])[ok]
        low, high = log_m < 11.75, log_m >= 12.5
        out[name] = (np.corrcoef(d_c[low], d_m[low])[0, 1], np.corrcoef(d_c[high], d_m[high])[0, 1], d_m.std())
    assert out["A"][0] == pytest.approx(0.47, abs=0.09) and abs(out["A"][1]) < 0.25
    assert out["B"][0] == pytest.approx(0.5, abs=0.09) and out["B"][1] == pytest.approx(0.5, abs=0.2)
    assert abs(out["A0"][0]) < 0.09 and abs(out["A0"][1]) < 0.25
    for name in out:
        assert out[name][2] == pytest.approx(0.15, abs=0.01)  # the coupling keeps the SHMR scatter
    a = phys.PHYSICS["A"]
    np.testing.assert_allclose(a.coupling(10 ** np.array([11.5, 12.0, 12.5, 13.0])), [0.476, 0.365, 0.135, 0.024],
                               atol=0.002)  # the module docstring's numbers
    np.testing.assert_allclose(phys.PHYSICS["B"].coupling(np.array([1e11, 1e13])), [0.5, 0.5])


def test_anisotropic_jeans_solution_and_velocities():
    """sigma_r of constant beta solves d(rho sigma_r^2)/dr + 2 beta rho sigma_r^2 / r = -rho G M / r^2;
    the sampled velocities have sigma_t / sigma_r = sqrt(1 - beta); beta = 0 is the isotropic case."""
    r = np.geomspace(1e-3, 1e4, 4000)
    a = 2.0
    rho = 1.0 / ((r / a) * (1 + r / a) ** 3)
    m = 1e11 * (r / (r + a)) ** 2 + 1e12 * np.log1p(r / 20.0) / 3.0
    for beta in (0.0, 0.3, -0.2):
        s2 = phys.jeans_sigma(r, rho, m, beta) ** 2
        lhs = np.gradient(rho * s2, r) + 2 * beta * rho * s2 / r
        rhs = -rho * phys.G_KPC_KMS2_PER_MSUN * m / r ** 2
        inner = (r > 0.05) & (r < 200.0)
        np.testing.assert_allclose(lhs[inner], rhs[inner], rtol=2e-3)
    radial_grid = phys.jeans_sigma(r, rho, m, 0.3)
    assert np.all(radial_grid[(r > 0.05) & (r < 50)] > phys.jeans_sigma(r, rho, m, 0.0)[(r > 0.05) & (r < 50)])
    rng = np.random.default_rng(0)
    pos = rng.normal(size=(200_000, 3)) * 5.0
    normals = rng.normal(size=pos.shape)
    sig = np.full(len(pos), 100.0)
    iso = phys.anisotropic_velocities(pos, normals, sig, 0.0)
    np.testing.assert_allclose(iso, normals * sig[:, None], rtol=0, atol=1e-9)
    v = phys.anisotropic_velocities(pos, normals, sig, 0.3)
    r_hat = pos / np.linalg.norm(pos, axis=1, keepdims=True)
    v_r = np.sum(v * r_hat, axis=1)
    v_t2 = np.sum(v * v, axis=1) - v_r ** 2
    beta_measured = 1.0 - np.mean(v_t2) / (2.0 * np.mean(v_r ** 2))
    assert beta_measured == pytest.approx(0.3, abs=0.01)


def test_salpeter_over_chabrier_derivation():
    """B's bulge M/L offset is the derived Salpeter / Chabrier M/L of an old population."""
    derived = [phys.salpeter_over_chabrier_log_ml(t) for t in (0.9, 1.0, 1.1)]
    assert all(0.22 < d < 0.26 for d in derived)
    assert phys.PHYSICS["B"].bulge_imf_log_ml == pytest.approx(phys.salpeter_over_chabrier_log_ml(1.0), abs=0.01)
    assert phys.PHYSICS["A"].bulge_imf_log_ml == 0.0


def _r_band_offsets(base: str, cfg: dict, subhalo_id: int) -> np.ndarray:
    """r-band magnitude of each (non-wind) star particle minus that of a Chabrier population of
    its current mass, age and metallicity (mag)."""
    import illustris_python as il

    stars = il.snapshot.loadSubhalo(base, 99, subhalo_id, "stars", fields=[
        "Masses", "GFM_StellarFormationTime", "GFM_Metallicity", "GFM_StellarPhotometrics"])
    full = ms.coerce_minisim_config(cfg)
    cosmo = ms._Cosmology(full)
    ok = stars["GFM_StellarFormationTime"] > 0
    age = cosmo.t_obs - cosmo.age(stars["GFM_StellarFormationTime"][ok].astype(float))
    mass = stars["Masses"][ok].astype(float) * 1e10 / full.h
    chabrier = phys.ssp_magnitudes(mass, age, stars["GFM_Metallicity"][ok].astype(float))[:, 5]
    return stars["GFM_StellarPhotometrics"][ok, 5] - chabrier


def test_b_bulge_stars_emit_salpeter_light(tmp_path):
    """Every star particle of A shines as a Chabrier population of its mass; in B exactly the
    bulge particles (as many as the truth's n_bulge) are 2.5 x 0.24 mag fainter."""
    offset = 2.5 * phys.PHYSICS["B"].bulge_imf_log_ml
    for name in ("A", "B"):
        cfg = dict(TINY, physics=name)
        root = tmp_path / name
        base = str(ms.write_minisim(cfg, root))
        truth = ms.read_truth(root)
        for sid in range(len(truth["n_bulge"])):
            d = _r_band_offsets(base, cfg, sid)
            shifted = np.abs(d - offset) < 0.01
            assert np.all(shifted | (np.abs(d) < 0.01)), (name, sid)
            assert shifted.sum() == (truth["n_bulge"][sid] if name == "B" else 0)
        assert name == "A" or truth["n_bulge"].sum() > 0


def test_b_bulges_are_radially_anisotropic(tmp_path):
    """The velocity anisotropy beta = 1 - <v_t^2> / (2 <v_r^2>) of the bulge particles written by
    the generator (picked by their Salpeter light) is B's 0.3 (~1700 particles per galaxy)."""
    import illustris_python as il

    cfg = dict(n_galaxies=2, seed=5, log_m200_min=12.9, log_m200_max=13.2, satellite_fraction=0.0,
               star_particles_min=3000, star_particles_max=4000, dm_particle_mass=2e-2, n_groupcat_chunks=1,
               n_snapshot_chunks=1, edge_fraction=0.0, wind_fraction=0.0, physics="B")
    root = tmp_path / "sim"
    base = str(ms.write_minisim(cfg, root))
    h = ms.coerce_minisim_config(cfg).h
    subs = il.groupcat.loadSubhalos(base, 99, fields=["SubhaloPos", "SubhaloVel"])
    truth = ms.read_truth(root)
    for sid in range(2):
        bulge = np.abs(_r_band_offsets(base, cfg, sid) - 2.5 * phys.PHYSICS["B"].bulge_imf_log_ml) < 0.01
        assert bulge.sum() == truth["n_bulge"][sid] > 1000
        stars = il.snapshot.loadSubhalo(base, 99, sid, "stars", fields=["Coordinates", "Velocities"])
        pos = (stars["Coordinates"][bulge] - subs["SubhaloPos"][sid]) / h  # z = 0: kpc, no box wrap here
        vel = stars["Velocities"][bulge] - stars["Velocities"][bulge].mean(axis=0)
        r_hat = pos / np.linalg.norm(pos, axis=1, keepdims=True)
        v_r = np.sum(vel * r_hat, axis=1)
        beta = 1.0 - (np.sum(vel * vel, axis=1) - v_r ** 2).mean() / (2.0 * (v_r ** 2).mean())
        assert beta == pytest.approx(phys.PHYSICS["B"].bulge_beta, abs=0.06)


# --------------------------------------------------------------------------------------------
# Bad values name the key
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad, key", [
    ({"physics": "C"}, "minisim.physics"),
    ({"physics": "b"}, "minisim.physics"),
    ({"concentration_coupling": 1.5}, "minisim.concentration_coupling"),
    ({"concentration_coupling": "strong"}, "minisim.concentration_coupling"),
])
def test_bad_physics_names_the_key(bad, key, tmp_path):
    with pytest.raises(ConfigError) as info:
        ms.coerce_minisim_config(bad)
    assert info.value.key == key
    if "physics" in bad:
        assert "A" in str(info.value) and "B" in str(info.value)
    with pytest.raises(ConfigError) as info:
        tng_mocks.coerce_config({"generator": "tng", "source": {"kind": "minisim", "minisim": bad}})
    assert info.value.key == "simgen.source." + key
