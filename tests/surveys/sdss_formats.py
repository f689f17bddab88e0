"""Writers of tiny SDSS image files in the real formats, for the image and recipe tests.

- :func:`frame_bytes`: a ``frame-{band}-{run:06d}-{camcol}-{field:04d}.fits.bz2`` (bzip2 FITS): HDU 0
  the calibrated image in nanomaggies with a TAN WCS (CD matrix, 0.396"/px) and the frame keywords,
  HDU 1 the calibration vector, HDU 2 the sky model table (ALLSKY, XINTERP, YINTERP), HDU 3 an
  astrometry table. Galaxies are drawn as Gaussians of known flux on Gaussian sky noise plus a
  residual background level.
- :func:`psfield_bytes`: a ``psField`` FITS with HDU 6 holding ``PSF_WIDTH`` (u, g, r, i, z, arcsec).
- :func:`jpeg_bytes`: a JPEG of a given size.
"""
from __future__ import annotations

import bz2
import io
from typing import Sequence

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from PIL import Image

PIXEL_SCALE = 0.396


def frame_wcs(ra0: float, dec0: float, shape: tuple[int, int], rotation_deg: float = 0.0) -> WCS:
    """TAN WCS centred on (ra0, dec0) with 0.396"/px, east left, rotated by ``rotation_deg``."""
    ny, nx = shape
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra0, dec0]
    w.wcs.crpix = [(nx + 1) / 2, (ny + 1) / 2]
    s = PIXEL_SCALE / 3600.0
    c, si = np.cos(np.radians(rotation_deg)), np.sin(np.radians(rotation_deg))
    w.wcs.cd = np.array([[-s * c, s * si], [s * si, s * c]])
    w.wcs.radesys = "ICRS"
    w.wcs.equinox = 2000.0
    return w


def frame_bytes(band: str, run: int, camcol: int, field: int, ra0: float, dec0: float,
                galaxies: Sequence[tuple[float, float, float, float]] = (), shape=(300, 400),
                noise: float = 0.05, background: float = 0.02, seed: int = 0, rotation_deg: float = 0.0,
                compress: bool = True) -> bytes:
    """The bytes of a small SDSS frame. ``galaxies``: (ra, dec, flux nanomaggies, sigma px)."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    w = frame_wcs(ra0, dec0, shape, rotation_deg)
    img = rng.normal(background, noise, shape)
    yy, xx = np.mgrid[:ny, :nx]
    for ra, dec, flux, sig in galaxies:
        x, y = w.world_to_pixel_values(ra, dec)
        img += flux / (2 * np.pi * sig ** 2) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sig ** 2))
    hdr = w.to_header()
    for k in ("PC1_1", "PC1_2", "PC2_1", "PC2_2", "CDELT1", "CDELT2"):
        hdr.remove(k, ignore_missing=True)
    for (i, j), v in np.ndenumerate(w.wcs.cd):
        hdr[f"CD{i + 1}_{j + 1}"] = v
    hdr.update({"FILTER": band, "CAMCOL": camcol, "RUN": run, "FIELD": field, "RERUN": "301",
                "BUNIT": "nanomaggy", "NMGY": 0.0047, "EXPTIME": 53.907456, "SYSTEM": "FK5"})
    primary = fits.PrimaryHDU(img.astype(np.float32), header=hdr)
    calib = fits.ImageHDU(np.full(nx, 0.0047, dtype=np.float32))
    sky = fits.BinTableHDU.from_columns([
        fits.Column(name="ALLSKY", format=f"{(ny // 8) * (nx // 8)}E", dim=f"({nx // 8},{ny // 8})",
                    array=np.full((1, ny // 8, nx // 8), 120.0, dtype=np.float32)),
        fits.Column(name="XINTERP", format=f"{nx}E", array=np.linspace(0, nx // 8 - 1, nx)[None].astype(np.float32)),
        fits.Column(name="YINTERP", format=f"{ny}E", array=np.linspace(0, ny // 8 - 1, ny)[None].astype(np.float32)),
    ])
    astrans = fits.BinTableHDU.from_columns([fits.Column(name="A", format="D", array=np.array([ra0]))])
    buf = io.BytesIO()
    fits.HDUList([primary, calib, sky, astrans]).writeto(buf)
    return bz2.compress(buf.getvalue()) if compress else buf.getvalue()


def psfield_bytes(widths: Sequence[float] = (1.5, 1.4, 1.3, 1.2, 1.25)) -> bytes:
    """A psField FITS whose HDU 6 has ``PSF_WIDTH`` (u, g, r, i, z arcsec) in one row."""
    hdus = [fits.PrimaryHDU()]
    for k in range(1, 6):
        hdus.append(fits.BinTableHDU.from_columns([fits.Column(name=f"C{k}", format="E", array=np.zeros(5))]))
    hdus.append(fits.BinTableHDU.from_columns([
        fits.Column(name="PSF_WIDTH", format="5E", array=np.array([widths], dtype=np.float32)),
        fits.Column(name="SKY_FRAMES", format="5E", array=np.zeros((1, 5), dtype=np.float32))]))
    buf = io.BytesIO()
    fits.HDUList(hdus).writeto(buf)
    return buf.getvalue()


def jpeg_bytes(size: int = 128, seed: int = 0, colour=(200, 120, 60)) -> bytes:
    """A ``size x size`` JPEG: a blob of ``colour`` on a dark background."""
    yy, xx = np.mgrid[:size, :size]
    blob = np.exp(-((xx - size / 2) ** 2 + (yy - size / 2) ** 2) / (2 * (size / 8) ** 2))
    arr = (blob[..., None] * np.array(colour)[None, None]).astype(np.uint8)
    arr = np.clip(arr + np.random.default_rng(seed).integers(0, 4, arr.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def objid_for(run: int, camcol: int, field: int, obj: int, rerun: int = 301, sky_version: int = 2) -> int:
    """An SDSS photometric objID with the given parts (bit layout of the SDSS photoObj table)."""
    return (sky_version << 59) | (rerun << 48) | (run << 32) | (camcol << 29) | (field << 16) | obj
