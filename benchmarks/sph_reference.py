"""Straightforward per-particle reference implementations of the maps in
:mod:`sim2obs.simgen.particle_maps` (same definitions, one particle at a time).

Used by ``tests/simgen/test_particle_maps.py`` (equality) and ``benchmarks/test_bench_tng_maps.py``
(speed). Slow on purpose: never call these in the product.
"""
from __future__ import annotations

import math

import numpy as np


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
