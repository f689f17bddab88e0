"""Image operations shared by the generators and the tasks."""
from __future__ import annotations

import numpy as np

from sim2obs.errors import Sim2obsValueError

__all__ = ["rebin"]


def _rebin_matrix(size: int, n: int) -> np.ndarray:
    """(n, size) weights: output pixel i averages the input pixels it covers, by overlap area
    (rows sum to 1; exact block averages when ``n`` divides ``size``)."""
    edges = np.linspace(0.0, float(size), n + 1)
    left = np.arange(size, dtype=np.float64)
    overlap = np.minimum(edges[1:, None], left[None, :] + 1.0) - np.maximum(edges[:-1, None], left[None, :])
    return np.clip(overlap, 0.0, None) * (n / float(size))


def rebin(images: np.ndarray, n: int) -> np.ndarray:
    """Re-bin images ``(..., H, W)`` to ``(..., n, n)`` pixels (``1 <= n <= min(H, W)``): every
    output pixel is the mean of the input area it covers, so the image mean is conserved and the
    total flux is conserved up to the pixel-area factor (sum_out x (H/n)(W/n) = sum_in)."""
    x = np.asarray(images)
    if x.ndim < 2:
        raise Sim2obsValueError("rebin needs images of shape (..., H, W)", value=x.shape)
    h, w = x.shape[-2:]
    if not 1 <= int(n) <= min(h, w):
        raise Sim2obsValueError(f"cannot re-bin {h}x{w} images to {n} px", value=n, allowed=f"1..{min(h, w)}")
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
    ry = _rebin_matrix(h, int(n)).astype(dtype)
    rx = _rebin_matrix(w, int(n)).astype(dtype)
    return np.matmul(np.matmul(ry, x.astype(dtype, copy=False)), rx.T)
