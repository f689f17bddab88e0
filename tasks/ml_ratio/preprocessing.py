"""Image preprocessing of Dobbels et al. (2019, §2.2) and the luminosity statistics of §3.2."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from torch import Tensor
from torch.nn import functional as F

from sim2obs.errors import Sim2obsValueError
from sim2obs.tasks.ml_ratio.config import BAND, LOG_STAT_NAMES, STAT_NAMES

__all__ = ["rescale_unit", "noise_level", "fit_scaling_value", "log_scale", "image_statistics",
           "flux_to_luminosity", "resize_images", "scale_and_measure"]


def _as_stack(images: np.ndarray) -> np.ndarray:
    a = np.asarray(images, dtype=np.float64)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise Sim2obsValueError("images must be (H, W) or (N, H, W)", value=a.shape)
    if not np.isfinite(a).all():
        raise Sim2obsValueError("images contain NaN/inf", value=None)
    return a


def rescale_unit(images: np.ndarray) -> np.ndarray:
    """Linear rescaling of every image to [0, 1] (min to 0, max to 1); a constant image becomes 0."""
    a = _as_stack(images)
    lo = a.min(axis=(1, 2), keepdims=True)
    span = a.max(axis=(1, 2), keepdims=True) - lo
    return np.where(span > 0, (a - lo) / np.where(span > 0, span, 1.0), 0.0)


def noise_level(images: np.ndarray, sigma: float = 3.0, maxiters: int = 5) -> np.ndarray:
    """Noise level per image: mean + 2 std of the sigma-clipped pixels (astropy
    ``sigma_clipped_stats``: median centre, ``sigma`` clipping, ``maxiters`` iterations)."""
    from astropy.stats import sigma_clipped_stats  # deferred: astropy.stats is slow to import

    a = _as_stack(images)
    mean, _, std = sigma_clipped_stats(a, sigma=sigma, maxiters=maxiters, axis=(1, 2))
    return np.asarray(mean + 2.0 * std, dtype=np.float64)


def _log_curve(a: np.ndarray, x: np.ndarray) -> np.ndarray:
    """log(a x + 1) / log(a + 1), elementwise (exact for tiny a: log1p)."""
    return np.log1p(a * x) / np.log1p(a)


def fit_scaling_value(unit_images: np.ndarray, target: float = 0.2, sigma: float = 3.0, maxiters: int = 5,
                      bounds: tuple[float, float] = (1e-4, 1e8)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The automatic scaling value of Dobbels et al. (2019, §2.2) for images already rescaled to [0, 1].

    The noise level n (:func:`noise_level`) maps to log(a n + 1) / log(a + 1), which rises
    monotonically from n (a → 0, linear) to 1 (a → ∞); ``a`` is found by bisection in log a so that
    it equals ``target``. Noisy images with n ≥ ``target`` cannot reach it and get the smallest
    ``a`` (nearly linear scaling); noiseless ones (n = 0) the largest.

    Returns ``(a, n, reached)``: per-image scaling values, input noise levels, and whether the
    output noise level equals ``target``.
    """
    if not 0.0 < target < 1.0:
        raise Sim2obsValueError("the target noise level must lie in (0, 1)", value=target)
    n = noise_level(unit_images, sigma, maxiters)
    lo = np.full(n.shape, math.log10(bounds[0]))
    hi = np.full(n.shape, math.log10(bounds[1]))
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        below = _log_curve(10.0 ** mid, n) < target
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    a = 10.0 ** (0.5 * (lo + hi))
    reached = np.abs(_log_curve(a, n) - target) < 1e-6
    return a, n, reached


def log_scale(unit_images: np.ndarray, a: np.ndarray | float) -> np.ndarray:
    """F' = log(a F + 1) / log(a + 1) for images F in [0, 1] (one ``a`` per image or a scalar)."""
    f = _as_stack(unit_images)
    a = np.broadcast_to(np.asarray(a, dtype=np.float64), (len(f),)).reshape(-1, 1, 1)
    if (a <= 0).any():
        raise Sim2obsValueError("scaling values must be positive", value=float(a.min()))
    return np.clip(_log_curve(a, np.clip(f, 0.0, 1.0)), 0.0, 1.0)


def _centre_slices(h: int, w: int, half: int) -> tuple[slice, slice]:
    cy, cx = h // 2, w // 2
    return slice(cy - half, cy + half + 1), slice(cx - half, cx + half + 1)


def image_statistics(images: np.ndarray, names: Sequence[str] = STAT_NAMES) -> dict[str, np.ndarray]:
    """Per-image statistics (§3.2): ``sum``, ``mean``, ``max``, ``min``, ``std`` over all pixels,
    ``centre`` (pixel [H//2, W//2]) and ``centre5`` (mean of the 5 x 5 pixels around it)."""
    a = _as_stack(images)
    h, w = a.shape[1:]
    ys, xs = _centre_slices(h, w, 2)
    every = {"sum": lambda: a.sum(axis=(1, 2)), "mean": lambda: a.mean(axis=(1, 2)),
             "max": lambda: a.max(axis=(1, 2)), "min": lambda: a.min(axis=(1, 2)),
             "std": lambda: a.std(axis=(1, 2)), "centre": lambda: a[:, h // 2, w // 2],
             "centre5": lambda: a[:, ys, xs].mean(axis=(1, 2))}
    return {k: np.asarray(every[k](), dtype=np.float64) for k in names}


def flux_to_luminosity(distance_mpc: np.ndarray, band: str = BAND) -> np.ndarray:
    """Solar luminosities per nanomaggy at luminosity distance ``distance_mpc`` (AB system, no
    K-correction: the convention of the catalogue's ``lum_<band>``): 4πD² times the flux, in L_sun."""
    from sim2obs.simgen.population import BAND_DATA  # deferred: sim2obs.simgen takes ~2 s to import

    d_pc = np.asarray(distance_mpc, dtype=np.float64) * 1e6
    msun = BAND_DATA[band]["msun_ab"]
    return 10.0 ** (-0.4 * (22.5 - msun)) * (d_pc / 10.0) ** 2


def resize_images(x: Tensor, size: int | None) -> Tensor:
    """``(N, C, H, W)`` images to ``size`` x ``size`` (Dobbels et al.: pixel-area interpolation for
    shrinking, bicubic for zooming), clipped to [0, 1]; ``None`` or the same size: unchanged."""
    if size is None or (x.shape[-2] == size and x.shape[-1] == size):
        return x
    if size < min(x.shape[-2:]):
        return F.interpolate(x, size=(size, size), mode="area")
    return F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp_(0.0, 1.0)


def scale_and_measure(raw: np.ndarray, target: float, sigma: float, maxiters: int) -> dict:
    """One chunk of raw g-band images ``(N, H, W)``: ``scaled`` float32 log-scaled images (§2.2),
    their scaling values ``a``, input ``noise`` levels and whether the target was ``reached``,
    ``flux`` statistics of the raw images and ``log`` statistics of the scaled ones (§3.2)."""
    unit = rescale_unit(raw)
    a, noise, reached = fit_scaling_value(unit, target, sigma, maxiters)
    scaled = log_scale(unit, a)
    return {"scaled": scaled.astype(np.float32), "a": a, "noise": noise, "reached": reached,
            "flux": image_statistics(raw), "log": image_statistics(scaled, LOG_STAT_NAMES)}
