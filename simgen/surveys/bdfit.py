"""A bulge (de Vaucouleurs, n = 4) + exponential disk fit of an HST postage stamp, for samples without
GalSim's parametric-fit table (the AEGIS RealGalaxyCatalog has none).

The model is the one of the COSMOS ``bulgefit`` (Lackner & Gunn 2012 as distributed with GalSim):
two concentric Sersic components, n = 4 and n = 1, each with its own half-light radius and axis ratio
and a common position angle, convolved with the stamp's own PSF image (which includes the pixel
response, so the model is drawn without a further pixel) and fitted to the image by weighted least
squares (``scipy.optimize.least_squares``, the catalogue's noise variance as weight).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from sim2obs.simgen.half_light import half_light_radius

__all__ = ["BulgeDiskFit", "fit_bulge_disk"]


@dataclass(frozen=True)
class BulgeDiskFit:
    """Result of :func:`fit_bulge_disk`: B/T, total flux (image units), circularised half-light radii
    (arcsec), axis ratios, position angle (rad), centre offset (arcsec), ``r_e`` (arcsec: the circle
    holding half the light of the fitted profile, before PSF), reduced chi^2 and whether the
    optimiser converged."""

    bt: float
    flux: float
    hlr_bulge: float
    hlr_disk: float
    q_bulge: float
    q_disk: float
    beta: float
    dx: float
    dy: float
    r_e: float
    rchi2: float
    converged: bool


def _model(p: np.ndarray, psf, nx: int, ny: int, scale: float, gsparams) -> np.ndarray:
    """Bulge + disk with parameters ``p``, convolved with ``psf``, sampled on ``(ny, nx)`` pixels."""
    import galsim  # deferred: galsim is a heavy import

    flux, bt, hb, hd, qb, qd, beta, dx, dy = p
    beta = beta * galsim.radians
    bulge = galsim.DeVaucouleurs(half_light_radius=hb, flux=flux * bt, gsparams=gsparams).shear(q=qb, beta=beta)
    disk = galsim.Exponential(half_light_radius=hd, flux=flux * (1 - bt), gsparams=gsparams).shear(q=qd, beta=beta)
    conv = galsim.Convolve((bulge + disk).shift(dx, dy), psf, gsparams=gsparams)
    return conv.drawImage(nx=nx, ny=ny, scale=scale, method="no_pixel").array


def _bin(a: np.ndarray, k: int) -> np.ndarray:
    """Sum ``k`` x ``k`` blocks (edge rows/columns that do not fill a block are dropped)."""
    ny, nx = (a.shape[0] // k) * k, (a.shape[1] // k) * k
    return a[:ny, :nx].reshape(ny // k, k, nx // k, k).sum(axis=(1, 3))


def fit_bulge_disk(image: np.ndarray, psf_image: np.ndarray, pixel_scale: float, noise_variance: float,
                   max_nfev: int = 120, max_pixels: int = 64) -> BulgeDiskFit:
    """Fit ``image`` ``(ny, nx)`` (any flux unit, ``pixel_scale`` arcsec/px, background-subtracted)
    with a PSF-convolved bulge + disk; ``psf_image`` is the stamp's PSF at the same pixel scale.

    Starts from the image's flux, second-moment size and ellipticity, B/T = 0.5. Bounds: 0.01 <= B/T
    <= 0.99, radii 0.3 px .. a quarter of the stamp, 0.1 <= q <= 1, centre within 5 px. ``max_nfev``
    bounds the model evaluations (each one GalSim FFT draw). A stamp larger than ``max_pixels`` on a side
    is fitted binned k x k (image and PSF summed in blocks, variance x k^2), k the smallest factor that
    brings it within ``max_pixels``: the labels serve ground-based images of 0.168"/px or coarser.
    """
    import galsim  # deferred: galsim is a heavy import

    img = np.asarray(image, dtype=np.float64)
    psf_image = np.asarray(psf_image, dtype=np.float64)
    k = max(1, math.ceil(max(img.shape) / max_pixels))
    if k > 1:  # a large stamp is fitted binned k x k: k^2 fewer pixels and a smaller FFT
        img, psf_image = _bin(img, k), _bin(psf_image, k)
        pixel_scale, noise_variance = pixel_scale * k, noise_variance * k * k
    ny, nx = img.shape
    gsp = galsim.GSParams(folding_threshold=2e-2, maxk_threshold=5e-3)
    psf = galsim.InterpolatedImage(galsim.Image(np.asarray(psf_image, dtype=np.float64), scale=pixel_scale),
                                   flux=1.0, gsparams=gsp)
    gimg = galsim.Image(img, scale=pixel_scale)
    flux0 = max(float(img.sum()), 1e-6)
    try:
        mom = gimg.FindAdaptiveMom()
        sigma = mom.moments_sigma * pixel_scale
        shape = mom.observed_shape
        q0 = float(np.clip(math.sqrt((1 - shape.e) / (1 + shape.e)) if shape.e < 1 else 0.5, 0.15, 0.95))
        beta0 = float(shape.beta.rad)
    except galsim.GalSimError:
        sigma, q0, beta0 = 3 * pixel_scale, 0.7, 0.0
    hlr0 = float(np.clip(1.18 * sigma, 0.5 * pixel_scale, 0.4 * min(nx, ny) * pixel_scale))
    lo = [0.2 * flux0, 0.01, 0.3 * pixel_scale, 0.3 * pixel_scale, 0.1, 0.1, -10.0, -5 * pixel_scale, -5 * pixel_scale]
    hi = [5.0 * flux0, 0.99, 0.25 * min(nx, ny) * pixel_scale, 0.25 * min(nx, ny) * pixel_scale, 1.0, 1.0, 10.0,
          5 * pixel_scale, 5 * pixel_scale]
    p0 = np.clip([flux0, 0.5, 0.5 * hlr0, 1.2 * hlr0, min(q0 + 0.1, 1.0), q0, beta0, 0.0, 0.0],
                 np.array(lo) + 1e-9, np.array(hi) - 1e-9)
    weight = 1.0 / math.sqrt(max(float(noise_variance), 1e-30))

    def residual(p):
        return ((_model(p, psf, nx, ny, pixel_scale, gsp) - img) * weight).ravel()

    res = least_squares(residual, p0, bounds=(lo, hi), x_scale="jac", max_nfev=max_nfev, diff_step=1e-3)
    flux, bt, hb, hd, qb, qd, beta, dx, dy = (float(v) for v in res.x)
    r_e = float(half_light_radius(np.array([flux * bt]), np.array([hb]), np.array([4.0]), np.array([qb]),
                                  np.array([flux * (1 - bt)]), np.array([hd]), np.array([qd]))[0])
    dof = max(img.size - len(p0), 1)
    return BulgeDiskFit(bt, flux, hb, hd, qb, qd, beta, dx, dy, r_e, float(2 * res.cost / dof), bool(res.success))
