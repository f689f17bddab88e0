"""Targets and summary statistics on particle sets with known answers."""
import numpy as np
import pytest
from scipy.special import gammaincinv
from scipy.stats import special_ortho_group

from sim2obs.errors import Sim2obsValueError
from sim2obs.simgen.galaxy_stats import (G_KPC_KMS2_MSUN, axis_ratios, circularities, enclosed_mass,
                                         half_mass_radius, lambda_r, orbit_fractions, sersic_b, sersic_index,
                                         sfr_recent, sigma_e, surface_brightness_profile)


def test_enclosed_mass_and_half_mass_radius():
    r = np.array([3.0, 1.0, 2.0, 4.0])
    m = np.array([1.0, 1.0, 1.0, 5.0])
    assert enclosed_mass(r, m, 2.0) == 2.0 and enclosed_mass(r, m, 0.5) == 0.0
    assert enclosed_mass(r, m, np.array([1.0, 3.5, 10.0])).tolist() == [1.0, 3.0, 8.0]
    assert half_mass_radius(r, m) == 4.0  # 3 Msun within 3 kpc < 4 = half of 8
    assert half_mass_radius(r, np.array([1.0, 1.0, 1.0, 1.0])) == 2.0
    assert np.isnan(half_mass_radius(np.zeros(0), np.zeros(0)))
    rng = np.random.default_rng(0)  # Plummer sphere: r_half = 1.305 a
    x = rng.random(200_000)
    r_plummer = 1.0 / np.sqrt(x ** (-2 / 3) - 1)
    assert half_mass_radius(r_plummer, np.ones_like(x)) == pytest.approx(1.3048, rel=0.01)


def _sersic_radii(n, r_eff, size, rng):
    """Projected radii drawn from a Sersic profile: L(<R) is a regularised incomplete gamma."""
    return r_eff * (gammaincinv(2 * n, rng.random(size)) / sersic_b(n)) ** n


@pytest.mark.parametrize("n_true, tol", [(1.0, 0.12), (4.0, 0.6)])
def test_sersic_index_recovers_n(n_true, tol):
    rng = np.random.default_rng(int(n_true))
    R = _sersic_radii(n_true, 2.0, 40_000, rng)
    n_fit = sersic_index(R, np.ones_like(R), r_max_kpc=4.0)
    assert n_fit == pytest.approx(n_true, abs=tol)


def test_sersic_b_and_profile_bookkeeping():
    assert sersic_b(1.0) == pytest.approx(1.678, abs=1e-3) and sersic_b(4.0) == pytest.approx(7.669, abs=1e-3)
    R = np.array([0.5, 0.6, 0.7, 2.0, 2.1, 50.0])
    radius, mu, err = surface_brightness_profile(R, np.ones(6), 10.0, n_bins=1, r_min_kpc=0.1, min_particles=1)
    assert mu[0] == pytest.approx(5 / (np.pi * (100 - 0.01))) and err[0] == pytest.approx(mu[0] / np.sqrt(5))
    # too few populated annuli -> NaN
    assert np.isnan(sersic_index(np.array([1.0, 1.1, 1.2]), np.ones(3), 4.0))


def _ellipsoid(axes, size, rng):
    rotation = special_ortho_group.rvs(3, random_state=rng)
    return (rng.normal(size=(size, 3)) * np.asarray(axes)) @ rotation.T


@pytest.mark.parametrize("reduced", [True, False])
def test_axis_ratios_of_triaxial_gaussian(reduced):
    rng = np.random.default_rng(5)
    pos = _ellipsoid([2.0, 1.4, 0.8], 60_000, rng)  # b/a = 0.7, c/a = 0.4
    q, s = axis_ratios(pos, np.ones(len(pos)), r_start_kpc=3.0, reduced=reduced)
    assert q == pytest.approx(0.7, abs=0.03) and s == pytest.approx(0.4, abs=0.03)
    sphere = rng.normal(size=(60_000, 3))
    q, s = axis_ratios(sphere, np.ones(60_000), r_start_kpc=2.0, reduced=reduced)
    assert q > 0.95 and s > 0.93
    assert np.isnan(axis_ratios(pos, np.ones(len(pos)), r_start_kpc=1e-4)).all()  # too few particles


def test_sigma_e_includes_rotation_and_aperture():
    v = np.array([100.0, -100.0, 100.0, -100.0, 900.0])
    w = np.array([1.0, 1.0, 3.0, 3.0, 100.0])
    R = np.array([0.5, 0.5, 1.0, 1.0, 5.0])
    assert sigma_e(v, w, R, 1.0) == pytest.approx(100.0)
    assert sigma_e(v[[0, 2]], w[[0, 2]], R[[0, 2]], 1.0) == pytest.approx(0.0)
    assert np.isnan(sigma_e(v, w, R, 0.1))


def test_lambda_r_known_maps():
    shape = (4, 4)
    radius = np.ones(shape)
    flux = np.ones(shape)
    valid = np.ones(shape, bool)
    assert lambda_r(np.full(shape, 50.0), np.full(shape, 50.0), flux, valid, radius, 2.0) == pytest.approx(2**-0.5)
    assert lambda_r(np.full(shape, 80.0), np.zeros(shape), flux, valid, radius, 2.0) == pytest.approx(1.0)
    assert np.isnan(lambda_r(np.zeros(shape), np.zeros(shape), flux, valid, radius, 2.0))
    v = np.full(shape, 100.0)
    v[0] = 0.0  # excluded as invalid
    valid[0] = False
    assert lambda_r(v, np.zeros(shape), flux, valid, radius, 2.0) == pytest.approx(1.0)


def _point_mass_galaxy(rng, n=20_000, m_centre=1e11):
    r = rng.uniform(2.0, 10.0, n)
    direction = rng.normal(size=(n, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    pos = direction * r[:, None]
    pos_all = np.vstack([pos, np.zeros((1, 3))])
    mass_all = np.concatenate([np.ones(n), [m_centre]])  # 1 Msun stars around a point mass
    return pos, pos_all, mass_all


def test_gravitational_constant():
    assert G_KPC_KMS2_MSUN == pytest.approx(4.3009e-6, rel=1e-4)


def test_circularities_cold_disk():
    rng = np.random.default_rng(6)
    pos, pos_all, mass_all = _point_mass_galaxy(rng)
    pos[:, 2] = 0.0
    pos_all[:-1, 2] = 0.0
    r = np.linalg.norm(pos, axis=1)
    v_c = np.sqrt(G_KPC_KMS2_MSUN * 1e11 / r)  # the stars' own mass is negligible (< 2e-7)
    phi = np.arctan2(pos[:, 1], pos[:, 0])
    vel = np.column_stack([-np.sin(phi), np.cos(phi), np.zeros(len(r))]) * v_c[:, None]
    eps = circularities(pos, vel, np.ones(len(r)), pos_all, mass_all, aperture=10.0)
    assert np.allclose(eps, 1.0, atol=1e-6)
    fractions = orbit_fractions(eps, np.ones(len(r)))
    assert fractions == {"kin_bt": 0.0, "f_cold": 1.0, "f_hot": 0.0}
    vel[::2] *= -1  # half counter-rotating, heavier half co-rotating
    mass = np.where(np.arange(len(r)) % 2 == 0, 1.0, 3.0)
    eps = circularities(pos, vel, mass, pos_all, mass_all, aperture=10.0)
    assert orbit_fractions(eps, mass)["kin_bt"] == pytest.approx(0.5)


def test_circularities_isotropic_sphere_is_hot():
    rng = np.random.default_rng(7)
    pos, pos_all, mass_all = _point_mass_galaxy(rng)
    vel = rng.normal(0.0, 50.0, pos.shape)  # v_c is 200 - 460 km/s
    eps = circularities(pos, vel, np.ones(len(pos)), pos_all, mass_all, aperture=10.0)
    fractions = orbit_fractions(eps, np.ones(len(pos)))
    assert fractions["kin_bt"] == pytest.approx(1.0, abs=0.05)
    assert fractions["f_hot"] > 0.8 and fractions["f_cold"] == 0.0


def test_orbit_fractions_thresholds():
    eps = np.array([-0.5, -0.1, 0.1, 0.5, 0.85, 0.95])
    mass = np.array([1.0, 1.0, 1.0, 1.0, 2.0, 2.0])
    fractions = orbit_fractions(eps, mass)
    assert fractions["kin_bt"] == pytest.approx(0.5)
    assert fractions["f_cold"] == pytest.approx(0.5) and fractions["f_hot"] == pytest.approx(0.25)
    assert orbit_fractions(-np.ones(3), np.ones(3))["kin_bt"] == 2.0  # not capped


def test_sfr_recent():
    ages = np.array([0.1, 0.5, 0.99, 1.5, 10.0, -0.1])
    m0 = np.array([1e9, 5e8, 5e8, 1e10, 1e10, 1e10])
    assert sfr_recent(ages, m0) == pytest.approx(2.0)
    assert sfr_recent(ages, m0, window_gyr=2.0) == pytest.approx(6.0)
    with pytest.raises(Sim2obsValueError):
        sfr_recent(ages, m0, window_gyr=0.0)
