"""The ``bt_posterior`` task's observables: the catalogue columns its methods may read
(:meth:`~sim2obs.tasks.base.Task.features`). GaMPEN itself reads only the image; a method may add
what a survey measures beside it: redshift, distance, pixel sizes, the observing conditions (PSF
FWHM, sky noise) and the photometry of **other** bands. The r band's flux in any unit
(``mag_r``, ``abs_mag_r``, ``lum_r``) and its S/N are the target ``flux_r`` again and are refused;
so are every generator truth (B/T in any band, ``bulge_mass_fraction``, half-light radii, Sérsic
indices, axis ratios, dust, stellar mass, M/L, ...) and the number of secondaries drawn in the frame."""
from __future__ import annotations

from sim2obs.tasks.bt_posterior.config import BAND
from sim2obs.tasks.declaration import Observables

__all__ = ["OBSERVABLE_COLUMNS", "OBSERVABLE_PREFIXES", "TARGET_EQUIVALENTS", "OBSERVABLES"]

#: Observables by exact name.
OBSERVABLE_COLUMNS = ("redshift", "luminosity_distance_mpc", "pixel_scale_arcsec", "pixel_scale_kpc")
#: Every column starting with one of these is an observable, but for :data:`TARGET_EQUIVALENTS`.
OBSERVABLE_PREFIXES = ("flux_", "mag_", "abs_mag_", "lum_", "psf_fwhm_", "sky_sigma_", "snr_")
#: The target flux in other units, and the S/N it sets: refused although a prefix matches.
TARGET_EQUIVALENTS = tuple(f"{p}{BAND}" for p in ("flux_", "mag_", "abs_mag_", "lum_", "snr_"))
OBSERVABLES = Observables(columns=OBSERVABLE_COLUMNS, prefixes=OBSERVABLE_PREFIXES, exclude=TARGET_EQUIVALENTS)
