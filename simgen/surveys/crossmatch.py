"""Positional cross-matching of two catalogues with astropy (``SkyCoord.match_to_catalog_sky``)."""
from __future__ import annotations

from typing import Any, Sequence

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.table import Table, hstack

from sim2obs.errors import Sim2obsValueError

__all__ = ["match_catalogs"]


def _coords(table: Table, names: Sequence[str], side: str) -> tuple[SkyCoord | None, np.ndarray]:
    """SkyCoord of the rows with a position and the boolean mask of those rows."""
    for n in names:
        if n not in table.colnames:
            raise Sim2obsValueError(f"the {side} catalogue has no position column {n!r}", value=n,
                                    allowed=table.colnames[:20])
    ra, dec = (np.ma.asarray(table[n], dtype=np.float64) for n in names)
    ok = ~(np.ma.getmaskarray(ra) | np.ma.getmaskarray(dec))
    ok &= np.isfinite(np.ma.filled(ra, np.nan)) & np.isfinite(np.ma.filled(dec, np.nan))
    if not ok.any():
        return None, ok
    units = [table[n].unit or u.deg for n in names]
    return SkyCoord(np.ma.filled(ra, 0)[ok] * units[0], np.ma.filled(dec, 0)[ok] * units[1]), ok


def match_catalogs(left: Table, right: Table, radius_arcsec: float = 1.0,
                   left_coords: Sequence[str] = ("ra", "dec"), right_coords: Sequence[str] = ("ra", "dec"),
                   table_names: Sequence[str] = ("left", "right")) -> tuple[Table, dict[str, Any]]:
    """One-to-one sky match of ``left`` to ``right`` within ``radius_arcsec``.

    Every left row with a position is matched to its nearest right row
    (``SkyCoord.match_to_catalog_sky``); a pair farther apart than the radius is dropped. When several
    left rows have the same nearest right row (duplicates), the closest pair wins (ties: the earlier
    left row) and the others are dropped and counted. Rows with a masked or non-finite position are
    skipped and counted.

    Returns ``(matched, report)``: ``matched`` holds the kept left rows (in left order) beside their
    right rows (columns present in both get ``_<table name>`` suffixes) and ``match_sep_arcsec``;
    ``report`` holds ``radius_arcsec, n_left, n_right, n_matched, n_beyond_radius,
    n_duplicates_resolved, n_left_without_position, n_right_without_position,
    separation_arcsec_median, separation_arcsec_max``.
    """
    radius = float(radius_arcsec)
    if not radius > 0:
        raise Sim2obsValueError("the match radius must be positive (arcsec)", value=radius_arcsec)
    lc, lok = _coords(left, left_coords, "left")
    rc, rok = _coords(right, right_coords, "right")
    report: dict[str, Any] = {"radius_arcsec": radius, "n_left": len(left), "n_right": len(right),
                              "n_left_without_position": int((~lok).sum()),
                              "n_right_without_position": int((~rok).sum()),
                              "n_beyond_radius": 0, "n_duplicates_resolved": 0, "n_matched": 0,
                              "separation_arcsec_median": None, "separation_arcsec_max": None}
    left_rows = np.flatnonzero(lok)
    right_rows = np.flatnonzero(rok)
    if lc is None or rc is None:
        kept_left, kept_right, seps = np.array([], int), np.array([], int), np.array([])
    else:
        idx, sep2d, _ = lc.match_to_catalog_sky(rc)
        sep = sep2d.to_value(u.arcsec)
        inside = sep <= radius
        report["n_beyond_radius"] = int((~inside).sum())
        cand = np.flatnonzero(inside)
        # Closest pair first (stable sort keeps the earlier left row first on ties); then keep the
        # first occurrence of every right row.
        order = cand[np.lexsort((cand, sep[cand]))]
        _, first = np.unique(idx[order], return_index=True)
        winners = np.sort(order[first])
        report["n_duplicates_resolved"] = int(len(cand) - len(winners))
        kept_left, kept_right, seps = left_rows[winners], right_rows[idx[winners]], sep[winners]
    report["n_matched"] = int(len(kept_left))
    if len(seps):
        report["separation_arcsec_median"] = float(np.median(seps))
        report["separation_arcsec_max"] = float(np.max(seps))
    matched = hstack([left[kept_left], right[kept_right]], table_names=list(table_names),
                     uniq_col_name="{col_name}_{table_name}", metadata_conflicts="silent")
    matched["match_sep_arcsec"] = seps
    matched["match_sep_arcsec"].unit = u.arcsec
    matched.meta["crossmatch"] = dict(report)
    return matched, report
