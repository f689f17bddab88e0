"""The papers' sample selections, as pure functions over astropy Tables.

Each function takes one Table (already cross-matched where a paper combines catalogues), applies the
paper's cuts in order, derives the labels, and returns the kept rows. ``meta["selection"]`` lists every
cut with its paper section, its threshold and the rows before and after it; a row with a masked value
in a column a cut reads fails that cut. Numbers the paper does not give are config defaults, marked
*not in the paper* below.

- :func:`select_ml_sample` — Dobbels et al. (2019) §2.1, stellar M/L_g from GSWLC-2.
- :func:`select_metallicity_sample` — Wu & Boada (2019) §2, 12 + log(O/H) from MPA-JHU DR7.
- :func:`select_simard_bt` — Ghosh et al. (2021/2022, GaMPEN) §3 with Simard et al. (2011) n_b = 4 fits.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping

import astropy.units as u
import numpy as np
from astropy.table import MaskedColumn, Table

from sim2obs.errors import DataFormatError, Sim2obsValueError

__all__ = ["MLSampleConfig", "MetallicitySampleConfig", "SimardBTConfig", "select_ml_sample",
           "select_metallicity_sample", "select_simard_bt", "cosmology"]

LN10 = float(np.log(10.0))
#: Solar absolute AB magnitudes (Willmer 2018), as in :mod:`sim2obs.simgen.population`.
MSUN_AB = {"u": 6.39, "g": 5.11, "r": 4.65, "i": 4.53, "z": 4.50}


def cosmology(name: str):
    """An astropy built-in cosmology by name (``Planck18``, ``WMAP9``, ...)."""
    from astropy import cosmology as cosmo  # deferred: loads the cosmology realisations

    if name not in cosmo.realizations.available:
        raise Sim2obsValueError("unknown astropy cosmology", value=name, allowed=list(cosmo.realizations.available))
    return getattr(cosmo, name)


def _values(table: Table, name: str, what: str) -> np.ma.MaskedArray:
    if name not in table.colnames:
        raise DataFormatError(table.meta.get("source_file", "<table>"), name,
                              f"the {what} selection needs this column (found: {table.colnames[:25]})")
    return np.ma.asarray(table[name], dtype=np.float64)


def _ok(values: np.ma.MaskedArray, test: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``test`` on the values, False where masked or non-finite."""
    data = np.ma.filled(values, np.nan)
    with np.errstate(invalid="ignore"):
        return ~np.ma.getmaskarray(values) & np.isfinite(data) & test(data)


def _apply(table: Table, cuts: list[tuple[str, str, Any, np.ndarray]], what: str) -> Table:
    """Apply ``(name, paper section, threshold, keep mask)`` cuts in order; record counts."""
    keep = np.ones(len(table), dtype=bool)
    record = []
    for name, section, threshold, mask in cuts:
        before = int(keep.sum())
        keep &= mask
        record.append({"cut": name, "section": section, "threshold": threshold, "n_before": before,
                       "n_after": int(keep.sum())})
    out = table[keep]
    out.meta["selection"] = {"sample": what, "cuts": record, "n_input": len(table), "n_selected": int(keep.sum())}
    return out


# ------------------------------------------------------------------------------------------
# Dobbels et al. 2019: M/L_g
# ------------------------------------------------------------------------------------------
@dataclass
class MLSampleConfig:
    """Cuts and derivations of the M/L sample (Dobbels et al. 2019, §2.1).

    ``chi2_max``: SED-fit reduced chi^2 upper limit (§2.1: "below 5"). ``d25_min_arcmin``: HyperLeda
    D25 lower limit (§2.1: D25 > 0.4 arcmin). ``z_min, z_max``: the GSWLC range 0.01 < z < 0.3 that
    §2.1 quotes. ``flag_sed_ok``: accepted GSWLC ``flag_sed`` values (*not in the paper*; default
    None: not applied). ``cosmology``: for luminosity distances (*not in the paper*; default
    Planck18). Column names: ``mag_g``, ``mag_i`` (SDSS model magnitudes, AB), their errors
    (optional), ``extinction_g/i`` (optional Galactic extinction, mag, subtracted when present), ``d25``
    (arcmin). Solar magnitudes: Willmer (2018).
    """

    chi2_max: float = 5.0
    d25_min_arcmin: float = 0.4
    z_min: float = 0.01
    z_max: float = 0.3
    flag_sed_ok: list[int] | None = None
    cosmology: str = "Planck18"
    columns: dict[str, str] = field(default_factory=lambda: {
        "z": "z", "chi2": "chi2_r", "logmstar": "logmstar", "logmstar_err": "logmstar_err", "flag_sed": "flag_sed",
        "mag_g": "modelmag_g", "mag_i": "modelmag_i", "mag_g_err": "modelmagerr_g", "mag_i_err": "modelmagerr_i",
        "extinction_g": "extinction_g", "extinction_i": "extinction_i", "d25": "d25_arcmin"})


def _luminosity(mag: np.ndarray, dist_mpc: np.ndarray, band: str) -> np.ndarray:
    """L / L_sun from apparent AB magnitude and luminosity distance (no K-correction)."""
    abs_mag = mag - 5.0 * np.log10(dist_mpc * 1e5)
    return 10.0 ** (-0.4 * (abs_mag - MSUN_AB[band]))


def select_ml_sample(table: Table, config: MLSampleConfig | Mapping[str, Any] | None = None) -> Table:
    """The M/L_g sample of Dobbels et al. (2019, §2.1) from GSWLC-2 rows with SDSS model magnitudes
    and HyperLeda D25 (cross-matched beforehand).

    Cuts, in order: (1) logMstar and its error present (GSWLC -99 = no SED fit); (2) reduced chi^2 < ``chi2_max``;
    (3) ``z_min < z < z_max``; (4) g and i model magnitudes present; (5) D25 > ``d25_min_arcmin``;
    (6) ``flag_sed`` in ``flag_sed_ok`` (if set).

    Adds ``lum_distance_mpc`` (Mpc), ``lum_g``, ``lum_i`` (L_sun, from the model magnitudes minus any
    Galactic extinction column, the distance and Willmer 2018 solar magnitudes), ``ml_g`` =
    10^logMstar / lum_g (M_sun/L_sun) and ``ml_g_err`` = ml_g * sqrt((ln10 sigma_logM)^2 +
    (0.4 ln10 sigma_g)^2). The paper took L_g and its uncertainty from the GSWLC SED models, which
    the public catalogue does not carry; here L_g is photometric, and the error carries the mass
    error and the g magnitude error when that column is present.
    """
    cfg = MLSampleConfig(**dict(config)) if isinstance(config, Mapping) else (config or MLSampleConfig())
    c = {**MLSampleConfig().columns, **cfg.columns}
    what = "M/L (Dobbels et al. 2019)"
    logm, logm_err = _values(table, c["logmstar"], what), _values(table, c["logmstar_err"], what)
    chi2, z = _values(table, c["chi2"], what), _values(table, c["z"], what)
    mag_g, mag_i, d25 = (_values(table, c[k], what) for k in ("mag_g", "mag_i", "d25"))
    cuts = [
        ("logMstar present", "§2.1", "not -99", _ok(logm, lambda v: v > 0) & _ok(logm_err, lambda v: v >= 0)),
        ("SED-fit reduced chi2", "§2.1", f"< {cfg.chi2_max}", _ok(chi2, lambda v: v < cfg.chi2_max)),
        ("redshift", "§2.1 (GSWLC range)", f"{cfg.z_min} < z < {cfg.z_max}",
         _ok(z, lambda v: (v > cfg.z_min) & (v < cfg.z_max))),
        ("g and i model magnitudes present", "§2.1", "finite",
         _ok(mag_g, lambda v: v > 0) & _ok(mag_i, lambda v: v > 0)),
        ("D25", "§2.1", f"> {cfg.d25_min_arcmin} arcmin", _ok(d25, lambda v: v > cfg.d25_min_arcmin)),
    ]
    if cfg.flag_sed_ok is not None:
        flag = _values(table, c["flag_sed"], what)
        cuts.append(("flag_sed", "not in the paper (config)", list(cfg.flag_sed_ok),
                     _ok(flag, lambda v: np.isin(v, cfg.flag_sed_ok))))
    out = _apply(table, cuts, what)
    zz = np.asarray(out[c["z"]], dtype=np.float64)
    dist = cosmology(cfg.cosmology).luminosity_distance(zz).to_value(u.Mpc)
    mags = {}
    for b in ("g", "i"):
        m = np.asarray(np.ma.filled(np.ma.asarray(out[c[f"mag_{b}"]], dtype=np.float64), np.nan))
        ext = c.get(f"extinction_{b}")
        if ext in out.colnames:
            m = m - np.ma.filled(np.ma.asarray(out[ext], dtype=np.float64), 0.0)
        mags[b] = m
    out["lum_distance_mpc"] = MaskedColumn(dist, unit="Mpc")
    out["lum_g"] = MaskedColumn(_luminosity(mags["g"], dist, "g"), unit="solLum")
    out["lum_i"] = MaskedColumn(_luminosity(mags["i"], dist, "i"), unit="solLum")
    mass = 10.0 ** np.asarray(out[c["logmstar"]], dtype=np.float64)
    ml = mass / np.asarray(out["lum_g"])
    var = (LN10 * np.asarray(out[c["logmstar_err"]], dtype=np.float64)) ** 2
    if c["mag_g_err"] in out.colnames:
        var = var + (0.4 * LN10 * np.ma.filled(np.ma.asarray(out[c["mag_g_err"]], dtype=np.float64), 0.0)) ** 2
    out["ml_g"] = MaskedColumn(ml, unit="solMass / solLum")
    out["ml_g_err"] = MaskedColumn(ml * np.sqrt(var), unit="solMass / solLum")
    out.meta["selection"]["config"] = asdict(cfg)
    return out


# ------------------------------------------------------------------------------------------
# Wu & Boada 2019: metallicity
# ------------------------------------------------------------------------------------------
@dataclass
class MetallicitySampleConfig:
    """Cuts of the metallicity sample (Wu & Boada 2019, §2).

    ``rchi2_max`` 2 (reduced chi^2 of the spectral fit, "rChi2 < 2"); ``mag_min, mag_max`` 10, 25 (each
    of u, g, r, i, z); ``ur_min, ur_max`` 0, 6 (u - r colour); ``z_min`` 0.02 (spectroscopic
    redshift); ``zerr_max`` 0.01; ``petro_r_max`` 18 (petroMag_r, the spectroscopic flux limit).
    ``z_warning_zero``: also require MPA-JHU ``z_warning == 0`` (*not in the paper*; default False).
    Column names: ``mag_<band>`` (SDSS DR14 magnitudes; the paper does not say which kind, *not in
    the paper*: default model magnitudes ``modelmag_<band>``), ``petro_r``, ``rchi2`` (SDSS SpecObj),
    ``z``, ``z_err``, ``oh_p16/50/84``.
    """

    rchi2_max: float = 2.0
    mag_min: float = 10.0
    mag_max: float = 25.0
    ur_min: float = 0.0
    ur_max: float = 6.0
    z_min: float = 0.02
    zerr_max: float = 0.01
    petro_r_max: float = 18.0
    z_warning_zero: bool = False
    columns: dict[str, str] = field(default_factory=lambda: {
        "rchi2": "rchi2", "z": "z", "z_err": "z_err", "z_warning": "z_warning", "petro_r": "petromag_r",
        "oh_p16": "oh_p16", "oh_p50": "oh_p50", "oh_p84": "oh_p84",
        **{f"mag_{b}": f"modelmag_{b}" for b in "ugriz"}})


def select_metallicity_sample(table: Table,
                              config: MetallicitySampleConfig | Mapping[str, Any] | None = None) -> Table:
    """The metallicity sample of Wu & Boada (2019, §2) from MPA-JHU rows with SDSS photometry.

    Cuts, in order: (1) rChi2 < 2; (2) oh_p50 available (MPA-JHU O/H present, p16 and p84 too);
    (3) 10 < u, g, r, i, z < 25; (4) 0 < u - r < 6; (5) z > 0.02; (6) z_err < 0.01;
    (7) petroMag_r < 18; (8) z_warning == 0 if configured. Adds ``oh12`` (= oh_p50, dex) and
    ``oh12_err`` = (oh_p84 - oh_p16) / 2 (dex)."""
    cfg = (MetallicitySampleConfig(**dict(config)) if isinstance(config, Mapping)
           else (config or MetallicitySampleConfig()))
    c = {**MetallicitySampleConfig().columns, **cfg.columns}
    what = "metallicity (Wu & Boada 2019)"
    mags = {b: _values(table, c[f"mag_{b}"], what) for b in "ugriz"}
    oh = {k: _values(table, c[k], what) for k in ("oh_p16", "oh_p50", "oh_p84")}
    in_range = np.ones(len(table), dtype=bool)
    for m in mags.values():
        in_range &= _ok(m, lambda v: (v > cfg.mag_min) & (v < cfg.mag_max))
    ur = mags["u"] - mags["r"]
    cuts = [
        ("rChi2", "§2", f"< {cfg.rchi2_max}", _ok(_values(table, c["rchi2"], what), lambda v: v < cfg.rchi2_max)),
        ("oh_p50 available", "§2", "MPA-JHU O/H present",
         _ok(oh["oh_p50"], lambda v: v > 0) & _ok(oh["oh_p16"], lambda v: v > 0) & _ok(oh["oh_p84"], lambda v: v > 0)),
        ("ugriz magnitudes", "§2", f"{cfg.mag_min} < m < {cfg.mag_max}", in_range),
        ("u - r colour", "§2", f"{cfg.ur_min} < u - r < {cfg.ur_max}",
         _ok(ur, lambda v: (v > cfg.ur_min) & (v < cfg.ur_max))),
        ("redshift", "§2", f"z > {cfg.z_min}", _ok(_values(table, c["z"], what), lambda v: v > cfg.z_min)),
        ("redshift error", "§2", f"z_err < {cfg.zerr_max}",
         _ok(_values(table, c["z_err"], what), lambda v: v < cfg.zerr_max)),
        ("petroMag_r", "§2", f"< {cfg.petro_r_max}",
         _ok(_values(table, c["petro_r"], what), lambda v: v < cfg.petro_r_max)),
    ]
    if cfg.z_warning_zero:
        cuts.append(("z_warning", "not in the paper (config)", "== 0",
                     _ok(_values(table, c["z_warning"], what), lambda v: v == 0)))
    out = _apply(table, cuts, what)
    p16, p50, p84 = (np.asarray(out[c[k]], dtype=np.float64) for k in ("oh_p16", "oh_p50", "oh_p84"))
    out["oh12"] = MaskedColumn(p50, unit="dex")
    out["oh12_err"] = MaskedColumn(0.5 * (p84 - p16), unit="dex")
    out.meta["selection"]["config"] = asdict(cfg)
    return out


# ------------------------------------------------------------------------------------------
# GaMPEN / Simard et al. 2011: B/T
# ------------------------------------------------------------------------------------------
@dataclass
class SimardBTConfig:
    """The B/T sample of Ghosh et al. (GaMPEN, §3): Simard et al. (2011) n_b = 4 bulge + disk fits
    (their table 1) of galaxies at ``z < z_max`` = 0.25. ``nb``: the bulge Sersic index required (4).
    ``rchi2_max``: optional upper limit on Simard's fit reduced chi^2 (*not in the paper*; default
    None). ``band``: the band of the labels (r; GaMPEN's HSC galaxies were g band, the task reads r).
    """

    z_max: float = 0.25
    nb: float = 4.0
    rchi2_max: float | None = None
    band: str = "r"


def select_simard_bt(table: Table, config: SimardBTConfig | Mapping[str, Any] | None = None) -> Table:
    """Simard et al. (2011) n_b = 4 fits as GaMPEN labels.

    Cuts: (1) bulge n_b == 4 (table 1; a table-2 row with another n_b fails); (2) z < 0.25 (GaMPEN §3);
    (3) B/T, its error, the half-light radius, the kpc/arcsec scale and the total model magnitude
    present (-99.99 = null); (4) reduced chi^2 < ``rchi2_max`` if configured.

    Adds, for ``band`` b: ``bt_b`` and ``bt_b_err``; ``r_e_b`` (arcsec) = Rhl_b / Scale, the galaxy's
    half-light semi-major axis of the fit (Simard's R_hl, kpc, over kpc/arcsec); ``flux_b`` and
    ``flux_b_err`` (nanomaggies) from the fit's total magnitude ``<b>g2d`` and its error.
    """
    cfg = SimardBTConfig(**dict(config)) if isinstance(config, Mapping) else (config or SimardBTConfig())
    b = cfg.band
    what = "B/T (GaMPEN, Simard et al. 2011 n_b = 4)"
    z = _values(table, "z", what)
    bt, bt_err = _values(table, f"bt_{b}", what), _values(table, f"e_bt_{b}", what)
    rhl, scale, mag = _values(table, f"rhl{b}", what), _values(table, "scale", what), _values(table, f"{b}g2d", what)
    nb_ok = (_ok(_values(table, "nb", what), lambda v: np.abs(v - cfg.nb) < 1e-6) if "nb" in table.colnames
             else np.full(len(table), table.meta.get("simard_table") == 1))
    cuts = [
        ("bulge Sersic index", "§3 (Simard table 1)", f"n_b == {cfg.nb:g}", nb_ok),
        ("redshift", "§3", f"z < {cfg.z_max}", _ok(z, lambda v: v < cfg.z_max)),
        ("fit values present", "§3", "B/T, e_B/T, Rhl, Scale, total magnitude not null",
         _ok(bt, lambda v: (v >= 0) & (v <= 1)) & _ok(bt_err, lambda v: v >= 0) & _ok(rhl, lambda v: v > 0)
         & _ok(scale, lambda v: v > 0) & _ok(mag, lambda v: v > 0)),
    ]
    if cfg.rchi2_max is not None:
        cuts.append(("fit reduced chi2", "not in the paper (config)", f"< {cfg.rchi2_max}",
                     _ok(_values(table, "rchi2", what), lambda v: v < cfg.rchi2_max)))
    out = _apply(table, cuts, what)
    out[f"bt_{b}"] = MaskedColumn(np.asarray(out[f"bt_{b}"], dtype=np.float64))
    out[f"bt_{b}_err"] = MaskedColumn(np.asarray(out[f"e_bt_{b}"], dtype=np.float64))
    out[f"r_e_{b}"] = MaskedColumn(np.asarray(out[f"rhl{b}"], dtype=np.float64)
                                   / np.asarray(out["scale"], dtype=np.float64), unit="arcsec")
    flux = 10.0 ** (-0.4 * (np.asarray(out[f"{b}g2d"], dtype=np.float64) - 22.5))
    out[f"flux_{b}"] = MaskedColumn(flux, unit="nanomaggy")
    if f"e_{b}g2d" in out.colnames:
        err = np.ma.filled(np.ma.asarray(out[f"e_{b}g2d"], dtype=np.float64), np.nan)
        out[f"flux_{b}_err"] = MaskedColumn(flux * 0.4 * LN10 * err, mask=~np.isfinite(err), unit="nanomaggy")
    out.meta["selection"]["config"] = asdict(cfg)
    return out
