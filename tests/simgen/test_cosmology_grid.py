"""The population's redshift grids: astropy's values, kept on disk for Planck18 and read back bit for bit."""
import numpy as np
import pytest
from astropy.cosmology import FlatLambdaCDM, Planck18

from sim2obs.simgen.cosmology_grid import GRID_NAMES, cache_dir, redshift_grids

Z_VOLUME, Z = np.linspace(0.01, 0.2, 64), np.linspace(0.005, 0.21, 128)


@pytest.fixture(autouse=True)
def _data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SIM2OBS_DATA", str(tmp_path))


def test_the_grids_are_astropys_and_come_back_identical_from_the_cache():
    first = redshift_grids(Z_VOLUME, Z)
    (path,) = cache_dir().glob("planck18-*.npz")
    again = redshift_grids(Z_VOLUME, Z)
    assert set(first) == set(again) == set(GRID_NAMES)
    for name in GRID_NAMES:
        assert np.array_equal(first[name], again[name]), name
    assert np.array_equal(first["age_gyr"], Planck18.age(Z).value)
    assert np.array_equal(first["distmod"], Planck18.distmod(Z).value)
    assert np.array_equal(first["differential_comoving_volume"], Planck18.differential_comoving_volume(Z_VOLUME).value)
    assert len(list(cache_dir().glob("*.npz"))) == 1 and path.exists()


def test_another_grid_gets_its_own_file():
    redshift_grids(Z_VOLUME, Z)
    other = redshift_grids(Z_VOLUME, Z[:-1])
    assert len(list(cache_dir().glob("planck18-*.npz"))) == 2
    assert np.array_equal(other["luminosity_distance_mpc"], Planck18.luminosity_distance(Z[:-1]).value)


@pytest.mark.parametrize("damage", ["truncated", "wrong_grid"])
def test_a_damaged_cache_file_is_computed_again_and_replaced(damage):
    redshift_grids(Z_VOLUME, Z)
    (path,) = cache_dir().glob("planck18-*.npz")
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    else:
        np.savez(path, **{k: np.zeros(3) for k in GRID_NAMES})
    grids = redshift_grids(Z_VOLUME, Z)
    assert np.array_equal(grids["arcsec_per_kpc_proper"], Planck18.arcsec_per_kpc_proper(Z).value)
    with np.load(path) as f:  # replaced by the right grids
        assert np.array_equal(f["age_gyr"], Planck18.age(Z).value)


def test_another_cosmology_is_computed_and_not_cached():
    cosmo = FlatLambdaCDM(H0=70.0, Om0=0.3)
    grids = redshift_grids(Z_VOLUME, Z, cosmo)
    assert np.array_equal(grids["distmod"], cosmo.distmod(Z).value)
    assert not cache_dir().exists() or not any(cache_dir().iterdir())
