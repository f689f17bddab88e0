"""A small simulation written in the IllustrisTNG on-disk layout, readable by ``illustris_python``.

:func:`write_minisim` writes, under ``root``::

    output/groups_<snap>/fof_subhalo_tab_<snap>.<N>.hdf5   group catalogue chunks (Header, Group, Subhalo)
    output/snapdir_<snap>/snap_<snap>.<N>.hdf5             snapshot chunks (Header, PartType0/1/4)
    postprocessing/offsets/offsets_<snap>.hdf5             FileOffsets/{Group,Subhalo,SnapByType},
                                                           {Group,Subhalo}/SnapByType
    minisim_truth.h5                                       the analytic model of every subhalo
    minisim.json                                           marker: config, hash, versions (written last)

and returns ``basePath = root/'output'``. Units are TNG's: positions ckpc/h, masses 1e10 Msun/h,
particle ``Velocities`` km/s sqrt(a) (peculiar velocity = value * sqrt(a)), ``SubhaloVel`` km/s,
``GroupVel`` km/s / a, SFR Msun/yr. Particles are ordered by group, within a group by subhalo
(central first), as in TNG (there is no inner or outer fuzz: every particle belongs to a
subhalo). Catalogue and snapshot files are split into chunks; the star chunk boundaries are moved,
where needed, so that some subhalo's stars span two snapshot chunks, as in real output.

Galaxies (one per subhalo; some FoF groups hold satellites besides their central) are particle
realisations of analytic models, all in physical units (kpc, Msun, km/s) before the conversion.
The galaxy-formation relations live in :mod:`sim2obs.simgen.tng_minisim_physics`; the config key
``physics`` picks a variant: ``"A"`` (default, the relations below) or ``"B"`` (Behroozi et al.
2013 SHMR, Duffy et al. 2008 concentrations, radially anisotropic bulges with a Salpeter IMF,
stellar mass coupled to halo concentration; the sim-to-sim shift of the transfer studies). ``concentration_coupling``
overrides the variant's coupling of the log M* and log-concentration residuals at fixed M200.

- Dark halo: NFW (Navarro, Frenk & White 1997) of mass ``(1 - Omega_b/Omega_0) M200c`` within
  r200c, concentration from Dutton & Maccio (2014, NFW c200-M200 at the snapshot redshift; B:
  Duffy et al. 2008) with ``concentration_scatter_dex``. Host M200c are drawn from a power law
  dN/dlog10 M ~ M^-slope between ``log_m200_min`` and ``log_m200_max`` (slope 0.5 by default,
  flatter than the halo mass function's ~0.9, so more galaxies pass a stellar-mass cut). To keep
  particle counts small, DM particles (mass ``MassTable[1]``) sample the NFW only out to a truncation radius
  r_t = max(``dm_truncation_min_kpc``, ``dm_truncation_rhalf`` x the analytic 3D stellar half-mass
  radius), at most r200 (or the satellite's tidal radius). ``SubhaloMassType[1]`` (and
  ``SubhaloMass``, ``SubhaloHalfmassRadType[1]``) hold the FULL analytic DM mass (centrals: within
  r200; satellites: within the Jacobi tidal radius, King 1962), while ``SubhaloLenType[1]`` counts
  the particles written; ``SubhaloMassInRadType`` / ``SubhaloMassInHalfRadType`` sum particles, as
  in TNG. Hot halo gas is not modelled.
- Satellites: M200 = host M200 x a ratio log-uniform in [``satellite_mass_ratio_min``,
  ``satellite_mass_ratio_max``], at least 10^(``log_m200_min`` - 0.5) Msun (hosts too light for
  that get none), at ``satellite_distance_min``-``satellite_distance_max`` r200 of the host,
  on a circular orbit.
- Stellar mass: Moster, Naab & White (2013) stellar-to-halo-mass relation (z-dependent; B:
  Behroozi, Wechsler & Conroy 2013) with ``shmr_scatter_dex`` (B: correlated with the
  concentration's scatter); satellites use their (infall) M200. Split into a Hernquist (1990) bulge
  (truncated at ``hernquist_truncation`` scale radii; half-mass size from the Shen et al. 2003
  early-type mass-size relation, R_e = 1.8153 a) and an exponential disk with sech^2 vertical
  profile (z_d = ``disk_height_ratio`` R_d). Bulge fraction rises with stellar mass (logistic in
  log M*). Disk scale length from Mo, Mao & White (1998, eq. 28 with their f_c and f_R fits), spin
  lambda lognormal (median ``spin_median``, Bullock et al. 2001) and
  j_d / m_d = ``disk_angular_momentum_retention`` x (1 - ``retention_bulge_slope`` x B/T):
  bulge-dominated galaxies keep less of the halo's specific angular momentum (Romanowsky & Fall
  2012); with the defaults (1, 0.8) the disks follow the Shen et al. (2003) late-type
  size-mass relation to ~30 %. Each disk has a random orientation (uniform on the sphere), so
  box-axis projections give all inclinations.
- Velocities: circular speed v_c^2 = G M(<r) / r of all components (NFW, Hernquist, and the
  disks' cylindrically enclosed masses). Disk stars: vertical dispersion of an isothermal sheet
  sigma_z^2 = pi G Sigma(R) z_d, sigma_R = sigma_z / ``sigma_z_over_sigma_r``,
  sigma_phi^2 / sigma_R^2 = kappa^2 / (4 Omega^2), mean rotation from the asymmetric-drift
  equation (Binney & Tremaine 2008, eq. 4.228). Bulge and DM: Gaussian velocities with the
  isotropic Jeans dispersion in the total potential (numerical integral; B: bulges of constant
  anisotropy beta = 0.3). Gas: circular rotation with ``gas_sigma_kms`` dispersion. The subhalo's
  bulk velocity is added (centrals: Gaussian, ``bulk_velocity_sigma_kms`` per axis; satellites:
  host velocity + circular orbital velocity).
- Star formation: SFR from the Speagle et al. (2014) main sequence (0.3 dex scatter), a quenched
  fraction rising with mass (SFR 1.5 dex lower); cold gas M_gas = SFR x ``depletion_time_gyr``
  in an exponential gas disk (R_gas = ``gas_scale_ratio`` R_d) whose particles carry
  StarFormationRate ~ Sigma_gas^0.4 (Kennicutt 1998 law per unit mass), summing to
  ``SubhaloSFR``. Disk stars follow a history psi ~ t exp(-k t) (delayed-tau, or rising for
  k <= 0) whose k is chosen so that the mass formed in the last Gyr equals SFR x 1 Gyr (SFRs
  above what the steepest tabulated history allows are capped); bulge stars form early (delayed
  tau of 0.2-0.8 Gyr). Current masses follow the Leitner & Kravtsov (2011) mass-loss law for a
  Chabrier IMF, f_ml = 0.046 ln(age / 0.276 Myr + 1), so ``GFM_InitialMass`` >= ``Masses`` and
  the bulge and disk particles sum to the model masses exactly (particle masses vary with age and
  from galaxy to galaxy, as in TNG).
- Metallicity: a Gallazzi et al. (2005)-like stellar mass-metallicity relation; bulge stars
  +0.1 dex, disk stars older -> poorer and a -0.05 dex/R_d gradient, 0.12-0.15 dex scatter.
  ``GFM_Metallicity`` is the mass fraction (Z_sun = 0.0127).
- Photometry: ``GFM_StellarPhotometrics`` (U, B, V, K Vega; g, r, i, z AB absolute magnitudes)
  from :func:`ssp_log_mass_to_light`, a power law in age and metallicity per band roughly matching
  Bruzual & Charlot (2003) Chabrier SSPs (10 Gyr solar: M/L_r = 2.5, g - r = 0.77; 1 Gyr: g - r ~
  0.44), with solar absolute magnitudes of Willmer (2018). B: bulge particles have a Salpeter
  IMF, 0.24 dex more mass per unit light (same colours).
- Wind particles (``wind_fraction`` of the star count in galaxies with gas) are type 4 with
  ``GFM_StellarFormationTime`` = -(launch scale factor) <= 0, placed above and below the gas disk
  and moving outwards at 200-600 km/s; their photometric magnitudes are +99 (no light).
  ``SubhaloMassType[4]`` counts them, as in TNG.

Positions are uniform in the periodic box; ``edge_fraction`` of the groups sit within half a
truncation radius of a box face so their particles wrap around (all coordinates in [0, BoxSize)).
Deterministic for a given config: population draws and each galaxy's draws have their own seeded
streams. Cosmic time <-> scale factor through astropy's FlatLambdaCDM(100 h, Omega0, OmegaBaryon).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import astropy.units as u
import h5py
import numpy as np

from sim2obs.errors import ConfigError, Sim2obsValueError
from sim2obs.provenance import package_versions, stable_hash
from sim2obs.simgen.particle_maps import PHOTOMETRIC_BANDS, SOLAR_ABS_MAG
from sim2obs.simgen.tng_minisim_physics import (
    G_KPC_KMS2_PER_MSUN, PHYSICS_VARIANTS, Z_SUN, GalaxyPhysics, anisotropic_velocities, coupled_noise,
    galaxy_physics, jeans_sigma, light_mass, mass_loss_fraction, mean_bulge_fraction, mean_log_metallicity,
    mmw98_scale_length, speagle14_log_sfr, ssp_log_mass_to_light, ssp_magnitudes)

GENERATOR_VERSION = "1.0"
MARKER_NAME = "minisim.json"
TRUTH_NAME = "minisim_truth.h5"
WIND_MAGNITUDE = 99.0
_STREAM_POPULATION, _STREAM_GALAXY, _STREAM_IDS = 0, 1, 2
_KPC_KMS2_PER_MSUN = G_KPC_KMS2_PER_MSUN  # gravitational constant, kpc (km/s)^2 / Msun
_MAX_PARTICLES = 60_000_000
_Z_FORMATION_START = 15.0  # star formation starts at this redshift


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------
@dataclass
class MiniSimConfig:
    """Settings of the mini-simulation. Masses log10 Msun (physical, no h), sizes kpc unless
    said; ``box_size`` ckpc/h; ``dm_particle_mass`` 1e10 Msun/h (``MassTable[1]``; TNG100-1:
    5.06e-4). ``n_galaxies`` counts subhalos (centrals and satellites)."""

    n_galaxies: int = 300                     # subhalos: centrals + satellites
    seed: int = 20240
    snapshot: int = 99
    redshift: float = 0.0
    h: float = 0.6774                         # TNG (Planck 2015) cosmology
    Omega0: float = 0.3089
    OmegaBaryon: float = 0.0486
    box_size: float = 75000.0                 # ckpc/h (TNG100)
    n_groupcat_chunks: int = 3
    n_snapshot_chunks: int = 4
    log_m200_min: float = 11.0                # host M200c range, log10 Msun
    log_m200_max: float = 13.3
    mass_function_slope: float = 0.5          # dN/dlog10 M ~ M^-slope
    concentration_scatter_dex: float = 0.11
    shmr_scatter_dex: float = 0.15            # stellar mass at fixed M200
    spin_median: float = 0.035                # lognormal halo spin lambda
    spin_scatter_ln: float = 0.5
    disk_angular_momentum_retention: float = 1.0   # j_d / m_d of a pure disk
    retention_bulge_slope: float = 0.8             # j_d / m_d falls as 1 - slope x B/T
    disk_height_ratio: float = 0.12           # sech^2 scale height z_d / R_d
    bulge_size_scatter_dex: float = 0.1
    hernquist_truncation: float = 50.0        # bulge truncation, Hernquist scale radii
    sigma_z_over_sigma_r: float = 0.6         # disk velocity ellipsoid
    gas_scale_ratio: float = 1.7              # R_gas / R_d
    gas_height_ratio: float = 0.5             # z_gas / z_d
    gas_sigma_kms: float = 10.0
    quenching_log_mstar: float = 10.6         # half the galaxies quenched here (log10 Msun)
    depletion_time_gyr: float = 2.0           # M_gas = SFR x depletion time
    star_particles_min: int = 1000            # per galaxy, rising with log M* (bulge + disk)
    star_particles_max: int = 4000
    gas_particles_max: int = 800
    dm_particle_mass: float = 1.0e-3          # MassTable[1], 1e10 Msun/h (~2x TNG100-1)
    dm_truncation_min_kpc: float = 20.0       # DM particles out to max(this, ...
    dm_truncation_rhalf: float = 4.0          # ... this x the stellar half-mass radius)
    satellite_fraction: float = 0.25          # of groups able to hold one
    max_satellites: int = 2
    satellite_mass_ratio_min: float = 0.02    # M200_sat / M200_host
    satellite_mass_ratio_max: float = 0.3
    satellite_distance_min: float = 0.25      # from the host, r200 of the host
    satellite_distance_max: float = 0.8
    wind_fraction: float = 0.01               # wind particles per star particle (gas-rich galaxies)
    edge_fraction: float = 0.1                # groups placed across a box face
    bulk_velocity_sigma_kms: float = 250.0    # centrals' peculiar velocities, per axis
    physics: str = "A"                        # galaxy-formation physics "A" | "B" (tng_minisim_physics)
    concentration_coupling: Optional[float] = None  # corr. of log M* and log c residuals at fixed M200
                                                     # in [-1, 1]; null: the physics variant's (A 0, B 0.5)


def _check(ok: bool, key: str, message: str, value: Any, prefix: str) -> None:
    if not ok:
        raise ConfigError(f"{prefix}.{key}", message, value=value)


def validate_minisim_config(cfg: MiniSimConfig, prefix: str = "minisim") -> None:
    """Raise :class:`ConfigError` naming the key for any value the generator cannot use."""
    def finite(key):
        v = getattr(cfg, key)
        _check(isinstance(v, (int, float)) and math.isfinite(v), key, "must be a finite number", v, prefix)
        return v

    def positive(key, allow_zero=False):
        v = finite(key)
        _check(v > 0 or (allow_zero and v == 0), key, "must be " + ("non-negative" if allow_zero else "positive"),
               v, prefix)

    def fraction(key, upper_open=False):
        v = finite(key)
        _check(0 <= v < 1 if upper_open else 0 <= v <= 1, key, "must lie in [0, 1" + (")" if upper_open else "]"),
               v, prefix)

    for key in ("n_galaxies", "n_groupcat_chunks", "n_snapshot_chunks", "star_particles_min", "max_satellites"):
        _check(getattr(cfg, key) >= 1, key, "must be at least 1", getattr(cfg, key), prefix)
    _check(cfg.star_particles_min >= 10, "star_particles_min", "galaxies need at least 10 star particles",
           cfg.star_particles_min, prefix)
    _check(cfg.star_particles_max >= cfg.star_particles_min, "star_particles_max",
           "must be at least star_particles_min", cfg.star_particles_max, prefix)
    _check(cfg.gas_particles_max >= 0, "gas_particles_max", "must be non-negative", cfg.gas_particles_max, prefix)
    _check(0 <= cfg.snapshot <= 999, "snapshot", "must lie in [0, 999]", cfg.snapshot, prefix)
    _check(0 <= finite("redshift") <= 6, "redshift", "must lie in [0, 6]", cfg.redshift, prefix)
    _check(0.3 <= finite("h") <= 1.2, "h", "must lie in [0.3, 1.2]", cfg.h, prefix)
    _check(0.05 <= finite("Omega0") <= 1, "Omega0", "must lie in [0.05, 1]", cfg.Omega0, prefix)
    _check(0 < finite("OmegaBaryon") < cfg.Omega0, "OmegaBaryon", "must lie in (0, Omega0)", cfg.OmegaBaryon,
           prefix)
    positive("box_size")
    _check(cfg.box_size >= 1000, "box_size", "must be at least 1000 ckpc/h (one Mpc/h)", cfg.box_size, prefix)
    _check(9.5 <= finite("log_m200_min") <= 15, "log_m200_min", "must lie in [9.5, 15]", cfg.log_m200_min, prefix)
    _check(cfg.log_m200_min <= finite("log_m200_max") <= 15, "log_m200_max", "must lie in [log_m200_min, 15]",
           cfg.log_m200_max, prefix)
    finite("mass_function_slope")
    for key in ("concentration_scatter_dex", "shmr_scatter_dex", "spin_scatter_ln", "bulge_size_scatter_dex",
                "gas_sigma_kms", "bulk_velocity_sigma_kms"):
        positive(key, allow_zero=True)
    for key in ("spin_median", "disk_angular_momentum_retention", "disk_height_ratio", "gas_scale_ratio",
                "gas_height_ratio", "depletion_time_gyr",
                "dm_particle_mass", "dm_truncation_min_kpc", "dm_truncation_rhalf"):
        positive(key)
    _check(0 <= finite("retention_bulge_slope") <= 1, "retention_bulge_slope", "must lie in [0, 1]",
           cfg.retention_bulge_slope, prefix)
    _check(cfg.spin_median < 0.3, "spin_median", "must lie in (0, 0.3)", cfg.spin_median, prefix)
    _check(cfg.disk_height_ratio <= 1, "disk_height_ratio", "must lie in (0, 1]", cfg.disk_height_ratio, prefix)
    _check(finite("hernquist_truncation") > 2.5, "hernquist_truncation",
           "must exceed 2.5 scale radii (the Hernquist half-mass radius is 2.41 a)", cfg.hernquist_truncation, prefix)
    _check(0 < finite("sigma_z_over_sigma_r") <= 1.5, "sigma_z_over_sigma_r", "must lie in (0, 1.5]",
           cfg.sigma_z_over_sigma_r, prefix)
    finite("quenching_log_mstar")
    _check(isinstance(cfg.physics, str) and cfg.physics in PHYSICS_VARIANTS, "physics",
           f"unknown galaxy-formation physics; one of {list(PHYSICS_VARIANTS)}", cfg.physics, prefix)
    if cfg.concentration_coupling is not None:
        _check(-1 <= finite("concentration_coupling") <= 1, "concentration_coupling",
               "must lie in [-1, 1] (or null: the physics variant's)", cfg.concentration_coupling, prefix)
    fraction("satellite_fraction")
    fraction("wind_fraction", upper_open=True)
    fraction("edge_fraction")
    _check(0 < finite("satellite_mass_ratio_min") <= finite("satellite_mass_ratio_max") < 1,
           "satellite_mass_ratio_min", "need 0 < satellite_mass_ratio_min <= satellite_mass_ratio_max < 1",
           (cfg.satellite_mass_ratio_min, cfg.satellite_mass_ratio_max), prefix)
    _check(0.05 <= finite("satellite_distance_min") <= finite("satellite_distance_max") <= 1.0,
           "satellite_distance_min", "need 0.05 <= satellite_distance_min <= satellite_distance_max <= 1 (r200)",
           (cfg.satellite_distance_min, cfg.satellite_distance_max), prefix)


def coerce_minisim_config(cfg: Any, prefix: str = "minisim") -> MiniSimConfig:
    """``cfg`` (None, a :class:`MiniSimConfig`, a mapping or an OmegaConf node) merged onto the
    defaults and validated. Unknown keys (typos), wrong types and bad values raise
    :class:`ConfigError` naming ``<prefix>.<key>``."""
    from sim2obs.config import coerce_dataclass

    obj = coerce_dataclass(MiniSimConfig, cfg, prefix)
    validate_minisim_config(obj, prefix)
    return obj


#: keys added after generator version 1.0, with the value that reproduces 1.0's files
_KEYS_SINCE_1_0 = {"physics": "A", "concentration_coupling": None}


def minisim_config_dict(cfg: MiniSimConfig) -> dict[str, Any]:
    """The config as a plain dict, leaving out the keys added after generator version 1.0
    (``physics``, ``concentration_coupling``) while they hold the value that reproduces 1.0's
    files: a physics-A mini-simulation keeps the hash, marker, truth file and (through
    :mod:`sim2obs.simgen.tng_mocks`) the set folder it had before those keys existed. Coerce
    the dict again to get the full config."""
    out = asdict(cfg)
    for key, legacy in _KEYS_SINCE_1_0.items():
        if out[key] == legacy:
            del out[key]
    return out


def physics_of(cfg: MiniSimConfig) -> GalaxyPhysics:
    """The galaxy-formation physics of ``cfg`` (its variant, with ``concentration_coupling``)."""
    return galaxy_physics(cfg.physics, cfg.concentration_coupling)


def config_hash(cfg: MiniSimConfig) -> str:
    """Hash of the config (:func:`minisim_config_dict`) and the generator version (what the
    marker records)."""
    return stable_hash({"config": minisim_config_dict(cfg), "generator_version": GENERATOR_VERSION})


# --------------------------------------------------------------------------------------------
# Cosmology and stellar populations
# --------------------------------------------------------------------------------------------
class _Cosmology:
    """The header's flat Lambda-CDM cosmology: scale factor, ages (Gyr), critical density."""

    def __init__(self, cfg: MiniSimConfig):
        from astropy.cosmology import FlatLambdaCDM

        self.astropy = FlatLambdaCDM(H0=100.0 * cfg.h, Om0=cfg.Omega0, Ob0=cfg.OmegaBaryon)
        self.h, self.z = cfg.h, cfg.redshift
        self.a = 1.0 / (1.0 + cfg.redshift)
        self.omega_lambda = 1.0 - cfg.Omega0
        self.baryon_fraction = cfg.OmegaBaryon / cfg.Omega0
        a_grid = np.geomspace(1.0 / (1.0 + 40.0), 1.0, 4096)
        self._log_a = np.log(a_grid)
        self._log_t = np.log(self.astropy.age(1.0 / a_grid - 1.0).to_value(u.Gyr))
        self.t_obs = float(self.astropy.age(cfg.redshift).to_value(u.Gyr))
        self.t_start = float(self.astropy.age(_Z_FORMATION_START).to_value(u.Gyr))
        self.rho_crit = float(self.astropy.critical_density(cfg.redshift).to_value(u.Msun / u.kpc ** 3))

    def scale_factor(self, t_gyr: np.ndarray) -> np.ndarray:
        """Scale factor at cosmic time ``t_gyr`` (Gyr)."""
        return np.exp(np.interp(np.log(np.maximum(t_gyr, 1e-4)), self._log_t, self._log_a))

    def age(self, scale_factor: np.ndarray) -> np.ndarray:
        """Cosmic time (Gyr) at ``scale_factor``."""
        return np.exp(np.interp(np.log(scale_factor), self._log_a, self._log_t))


# --------------------------------------------------------------------------------------------
# Analytic profiles (physical kpc, Msun)
# --------------------------------------------------------------------------------------------
def _nfw_mu(x):
    x = np.asarray(x, float)
    return np.log1p(x) - x / (1.0 + x)


def _hernquist_fraction(r, a):
    r = np.asarray(r, float)
    return (r / (r + a)) ** 2


_GL_X, _GL_W = np.polynomial.legendre.leggauss(24)


def _disk_spherical_mass(r, mass, r_d, z_d):
    """Mass (Msun) of an exponential (scale ``r_d``) sech^2 (``z_d``) disk within spheres of
    radius ``r`` (kpc): (M / R_d^2) int_0^r R exp(-R/R_d) tanh(sqrt(r^2 - R^2) / z_d) dR, by
    composite Gauss-Legendre in R = r sin(theta) over [0, theta_max], theta_max cutting the
    exp(-40) tail."""
    r = np.atleast_1d(np.asarray(r, float))
    if mass <= 0:
        return np.zeros_like(r)
    out = np.zeros_like(r)
    pos = r > 0
    rr = r[pos][:, None, None]
    theta_max = np.arcsin(np.minimum(1.0, 40.0 * r_d / rr))
    panels = 8
    edges = np.linspace(0.0, 1.0, panels + 1)
    lo, hi = edges[:-1][None, :, None], edges[1:][None, :, None]
    frac = lo + (hi - lo) * (_GL_X[None, None, :] + 1.0) / 2.0
    theta = theta_max * frac
    big_r = rr * np.sin(theta)
    height = rr * np.cos(theta)
    integrand = big_r * np.exp(-big_r / r_d) * np.tanh(height / z_d) * rr * np.cos(theta)
    weights = (theta_max * (hi - lo) / 2.0) * _GL_W[None, None, :]
    out[pos] = mass / r_d ** 2 * np.sum(integrand * weights, axis=(1, 2))
    return out


def _disk_cylindrical_mass(r, mass, r_d):
    """Mass (Msun) of an exponential disk within cylindrical radius ``r`` (kpc)."""
    x = np.asarray(r, float) / r_d
    return mass * (1.0 - (1.0 + x) * np.exp(-x))


def analytic_enclosed_mass(params: Mapping[str, Any], r_kpc, component: str = "total") -> np.ndarray:
    """Mass (Msun) within spheres of radius ``r_kpc`` (physical kpc) about the subhalo centre,
    of one component of a subhalo's model. ``params``: a truth row (:func:`truth_row`, or any
    mapping with the keys of :func:`read_truth`). ``component``:

    - ``dm``: the realised DM particles: N_dm m_dm x M_NFW(<min(r, r_t)) / M_NFW(<r_t);
    - ``dm_nfw``: the untruncated analytic NFW DM profile;
    - ``bulge`` (truncated Hernquist), ``disk`` (exponential x sech^2), ``stars`` (bulge + disk,
      wind particles excluded), ``gas`` (exponential x sech^2);
    - ``total``: dm + stars + gas.
    """
    r = np.asarray(r_kpc, float)
    p = {k: float(np.asarray(params[k]).ravel()[0]) for k in
         ("m_dm_particles_msun", "m200_dm_msun", "r_s_kpc", "r200_kpc", "r_trunc_kpc", "m_bulge_msun",
          "a_hernquist_kpc", "r_bulge_max_kpc", "m_disk_msun", "r_d_kpc", "z_d_kpc", "m_gas_msun",
          "r_gas_kpc", "z_gas_kpc")}
    if component == "dm":
        x_t = p["r_trunc_kpc"] / p["r_s_kpc"]
        return p["m_dm_particles_msun"] * _nfw_mu(np.minimum(r, p["r_trunc_kpc"]) / p["r_s_kpc"]) / _nfw_mu(x_t)
    if component == "dm_nfw":
        c = p["r200_kpc"] / p["r_s_kpc"]
        return p["m200_dm_msun"] * _nfw_mu(r / p["r_s_kpc"]) / _nfw_mu(c)
    if component == "bulge":
        if p["m_bulge_msun"] <= 0:
            return np.zeros_like(r)
        a, r_max = p["a_hernquist_kpc"], p["r_bulge_max_kpc"]
        return p["m_bulge_msun"] * _hernquist_fraction(np.minimum(r, r_max), a) / _hernquist_fraction(r_max, a)
    if component == "disk":
        return _disk_spherical_mass(r, p["m_disk_msun"], p["r_d_kpc"], p["z_d_kpc"]).reshape(r.shape)
    if component == "gas":
        return _disk_spherical_mass(r, p["m_gas_msun"], p["r_gas_kpc"], p["z_gas_kpc"]).reshape(r.shape)
    if component == "stars":
        return analytic_enclosed_mass(params, r, "bulge") + analytic_enclosed_mass(params, r, "disk")
    if component == "total":
        return sum(analytic_enclosed_mass(params, r, c) for c in ("dm", "stars", "gas"))
    raise Sim2obsValueError("unknown component", value=component,
                            allowed=["dm", "dm_nfw", "bulge", "disk", "stars", "gas", "total"])


# --------------------------------------------------------------------------------------------
# Population (vectorised over subhalos)
# --------------------------------------------------------------------------------------------
def _unit_vectors(rng, n):
    v = rng.normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


class _SFHTable:
    """Star formation histories psi(t) ~ (t - t0) exp(-k (t - t0)) from t_start to t_obs: delayed-tau
    (k = 1/tau > 0), linearly rising (k = 0) or exponentially rising (k < 0), tabulated on a grid
    of k with the mass formed in the last ``window`` Gyr per unit current mass, ``q``."""

    def __init__(self, cosmo: _Cosmology, window_gyr: float = 1.0):
        from scipy.integrate import trapezoid

        self.t = np.linspace(cosmo.t_start, cosmo.t_obs, 1025)
        self.k = np.concatenate([np.geomspace(50.0, 0.01, 200), [0.0], -np.geomspace(0.01, 5.0, 100)])
        self.window = min(window_gyr, cosmo.t_obs - cosmo.t_start)
        psi = self.psi(self.k[:, None])
        norm = trapezoid(psi, self.t, axis=1)
        recent = self.t >= cosmo.t_obs - self.window
        formed_recent = trapezoid(psi[:, recent], self.t[recent], axis=1) / norm
        remaining = trapezoid(psi * (1.0 - mass_loss_fraction(cosmo.t_obs - self.t)), self.t, axis=1) / norm
        self.q = np.maximum.accumulate(formed_recent / remaining)  # increases along the grid (k falling)
        self.q_max = float(self.q[-1])

    def psi(self, k):
        """Unnormalised history on the time grid (exponent shifted to stay <= 0)."""
        dt = self.t - self.t[0]
        return dt * np.exp(-k * dt + np.minimum(k, 0.0) * dt[-1])

    def k_for(self, recent_per_current_mass):
        """The k (1/Gyr) whose history forms ``recent_per_current_mass`` x current mass in the
        window (clipped to the table's range)."""
        return np.interp(recent_per_current_mass, self.q, self.k)

    def sample(self, rng, k, n):
        """``n`` formation times (Gyr) from the history ``k``."""
        psi = self.psi(k)
        cdf = np.concatenate([[0.0], np.cumsum((psi[1:] + psi[:-1]) / 2.0)])
        if not cdf[-1] > 0:  # history far narrower than the grid step: all at the start
            return np.full(n, self.t[0])
        return np.interp(rng.random(n) * cdf[-1], cdf, self.t)


def _draw_population(cfg: MiniSimConfig, cosmo: _Cosmology, sfh: _SFHTable) -> dict[str, np.ndarray]:
    """Analytic parameters of every subhalo (generation order: group by group, central first),
    physical units."""
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, _STREAM_POPULATION]))
    # --- host masses (M200c, total matter, Msun): a power law in log10 M
    lo, hi, s = cfg.log_m200_min, cfg.log_m200_max, cfg.mass_function_slope
    uniform = rng.random(cfg.n_galaxies)
    if abs(s) < 1e-9:
        log_m_host = lo + uniform * (hi - lo)
    else:
        log_m_host = -np.log10(10 ** (-s * lo) - uniform * (10 ** (-s * lo) - 10 ** (-s * hi))) / s
    # --- groups and satellites: hosts able to hold a satellite above the floor get one with
    # probability satellite_fraction (1..max_satellites of them)
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
    n = group.size
    host = np.flatnonzero(central)[group]  # index of each subhalo's central
    log_m200 = log_m_host[:n_groups][group]
    ratio_lo = np.maximum(np.log10(cfg.satellite_mass_ratio_min), sat_floor - log_m200)
    ratio = ratio_lo + rng.random(n) * (np.log10(cfg.satellite_mass_ratio_max) - ratio_lo)
    log_m200 = np.where(central, log_m200, log_m200 + ratio)
    m200 = 10 ** log_m200
    m200_dm = (1.0 - cosmo.baryon_fraction) * m200
    r200 = (3.0 * m200 / (4.0 * np.pi * 200.0 * cosmo.rho_crit)) ** (1.0 / 3.0)
    phys = physics_of(cfg)
    conc_noise = rng.normal(size=n)
    conc = phys.mean_concentration(m200, cfg.redshift, cfg.h) * 10 ** (cfg.concentration_scatter_dex * conc_noise)
    conc = np.clip(conc, 2.0, 40.0)
    r_s = r200 / conc
    # --- stellar mass (residual correlated with the concentration's by the physics' coupling)
    shmr_noise = coupled_noise(conc_noise, rng.normal(size=n), phys.concentration_coupling)
    log_mstar = np.log10(phys.mean_mstar(m200, cfg.redshift)) + cfg.shmr_scatter_dex * shmr_noise
    mstar = 10 ** log_mstar
    bt_mean = mean_bulge_fraction(log_mstar)
    bt = np.clip(bt_mean + 0.12 * rng.normal(size=n), 0.0, 0.95)
    frac = np.clip((log_mstar - 9.0) / 2.5, 0.0, 1.0)
    n_star = np.round(cfg.star_particles_min + (cfg.star_particles_max - cfg.star_particles_min) * frac).astype(int)
    n_bulge = np.round(n_star * bt).astype(int)
    n_disk = n_star - n_bulge
    bt = np.where(n_bulge == 0, 0.0, np.where(n_disk == 0, 1.0, bt))
    m_bulge, m_disk = bt * mstar, (1.0 - bt) * mstar
    # star formation (main sequence, quenched fraction rising with mass) and cold gas
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
    # sizes
    spin = cfg.spin_median * np.exp(cfg.spin_scatter_ln * rng.normal(size=n))
    spin = np.clip(spin, 0.008, 0.2)
    m_d_frac = np.clip((m_disk + m_gas) / m200, 1e-4, 0.15)
    j_over_m = cfg.disk_angular_momentum_retention * (1.0 - cfg.retention_bulge_slope * bt)
    r_d = np.clip(mmw98_scale_length(spin, r200, conc, m_d_frac, j_over_m), 0.3, 30.0)
    z_d = cfg.disk_height_ratio * r_d
    r_e_bulge = 2.88e-6 * np.maximum(m_bulge, 1e6) ** 0.56 * 10 ** (cfg.bulge_size_scatter_dex * rng.normal(size=n))
    a_hern = np.maximum(r_e_bulge, 0.15) / 1.8153
    r_bulge_max = cfg.hernquist_truncation * a_hern
    r_gas, z_gas = cfg.gas_scale_ratio * r_d, cfg.gas_height_ratio * z_d
    # 3D stellar half-mass radius of the model
    r_half = np.empty(n)
    for i in range(n):
        grid = np.geomspace(1e-3, 20.0 * max(r_d[i], a_hern[i]) + 50.0, 300)
        m_enc = _disk_spherical_mass(grid, m_disk[i], r_d[i], z_d[i])
        if m_bulge[i] > 0:
            m_enc += m_bulge[i] * _hernquist_fraction(np.minimum(grid, r_bulge_max[i]), a_hern[i]) / \
                _hernquist_fraction(r_bulge_max[i], a_hern[i])
        r_half[i] = np.exp(np.interp(0.5 * mstar[i], m_enc, np.log(grid)))
    # star formation histories
    k_disk = sfh.k_for(sfr * sfh.window * 1e9 / np.maximum(m_disk, 1.0))
    k_bulge = 1.0 / rng.uniform(0.2, 0.8, n)
    log_z = mean_log_metallicity(log_mstar) + 0.05 * rng.normal(size=n)
    # --- positions (physical kpc offsets for satellites), tidal radii, bulk velocities
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
        m_host = m200_dm[j] * _nfw_mu(d_sat[i] / r_s[j]) / _nfw_mu(conc[j]) + mstar[j] + m_gas[j]
        baryons = mstar[i] + m_gas[i]

        def jacobi(r):
            m_sat = m200_dm[i] * _nfw_mu(r / r_s[i]) / _nfw_mu(conc[i]) + baryons
            return r - d_sat[i] * (m_sat / (3.0 * m_host)) ** (1.0 / 3.0)

        if jacobi(r200[i]) < 0:
            r_tidal[i] = r200[i]
        else:
            from scipy.optimize import brentq

            r_tidal[i] = brentq(jacobi, 1e-4, r200[i], xtol=1e-6)
        v_circ = math.sqrt(_KPC_KMS2_PER_MSUN * m_host / d_sat[i])
        perp = orbit_dir[i] - np.dot(orbit_dir[i], direction[i]) * direction[i]
        perp /= np.linalg.norm(perp)
        vel[i] = vel[j] + v_circ * perp
    m_dm_analytic = m200_dm * _nfw_mu(r_tidal / r_s) / _nfw_mu(conc)
    r_trunc = np.minimum(np.maximum(cfg.dm_truncation_min_kpc, cfg.dm_truncation_rhalf * r_half), r_tidal)
    m_dm_part = cfg.dm_particle_mass * 1e10 / h
    n_dm = np.round(m200_dm * _nfw_mu(r_trunc / r_s) / _nfw_mu(conc) / m_dm_part).astype(int)
    # groups near a box face: their particles wrap around
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
    n_particles = int(n_dm.sum() + n_star.sum() + n_gas.sum() + n_wind.sum())
    if n_particles > _MAX_PARTICLES:
        raise ConfigError("minisim.dm_particle_mass", f"this config would write {n_particles} particles "
                          f"(limit {_MAX_PARTICLES}); raise dm_particle_mass or lower the particle counts",
                          value=cfg.dm_particle_mass)
    return dict(
        group=group, central=central, host=host, m200_msun=m200, m200_dm_msun=m200_dm, r200_kpc=r200,
        concentration=conc, r_s_kpc=r_s, r_tidal_kpc=r_tidal, r_trunc_kpc=r_trunc,
        m_dm_analytic_msun=m_dm_analytic, n_dm=n_dm, m_dm_particles_msun=n_dm * m_dm_part,
        log_mstar=log_mstar, m_star_msun=mstar, bulge_fraction=bt, m_bulge_msun=m_bulge, a_hernquist_kpc=a_hern,
        r_bulge_max_kpc=r_bulge_max, m_disk_msun=m_disk, r_d_kpc=r_d, z_d_kpc=z_d, spin_lambda=spin,
        m_gas_msun=m_gas, r_gas_kpc=r_gas, z_gas_kpc=z_gas, sfr_msun_yr=sfr, quenched=quenched,
        sfh_k_disk_per_gyr=k_disk, sfh_k_bulge_per_gyr=k_bulge, log_z_mean=log_z, r_half_kpc=r_half,
        n_bulge=n_bulge, n_disk=n_disk, n_gas=n_gas, n_wind=n_wind, pos_ckpc_h=pos, vel_kms=vel,
        satellite_distance_kpc=np.where(central, 0.0, d_sat),
    )


# --------------------------------------------------------------------------------------------
# One galaxy's particles (physical kpc, km/s, Msun; relative to the centre, box frame)
# --------------------------------------------------------------------------------------------
def _random_rotation(rng) -> np.ndarray:
    from scipy.spatial.transform import Rotation

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


def _realise_galaxy(p: dict, i: int, cfg: MiniSimConfig, cosmo: _Cosmology, sfh: _SFHTable) -> dict:
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, _STREAM_GALAXY, i]))
    g = _KPC_KMS2_PER_MSUN
    m200_dm, r_s, c = p["m200_dm_msun"][i], p["r_s_kpc"][i], p["concentration"][i]
    m_b, a_h, r_bmax = p["m_bulge_msun"][i], p["a_hernquist_kpc"][i], p["r_bulge_max_kpc"][i]
    m_d, r_d, z_d = p["m_disk_msun"][i], p["r_d_kpc"][i], p["z_d_kpc"][i]
    m_g, r_g, z_g = p["m_gas_msun"][i], p["r_gas_kpc"][i], p["z_gas_kpc"][i]
    # potential: enclosed masses on a radial grid
    grid = np.geomspace(1e-3, 100.0 * p["r200_kpc"][i], 600)
    m_nfw = m200_dm * _nfw_mu(grid / r_s) / _nfw_mu(c)
    m_tot = m_nfw + m_b * _hernquist_fraction(grid, a_h) + _disk_cylindrical_mass(grid, m_d, r_d) + \
        _disk_cylindrical_mass(grid, m_g, r_g)
    vc2 = g * m_tot / grid
    dlnv_dlnr = np.gradient(0.5 * np.log(vc2), np.log(grid))
    ln_grid = np.log(grid)

    def at(values, r):
        return np.interp(np.log(np.maximum(r, grid[0])), ln_grid, values)

    out: dict[str, dict[str, np.ndarray]] = {}
    # --- dark matter: truncated NFW by inverse CDF (interpolated in log-log)
    n_dm = int(p["n_dm"][i])
    x_t = p["r_trunc_kpc"][i] / r_s
    x_grid = np.geomspace(1e-6 * x_t, x_t, 2000)
    mu_grid = _nfw_mu(x_grid)
    y = rng.random(n_dm) * _nfw_mu(x_t)
    x = np.exp(np.interp(np.log(np.maximum(y, mu_grid[0])), np.log(mu_grid), np.log(x_grid)))
    r_dm = x * r_s
    rho_nfw = 1.0 / ((grid / r_s) * (1.0 + grid / r_s) ** 2)
    sigma_dm = at(jeans_sigma(grid, rho_nfw, m_tot), r_dm)
    vel_dm = rng.normal(size=(n_dm, 3)) * sigma_dm[:, None]
    if n_dm:
        vel_dm -= vel_dm.mean(axis=0)  # exact systemic velocity
    out["dm"] = {"pos": _isotropic(rng, r_dm), "vel": vel_dm}
    # --- stars: bulge (Hernquist, isotropic) and disk (rotating)
    rot = _random_rotation(rng)
    n_b, n_d = int(p["n_bulge"][i]), int(p["n_disk"][i])
    s = np.sqrt(rng.random(n_b) * _hernquist_fraction(r_bmax, a_h))
    r_b = a_h * s / (1.0 - s)
    rho_h = 1.0 / ((grid / a_h) * (1.0 + grid / a_h) ** 3)
    beta_b = physics_of(cfg).bulge_beta
    sigma_b = at(jeans_sigma(grid, rho_h, m_tot, beta_b), r_b)  # sigma_r
    pos_b, vel_b = _isotropic(rng, r_b), rng.normal(size=(n_b, 3))
    vel_b = vel_b * sigma_b[:, None] if beta_b == 0 else anisotropic_velocities(pos_b, vel_b, sigma_b, beta_b)
    big_r, phi, z = _disk_sample(rng, n_d, r_d, z_d)
    surface = m_d / (2 * np.pi * r_d ** 2) * np.exp(-big_r / r_d) + \
        (m_g / (2 * np.pi * r_g ** 2) * np.exp(-big_r / r_g) if m_g > 0 else 0.0)
    sigma_z = np.sqrt(np.pi * g * surface * z_d)
    sigma_r = sigma_z / cfg.sigma_z_over_sigma_r
    phi_ratio2 = np.clip(0.5 * (1.0 + at(dlnv_dlnr, big_r)), 0.05, 1.0)  # kappa^2 / (4 Omega^2)
    vc2_d = at(vc2, big_r)
    v_phi_mean = np.sqrt(np.maximum(vc2_d - sigma_r ** 2 * (phi_ratio2 - 1.0 + 2.0 * big_r / r_d), 0.0))
    pos_d, vel_d = _cylindrical_to_cartesian(
        big_r, phi, z, sigma_r * rng.normal(size=n_d), v_phi_mean + sigma_r * np.sqrt(phi_ratio2) *
        rng.normal(size=n_d), sigma_z * rng.normal(size=n_d))
    # ages, metallicities, masses
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
    # --- gas disk and winds
    n_g, n_w = int(p["n_gas"][i]), int(p["n_wind"][i])
    big_r, phi, z = _disk_sample(rng, n_g, r_g, z_g)
    sig = cfg.gas_sigma_kms
    pos_g, vel_g = _cylindrical_to_cartesian(big_r, phi, z, sig * rng.normal(size=n_g),
                                             np.sqrt(at(vc2, big_r)) + sig * rng.normal(size=n_g),
                                             sig * rng.normal(size=n_g))
    if n_g:
        vel_g -= vel_g.mean(axis=0)
    weight = np.exp(-0.4 * big_r / r_g)  # Kennicutt-Schmidt: SFR per unit mass ~ Sigma_gas^0.4
    gas = {"pos": pos_g @ rot.T, "vel": vel_g @ rot.T, "mass": np.full(n_g, m_g / max(n_g, 1)),
           "sfr": p["sfr_msun_yr"][i] * weight / weight.sum() if n_g else np.zeros(0)}
    w_r = rng.exponential(r_g, n_w)
    w_phi = rng.uniform(0, 2 * np.pi, n_w)
    w_sign = np.where(rng.random(n_w) < 0.5, -1.0, 1.0)
    w_z = w_sign * rng.uniform(0.5, 5.0, n_w)
    speed = rng.uniform(200.0, 600.0, n_w)
    w_pos = np.stack([w_r * np.cos(w_phi), w_r * np.sin(w_phi), w_z], axis=1)
    w_vel = speed[:, None] * w_pos / np.linalg.norm(w_pos, axis=1, keepdims=True)
    launch = cosmo.scale_factor(cosmo.t_obs - rng.uniform(0.0, 0.05, n_w))
    wind_mass = m_g / max(n_g, 1) * 0.5
    wind = {"pos": w_pos @ rot.T, "vel": w_vel @ rot.T, "mass": np.full(n_w, wind_mass),
            "a_form": -launch, "metallicity": np.full(n_w, Z_SUN * 10 ** (zh_mean + 0.1))}
    out.update(stars=stars, gas=gas, wind=wind, spin_axis=rot[:, 2], vc2=(grid, vc2))
    return out


# --------------------------------------------------------------------------------------------
# Catalogue quantities from particles
# --------------------------------------------------------------------------------------------
def _half_mass_radius(r, m):
    if r.size == 0:
        return 0.0
    order = np.argsort(r)
    cum = np.cumsum(m[order])
    return float(np.interp(0.5 * cum[-1], cum, r[order]))


def _nfw_half_mass_radius(mass_within, r_out, r_s):
    x = np.geomspace(1e-5, r_out / r_s, 2000)
    return float(np.interp(0.5 * _nfw_mu(r_out / r_s), _nfw_mu(x), x) * r_s) if mass_within > 0 else 0.0


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------
def _type4_boundaries(n_total: int, starts: np.ndarray, lengths: np.ndarray, n_chunks: int) -> np.ndarray:
    """Chunk boundaries of the star array; one falling on a subhalo's first particle is moved
    into that subhalo, so subhalos span chunk boundaries as in real TNG output."""
    b = np.round(np.linspace(0, n_total, n_chunks + 1)).astype(np.int64)
    for j in range(1, n_chunks):
        k = np.searchsorted(starts, b[j], side="right") - 1
        if 0 <= k < starts.size and starts[k] == b[j] and lengths[k] >= 2:
            b[j] = starts[k] + lengths[k] // 2
    return np.maximum.accumulate(b)


def _header_common(cfg: MiniSimConfig, cosmo: _Cosmology) -> dict:
    return {
        "BoxSize": float(cfg.box_size), "HubbleParam": float(cfg.h), "Omega0": float(cfg.Omega0),
        "OmegaLambda": float(cosmo.omega_lambda), "OmegaBaryon": float(cfg.OmegaBaryon),
        "Redshift": float(cfg.redshift), "Time": float(cosmo.a),
    }


def _set_attrs(obj, attrs: dict) -> None:
    for k, v in attrs.items():
        obj.attrs[k] = v


def _build(cfg: MiniSimConfig, root: Path) -> dict:
    """Write the whole mini-simulation under ``root`` (a fresh directory); return counts."""
    t0 = time.perf_counter()
    cosmo = _Cosmology(cfg)
    sfh = _SFHTable(cosmo)
    pop = _draw_population(cfg, cosmo, sfh)
    n_sub = pop["group"].size
    gals = [_realise_galaxy(pop, i, cfg, cosmo, sfh) for i in range(n_sub)]
    h, a, box = cfg.h, cosmo.a, cfg.box_size
    kpc_to_code, msun_to_code, sqrt_a = h / a, h / 1e10, math.sqrt(a)
    m_dm_part = cfg.dm_particle_mass * 1e10 / h

    # --- final ordering: groups by total particle count (descending), centrals first
    len_sub = np.array([pop["n_dm"][i] + gals[i]["stars"]["mass"].size + gals[i]["gas"]["mass"].size +
                        gals[i]["wind"]["mass"].size for i in range(n_sub)])
    n_groups = int(pop["group"].max()) + 1
    group_len = np.bincount(pop["group"], weights=len_sub, minlength=n_groups)
    group_order = np.lexsort((np.arange(n_groups), -group_len))
    new_group = np.empty(n_groups, int)
    new_group[group_order] = np.arange(n_groups)
    order = np.lexsort((np.arange(n_sub), -len_sub, ~pop["central"], new_group[pop["group"]]))
    grnr = new_group[pop["group"]][order]

    # --- per-subhalo particle arrays in final order (code units)
    a_max32 = np.float32(a) if float(np.float32(a)) <= a else np.nextafter(np.float32(a), np.float32(0))  # <= Time
    types = {0: [], 1: [], 4: []}
    cat = {k: [] for k in ("len_type", "mass_type", "hmr_type", "mir_type", "mihr_type", "sfr", "phot", "zstar",
                           "cm", "vmax", "vmax_rad", "spin_axis")}
    for i in order:
        gal, centre, vbulk = gals[i], pop["pos_ckpc_h"][i], pop["vel_kms"][i]

        def to_code(rel_pos, vel):
            x = np.mod(centre + rel_pos * kpc_to_code, box)
            x[x >= box] -= box
            return x, ((vel + vbulk) / sqrt_a).astype(np.float32)

        st, wi, ga, dm = gal["stars"], gal["wind"], gal["gas"], gal["dm"]
        # stars and winds, shuffled together within the subhalo
        s_pos = np.concatenate([st["pos"], wi["pos"]])
        s_vel = np.concatenate([st["vel"], wi["vel"]])
        s_mass = np.concatenate([st["mass"], wi["mass"]])
        shuffle = np.random.default_rng(np.random.SeedSequence([cfg.seed, _STREAM_IDS, int(i)])).permutation(
            s_mass.size)
        x, v = to_code(s_pos[shuffle], s_vel[shuffle])
        mags = np.concatenate([st["mags"], np.full((wi["mass"].size, 8), WIND_MAGNITUDE)])
        types[4].append({
            "Coordinates": x, "Velocities": v, "Masses": (s_mass[shuffle] * msun_to_code).astype(np.float32),
            "GFM_StellarFormationTime": np.minimum(np.concatenate([st["a_form"], wi["a_form"]])[shuffle],
                                                   a_max32).astype(np.float32),
            "GFM_Metallicity": np.concatenate([st["metallicity"], wi["metallicity"]])[shuffle].astype(np.float32),
            "GFM_InitialMass": (np.concatenate([st["init"], wi["mass"]])[shuffle] * msun_to_code).astype(np.float32),
            "GFM_StellarPhotometrics": mags[shuffle].astype(np.float32),
        })
        x, v = to_code(dm["pos"], dm["vel"])
        types[1].append({"Coordinates": x, "Velocities": v})
        x, v = to_code(ga["pos"], ga["vel"])
        types[0].append({"Coordinates": x, "Velocities": v, "Masses": (ga["mass"] * msun_to_code).astype(np.float32),
                         "StarFormationRate": ga["sfr"].astype(np.float32)})
        # catalogue quantities (physical, then code units)
        r4 = np.linalg.norm(s_pos, axis=1)
        r_half = _half_mass_radius(r4, s_mass)
        r0, r1 = np.linalg.norm(ga["pos"], axis=1), np.linalg.norm(dm["pos"], axis=1)
        m0, m1 = ga["mass"], np.full(r1.size, m_dm_part)
        len_type = np.zeros(6, np.int64)
        len_type[[0, 1, 4]] = [r0.size, r1.size, r4.size]
        mass_type = np.zeros(6)
        mass_type[[0, 1, 4]] = [m0.sum(), pop["m_dm_analytic_msun"][i], s_mass.sum()]
        hmr = np.zeros(6)
        r_out = pop["r_tidal_kpc"][i]
        hmr[[0, 1, 4]] = [_half_mass_radius(r0, m0),
                          _nfw_half_mass_radius(mass_type[1], r_out, pop["r_s_kpc"][i]), r_half]
        mir, mihr = np.zeros(6), np.zeros(6)
        for k, (rr, mm) in zip((0, 1, 4), ((r0, m0), (r1, m1), (r4, s_mass))):
            mir[k] = mm[rr < 2 * r_half].sum()
            mihr[k] = mm[rr < r_half].sum()
        lum = 10 ** (-0.4 * (st["mags"] - SOLAR_ABS_MAG))
        all_pos = np.concatenate([s_pos, ga["pos"], dm["pos"]])
        all_m = np.concatenate([s_mass, m0, m1])
        grid, vc2 = gal["vc2"]
        inside = grid <= r_out
        k_max = int(np.argmax(np.where(inside, vc2, 0.0)))
        cat["len_type"].append(len_type)
        cat["mass_type"].append(mass_type * msun_to_code)
        cat["hmr_type"].append(hmr * kpc_to_code)
        cat["mir_type"].append(mir * msun_to_code)
        cat["mihr_type"].append(mihr * msun_to_code)
        cat["sfr"].append(ga["sfr"].sum())
        cat["phot"].append(SOLAR_ABS_MAG - 2.5 * np.log10(lum.sum(axis=0)) if lum.size else np.full(8, WIND_MAGNITUDE))
        cat["zstar"].append(np.average(st["metallicity"], weights=st["mass"]) if st["mass"].size else 0.0)
        cat["cm"].append(np.mod(centre + np.average(all_pos, axis=0, weights=all_m) * kpc_to_code, box))
        cat["vmax"].append(math.sqrt(vc2[k_max]))
        cat["vmax_rad"].append(grid[k_max] * kpc_to_code)
        cat["spin_axis"].append(gal["spin_axis"])
    cat = {k: np.asarray(v) for k, v in cat.items()}
    len_type = cat["len_type"]

    # --- particle IDs (unique over all types), global arrays per type
    arrays = {k: {f: np.concatenate([d[f] for d in lst]) for f in lst[0]} for k, lst in types.items()}
    n_by_type = {k: arrays[k]["Coordinates"].shape[0] for k in arrays}
    ids = np.random.default_rng(np.random.SeedSequence([cfg.seed, _STREAM_IDS])).permutation(
        sum(n_by_type.values())).astype(np.uint64) + np.uint64(1)
    start = 0
    for k in (0, 1, 4):
        arrays[k]["ParticleIDs"] = ids[start:start + n_by_type[k]]
        start += n_by_type[k]

    # --- groups
    first_sub = np.searchsorted(grnr, np.arange(n_groups))
    nsubs = np.bincount(grnr, minlength=n_groups)
    group_len_type = np.zeros((n_groups, 6), np.int64)
    np.add.at(group_len_type, grnr, len_type)
    group_mass_type = np.zeros((n_groups, 6))
    np.add.at(group_mass_type, grnr, cat["mass_type"])
    sub_mass = cat["mass_type"].sum(axis=1)
    group_vel = np.zeros((n_groups, 3))
    np.add.at(group_vel, grnr, sub_mass[:, None] * pop["vel_kms"][order])
    group_vel /= group_mass_type.sum(axis=1)[:, None]
    central_gen = order[first_sub]  # generation index of each group's central
    group_sfr = np.bincount(grnr, weights=cat["sfr"], minlength=n_groups)

    # --- offsets of every subhalo / group in the snapshot, by type
    sub_offset = np.zeros((n_sub, 6), np.int64)
    sub_offset[1:] = np.cumsum(len_type, axis=0)[:-1]
    group_offset = sub_offset[first_sub]
    bounds = np.zeros((6, cfg.n_snapshot_chunks + 1), np.int64)
    for k in (0, 1):
        bounds[k] = np.round(np.linspace(0, n_by_type[k], cfg.n_snapshot_chunks + 1)).astype(np.int64)
    bounds[4] = _type4_boundaries(n_by_type[4], sub_offset[:, 4], len_type[:, 4], cfg.n_snapshot_chunks)

    common = _header_common(cfg, cosmo)
    mass_table = np.zeros(6)
    mass_table[1] = cfg.dm_particle_mass
    out = root / "output"
    snapdir = out / f"snapdir_{cfg.snapshot:03d}"
    snapdir.mkdir(parents=True)
    n_total = np.zeros(6, np.uint64)
    for k in n_by_type:
        n_total[k] = n_by_type[k]
    for c in range(cfg.n_snapshot_chunks):
        counts = (bounds[:, c + 1] - bounds[:, c]).astype(np.int32)
        with h5py.File(snapdir / f"snap_{cfg.snapshot:03d}.{c}.hdf5", "w") as f:
            hdr = f.create_group("Header")
            _set_attrs(hdr, common)
            _set_attrs(hdr, {
                "NumPart_ThisFile": counts, "NumPart_Total": (n_total & np.uint64(0xFFFFFFFF)).astype(np.uint32),
                "NumPart_Total_HighWord": (n_total >> np.uint64(32)).astype(np.uint32), "MassTable": mass_table,
                "NumFilesPerSnapshot": np.int32(cfg.n_snapshot_chunks), "Flag_Sfr": np.int32(1),
                "Flag_Cooling": np.int32(1), "Flag_StellarAge": np.int32(1), "Flag_Metals": np.int32(1),
                "Flag_Feedback": np.int32(1), "Flag_DoublePrecision": np.int32(1),
                "UnitLength_in_cm": 3.085678e21, "UnitMass_in_g": 1.989e43, "UnitVelocity_in_cm_per_s": 1e5,
            })
            for k in (0, 1, 4):
                if counts[k] == 0:
                    continue  # as in TNG: no group for an absent particle type
                grp = f.create_group(f"PartType{k}")
                for name, data in arrays[k].items():
                    grp.create_dataset(name, data=data[bounds[k, c]:bounds[k, c + 1]])

    # --- group catalogue chunks (groups split evenly, each group's subhalos with it)
    gdir = out / f"groups_{cfg.snapshot:03d}"
    gdir.mkdir(parents=True)
    g_bounds = np.round(np.linspace(0, n_groups, cfg.n_groupcat_chunks + 1)).astype(np.int64)
    s_bounds = np.concatenate([first_sub, [n_sub]])[g_bounds]
    f32 = np.float32

    def wrap32(x):
        x = np.asarray(x, f32)
        x[x >= box] = 0.0
        return x

    subhalo_fields = {
        "SubhaloPos": wrap32(pop["pos_ckpc_h"][order]), "SubhaloVel": pop["vel_kms"][order].astype(f32),
        "SubhaloCM": wrap32(cat["cm"]), "SubhaloMass": sub_mass.astype(f32),
        "SubhaloMassType": cat["mass_type"].astype(f32), "SubhaloLenType": len_type.astype(np.int32),
        "SubhaloLen": len_type.sum(axis=1).astype(np.int32), "SubhaloHalfmassRadType": cat["hmr_type"].astype(f32),
        "SubhaloMassInRadType": cat["mir_type"].astype(f32), "SubhaloMassInHalfRadType": cat["mihr_type"].astype(f32),
        "SubhaloSFR": cat["sfr"].astype(f32), "SubhaloGrNr": grnr.astype(np.int32),
        "SubhaloFlag": np.ones(n_sub, np.uint8), "SubhaloStellarPhotometrics": cat["phot"].astype(f32),
        "SubhaloStarMetallicity": cat["zstar"].astype(f32), "SubhaloVmax": cat["vmax"].astype(f32),
        "SubhaloVmaxRad": cat["vmax_rad"].astype(f32),
    }
    group_fields = {
        "GroupPos": wrap32(pop["pos_ckpc_h"][central_gen]), "GroupVel": (group_vel / a).astype(f32),
        "GroupMass": group_mass_type.sum(axis=1).astype(f32), "GroupMassType": group_mass_type.astype(f32),
        "GroupLenType": group_len_type.astype(np.int32), "GroupLen": group_len_type.sum(axis=1).astype(np.int32),
        "GroupFirstSub": np.where(nsubs > 0, first_sub, -1).astype(np.int32), "GroupNsubs": nsubs.astype(np.int32),
        "GroupSFR": group_sfr.astype(f32),
        "Group_M_Crit200": (pop["m200_msun"][central_gen] * msun_to_code).astype(f32),
        "Group_R_Crit200": (pop["r200_kpc"][central_gen] * kpc_to_code).astype(f32),
    }
    for c in range(cfg.n_groupcat_chunks):
        gs, ss = slice(g_bounds[c], g_bounds[c + 1]), slice(s_bounds[c], s_bounds[c + 1])
        with h5py.File(gdir / f"fof_subhalo_tab_{cfg.snapshot:03d}.{c}.hdf5", "w") as f:
            hdr = f.create_group("Header")
            _set_attrs(hdr, common)
            _set_attrs(hdr, {
                "Ngroups_ThisFile": np.int32(gs.stop - gs.start), "Ngroups_Total": np.int32(n_groups),
                "Nsubgroups_ThisFile": np.int32(ss.stop - ss.start), "Nsubgroups_Total": np.int32(n_sub),
                "Nids_ThisFile": np.int32(0), "Nids_Total": np.int32(0), "NumFiles": np.int32(cfg.n_groupcat_chunks),
                "FlagDoubleprecision": np.int32(0),
            })
            grp, sub = f.create_group("Group"), f.create_group("Subhalo")
            if gs.stop > gs.start:
                for name, data in group_fields.items():
                    grp.create_dataset(name, data=data[gs])
            if ss.stop > ss.start:
                for name, data in subhalo_fields.items():
                    sub.create_dataset(name, data=data[ss])

    # --- offsets
    odir = root / "postprocessing" / "offsets"
    odir.mkdir(parents=True)
    with h5py.File(odir / f"offsets_{cfg.snapshot:03d}.hdf5", "w") as f:
        f.create_dataset("FileOffsets/Group", data=g_bounds[:-1].astype(np.int64))
        f.create_dataset("FileOffsets/Subhalo", data=s_bounds[:-1].astype(np.int64))
        f.create_dataset("FileOffsets/SnapByType", data=bounds[:, :-1].T.astype(np.int64))
        f.create_dataset("Group/SnapByType", data=group_offset.astype(np.int64))
        f.create_dataset("Subhalo/SnapByType", data=sub_offset.astype(np.int64))

    # --- truth sidecar (physical units), indexed by subhalo ID
    truth_cols = {
        "subhalo_id": np.arange(n_sub), "group_id": grnr, "is_central": pop["central"][order].astype(np.int8),
        "spin_axis": cat["spin_axis"], "m_dm_particle_msun": np.full(n_sub, m_dm_part),
    }
    skip = {"group", "central", "host", "pos_ckpc_h", "vel_kms"}
    truth_cols.update({k: v[order] for k, v in pop.items() if k not in skip})
    truth_cols["host_subhalo_id"] = first_sub[grnr]
    truth_cols["center_ckpc_h"] = pop["pos_ckpc_h"][order]
    truth_cols["bulk_velocity_kms"] = pop["vel_kms"][order]
    with h5py.File(root / TRUTH_NAME, "w") as f:
        grp = f.create_group("subhalos")
        for k, v in truth_cols.items():
            grp.create_dataset(k, data=np.asarray(v))
        _set_attrs(f, {"config": json.dumps(minisim_config_dict(cfg), sort_keys=True), "scale_factor": cosmo.a,
                       "hubble": cfg.h, "t_obs_gyr": cosmo.t_obs, "generator_version": GENERATOR_VERSION,
                       "units": "physical kpc, Msun, km/s, Msun/yr, Gyr; center_ckpc_h in ckpc/h"})
    return {"n_groups": n_groups, "n_subhalos": n_sub, "n_gas": n_by_type[0], "n_dm": n_by_type[1],
            "n_stars": n_by_type[4], "seconds": round(time.perf_counter() - t0, 3)}


def _read_marker(root: Path) -> dict | None:
    try:
        return json.loads((root / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return None


def is_complete(root: str | os.PathLike, config: Any = None) -> bool:
    """Whether ``root`` holds a complete mini-simulation (of ``config``, if given)."""
    root = Path(root)
    marker = _read_marker(root)
    if marker is None or not all((root / p).is_file() for p in marker.get("files", [])):
        return False
    return config is None or marker.get("config_hash") == config_hash(coerce_minisim_config(config))


def write_minisim(config: Any, root: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write the mini-simulation of ``config`` (a :class:`MiniSimConfig`, mapping or OmegaConf
    node; validated first) under ``root`` and return its basePath ``root/'output'``.

    Atomic: built in a temporary sibling directory, then renamed into place, the marker
    (``minisim.json``, with the config hash) written last. If ``root`` already holds a complete
    mini-simulation of the same config it is returned as is. A ``root`` holding anything else
    (another config, foreign files) is replaced only with ``overwrite=True``."""
    cfg = coerce_minisim_config(config)
    root = Path(root)
    digest = config_hash(cfg)
    if not overwrite and is_complete(root) and _read_marker(root)["config_hash"] == digest:
        return root / "output"
    if root.exists() and not overwrite and any(root.iterdir()):
        raise Sim2obsValueError(f"{root} already holds something other than this mini-simulation; "
                                "pass overwrite=True to replace it", value=str(root))
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        counts = _build(cfg, tmp)
        files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
        marker = {"generator": "tng_minisim", "generator_version": GENERATOR_VERSION, "config_hash": digest,
                  "config": minisim_config_dict(cfg), "counts": counts, "files": files, "versions": package_versions(),
                  "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        (tmp / MARKER_NAME).write_text(json.dumps(marker, indent=1, sort_keys=True))
        if not overwrite and is_complete(root, cfg):  # another process finished it meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
            return root / "output"
        old = None
        if root.exists():
            old = root.parent / f".{root.name}.old-{uuid.uuid4().hex[:12]}"
            os.rename(root, old)
        try:
            os.rename(tmp, root)
        except OSError:
            if is_complete(root, cfg):  # another process finished the same mini-simulation first
                shutil.rmtree(tmp, ignore_errors=True)
                return root / "output"
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root / "output"


# --------------------------------------------------------------------------------------------
# Truth sidecar
# --------------------------------------------------------------------------------------------
def read_truth(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The analytic model of every subhalo from ``minisim_truth.h5`` (``path``: that file, the
    mini-sim root or its basePath): arrays indexed by subhalo ID, physical units (kpc, Msun, km/s,
    Msun/yr). Keys include: ``group_id``, ``is_central``, ``host_subhalo_id``, ``m200_msun``
    (total M200c; satellites: at infall), ``m200_dm_msun``, ``r200_kpc``, ``concentration``,
    ``r_s_kpc``, ``r_tidal_kpc`` (r200 for centrals), ``r_trunc_kpc`` (DM particle truncation),
    ``m_dm_analytic_msun`` (= SubhaloMassType[1]), ``n_dm``, ``m_dm_particles_msun``,
    ``m_dm_particle_msun``, ``m_star_msun`` (bulge + disk, no winds), ``bulge_fraction``,
    ``m_bulge_msun``, ``a_hernquist_kpc``, ``r_bulge_max_kpc``, ``m_disk_msun``, ``r_d_kpc``,
    ``z_d_kpc``, ``spin_lambda``, ``spin_axis`` (n, 3; unit vector, box frame), ``m_gas_msun``,
    ``r_gas_kpc``, ``z_gas_kpc``, ``sfr_msun_yr``, ``quenched``, ``sfh_k_disk_per_gyr``,
    ``sfh_k_bulge_per_gyr``, ``log_z_mean`` ([Z/H], dex), ``r_half_kpc`` (3D stellar half-mass
    radius of the model), ``n_bulge``, ``n_disk``, ``n_gas``, ``n_wind``, ``center_ckpc_h``,
    ``bulk_velocity_kms``, ``satellite_distance_kpc``."""
    path = Path(path)
    if path.is_dir():
        path = path / TRUTH_NAME if (path / TRUTH_NAME).is_file() else path.parent / TRUTH_NAME
    with h5py.File(path, "r") as f:
        return {k: f["subhalos"][k][()] for k in f["subhalos"]}


def truth_row(truth: Mapping[str, np.ndarray], subhalo_id: int) -> dict[str, Any]:
    """One subhalo's parameters from :func:`read_truth`'s arrays."""
    return {k: v[int(subhalo_id)] for k, v in truth.items()}


__all__ = ["MiniSimConfig", "coerce_minisim_config", "validate_minisim_config", "config_hash", "minisim_config_dict",
           "physics_of", "PHYSICS_VARIANTS", "write_minisim",
           "is_complete", "read_truth", "truth_row", "analytic_enclosed_mass", "ssp_log_mass_to_light",
           "ssp_magnitudes", "mass_loss_fraction", "PHOTOMETRIC_BANDS", "SOLAR_ABS_MAG", "MARKER_NAME",
           "TRUTH_NAME"]
