"""GalSim's RealGalaxyCatalog format (HST COSMOS F814W, AEGIS F606W/F814W) and its parametric fits.

A sample is a folder with the catalogue ``<name>.fits`` (one row per galaxy: ``IDENT, RA, DEC, MAG,
BAND, WEIGHT, GAL_FILENAME, PSF_FILENAME, GAL_HDU, PSF_HDU, PIXEL_SCALE, NOISE_MEAN, NOISE_VARIANCE,
NOISE_FILENAME, stamp_flux``), the galaxy and PSF image files it names (one image per HDU), noise
correlation-function images, and for COSMOS ``<name>_fits.fits`` with the parametric fits of Lackner &
Gunn (2012) as GalSim distributes them (``sersicfit``[8], ``bulgefit``[16] = disk[0:8] + bulge[8:16],
``fit_status``[5], ``fit_dvc_btt``, ``use_bulgefit``, ``viable_sersic``, ``hlr``[3], ``flux``[4]) and
``<name>_selection.fits``. Facts: data_formats.md and ``shared/real_samples/README.md``; the meaning
of ``fit_status`` (0 < status < 5 is a converged fit; column 0 the bulge fit, 4 the Sersic fit) is the
one ``galsim.GalaxySample`` applies.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.table import MaskedColumn, Table, join

from sim2obs.errors import DataFormatError
from sim2obs.simgen.half_light import half_light_radius
from sim2obs.simgen.surveys.catalogs import _read_fits_table

__all__ = ["HST_PIXEL_ARCSEC", "bulgefit_components", "read_real_galaxy_catalog", "find_fits_file"]

HST_PIXEL_ARCSEC = 0.03  # pixel of the parametric fits (and of the COSMOS/AEGIS stamps), arcsec
# Flux of a Sersic profile in units of 2 pi I_e r_e^2 for n = 4 and n = 1 (the bulgefit formula of
# shared/real_samples/README.md, the one GalSim's COSMOS parametric galaxies use).
_FLUX_FACTOR_N4 = 3.607
_FLUX_FACTOR_N1 = 1.901
_CATALOG_REQUIRED = ("IDENT", "MAG", "BAND", "GAL_FILENAME", "PSF_FILENAME", "GAL_HDU", "PSF_HDU", "PIXEL_SCALE",
                     "NOISE_VARIANCE")
_FITS_REQUIRED = ("IDENT", "BULGEFIT", "FIT_DVC_BTT", "USE_BULGEFIT", "FIT_STATUS")


def bulgefit_components(bulgefit: np.ndarray) -> dict[str, np.ndarray]:
    """Bulge and disk of ``bulgefit`` rows ``(n, 16)`` (disk[0:8] then bulge[8:16]: surface brightness
    at the half-light radius, major-axis half-light radius in 0.03" pixels, Sersic n, axis ratio q,
    boxiness, x0, y0, position angle in radians).

    Returns ``(n,)`` arrays: ``bt`` (bulge-to-total flux ratio), ``flux_bulge``, ``flux_disk`` (fit
    units), ``hlr_bulge``, ``hlr_disk`` (circularised half-light radii ``0.03 sqrt(q) r``, arcsec),
    ``q_bulge``, ``q_disk``, ``n_bulge``, ``phi`` (disk position angle, rad)::

        hlr_b = 0.03 sqrt(b[11]) b[9];  F_b = 2 pi 3.607 hlr_b^2 b[8] / 0.03^2
        hlr_d = 0.03 sqrt(b[3])  b[1];  F_d = 2 pi 1.901 hlr_d^2 b[0] / 0.03^2;  B/T = F_b / (F_b + F_d)
    """
    b = np.atleast_2d(np.asarray(bulgefit, dtype=np.float64))
    if b.shape[-1] != 16:
        raise DataFormatError("<bulgefit>", "bulgefit", f"needs 16 numbers per row, got shape {b.shape}")
    b = b.copy()
    b[(b[:, 3] <= 0) | (b[:, 11] <= 0)] = np.nan  # failed fits carry -1 sentinels (q = -1): no values
    hlr_b = HST_PIXEL_ARCSEC * np.sqrt(b[:, 11]) * b[:, 9]
    hlr_d = HST_PIXEL_ARCSEC * np.sqrt(b[:, 3]) * b[:, 1]
    flux_b = 2 * np.pi * _FLUX_FACTOR_N4 * hlr_b**2 * b[:, 8] / HST_PIXEL_ARCSEC**2
    flux_d = 2 * np.pi * _FLUX_FACTOR_N1 * hlr_d**2 * b[:, 0] / HST_PIXEL_ARCSEC**2
    total = flux_b + flux_d
    with np.errstate(invalid="ignore", divide="ignore"):
        bt = np.where(total > 0, flux_b / total, np.nan)
    return {"bt": bt, "flux_bulge": flux_b, "flux_disk": flux_d, "hlr_bulge": hlr_b, "hlr_disk": hlr_d,
            "q_bulge": b[:, 11], "q_disk": b[:, 3], "n_bulge": b[:, 10], "phi": b[:, 7]}


def find_fits_file(catalog: str | Path) -> Path | None:
    """``<catalog stem>_fits.fits`` beside the catalogue, if present (GalSim's naming)."""
    catalog = Path(catalog)
    candidate = catalog.with_name(catalog.name.replace(".fits", "_fits.fits"))
    return candidate if candidate.exists() else None


def read_real_galaxy_catalog(catalog: str | Path, fits_path: str | Path | None = None,
                             check_files: bool = True) -> Table:
    """Read a RealGalaxyCatalog and (when present) its parametric fits, one row per galaxy, in the
    catalogue's order.

    Columns: ``ident, ra, dec`` (deg), ``mag`` (AB), ``band``, ``weight``, ``pixel_scale`` (arcsec),
    ``noise_variance``, ``gal_filename, gal_hdu, psf_filename, psf_hdu, noise_filename``. With the fits
    (``fits_path``, default ``<catalog stem>_fits.fits`` if it exists) also: ``bt_bulgefit`` (B/T of the
    de Vaucouleurs + exponential fit, :func:`bulgefit_components`), ``fit_dvc_btt`` (GalSim's own
    value of it), ``bulge_hlr_arcsec, disk_hlr_arcsec, bulge_q, disk_q, disk_phi_rad, flux_bulge_fit,
    flux_disk_fit``, ``r_e_arcsec`` (radius of the circle holding half the light of the bulge + disk
    fit, before any PSF), ``use_bulgefit``, ``bulgefit_ok`` (the fit converged: 0 < fit_status[0] < 5),
    ``zphot``, ``mag_auto``, ``sersic_n``, ``sersic_hlr_arcsec``. ``meta["has_fits"]`` says which. A
    failed fit (its -1 sentinels: q = -1, ``fit_dvc_btt`` = -1) gives masked values.

    Raises :class:`DataFormatError` naming the file and column when the catalogue or the fits lack a
    column, a catalogue galaxy has no fit, or (``check_files``) a file the catalogue names is missing,
    is not FITS or lacks the HDU a galaxy points at.
    """
    catalog = Path(catalog)
    cat = _read_fits_table(catalog, _CATALOG_REQUIRED, "RealGalaxyCatalog")
    out = Table(masked=True)
    out["ident"] = np.asarray(cat["IDENT"], dtype=np.int64)
    for src, dst, unit in (("RA", "ra", "deg"), ("DEC", "dec", "deg"), ("MAG", "mag", "mag"),
                           ("WEIGHT", "weight", None), ("PIXEL_SCALE", "pixel_scale", "arcsec"),
                           ("NOISE_VARIANCE", "noise_variance", None), ("stamp_flux".upper(), "stamp_flux", None)):
        if src in cat.colnames:
            out[dst] = MaskedColumn(np.asarray(cat[src], dtype=np.float64), unit=unit)
    for src, dst in (("BAND", "band"), ("GAL_FILENAME", "gal_filename"), ("PSF_FILENAME", "psf_filename"),
                     ("NOISE_FILENAME", "noise_filename")):
        if src in cat.colnames:
            out[dst] = np.char.strip(np.asarray(cat[src]).astype(str))
    out["gal_hdu"] = np.asarray(cat["GAL_HDU"], dtype=np.int64)
    out["psf_hdu"] = np.asarray(cat["PSF_HDU"], dtype=np.int64)
    if check_files:
        _check_files(catalog, out)
    fits_path = Path(fits_path) if fits_path is not None else find_fits_file(catalog)
    out.meta.update({"catalog": "GalSim RealGalaxyCatalog", "source_file": str(catalog),
                     "has_fits": fits_path is not None, "fits_file": str(fits_path) if fits_path else None})
    if fits_path is None:
        return out
    out["_row"] = np.arange(len(out))
    joined = join(out, _read_fits(fits_path, set(out["ident"])), keys="ident", join_type="left",
                  metadata_conflicts="silent")
    joined.sort("_row")  # join sorts by the key: back to the catalogue's order
    joined.remove_column("_row")
    return joined


def _check_files(catalog: Path, cat: Table) -> None:
    """Every image, PSF and noise file the catalogue names exists, is FITS, and holds the HDU each
    galaxy points at."""
    from astropy.io import fits  # deferred: only this check opens the image files

    for col, hdu_col in (("gal_filename", "gal_hdu"), ("psf_filename", "psf_hdu"), ("noise_filename", None)):
        if col not in cat.colnames:
            continue
        for name in sorted(set(cat[col])):
            if not name:
                continue
            path = catalog.parent / name
            if not path.exists():
                raise DataFormatError(path, col.upper(), f"file named by {catalog.name} is missing (incomplete download?)")
            try:
                with fits.open(path, memmap=False) as hdul:
                    n_hdu = len(hdul)
            except OSError as exc:
                raise DataFormatError(path, col.upper(), f"not a readable FITS file ({exc})") from None
            if hdu_col is not None:
                rows = np.asarray(cat[col]) == name
                worst = int(np.argmax(np.where(rows, cat[hdu_col], -1)))
                if int(cat[hdu_col][worst]) >= n_hdu:
                    raise DataFormatError(path, hdu_col.upper(), f"galaxy IDENT {int(cat['ident'][worst])} points at "
                                          f"HDU {int(cat[hdu_col][worst])}, the file has {n_hdu}")


def _read_fits(path: Path, idents: set) -> Table:
    fit = _read_fits_table(path, _FITS_REQUIRED, "parametric-fit (_fits) table")
    ids = np.asarray(fit["IDENT"], dtype=np.int64)
    missing = sorted(idents - set(ids.tolist()))
    if missing:
        raise DataFormatError(path, "IDENT", f"{len(missing)} catalogue galaxies have no fit (first: {missing[0]})")
    comp = bulgefit_components(np.asarray(fit["BULGEFIT"]))
    status = np.atleast_2d(np.asarray(fit["FIT_STATUS"]))
    t = Table(masked=True)
    t["ident"] = ids
    t["bt_bulgefit"] = MaskedColumn(comp["bt"], mask=~np.isfinite(comp["bt"]))
    dvc = np.asarray(fit["FIT_DVC_BTT"], dtype=np.float64)
    t["fit_dvc_btt"] = MaskedColumn(dvc, mask=~np.isfinite(dvc) | (dvc < 0))  # -1: failed fit
    t["bulge_hlr_arcsec"] = MaskedColumn(comp["hlr_bulge"], unit="arcsec")
    t["disk_hlr_arcsec"] = MaskedColumn(comp["hlr_disk"], unit="arcsec")
    t["bulge_q"], t["disk_q"], t["disk_phi_rad"] = comp["q_bulge"], comp["q_disk"], comp["phi"]
    t["flux_bulge_fit"], t["flux_disk_fit"] = comp["flux_bulge"], comp["flux_disk"]
    ok = np.isfinite(comp["bt"]) & (comp["hlr_bulge"] > 0) & (comp["hlr_disk"] > 0)
    r_e = np.full(len(t), np.nan)
    if ok.any():
        r_e[ok] = half_light_radius(comp["flux_bulge"][ok], comp["hlr_bulge"][ok], np.full(ok.sum(), 4.0),
                                    comp["q_bulge"][ok], comp["flux_disk"][ok], comp["hlr_disk"][ok],
                                    comp["q_disk"][ok])
    t["r_e_arcsec"] = MaskedColumn(r_e, mask=~np.isfinite(r_e), unit="arcsec")
    t["use_bulgefit"] = np.asarray(fit["USE_BULGEFIT"], dtype=np.int64)
    t["bulgefit_ok"] = (status[:, 0] > 0) & (status[:, 0] < 5)
    for src, dst, unit in (("ZPHOT", "zphot", None), ("MAG_AUTO", "mag_auto", "mag")):
        if src in fit.colnames:
            t[dst] = MaskedColumn(np.asarray(fit[src], dtype=np.float64), unit=unit)
    if "SERSICFIT" in fit.colnames:
        s = np.atleast_2d(np.asarray(fit["SERSICFIT"], dtype=np.float64))
        t["sersic_n"] = s[:, 2]
        t["sersic_hlr_arcsec"] = MaskedColumn(HST_PIXEL_ARCSEC * np.sqrt(s[:, 3]) * s[:, 1], unit="arcsec")
    return t
