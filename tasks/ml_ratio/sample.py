"""The sample and the measurements of Dobbels et al. (2019, §2.1-2.2, §4.3) on the task's galaxy set.

- **D25** (:func:`d25_arcsec`): the major-axis diameter of the B-band 25 mag arcsec⁻² isophote, the size
  the paper takes from HyperLeda (Makarov et al. 2014) to select its sample (D25 > 0.4′) and to size its
  cutouts (field of view 1.125 D25). A real set carries HyperLeda's value (``d25_arcmin``); on a simulated
  set it is computed from the generator's noiseless, PSF-free bulge + disk model, as the catalogue value
  (the photographic/CCD isophotal diameters HyperLeda compiles are not re-measured here: no D25 error is
  modelled); the computation lives in :mod:`sim2obs.simgen.isophotes`, which the generator also uses to
  render only D25 > 0.4′ galaxies (``population.d25_min_arcmin``).
- **Cutouts** (:func:`cutout_sides`): the paper's field of view of 1.125 D25, centred on the galaxy, in
  pixels (the "original image size" feature), capped at the stamp (a galaxy larger than the stamp keeps
  the whole stamp; counted in the run record).
- **Photometry** (:func:`aperture_fluxes`): total g and i fluxes *measured on the noisy images* in one
  circular aperture per galaxy, of diameter D25 (capped at the stamp), the same aperture in both bands
  as SDSS measures colours in one aperture for all bands (its model magnitudes use the r-band model in
  every band). Pixels count when their centre lies inside; sky-subtracted images, so the sum is the flux
  plus the sky and Poisson noise of the aperture. These replace the generator's noiseless catalogue
  fluxes in every photometric baseline.
- **Labels** (:func:`noisy_labels`): the paper's target is an SED-fit estimate, not the truth: each
  label is the true M/L times a log-normal error of width ΔΥ/Υ (the catalogue's ``ml_g_err``; its model
  is :func:`sim2obs.simgen.population.ml_relative_error`), drawn per object from (seed, id), so the
  same set and seed give the same labels whatever the split or the order.
"""
from __future__ import annotations

import numpy as np

from sim2obs.simgen.isophotes import B_MINUS_G, MU_25, component_b_fluxes, d25_arcsec, sersic_surface_brightness  # noqa: F401

__all__ = ["d25_arcsec", "component_b_fluxes", "sersic_surface_brightness", "cutout_sides", "crop_centre",
           "aperture_fluxes", "measure_images", "noisy_labels", "B_MINUS_G", "MU_25", "FOV_D25"]

#: Field of view of the paper's cutouts, in units of D25 (§2.1).
FOV_D25 = 1.125


def cutout_sides(d25: np.ndarray, pixel_scale: np.ndarray | float, stamp: int, fov: float = FOV_D25) -> np.ndarray:
    """``(N,)`` int cutout sides in pixels: ``fov`` × D25 (arcsec) / ``pixel_scale``, rounded to the
    stamp's parity (so the cutout stays centred on the stamp's centre), at least 8, at most ``stamp``."""
    side = np.rint(fov * np.asarray(d25, dtype=np.float64) / np.asarray(pixel_scale, dtype=np.float64)).astype(np.int64)
    side += (side - int(stamp)) % 2
    return np.clip(side, 8 + (int(stamp) % 2), int(stamp))


def crop_centre(images: np.ndarray, side: int) -> np.ndarray:
    """The central ``side`` × ``side`` pixels of ``(..., H, W)`` images (H − side even)."""
    h, w = images.shape[-2:]
    y0, x0 = (h - side) // 2, (w - side) // 2
    return images[..., y0:y0 + side, x0:x0 + side]


def aperture_fluxes(images: np.ndarray, radius_px: np.ndarray) -> np.ndarray:
    """``(N, C)`` sums of ``(N, C, H, W)`` images inside centred circles of ``radius_px`` ``(N,)``
    (pixels whose centre lies within the radius of the stamp's centre)."""
    a = np.asarray(images, dtype=np.float64)
    h, w = a.shape[-2:]
    yy, xx = np.mgrid[0:h, 0:w]
    r2 = (yy - 0.5 * (h - 1)) ** 2 + (xx - 0.5 * (w - 1)) ** 2
    inside = r2[None] <= (np.asarray(radius_px, dtype=np.float64) ** 2)[:, None, None]
    return np.einsum("nchw,nhw->nc", a, inside.astype(np.float64))


def noisy_labels(values: np.ndarray, rel_err: np.ndarray, ids: np.ndarray, seed: int) -> np.ndarray:
    """SED-fit-like labels: ``values × exp(δ ε)`` with δ = ``rel_err`` (ΔΥ/Υ) and ε ~ N(0, 1) drawn
    from (``seed``, id) alone, so a galaxy gets the same label in any split, order or subset."""
    v = np.asarray(values, dtype=np.float64)
    e = np.asarray(rel_err, dtype=np.float64)
    eps = np.array([np.random.default_rng([int(seed), 15, int(i)]).standard_normal() for i in np.asarray(ids)])
    return v * np.exp(e * eps)


def measure_images(raw: np.ndarray, bands: tuple[str, ...], d25: np.ndarray | None, pixel_scale: np.ndarray,
                   fov: float | None, size: int, scaling: tuple[float, float, int]) -> dict:
    """Everything the task measures on one chunk of raw stamps ``(N, C, H, W)`` (nanomaggies):

    - ``side``: the cutout side in pixels (1.125 D25, :func:`cutout_sides`; the stamp without D25 or
      ``fov``) and ``capped`` (the cutout wanted more than the stamp);
    - on the g-band cutout: ``scaled`` ``(N, size, size)`` float32 log-scaled images (§2.2: scaling value
      fitted on the cutout, then resampled to ``size`` px: pixel-area interpolation for shrinking,
      bicubic for zooming), ``a``, ``noise``, ``reached``, ``flux`` and ``log`` statistics (§3.2);
    - ``aperture``: ``{band: (N,)}`` fluxes in one centred circle of diameter D25 (capped at the stamp).
    ``pixel_scale``: ``(N,)`` arcsec per pixel; ``scaling``: (target noise level, sigma-clip sigma, iterations)."""
    import torch  # deferred: only the image path needs torch

    from sim2obs.tasks.ml_ratio.preprocessing import resize_images, scale_and_measure

    a = np.asarray(raw, dtype=np.float64)
    n, h = len(a), a.shape[-1]
    g = bands.index("g")
    if d25 is None or fov is None:
        side = np.full(n, h, dtype=np.int64)
        wanted = side
    else:
        wanted = np.rint(fov * np.asarray(d25) / pixel_scale)
        side = cutout_sides(d25, pixel_scale, h, fov)
    radius = np.full(n, 0.5 * h) if d25 is None else np.minimum(0.5 * np.asarray(d25) / pixel_scale, 0.5 * h)
    out: dict = {"side": side.astype(np.float64), "capped": wanted > h,
                 "aperture": dict(zip(bands, aperture_fluxes(a, radius).T)),
                 "scaled": np.empty((n, size, size), dtype=np.float32)}
    parts = {}
    for s in np.unique(side):
        rows = np.flatnonzero(side == s)
        m = scale_and_measure(crop_centre(a[rows, g], int(s)), *scaling)
        out["scaled"][rows] = resize_images(torch.from_numpy(m["scaled"])[:, None], size)[:, 0].numpy()
        for k in ("a", "noise", "reached"):
            parts.setdefault(k, np.empty(n, dtype=m[k].dtype))[rows] = m[k]
        for k in ("flux", "log"):
            for name, v in m[k].items():
                parts.setdefault(k, {}).setdefault(name, np.empty(n))[rows] = v
    out.update(parts)
    return out
