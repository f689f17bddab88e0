"""Observed-like nuisances of the GalSim bulge + disk generator, each a separate switch, all off by
default (the default set keeps its bytes). A transfer study adds them one at a time to a clean
source (``configs/simgen/hsc_clean.yaml``); :data:`LADDER` lists the override of each step.

Switches (config keys of :class:`sim2obs.simgen.galsim_bulge_disk.GalSimConfig`):

- ``psf_spread``: ``psf.fwhm_scatter_dex`` (> 0), a log-normal per-object seeing scatter around
  the median FWHM (HSC-Wide seeing spans ~0.6-0.9 arcsec: Aihara et al. 2018, PASJ 70, S4).
- ``correlated_noise``: ``noise.correlated: cosmos``: the pixel-to-pixel noise correlation of the
  COSMOS HST/ACS F814W mosaic (Koekemoer et al. 2007; Leauthaud et al. 2007), the correlation
  function GalSim ships (``galsim.getCOSMOSNoise``, file ``acs_I_unrot_sci_20_cf.fits``, measured
  on 0.03 arcsec drizzled pixels). It is mapped pixel for pixel onto the set's pixels
  (``cosmos_scale`` = the set's pixel scale: the correlation at a lag of one, two ... pixels is
  kept, ~0.48 between neighbours; resampled and co-added survey images, e.g. HSC coadds warped
  with a Lanczos kernel, Bosch et al. 2018, PASJ 70, S5, have correlations of this kind), and its
  variance is set to ``noise.correlated_fraction`` of the set's background variance
  ``sky_sigma^2``; the white sky + read noise keeps the rest, so the depth (``sky_sigma_<band>``
  in the catalogue) is unchanged. Fraction 1: correlated instead of white; below 1: on top of a
  reduced white part. The galaxy's own Poisson noise stays.
- ``knots``: ``realism.clumps: true``: star-forming knots (``galsim.RandomKnots``: point sources
  placed by a random walk inside the disk's half-light radius) carry ``clump_flux_fraction`` of the
  disk light; seeded per object, the same knots in every band.
- ``free_sersic``: ``population.free_sersic: true``: the bulge Sersic index is drawn uniformly in
  ``population.free_sersic_range`` instead of from the list ``population.bulge_sersic_n``. Bulges
  of nearby disk galaxies span n ~ 1 (pseudo-bulges, n < 2) to ~ 6 (classical bulges) (Fisher &
  Drory 2008, AJ 136, 773; Gadotti 2009, MNRAS 393, 1531). Drawn from a separate random stream,
  so every other parameter of every galaxy stays the same.
- ``neighbours_stars``: ``realism.secondary_mean`` other galaxies (the same population 2 mag
  deeper) and ``realism.star_mean`` stars per frame (Poisson), outside the central 3 arcsec. Stars
  are PSF-shaped point sources; their r magnitudes follow power-law number counts
  dN/dm ~ 10^(``star_count_slope`` m) in ``realism.star_mag_range``: star counts towards the
  Galactic poles rise by ~0.1-0.2 dex per magnitude over 15 < V < 23 (Bahcall & Soneira 1980,
  ApJS 44, 73), 0.15 by default; colours g - r ~ N(0.6, 0.3) (the halo turn-off near 0.3 to disk
  M dwarfs near 1.4, Juric et al. 2008, ApJ 673, 864; a crude single Gaussian), r - i = 0.4 (g - r),
  r - z = 0.6 (g - r) (a crude linear stand-in for the stellar locus, Covey et al. 2007, AJ 134,
  2398). Saturation is not modelled.
- ``single_component``: ``population.single_component_fraction`` (> 0) bulge-only or disk-only
  galaxies, half each (25 % in GaMPEN's training sets, Ghosh et al. 2022). It changes the
  population draws (the flux limit then keeps other galaxies), not only those galaxies.
- ``ml_calibration``: ``population.ml_calibration: chabrier``: a built-in label shift for
  ``ml_ratio``. The images stay byte for byte; the stellar-mass labels (``log_mstar``, ``ml_<b>``
  and their errors) move from Bell et al. 2003's "diet Salpeter" IMF (0.7 x the Salpeter mass,
  -0.15 dex: Bell & de Jong 2001) to a Chabrier 2003 IMF (about -0.24 dex from Salpeter): -0.093
  dex, the offset usually adopted between the two (~ -0.1 dex; Zibetti et al. 2009, MNRAS 400,
  1181, give colour-M/L relations for a Chabrier IMF).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sim2obs.errors import ConfigError

# Bell et al. 2003 diet Salpeter -> Chabrier 2003 IMF stellar masses (dex): -0.243 + 0.15.
CHABRIER_MINUS_BELL_DEX = -0.093
ML_CALIBRATIONS = {"bell2003": 0.0, "chabrier": CHABRIER_MINUS_BELL_DEX}
CORRELATED_NOISE_MODELS = ("none", "cosmos")
# GalSim tabulates each new Sersic index (~0.1 s) and keeps 100 tables per process: free indices are
# rounded to this step (0.05: 101 values between 1 and 6) so that they are tabulated once.
SERSIC_N_STEP = 0.05

# The nuisance ladder of a transfer study: each step's overrides of the simgen config, applied on top
# of configs/simgen/hsc_clean.yaml (one step at a time, or cumulatively in this order).
LADDER: dict[str, tuple[str, ...]] = {
    "psf_spread": ("psf.fwhm_scatter_dex=0.07",),
    "correlated_noise": ("noise.correlated=cosmos", "noise.correlated_fraction=1.0"),
    "knots": ("realism.clumps=true",),
    "free_sersic": ("population.free_sersic=true", "population.free_sersic_range=[1.0,6.0]"),
    "neighbours_stars": ("realism.secondary_mean=0.7", "realism.star_mean=0.5",
                         "realism.star_mag_range=[18.0,24.0]"),
    "single_component": ("population.single_component_fraction=0.25",),
}
# Label shift for ml_ratio (not in the bt_posterior ladder: it changes M/L labels only).
LABEL_SHIFT: dict[str, tuple[str, ...]] = {"ml_calibration": ("population.ml_calibration=chabrier",)}


@dataclass
class RealismSection:
    """``simgen.realism``: what else is in the frame, and knots in the disk (all off by default)."""

    secondary_mean: float = 0.0        # Poisson mean number of other galaxies in the frame
    star_mean: float = 0.0             # Poisson mean number of stars in the frame
    clumps: bool = False               # star-forming knots (galsim.RandomKnots) in the disk
    clump_count: int = 30              # knots per galaxy
    clump_flux_fraction: float = 0.2   # fraction of the disk light in knots
    star_mag_range: list[float] = field(default_factory=lambda: [14.0, 22.0])  # r mag, bright to faint
    star_count_slope: float = 0.15     # dlog10 N / dm of the star counts (Bahcall & Soneira 1980)


def _non_negative(key: str, value: float) -> None:
    if value is None or not math.isfinite(value) or value < 0:
        raise ConfigError(key, "must be non-negative", value=value)


def validate_nuisances(cfg: Any) -> None:
    """Raise :class:`ConfigError` naming the key for a nuisance setting the generator cannot use.

    ``cfg`` is a :class:`~sim2obs.simgen.galsim_bulge_disk.GalSimConfig`.
    """
    p, n, r = cfg.population, cfg.noise, cfg.realism
    _non_negative("simgen.realism.secondary_mean", r.secondary_mean)
    _non_negative("simgen.realism.star_mean", r.star_mean)
    if not 0 <= r.clump_flux_fraction < 1:
        raise ConfigError("simgen.realism.clump_flux_fraction", "must lie in [0, 1)", value=r.clump_flux_fraction)
    if r.clump_count <= 0:
        raise ConfigError("simgen.realism.clump_count", "must be positive", value=r.clump_count)
    lo_hi = list(p.free_sersic_range)
    if len(lo_hi) != 2 or not 0.3 <= lo_hi[0] < lo_hi[1] <= 6.2:
        raise ConfigError("simgen.population.free_sersic_range", "need [min, max] with 0.3 <= min < max <= 6.2 "
                          "(GalSim's Sersic range)", value=lo_hi)
    if p.ml_calibration not in ML_CALIBRATIONS:
        raise ConfigError("simgen.population.ml_calibration", "unknown colour-M/L calibration",
                          value=p.ml_calibration, allowed=sorted(ML_CALIBRATIONS))
    if n.correlated not in CORRELATED_NOISE_MODELS:
        raise ConfigError("simgen.noise.correlated", "unknown correlated-noise model", value=n.correlated,
                          allowed=list(CORRELATED_NOISE_MODELS))
    if not 0.0 < n.correlated_fraction <= 1.0:
        raise ConfigError("simgen.noise.correlated_fraction", "share of the background variance, in (0, 1]",
                          value=n.correlated_fraction)
    mags = list(r.star_mag_range)
    if len(mags) != 2 or not all(math.isfinite(m) for m in mags) or mags[0] >= mags[1]:
        raise ConfigError("simgen.realism.star_mag_range", "need [bright, faint] r magnitudes, bright < faint",
                          value=mags)
    if not math.isfinite(r.star_count_slope) or abs(r.star_count_slope) > 1.0:
        raise ConfigError("simgen.realism.star_count_slope", "dlog10 N / dm must be finite, |slope| <= 1",
                          value=r.star_count_slope)


# --------------------------------------------------------------------------------------------
# Parameter-level nuisances (coordinating process)
# --------------------------------------------------------------------------------------------
def free_sersic_indices(rng: np.random.Generator, n: int, lo: float, hi: float) -> np.ndarray:
    """``(n,)`` bulge Sersic indices uniform in [lo, hi], rounded to :data:`SERSIC_N_STEP`."""
    values = np.round(rng.uniform(lo, hi, n) / SERSIC_N_STEP) * SERSIC_N_STEP
    return np.clip(np.round(values, 10), lo, hi)


def apply_ml_calibration(params: dict[str, np.ndarray], bands, calibration: str) -> None:
    """Shift the stellar-mass labels (``log_mstar``, ``ml_<band>``) in place to ``calibration``
    (see :data:`ML_CALIBRATIONS`); fluxes and images are untouched."""
    offset = ML_CALIBRATIONS[calibration]
    if offset == 0.0:
        return
    params["log_mstar"] = params["log_mstar"] + offset
    for b in bands:
        params[f"ml_{b}"] = params[f"ml_{b}"] * 10.0**offset


def star_magnitudes(u: np.ndarray, mag_range, slope: float) -> np.ndarray:
    """r magnitudes from uniform deviates ``u`` for number counts dN/dm ~ 10^(slope m) in
    ``mag_range`` (inverse CDF; slope 0: uniform in magnitude)."""
    lo, hi = float(mag_range[0]), float(mag_range[1])
    if slope == 0.0:
        return lo + (hi - lo) * u
    a = slope * math.log(10.0)
    return lo + np.log1p(u * np.expm1(a * (hi - lo))) / a


def star_flux(mag_r: float, g_minus_r: float, band: str) -> float:
    """Flux (nanomaggies) of a star of r magnitude ``mag_r`` and colour ``g_minus_r`` in ``band``."""
    shift = {"g": g_minus_r, "r": 0.0, "i": -0.4 * g_minus_r, "z": -0.6 * g_minus_r}[band]
    return 10.0 ** (-0.4 * (mag_r + shift - 22.5))


def positions_outside(rng: np.random.Generator, n: int, half: float, r_min: float) -> np.ndarray:
    """``(n, 2)`` positions (arcsec from the centre) uniform in the stamp, outside ``r_min``."""
    out = np.zeros((n, 2))
    for j in range(n):
        while True:
            xy = rng.uniform(-half, half, 2)
            if np.hypot(*xy) >= min(r_min, 0.8 * half):
                out[j] = xy
                break
    return out


# --------------------------------------------------------------------------------------------
# Pixel-level nuisances (workers)
# --------------------------------------------------------------------------------------------
def disk_knots(row, band: str, count: int, fraction: float, rng, gsparams=None):
    """Star-forming knots of one galaxy's disk in ``band`` (no PSF): ``count`` point sources placed by
    ``galsim.RandomKnots`` (a random walk) within the disk's half-light radius, carrying ``fraction``
    of the disk flux (nanomaggies), sheared like the disk. ``rng``: a ``galsim.BaseDeviate``; the
    same seed in every band gives the same knots."""
    import galsim

    disk_flux = float(row[f"flux_{band}"] * (1.0 - row[f"bt_{band}"]))
    knots = galsim.RandomKnots(count, half_light_radius=float(row["disk_hlr_arcsec"]), flux=disk_flux * fraction,
                               rng=rng, gsparams=gsparams)
    return knots.shear(q=float(row["disk_q"]), beta=float(row["position_angle_deg"]) * galsim.degrees)


@functools.lru_cache(maxsize=8)
def cosmos_noise(pixel_scale: float):
    """GalSim's COSMOS correlated noise with unit variance, its pixel lags mapped onto pixels of
    ``pixel_scale`` arcsec (read once per process)."""
    import galsim

    return galsim.getCOSMOSNoise(cosmos_scale=float(pixel_scale), variance=1.0)


def add_noise(image, cfg: Any, band: str, electrons_per_nmgy: float, sky_nmgy: float, white_seed: int,
              correlated_seed: int) -> None:
    """Add the background and Poisson noise to ``image`` (a ``galsim.ImageF`` in electrons).

    White: ``galsim.CCDNoise`` (Poisson on sky + object, Gaussian read noise). With
    ``noise.correlated: cosmos`` the sky + read variance is split: ``1 - f`` stays white, ``f``
    (``noise.correlated_fraction``) is COSMOS-correlated Gaussian noise; the total background variance
    per pixel is the same. ``sky_nmgy``: sky per pixel (nanomaggies).
    """
    import galsim

    sky_e, read = sky_nmgy * electrons_per_nmgy, cfg.noise.read_noise_electrons
    if cfg.noise.correlated == "none":
        image.addNoise(galsim.CCDNoise(galsim.BaseDeviate(white_seed), sky_level=sky_e, gain=1.0, read_noise=read))
        return
    f = cfg.noise.correlated_fraction
    image.addNoise(galsim.CCDNoise(galsim.BaseDeviate(white_seed), sky_level=(1.0 - f) * sky_e, gain=1.0,
                                   read_noise=math.sqrt(1.0 - f) * read))
    variance = f * (sky_e + read**2)
    image.addNoise(cosmos_noise(cfg.pixel_scale).copy(rng=galsim.BaseDeviate(correlated_seed)).withVariance(variance))


def add_neighbours_and_stars(image, cfg: Any, band: str, psf, offset, neighbours, stars, gsparams,
                             profile_fn) -> None:
    """Draw the other galaxies and the stars of the frame onto ``image`` (nanomaggies).

    ``neighbours``: list of ``(row, (x, y) arcsec)``; ``stars``: ``(mag_r, g - r, x, y)`` rows;
    ``profile_fn(row, band, gsparams=)`` makes a galaxy profile; ``offset``: the target's
    sub-pixel offset (``galsim.PositionD``, pixels), which every position is relative to.
    """
    import galsim

    for row, xy in neighbours:
        galsim.Convolve([profile_fn(row, band, gsparams=gsparams), psf], gsparams=gsparams).drawImage(
            image=image, add_to_image=True, offset=offset + galsim.PositionD(*(np.asarray(xy) / cfg.pixel_scale)))
    for mag_r, gr, x, y in stars:
        psf.withFlux(star_flux(mag_r, gr, band)).drawImage(
            image=image, add_to_image=True, offset=offset + galsim.PositionD(x / cfg.pixel_scale, y / cfg.pixel_scale))
