"""The ``ml_ratio`` task's observables: the catalogue columns its methods may read
(:meth:`~sim2obs.tasks.base.Task.features`; the LightGBM baselines' luminosities, colours,
redshift and pixel sizes of Dobbels et al. 2019).

Photometry, redshift, distance, pixel sizes and observing conditions. Every other catalogue
column is a label: M/L in every band, stellar mass, the structural parameters (the morphology
CNNs' training labels), attenuation, the components' colours, ..."""
from __future__ import annotations

from sim2obs.tasks.declaration import Observables

__all__ = ["OBSERVABLE_COLUMNS", "OBSERVABLE_PREFIXES", "OBSERVABLES"]

#: Every column starting with one of these is an observable (``lum_g``, ``mag_i``, ...).
OBSERVABLE_PREFIXES = ("flux_", "mag_", "abs_mag_", "lum_", "psf_fwhm_", "sky_sigma_", "snr_")
#: Observables by exact name.
OBSERVABLE_COLUMNS = ("id", "redshift", "luminosity_distance_mpc", "pixel_scale_arcsec", "pixel_scale_kpc",
                      "d25_arcmin")  # d25_arcmin: HyperLeda D25 of a real set (sample.py)
OBSERVABLES = Observables(columns=OBSERVABLE_COLUMNS, prefixes=OBSERVABLE_PREFIXES)
