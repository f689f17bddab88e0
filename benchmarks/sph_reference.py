"""Reference implementations of the maps in :mod:`sim2obs.simgen.particle_maps`.

* :func:`sph_image_loop`, :func:`ngp_moments_loop`: straightforward, one particle at a time (same
  definitions; every SPH footprint normalised by its exact sum over pixel centres).
* :func:`sph_image_numpy`: sim2obs's previous, vectorised numpy renderer (particles grouped by
  footprint size, scattered with ``bincount``), independent code from the compiled one; itself
  checked against the loop in the tests. Like the product, it normalises footprints wider than
  ``EXACT_NORM_MAX_HALF_WIDTH`` pixels each side by the kernel integral (< 3e-7 relative).

Used by ``tests/simgen/test_particle_maps.py`` (agreement) and ``benchmarks/test_bench_tng_maps.py``
(speed and agreement). Slow on purpose: never call these in the product.
"""
from __future__ import annotations

import math

import numpy as np

from sim2obs.simgen.particle_maps import _spline_shape_q2  # the kernel shape both renderers share

KERNEL_NORM_2D = 40.0 / (7.0 * math.pi)
EXACT_NORM_MAX_HALF_WIDTH = 24
_CHUNK_ELEMENTS = 1 << 16  # kernel evaluations per vectorised step


def _spline_shape(q: float) -> float:
    if q <= 0.5:
        return 1.0 - 6.0 * q**2 + 6.0 * q**3
    if q < 1.0:
        return 2.0 * (1.0 - q) ** 3
    return 0.0


def sph_image_loop(xy, weights, h, half_width, npix):
    """SPH image, one particle at a time: cubic spline at every pixel centre of the particle's whole
    footprint (inside the frame or not), normalised by its sum over that footprint; a particle whose
    support holds no pixel centre goes into its containing pixel. (npix, npix) or (K, npix, npix)."""
    xy = np.asarray(xy, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    w2 = w[:, None] if w.ndim == 1 else w
    dx = 2.0 * half_width / npix
    image = np.zeros((w2.shape[1], npix, npix))
    for p in range(len(xy)):
        u = (xy[p, 0] + half_width) / dx
        v = (xy[p, 1] + half_width) / dx
        s = h[p] / dx
        shares = {}
        for col in range(math.floor(u - s - 1), math.ceil(u + s + 1) + 1):
            for row in range(math.floor(v - s - 1), math.ceil(v + s + 1) + 1):
                r = math.hypot(col + 0.5 - u, row + 0.5 - v)
                value = _spline_shape(r / s) if s > 0 else 0.0
                if value > 0:
                    shares[(row, col)] = value
        if not shares:
            shares = {(math.floor(v), math.floor(u)): 1.0}
        total = sum(shares.values())
        for (row, col), value in shares.items():
            if 0 <= row < npix and 0 <= col < npix:
                image[:, row, col] += w2[p] * value / total
    return image[0] if w.ndim == 1 else image


def sph_image_numpy(xy, weights, h, half_width, npix):
    """SPH image by sim2obs's previous vectorised numpy renderer: (npix, npix) or (K, npix, npix).

    Inputs as :func:`sim2obs.simgen.particle_maps.sph_image` (no validation)."""
    xy = np.asarray(xy, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    h = np.asarray(h, dtype=np.float64)
    npix = int(npix)
    dx = 2.0 * half_width / npix
    w2 = w[:, None] if w.ndim == 1 else w
    n_channels = w2.shape[1]
    out = np.zeros((n_channels, npix * npix))

    u = (xy + half_width) / dx  # continuous pixel coordinates (column, row)
    s = h / dx                  # support radius in pixels
    i0 = np.floor(u).astype(np.int64)  # containing pixel
    # Particles whose support holds no pixel centre other than (at most) their own pixel's, the
    # nearest: all their weight goes there. (The margin keeps rounding from emptying a footprint.)
    centre_dist = np.hypot(u[:, 0] - i0[:, 0] - 0.5, u[:, 1] - i0[:, 1] - 0.5)
    point = (centre_dist >= s * (1.0 - 1e-9)) | (s <= 0.5)
    inside = np.all((i0 >= 0) & (i0 < npix), axis=1)
    sel = point & inside
    flat = i0[sel, 1] * npix + i0[sel, 0]
    for c in range(n_channels):
        out[c] += np.bincount(flat, weights=w2[sel, c], minlength=npix * npix)

    k = np.floor(s + 0.5).astype(np.int64)  # footprint half-width: centres of pixels i0 +- k at most
    touches = np.all((i0 + k[:, None] >= 0) & (i0 - k[:, None] < npix), axis=1)
    spread = ~point & touches

    # Footprints up to kmax pixels each side: whole (2k+1)^2 stencils, exact normalisation, on a
    # canvas with margins that take every such footprint touching the frame (cropped at the end).
    kmax = EXACT_NORM_MAX_HALF_WIDTH
    pad = 2 * kmax
    side = npix + 2 * pad
    canvas = np.zeros((n_channels, side * side))
    small = np.flatnonzero(spread & (k <= kmax))
    small = small[np.lexsort((i0[small, 0], i0[small, 1], k[small]))]  # by size, then position
    bounds = np.flatnonzero(np.diff(k[small])) + 1
    for group in np.split(small, bounds) if len(small) else []:
        kk = int(k[group[0]])
        offsets = np.arange(-kk, kk + 1)
        step = max(1, _CHUNK_ELEMENTS // len(offsets) ** 2)
        for start in range(0, len(group), step):
            part = group[start:start + step]
            pix = i0[part, :, None] + offsets  # (n, 2, 2k+1) frame pixel indices (col, row)
            centre_offset = pix + 0.5 - u[part, :, None]
            _deposit(canvas, side, (pix[:, 0] + pad, pix[:, 1] + pad), (centre_offset[:, 0], centre_offset[:, 1]),
                     s[part], w2[part], exact_norm=True)
    canvas = canvas.reshape(n_channels, side, side)[:, pad:pad + npix, pad:pad + npix]
    out += canvas.reshape(n_channels, -1)

    # Wider footprints: only their windows clipped to the frame, normalised by the kernel integral;
    # chunks share one window size, and pixels past the frame go to a discarded last row/column.
    big = np.flatnonzero(spread & (k > kmax))
    if len(big):
        lo = np.maximum(i0[big] - k[big, None], 0)
        size = np.minimum(i0[big] + k[big, None], npix - 1) - lo + 1
        order = np.lexsort((size[:, 0], size[:, 1]))
        big, lo, size = big[order], lo[order], size[order]
        side = npix + 1
        canvas = np.zeros((n_channels, side * side))
        start = 0
        while start < len(big):
            m = max(1, _CHUNK_ELEMENTS // int(size[start].prod()))
            while True:  # the chunk's window stays within the budget (or holds one particle)
                wx, wy = size[start:start + m].max(axis=0)
                if m == 1 or int(wx) * int(wy) * m <= _CHUNK_ELEMENTS:
                    break
                m //= 2
            part = big[start:start + m]
            cols = lo[start:start + m, 0, None] + np.arange(wx)
            rows = lo[start:start + m, 1, None] + np.arange(wy)
            _deposit(canvas, side, (np.minimum(cols, npix), np.minimum(rows, npix)),
                     (cols + 0.5 - u[part, 0, None], rows + 0.5 - u[part, 1, None]), s[part], w2[part],
                     exact_norm=False)
            start += m
        out += canvas.reshape(n_channels, side, side)[:, :npix, :npix].reshape(n_channels, -1)
    out = out.reshape(n_channels, npix, npix)
    return out[0] if w.ndim == 1 else out


def _deposit(canvas, stride, index, offset, s, w, exact_norm):
    """Add particles' shares to ``canvas`` (K, rows * stride).

    ``index`` = (cols (n, nc), rows (n, nr)): canvas pixel indices of each particle's window, both
    non-decreasing; ``offset`` = (dx (n, nc), dy (n, nr)): pixel-centre offsets from the particle
    (pixels); ``s`` (n,): support radius (pixels); ``w`` (n, K). Shares are the spline at the pixel
    centres, normalised by their sum over the window (``exact_norm``: the window holds the whole
    footprint) or by the kernel integral."""
    cols, rows = index
    inv_s = 1.0 / s
    dxc = offset[0] * inv_s[:, None]
    dyr = offset[1] * inv_s[:, None]
    dxc *= dxc
    dyr *= dyr
    frac = _spline_shape_q2(dyr[:, :, None] + dxc[:, None, :])  # (n, nr, nc)
    norm = 1.0 / frac.sum(axis=(1, 2)) if exact_norm else KERNEL_NORM_2D * inv_s**2
    first = int((rows[:, 0] * stride + cols[:, 0]).min())
    length = int((rows[:, -1] * stride + cols[:, -1]).max()) - first + 1
    flat = ((rows * stride - first)[:, :, None] + cols[:, None, :]).ravel()
    if canvas.shape[0] == 1:
        frac *= (norm * w[:, 0])[:, None, None]
        canvas[0, first:first + length] += np.bincount(flat, weights=frac.ravel(), minlength=length)
        return
    frac *= norm[:, None, None]
    for c in range(canvas.shape[0]):
        contrib = (frac * w[:, c, None, None]).ravel()
        canvas[c, first:first + length] += np.bincount(flat, weights=contrib, minlength=length)


def ngp_moments_loop(xy, v_los, weights, half_width, npix, min_count=1):
    """NGP weighted mean, dispersion and count maps, one particle at a time."""
    dx = 2.0 * half_width / npix
    members = {}
    for p in range(len(xy)):
        col = math.floor((xy[p, 0] + half_width) / dx)
        row = math.floor((xy[p, 1] + half_width) / dx)
        if 0 <= row < npix and 0 <= col < npix:
            members.setdefault((row, col), []).append(p)
    mean = np.zeros((npix, npix))
    sigma = np.zeros((npix, npix))
    count = np.zeros((npix, npix), dtype=np.int64)
    for (row, col), ps in members.items():
        count[row, col] = len(ps)
        wsum = sum(weights[p] for p in ps)
        if len(ps) < max(min_count, 1) or wsum <= 0:
            continue
        m = sum(weights[p] * v_los[p] for p in ps) / wsum
        mean[row, col] = m
        sigma[row, col] = math.sqrt(sum(weights[p] * (v_los[p] - m) ** 2 for p in ps) / wsum)
    return mean, sigma, count
