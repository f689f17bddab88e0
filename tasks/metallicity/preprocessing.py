"""Preprocessing of Wu & Boada (2019): the Lupton et al. (2004) asinh RGB composite of the g, r, i
images, and the re-binning of the resolution study (:func:`sim2obs.imaging.rebin`)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from sim2obs.errors import Sim2obsValueError
from sim2obs.imaging import rebin
from sim2obs.tasks.metallicity.config import BANDS, RGBConfig

__all__ = ["lupton_rgb", "rebin", "block_replicate", "colour_variant", "noisy_labels"]


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


def colour_variant(rgb: np.ndarray, colour: str, channels: Sequence[str] = ("i", "r", "g")) -> np.ndarray:
    """The colour study of Wu & Boada (2019, §5.3, Fig. 4) on ``(N, 3, H, W)`` RGB composites whose
    channels are the bands ``channels``: ``"r"``: the r channel copied into all three (single-band
    images); ``"gr"``: the red channel from r, the blue from g, the green the mean of the two (as
    the paper built its g + r JPEGs); ``"gri"``: unchanged. Returns a new float32 array."""
    x = np.asarray(rgb, dtype=np.float32)
    pos = {b: k for k, b in enumerate(channels)}
    if colour == "gri":
        return x.copy()
    if colour == "r":
        return np.repeat(x[:, pos["r"]:pos["r"] + 1], 3, axis=1)
    if colour == "gr":
        r, g = x[:, pos["r"]], x[:, pos["g"]]
        return np.stack([r, 0.5 * (r + g), g], axis=1)
    raise Sim2obsValueError("unknown colour-study band set", value=colour, allowed=["r", "gr", "gri"])


def noisy_labels(labels: np.ndarray, sigma: float, seed: int, split: str) -> np.ndarray:
    """``labels`` plus N(0, ``sigma``) scatter (dex; Wu & Boada 2019 §5.2), drawn from a stream of
    its own (``seed``, sigma in 1e-4 dex, the split's name), so the same settings give the same
    labels and the networks' other random numbers are untouched. ``sigma = 0``: unchanged."""
    y = np.asarray(labels, dtype=np.float64)
    if not sigma > 0:
        return y.copy()
    key = [int(seed), 52, int(round(float(sigma) * 1e4)), *split.encode()]
    return y + np.random.default_rng(key).normal(0.0, float(sigma), y.shape)
