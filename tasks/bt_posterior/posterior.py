"""Posterior summaries: the mode of MC-dropout samples, the distance of a coverage from nominal,
the dropout-rate selection of Ghosh et al. (2021) and draws from a diagonal-Gaussian head."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from sim2obs.errors import Sim2obsValueError

__all__ = ["posterior_mode", "selection_distance", "select_dropout_rate", "aleatoric_draws"]


def posterior_mode(samples, bins: int = 256, chunk: int = 32) -> np.ndarray:
    """Mode of each marginal posterior: ``(S, ...)`` samples -> ``(...)``.

    A Gaussian kernel density (Silverman's bandwidth ``0.9 min(σ, IQR/1.34) S^-1/5``) on a grid
    of ``bins`` points spanning each column's samples, computed from a histogram (binned KDE);
    the grid maximum is refined by a parabola through it and its neighbours. A column whose
    samples are all equal returns that value."""
    s = np.asarray(samples, dtype=np.float64)
    if s.ndim < 1 or s.shape[0] < 2:
        raise Sim2obsValueError("the mode needs at least 2 samples per posterior", value=s.shape)
    if not np.isfinite(s).all():
        raise Sim2obsValueError("posterior samples contain NaN/inf")
    n = s.shape[0]
    flat = s.reshape(n, -1)
    out = np.empty(flat.shape[1])
    offsets = np.arange(bins)
    for start in range(0, flat.shape[1], chunk):
        x = flat[:, start:start + chunk]
        m = x.shape[1]
        lo, hi = x.min(axis=0), x.max(axis=0)
        span = hi - lo
        q75, q25 = np.percentile(x, [75, 25], axis=0)
        spread = np.minimum(x.std(axis=0), (q75 - q25) / 1.34)
        spread = np.where(spread > 0, spread, x.std(axis=0))
        h = 0.9 * spread * n ** -0.2
        flat_col = span <= 0
        width = np.where(flat_col, 1.0, span / (bins - 1))
        idx = np.clip(np.rint((x - lo) / width), 0, bins - 1).astype(np.int64)
        counts = np.bincount((idx + np.arange(m) * bins).ravel(), minlength=m * bins).reshape(m, bins)
        ratio = np.where(h > 0, width / np.where(h > 0, h, 1.0), 1.0)  # bin width in bandwidths
        diff = offsets[:, None] - offsets[None, :]  # (bins, bins)
        kernel = np.exp(-0.5 * (diff[None, :, :] * ratio[:, None, None]) ** 2)  # (m, bins, bins)
        density = np.einsum("mjk,mk->mj", kernel, counts.astype(np.float64))
        j = density.argmax(axis=1)
        jm, jp = np.clip(j - 1, 0, bins - 1), np.clip(j + 1, 0, bins - 1)
        rows = np.arange(m)
        y0, y1, y2 = density[rows, jm], density[rows, j], density[rows, jp]
        denom = y0 - 2 * y1 + y2
        inner = (j > 0) & (j < bins - 1) & (denom < 0)
        shift = np.where(inner, 0.5 * (y0 - y2) / np.where(inner, denom, 1.0), 0.0)
        mode = lo + (j + np.clip(shift, -0.5, 0.5)) * width
        out[start:start + m] = np.where(flat_col, lo, mode)
    return out.reshape(s.shape[1:])


def selection_distance(coverages: Mapping[float, Any]) -> float:
    """Mean |empirical − nominal| over the levels (keys, fractions) and, where a level maps to
    several values (one per target), over those."""
    devs = [np.abs(np.asarray(v, dtype=np.float64) - float(level)).ravel() for level, v in coverages.items()]
    if not devs:
        raise Sim2obsValueError("no coverage to compare with its nominal level")
    return float(np.mean(np.concatenate(devs)))


def select_dropout_rate(coverages: Mapping[float, Mapping[float, Any]]) -> tuple[float, dict[float, float]]:
    """The dropout rate whose validation coverage is closest to nominal (Ghosh et al. 2021).

    ``coverages``: ``{rate: {nominal level: empirical coverage (a float, or one per target)}}``.
    Returns ``(rate, {rate: distance})`` with the distance of :func:`selection_distance`; ties go
    to the smaller rate."""
    if not coverages:
        raise Sim2obsValueError("no dropout rate to select from")
    distances = {float(rate): selection_distance(cov) for rate, cov in coverages.items()}
    best = min(sorted(distances), key=lambda r: (round(distances[r], 12), r))
    return best, distances


def aleatoric_draws(outputs, num_targets: int, generator=None):
    """Diagonal-Gaussian head outputs ``(..., 2n)`` = ``[mean | log-variance]`` -> one draw
    ``mean + exp(log-variance / 2) · ε`` per row ``(..., n)`` (torch tensors); combined with MC
    dropout this samples epistemic and aleatoric uncertainty together."""
    mean, log_var = outputs[..., :num_targets], outputs[..., num_targets:2 * num_targets].clamp(-15.0, 15.0)
    eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device="cpu").to(mean.device)
    return mean + torch.exp(0.5 * log_var) * eps

