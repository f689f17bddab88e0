"""Readers of the survey catalogues: GSWLC-2, MPA-JHU DR7 and Simard et al. (2011).

Each returns an astropy :class:`~astropy.table.Table` with lower-case canonical column names, units
attached, and every documented missing-value sentinel (and NaN) turned into a *masked* value. A file
that is not of the expected type, lacks a needed column or holds a malformed row raises
:class:`~sim2obs.errors.DataFormatError` naming the file and the line and/or column.

Format facts (column orders, names, sentinels) are from ``shared/notes/data_formats.md``, which
gathers the distributors' READMEs; where a fact is marked unconfirmed there, the docstring says so.
"""
from __future__ import annotations

import gzip
import io
import re
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from astropy.io import fits
from astropy.table import MaskedColumn, Table, join

from sim2obs.errors import DataFormatError

__all__ = ["GSWLC_COLUMNS", "GSWLC_UNITS", "read_gswlc", "read_mpajhu", "read_simard", "canonical_name",
           "read_any_table", "mask_sentinels"]

# ------------------------------------------------------------------------------------------
# Shared helpers
# ------------------------------------------------------------------------------------------
_FITS_MAGIC = b"SIMPLE  ="


def canonical_name(name: str) -> str:
    """Lower case, every run of characters outside ``[a-z0-9]`` -> one ``_``, no ``_`` at the ends:
    ``(B/T)r``, ``__B_T_r`` (astroquery) -> ``b_t_r``; ``_RA`` -> ``ra``; ``logM*`` -> ``logm``."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it is gzip (by content, not by name)."""
    if not path.exists():
        raise DataFormatError(path, None, "file not found")
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise DataFormatError(path, None, f"gzip data is truncated or corrupt ({exc})") from None
    return data


def _is_fits(data: bytes) -> bool:
    return data[:len(_FITS_MAGIC)] == _FITS_MAGIC


def read_any_table(path: str | Path, hdu: int = 1) -> Table:
    """A table from FITS (gzipped or not), VOTable, or CSV/ECSV/any text format astropy reads.
    Raises :class:`DataFormatError` naming the file when it is none of these."""
    path = Path(path)
    data = _read_bytes(path)
    if _is_fits(data):
        try:
            with warnings.catch_warnings(), fits.open(io.BytesIO(data), memmap=False) as hdul:
                # VizieR names such as "(B/T)r" are legal FITS but draw a VerifyWarning
                warnings.simplefilter("ignore", fits.verify.VerifyWarning)
                if len(hdul) <= hdu or not isinstance(hdul[hdu], (fits.BinTableHDU, fits.TableHDU)):
                    raise DataFormatError(path, f"HDU {hdu}", "FITS file has no table in this HDU")
                return Table(hdul[hdu].data, masked=True)
        except (OSError, TypeError, ValueError) as exc:
            raise DataFormatError(path, None, f"unreadable FITS ({exc})") from None
    head = data[:200].lstrip()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise DataFormatError(path, None, "not a FITS, VOTable or text table (binary content)") from None
    fmt = "votable" if head.startswith(b"<?xml") or b"<VOTABLE" in head else None
    try:
        if fmt == "votable":
            return Table.read(io.BytesIO(data), format="votable")
        if text.startswith("# %ECSV"):
            return Table.read(text, format="ascii.ecsv")
        return Table.read(text, format="ascii.csv" if "," in text.split("\n", 1)[0] else "ascii")
    except Exception as exc:  # astropy raises many types for unparsable text
        raise DataFormatError(path, None, f"cannot parse as a table ({type(exc).__name__}: {exc})") from None


def mask_sentinels(column: Any, sentinels: Iterable[float], tol: float = 1e-6, below: float | None = None,
                   unit: str | None = None, name: str | None = None) -> MaskedColumn:
    """``column`` as a :class:`MaskedColumn` in which NaN, each value within ``tol`` of a sentinel,
    and (if ``below`` is given) every value <= ``below`` are masked."""
    col = MaskedColumn(column, name=name or getattr(column, "name", None), unit=unit)
    values = np.asarray(col.data)
    mask = np.array(np.ma.getmaskarray(col), dtype=bool)
    if values.dtype.kind in "fiu":
        v = values.astype(np.float64)
        mask |= ~np.isfinite(v)
        for s in sentinels:
            mask |= np.abs(v - s) <= tol
        if below is not None:
            mask |= v <= below
    col.mask = mask
    return col


def _rename_canonical(table: Table, path: Path, aliases: Mapping[str, str]) -> Table:
    """Rename columns to ``aliases.get(canonical_name(c), canonical_name(c))``; refuse collisions."""
    out = Table(masked=True, meta=dict(table.meta))
    for c in table.colnames:
        key = canonical_name(c)
        new = aliases.get(key, key)
        if new in out.colnames:
            raise DataFormatError(path, c, f"two columns map to {new!r}")
        out[new] = table[c]
    return out


def _require(table: Table, path: Path, names: Sequence[str], what: str) -> None:
    missing = [n for n in names if n not in table.colnames]
    if missing:
        raise DataFormatError(path, missing[0], f"missing column of the {what} "
                              f"(missing: {missing}; found: {table.colnames[:30]})")


# ------------------------------------------------------------------------------------------
# GSWLC-2
# ------------------------------------------------------------------------------------------
#: Column order of ``GSWLC-{A,M,D,X}2.dat`` (Salim et al. 2016, 2018; GSWLC-2 README as summarised in
#: ``shared/notes/data_formats.md``; the positions of ra/dec (6, 7), z (8) and logMstar (10) agree with
#: public readers of the files).
GSWLC_COLUMNS = ("objid", "glxid", "plate", "mjd", "fiber_id", "ra", "dec", "z", "chi2_r", "logmstar",
                 "logmstar_err", "logsfr_sed", "logsfr_sed_err", "a_fuv", "a_fuv_err", "a_b", "a_b_err",
                 "a_v", "a_v_err", "flag_sed", "uv_survey", "flag_uv", "flag_midir", "flag_mgs")
_GSWLC_INT = ("objid", "glxid", "plate", "mjd", "fiber_id", "flag_sed", "uv_survey", "flag_uv", "flag_midir",
              "flag_mgs")
GSWLC_UNITS = {"ra": "deg", "dec": "deg", "logmstar": "dex(solMass)", "logmstar_err": "dex",
               "logsfr_sed": "dex(solMass / yr)", "logsfr_sed_err": "dex", "a_fuv": "mag", "a_fuv_err": "mag",
               "a_b": "mag", "a_b_err": "mag", "a_v": "mag", "a_v_err": "mag"}
#: VizieR (J/ApJ/859/11) and other spellings -> canonical names (matched after :func:`canonical_name`).
#: The VizieR labels are *unconfirmed* beyond RAdeg, DEdeg and LOGMSTAR (data_formats.md); the
#: spellings below are the likely ones, and a missing needed column is reported by name.
_GSWLC_ALIASES = {
    "radeg": "ra", "raj2000": "ra", "dedeg": "dec", "dej2000": "dec", "de": "dec",
    "chi2r": "chi2_r", "rchi2": "chi2_r", "chi2": "chi2_r",
    "logm": "logmstar", "logmstar": "logmstar", "e_logm": "logmstar_err", "e_logmstar": "logmstar_err",
    "logsfrsed": "logsfr_sed", "logsfr": "logsfr_sed", "e_logsfrsed": "logsfr_sed_err", "e_logsfr": "logsfr_sed_err",
    "afuv": "a_fuv", "e_afuv": "a_fuv_err", "ab": "a_b", "e_ab": "a_b_err", "av": "a_v", "e_av": "a_v_err",
    "flagsed": "flag_sed", "uvsurv": "uv_survey", "uvsurvey": "uv_survey", "flaguv": "flag_uv",
    "flagmir": "flag_midir", "flagmidir": "flag_midir", "flagmgs": "flag_mgs", "fiber": "fiber_id",
    "fiberid": "fiber_id",
}
_GSWLC_REQUIRED = ("objid", "ra", "dec", "z", "chi2_r", "logmstar", "logmstar_err", "flag_sed")


def read_gswlc(path: str | Path) -> Table:
    """Read a GSWLC-2 catalogue: the ``GSWLC-{A,M,D,X}2.dat`` text files (24 whitespace-separated
    columns, no header, gzipped or not; column order :data:`GSWLC_COLUMNS`) or the VizieR form
    (J/ApJ/859/11: FITS, VOTable or CSV with named columns).

    Returns a Table with the canonical names of :data:`GSWLC_COLUMNS`, units (:data:`GSWLC_UNITS`) and
    -99 (the catalogue's "missing", data_formats.md) masked in every column but the ids. Raises
    :class:`DataFormatError` naming file, line and column for a row with the wrong number of fields or
    a field that is not a number, and naming the column when the VizieR form lacks a needed one.
    """
    path = Path(path)
    data = _read_bytes(path)
    head = data[:400].lstrip()
    if _is_fits(data) or head.startswith(b"<?xml") or re.match(rb"^[#A-Za-z_]", head or b"0"):
        table = _rename_canonical(read_any_table(path), path, _GSWLC_ALIASES)
        _require(table, path, _GSWLC_REQUIRED, "GSWLC-2 VizieR table")
    else:
        table = _parse_gswlc_dat(path, data)
    for name in table.colnames:
        if name in ("objid", "glxid"):
            continue
        table[name] = mask_sentinels(table[name], (-99.0,), tol=1e-3, unit=GSWLC_UNITS.get(name), name=name)
    table.meta.update({"catalog": "GSWLC-2", "source_file": str(path)})
    return table


def _parse_gswlc_dat(path: Path, data: bytes) -> Table:
    import pandas as pd  # deferred: heavy import, needed only for the .dat fast path

    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise DataFormatError(path, None, "not a GSWLC-2 .dat text table (binary content)") from None
    dtypes = {c: (np.int64 if c in _GSWLC_INT else np.float64) for c in GSWLC_COLUMNS}
    try:
        df = pd.read_csv(io.StringIO(text), sep=r"\s+", header=None, names=list(GSWLC_COLUMNS), dtype=dtypes,
                         engine="c", comment=None)
        floats = df[[c for c in GSWLC_COLUMNS if c not in _GSWLC_INT]].to_numpy()
        ok = len(df) > 0 and np.isfinite(floats).all()
    except (ValueError, pd.errors.ParserError, OverflowError):
        ok = False
    if not ok:
        _scan_gswlc_lines(path, text)  # raises with the line and column
        raise DataFormatError(path, None, "no rows")  # pragma: no cover - the scan always finds the fault
    return Table.from_pandas(df)


def _scan_gswlc_lines(path: Path, text: str) -> None:
    """Find the first malformed line of a GSWLC ``.dat`` and raise, naming line and column."""
    n_lines = 0
    for lineno, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        n_lines += 1
        if len(fields) != len(GSWLC_COLUMNS):
            raise DataFormatError(path, f"line {lineno}", f"{len(fields)} fields, a GSWLC-2 row has "
                                  f"{len(GSWLC_COLUMNS)} ({', '.join(GSWLC_COLUMNS)})")
        for k, (name, field) in enumerate(zip(GSWLC_COLUMNS, fields), start=1):
            try:
                value = int(field) if name in _GSWLC_INT else float(field)
            except ValueError:
                kind = "an integer" if name in _GSWLC_INT else "a number"
                raise DataFormatError(path, f"line {lineno}, column {k} ({name})",
                                      f"{field!r} is not {kind}") from None
            if isinstance(value, float) and not np.isfinite(value):
                raise DataFormatError(path, f"line {lineno}, column {k} ({name})", f"{field!r} is not finite")
    if n_lines == 0:
        raise DataFormatError(path, None, "empty GSWLC-2 table (no rows)")


# ------------------------------------------------------------------------------------------
# MPA-JHU DR7
# ------------------------------------------------------------------------------------------
_MPA_INFO_REQUIRED = ("PLATEID", "MJD", "FIBERID", "RA", "DEC", "Z", "Z_ERR", "Z_WARNING")
_MPA_STATS_REQUIRED = ("AVG", "MEDIAN", "P16", "P84")


def _read_fits_table(path: Path, required: Sequence[str], what: str) -> Table:
    data = _read_bytes(path)
    if not _is_fits(data):
        raise DataFormatError(path, None, f"not a FITS file (the {what} is FITS)")
    table = read_any_table(path)
    upper = {c.upper(): c for c in table.colnames}
    missing = [c for c in required if c not in upper]
    if missing:
        raise DataFormatError(path, missing[0], f"missing column of the {what} (found: {table.colnames[:30]})")
    table.rename_columns([upper[c] for c in upper], list(upper))
    return table


def read_mpajhu(info_path: str | Path, oh_path: str | Path, mass_path: str | Path) -> Table:
    """Read the MPA-JHU DR7 catalogue from its three row-matched FITS files (Brinchmann et al. 2004;
    Tremonti et al. 2004; files as summarised in data_formats.md): ``gal_info_dr7_v5_2.fit.gz``
    (positions, redshifts), ``gal_fiboh_dr7_v5_2.fits.gz`` (12 + log(O/H) percentiles) and
    ``totlgm_dr7_v5_2.fit.gz`` (total stellar-mass percentiles).

    Columns: ``plateid, mjd, fiberid, ra, dec, z, z_err, z_warning`` (and ``targettype`` when present);
    ``oh_p16, oh_p50, oh_p84, oh_avg`` (+ ``oh_p2p5, oh_p97p5, oh_mode`` when present; dex); and
    ``lgm_tot_p16, lgm_tot_p50, lgm_tot_p84, lgm_tot_avg`` (dex(solMass)). Masked: every O/H value of a
    row whose O/H ``AVG <= -99.9`` ("no O/H"), every mass value of a row whose mass ``AVG == -1``
    ("bad"), and any value <= -99. Raises :class:`DataFormatError` if a file is not FITS, lacks a
    column, or the row counts differ (the files are matched row by row).
    """
    paths = [Path(p) for p in (info_path, oh_path, mass_path)]
    info = _read_fits_table(paths[0], _MPA_INFO_REQUIRED, "MPA-JHU gal_info file")
    oh = _read_fits_table(paths[1], _MPA_STATS_REQUIRED, "MPA-JHU gal_fiboh file")
    mass = _read_fits_table(paths[2], _MPA_STATS_REQUIRED, "MPA-JHU totlgm file")
    for p, t in zip(paths[1:], (oh, mass)):
        if len(t) != len(info):
            raise DataFormatError(p, "rows", f"{len(t)} rows, but {paths[0].name} has {len(info)}: the MPA-JHU "
                                  "files are matched row by row (same release? complete download?)")
    out = Table(masked=True)
    for name, unit in (("PLATEID", None), ("MJD", None), ("FIBERID", None), ("RA", "deg"), ("DEC", "deg"),
                       ("Z", None), ("Z_ERR", None), ("Z_WARNING", None), ("TARGETTYPE", None)):
        if name in info.colnames:
            col = info[name]
            if col.dtype.kind == "S":
                col = np.char.strip(np.char.decode(np.asarray(col), "ascii"))
            out[name.lower()] = MaskedColumn(np.asarray(col), unit=unit)
    no_oh = np.asarray(oh["AVG"], dtype=float) <= -99.9
    for src, dst in (("P16", "oh_p16"), ("MEDIAN", "oh_p50"), ("P84", "oh_p84"), ("AVG", "oh_avg"),
                     ("P2P5", "oh_p2p5"), ("P97P5", "oh_p97p5"), ("MODE", "oh_mode")):
        if src in oh.colnames:
            col = mask_sentinels(np.asarray(oh[src], dtype=np.float64), (), below=-99.0, unit="dex", name=dst)
            col.mask |= no_oh
            out[dst] = col
    bad_mass = np.abs(np.asarray(mass["AVG"], dtype=float) + 1.0) < 1e-6
    for src, dst in (("P16", "lgm_tot_p16"), ("MEDIAN", "lgm_tot_p50"), ("P84", "lgm_tot_p84"), ("AVG", "lgm_tot_avg")):
        col = mask_sentinels(np.asarray(mass[src], dtype=np.float64), (-1.0,), below=-99.0, unit="dex(solMass)",
                             name=dst)
        col.mask |= bad_mass
        out[dst] = col
    out.meta.update({"catalog": "MPA-JHU DR7", "source_files": [str(p) for p in paths]})
    return out


# ------------------------------------------------------------------------------------------
# Simard et al. 2011
# ------------------------------------------------------------------------------------------
#: canonical names of Simard et al. (2011) VizieR columns (J/ApJS/196/11, data_formats.md); the VizieR
#: ``(B/T)r`` and astroquery's ``__B_T_r`` both canonicalise to ``b_t_r``.
_SIMARD_ALIASES = {"b_t_r": "bt_r", "e_b_t_r": "e_bt_r", "b_t_g": "bt_g", "e_b_t_g": "e_bt_g",
                   "raj2000": "ra", "dej2000": "dec", "de": "dec", "objid": "objid"}
SIMARD_UNITS = {"ra": "deg", "dec": "deg", "scale": "kpc / arcsec", "rhlg": "kpc", "rhlr": "kpc", "re": "kpc",
                "e_re": "kpc", "rd": "kpc", "e_rd": "kpc", "i": "deg", "e_i": "deg", "gg2d": "mag",
                "e_gg2d": "mag", "rg2d": "mag", "e_rg2d": "mag"}
_TABLE_OF_NAME = re.compile(r"table\s*_?([123])", re.IGNORECASE)


def _read_one_simard(path: Path) -> Table:
    table = _rename_canonical(read_any_table(path), path, _SIMARD_ALIASES)
    _require(table, path, ("objid", "z"), "Simard et al. 2011 table")
    for name in table.colnames:
        if name == "objid":
            continue
        table[name] = mask_sentinels(table[name], (-99.99, -99.9, -99.0), tol=1e-4, unit=SIMARD_UNITS.get(name),
                                     name=name)
    match = _TABLE_OF_NAME.search(path.name)
    if match:
        number = int(match.group(1))
    elif "bt_r" not in table.colnames:
        number = 3
    else:
        nb = np.ma.filled(table["nb"], np.nan) if "nb" in table.colnames else np.array([4.0])
        number = 1 if np.allclose(nb[np.isfinite(nb)], 4.0) else 2
    table.meta.update({"catalog": "Simard et al. 2011", "simard_table": number, "source_file": str(path)})
    return table


def read_simard(path_or_paths: str | Path | Sequence[str | Path]) -> Table:
    """Read Simard et al. (2011) tables 1-3 (table 1: bulge n_b = 4 + exponential disk; table 2: free
    n_b; table 3: pure Sersic), in the VizieR form or with astroquery's names, FITS/VOTable/CSV.

    Canonical columns (lower case): ``objid, z, scale`` (kpc/arcsec), ``ra, dec``, ``gg2d, rg2d`` (total
    model magnitudes) and errors, ``bt_g, bt_r`` (B/T) and ``e_bt_g, e_bt_r``, ``rhlg, rhlr`` (galaxy
    half-light semi-major axes, kpc), ``re`` (bulge), ``rd`` (disk) in kpc, ``e``, ``i`` (deg), ``nb``.
    -99.99 (the catalogue's null; also -99.9, -99 and NaN) is masked. ``meta["simard_table"]`` is the
    table number (from the file name, else from the columns). Several paths are joined on ``objid``
    (inner join); clashing columns get the suffix ``_t<number>``.
    """
    if isinstance(path_or_paths, (str, Path)):
        return _read_one_simard(Path(path_or_paths))
    tables = [_read_one_simard(Path(p)) for p in path_or_paths]
    if not tables:
        raise DataFormatError("<none>", None, "read_simard needs at least one file")
    out = tables[0]
    for t in tables[1:]:
        names = [f"t{out.meta['simard_table']}", f"t{t.meta['simard_table']}"]
        if names[0] == names[1]:
            raise DataFormatError(t.meta["source_file"], None, f"two files of Simard table {names[0][1:]}")
        meta = dict(out.meta)
        out = join(out, t, keys="objid", join_type="inner", table_names=names, uniq_col_name="{col_name}_{table_name}",
                   metadata_conflicts="silent")
        out.meta = meta
    out.meta["simard_tables"] = [t.meta["simard_table"] for t in tables]
    return out
