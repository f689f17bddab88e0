"""One galaxy of the mini-simulation as particles (physical kpc, km/s, Msun; positions relative
to the subhalo centre, box frame): a truncated NFW halo and a Hernquist bulge with Jeans
velocities, a rotating exponential x sech^2 disk (asymmetric drift), star ages from the subhalo's
star-formation history, metallicities, SSP photometry, a gas disk and wind particles.

Each galaxy has its own seeded stream (``[seed, 1, i]``), whose draws come in a fixed order:
dark matter, orientation, bulge, disk, formation times, metallicities, gas, winds."""
from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from sim2obs.simgen.tng.minisim_config import _STREAM_GALAXY, MiniSimConfig, physics_of
from sim2obs.simgen.tng.minisim_cosmology import _Cosmology, _SFHTable
from sim2obs.simgen.tng.minisim_profiles import _disk_cylindrical_mass, _hernquist_fraction, _nfw_mu, _unit_vectors
from sim2obs.simgen.tng_minisim_physics import (G_KPC_KMS2_PER_MSUN, Z_SUN, anisotropic_velocities, jeans_sigma,
                                                light_mass, mass_loss_fraction, ssp_magnitudes)

_KPC_KMS2_PER_MSUN = G_KPC_KMS2_PER_MSUN  # gravitational constant, kpc (km/s)^2 / Msun


def _random_rotation(rng) -> np.ndarray:
    return Rotation.random(random_state=rng).as_matrix()


def _isotropic(rng, r):
    return _unit_vectors(rng, r.size) * r[:, None]


def _disk_sample(rng, n, r_d, z_d):
    """Cylindrical R, phi, z of an exponential x sech^2 disk."""
    big_r = rng.gamma(2.0, r_d, n)
    phi = rng.uniform(0.0, 2.0 * np.pi, n)
    u = np.clip(rng.random(n), 1e-12, 1 - 1e-12)
    z = z_d * np.arctanh(2.0 * u - 1.0)
    return big_r, phi, z


def _cylindrical_to_cartesian(big_r, phi, z, v_r, v_phi, v_z):
    c, s = np.cos(phi), np.sin(phi)
    pos = np.stack([big_r * c, big_r * s, z], axis=1)
    vel = np.stack([v_r * c - v_phi * s, v_r * s + v_phi * c, v_z], axis=1)
    return pos, vel


class _Potential:
    """The galaxy's total enclosed mass M(<r) (NFW, Hernquist, the disks' cylindrically enclosed
    masses) on a log radial grid, with v_c^2 = G M / r and d ln v_c / d ln r."""

    def __init__(self, p: dict, i: int):
        m200_dm, r_s, c = p["m200_dm_msun"][i], p["r_s_kpc"][i], p["concentration"][i]
        grid = np.geomspace(1e-3, 100.0 * p["r200_kpc"][i], 600)
        m_nfw = m200_dm * _nfw_mu(grid / r_s) / _nfw_mu(c)
        self.m_tot = m_nfw + p["m_bulge_msun"][i] * _hernquist_fraction(grid, p["a_hernquist_kpc"][i]) + \
            _disk_cylindrical_mass(grid, p["m_disk_msun"][i], p["r_d_kpc"][i]) + \
            _disk_cylindrical_mass(grid, p["m_gas_msun"][i], p["r_gas_kpc"][i])
        self.grid = grid
        self.vc2 = _KPC_KMS2_PER_MSUN * self.m_tot / grid
        self.dlnv_dlnr = np.gradient(0.5 * np.log(self.vc2), np.log(grid))
        self.ln_grid = np.log(grid)

    def at(self, values, r):
        """``values`` (on the grid) interpolated at radii ``r`` (kpc)."""
        return np.interp(np.log(np.maximum(r, self.grid[0])), self.ln_grid, values)


def _dark_matter(rng, p: dict, i: int, pot: _Potential) -> dict[str, np.ndarray]:
    """Truncated NFW by inverse CDF (interpolated in log-log), isotropic Jeans velocities."""
    r_s, grid = p["r_s_kpc"][i], pot.grid
    n_dm = int(p["n_dm"][i])
    x_t = p["r_trunc_kpc"][i] / r_s
    x_grid = np.geomspace(1e-6 * x_t, x_t, 2000)
    mu_grid = _nfw_mu(x_grid)
    y = rng.random(n_dm) * _nfw_mu(x_t)
    x = np.exp(np.interp(np.log(np.maximum(y, mu_grid[0])), np.log(mu_grid), np.log(x_grid)))
    r_dm = x * r_s
    rho_nfw = 1.0 / ((grid / r_s) * (1.0 + grid / r_s) ** 2)
    sigma_dm = pot.at(jeans_sigma(grid, rho_nfw, pot.m_tot), r_dm)
    vel_dm = rng.normal(size=(n_dm, 3)) * sigma_dm[:, None]
    if n_dm:
        vel_dm -= vel_dm.mean(axis=0)  # exact systemic velocity
    return {"pos": _isotropic(rng, r_dm), "vel": vel_dm}


def _bulge(rng, p: dict, i: int, cfg: MiniSimConfig, pot: _Potential) -> tuple[np.ndarray, np.ndarray]:
    """Truncated Hernquist positions and Jeans velocities (isotropic, or of the physics' constant
    anisotropy beta)."""
    a_h, r_bmax, grid = p["a_hernquist_kpc"][i], p["r_bulge_max_kpc"][i], pot.grid
    n_b = int(p["n_bulge"][i])
    s = np.sqrt(rng.random(n_b) * _hernquist_fraction(r_bmax, a_h))
    r_b = a_h * s / (1.0 - s)
    rho_h = 1.0 / ((grid / a_h) * (1.0 + grid / a_h) ** 3)
    beta_b = physics_of(cfg).bulge_beta
    sigma_b = pot.at(jeans_sigma(grid, rho_h, pot.m_tot, beta_b), r_b)  # sigma_r
    pos_b, vel_b = _isotropic(rng, r_b), rng.normal(size=(n_b, 3))
    vel_b = vel_b * sigma_b[:, None] if beta_b == 0 else anisotropic_velocities(pos_b, vel_b, sigma_b, beta_b)
    return pos_b, vel_b


def _disk(rng, p: dict, i: int, cfg: MiniSimConfig, pot: _Potential):
    """Disk stars: an isothermal sheet's vertical dispersion, sigma_R = sigma_z / sigma_z_over_sigma_r,
    the epicyclic sigma_phi / sigma_R and the asymmetric-drift mean rotation (Binney & Tremaine
    2008, eq. 4.228). Returns positions, velocities and cylindrical radii (kpc)."""
    g = _KPC_KMS2_PER_MSUN
    m_d, r_d, z_d = p["m_disk_msun"][i], p["r_d_kpc"][i], p["z_d_kpc"][i]
    m_g, r_g = p["m_gas_msun"][i], p["r_gas_kpc"][i]
    n_d = int(p["n_disk"][i])
    big_r, phi, z = _disk_sample(rng, n_d, r_d, z_d)
    surface = m_d / (2 * np.pi * r_d ** 2) * np.exp(-big_r / r_d) + \
        (m_g / (2 * np.pi * r_g ** 2) * np.exp(-big_r / r_g) if m_g > 0 else 0.0)
    sigma_z = np.sqrt(np.pi * g * surface * z_d)
    sigma_r = sigma_z / cfg.sigma_z_over_sigma_r
    phi_ratio2 = np.clip(0.5 * (1.0 + pot.at(pot.dlnv_dlnr, big_r)), 0.05, 1.0)  # kappa^2 / (4 Omega^2)
    vc2_d = pot.at(pot.vc2, big_r)
    v_phi_mean = np.sqrt(np.maximum(vc2_d - sigma_r ** 2 * (phi_ratio2 - 1.0 + 2.0 * big_r / r_d), 0.0))
    pos_d, vel_d = _cylindrical_to_cartesian(
        big_r, phi, z, sigma_r * rng.normal(size=n_d), v_phi_mean + sigma_r * np.sqrt(phi_ratio2) *
        rng.normal(size=n_d), sigma_z * rng.normal(size=n_d))
    return pos_d, vel_d, big_r


def _stars(rng, p: dict, i: int, cfg: MiniSimConfig, cosmo: _Cosmology, sfh: _SFHTable, rot: np.ndarray,
           bulge: tuple, disk: tuple) -> dict[str, np.ndarray]:
    """Bulge + disk star particles: ages, metallicities, initial and current masses (Leitner &
    Kravtsov 2011 mass loss; the particles sum to the model masses), rotated into the box frame,
    formation scale factors and SSP magnitudes (bulges of the physics' IMF)."""
    (pos_b, vel_b), (pos_d, vel_d, big_r) = bulge, disk
    m_b, m_d, r_d = p["m_bulge_msun"][i], p["m_disk_msun"][i], p["r_d_kpc"][i]
    n_b, n_d = len(pos_b), len(pos_d)
    t_form_b = sfh.sample(rng, p["sfh_k_bulge_per_gyr"][i], n_b)
    t_form_d = sfh.sample(rng, p["sfh_k_disk_per_gyr"][i], n_d)
    age_b, age_d = cosmo.t_obs - t_form_b, cosmo.t_obs - t_form_d
    zh_mean = p["log_z_mean"][i]
    zh_b = zh_mean + 0.1 + 0.15 * rng.normal(size=n_b)
    zh_d = zh_mean - 0.04 * (age_d - 5.0) - 0.05 * (big_r / r_d - 1.5) + 0.12 * rng.normal(size=n_d)
    keep_b, keep_d = 1.0 - mass_loss_fraction(age_b), 1.0 - mass_loss_fraction(age_d)
    init_b = np.full(n_b, m_b / keep_b.sum()) if n_b else np.zeros(0)
    init_d = np.full(n_d, m_d / keep_d.sum()) if n_d else np.zeros(0)
    stars = {
        "pos": np.concatenate([pos_b, pos_d]), "vel": np.concatenate([vel_b, vel_d]),
        "mass": np.concatenate([init_b * keep_b, init_d * keep_d]), "init": np.concatenate([init_b, init_d]),
        "age": np.concatenate([age_b, age_d]),
        "metallicity": Z_SUN * 10 ** np.clip(np.concatenate([zh_b, zh_d]), -2.5, 0.7),
    }
    stars["vel"] -= np.average(stars["vel"], axis=0, weights=stars["mass"])  # exact systemic velocity
    stars["pos"] = stars["pos"] @ rot.T
    stars["vel"] = stars["vel"] @ rot.T
    stars["a_form"] = cosmo.scale_factor(cosmo.t_obs - stars["age"])
    imf_log_ml = physics_of(cfg).bulge_imf_log_ml
    emitting = stars["mass"] if imf_log_ml == 0 else light_mass(stars["mass"], np.arange(n_b + n_d) < n_b, imf_log_ml)
    stars["mags"] = ssp_magnitudes(emitting, stars["age"], stars["metallicity"])
    return stars


def _gas(rng, p: dict, i: int, cfg: MiniSimConfig, pot: _Potential, rot: np.ndarray) -> dict[str, np.ndarray]:
    """The cold gas disk: circular rotation plus ``gas_sigma_kms``; each particle's SFR ~
    Sigma_gas^0.4 (Kennicutt 1998 per unit mass), summing to the subhalo's SFR."""
    n_g, m_g, r_g, z_g = int(p["n_gas"][i]), p["m_gas_msun"][i], p["r_gas_kpc"][i], p["z_gas_kpc"][i]
    big_r, phi, z = _disk_sample(rng, n_g, r_g, z_g)
    sig = cfg.gas_sigma_kms
    pos_g, vel_g = _cylindrical_to_cartesian(big_r, phi, z, sig * rng.normal(size=n_g),
                                             np.sqrt(pot.at(pot.vc2, big_r)) + sig * rng.normal(size=n_g),
                                             sig * rng.normal(size=n_g))
    if n_g:
        vel_g -= vel_g.mean(axis=0)
    weight = np.exp(-0.4 * big_r / r_g)  # Kennicutt-Schmidt: SFR per unit mass ~ Sigma_gas^0.4
    return {"pos": pos_g @ rot.T, "vel": vel_g @ rot.T, "mass": np.full(n_g, m_g / max(n_g, 1)),
            "sfr": p["sfr_msun_yr"][i] * weight / weight.sum() if n_g else np.zeros(0)}


def _winds(rng, p: dict, i: int, cosmo: _Cosmology, rot: np.ndarray) -> dict[str, np.ndarray]:
    """Wind particles above and below the gas disk moving outwards at 200-600 km/s, launched in
    the last 50 Myr (``a_form`` = -launch scale factor)."""
    n_w, n_g, m_g, r_g = int(p["n_wind"][i]), int(p["n_gas"][i]), p["m_gas_msun"][i], p["r_gas_kpc"][i]
    w_r = rng.exponential(r_g, n_w)
    w_phi = rng.uniform(0, 2 * np.pi, n_w)
    w_sign = np.where(rng.random(n_w) < 0.5, -1.0, 1.0)
    w_z = w_sign * rng.uniform(0.5, 5.0, n_w)
    speed = rng.uniform(200.0, 600.0, n_w)
    w_pos = np.stack([w_r * np.cos(w_phi), w_r * np.sin(w_phi), w_z], axis=1)
    w_vel = speed[:, None] * w_pos / np.linalg.norm(w_pos, axis=1, keepdims=True)
    launch = cosmo.scale_factor(cosmo.t_obs - rng.uniform(0.0, 0.05, n_w))
    wind_mass = m_g / max(n_g, 1) * 0.5
    return {"pos": w_pos @ rot.T, "vel": w_vel @ rot.T, "mass": np.full(n_w, wind_mass),
            "a_form": -launch, "metallicity": np.full(n_w, Z_SUN * 10 ** (p["log_z_mean"][i] + 0.1))}


def _realise_galaxy(p: dict, i: int, cfg: MiniSimConfig, cosmo: _Cosmology, sfh: _SFHTable) -> dict:
    """Subhalo ``i`` of the population ``p`` as particles: ``{"dm", "stars", "gas", "wind"}``
    (dicts of arrays), ``spin_axis`` (the disk's, box frame) and ``vc2`` ((grid kpc, v_c^2))."""
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, _STREAM_GALAXY, i]))
    pot = _Potential(p, i)
    dm = _dark_matter(rng, p, i, pot)
    rot = _random_rotation(rng)
    bulge = _bulge(rng, p, i, cfg, pot)
    disk = _disk(rng, p, i, cfg, pot)
    stars = _stars(rng, p, i, cfg, cosmo, sfh, rot, bulge, disk)
    gas = _gas(rng, p, i, cfg, pot, rot)
    wind = _winds(rng, p, i, cosmo, rot)
    return {"dm": dm, "stars": stars, "gas": gas, "wind": wind, "spin_axis": rot[:, 2], "vc2": (pot.grid, pot.vc2)}
