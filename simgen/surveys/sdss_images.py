"""SDSS images of catalogue galaxies: gri JPEG cutouts from the SkyServer ImgCutout service, and
FITS stamps cut from the calibrated SDSS frames with their WCS.

JPEG (:func:`jpeg_cutouts`): ``{jpeg_base_url}?ra=..&dec=..&scale=..&width=..&height=..`` gives the
SkyServer's gri colour composite (Lupton et al. 2004 asinh scaling; R, G, B = i, r, g); ``scale``
is arcsec/pixel (native 0.396; Wu & Boada 2019 used 128 x 128 at 0.296). Returned as
``(N, 3, H, W)`` float32 in [0, 1], channels R, G, B.

FITS (:func:`fits_stamps`): the frames ``frame-{band}-{run:06d}-{camcol}-{field:04d}.fits.bz2`` of
the SDSS Science Archive Server (DR8+ rerun 301). HDU 0 is the calibrated, sky-subtracted image in
nanomaggies per pixel (2048 x 1489, 0.396"/px) with a TAN WCS; HDU 1 the calibration vector, HDU 2
the sky model, HDU 3 the astrometry (data_formats.md; SDSS frame data model). A stamp of
``stamp x stamp`` native pixels is cut about each galaxy with :class:`astropy.nddata.Cutout2D`
(frame WCS), the residual background (sigma-clipped median of the stamp outside a central circle)
subtracted; pixels off the frame are set to 0 and counted. Per object and band it records the
frame's noise (sigma-clipped standard deviation of the frame, nanomaggies/pixel), the residual
background removed, the frame file, and the PSF FWHM from the field's ``psField`` file (HDU 6,
column ``PSF_WIDTH``, one value per u, g, r, i, z in arcsec; SDSS psField data model,
*unconfirmed* beyond that layout) when ``psf_width`` is on.

Every URL is built from configurable base URLs and path templates, and every file goes through
:mod:`sim2obs.download` (cache, resume, format checks).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlencode

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.nddata import Cutout2D
from astropy.nddata.utils import NoOverlapError
from astropy.stats import sigma_clipped_stats
from astropy.wcs import WCS

from sim2obs.download import Downloader, Remote, url_join
from sim2obs.errors import ConfigError, DataFormatError

log = logging.getLogger(__name__)

SDSS_BANDS = ("u", "g", "r", "i", "z")
SDSS_PIXEL_SCALE = 0.396  # arcsec / pixel of the SDSS imaging camera
JPEG_CHANNELS = ("R", "G", "B")
#: Typical sizes (bytes) for the dry run when the server is not asked.
TYPICAL_FRAME_BYTES = 3_000_000
TYPICAL_PSFIELD_BYTES = 300_000
TYPICAL_JPEG_BYTES = 5_000
#: Fields whose frames are downloaded together (in parallel, bounded by the downloader's workers).
PREFETCH_FIELDS = 16


@dataclass
class SDSSImageConfig:
    """Which images a real set gets, and from where.

    ``source``: ``fits`` (stamps cut from frames: the ``image`` stack in nanomaggies), ``jpeg``
    (ImgCutout colour composites: the ``jpeg`` stack) or ``both``. ``bands``: FITS bands, in stack
    order. ``stamp``: FITS stamp side (native 0.396" pixels). ``rerun``: the SAS imaging rerun.
    ``max_edge_fraction``: an object whose stamp has more of its pixels off the frame is dropped.
    ``psf_width``: also fetch each field's psField file for the PSF FWHM.
    """

    source: str = "fits"
    bands: list[str] = field(default_factory=lambda: ["g", "r"])
    stamp: int = 64
    sas_base_url: str = "https://data.sdss.org/sas/dr17/eboss"
    frame_path: str = "photoObj/frames/{rerun}/{run}/{camcol}/frame-{band}-{run:06d}-{camcol}-{field:04d}.fits.bz2"
    psfield_path: str = "photo/redux/{rerun}/{run}/objcs/{camcol}/psField-{run:06d}-{camcol}-{field:04d}.fit"
    rerun: int = 301
    psf_width: bool = True
    max_edge_fraction: float = 0.1
    background_radius: float = 0.35   # fraction of the stamp side: pixels outside this radius give the background
    jpeg_base_url: str = "https://skyserver.sdss.org/dr17/SkyServerWS/ImgCutout/getjpeg"
    jpeg_size: int = 128
    jpeg_scale: float = 0.296          # arcsec / pixel
    jpeg_opt: str = ""                 # ImgCutout drawing options (empty: the plain image)


def check_config(cfg: SDSSImageConfig, prefix: str = "images") -> None:
    """Refuse unusable settings, naming the key."""
    if cfg.source not in ("fits", "jpeg", "both"):
        raise ConfigError(f"{prefix}.source", "unknown image source", value=cfg.source, allowed=["fits", "jpeg", "both"])
    bad = [b for b in cfg.bands if b not in SDSS_BANDS]
    if bad or not cfg.bands or len(set(cfg.bands)) != len(cfg.bands):
        raise ConfigError(f"{prefix}.bands", "give distinct SDSS bands", value=list(cfg.bands), allowed=list(SDSS_BANDS))
    if not 8 <= int(cfg.stamp) <= 1024:
        raise ConfigError(f"{prefix}.stamp", "must lie in [8, 1024] pixels", value=cfg.stamp)
    if not 64 <= int(cfg.jpeg_size) <= 2048:
        raise ConfigError(f"{prefix}.jpeg_size", "the ImgCutout service serves 64 to 2048 pixels", value=cfg.jpeg_size)
    if not cfg.jpeg_scale > 0:
        raise ConfigError(f"{prefix}.jpeg_scale", "must be positive (arcsec/pixel)", value=cfg.jpeg_scale)
    if not 0 <= cfg.max_edge_fraction < 1:
        raise ConfigError(f"{prefix}.max_edge_fraction", "must lie in [0, 1)", value=cfg.max_edge_fraction)
    if not 0 < cfg.background_radius < 0.5:
        raise ConfigError(f"{prefix}.background_radius", "must lie in (0, 0.5)", value=cfg.background_radius)


def uses_fits(cfg: SDSSImageConfig) -> bool:
    return cfg.source in ("fits", "both")


def uses_jpeg(cfg: SDSSImageConfig) -> bool:
    return cfg.source in ("jpeg", "both")


# --------------------------------------------------------------------------------------------
# Identifiers and remote files
# --------------------------------------------------------------------------------------------
def decode_objid(objid: Any) -> dict[str, np.ndarray]:
    """Run, rerun, camcol, field and object number of SDSS photometric ``objID``s (bit layout:
    skyVersion 59-62, rerun 48-58, run 32-47, camcol 29-31, firstField 28, field 16-27, id 0-15)."""
    o = np.asarray(objid, dtype=np.int64).astype(np.uint64)
    return {"rerun": ((o >> np.uint64(48)) & np.uint64(0x7FF)).astype(np.int64),
            "run": ((o >> np.uint64(32)) & np.uint64(0xFFFF)).astype(np.int64),
            "camcol": ((o >> np.uint64(29)) & np.uint64(0x7)).astype(np.int64),
            "field": ((o >> np.uint64(16)) & np.uint64(0xFFF)).astype(np.int64),
            "obj": (o & np.uint64(0xFFFF)).astype(np.int64)}


def frame_remote(cfg: SDSSImageConfig, run: int, camcol: int, field_: int, band: str) -> Remote:
    rel = cfg.frame_path.format(rerun=cfg.rerun, run=int(run), camcol=int(camcol), field=int(field_), band=band)
    return Remote(url_join(cfg.sas_base_url, rel), f"sdss/{rel}", kind="fits",
                  description=f"SDSS frame {band} {run}/{camcol}/{field_}")


def psfield_remote(cfg: SDSSImageConfig, run: int, camcol: int, field_: int) -> Remote:
    rel = cfg.psfield_path.format(rerun=cfg.rerun, run=int(run), camcol=int(camcol), field=int(field_))
    return Remote(url_join(cfg.sas_base_url, rel), f"sdss/{rel}", kind="fits",
                  description=f"SDSS psField {run}/{camcol}/{field_}")


def jpeg_remote(cfg: SDSSImageConfig, ra: float, dec: float) -> Remote:
    query = {"ra": f"{ra:.6f}", "dec": f"{dec:.6f}", "scale": f"{cfg.jpeg_scale:g}",
             "width": int(cfg.jpeg_size), "height": int(cfg.jpeg_size)}
    if cfg.jpeg_opt:
        query["opt"] = cfg.jpeg_opt
    name = (f"sdss/jpeg/s{cfg.jpeg_scale:g}_{cfg.jpeg_size}{('_' + cfg.jpeg_opt) if cfg.jpeg_opt else ''}/"
            f"{ra:.6f}_{dec:+.6f}.jpg")
    return Remote(f"{cfg.jpeg_base_url}?{urlencode(query)}", name, kind="jpeg",
                  description=f"SDSS JPEG ({ra:.5f}, {dec:+.5f})")


def fields_of(table) -> np.ndarray:
    """``(N, 3)`` run, camcol, field of each row: from columns ``run, camcol, field`` when the
    table has them, else decoded from ``objid``."""
    names = set(table.colnames)
    if {"run", "camcol", "field"} <= names:
        cols = [np.asarray(np.ma.filled(table[c], -1), dtype=np.int64) for c in ("run", "camcol", "field")]
    elif "objid" in names:
        ids = decode_objid(np.ma.filled(table["objid"], 0))
        cols = [ids["run"], ids["camcol"], ids["field"]]
    else:
        raise DataFormatError(table.meta.get("source_file", "<table>"), "objid",
                              "FITS stamps need run/camcol/field columns or SDSS objIDs to find the frames")
    return np.stack(cols, axis=1)


def image_remotes(cfg: SDSSImageConfig, table) -> list[Remote]:
    """Every file the images of ``table`` (columns ra, dec and objid or run/camcol/field) need:
    one frame per field and band (+ one psField per field), and/or one JPEG per object."""
    out: list[Remote] = []
    if uses_fits(cfg):
        for run, camcol, fld in sorted({tuple(r) for r in fields_of(table).tolist()}):
            out += [frame_remote(cfg, run, camcol, fld, b) for b in cfg.bands]
            if cfg.psf_width:
                out.append(psfield_remote(cfg, run, camcol, fld))
    if uses_jpeg(cfg):
        out += [jpeg_remote(cfg, float(r), float(d)) for r, d in zip(table["ra"], table["dec"])]
    return out


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------
@dataclass
class Frame:
    """A calibrated SDSS frame: ``data`` (ny, nx) nanomaggies/pixel, its ``wcs``, the frame's
    noise ``sigma`` (nanomaggies/pixel) and the ``path``."""

    data: np.ndarray
    wcs: WCS
    sigma: float
    path: Path
    header: Any = None


def read_frame(path: str | Path) -> Frame:
    """Read HDU 0 of an SDSS ``frame-*.fits(.bz2)``: image and WCS; the noise is the
    sigma-clipped (3 sigma) standard deviation of the frame's pixels."""
    path = Path(path)
    try:
        with fits.open(path, memmap=False) as hdul:
            header = hdul[0].header
            data = np.asarray(hdul[0].data, dtype=np.float32)
    except (OSError, ValueError, EOFError) as err:
        raise DataFormatError(path, None, f"not a readable SDSS frame ({err})") from None
    if data.ndim != 2:
        raise DataFormatError(path, "HDU0", f"expected a 2-D image, got shape {data.shape}")
    if not str(header.get("CTYPE1", "")).startswith("RA"):
        raise DataFormatError(path, "HDU0 CTYPE1", "no celestial WCS in the frame header")
    wcs = WCS(header)
    finite = data[np.isfinite(data)]
    _, _, sigma = sigma_clipped_stats(finite[:: max(1, finite.size // 400_000)], sigma=3.0, maxiters=5)
    return Frame(data=data, wcs=wcs, sigma=float(sigma), path=path, header=header)


def read_psf_width(path: str | Path, band: str) -> float:
    """PSF FWHM (arcsec) of ``band`` from a ``psField`` file: HDU 6, column ``PSF_WIDTH`` (5 values,
    u g r i z)."""
    path = Path(path)
    try:
        with fits.open(path, memmap=False) as hdul:
            if len(hdul) < 7:
                raise DataFormatError(path, "HDU6", f"a psField file has at least 7 HDUs; this has {len(hdul)}")
            names = [n.upper() for n in (hdul[6].columns.names if hasattr(hdul[6], "columns") else [])]
            if "PSF_WIDTH" not in names:
                raise DataFormatError(path, "HDU6 PSF_WIDTH", f"column missing (found: {names[:20]})")
            widths = np.asarray(hdul[6].data[hdul[6].columns.names[names.index("PSF_WIDTH")]]).reshape(-1)
    except (OSError, ValueError, EOFError) as err:
        raise DataFormatError(path, None, f"not a readable psField file ({err})") from None
    if widths.size < 5:
        raise DataFormatError(path, "HDU6 PSF_WIDTH", f"{widths.size} values, expected 5 (u, g, r, i, z)")
    return float(widths[SDSS_BANDS.index(band)])


def cut_stamp(frame: Frame, ra: float, dec: float, size: int, background_radius: float = 0.35
              ) -> tuple[np.ndarray, dict[str, float]]:
    """``(size, size)`` float32 stamp of ``frame`` centred on (ra, dec) deg, background-subtracted
    (nanomaggies/pixel), and ``{"background", "edge_fraction", "x", "y"}`` (the frame pixel of
    the centre, 0-based). Pixels off the frame are 0; a position off the frame raises ValueError."""
    pos = SkyCoord(ra * u.deg, dec * u.deg)
    try:
        cut = Cutout2D(frame.data, pos, (size, size), wcs=frame.wcs, mode="partial", fill_value=np.nan)
    except NoOverlapError:
        raise ValueError(f"({ra:.6f}, {dec:+.6f}) is off the frame {frame.path.name}") from None
    stamp = np.array(cut.data, dtype=np.float64)
    off = ~np.isfinite(stamp)
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(xx - (size - 1) / 2, yy - (size - 1) / 2)
    ring = (r > background_radius * size) & ~off
    background = 0.0
    if ring.sum() >= 16:
        background = float(sigma_clipped_stats(stamp[ring], sigma=3.0, maxiters=5)[1])
    stamp = np.where(off, 0.0, stamp - background).astype(np.float32)
    x, y = frame.wcs.world_to_pixel(pos)
    return stamp, {"background": background, "edge_fraction": float(off.mean()), "x": float(x), "y": float(y)}


def read_jpeg(path: str | Path, size: int) -> np.ndarray:
    """``(3, size, size)`` float32 in [0, 1] (R, G, B) of a JPEG cutout; the size is checked."""
    from PIL import Image

    path = Path(path)
    try:
        with Image.open(path) as im:
            if im.format != "JPEG":
                raise DataFormatError(path, None, f"expected a JPEG cutout, got {im.format}")
            arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    except OSError as err:
        raise DataFormatError(path, None, f"not a readable JPEG ({err})") from None
    if arr.shape[:2] != (size, size):
        raise DataFormatError(path, None, f"cutout is {arr.shape[1]}x{arr.shape[0]} px, {size}x{size} requested")
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


# --------------------------------------------------------------------------------------------
# Images of a whole table
# --------------------------------------------------------------------------------------------
def jpeg_cutouts(dl: Downloader, cfg: SDSSImageConfig, ra: Sequence[float], dec: Sequence[float],
                 out: np.ndarray | None = None, block: int = 2000) -> np.ndarray:
    """``(N, 3, S, S)`` JPEG cutouts (R, G, B in [0, 1]) of the positions, fetched in parallel
    ``block`` at a time into ``out`` (allocated when None; may be a disk-backed memmap)."""
    n = len(ra)
    out = np.empty((n, 3, cfg.jpeg_size, cfg.jpeg_size), dtype=np.float32) if out is None else out
    for a in range(0, n, block):
        remotes = [jpeg_remote(cfg, float(r), float(d)) for r, d in zip(ra[a:a + block], dec[a:a + block])]
        for i, p in enumerate(dl.fetch_all(remotes, desc=f"SDSS JPEG cutouts {a + 1}-{a + len(remotes)} of {n}")):
            out[a + i] = read_jpeg(p, cfg.jpeg_size)
    return out


def fits_stamps(dl: Downloader, cfg: SDSSImageConfig, table, out: np.ndarray | None = None
                ) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """FITS stamps of every row of ``table`` (ra, dec deg; objid or run/camcol/field).

    Returns ``images`` (N, bands, stamp, stamp) float32 nanomaggies/pixel; ``columns``:
    ``sky_sigma_<b>`` (nanomaggy), ``background_<b>`` (nanomaggy), ``psf_fwhm_<b>`` (arcsec; when
    ``psf_width``), ``edge_fraction``, ``run``, ``camcol``, ``field``; and ``ok`` (N,) bool: False
    for an object off its frame or with more than ``max_edge_fraction`` of the stamp off it.
    Frames are fetched field by field (a field's bands in parallel) and read once each; the
    stamps go to ``out`` (allocated when None; may be a disk-backed memmap).
    """
    n, nb, s = len(table), len(cfg.bands), int(cfg.stamp)
    ra = np.asarray(table["ra"], dtype=np.float64)
    dec = np.asarray(table["dec"], dtype=np.float64)
    rcf = fields_of(table)
    images = np.zeros((n, nb, s, s), dtype=np.float32) if out is None else out
    cols = {f"{k}_{b}": np.full(n, np.nan) for b in cfg.bands for k in ("sky_sigma", "background")}
    if cfg.psf_width:
        cols.update({f"psf_fwhm_{b}": np.full(n, np.nan) for b in cfg.bands})
    cols["edge_fraction"] = np.zeros(n)
    ok = np.ones(n, dtype=bool)
    groups: dict[tuple, list[int]] = {}
    for i, key in enumerate(map(tuple, rcf.tolist())):
        groups.setdefault(key, []).append(i)
    fields = sorted(groups)
    per = len(cfg.bands) + bool(cfg.psf_width)
    for start in range(0, len(fields), PREFETCH_FIELDS):  # fetch a block of fields in parallel, then cut
        block = fields[start:start + PREFETCH_FIELDS]
        remotes = [r for f in block for r in _field_remotes(cfg, *f)]
        fetched = dl.fetch_all(remotes, desc=f"SDSS fields {start + 1}-{start + len(block)} of {len(fields)}")
        for j, key in enumerate(block):
            _cut_field(cfg, fetched[j * per:(j + 1) * per], groups[key], ra, dec, images, cols, ok)
    ok &= cols["edge_fraction"] <= cfg.max_edge_fraction
    cols.update(run=rcf[:, 0], camcol=rcf[:, 1], field=rcf[:, 2])
    return images, cols, ok


def _field_remotes(cfg: SDSSImageConfig, run: int, camcol: int, fld: int) -> list[Remote]:
    out = [frame_remote(cfg, run, camcol, fld, b) for b in cfg.bands]
    return out + ([psfield_remote(cfg, run, camcol, fld)] if cfg.psf_width else [])


def _cut_field(cfg: SDSSImageConfig, paths: list[Path], rows: list[int], ra: np.ndarray, dec: np.ndarray,
               images: np.ndarray, cols: dict[str, np.ndarray], ok: np.ndarray) -> None:
    """Stamps of the objects ``rows`` of one field (its frames, then its psField, in ``paths``)."""
    s = int(cfg.stamp)
    for k, band in enumerate(cfg.bands):
        frame = read_frame(paths[k])
        psf = read_psf_width(paths[-1], band) if cfg.psf_width else None
        for i in rows:
            try:
                stamp, info = cut_stamp(frame, ra[i], dec[i], s, cfg.background_radius)
            except ValueError as err:
                log.warning("%s; object dropped", err)
                ok[i] = False
                continue
            images[i, k] = stamp
            cols[f"sky_sigma_{band}"][i] = frame.sigma
            cols[f"background_{band}"][i] = info["background"]
            cols["edge_fraction"][i] = max(cols["edge_fraction"][i], info["edge_fraction"])
            if psf is not None:
                cols[f"psf_fwhm_{band}"][i] = psf
