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

import numba
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
# Compiled deposit loops: reassociation (vectorised sums) and fused multiply-adds change results
# by round-off only; no approximate functions, no assumptions about NaN or infinity.
_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}


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

    Compiled (numba, cached on disk): one pass over the particles, each footprint evaluated once.
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
    w2 = np.ascontiguousarray(w[:, None] if w.ndim == 1 else w)
    out = np.zeros((w2.shape[1], npix, npix))
    _render(np.ascontiguousarray(xy), w2, np.ascontiguousarray(h), float(half_width), dx, npix,
            _EXACT_NORM_MAX_HALF_WIDTH, out)
    return out[0] if w.ndim == 1 else out


@numba.njit(cache=True, nogil=True)
def _render(xy, w, h, half_width, dx, npix, kmax, out):  # pragma: no cover - compiled
    """Deposit every particle into ``out`` (K, npix, npix) (see :func:`sph_image`); ``xy`` (N, 2)
    kpc, ``w`` (N, K), ``h`` (N,) kpc, ``dx`` kpc per pixel. Footprints of half-width ``k <= kmax``
    pixels: the spline at all (2k+1)^2 stencil centres, normalised by their sum; wider ones: the
    window clipped to the frame, normalised by the kernel integral."""
    n_channels = w.shape[1]
    side = 2 * kmax + 1
    frac = np.empty(side * side)
    dx2 = np.empty(max(side, npix))
    fbuf = np.empty(npix)
    for p in range(xy.shape[0]):
        u = (xy[p, 0] + half_width) / dx  # continuous pixel coordinates (column, row)
        v = (xy[p, 1] + half_width) / dx
        s = h[p] / dx  # support radius in pixels
        ci = np.int64(math.floor(u))  # containing pixel
        ri = np.int64(math.floor(v))
        # Support holding no pixel centre other than (at most) the particle's own, the nearest:
        # all its weight goes there. (The margin keeps rounding from emptying a footprint.)
        if math.hypot(u - ci - 0.5, v - ri - 0.5) >= s * (1.0 - 1e-9) or s <= 0.5:
            if 0 <= ci < npix and 0 <= ri < npix:
                for c in range(n_channels):
                    out[c, ri, ci] += w[p, c]
            continue
        k = np.int64(math.floor(s + 0.5))  # footprint half-width: centres of pixels i0 +- k at most
        if ci + k < 0 or ci - k >= npix or ri + k < 0 or ri - k >= npix:
            continue
        inv_s = 1.0 / s
        if k <= kmax:
            _deposit_exact(out, w[p], u, v, inv_s, ci, ri, k, npix, frac, dx2)
        else:
            _deposit_integral(out, w[p], u, v, inv_s, ci, ri, k, npix, dx2, fbuf)


@numba.njit(cache=True, nogil=True, inline="always", fastmath=_FASTMATH)
def _shape(q2):  # pragma: no cover - compiled
    """Cubic-spline shape 2 (1 - q)^3 - 8 (1/2 - q)_+^3 at q = sqrt(min(q2, 1)) (0 from q = 1 on);
    branch-free, so that loops over pixels vectorise."""
    q = math.sqrt(min(q2, 1.0))
    inner = max(0.5 - q, 0.0)
    outer = 1.0 - q
    return outer * outer * outer * 2.0 - inner * inner * inner * 8.0


@numba.njit(cache=True, nogil=True, fastmath=_FASTMATH)
def _deposit_exact(out, w, u, v, inv_s, ci, ri, k, npix, frac, dx2):  # pragma: no cover - compiled
    """One particle's whole (2k+1)^2 stencil, normalised by its sum, added where inside the frame.
    (Loops run over 0-based slices so that they vectorise.)"""
    m = 2 * k + 1
    for j in range(m):
        t = (ci - k + j + 0.5 - u) * inv_s
        dx2[j] = t * t
    total = 0.0
    for i in range(m):
        t = (ri - k + i + 0.5 - v) * inv_s
        dy2 = t * t
        f = frac[i * m:]
        row_sum = 0.0
        for j in range(m):
            f[j] = _shape(dy2 + dx2[j])
            row_sum += f[j]
        total += row_sum
    norm = 1.0 / total
    j_lo, j_hi = max(0, k - ci), min(m, npix - ci + k)
    width = j_hi - j_lo
    for i in range(max(0, k - ri), min(m, npix - ri + k)):
        f = frac[i * m + j_lo:]
        for c in range(out.shape[0]):
            scale = norm * w[c]
            line = out[c, ri - k + i, ci - k + j_lo:]
            for j in range(width):
                line[j] += f[j] * scale


@numba.njit(cache=True, nogil=True, fastmath=_FASTMATH)
def _deposit_integral(out, w, u, v, inv_s, ci, ri, k, npix, dx2, fbuf):  # pragma: no cover - compiled
    """One wide particle: the spline at the frame's pixel centres within its support, normalised
    by the kernel integral."""
    norm = _KERNEL_NORM_2D * (inv_s * inv_s)
    s = 1.0 / inv_s
    c_lo, c_hi = max(ci - k, 0), min(ci + k, npix - 1)
    for col in range(c_lo, c_hi + 1):
        t = (col + 0.5 - u) * inv_s
        dx2[col - c_lo] = t * t
    for row in range(max(ri - k, 0), min(ri + k, npix - 1) + 1):
        t = (row + 0.5 - v) * inv_s
        dy2 = t * t
        if dy2 >= 1.0:
            continue
        # the columns whose centres can lie in the support on this row, with a pixel of margin
        # (centres outside it add exactly 0)
        half = s * math.sqrt(1.0 - dy2)
        a = max(c_lo, np.int64(math.floor(u - 0.5 - half)) - 1)
        b = min(c_hi, np.int64(math.ceil(u - 0.5 + half)) + 1)
        width = b - a + 1
        d = dx2[a - c_lo:]
        for j in range(width):
            fbuf[j] = _shape(dy2 + d[j]) * norm
        for c in range(out.shape[0]):
            wc = w[c]
            line = out[c, row, a:]
            for j in range(width):
                line[j] += fbuf[j] * wc


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
    out = np.divide(lg, lr, out=np.ones(lg.shape), where=lit)  # no temporaries of the lit pixels
    np.log10(out, out=out)
    out *= -2.5
    out += msun_g - msun_r
    out[~lit] = 0.0
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
