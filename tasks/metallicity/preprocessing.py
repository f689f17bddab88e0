"""Preprocessing of Wu & Boada (2019): the Lupton et al. (2004) asinh RGB composite of the g, r, i
images, and the re-binning of the resolution study (:func:`sim2obs.imaging.rebin`)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from sim2obs.errors import Sim2obsValueError
from sim2obs.imaging import rebin
from sim2obs.tasks.metallicity.config import BANDS, RGBConfig

__all__ = ["lupton_rgb", "rebin", "block_replicate"]


def lupton_rgb(images: np.ndarray, bands: Sequence[str] = BANDS, config: RGBConfig | None = None) -> np.ndarray:
    """Lupton et al. (2004) asinh RGB composite of g, r, i images.

    ``images``: ``(C, H, W)`` or ``(N, C, H, W)`` fluxes whose channels are ``bands``. Returns
    float32 ``(3, H, W)`` or ``(N, 3, H, W)`` in [0, 1], channels R, G, B = ``config.channels``
    (default i, r, g). Pixel-wise (no image statistics enter), so a batch maps exactly like its
    images one by one. Uses :func:`astropy.visualization.make_lupton_rgb`.
    """
    # deferred: astropy.visualization takes ~1.5 s to import
    from astropy.visualization import LuptonAsinhStretch, ManualInterval, make_lupton_rgb

    cfg = config or RGBConfig()
    x = np.asarray(images, dtype=np.float32)  # float32 halves the cost; the stretch needs no more
    single = x.ndim == 3
    if single:
        x = x[None]
    if x.ndim != 4:
        raise Sim2obsValueError("images must be (C, H, W) or (N, C, H, W)", value=x.shape)
    bands = list(bands)
    if x.shape[1] != len(bands):
        raise Sim2obsValueError(f"images have {x.shape[1]} channels but bands {bands}", value=x.shape)
    missing = [b for b in cfg.channels if b not in bands]
    if missing:
        raise Sim2obsValueError(f"the RGB channels need bands {missing}, the images have {bands}", value=missing)
    n, _, h, w = x.shape
    # (N, H, W) -> (N*H, W): make_lupton_rgb takes 2-D images; the mapping is pixel-wise.
    planes = [x[:, bands.index(b)].reshape(n * h, w) * float(cfg.band_scales.get(b, 1.0)) for b in cfg.channels]
    stretch = LuptonAsinhStretch(stretch=float(cfg.stretch), Q=float(cfg.Q))
    with np.errstate(invalid="ignore", divide="ignore"):  # f(I)/I at I = 0 (astropy then maps it to 0)
        rgb = make_lupton_rgb(*planes, interval=ManualInterval(vmin=float(cfg.minimum), vmax=None),
                              stretch_object=stretch, output_dtype=np.float64)  # (N*H, W, 3)
    out = np.ascontiguousarray(rgb.reshape(n, h, w, 3).transpose(0, 3, 1, 2), dtype=np.float32)
    return out[0] if single else out


def block_replicate(x: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour up-sampling by an integer factor (no new information)."""
    return x if factor <= 1 else np.repeat(np.repeat(x, factor, axis=-2), factor, axis=-1)
