"""The mini-simulation's population: the analytic parameters of every subhalo, drawn vectorised
(generation order: group by group, central first; physical units kpc, Msun, km/s, Msun/yr).

One seeded stream (``[seed, 0]``) feeds every draw, in a fixed order: host masses and group
membership, satellite masses, concentrations, stellar masses and bulge fractions, star formation,
spins and sizes, star-formation histories and metallicities, positions and velocities, then the
groups placed across a box face. The relations are those of :mod:`sim2obs.simgen.tng_minisim_physics`
(see :mod:`sim2obs.simgen.tng_minisim` for the model)."""
from __future__ import annotations

import math

import numpy as np

from sim2obs.errors import ConfigError
from sim2obs.simgen.tng.minisim_config import _MAX_PARTICLES, _STREAM_POPULATION, MiniSimConfig, physics_of
from sim2obs.simgen.tng.minisim_cosmology import _Cosmology, _SFHTable
from sim2obs.simgen.tng.minisim_profiles import _disk_spherical_mass, _hernquist_fraction, _nfw_mu, _unit_vectors
from sim2obs.simgen.tng_minisim_physics import (G_KPC_KMS2_PER_MSUN, coupled_noise, mean_bulge_fraction,
                                                mean_log_metallicity, mmw98_scale_length, speagle14_log_sfr)

_KPC_KMS2_PER_MSUN = G_KPC_KMS2_PER_MSUN  # gravitational constant, kpc (km/s)^2 / Msun


def _groups(cfg: MiniSimConfig, rng) -> dict[str, np.ndarray]:
    """Host M200c (log10 Msun, a power law in log10 M) and the group structure: hosts able to
    hold a satellite above the floor get one with probability ``satellite_fraction``
    (1..``max_satellites`` of them)."""
    lo, hi, s = cfg.log_m200_min, cfg.log_m200_max, cfg.mass_function_slope
    uniform = rng.random(cfg.n_galaxies)
    if abs(s) < 1e-9:
        log_m_host = lo + uniform * (hi - lo)
    else:
        log_m_host = -np.log10(10 ** (-s * lo) - uniform * (10 ** (-s * lo) - 10 ** (-s * hi))) / s
    sat_floor = lo - 0.5
    can_host = log_m_host + np.log10(cfg.satellite_mass_ratio_max) >= sat_floor
    wants = rng.random(cfg.n_galaxies) < cfg.satellite_fraction
    how_many = rng.integers(1, cfg.max_satellites + 1, cfg.n_galaxies)
    n_sats = []
    total = 0
    while total < cfg.n_galaxies:
        g = len(n_sats)
        ns = int(how_many[g]) if (wants[g] and can_host[g]) else 0
        ns = min(ns, cfg.n_galaxies - total - 1)
        n_sats.append(ns)
        total += 1 + ns
    n_groups = len(n_sats)
    group = np.repeat(np.arange(n_groups), np.asarray(n_sats) + 1)
    central = np.concatenate([[True] + [False] * k for k in n_sats])
    host = np.flatnonzero(central)[group]  # index of each subhalo's central
    return dict(group=group, central=central, host=host, log_m200=log_m_host[:n_groups][group],
                n_groups=n_groups, sat_floor=sat_floor)


def _halos(cfg: MiniSimConfig, cosmo: _Cosmology, rng, p: dict) -> dict[str, np.ndarray]:
    """Satellite (infall) masses, M200c, r200c and NFW concentrations; ``conc_noise`` is the
    concentration's standard-normal residual (the stellar mass may be coupled to it)."""
    n, central, log_m200 = p["group"].size, p["central"], p["log_m200"]
    ratio_lo = np.maximum(np.log10(cfg.satellite_mass_ratio_min), p["sat_floor"] - log_m200)
    ratio = ratio_lo + rng.random(n) * (np.log10(cfg.satellite_mass_ratio_max) - ratio_lo)
    log_m200 = np.where(central, log_m200, log_m200 + ratio)
    m200 = 10 ** log_m200
    m200_dm = (1.0 - cosmo.baryon_fraction) * m200
    r200 = (3.0 * m200 / (4.0 * np.pi * 200.0 * cosmo.rho_crit)) ** (1.0 / 3.0)
    phys = physics_of(cfg)
    conc_noise = rng.normal(size=n)
    conc = phys.mean_concentration(m200, cfg.redshift, cfg.h) * 10 ** (cfg.concentration_scatter_dex * conc_noise)
    conc = np.clip(conc, 2.0, 40.0)
    return dict(m200=m200, m200_dm=m200_dm, r200=r200, conc_noise=conc_noise, conc=conc, r_s=r200 / conc)


def _stars_and_gas(cfg: MiniSimConfig, cosmo: _Cosmology, sfh: _SFHTable, rng, p: dict) -> dict[str, np.ndarray]:
    """Stellar masses (residual correlated with the concentration's by the physics' coupling),
    bulge fractions, particle counts, star formation (main sequence, quenched fraction rising
    with mass), cold gas and wind particle counts."""
    n = p["group"].size
    phys = physics_of(cfg)
    shmr_noise = coupled_noise(p["conc_noise"], rng.normal(size=n), phys.coupling(p["m200"]))
    log_mstar = np.log10(phys.mean_mstar(p["m200"], cfg.redshift)) + cfg.shmr_scatter_dex * shmr_noise
    mstar = 10 ** log_mstar
    bt_mean = mean_bulge_fraction(log_mstar)
    bt = np.clip(bt_mean + 0.12 * rng.normal(size=n), 0.0, 0.95)
    frac = np.clip((log_mstar - 9.0) / 2.5, 0.0, 1.0)
    n_star = np.round(cfg.star_particles_min + (cfg.star_particles_max - cfg.star_particles_min) * frac).astype(int)
    n_bulge = np.round(n_star * bt).astype(int)
    n_disk = n_star - n_bulge
    bt = np.where(n_bulge == 0, 0.0, np.where(n_disk == 0, 1.0, bt))
    m_bulge, m_disk = bt * mstar, (1.0 - bt) * mstar
    log_sfr_ms = speagle14_log_sfr(log_mstar, cosmo.t_obs)
    quenched = rng.random(n) < 1.0 / (1.0 + np.exp(-(log_mstar - cfg.quenching_log_mstar) / 0.25))
    log_sfr = log_sfr_ms + 0.3 * rng.normal(size=n) - np.where(quenched, 1.5 + 0.3 * rng.random(n), 0.0)
    # at most what the steepest rising history of the disk can have formed in the last Gyr
    sfr = np.minimum(10 ** log_sfr, 0.95 * sfh.q_max * m_disk / (sfh.window * 1e9))
    m_gas = sfr * cfg.depletion_time_gyr * 1e9
    m_star_particle = mstar / np.maximum(n_star, 1) / 0.6  # typical initial star particle mass
    n_gas = np.minimum(np.round(m_gas / m_star_particle), cfg.gas_particles_max).astype(int)
    m_gas = np.where(n_gas > 0, m_gas, 0.0)
    sfr = np.where(n_gas > 0, sfr, 0.0)
    n_wind = np.where(n_gas > 0, np.maximum(1, np.round(cfg.wind_fraction * n_star)), 0).astype(int) \
        if cfg.wind_fraction > 0 else np.zeros(n, int)
    return dict(log_mstar=log_mstar, mstar=mstar, bt=bt, n_star=n_star, n_bulge=n_bulge, n_disk=n_disk,
                m_bulge=m_bulge, m_disk=m_disk, quenched=quenched, sfr=sfr, m_gas=m_gas, n_gas=n_gas, n_wind=n_wind)


def _sizes(cfg: MiniSimConfig, rng, p: dict) -> dict[str, np.ndarray]:
    """Spins, disk scale lengths (Mo, Mao & White 1998) and heights, Hernquist bulge sizes, gas
    disk sizes and the model's 3D stellar half-mass radius (kpc)."""
    n = p["group"].size
    spin = cfg.spin_median * np.exp(cfg.spin_scatter_ln * rng.normal(size=n))
    spin = np.clip(spin, 0.008, 0.2)
    m_d_frac = np.clip((p["m_disk"] + p["m_gas"]) / p["m200"], 1e-4, 0.15)
    j_over_m = cfg.disk_angular_momentum_retention * (1.0 - cfg.retention_bulge_slope * p["bt"])
    r_d = np.clip(mmw98_scale_length(spin, p["r200"], p["conc"], m_d_frac, j_over_m), 0.3, 30.0)
    z_d = cfg.disk_height_ratio * r_d
    r_e_bulge = 2.88e-6 * np.maximum(p["m_bulge"], 1e6) ** 0.56 * \
        10 ** (cfg.bulge_size_scatter_dex * rng.normal(size=n))
    a_hern = np.maximum(r_e_bulge, 0.15) / 1.8153
    r_bulge_max = cfg.hernquist_truncation * a_hern
    r_gas, z_gas = cfg.gas_scale_ratio * r_d, cfg.gas_height_ratio * z_d
    m_disk, m_bulge, mstar = p["m_disk"], p["m_bulge"], p["mstar"]
    r_half = np.empty(n)
    for i in range(n):
        grid = np.geomspace(1e-3, 20.0 * max(r_d[i], a_hern[i]) + 50.0, 300)
        m_enc = _disk_spherical_mass(grid, m_disk[i], r_d[i], z_d[i])
        if m_bulge[i] > 0:
            m_enc += m_bulge[i] * _hernquist_fraction(np.minimum(grid, r_bulge_max[i]), a_hern[i]) / \
                _hernquist_fraction(r_bulge_max[i], a_hern[i])
        r_half[i] = np.exp(np.interp(0.5 * mstar[i], m_enc, np.log(grid)))
    return dict(spin=spin, r_d=r_d, z_d=z_d, a_hern=a_hern, r_bulge_max=r_bulge_max, r_gas=r_gas, z_gas=z_gas,
                r_half=r_half)


def _jacobi_radius(p: dict, i: int, j: int, d_sat: float, m_host: float) -> float:
    """Tidal (Jacobi, King 1962) radius (kpc) of satellite ``i`` at ``d_sat`` kpc from its host
    ``j`` of enclosed mass ``m_host``: r200 if the satellite fills less than that."""
    from scipy.optimize import brentq  # deferred: scipy.optimize takes ~0.4 s to import

    baryons = p["mstar"][i] + p["m_gas"][i]
    m200_dm, r_s, conc, r200 = p["m200_dm"][i], p["r_s"][i], p["conc"][i], p["r200"][i]

    def jacobi(r):
        m_sat = m200_dm * _nfw_mu(r / r_s) / _nfw_mu(conc) + baryons
        return r - d_sat * (m_sat / (3.0 * m_host)) ** (1.0 / 3.0)

    if jacobi(r200) < 0:
        return r200
    return brentq(jacobi, 1e-4, r200, xtol=1e-6)


def _positions_and_velocities(cfg: MiniSimConfig, cosmo: _Cosmology, rng, p: dict) -> dict[str, np.ndarray]:
    """Positions (ckpc/h; satellites at physical-kpc offsets from their host), tidal radii (kpc)
    and bulk velocities (km/s; satellites on circular orbits about their host)."""
    n, central, host, n_groups = p["group"].size, p["central"], p["host"], p["n_groups"]
    r200, r_s, conc, m200_dm = p["r200"], p["r_s"], p["conc"], p["m200_dm"]
    pos = np.empty((n, 3))
    pos[central] = rng.random((n_groups, 3)) * cfg.box_size
    d_sat = rng.uniform(cfg.satellite_distance_min, cfg.satellite_distance_max, n) * r200[host]
    direction = _unit_vectors(rng, n)
    a, h = cosmo.a, cfg.h
    r_tidal = r200.copy()
    vel = np.empty((n, 3))
    vel[central] = cfg.bulk_velocity_sigma_kms * rng.normal(size=(n_groups, 3))
    orbit_dir = _unit_vectors(rng, n)
    for i in np.flatnonzero(~central):
        j = host[i]
        pos[i] = pos[j] + direction[i] * d_sat[i] * h / a
        m_host = m200_dm[j] * _nfw_mu(d_sat[i] / r_s[j]) / _nfw_mu(conc[j]) + p["mstar"][j] + p["m_gas"][j]
        r_tidal[i] = _jacobi_radius(p, i, j, d_sat[i], m_host)
        v_circ = math.sqrt(_KPC_KMS2_PER_MSUN * m_host / d_sat[i])
        perp = orbit_dir[i] - np.dot(orbit_dir[i], direction[i]) * direction[i]
        perp /= np.linalg.norm(perp)
        vel[i] = vel[j] + v_circ * perp
    return dict(pos=pos, vel=vel, r_tidal=r_tidal, d_sat=d_sat)


def _wrap_edge_groups(cfg: MiniSimConfig, cosmo: _Cosmology, rng, p: dict) -> np.ndarray:
    """``p["pos"]`` with ``edge_fraction`` of the groups moved within half a truncation radius
    of a box face (their particles wrap around), all in [0, box_size)."""
    n_groups, group, r_trunc, pos = p["n_groups"], p["group"], p["r_trunc"], p["pos"]
    a, h = cosmo.a, cfg.h
    n_edge = min(n_groups, max(1, int(round(cfg.edge_fraction * n_groups)))) if cfg.edge_fraction > 0 else 0
    edge_groups = rng.choice(n_groups, n_edge, replace=False) if n_edge else np.zeros(0, int)
    edge_axis = rng.integers(0, 3, n_edge)
    edge_offset = rng.uniform(-0.5, 0.5, n_edge)
    for gidx, axis, off in zip(edge_groups, edge_axis, edge_offset):
        members = np.flatnonzero(group == gidx)
        c = members[0]
        shift = off * r_trunc[c] * h / a - pos[c, axis]
        pos[members, axis] += shift
    pos = np.mod(pos, cfg.box_size)
    pos[pos >= cfg.box_size] -= cfg.box_size
    return pos


def _draw_population(cfg: MiniSimConfig, cosmo: _Cosmology, sfh: _SFHTable) -> dict[str, np.ndarray]:
    """Analytic parameters of every subhalo (generation order: group by group, central first),
    physical units."""
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, _STREAM_POPULATION]))
    p = _groups(cfg, rng)
    p.update(_halos(cfg, cosmo, rng, p))
    p.update(_stars_and_gas(cfg, cosmo, sfh, rng, p))
    p.update(_sizes(cfg, rng, p))
    # star formation histories and metallicities
    k_disk = sfh.k_for(p["sfr"] * sfh.window * 1e9 / np.maximum(p["m_disk"], 1.0))
    k_bulge = 1.0 / rng.uniform(0.2, 0.8, p["group"].size)
    log_z = mean_log_metallicity(p["log_mstar"]) + 0.05 * rng.normal(size=p["group"].size)
    p.update(_positions_and_velocities(cfg, cosmo, rng, p))
    r_s, conc, m200_dm, h = p["r_s"], p["conc"], p["m200_dm"], cfg.h
    m_dm_analytic = m200_dm * _nfw_mu(p["r_tidal"] / r_s) / _nfw_mu(conc)
    p["r_trunc"] = np.minimum(np.maximum(cfg.dm_truncation_min_kpc, cfg.dm_truncation_rhalf * p["r_half"]),
                              p["r_tidal"])
    m_dm_part = cfg.dm_particle_mass * 1e10 / h
    n_dm = np.round(m200_dm * _nfw_mu(p["r_trunc"] / r_s) / _nfw_mu(conc) / m_dm_part).astype(int)
    pos = _wrap_edge_groups(cfg, cosmo, rng, p)
    n_particles = int(n_dm.sum() + p["n_star"].sum() + p["n_gas"].sum() + p["n_wind"].sum())
    if n_particles > _MAX_PARTICLES:
        raise ConfigError("minisim.dm_particle_mass", f"this config would write {n_particles} particles "
                          f"(limit {_MAX_PARTICLES}); raise dm_particle_mass or lower the particle counts",
                          value=cfg.dm_particle_mass)
    return dict(
        group=p["group"], central=p["central"], host=p["host"], m200_msun=p["m200"], m200_dm_msun=m200_dm,
        r200_kpc=p["r200"], concentration=conc, r_s_kpc=r_s, r_tidal_kpc=p["r_tidal"], r_trunc_kpc=p["r_trunc"],
        m_dm_analytic_msun=m_dm_analytic, n_dm=n_dm, m_dm_particles_msun=n_dm * m_dm_part,
        log_mstar=p["log_mstar"], m_star_msun=p["mstar"], bulge_fraction=p["bt"], m_bulge_msun=p["m_bulge"],
        a_hernquist_kpc=p["a_hern"], r_bulge_max_kpc=p["r_bulge_max"], m_disk_msun=p["m_disk"], r_d_kpc=p["r_d"],
        z_d_kpc=p["z_d"], spin_lambda=p["spin"], m_gas_msun=p["m_gas"], r_gas_kpc=p["r_gas"],
        z_gas_kpc=p["z_gas"], sfr_msun_yr=p["sfr"], quenched=p["quenched"], sfh_k_disk_per_gyr=k_disk,
        sfh_k_bulge_per_gyr=k_bulge, log_z_mean=log_z, r_half_kpc=p["r_half"], n_bulge=p["n_bulge"],
        n_disk=p["n_disk"], n_gas=p["n_gas"], n_wind=p["n_wind"], pos_ckpc_h=pos, vel_kms=p["vel"],
        satellite_distance_kpc=np.where(p["central"], 0.0, p["d_sat"]),
    )
