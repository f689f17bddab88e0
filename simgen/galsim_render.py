"""Drawing the GalSim bulge + disk galaxies (the worker side of :mod:`sim2obs.simgen.galsim_bulge_disk`).

The smooth galaxy of every band is drawn from one Fourier grid per galaxy: GalSim draws the k-space
images of the unit-flux bulge and disk once (``drawKImage``), and each band's image is
``irfft[(F_bulge * K_bulge + F_disk * K_disk) * K_psf * K_pixel]``, the same product GalSim's
``Convolve(...).drawImage`` forms, for the three bands in one batched inverse FFT.

The grid is sized for the stamp rather than for the whole galaxy. GalSim sizes an FFT so that the
galaxy's whole light profile, out to where all but ``folding_threshold`` of its flux is enclosed,
fits without wrapping around; a large de Vaucouleurs galaxy then needs a 384-1024 px FFT to draw a
64 px stamp, and the 15 % of such galaxies took ~60 % of the drawing time. Here the FFT size is the
smallest that keeps the light wrapped onto any stamp pixel below ``alias_tolerance`` sky sigma: with
size N the nearest periodic copies of the galaxy lie at least ``N - stamp/2 - 1.5`` px from every
stamp pixel, so the wrapped light per pixel is bounded by the surface brightness there (along the
major axis of each component, GalSim's ``xValue``) times the pixel area times the 8 nearest copies.
Pixels inside the stamp are otherwise GalSim's exact convolution; the benchmark prints the largest
difference from GalSim's own ``drawImage`` at its default accuracy.

Nuisances (knots, neighbours, stars, correlated noise) are drawn with GalSim's ``drawImage`` onto the
stamp afterwards (:mod:`sim2obs.simgen.galsim_nuisances`).
"""
from __future__ import annotations

import contextlib
import functools
import math
from typing import Any, Mapping

import numpy as np

from sim2obs.simgen import galsim_nuisances as nuisances

_STREAM_OBJECT = 3
_PURPOSE_KNOTS, _PURPOSE_NOISE, _PURPOSE_CORRELATED_NOISE = 1, 2, 3  # per-object seeds
_NEAREST_COPIES = 8  # periodic copies of the galaxy around the FFT box that can reach a stamp pixel


def seed_sequence(seed: int, *key: int) -> np.random.SeedSequence:
    """The random stream keyed on ``(seed, *key)``: independent of shards and workers."""
    return np.random.SeedSequence([int(seed), *map(int, key)])


def object_seed(cfg: Any, index: int, purpose: int) -> int:
    """A GalSim seed for object ``index`` and ``purpose`` (knots, noise, correlated noise)."""
    return int(seed_sequence(cfg.seed, _STREAM_OBJECT, index, purpose).generate_state(1)[0])


def gsparams(cfg: Any):
    import galsim

    return galsim.GSParams(folding_threshold=cfg.folding_threshold, maxk_threshold=cfg.maxk_threshold)


def warm_worker(cfg: Any) -> None:
    """Fill a worker process's GalSim tables before its first shard: each configured bulge Sersic
    index's profile tables and the exponential's (~0.075 s per index, otherwise paid inside the first
    galaxies drawn with it). Run by each local worker while the parent draws the parameters;
    tables only cache what the drawing computes, so the pixels are the same either way."""
    import galsim

    gsp = gsparams(cfg)
    indices = [] if cfg.population.free_sersic else list(cfg.population.bulge_sersic_n)
    for profile in [galsim.Sersic(n=float(n), half_light_radius=1.0, gsparams=gsp) for n in indices] + [
            galsim.Exponential(half_light_radius=1.0, gsparams=gsp)]:
        profile.kValue(galsim.PositionD(0.3, 0.0))
        profile.xValue(galsim.PositionD(0.3, 0.0))


def galaxy_profile(row: Mapping[str, float], band: str, components=("bulge", "disk"), gsparams=None,
                   knots_rng=None, clump_count: int = 0, clump_fraction: float = 0.0):
    """The GalSim profile (no PSF) of one galaxy in ``band``: fluxes in nanomaggies, sizes in
    arcsec. ``components`` selects bulge and/or disk (to check B/T by drawing them alone)."""
    import galsim

    flux = row[f"flux_{band}"]
    bt = row[f"bt_{band}"]
    parts = []
    if "bulge" in components:
        parts.append(galsim.Sersic(n=float(row["bulge_sersic_n"]), half_light_radius=float(row["bulge_hlr_arcsec"]),
                                   flux=float(flux * bt), gsparams=gsparams)
                     .shear(q=float(row["bulge_q"]), beta=float(row["bulge_position_angle_deg"]) * galsim.degrees))
    if "disk" in components:
        disk_flux = float(flux * (1.0 - bt))
        beta = float(row["position_angle_deg"]) * galsim.degrees
        q = float(row["disk_q"])
        hlr = float(row["disk_hlr_arcsec"])
        smooth = galsim.Exponential(half_light_radius=hlr, flux=disk_flux * (1.0 - clump_fraction), gsparams=gsparams)
        parts.append(smooth.shear(q=q, beta=beta))
        if clump_count and clump_fraction > 0:
            parts.append(nuisances.disk_knots(row, band, clump_count, clump_fraction, knots_rng, gsparams))
    if not parts:
        raise ValueError(f"no components selected from {components!r}")
    return parts[0] if len(parts) == 1 else galsim.Add(parts, gsparams=gsparams)


def _bulge(row: Mapping[str, float], gsparams=None):
    """The unit-flux bulge: a Sersic profile sheared to its axis ratio and position angle (arcsec)."""
    import galsim

    return galsim.Sersic(n=float(row["bulge_sersic_n"]), half_light_radius=float(row["bulge_hlr_arcsec"]),
                         gsparams=gsparams).shear(q=float(row["bulge_q"]),
                                                  beta=float(row["bulge_position_angle_deg"]) * galsim.degrees)


def _disk(row: Mapping[str, float], gsparams=None):
    """The unit-flux smooth disk: an inclined exponential (arcsec)."""
    import galsim

    return galsim.Exponential(half_light_radius=float(row["disk_hlr_arcsec"]), gsparams=gsparams).shear(
        q=float(row["disk_q"]), beta=float(row["position_angle_deg"]) * galsim.degrees)


def psf_profile(cfg: Any, fwhm: float, gsparams=None):
    """The PSF (Moffat or Kolmogorov) of FWHM ``fwhm`` arcsec."""
    import galsim

    if cfg.psf.profile == "moffat":
        return galsim.Moffat(beta=cfg.psf.moffat_beta, fwhm=float(fwhm), gsparams=gsparams)
    return galsim.Kolmogorov(fwhm=float(fwhm), gsparams=gsparams)


def sky_level_nmgy(cfg: Any, band: str) -> float:
    """Sky per pixel in nanomaggies from the sky surface brightness."""
    return 10.0 ** (-0.4 * (cfg.noise.sky_mag_per_arcsec2[band] - 22.5)) * cfg.pixel_scale**2


def sky_sigma_nmgy(cfg: Any, band: str, at_depth: bool = False) -> float:
    """Background noise per pixel (nanomaggies): sky Poisson noise plus read noise; 0 with the noise
    off unless ``at_depth`` (the configured depth's noise, which the S/N column always uses)."""
    if not (cfg.noise.enabled or at_depth):
        return 0.0
    e = cfg.noise.electrons_per_nanomaggy[band]
    return math.sqrt(sky_level_nmgy(cfg, band) * e + cfg.noise.read_noise_electrons**2) / e


@contextlib.contextmanager
def one_galsim_thread():
    """Run GalSim's C++ layer on one OpenMP thread inside the block; restore the count after.

    GalSim splits each image's read-noise draws over OpenMP threads, as many as the process has:
    all cores in a plain Python process (the synchronous run), one in a Dask worker, or torch's
    setting when torch was imported first (GalSim's OpenMP calls then bind to torch's libgomp).
    Pinned, every process runs the same serial code whatever its environment, and a busy machine
    no longer makes two spinning threads per 64^2 stamp 4-5x slower than one.
    """
    import galsim

    before = galsim.get_omp_threads()
    if before != 1:
        galsim.set_omp_threads(1)
    try:
        yield
    finally:
        if before != 1:
            galsim.set_omp_threads(before)


# --------------------------------------------------------------------------------------------
# The smooth galaxy in every band from one Fourier grid
# --------------------------------------------------------------------------------------------
def fft_size(cfg: Any, components: list[tuple[Any, float, float]]) -> int:
    """The smallest good FFT size N >= ``stamp`` (GalSim's 2^k and 3 * 2^k sizes) for which the light
    wrapped onto a stamp pixel stays below ``cfg.alias_tolerance`` sky sigma.

    ``components``: ``(unit-flux profile, major-axis angle in radians, largest flux / sky sigma
    over the bands)``. With size N the nearest periodic copy of the galaxy is at least
    ``N - stamp/2 - 1.5`` px from every stamp pixel (the centre moves by at most a pixel); the light it
    puts there is at most the surface brightness at that radius along the major axis."""
    import galsim

    dx = cfg.pixel_scale
    limit = galsim.GSParams().maximum_fft_size
    n = galsim.Image.good_fft_size(cfg.stamp)
    while n < limit:
        r = (n - cfg.stamp / 2 - 1.5) * dx
        wrapped = sum(scale * prof.xValue(galsim.PositionD(r * math.cos(angle), r * math.sin(angle)))
                      for prof, angle, scale in components)
        if _NEAREST_COPIES * wrapped * dx * dx <= cfg.alias_tolerance:
            return n
        n = galsim.Image.good_fft_size(n + 1)
    return limit


def _k_grid(cfg: Any, n: int, maxk: float):
    """GalSim's k-space grid for an n x n FFT of pixel scale ``cfg.pixel_scale``: an empty
    complex image (bounds ``0..Nk/2 x -Nk/2..Nk/2``, scale dk = 2 pi / (n dx) per arcsec) with
    Nk > n when ``maxk`` lies beyond the FFT's Nyquist frequency (then wrapped before the FFT)."""
    import galsim

    dk = 2.0 * math.pi / (n * cfg.pixel_scale)
    nk = n if n * dk / 2 > maxk else int(math.ceil(maxk / dk)) * 2
    return galsim.ImageCF(galsim.BoundsI(0, nk // 2, -nk // 2, nk // 2), scale=dk)


@functools.lru_cache(maxsize=128)
def _pixel_kimage(shape: tuple[int, int], dk: float, pixel_scale: float) -> np.ndarray:
    """The k-image of the square pixel on a grid of ``shape`` and step ``dk`` (the same for every
    galaxy on that grid; GalSim's sinc, which needs no accuracy parameters)."""
    import galsim

    kim = galsim.ImageCF(galsim.BoundsI(0, shape[1] - 1, -(shape[0] // 2), shape[0] // 2), scale=dk)
    galsim.Pixel(pixel_scale).drawKImage(image=kim, recenter=False)
    out = kim.array.copy()
    out.flags.writeable = False
    return out


def draw_smooth(cfg: Any, row: Mapping[str, float], psfs: list, gsp, disk_share: float = 1.0) -> np.ndarray:
    """The noiseless bulge + disk galaxy of ``row`` in every band of ``cfg``, convolved with
    ``psfs`` (one GalSim PSF per band) and the pixel: ``(bands, stamp, stamp)`` float32, nanomaggies
    per pixel, centred like GalSim's ``drawImage(offset=(offset_x_px, offset_y_px))``.
    ``disk_share``: the smooth disk's share of the disk flux (the rest goes to knots)."""
    import galsim

    dx, s = cfg.pixel_scale, cfg.stamp
    bands = list(cfg.bands)
    bulge, disk = _bulge(row, gsp), _disk(row, gsp)
    w_bulge = [float(row[f"flux_{b}"] * row[f"bt_{b}"]) for b in bands]
    w_disk = [float(row[f"flux_{b}"] * (1.0 - row[f"bt_{b}"])) * disk_share for b in bands]
    sigma = [sky_sigma_nmgy(cfg, b, at_depth=True) for b in bands]
    n = fft_size(cfg, [(bulge, math.radians(row["bulge_position_angle_deg"]), max(w / e for w, e in zip(w_bulge, sigma))),
                       (disk, math.radians(row["position_angle_deg"]), max(w / e for w, e in zip(w_disk, sigma)))])
    pixel_maxk = galsim.Pixel(dx, gsparams=gsp).maxk
    grid = _k_grid(cfg, n, min(max(bulge.maxk, disk.maxk), max(p.maxk for p in psfs), pixel_maxk))
    # GalSim's drawImage centres a profile on the stamp's true centre (between pixels when even)
    # plus the offset; here the FFT's origin is pixel -(stamp // 2) .. of the stamp.
    centre = (s + 1) / 2 - (s + 2) // 2
    shift = ((float(row["offset_x_px"]) + centre) * dx, (float(row["offset_y_px"]) + centre) * dx)
    k_bulge = bulge.shift(shift).drawKImage(image=grid.copy(), recenter=False).array
    k_disk = disk.shift(shift).drawKImage(image=grid.copy(), recenter=False).array
    k_pixel = _pixel_kimage(grid.array.shape, grid.scale, dx)
    wrap = galsim.BoundsI(0, n // 2, -n // 2, n // 2 - 1)
    k_band = grid.copy()
    stack = np.empty((len(bands), n, n // 2 + 1), dtype=np.complex64)
    for k, psf in enumerate(psfs):
        psf.drawKImage(image=k_band, recenter=False)
        k_band.array[...] *= (w_bulge[k] * k_bulge + w_disk[k] * k_disk) * k_pixel
        # GalSim's wrap of the k-image onto the n x n FFT (Hermitian at the Nyquist row and column)
        stack[k] = k_band._wrap(wrap, True, False).array
    # numpy's FFT: the three bands in one call, and the same bits whatever the memory alignment
    # (k rows run -n/2 .. n/2-1; the real image comes back with x = 0 at index 0)
    real = np.fft.irfft2(np.fft.ifftshift(stack, axes=1), s=(n, n))
    lo = -(s // 2)
    rows = np.arange(lo, lo + s) % n
    return real[:, rows[:, None], rows[None, :]].astype(np.float32)
