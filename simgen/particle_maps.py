"""Maps from simulation particles in physical units (kpc, km/s, Msun, Lsun).

Pixel convention (shared by every map here): a map of ``npix`` x ``npix`` pixels spans
``[-half_width, half_width)`` kpc on both projected axes, pixel edges
``linspace(-half_width, half_width, npix + 1)``; ``image[row, col]`` with ``col`` along the first
projected axis (x) and ``row`` along the second (y). A particle exactly on the upper edge is outside.

Projection (see :func:`project`): for a line of sight along box axis ``los`` the columns are axis
``(los + 1) % 3`` and the rows axis ``(los + 2) % 3``; ``v_los`` is the velocity component along
+``los``.

* :func:`sph_image`: SPH-smoothed images with the 2-D cubic-spline kernel (Monaghan 1992; support
  radius ``h``, Gadget convention), each particle normalised over its own full footprint.
* :func:`smoothing_lengths`: ``h`` = distance to the n-th nearest other particle (3-D).
* :func:`ngp_moments`: nearest-grid-point weighted mean and dispersion maps (kinematic maps).
* :func:`band_luminosity`, :func:`colour_map`: Lsun per band from AB magnitudes and g - r maps.
* :func:`dust_transmission`: the optional simple two-component dust model of Charlot & Fall (2000).
"""
from __future__ import annotations

import math

import numpy as np
from scipy.spatial import cKDTree

from sim2obs.errors import Sim2obsValueError

__all__ = [
    "PHOTOMETRIC_BANDS",
    "SOLAR_ABS_MAG",
    "MSUN_G_AB",
    "MSUN_R_AB",
    "project",
    "smoothing_lengths",
    "cubic_spline_2d",
    "sph_image",
    "ngp_moments",
    "pixel_radius",
    "band_luminosity",
    "colour_map",
    "dust_transmission",
]

#: columns of TNG's GFM_StellarPhotometrics / SubhaloStellarPhotometrics
PHOTOMETRIC_BANDS = ("U", "B", "V", "K", "g", "r", "i", "z")
#: absolute magnitudes of the Sun in those bands (Willmer 2018, ApJS 236, 47): U, B, V, K Vega; g, r, i, z AB
SOLAR_ABS_MAG = np.array([5.61, 5.44, 4.81, 3.27, 5.11, 4.65, 4.53, 4.50])
MSUN_G_AB = float(SOLAR_ABS_MAG[4])
MSUN_R_AB = float(SOLAR_ABS_MAG[5])

_KERNEL_NORM_2D = 40.0 / (7.0 * math.pi)  # 2-D cubic spline, support radius h: W = norm / h^2 * f(r/h)
# Footprints up to this half-width (pixels) are normalised by their exact sum over pixel centres;
# wider ones by the kernel integral (the sum over centres then differs from it by < 3e-7).
_EXACT_NORM_MAX_HALF_WIDTH = 24
_CHUNK_ELEMENTS = 1 << 16  # kernel evaluations per vectorised step (stays in cache)


def project(pos: np.ndarray, vel: np.ndarray, los_axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Project along box axis ``los_axis`` (0, 1, 2 = x, y, z).

    ``pos``, ``vel``: (N, 3). Returns ``xy`` (N, 2) = columns ``(los+1) % 3`` and ``(los+2) % 3`` of
    ``pos`` (image x = column, image y = row) and ``v_los`` (N,) = ``vel[:, los_axis]``.
    """
    if los_axis not in (0, 1, 2):
        raise Sim2obsValueError("line-of-sight axis must be 0, 1 or 2", value=los_axis, allowed=(0, 1, 2))
    pos = _as_points(pos, 3, "pos")
    vel = _as_points(vel, 3, "vel")
    if len(vel) != len(pos):
        raise Sim2obsValueError("pos and vel need the same number of particles", value=(len(pos), len(vel)))
    cols = [(los_axis + 1) % 3, (los_axis + 2) % 3]
    return pos[:, cols].copy(), vel[:, los_axis].copy()


def smoothing_lengths(pos: np.ndarray, n_neighbours: int = 32, workers: int = 1) -> np.ndarray:
    """SPH smoothing lengths (N,) in the units of ``pos`` (N, 3), e.g. kpc.

    ``h`` is the 3-D distance to the ``n_neighbours``-th nearest *other* particle (scipy cKDTree).
    With fewer than ``n_neighbours`` other particles it is the distance to the farthest one; a lone
    particle gets ``h = 0``, which :func:`sph_image` deposits into its containing pixel.
    """
    pos = _as_points(pos, 3, "pos")
    if int(n_neighbours) < 1:
        raise Sim2obsValueError("n_neighbours must be at least 1", value=n_neighbours, allowed=">= 1")
    n = len(pos)
    if n <= 1:
        return np.zeros(n)
    k = min(int(n_neighbours), n - 1) + 1  # the particle itself is its own nearest neighbour
    dist, _ = cKDTree(pos).query(pos, k=[k], workers=workers)
    return dist[:, 0]


def cubic_spline_2d(r: np.ndarray, h: np.ndarray) -> np.ndarray:
    """2-D cubic-spline kernel W(r, h) (1/area), support radius ``h`` (Monaghan 1992, Gadget form).

    W = 40 / (7 pi h^2) * {1 - 6q^2 + 6q^3 for q <= 1/2; 2 (1 - q)^3 for 1/2 < q <= 1; 0}, q = r/h;
    its integral over the plane is 1.
    """
    r = np.asarray(r, dtype=np.float64)
    h = np.asarray(h, dtype=np.float64)
    return _KERNEL_NORM_2D / h**2 * _spline_shape_q2(np.atleast_1d((r / h) ** 2)).reshape(np.shape(r / h))


def sph_image(xy: np.ndarray, weights: np.ndarray, h: np.ndarray, half_width: float, npix: int) -> np.ndarray:
    """SPH image of particle ``weights`` (e.g. Lsun): the sum of the weights per pixel.

    ``xy`` (N, 2) kpc (column = x, row = y), ``weights`` (N,) or (N, K), ``h`` (N,) kpc.
    Returns (npix, npix), or (K, npix, npix) for (N, K) weights; float64.

    Every particle spreads its weight over the pixels whose centres lie within ``h``, in proportion
    to the 2-D cubic spline (:func:`cubic_spline_2d`) at those centres, normalised over its whole
    footprint including pixels outside the frame: a particle entirely inside the frame contributes
    exactly its weight, and the part of a footprint outside the frame is lost. A particle whose
    support holds no pixel centre (h small against a pixel) goes wholly into its containing pixel.
    Footprints wider than 24 pixels each side are normalised by the kernel integral instead of
    the sum over centres (relative difference < 3e-7).

    Vectorised: particles are grouped by footprint size in pixels and scattered with bincount.
    """
    xy = _as_points(xy, 2, "xy")
    n = len(xy)
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim not in (1, 2) or len(w) != n:
        raise Sim2obsValueError("weights must be (N,) or (N, K) with N the number of particles", value=w.shape)
    h = np.asarray(h, dtype=np.float64)
    if h.shape != (n,):
        raise Sim2obsValueError("h must be (N,)", value=h.shape)
    if not np.all(np.isfinite(h)) or np.any(h < 0):
        raise Sim2obsValueError("smoothing lengths must be finite and >= 0")
    if not np.all(np.isfinite(w)):
        raise Sim2obsValueError("weights must be finite")
    npix, dx = _check_frame(half_width, npix)
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
    kmax = _EXACT_NORM_MAX_HALF_WIDTH
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
    norm = 1.0 / frac.sum(axis=(1, 2)) if exact_norm else _KERNEL_NORM_2D * inv_s**2
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


def _spline_shape_q2(q2):
    """Cubic-spline shape f(q) = 2 (1 - q)_+^3 - 8 (1/2 - q)_+^3 from q^2 (overwrites ``q2``)."""
    q = np.sqrt(q2, out=q2)
    inner = np.subtract(0.5, q)
    np.maximum(inner, 0.0, out=inner)
    outer = np.subtract(1.0, q, out=q)
    np.maximum(outer, 0.0, out=outer)
    result = outer * outer
    result *= outer
    result *= 2.0
    cube = inner * inner
    cube *= inner
    cube *= 8.0
    result -= cube
    return result


def ngp_moments(
    xy: np.ndarray, v_los: np.ndarray, weights: np.ndarray, half_width: float, npix: int, min_count: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest-grid-point kinematic maps.

    ``xy`` (N, 2) kpc, ``v_los`` (N,) km/s, ``weights`` (N,) (e.g. Lsun). Returns ``mean_v``
    (npix, npix) km/s, the weighted mean per pixel; ``sigma`` (npix, npix) km/s, the square root of
    the weighted variance sum w (v - mean)^2 / sum w; ``count`` (npix, npix) int64, particles per
    pixel. Pixels with ``count < min_count`` (or no weight) get mean = sigma = 0.
    """
    xy = _as_points(xy, 2, "xy")
    v = np.asarray(v_los, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if v.shape != (len(xy),) or w.shape != (len(xy),):
        raise Sim2obsValueError("v_los and weights must be (N,)", value=(v.shape, w.shape))
    if not (np.all(np.isfinite(v)) and np.all(np.isfinite(w))):
        raise Sim2obsValueError("v_los and weights must be finite")
    npix, dx = _check_frame(half_width, npix)
    i = np.floor((xy + half_width) / dx).astype(np.int64)
    inside = np.all((i >= 0) & (i < npix), axis=1)
    flat = i[inside, 1] * npix + i[inside, 0]
    v, w = v[inside], w[inside]
    size = npix * npix
    count = np.bincount(flat, minlength=size)
    wsum = np.bincount(flat, weights=w, minlength=size)
    good = (count >= max(int(min_count), 1)) & (wsum > 0)
    mean = np.zeros(size)
    mean[good] = np.bincount(flat, weights=w * v, minlength=size)[good] / wsum[good]
    var = np.zeros(size)
    var[good] = np.bincount(flat, weights=w * (v - mean[flat]) ** 2, minlength=size)[good] / wsum[good]
    shape = (npix, npix)
    return mean.reshape(shape), np.sqrt(var).reshape(shape), count.reshape(shape)


def pixel_radius(half_width: float, npix: int) -> np.ndarray:
    """(npix, npix) projected distance (kpc) of each pixel centre from the map centre."""
    npix, dx = _check_frame(half_width, npix)
    centres = -half_width + dx * (np.arange(npix) + 0.5)
    return np.hypot(centres[None, :], centres[:, None])


def band_luminosity(abs_mag: np.ndarray, msun_band: float) -> np.ndarray:
    """Luminosity in solar units of that band (Lsun) from absolute AB magnitudes:
    L = 10**(-0.4 (M - Msun_band))."""
    return 10.0 ** (-0.4 * (np.asarray(abs_mag, dtype=np.float64) - msun_band))


def colour_map(
    lum_g: np.ndarray, lum_r: np.ndarray, msun_g: float = MSUN_G_AB, msun_r: float = MSUN_R_AB
) -> np.ndarray:
    """g - r (AB mag) from g and r luminosity images in Lsun of each band (same shape).

    g - r = (Msun_g - 2.5 log10 L_g) - (Msun_r - 2.5 log10 L_r) where both are > 0, else 0.
    """
    lg = np.asarray(lum_g, dtype=np.float64)
    lr = np.asarray(lum_r, dtype=np.float64)
    if lg.shape != lr.shape:
        raise Sim2obsValueError("g and r images must have the same shape", value=(lg.shape, lr.shape))
    lit = (lg > 0) & (lr > 0)
    out = np.zeros(lg.shape)
    out[lit] = (msun_g - msun_r) - 2.5 * np.log10(lg[lit] / lr[lit])
    return out


def dust_transmission(
    ages_gyr: np.ndarray,
    wavelength_angstrom: float,
    tau_v_birth: float = 1.0,
    tau_v_ism: float = 0.3,
    t_birth_gyr: float = 0.01,
    slope: float = -0.7,
) -> np.ndarray:
    """Optional simple dust model: the fraction of each star particle's light that escapes.

    Charlot & Fall (2000): stars younger than ``t_birth_gyr`` (10 Myr) are still in their birth
    clouds and see the total V-band optical depth ``tau_v_birth`` (birth cloud + ambient ISM; CF00's
    tau_V = 1.0), older stars only the ambient ISM, ``tau_v_ism`` (mu tau_V = 0.3). The optical depth
    scales with wavelength as (lambda / 5500 A)^slope, slope = -0.7. Returns exp(-tau) per particle
    (same shape as ``ages_gyr``), in (0, 1].
    """
    ages = np.asarray(ages_gyr, dtype=np.float64)
    if not wavelength_angstrom > 0:
        raise Sim2obsValueError("wavelength must be > 0 Angstrom", value=wavelength_angstrom)
    if min(tau_v_birth, tau_v_ism) < 0:
        raise Sim2obsValueError("optical depths must be >= 0", value=(tau_v_birth, tau_v_ism))
    scale = (wavelength_angstrom / 5500.0) ** slope
    tau_v = np.where(ages < t_birth_gyr, tau_v_birth, tau_v_ism)
    return np.exp(-tau_v * scale)


def _as_points(a: np.ndarray, ncol: int, name: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != ncol:
        raise Sim2obsValueError(f"{name} must be (N, {ncol})", value=a.shape)
    if not np.all(np.isfinite(a)):
        raise Sim2obsValueError(f"{name} must be finite")
    return a


def _check_frame(half_width: float, npix: int) -> tuple[int, float]:
    if not (np.isfinite(half_width) and half_width > 0):
        raise Sim2obsValueError("half_width must be > 0 kpc", value=half_width)
    if int(npix) != npix or npix < 1:
        raise Sim2obsValueError("npix must be a positive integer", value=npix)
    return int(npix), 2.0 * float(half_width) / int(npix)
