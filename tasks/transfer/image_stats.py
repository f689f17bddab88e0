"""Simple non-parametric image statistics of galaxy stamps, vectorised over a stack.

Used by the transfer studies' shift diagnostics (:mod:`sim2obs.tasks.transfer.diagnostics`) to
compare a source and a target set through the statistics a survey astronomer would look at first:
size, concentration, asymmetry and signal-to-noise. Everything works on a stack of sky-subtracted
stamps ``(N, H, W)`` in any linear flux unit (sim2obs stores nanomaggies per pixel); radii come
out in pixels (and arcsec when the pixel scale is given); concentration, asymmetry and S/N are
dimensionless.

Definitions (the conventions of ``statmorph``, Rodriguez-Gomez et al. 2019, which a test checks
these values against):

- **Curve of growth** ``F(R)``: the flux inside a circle of radius ``R`` about the galaxy centre,
  with the fraction of each boundary pixel inside the circle (8 x 8 sub-pixel sampling), on a
  radius grid of step ``<= 0.25`` px out to the largest circle that fits in the stamp.
- **Petrosian radius** ``r_petro``: the radius where the surface brightness in the 1-px annulus
  ``[R - 0.5, R + 0.5]`` falls to ``eta = 0.2`` times the mean surface brightness inside ``R``
  (Petrosian 1976; the annulus of Lotz, Primack & Madau 2004, eq. 4, and ``eta = 0.2`` as in
  Conselice 2003, both statmorph's defaults), searched from ``R = 1`` px. If the profile never
  gets there inside the stamp, the largest usable radius is taken and ``petro_ok`` is False.
- **Total flux** ``F_tot``: ``F(1.5 r_petro)`` (capped at the stamp), the aperture of
  Conselice (2003) and statmorph.
- ``r20, r50, r80``: radii enclosing 20, 50 and 80 % of ``F_tot``; ``r50`` is the half-light
  radius (``r50_arcsec = r50 * pixel_scale``).
- **Concentration** ``C = 5 log10(r80 / r20)`` (Bershady, Jangren & Conselice 2000; Conselice
  2003). An exponential disk gives C ~ 2.7, a de Vaucouleurs profile C ~ 4-5 (lower
  when the PSF or the pixels blur its core).
- **Rotational asymmetry** (Conselice, Bershady & Jangren 2000; Conselice 2003)
  ``A = (sum |I - I_180| - n_ap * b) / sum |I|`` over the pixels inside ``1.5 r_petro`` of the
  rotation centre, minimised over rotation centres on a half-pixel grid within +-1 px of the
  galaxy's centre of symmetry (below; a 180-degree rotation about a half-pixel centre of the
  re-centred stamp is an exact pixel permutation). ``b`` is the background term: the mean
  ``|B - B_180|`` per pixel measured in the sky frame at the stamp edge (robustly: median x
  1.1829, the mean/median ratio of a half-normal), or ``2 sigma / sqrt(pi)`` for a given Gaussian
  ``sky_sigma``, so that noise alone gives ``A ~ 0``.
- **Sky noise** ``sky_sigma``: the robust standard deviation (1.4826 x MAD) of the pixels in the
  edge frame (``edge`` px wide; default max(2, min(H, W) // 10)), unless given per galaxy. A
  galaxy whose wings fill the frame inflates it (seen on 32-px SDSS-scale stamps: up to 2x);
  pass the known noise when the set records it.
- **S/N**: ``F_tot / (sky_sigma * sqrt(pi (1.5 r_petro)^2))``, background-limited (source
  Poisson noise ignored); ``inf`` for a noiseless stamp.

Centring: the centre of 180-degree symmetry (the least-squares version of Conselice's centre) is
found by FFT (:func:`_symmetry_centre`), and every stamp is moved onto the stamp centre by a
Fourier phase shift before any radius or the asymmetry is measured. This
assumes PSF-sampled images (a cusp unresolved by the pixel grid, e.g. a PSF-free de Vaucouleurs
profile drawn off-centre, leaves a spurious asymmetry of a few per cent, as any interpolated
rotation does). :func:`image_features` turns the statistics (or re-binned pixels) into the
vectors the domain classifiers of :mod:`~sim2obs.tasks.transfer.diagnostics` see.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Mapping

import numpy as np
from scipy import fft as sp_fft

from sim2obs.errors import Sim2obsValueError
from sim2obs.imaging import rebin

__all__ = ["image_statistics", "curve_of_growth", "detection_image", "image_features", "IMAGE_STAT_FEATURES"]

ETA_PETRO = 0.2                 # Petrosian eta (Conselice 2003; statmorph)
ANNULUS_WIDTH = 1.0             # px, annulus measuring the local surface brightness (Lotz et al. 2004)
TOTAL_APERTURE = 1.5            # total-flux and asymmetry aperture, in units of r_petro
_HALF_NORMAL_MEAN_OVER_MEDIAN = 1.1829  # sqrt(2/pi) / 0.67449
_MAD_TO_SIGMA = 1.4826
_SUB = 8                        # sub-pixel sampling per axis for boundary pixels


def _radius_grid(h: int, w: int) -> np.ndarray:
    """Radii (px) of the curve of growth: the largest circle about any searched centre that
    stays inside an ``h x w`` stamp, in steps of at most 0.25 px."""
    rmax = min(h, w) / 2.0 - 1.0
    if rmax < 3.0:
        raise Sim2obsValueError("image statistics need stamps of at least 8 x 8 pixels", value=(h, w))
    n = max(int(np.ceil(rmax / 0.25)), 16)
    return np.linspace(rmax / n, rmax, n)


@lru_cache(maxsize=8)
def _aperture_weights(h: int, w: int) -> np.ndarray:
    """``(n_radii, h*w)`` float64: fraction of each pixel inside the circle of each grid radius
    about the stamp centre (pixel i spans [i - 0.5, i + 0.5]); pixels cut by the circle are
    sampled on an 8 x 8 sub-grid."""
    radii = _radius_grid(h, w)
    yy, xx = np.mgrid[0:h, 0:w]
    dy, dx = yy.ravel() - (h - 1) / 2.0, xx.ravel() - (w - 1) / 2.0
    r = np.hypot(dy, dx)
    sub = (np.arange(_SUB) + 0.5) / _SUB - 0.5
    weights = np.empty((radii.size, h * w), dtype=np.float64)
    half_diag = np.sqrt(0.5)
    for k, rad in enumerate(radii):  # one pass per radius (vectorised over pixels)
        row = (r < rad - half_diag).astype(np.float64)
        edge = np.nonzero(np.abs(r - rad) <= half_diag)[0]
        sy = dy[edge, None, None] + sub[None, :, None]
        sx = dx[edge, None, None] + sub[None, None, :]
        row[edge] = (sy * sy + sx * sx < rad * rad).mean(axis=(1, 2))
        weights[k] = row
    weights.setflags(write=False)
    return weights


def curve_of_growth(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Aperture fluxes of ``images`` ``(N, H, W)`` in circles about the stamp centre
    ``((H-1)/2, (W-1)/2)`` on the radius grid. Returns ``(radii (R,) px, flux (N, R))`` in the
    images' flux unit."""
    n, h, w = images.shape
    return _radius_grid(h, w), images.reshape(n, h * w) @ _aperture_weights(h, w).T


def _interp_matrix(grid: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``(len(grid), len(q))`` weights so that ``y @ M`` interpolates rows of ``y`` linearly at
    the positions ``q`` (clipped to the grid)."""
    pos = np.clip(np.interp(q, grid, np.arange(grid.size, dtype=np.float64)), 0.0, grid.size - 1.0)
    i0 = np.minimum(np.floor(pos).astype(int), grid.size - 2)
    t = pos - i0
    m = np.zeros((grid.size, q.size))
    cols = np.arange(q.size)
    m[i0, cols] = 1.0 - t
    m[i0 + 1, cols] += t
    return m


def _interp_rows(y: np.ndarray, grid: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Linear interpolation of each row of ``y`` (N, R) on the uniform ``grid`` at the per-row
    positions ``q`` (N,), clipped to the grid."""
    step = grid[1] - grid[0]
    pos = np.clip((q - grid[0]) / step, 0.0, grid.size - 1.0)
    i0 = np.minimum(np.floor(pos).astype(int), grid.size - 2)
    t = pos - i0
    rows = np.arange(y.shape[0])
    return y[rows, i0] * (1.0 - t) + y[rows, i0 + 1] * t


def _first_crossing(y: np.ndarray, grid: np.ndarray, level: np.ndarray | float, below: bool) -> np.ndarray:
    """Per row, the grid position where ``y`` first goes below (``below=True``) or reaches
    ``level``, linearly interpolated; NaN where it never does (or already does at the first
    point, for ``below=True``)."""
    level = np.broadcast_to(np.asarray(level, dtype=np.float64).reshape(-1, 1), y.shape)
    hit = (y < level) if below else (y >= level)
    found = hit.any(axis=1)
    k = np.argmax(hit, axis=1)
    rows = np.arange(y.shape[0])
    k0 = np.maximum(k - 1, 0)
    y0, y1 = y[rows, k0], y[rows, k]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(y1 != y0, (level[:, 0] - y0) / (y1 - y0), 0.0)
    out = grid[k0] + np.clip(t, 0.0, 1.0) * (grid[k] - grid[k0])
    out = np.where(k == 0, grid[0], out)
    if below:
        out = np.where(k == 0, np.nan, out)
    return np.where(found, out, np.nan)


def _petrosian(radii: np.ndarray, flux: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Petrosian radius (px) per row of the curve of growth, and whether it was found."""
    half = 0.5 * ANNULUS_WIDTH
    usable = (radii >= ANNULUS_WIDTH) & (radii + half <= radii[-1])
    r = radii[usable]
    # Aperture fluxes at R -+ half the annulus width for every grid R: shared interpolation matrices.
    lo, hi = _interp_matrix(radii, r - half), _interp_matrix(radii, r + half)
    f_lo, f_hi, f_in = flux @ lo, flux @ hi, flux[:, usable]
    with np.errstate(divide="ignore", invalid="ignore"):
        sb_annulus = (f_hi - f_lo) / (2.0 * np.pi * r * ANNULUS_WIDTH)
        sb_mean = f_in / (np.pi * r**2)
        eta = np.where(sb_mean > 0, sb_annulus / sb_mean, np.nan)
    eta = np.nan_to_num(eta, nan=np.inf)  # a non-positive inner flux is not a crossing
    r_p = _first_crossing(eta, r, ETA_PETRO, below=True)
    ok = np.isfinite(r_p)
    return np.where(ok, r_p, r[-1]), ok


def _edge_frame(h: int, w: int, edge: int) -> np.ndarray:
    """Boolean ``(h, w)`` mask of the sky frame: pixels within ``edge`` px of the border."""
    frame = np.zeros((h, w), dtype=bool)
    frame[:edge], frame[-edge:], frame[:, :edge], frame[:, -edge:] = True, True, True, True
    return frame


def _sky(images: np.ndarray, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Robust sky sigma per stamp and the background asymmetry per pixel, ``E|B - B_180|``,
    from the edge frame (which the 180-degree rotation about the stamp centre maps onto itself)."""
    sky = images[:, frame]
    mad = np.median(np.abs(sky - np.median(sky, axis=1, keepdims=True)), axis=1)
    diff = np.abs(sky - images[:, ::-1, ::-1][:, frame])
    return _MAD_TO_SIGMA * mad, _HALF_NORMAL_MEAN_OVER_MEDIAN * np.median(diff, axis=1)


def _symmetry_centre(images: np.ndarray) -> np.ndarray:
    """Centre of 180-degree symmetry ``(N, 2)`` = ``(y_c, x_c)`` px of every stamp, within +-1 px
    of the stamp centre: the centre ``c`` minimising ``sum (I - I_180,c)^2``, i.e. half the
    position of the peak of the image's autoconvolution ``(I * I)(2c)`` (computed by FFT,
    zero-padded just enough that no wrapped term reaches the window), refined to sub-pixel
    precision by a parabola through the peak in each axis."""
    n, h, w = images.shape
    shape = (sp_fft.next_fast_len(h + 4, real=True), sp_fft.next_fast_len(w + 4, real=True))
    f = sp_fft.rfft2(images, s=shape)
    conv = sp_fft.irfft2(f * f, s=shape)
    win = conv[:, h - 4:h + 3, w - 4:w + 3]  # 2c within +-3 px of 2 c_0 = (h-1, w-1)
    flat = win[:, 1:-1, 1:-1].reshape(n, -1)
    iy, ix = np.divmod(np.argmax(flat, axis=1), 5)
    rows = np.arange(n)
    out = []
    for line, i in ((win[rows, :, ix + 1], iy), (win[rows, iy + 1, :], ix)):
        a, b, c = line[rows, i], line[rows, i + 1], line[rows, i + 2]
        denom = a - 2.0 * b + c
        with np.errstate(divide="ignore", invalid="ignore"):
            delta = np.where(denom < 0, 0.5 * (a - c) / denom, 0.0)
        out.append(i - 2 + np.clip(delta, -0.5, 0.5))
    return np.stack([(h - 1 + out[0]) / 2.0, (w - 1 + out[1]) / 2.0], axis=1)


def _fourier_shift(images: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """Shift every stamp by ``(dy_i, dx_i)`` px (``out(y, x) = in(y - dy, x - dx)``) with a
    Fourier phase ramp: a unitary map, so white noise stays white with the same variance.
    Periodic: pixels leaving one edge re-enter at the other (outside every aperture used here)."""
    n, h, w = images.shape
    ky = np.fft.fftfreq(h)[None, :, None]
    kx = np.fft.rfftfreq(w)[None, None, :]
    phase = np.exp(-2j * np.pi * (ky * dy[:, None, None] + kx * dx[:, None, None]))
    return sp_fft.irfft2(sp_fft.rfft2(images) * phase, s=(h, w))


def _asymmetry(images: np.ndarray, r_ap: np.ndarray, bkg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Background-corrected rotational asymmetry inside the circle of radius ``r_ap`` (N,) px,
    minimised over rotation centres on a half-pixel grid within +-1 px of the stamp centre (a
    180-degree rotation about a half-pixel centre is an exact pixel permutation). ``bkg`` (N,)
    is the sky's expected ``|B - B_180|`` per pixel. Returns ``(A (N,), offset (N, 2) px)``."""
    n, h, w = images.shape
    flipped = images[:, ::-1, ::-1]
    yy, xx = np.mgrid[0:h, 0:w]
    best, offset = np.full(n, np.inf), np.zeros((n, 2))
    r2 = (r_ap**2)[:, None, None]
    for dy in range(-2, 3):  # 25 candidate centres (c_0 + d/2), each vectorised over the stack
        for dx in range(-2, 3):
            rotated = np.roll(flipped, (dy, dx), axis=(1, 2))  # I(2c - x) = flipped(x - d)
            mask = ((yy - (h - 1 + dy) / 2.0) ** 2 + (xx - (w - 1 + dx) / 2.0) ** 2)[None] < r2
            num = np.sum(np.abs(images - rotated) * mask, axis=(1, 2))
            den = np.sum(np.abs(images) * mask, axis=(1, 2))
            with np.errstate(divide="ignore", invalid="ignore"):
                a = (num - mask.sum(axis=(1, 2)) * bkg) / den
            a = np.where(np.isfinite(a), a, np.inf)
            better = a < best
            best = np.where(better, a, best)
            offset[better] = (dy / 2.0, dx / 2.0)
    return np.where(np.isfinite(best), best, np.nan), offset


def _validate(images: np.ndarray, pixel_scale, sky_sigma, edge) -> tuple[np.ndarray, np.ndarray | None, int]:
    x = np.asarray(images)
    if x.ndim != 3:
        raise Sim2obsValueError("image statistics need a stack of shape (N, H, W)", value=x.shape)
    if not np.issubdtype(x.dtype, np.number):
        raise Sim2obsValueError("images must be numeric", value=str(x.dtype))
    x = x.astype(np.float64, copy=False)
    bad = ~np.isfinite(x)
    if bad.any():
        raise Sim2obsValueError(f"images hold {int(bad.sum())} non-finite pixels "
                                f"(first in stamp {int(np.argmax(bad.any(axis=(1, 2))))})")
    if pixel_scale is not None and np.any(np.asarray(pixel_scale, dtype=float) <= 0):
        raise Sim2obsValueError("pixel_scale must be positive (arcsec/px)", value=pixel_scale)
    if sky_sigma is not None:
        sky_sigma = np.broadcast_to(np.asarray(sky_sigma, dtype=np.float64), (x.shape[0],))
        if np.any(~np.isfinite(sky_sigma)) or np.any(sky_sigma < 0):
            raise Sim2obsValueError("sky_sigma must be finite and >= 0 per stamp")
    _radius_grid(*x.shape[1:])  # refuses stamps too small
    edge = max(2, min(x.shape[1:]) // 10) if edge is None else int(edge)
    if not 1 <= edge <= min(x.shape[1:]) // 4:
        raise Sim2obsValueError("edge frame width out of range", value=edge,
                                allowed=f"1..{min(x.shape[1:]) // 4}")
    return x, sky_sigma, edge


def _chunk_stats(x: np.ndarray, frame: np.ndarray, sky_sigma: np.ndarray | None) -> dict[str, np.ndarray]:
    """Every statistic of one chunk of stamps (see the module docstring)."""
    n, h, w = x.shape
    sigma, bkg = _sky(x, frame)
    if sky_sigma is not None:  # a known per-pixel noise: Gaussian E|B - B_180| = 2 sigma / sqrt(pi)
        sigma, bkg = sky_sigma, 2.0 * sky_sigma / np.sqrt(np.pi)
    centre = _symmetry_centre(x)
    x = _fourier_shift(x, (h - 1) / 2.0 - centre[:, 0], (w - 1) / 2.0 - centre[:, 1])
    radii, flux = curve_of_growth(x)
    r_p, ok = _petrosian(radii, flux)
    asym, _ = _asymmetry(x, np.minimum(TOTAL_APERTURE * r_p, min(h, w) / 2.0 - 3.0), bkg)
    r_tot = np.minimum(TOTAL_APERTURE * r_p, radii[-1])
    f_tot = _interp_rows(flux, radii, r_tot)
    positive = f_tot > 0
    frac = flux / np.where(positive, f_tot, 1.0)[:, None]
    r20, r50, r80 = (np.where(positive, _first_crossing(frac, radii, lv, below=False), np.nan)
                     for lv in (0.2, 0.5, 0.8))
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = f_tot / (sigma * np.sqrt(np.pi) * r_tot)
        conc = 5.0 * np.log10(r80 / r20)
    return {"concentration": conc, "asymmetry": asym, "r20_px": r20, "r50_px": r50, "r80_px": r80,
            "r_petro_px": r_p, "petro_ok": ok, "flux_total": f_tot, "sky_sigma": sigma,
            "snr": np.where(sigma > 0, snr, np.inf),
            "centre_y": centre[:, 0], "centre_x": centre[:, 1]}


def image_statistics(images: np.ndarray, pixel_scale: float | np.ndarray | None = None,
                     sky_sigma: float | np.ndarray | None = None, edge: int | None = None,
                     chunk_pixels: int = 2_000_000) -> dict[str, np.ndarray]:
    """Concentration, asymmetry, radii, total flux and S/N of every stamp (module docstring).

    ``images``: ``(N, H, W)`` sky-subtracted stamps centred on the galaxy (within +-1 px), any
    linear flux unit; at least 8 x 8 px. ``pixel_scale``: arcsec/px (scalar or ``(N,)``); adds
    ``r50_arcsec``. ``sky_sigma``: the known background noise per pixel (image units; scalar or
    ``(N,)``), else measured in the edge frame of width ``edge`` px. ``chunk_pixels`` bounds the
    memory of one pass (stamps x pixels).

    Returns a dict of ``(N,)`` arrays: ``concentration``, ``asymmetry``, ``r20_px``, ``r50_px``,
    ``r80_px``, ``r_petro_px`` (px), ``petro_ok`` (bool), ``flux_total`` (image unit),
    ``sky_sigma`` (image unit per px), ``snr``, ``centre_y``, ``centre_x`` (px, pixel i spans
    [i - 0.5, i + 0.5]) and ``r50_arcsec`` when ``pixel_scale`` is given. Values that cannot be
    measured (non-positive total flux) are NaN.
    """
    x, sky_sigma, edge = _validate(images, pixel_scale, sky_sigma, edge)
    n, h, w = x.shape
    frame = _edge_frame(h, w, edge)
    step = max(1, chunk_pixels // (h * w))
    parts = [_chunk_stats(x[i:i + step], frame, None if sky_sigma is None else sky_sigma[i:i + step])
             for i in range(0, n, step)]
    keys = parts[0].keys() if parts else _chunk_stats(np.zeros((1, h, w)), frame, None).keys()
    out = {k: np.concatenate([p[k] for p in parts]) if parts else np.zeros(0) for k in keys}
    if pixel_scale is not None:
        out["r50_arcsec"] = out["r50_px"] * np.asarray(pixel_scale, dtype=np.float64)
    return out


def detection_image(images: np.ndarray, name: str) -> np.ndarray:
    """``(N, H, W)`` images, or ``(N, C, H, W)`` summed over channels (a coadd)."""
    a = np.asarray(images, dtype=np.float64)
    if a.ndim == 4:
        return a.sum(axis=1)
    if a.ndim != 3:
        raise Sim2obsValueError(f"{name} images must be (N, H, W) or (N, C, H, W)", value=a.shape)
    return a


IMAGE_STAT_FEATURES = ("concentration", "asymmetry", "r50_px", "snr", "flux_total", "sky_sigma")


def image_features(images: np.ndarray, representation: str = "stats", pixels: int = 16,
                   stats: Mapping[str, np.ndarray] | None = None, name: str = "images") -> np.ndarray:
    """The vector a domain classifier sees for each image ``(N, H, W)`` or ``(N, C, H, W)``.

    ``"stats"``: :data:`IMAGE_STAT_FEATURES` of the channel-summed image (``stats``: a result of
    :func:`~sim2obs.tasks.transfer.image_stats.image_statistics` to reuse), with ``snr``,
    ``flux_total`` and ``sky_sigma`` as ``asinh`` (they span decades); unmeasurable values are
    replaced by the column median. ``"pixels"``: every channel re-binned to ``pixels x pixels``
    (:func:`sim2obs.imaging.rebin`), flattened, ``(N, C * pixels^2)``."""
    if representation == "pixels":
        a = np.asarray(images, dtype=np.float64)
        a = a[:, None] if a.ndim == 3 else a
        if a.ndim != 4:
            raise Sim2obsValueError(f"{name} must be (N, H, W) or (N, C, H, W)", value=a.shape)
        return rebin(a, pixels).reshape(a.shape[0], -1)
    if representation != "stats":
        raise Sim2obsValueError("unknown image representation", value=representation,
                                allowed=["stats", "pixels"])
    st = image_statistics(detection_image(images, name)) if stats is None else stats
    cols = []
    for key in IMAGE_STAT_FEATURES:
        v = np.asarray(st[key], dtype=np.float64)
        v = np.arcsinh(v) if key in ("snr", "flux_total", "sky_sigma") else v
        good = np.isfinite(v)
        cols.append(np.where(good, v, np.median(v[good]) if good.any() else 0.0))
    return np.stack(cols, axis=1)
