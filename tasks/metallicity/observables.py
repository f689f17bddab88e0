"""The ``metallicity`` task's observables: the catalogue columns its methods may read
(:meth:`~sim2obs.tasks.base.Task.features`; the random forest's g, r, i magnitudes of Wu & Boada §5.4).

What a survey measures of each galaxy: photometry (fluxes, magnitudes, luminosities, S/N),
redshift, distance, pixel sizes and the observing conditions (PSF FWHM, sky noise). Never the
generator's truths: 12+log(O/H), stellar mass, SFR, M/L, B/T, the bulge and disk parameters
(``bulge_mass_fraction``, ``disk_size_residual_dex``, half-light radii, axis ratios, dust, ...),
which set the label and would stand in for what the images must show."""
from __future__ import annotations

from sim2obs.tasks.declaration import Observables

__all__ = ["OBSERVABLE_COLUMNS", "OBSERVABLE_PREFIXES", "OBSERVABLES"]

#: Observables by exact name.
OBSERVABLE_COLUMNS = ("redshift", "luminosity_distance_mpc", "pixel_scale_arcsec", "pixel_scale_kpc")
#: Every column starting with one of these is an observable (``mag_g``, ``petro_mag_r``, ...).
OBSERVABLE_PREFIXES = ("flux_", "mag_", "abs_mag_", "petro_mag_", "lum_", "psf_fwhm_", "sky_sigma_", "snr_")
OBSERVABLES = Observables(columns=OBSERVABLE_COLUMNS, prefixes=OBSERVABLE_PREFIXES)
