"""Writers of tiny catalogue files in the exact formats of the real survey products.

Shared by the survey tests (readers, selections, recipes, the local-server builds). Every writer
takes ``rows``: a list of dicts whose keys are the *canonical* names below (anything left out
gets the value of a plain, valid galaxy from the ``*_row`` helpers), and writes the file the way
the survey distributes it (column order, names, sentinels, compression). Values that the real
file marks missing are written as the real sentinel (pass ``None`` or the sentinel itself).

- GSWLC-2 ``GSWLC-{A,M,D,X}2.dat``: 24 whitespace-separated columns, no header, -99 = missing
  (:func:`write_gswlc_dat`); the VizieR form as a FITS table (:func:`write_gswlc_vizier`).
- MPA-JHU DR7: ``gal_info_dr7_v5_2.fit.gz``, ``gal_fiboh_dr7_v5_2.fits.gz``,
  ``totlgm_dr7_v5_2.fit.gz``, row-matched FITS tables (:func:`write_mpajhu_fits`).
- Simard et al. 2011 tables 1-3, VizieR names or the names astroquery gives them
  (:func:`write_simard_vizier`).
- Galaxy Zoo 2: Hart et al. 2016 ``gz2_hart16.csv`` and the Willett et al. 2013 tables
  (:func:`write_gz2_csv`).
- GalSim RealGalaxyCatalog (COSMOS/AEGIS): catalogue, ``_fits`` parametric fits, galaxy and PSF
  image files, noise correlation function (:func:`write_real_galaxy_catalog`).
"""
from __future__ import annotations

import gzip
import io
import math
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from astropy.io import fits
from astropy.table import Table

# ------------------------------------------------------------------------------------------
# GSWLC-2
# ------------------------------------------------------------------------------------------
#: Column order of the GSWLC-2 ``.dat`` files (Salim et al. 2016, 2018 README).
GSWLC_COLUMNS = ("objid", "glxid", "plate", "mjd", "fiber_id", "ra", "dec", "z", "chi2_r", "logMstar",
                 "logMstar_err", "logSFR_SED", "logSFR_SED_err", "A_FUV", "A_FUV_err", "A_B", "A_B_err",
                 "A_V", "A_V_err", "flag_sed", "uv_survey", "flag_uv", "flag_midir", "flag_mgs")
_GSWLC_INT = {"objid", "glxid", "plate", "mjd", "fiber_id", "flag_sed", "uv_survey", "flag_uv", "flag_midir",
              "flag_mgs"}
#: The names used in the VizieR form (J/ApJ/859/11) by :func:`write_gswlc_vizier`.
GSWLC_VIZIER_NAMES = dict(zip(GSWLC_COLUMNS, (
    "objID", "GLXID", "Plate", "MJD", "Fiber", "RAdeg", "DEdeg", "z", "chi2r", "LOGMSTAR", "e_LOGMSTAR",
    "LOGSFRSED", "e_LOGSFRSED", "AFUV", "e_AFUV", "AB", "e_AB", "AV", "e_AV", "flagSED", "UVsurv",
    "flagUV", "flagMIR", "flagMGS")))


def gswlc_row(i: int = 0, **values: Any) -> dict[str, Any]:
    """A plain GSWLC-2 galaxy (index ``i`` makes ids and positions unique), with ``values`` set."""
    row = {"objid": 1237648720693755000 + i, "glxid": 3000000 + i, "plate": 266 + i % 5, "mjd": 51630,
           "fiber_id": 1 + i % 640, "ra": 150.0 + 0.01 * i, "dec": 1.0 + 0.01 * i, "z": 0.05, "chi2_r": 1.2,
           "logMstar": 10.3, "logMstar_err": 0.05, "logSFR_SED": 0.2, "logSFR_SED_err": 0.1, "A_FUV": 1.5,
           "A_FUV_err": 0.3, "A_B": 0.6, "A_B_err": 0.1, "A_V": 0.4, "A_V_err": 0.1, "flag_sed": 0,
           "uv_survey": 2, "flag_uv": 3, "flag_midir": 1, "flag_mgs": 1}
    row.update(values)
    return row


def _gswlc_text(value: Any, name: str) -> str:
    if value is None:
        return "-99"
    if name in _GSWLC_INT:
        return str(int(value))
    return f"{float(value):.7g}" if name in ("ra", "dec") else f"{float(value):.6g}"


def write_gswlc_dat(path: str | Path, rows: Sequence[Mapping[str, Any]], gz: bool | None = None) -> Path:
    """``GSWLC-X2.dat`` (gzipped when ``gz`` or the name ends in ``.gz``): one galaxy per line, the 24
    columns of :data:`GSWLC_COLUMNS` separated by spaces, no header, -99 for missing values."""
    path = Path(path)
    lines = []
    for i, r in enumerate(rows):
        full = gswlc_row(i, **r)
        lines.append(" ".join(_gswlc_text(full[c], c) for c in GSWLC_COLUMNS))
    data = ("\n".join(lines) + "\n").encode()
    if gz or (gz is None and path.suffix == ".gz"):
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
    return path


def write_gswlc_vizier(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """The VizieR form of GSWLC-2: a FITS binary table with :data:`GSWLC_VIZIER_NAMES`."""
    full = [gswlc_row(i, **r) for i, r in enumerate(rows)]
    t = Table()
    for c in GSWLC_COLUMNS:
        values = [-99 if f[c] is None else f[c] for f in full]
        t[GSWLC_VIZIER_NAMES[c]] = np.array(values, dtype=np.int64 if c in _GSWLC_INT else np.float64)
    t.write(path, format="fits", overwrite=True)
    return Path(path)


# ------------------------------------------------------------------------------------------
# MPA-JHU DR7
# ------------------------------------------------------------------------------------------
MPAJHU_FILES = ("gal_info_dr7_v5_2.fit.gz", "gal_fiboh_dr7_v5_2.fits.gz", "totlgm_dr7_v5_2.fit.gz")


def mpajhu_row(i: int = 0, **values: Any) -> dict[str, Any]:
    """A plain MPA-JHU galaxy. Keys: plateid, mjd, fiberid, ra, dec, z, z_err, z_warning,
    targettype, oh_p2p5, oh_p16, oh_p50, oh_p84, oh_p97p5, oh_avg, lgm_p16, lgm_p50, lgm_p84, lgm_avg."""
    row = {"plateid": 266 + i % 7, "mjd": 51630, "fiberid": 1 + i % 640, "ra": 150.0 + 0.01 * i,
           "dec": 1.0 + 0.01 * i, "z": 0.07, "z_err": 1e-5, "z_warning": 0, "targettype": "GALAXY",
           "oh_p2p5": 8.80, "oh_p16": 8.90, "oh_p50": 8.95, "oh_p84": 9.00, "oh_p97p5": 9.05, "oh_avg": 8.95,
           "lgm_p16": 10.1, "lgm_p50": 10.2, "lgm_p84": 10.3, "lgm_avg": 10.2}
    row.update(values)
    return row


def _write_fits_gz(path: Path, table: Table) -> None:
    hdul = fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU(table)])
    buf = io.BytesIO()
    hdul.writeto(buf)
    path.write_bytes(gzip.compress(buf.getvalue(), mtime=0))


def write_mpajhu_fits(directory: str | Path, rows: Sequence[Mapping[str, Any]],
                      n_rows: Mapping[str, int] | None = None) -> tuple[Path, Path, Path]:
    """The three row-matched MPA-JHU DR7 files in ``directory`` (gzipped FITS, upper-case column
    names as distributed). ``oh_avg=-99.9`` (or None) marks "no O/H"; ``lgm_avg=-1`` (or None) a bad
    mass. ``n_rows`` ({"oh": k} or {"mass": k}) truncates a file to ``k`` rows, to test the
    row-count check. Returns ``(info, oh, mass)`` paths."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    full = [mpajhu_row(i, **r) for i, r in enumerate(rows)]
    col = lambda k, dt, none=-99.9: np.array([none if f[k] is None else f[k] for f in full], dtype=dt)  # noqa: E731
    info = Table()
    info["PLATEID"] = col("plateid", np.int32)
    info["MJD"] = col("mjd", np.int32)
    info["FIBERID"] = col("fiberid", np.int32)
    info["RA"] = col("ra", np.float32)
    info["DEC"] = col("dec", np.float32)
    info["TARGETTYPE"] = np.array([f["targettype"] for f in full], dtype="S21")
    info["Z"] = col("z", np.float32)
    info["Z_ERR"] = col("z_err", np.float32)
    info["Z_WARNING"] = col("z_warning", np.int32)
    oh = Table()
    for name, key in (("AVG", "oh_avg"), ("MEDIAN", "oh_p50"), ("P16", "oh_p16"), ("P84", "oh_p84"),
                      ("P2P5", "oh_p2p5"), ("P97P5", "oh_p97p5"), ("MODE", "oh_p50")):
        oh[name] = col(key, np.float32)
    mass = Table()
    for name, key in (("AVG", "lgm_avg"), ("MEDIAN", "lgm_p50"), ("P16", "lgm_p16"), ("P84", "lgm_p84")):
        mass[name] = col(key, np.float32, none=-1.0)
    n_rows = dict(n_rows or {})
    paths = []
    for (key, table), fname in zip((("info", info), ("oh", oh), ("mass", mass)), MPAJHU_FILES):
        if key in n_rows:
            table = table[: n_rows[key]]
        _write_fits_gz(d / fname, table)
        paths.append(d / fname)
    return tuple(paths)  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------
# Simard et al. 2011
# ------------------------------------------------------------------------------------------
#: canonical key -> VizieR name (J/ApJS/196/11 tables 1-3).
SIMARD_VIZIER_NAMES = {
    "objid": "objID", "z": "z", "scale": "Scale", "rchi2": "Rchi2", "ra": "_RA", "dec": "_DE",
    "gg2d": "gg2d", "e_gg2d": "e_gg2d", "rg2d": "rg2d", "e_rg2d": "e_rg2d",
    "bt_g": "(B/T)g", "e_bt_g": "e_(B/T)g", "bt_r": "(B/T)r", "e_bt_r": "e_(B/T)r",
    "rhlg": "Rhlg", "rhlr": "Rhlr", "re": "Re", "e_re": "e_Re", "e": "e", "e_e": "e_e",
    "rd": "Rd", "e_rd": "e_Rd", "i": "i", "e_i": "e_i", "nb": "nb", "e_nb": "e_nb",
}


def simard_row(i: int = 0, **values: Any) -> dict[str, Any]:
    """A plain Simard et al. 2011 galaxy (keys of :data:`SIMARD_VIZIER_NAMES`); sizes in kpc,
    ``scale`` in kpc/arcsec, magnitudes AB."""
    row = {"objid": 587722981741363294 + i, "z": 0.08, "scale": 1.5, "rchi2": 1.02, "ra": 150.0 + 0.01 * i,
           "dec": 1.0 + 0.01 * i, "gg2d": 17.6, "e_gg2d": 0.02, "rg2d": 16.9, "e_rg2d": 0.02, "bt_g": 0.3,
           "e_bt_g": 0.05, "bt_r": 0.35, "e_bt_r": 0.04, "rhlg": 3.2, "rhlr": 3.0, "re": 1.2, "e_re": 0.2,
           "e": 0.2, "e_e": 0.05, "rd": 2.5, "e_rd": 0.2, "i": 45.0, "e_i": 3.0, "nb": 4.0, "e_nb": 0.0}
    row.update(values)
    return row


def astroquery_name(vizier_name: str) -> str:
    """The name astroquery's Vizier gives a VizieR column: characters outside [A-Za-z0-9_] become
    ``_``, and a name starting with another character than a letter or ``_`` gets a leading ``_``
    (``(B/T)r`` -> ``__B_T_r``, ``_RA`` stays; examples from ``shared/notes/data_formats.md``)."""
    out = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in vizier_name)
    return out if vizier_name[:1].isalpha() or vizier_name[:1] == "_" else "_" + out


def write_simard_vizier(path: str | Path, rows: Sequence[Mapping[str, Any]], table: int = 1,
                        names: str = "vizier", fmt: str = "fits") -> Path:
    """Simard et al. 2011 table ``table`` (1: n_b = 4; 2: free n_b; 3: pure Sersic) as VizieR gives
    it (``names="vizier"``) or as astroquery names it (``"astroquery"``), in FITS or CSV; -99.99 for
    nulls. Table 1 carries ``nb = 4`` throughout unless a row says otherwise."""
    full = [simard_row(i, **({"nb": 4.0} if table == 1 else {}), **r) for i, r in enumerate(rows)]
    t = Table()
    for key, vname in SIMARD_VIZIER_NAMES.items():
        if table == 3 and key in ("bt_g", "e_bt_g", "bt_r", "e_bt_r", "re", "e_re", "rd", "e_rd", "e", "e_e"):
            continue
        name = astroquery_name(vname) if names == "astroquery" else vname
        values = [-99.99 if f[key] is None else f[key] for f in full]
        t[name] = np.array(values, dtype=np.int64 if key == "objid" else np.float64)
    if fmt == "csv":
        t.write(path, format="ascii.csv", overwrite=True)
    else:
        with warnings.catch_warnings():  # VizieR's names hold "(", "/", ")": FITS allows them, with a warning
            warnings.simplefilter("ignore", fits.verify.VerifyWarning)
            t.write(path, format="fits", overwrite=True)
    return Path(path)


# ------------------------------------------------------------------------------------------
# Galaxy Zoo 2
# ------------------------------------------------------------------------------------------
def gz2_answer_stems() -> list[str]:
    """``tNN_<question>_aMM_<answer>`` for the 37 answers, in the order of the real tables."""
    from sim2obs.models.gz2 import gz2_tree

    return gz2_tree().column_names(suffix=None)


GZ2_SUFFIXES = ("count", "weight", "fraction", "weighted_fraction", "debiased", "flag")


def gz2_row(i: int = 0, fractions: Mapping[str, float] | None = None, votes: int = 40,
            **values: Any) -> dict[str, Any]:
    """A GZ2 galaxy: ``fractions`` maps answer ids (``"a01"``) to the within-question vote fraction
    (default: every question split evenly); counts = round(fraction x votes)."""
    from sim2obs.models.gz2 import gz2_tree

    tree = gz2_tree()
    frac = {}
    for q in tree.questions:
        for aid in q.answer_ids:
            frac[aid] = 1.0 / len(q.answer_ids)
    frac.update(fractions or {})
    row: dict[str, Any] = {"objid": 587722981741363294 + i, "ra": 150.0 + 0.01 * i, "dec": 1.0 + 0.01 * i,
                           "sample": "original", "gz2_class": "Sc", "total_votes": votes * 5,
                           "total_classifications": votes}
    for stem, aid in zip(gz2_answer_stems(), tree.answer_ids):
        f = float(frac[aid])
        row[f"{stem}_count"] = int(round(f * votes))
        row[f"{stem}_weight"] = float(round(f * votes))
        row[f"{stem}_fraction"] = round(f, 3)
        row[f"{stem}_weighted_fraction"] = round(f, 3)
        row[f"{stem}_debiased"] = f
        row[f"{stem}_flag"] = 0
    row.update(values)
    return row


def write_gz2_csv(path: str | Path, rows: Sequence[Mapping[str, Any]], flavour: str = "hart16",
                  drop: Iterable[str] = ()) -> Path:
    """``gz2_hart16.csv`` (``flavour="hart16"``: dr7objid, ra, dec, rastring, decstring, sample,
    gz2_class, total_classifications, total_votes, then six columns per answer) or a Willett et al.
    2013 table (``"willett"``: objid, sample, ra, dec, total_votes, total_classifications, then the
    same answer columns). Gzipped when the name ends in ``.gz``. ``drop`` leaves columns out."""
    full = [gz2_row(i, **r) for i, r in enumerate(rows)]
    stems = gz2_answer_stems()
    answer_cols = [f"{s}_{suf}" for s in stems for suf in GZ2_SUFFIXES]
    if flavour == "hart16":
        head = ["dr7objid", "ra", "dec", "rastring", "decstring", "sample", "gz2_class", "total_classifications",
                "total_votes"]
    elif flavour == "willett":
        head = ["objid", "sample", "ra", "dec", "total_votes", "total_classifications"]
    else:
        raise ValueError(f"unknown GZ2 flavour {flavour!r}")
    drop = set(drop)
    cols = [c for c in head + answer_cols if c not in drop]
    lines = [",".join(cols)]
    for f in full:
        f = dict(f)
        f.setdefault("dr7objid", f["objid"])
        f.setdefault("rastring", _sexagesimal(f["ra"] / 15.0))
        f.setdefault("decstring", _sexagesimal(f["dec"], sign=True))
        lines.append(",".join("" if f.get(c) is None else str(f.get(c)) for c in cols))
    data = ("\n".join(lines) + "\n").encode()
    path = Path(path)
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)
    return path


def _sexagesimal(x: float, sign: bool = False) -> str:
    s = "-" if x < 0 else ("+" if sign else "")
    x = abs(x)
    d = int(x)
    m = int((x - d) * 60)
    sec = (x - d - m / 60) * 3600
    return f"{s}{d:02d}:{m:02d}:{sec:05.2f}"


# ------------------------------------------------------------------------------------------
# GalSim RealGalaxyCatalog (COSMOS / AEGIS)
# ------------------------------------------------------------------------------------------
HST_PIXEL = 0.03  # arcsec per pixel of the COSMOS/AEGIS postage stamps
_SERSIC_B4 = 3.607  # constants of the GalSim bulgefit flux formula (real_samples/README.md)
_SERSIC_B1 = 1.901


def bulgefit_params(flux_b: float, hlr_b: float, q_b: float, flux_d: float, hlr_d: float, q_d: float,
                    phi: float = 0.0, centre: float = 0.0) -> np.ndarray:
    """The 16 ``bulgefit`` numbers (disk[0:8] then bulge[8:16]: surface brightness at the
    half-light radius, major-axis half-light radius in pixels, n, q, boxiness, x0, y0, phi) of a
    bulge (n = 4) + disk (n = 1) with these fluxes and *circularised* half-light radii (arcsec):
    the inverse of the B/T formula in ``real_samples/README.md``."""
    out = np.zeros(16)
    for off, flux, hlr, q, n, c in ((0, flux_d, hlr_d, q_d, 1.0, _SERSIC_B1), (8, flux_b, hlr_b, q_b, 4.0, _SERSIC_B4)):
        out[off + 0] = flux * HST_PIXEL**2 / (2 * math.pi * c * hlr**2) if hlr > 0 else 0.0
        out[off + 1] = hlr / (HST_PIXEL * math.sqrt(q))
        out[off + 2] = n
        out[off + 3] = q
        out[off + 5] = out[off + 6] = centre
        out[off + 7] = phi
    return out


def write_real_galaxy_catalog(directory: str | Path, n: int = 4, seed: int = 0, stamp: int = 64,
                              prefix: str = "tiny_real_galaxy_catalog", with_fits: bool = True,
                              noise_sigma: float = 2e-3) -> dict[str, Any]:
    """A tiny RealGalaxyCatalog in GalSim's format: ``<prefix>.fits`` (IDENT, RA, DEC, MAG, BAND,
    WEIGHT, GAL_FILENAME, PSF_FILENAME, GAL_HDU, PSF_HDU, PIXEL_SCALE, NOISE_MEAN, NOISE_VARIANCE,
    NOISE_FILENAME, stamp_flux), ``<prefix>_fits.fits`` (IDENT, mag_auto, flux_radius, zphot,
    sersicfit[8], bulgefit[16], fit_status[5], fit_dvc_btt, use_bulgefit, viable_sersic, hlr[3],
    flux[4]), ``<prefix>_selection.fits``, a galaxy image file and a PSF image file (one image HDU
    per object) and a noise correlation-function image, at 0.03"/px in F814W.

    Galaxies are GalSim bulge (n = 4) + exponential disk profiles convolved with a small Gaussian
    "HST" PSF, with Gaussian noise ``noise_sigma``; the ``_fits`` table holds the exact parameters
    drawn, so B/T from ``bulgefit`` equals the truth. Returns ``{"catalog": path, "dir": directory,
    "truth": Table(ident, bt, hlr_b, hlr_d, flux, mag)}``.
    """
    import galsim

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    gal_file, psf_file, noise_file = f"{prefix}_images.fits", f"{prefix}_PSF_images.fits", "acs_I_unrot_sci_cf.fits"
    gal_images, psf_images = [], []
    cat_rows, fit_rows, truth = [], [], []
    psf = galsim.Gaussian(fwhm=0.1)
    for i in range(n):
        bt = float(rng.uniform(0.05, 0.9))
        hlr_b, hlr_d = float(rng.uniform(0.1, 0.25)), float(rng.uniform(0.25, 0.45))
        q_b, q_d = float(rng.uniform(0.6, 0.95)), float(rng.uniform(0.4, 0.9))
        phi = float(rng.uniform(0, math.pi))
        mag = float(rng.uniform(20.5, 22.0))
        flux = 10 ** (-0.4 * (mag - 25.94))  # counts/s with the ACS F814W AB zero point
        bulge = galsim.DeVaucouleurs(half_light_radius=hlr_b, flux=bt * flux).shear(q=q_b, beta=phi * galsim.radians)
        disk = galsim.Exponential(half_light_radius=hlr_d, flux=(1 - bt) * flux).shear(q=q_d, beta=phi * galsim.radians)
        img = galsim.Convolve(bulge + disk, psf).drawImage(nx=stamp, ny=stamp, scale=HST_PIXEL)
        img.addNoise(galsim.GaussianNoise(galsim.BaseDeviate(seed * 1000 + i + 1), sigma=noise_sigma))
        psf_img = psf.drawImage(nx=25, ny=25, scale=HST_PIXEL)
        gal_images.append(img.array.astype(np.float32))
        psf_images.append(psf_img.array.astype(np.float32))
        ident = 200000 + i
        cat_rows.append((ident, 150.1 + 0.001 * i, 2.2 + 0.001 * i, mag, "F814W", 1.0, gal_file, psf_file, i, i,
                         HST_PIXEL, 0.0, noise_sigma**2, noise_file, float(img.array.sum())))
        bf = bulgefit_params(bt * flux, hlr_b, q_b, (1 - bt) * flux, hlr_d, q_d, phi, stamp / 2)
        sf = np.array([bf[0], bf[1], 2.0, q_d, 0.0, stamp / 2, stamp / 2, phi])
        fit_rows.append((ident, mag, 10.0, 0.5, sf, bf, np.ones(5, np.int32), 0.003, 0.003, bt, 1, 1,
                         np.array([(hlr_b + hlr_d) / 2, 0.0, 0.0]), np.array([flux, 0.0, 0.0, 0.0])))
        truth.append((ident, bt, hlr_b, hlr_d, q_b, q_d, flux, mag))
    # One image per HDU, the first in the primary HDU (GAL_HDU / PSF_HDU = i), as GalSim's files are.
    for fname, images in ((gal_file, gal_images), (psf_file, psf_images)):
        fits.HDUList([fits.PrimaryHDU(images[0])] + [fits.ImageHDU(a) for a in images[1:]]).writeto(
            d / fname, overwrite=True)
    # Correlation function of uncorrelated noise: 1 at the centre, 0 elsewhere (GalSim rescales it to the variance).
    cf = np.zeros((11, 11), np.float32)
    cf[5, 5] = 1.0
    fits.PrimaryHDU(cf).writeto(d / noise_file, overwrite=True)
    cat = Table(rows=cat_rows, names=("IDENT", "RA", "DEC", "MAG", "BAND", "WEIGHT", "GAL_FILENAME",
                                      "PSF_FILENAME", "GAL_HDU", "PSF_HDU", "PIXEL_SCALE", "NOISE_MEAN",
                                      "NOISE_VARIANCE", "NOISE_FILENAME", "stamp_flux"))
    cat.write(d / f"{prefix}.fits", overwrite=True)
    if with_fits:
        ft = Table(rows=fit_rows, names=("IDENT", "mag_auto", "flux_radius", "zphot", "sersicfit", "bulgefit",
                                         "fit_status", "fit_mad_s", "fit_mad_b", "fit_dvc_btt", "use_bulgefit",
                                         "viable_sersic", "hlr", "flux"))
        ft.write(d / f"{prefix}_fits.fits", overwrite=True)
    sel = Table({"IDENT": cat["IDENT"], "dmag": np.zeros(n), "sn_ellip_gauss": np.full(n, 100.0),
                 "min_mask_dist_pixels": np.full(n, 40.0), "average_mask_adjacent_pixel_count": np.zeros(n),
                 "peak_image_pixel_count": np.full(n, 0.1)})
    sel.write(d / f"{prefix}_selection.fits", overwrite=True)
    truth_t = Table(rows=truth, names=("ident", "bt", "hlr_b", "hlr_d", "q_b", "q_d", "flux", "mag"))
    return {"catalog": d / f"{prefix}.fits", "dir": d, "truth": truth_t}
