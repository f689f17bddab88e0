"""GalSim bulge + disk mock galaxies in g, r, i (any of g, r, i, z), written as a galaxy set.

Each galaxy is a concentric elliptical Sersic bulge plus an inclined exponential disk (see
:mod:`sim2obs.simgen.population` for the physics and references), convolved with a per-object,
per-band PSF (Moffat or Kolmogorov; FWHM drawn around the SDSS g-band median of 1.4 arcsec and
scaled with wavelength^-0.2), drawn on ``stamp`` x ``stamp`` pixels of ``pixel_scale`` arcsec,
with sky and Poisson noise. Images are in nanomaggies per pixel, sky-subtracted like SDSS frames.
Observed-like nuisances (PSF spread, correlated noise, knots, free bulge Sersic index, neighbours
and stars, single-component galaxies, another M/L calibration) are switches documented in
:mod:`sim2obs.simgen.galsim_nuisances`, all off by default.

Determinism: every random draw is keyed on (seed, object index), never on the shard or the
worker, so the same seed gives the same bytes whatever the number of workers.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from sim2obs.errors import ConfigError
from sim2obs.galaxyset import ColumnSpec, GalaxySetSchema, GalaxySetWriter, StackSpec, assign_splits
from sim2obs.parallel import ClusterInBackground
from sim2obs.provenance import stable_hash
from sim2obs.simgen import galsim_nuisances as nuisances
from sim2obs.simgen.galsim_nuisances import RealismSection
from sim2obs.simgen.galsim_render import (_PURPOSE_CORRELATED_NOISE, _PURPOSE_KNOTS, _PURPOSE_NOISE, _STREAM_OBJECT,
                                          draw_smooth, galaxy_profile, one_galsim_thread, psf_profile,
                                          sky_level_nmgy, sky_sigma_nmgy)
from sim2obs.simgen.galsim_render import gsparams as _gsparams
from sim2obs.simgen.galsim_render import warm_worker as _warm_worker
from sim2obs.simgen.galsim_render import object_seed as _object_seed
from sim2obs.simgen.galsim_render import seed_sequence as _seed_sequence
from sim2obs.simgen.half_light import half_light_radius
from sim2obs.simgen.population import BAND_DATA, PopulationConfig, draw_population

GENERATOR_NAME = "galsim_bulge_disk"
# 1.1: images stored uncompressed by default; r_e solved by Newton. 1.2: nuisance switches (all off:
# the same data), star magnitudes from power-law number counts (was uniform in 14-20). 1.3: every band
# from one Fourier grid per galaxy, sized for the stamp (alias_tolerance; sim2obs.simgen.galsim_render).
GENERATOR_VERSION = "1.3"
_WORKER_MODULES = ("sim2obs.simgen.galsim_bulge_disk", "galsim")  # imported once by a local cluster's fork server
_POPULATION_BLOCK = 10_000  # population drawn in fixed blocks: independent of shard size
_STREAM_POPULATION, _STREAM_CONDITIONS, _STREAM_SECONDARY = 0, 1, 2  # _STREAM_OBJECT = 3: galsim_render
_STREAM_SERSIC, _STREAM_SECONDARY_SERSIC = 4, 5  # free bulge Sersic indices of the targets / neighbours


# --------------------------------------------------------------------------------------------
# Configuration (a Hydra structured config; YAML in configs/simgen/galsim.yaml)
# --------------------------------------------------------------------------------------------
@dataclass
class PopulationSection:
    """Population model knobs; see :mod:`sim2obs.simgen.population`."""

    z_min: float = 0.02
    z_max: float = 0.25
    log_mass_min: float = 8.5          # log10 Msun
    log_mass_max: float = 11.8
    mag_limit_r: float | None = 17.77  # SDSS main galaxy sample; null: no flux limit
    disk_thickness_q0: float = 0.15
    bulge_sersic_n: list[float] = field(default_factory=lambda: [3.0, 3.5, 4.0, 4.5, 5.0])
    bulge_fraction_model: str = "mass"  # mass | uniform
    bulge_fraction_min: float = 0.0    # bulge mass fraction range, within [0, 1]
    bulge_fraction_max: float = 1.0
    metallicity_random_scatter_dex: float = 0.054  # Curti et al. 2020 FMR scatter (incl. 0.03 dex measurement)
    ml_rel_err_min: float = 0.05
    single_component_fraction: float = 0.0  # bulge-only or disk-only galaxies, half each (GaMPEN: 0.25)
    d25_min_arcmin: float | None = None  # render only galaxies with D25 above this (arcmin; ml_ratio: 0.4)
    free_sersic: bool = False          # bulge n uniform in free_sersic_range instead of from bulge_sersic_n
    free_sersic_range: list[float] = field(default_factory=lambda: [1.0, 6.0])
    ml_calibration: str = "bell2003"   # bell2003 | chabrier (-0.093 dex mass labels; images unchanged)


@dataclass
class PsfSection:
    profile: str = "moffat"            # moffat | kolmogorov
    fwhm_g_median: float = 1.4         # arcsec, SDSS g-band median seeing
    fwhm_scatter_dex: float = 0.07     # log-normal seeing scatter
    moffat_beta: float = 3.5


@dataclass
class NoiseSection:
    enabled: bool = True
    # SDSS dark-sky surface brightness (mag/arcsec^2) and electrons per nanomaggy (typical frame
    # calibration: gain / nMgyPerCount). Configurable for other surveys.
    sky_mag_per_arcsec2: dict[str, float] = field(default_factory=lambda: {"g": 21.8, "r": 20.9, "i": 20.2, "z": 18.9})
    electrons_per_nanomaggy: dict[str, float] = field(default_factory=lambda: {"g": 920.0, "r": 900.0, "i": 750.0, "z": 160.0})
    read_noise_electrons: float = 5.0
    correlated: str = "none"           # none | cosmos (GalSim's COSMOS correlated noise; galsim_nuisances)
    correlated_fraction: float = 1.0   # share of the background variance that is correlated


@dataclass
class GalSimConfig:
    """Configuration of the bulge + disk generator. Sizes in pixels, scales in arcsec/px."""

    generator: str = "galsim"
    name: str = "galsim_bulge_disk"
    n: int = 2000
    stamp: int = 64
    pixel_scale: float = 0.396         # arcsec/px (SDSS); 0.168 for HSC
    bands: list[str] = field(default_factory=lambda: ["g", "r", "i"])
    seed: int = 20191
    shard_size: int = 500
    split: dict[str, float] = field(default_factory=lambda: {"train": 0.8, "val": 0.1, "test": 0.1})
    split_seed: int | None = None      # null: use seed
    folding_threshold: float = 1e-2    # GalSim GSParams of knots, neighbours and stars (drawn by drawImage)
    maxk_threshold: float = 1e-3       # GalSim GSParams (its default): how far out in k profiles are drawn
    alias_tolerance: float = 0.05      # light wrapped onto a stamp pixel by the FFT, at most, in sky sigma
    image_compression: int = 0         # gzip level of the stored images (0: none; noisy stamps gain ~12 %)
    population: PopulationSection = field(default_factory=PopulationSection)
    psf: PsfSection = field(default_factory=PsfSection)
    noise: NoiseSection = field(default_factory=NoiseSection)
    realism: RealismSection = field(default_factory=RealismSection)


def _positive(key: str, value: float, allow_zero: bool = False) -> None:
    if value is None or not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(key, "must be " + ("non-negative" if allow_zero else "positive"), value=value)


def validate_config(cfg: GalSimConfig) -> None:
    """Raise :class:`ConfigError` naming the key for any value the generator cannot use."""
    if cfg.generator != "galsim":
        raise ConfigError("simgen.generator", "this config is not for the GalSim generator", value=cfg.generator)
    _positive("simgen.n", cfg.n)
    _positive("simgen.stamp", cfg.stamp)
    if cfg.stamp < 8:
        raise ConfigError("simgen.stamp", "stamps smaller than 8 pixels cannot hold a galaxy", value=cfg.stamp)
    _positive("simgen.pixel_scale", cfg.pixel_scale)
    _positive("simgen.shard_size", cfg.shard_size)
    if not cfg.bands:
        raise ConfigError("simgen.bands", "at least one band is needed", value=list(cfg.bands))
    for b in cfg.bands:
        if b not in BAND_DATA:
            raise ConfigError("simgen.bands", "unknown band", value=b, allowed=sorted(BAND_DATA))
    if len(set(cfg.bands)) != len(cfg.bands):
        raise ConfigError("simgen.bands", "bands repeat", value=list(cfg.bands))
    p = cfg.population
    if not 0 < p.z_min < p.z_max <= 3.0:
        raise ConfigError("simgen.population.z_min/z_max", "need 0 < z_min < z_max <= 3", value=(p.z_min, p.z_max))
    if not 6.0 <= p.log_mass_min < p.log_mass_max <= 12.5:
        raise ConfigError("simgen.population.log_mass_min/log_mass_max", "need 6 <= min < max <= 12.5",
                          value=(p.log_mass_min, p.log_mass_max))
    if not 0 < p.disk_thickness_q0 < 1:
        raise ConfigError("simgen.population.disk_thickness_q0", "must lie in (0, 1)", value=p.disk_thickness_q0)
    if not p.bulge_sersic_n or any(not 0.3 <= n <= 6.2 for n in p.bulge_sersic_n):
        raise ConfigError("simgen.population.bulge_sersic_n", "Sersic indices must lie in [0.3, 6.2] "
                          "(GalSim's range)", value=list(p.bulge_sersic_n))
    if p.bulge_fraction_model not in ("mass", "uniform"):
        raise ConfigError("simgen.population.bulge_fraction_model", "unknown model", value=p.bulge_fraction_model,
                          allowed=["mass", "uniform"])
    for key in ("bulge_fraction_min", "bulge_fraction_max"):
        value = getattr(p, key)
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"simgen.population.{key}", "B/T must lie in [0, 1]", value=value)
    if p.bulge_fraction_min >= p.bulge_fraction_max:
        raise ConfigError("simgen.population.bulge_fraction_min", "must be below bulge_fraction_max",
                          value=(p.bulge_fraction_min, p.bulge_fraction_max))
    _positive("simgen.population.metallicity_random_scatter_dex", p.metallicity_random_scatter_dex, True)
    if not 0.0 <= p.single_component_fraction <= 1.0:
        raise ConfigError("simgen.population.single_component_fraction", "a fraction must lie in [0, 1]",
                          value=p.single_component_fraction)
    if p.d25_min_arcmin is not None:
        _positive("simgen.population.d25_min_arcmin", p.d25_min_arcmin, False)
    if p.ml_rel_err_min < 0.05:
        raise ConfigError("simgen.population.ml_rel_err_min", "M/L uncertainties are at least 5 %",
                          value=p.ml_rel_err_min)
    if cfg.psf.profile not in ("moffat", "kolmogorov"):
        raise ConfigError("simgen.psf.profile", "unknown PSF profile", value=cfg.psf.profile,
                          allowed=["moffat", "kolmogorov"])
    _positive("simgen.psf.fwhm_g_median", cfg.psf.fwhm_g_median)
    _positive("simgen.psf.fwhm_scatter_dex", cfg.psf.fwhm_scatter_dex, True)
    if cfg.psf.moffat_beta <= 1.1:
        raise ConfigError("simgen.psf.moffat_beta", "must exceed 1.1", value=cfg.psf.moffat_beta)
    for b in cfg.bands:
        for key, table in (("sky_mag_per_arcsec2", cfg.noise.sky_mag_per_arcsec2),
                           ("electrons_per_nanomaggy", cfg.noise.electrons_per_nanomaggy)):
            if b not in table:
                raise ConfigError(f"simgen.noise.{key}", f"no value for band {b!r}", value=dict(table))
        _positive(f"simgen.noise.electrons_per_nanomaggy.{b}", cfg.noise.electrons_per_nanomaggy[b])
    _positive("simgen.noise.read_noise_electrons", cfg.noise.read_noise_electrons, True)
    nuisances.validate_nuisances(cfg)
    if not cfg.split or any(v < 0 for v in cfg.split.values()) or not math.isclose(sum(cfg.split.values()), 1.0,
                                                                                     abs_tol=1e-6):
        raise ConfigError("simgen.split", "fractions must be non-negative and sum to 1", value=dict(cfg.split))
    _positive("simgen.folding_threshold", cfg.folding_threshold)
    if not 0 <= cfg.image_compression <= 9:
        raise ConfigError("simgen.image_compression", "gzip level must lie in 0..9 (0: none)",
                          value=cfg.image_compression)
    _positive("simgen.maxk_threshold", cfg.maxk_threshold)
    _positive("simgen.alias_tolerance", cfg.alias_tolerance)


def coerce_config(cfg: Any) -> GalSimConfig:
    """Turn a Hydra/OmegaConf node or a dict into a validated :class:`GalSimConfig`.

    Unknown keys (typos) and wrong types raise :class:`ConfigError` naming the key.
    """
    from sim2obs.config import coerce_dataclass

    obj = coerce_dataclass(GalSimConfig, cfg, "simgen")
    validate_config(obj)
    return obj


# --------------------------------------------------------------------------------------------
# Catalogue schema
# --------------------------------------------------------------------------------------------
def _columns(bands: list[str]) -> list[ColumnSpec]:
    C = ColumnSpec
    cols = [
        C("id", "int64", "", "object id, unique within the set"),
        C("redshift", "float64", "", "redshift"),
        C("luminosity_distance_mpc", "float64", "Mpc", "luminosity distance (Planck18)"),
        C("pixel_scale_arcsec", "float64", "arcsec", "pixel size on the sky (arcsec per pixel)"),
        C("pixel_scale_kpc", "float64", "kpc", "pixel size at the galaxy (proper kpc per pixel)"),
        C("log_mstar", "float64", "dex(solMass)", "log10 stellar mass"),
        C("oh12", "float64", "dex", "gas-phase metallicity 12 + log(O/H)"),
        C("log_sfr", "float64", "dex(solMass / yr)", "log10 star formation rate (population.star_formation_rate)"),
        C("bulge_mass_fraction", "float64", "", "bulge share of the stellar mass"),
        C("bulge_hlr_kpc", "float64", "kpc", "bulge half-light radius"),
        C("bulge_hlr_arcsec", "float64", "arcsec", "bulge half-light radius"),
        C("bulge_sersic_n", "float64", "", "bulge Sersic index"),
        C("bulge_q", "float64", "", "bulge projected axis ratio b/a"),
        C("bulge_position_angle_deg", "float64", "deg", "bulge major axis, counter-clockwise from +x"),
        C("disk_hlr_kpc", "float64", "kpc", "disk half-light radius"),
        C("disk_hlr_arcsec", "float64", "arcsec", "disk half-light radius"),
        C("disk_q", "float64", "", "disk projected axis ratio b/a"),
        C("disk_size_residual_dex", "float64", "dex", "disk size offset from the Shen et al. 2003 relation"),
        C("inclination_deg", "float64", "deg", "disk inclination (0 face-on)"),
        C("position_angle_deg", "float64", "deg", "disk major axis, counter-clockwise from +x"),
        C("bulge_color_gr", "float64", "mag", "intrinsic (dust-free) bulge g - r"),
        C("disk_color_gr", "float64", "mag", "intrinsic (dust-free) disk g - r"),
        C("bulge_ml_offset_dex", "float64", "dex", "bulge M/L offset from the colour relation"),
        C("disk_ml_offset_dex", "float64", "dex", "disk M/L offset from the colour relation"),
        C("bulge_av", "float64", "mag", "bulge V-band attenuation"),
        C("disk_av", "float64", "mag", "disk V-band attenuation (face-on + inclination term)"),
        C("offset_x_px", "float64", "", "galaxy centre offset from the stamp centre, x (pixels)"),
        C("offset_y_px", "float64", "", "galaxy centre offset from the stamp centre, y (pixels)"),
        C("n_secondary", "int32", "", "other galaxies drawn in the frame"),
        C("n_stars", "int32", "", "stars drawn in the frame"),
    ]
    for b in bands:
        cols += [
            C(f"flux_{b}", "float64", "nanomaggy", f"total {b} flux of the galaxy (all of the profile)"),
            C(f"mag_{b}", "float64", "mag", f"total {b} AB magnitude"),
            C(f"abs_mag_{b}", "float64", "mag", f"{b} absolute AB magnitude (no K-correction)"),
            C(f"lum_{b}", "float64", "solLum", f"observed (attenuated) {b} luminosity"),
            C(f"bt_{b}", "float64", "", f"bulge-to-total light ratio in {b}"),
            C(f"r_e_{b}", "float64", "arcsec", f"half-light radius in {b}: circular aperture, noiseless, no PSF"),
            C(f"ml_{b}", "float64", "solMass / solLum", f"stellar mass-to-light ratio in {b} (observed light)",
              error=f"ml_{b}_err"),
            C(f"ml_{b}_err", "float64", "solMass / solLum", f"1-sigma uncertainty of ml_{b}"),
            C(f"psf_fwhm_{b}", "float64", "arcsec", f"PSF FWHM in {b}"),
            C(f"sky_sigma_{b}", "float64", "nanomaggy", f"background noise per pixel in {b}"),
            C(f"snr_{b}", "float64", "", f"matched-filter S/N of the galaxy in {b}"),
        ]
    return cols


def build_schema(cfg: GalSimConfig) -> GalaxySetSchema:
    stack = StackSpec("image", tuple(cfg.bands), cfg.stamp, cfg.stamp, unit="nanomaggy",
                      pixel_scale_arcsec=cfg.pixel_scale,
                      description="bulge + disk galaxy, PSF-convolved, sky-subtracted, with noise")
    return GalaxySetSchema(stacks=(stack,), columns=tuple(_columns(list(cfg.bands))),
                           split_names=tuple(cfg.split))


# --------------------------------------------------------------------------------------------
# Drawing the parameters (in the coordinating process; cheap and vectorised)
# --------------------------------------------------------------------------------------------
def _population_config(cfg: GalSimConfig, mag_limit_shift: float = 0.0) -> PopulationConfig:
    p = cfg.population
    return PopulationConfig(z_min=p.z_min, z_max=p.z_max, log_mass_min=p.log_mass_min,
                            log_mass_max=p.log_mass_max,
                            mag_limit_r=None if p.mag_limit_r is None else p.mag_limit_r + mag_limit_shift,
                            disk_thickness_q0=p.disk_thickness_q0, bulge_sersic_n=tuple(p.bulge_sersic_n),
                            bulge_fraction_model=p.bulge_fraction_model, bulge_fraction_min=p.bulge_fraction_min,
                            bulge_fraction_max=p.bulge_fraction_max,
                            metallicity_random_scatter_dex=p.metallicity_random_scatter_dex,
                            ml_rel_err_min=p.ml_rel_err_min,
                            single_component_fraction=p.single_component_fraction,
                            d25_min_arcmin=p.d25_min_arcmin)


def _draw_in_blocks(cfg: GalSimConfig, n: int, stream: int, pop_cfg: PopulationConfig) -> dict[str, np.ndarray]:
    parts = []
    for block, start in enumerate(range(0, n, _POPULATION_BLOCK)):
        rng = np.random.default_rng(_seed_sequence(cfg.seed, stream, block))
        parts.append(draw_population(rng, min(_POPULATION_BLOCK, n - start), tuple(cfg.bands), pop_cfg))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def draw_parameters(cfg: GalSimConfig) -> dict[str, np.ndarray]:
    """Every per-object parameter of the set, ``(n,)`` arrays: population plus observing
    conditions (PSF FWHM per band, sub-pixel offsets)."""
    params = _draw_in_blocks(cfg, cfg.n, _STREAM_POPULATION, _population_config(cfg))
    _free_sersic(cfg, params, _STREAM_SERSIC)
    nuisances.apply_ml_calibration(params, cfg.bands, cfg.population.ml_calibration)
    rng = np.random.default_rng(_seed_sequence(cfg.seed, _STREAM_CONDITIONS))
    fwhm_g = cfg.psf.fwhm_g_median * 10.0 ** rng.normal(0.0, cfg.psf.fwhm_scatter_dex, cfg.n)
    for b in cfg.bands:  # Kolmogorov seeing: FWHM ~ wavelength^-0.2
        params[f"psf_fwhm_{b}"] = fwhm_g * (BAND_DATA[b]["wavelength_nm"] / BAND_DATA["g"]["wavelength_nm"]) ** -0.2
    params["offset_x_px"] = rng.uniform(-0.5, 0.5, cfg.n)
    params["offset_y_px"] = rng.uniform(-0.5, 0.5, cfg.n)
    params["pixel_scale_arcsec"] = np.full(cfg.n, cfg.pixel_scale)
    params["pixel_scale_kpc"] = cfg.pixel_scale / params["arcsec_per_kpc"]
    return params


def draw_secondary_pool(cfg: GalSimConfig) -> dict[str, np.ndarray] | None:
    """Galaxies that appear beside the targets: the same population, 2 mag deeper."""
    if cfg.realism.secondary_mean <= 0:
        return None
    size = int(max(64, min(5 * cfg.realism.secondary_mean * cfg.n, 20_000)))
    pool = _draw_in_blocks(cfg, size, _STREAM_SECONDARY, _population_config(cfg, mag_limit_shift=2.0))
    _free_sersic(cfg, pool, _STREAM_SECONDARY_SERSIC)
    return pool


def _free_sersic(cfg: GalSimConfig, params: dict[str, np.ndarray], stream: int) -> None:
    """With ``population.free_sersic``, replace the bulge Sersic indices (a separate random stream:
    every other parameter stays as it is)."""
    if cfg.population.free_sersic:
        rng = np.random.default_rng(_seed_sequence(cfg.seed, stream))
        params["bulge_sersic_n"] = nuisances.free_sersic_indices(rng, len(params["bulge_sersic_n"]),
                                                                 *cfg.population.free_sersic_range)


# --------------------------------------------------------------------------------------------
# Rendering (in the workers; the drawing itself is in sim2obs.simgen.galsim_render)
# --------------------------------------------------------------------------------------------
def render_object(cfg: GalSimConfig, row: Mapping[str, float], index: int, pool: dict | None = None):
    """Draw one object in every band. Returns ``(images (bands, stamp, stamp) float32,
    extra catalogue values)``."""
    with one_galsim_thread():
        return _render_object(cfg, row, index, pool)


def _render_object(cfg: GalSimConfig, row: Mapping[str, float], index: int, pool: dict | None = None):
    import galsim

    gsp = _gsparams(cfg)
    rng = np.random.default_rng(_seed_sequence(cfg.seed, _STREAM_OBJECT, index, 0))
    r = cfg.realism
    n_sec = int(rng.poisson(r.secondary_mean)) if pool is not None else 0
    n_star = int(rng.poisson(r.star_mean)) if r.star_mean > 0 else 0
    half = cfg.stamp * cfg.pixel_scale / 2.0
    sec_idx = rng.integers(0, len(pool["redshift"]), n_sec) if n_sec else np.zeros(0, int)
    # Secondaries and stars stay out of the central 3 arcsec, where the target lives.
    sec_pos = nuisances.positions_outside(rng, n_sec, half, 3.0)
    star_pos = nuisances.positions_outside(rng, n_star, half, 3.0)
    star_mag_r = nuisances.star_magnitudes(rng.uniform(size=n_star), r.star_mag_range, r.star_count_slope)
    star_gr = rng.normal(0.6, 0.3, n_star)
    neighbours = [({key: pool[key][sec_idx[j]] for key in pool}, sec_pos[j]) for j in range(n_sec)]
    stars = [(star_mag_r[j], star_gr[j], *star_pos[j]) for j in range(n_star)]
    knots_seed = _object_seed(cfg, index, _PURPOSE_KNOTS)
    noise_seed = _object_seed(cfg, index, _PURPOSE_NOISE)
    correlated_seed = _object_seed(cfg, index, _PURPOSE_CORRELATED_NOISE) if cfg.noise.correlated != "none" else 0
    offset = galsim.PositionD(float(row["offset_x_px"]), float(row["offset_y_px"]))

    psfs = [psf_profile(cfg, row[f"psf_fwhm_{band}"], gsp) for band in cfg.bands]
    # The smooth galaxy (its disk without the knots' share) in every band from one Fourier grid, then
    # the knots on their own: drawn together, one FFT at the PSF's maxk would cost ~8x (the same image
    # to GalSim's accuracy).
    images = draw_smooth(cfg, row, psfs, gsp, disk_share=1.0 - r.clump_flux_fraction if r.clumps else 1.0)
    extra: dict[str, float] = {"n_secondary": n_sec, "n_stars": n_star}
    for k, band in enumerate(cfg.bands):
        psf = psfs[k]
        im = galsim.ImageF(images[k], scale=cfg.pixel_scale)  # a view: drawn and noised in place
        if r.clumps:
            knots = nuisances.disk_knots(row, band, r.clump_count, r.clump_flux_fraction,
                                         galsim.BaseDeviate(knots_seed), gsp)
            galsim.Convolve([knots, psf], gsparams=gsp).drawImage(image=im, add_to_image=True, offset=offset)
        sigma = sky_sigma_nmgy(cfg, band)
        extra[f"sky_sigma_{band}"] = sigma
        extra[f"snr_{band}"] = float(np.sqrt(np.sum(im.array.astype(np.float64) ** 2))
                                     / sky_sigma_nmgy(cfg, band, at_depth=True))
        nuisances.add_neighbours_and_stars(im, cfg, band, psf, offset, neighbours, stars, gsp, galaxy_profile)
        if cfg.noise.enabled:
            e = cfg.noise.electrons_per_nanomaggy[band]
            im *= e
            nuisances.add_noise(im, cfg, band, e, sky_level_nmgy(cfg, band), noise_seed + k, correlated_seed + k)
            im /= e
    return images, extra


def render_shard(cfg_dict: dict, writer: GalaxySetWriter, index: int, params: dict[str, np.ndarray],
                 split: np.ndarray, pool: dict | None) -> dict[str, float]:
    """Worker job: draw the objects of shard ``index`` and write the shard atomically."""
    cfg = coerce_config(cfg_dict)
    t0 = time.perf_counter()
    start, stop = writer.shard_range(index)
    n = stop - start
    images = np.empty((n, len(cfg.bands), cfg.stamp, cfg.stamp), dtype=np.float32)
    extras: dict[str, np.ndarray] = {}
    for j in range(n):
        row = {k: v[j] for k, v in params.items()}
        images[j], extra = render_object(cfg, row, start + j, pool)
        for key, value in extra.items():
            extras.setdefault(key, np.empty(n))[j] = value
    catalog = {"id": np.arange(start, stop, dtype=np.int64)}
    for b in cfg.bands:
        catalog[f"r_e_{b}"] = half_light_radius(
            params[f"flux_{b}"] * params[f"bt_{b}"], params["bulge_hlr_arcsec"], params["bulge_sersic_n"],
            params["bulge_q"], params[f"flux_{b}"] * (1 - params[f"bt_{b}"]), params["disk_hlr_arcsec"],
            params["disk_q"])
        catalog[f"ml_{b}_err"] = params[f"ml_{b}"] * params["ml_rel_err"]
    catalog.update(extras)
    for spec in writer.schema.columns:
        if spec.name not in catalog:
            catalog[spec.name] = params[spec.name]
    writer.write_shard(index, {"image": images}, catalog, split)
    return {"shard": index, "objects": n, "seconds": time.perf_counter() - t0,
            "sha256": writer.written_sha256[index]}


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------
def generate(cfg: Any, out: str | Path, cluster: Mapping[str, Any] | None = None, overwrite: bool = False,
             progress: bool = True, resolved_config: Mapping[str, Any] | None = None) -> Path:
    """Generate a bulge + disk galaxy set at directory ``out``; return its path.

    ``cfg`` is a :class:`GalSimConfig`, a dict or an OmegaConf node. ``cluster`` is the Dask
    cluster config (default: a local cluster, one single-threaded worker per core). A set
    already complete at ``out`` with the same build is returned as it is; a partial one is
    completed (only missing shards are drawn).
    """
    cfg = coerce_config(cfg)
    cfg_dict = asdict(cfg)
    out = Path(out)
    build_key = stable_hash({"generator": GENERATOR_NAME, "version": GENERATOR_VERSION, "config": cfg_dict})
    writer = GalaxySetWriter(out, build_schema(cfg), cfg.n, cfg.shard_size, build_key,
                             compression_level=cfg.image_compression)
    writer.prepare(overwrite=overwrite)
    if writer.is_complete():
        return out
    missing = writer.missing_shards()
    # The workers start (import the generator and GalSim, fill GalSim's tables) while this process
    # draws the parameters.
    with ClusterInBackground(cluster or {"kind": "local"}, len(missing), preload=_WORKER_MODULES,
                             warm_up=(_warm_worker, (cfg,))) as started:
        params = draw_parameters(cfg)
        pool = draw_secondary_pool(cfg)
        codes, _ = assign_splits(cfg.n, cfg.split, cfg.seed if cfg.split_seed is None else cfg.split_seed)
        args = []
        for i in missing:
            a, b = writer.shard_range(i)
            args.append((cfg_dict, writer, i, {k: v[a:b] for k, v in params.items()}, codes[a:b], pool))
        provenance = {"generator": GENERATOR_NAME, "generator_version": GENERATOR_VERSION, "seed": cfg.seed,
                      "config": cfg_dict,
                      "resolved_config": dict(resolved_config) if resolved_config is not None else None}
        writer.build(render_shard, args, started, cfg.name, provenance, progress=progress)
    return out
