"""Settings of the TNG-format mini-simulation (:mod:`sim2obs.simgen.tng_minisim`): the config
dataclass, its validation, its canonical dict and hash, and the generator's constants."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Optional

from sim2obs.config import coerce_dataclass
from sim2obs.errors import ConfigError
from sim2obs.provenance import stable_hash
from sim2obs.simgen.tng_minisim_physics import PHYSICS_VARIANTS, GalaxyPhysics, galaxy_physics

GENERATOR_VERSION = "1.1"  # 1.1: physics A couples M* to halo concentration (issue 15)
MARKER_NAME = "minisim.json"
TRUTH_NAME = "minisim_truth.h5"
WIND_MAGNITUDE = 99.0
_STREAM_POPULATION, _STREAM_GALAXY, _STREAM_IDS = 0, 1, 2
_MAX_PARTICLES = 60_000_000
_Z_FORMATION_START = 15.0  # star formation starts at this redshift


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
                                                     # in [-1, 1]; null: the physics variant's (A 0.5
                                                     # fading above M200 ~ 1e12 Msun, B 0.5)


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
    obj = coerce_dataclass(MiniSimConfig, cfg, prefix)
    validate_minisim_config(obj, prefix)
    return obj


#: keys left out of :func:`minisim_config_dict` while they hold a given value. Version 1.0 left
#: out ``physics: A`` and ``concentration_coupling: null`` (1.0's files); since 1.1 physics A's
#: files differ, so every key is written and the set folders of the default node move.
_KEYS_SINCE_1_0: dict[str, Any] = {}


def minisim_config_dict(cfg: MiniSimConfig) -> dict[str, Any]:
    """The config as a plain dict, every key (see :data:`_KEYS_SINCE_1_0`): what names the
    mini-simulation's folder, its hash and (through :mod:`sim2obs.simgen.tng_mocks`) the set
    folder. Coerce the dict again to get the full config."""
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
