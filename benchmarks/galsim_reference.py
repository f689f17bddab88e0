"""The reference for the generation benchmark: what a straightforward GalSim script does.

One process, one galaxy and band at a time: a de Vaucouleurs bulge plus an exponential disk (each
sheared), a Moffat PSF per band, GalSim's default GSParams, CCD noise (sky Poisson + read noise),
and one h5py write of all the images and the catalogue at the end. It draws the same galaxies as
``sim2obs generate`` (the parameters of :func:`sim2obs.simgen.galsim_bulge_disk.draw_parameters`),
so both do the same work. GalSim's OpenMP is pinned to one thread, as in sim2obs: on a busy machine
two spinning OpenMP threads make every noise draw several times slower, which would flatter the
ratio rather than measure it.
"""
from __future__ import annotations

from pathlib import Path

import galsim
import h5py
import numpy as np

from sim2obs.simgen.galsim_bulge_disk import GalSimConfig, one_galsim_thread, sky_level_nmgy


def naive_galsim_loop(cfg: GalSimConfig, params: dict[str, np.ndarray], out: str | Path, seed: int = 1) -> np.ndarray:
    """Draw every galaxy of ``params`` in every band of ``cfg`` and write one HDF5 file at
    ``out``; returns the images ``(n, bands, stamp, stamp)`` float32 (nanomaggies)."""
    with one_galsim_thread():
        return _loop(cfg, params, out, seed)


def _loop(cfg: GalSimConfig, params: dict[str, np.ndarray], out: str | Path, seed: int) -> np.ndarray:
    n = len(params["redshift"])
    images = np.empty((n, len(cfg.bands), cfg.stamp, cfg.stamp), dtype=np.float32)
    rng = galsim.BaseDeviate(seed)
    for j in range(n):
        for k, band in enumerate(cfg.bands):
            flux, bt = params[f"flux_{band}"][j], params[f"bt_{band}"][j]
            bulge = galsim.DeVaucouleurs(half_light_radius=params["bulge_hlr_arcsec"][j], flux=flux * bt).shear(
                q=params["bulge_q"][j], beta=params["bulge_position_angle_deg"][j] * galsim.degrees)
            disk = galsim.Exponential(half_light_radius=params["disk_hlr_arcsec"][j], flux=flux * (1 - bt)).shear(
                q=params["disk_q"][j], beta=params["position_angle_deg"][j] * galsim.degrees)
            psf = galsim.Moffat(beta=cfg.psf.moffat_beta, fwhm=params[f"psf_fwhm_{band}"][j])
            im = galsim.Convolve([bulge + disk, psf]).drawImage(
                nx=cfg.stamp, ny=cfg.stamp, scale=cfg.pixel_scale,
                offset=(params["offset_x_px"][j], params["offset_y_px"][j]))
            e = cfg.noise.electrons_per_nanomaggy[band]
            im *= e
            im.addNoise(galsim.CCDNoise(rng, sky_level=sky_level_nmgy(cfg, band) * e, gain=1.0,
                                        read_noise=cfg.noise.read_noise_electrons))
            im /= e
            images[j, k] = im.array
    with h5py.File(out, "w") as f:
        f.create_dataset("images", data=images)
        for key, values in params.items():
            f.create_dataset(f"catalog/{key}", data=values)
    return images
