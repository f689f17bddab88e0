"""Galaxy Zoo 2 vote tables: Hart et al. (2016) ``gz2_hart16.csv`` and the Willett et al. (2013) tables.

Both use one column scheme (checked against the real Willett et al. 2013 Table 5 in
``shared/real_samples/gz2_willett2013/``; data_formats.md): identifiers and positions, then for each of
the 37 answers ``tNN_<question>_aMM_<answer>_{count, weight, fraction, weighted_fraction, debiased,
flag}``. The per-answer fractions are *within-question* vote fractions; the unconditional probability
of an answer multiplies them by the probability that its question is asked, down the decision tree of
:mod:`sim2obs.gz2_tree` (Dobbels et al. 2019, §3.1; ``shared/notes/gz2_tree.md``).
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from astropy.table import MaskedColumn, Table

from sim2obs.errors import DataFormatError
from sim2obs.gz2_tree import gz2_tree
from sim2obs.simgen.surveys.catalogs import _read_bytes

__all__ = ["FRACTION_KINDS", "read_gz2", "answer_stems", "fraction_columns", "probability_columns",
           "vote_fractions", "unconditional_probabilities"]

#: Per-answer fraction columns the tables offer (suffixes).
FRACTION_KINDS = ("fraction", "weighted_fraction", "debiased")
_ID_COLUMNS = ("dr7objid", "objid", "specobjid")


def answer_stems() -> list[str]:
    """``tNN_<question>_aMM_<answer>`` for the 37 answers, in the tree's output order."""
    return gz2_tree().column_names(suffix=None)


def fraction_columns(kind: str = "weighted_fraction") -> list[str]:
    """Names of the 37 within-question fraction columns of ``kind`` (:data:`FRACTION_KINDS`)."""
    if kind not in FRACTION_KINDS:
        raise DataFormatError("<gz2>", kind, f"unknown fraction kind; use one of {FRACTION_KINDS}")
    return [f"{s}_{kind}" for s in answer_stems()]


def probability_columns() -> list[str]:
    """Names of the 37 unconditional-probability columns :func:`read_gz2` adds (``<stem>_prob``)."""
    return [f"{s}_prob" for s in answer_stems()]


def vote_fractions(table: Table, kind: str = "weighted_fraction") -> np.ma.MaskedArray:
    """``(n, 37)`` within-question vote fractions (masked where the table has no value)."""
    return np.ma.column_stack([np.ma.asarray(table[c], dtype=np.float64) for c in fraction_columns(kind)])


def unconditional_probabilities(fractions: np.ndarray) -> np.ma.MaskedArray:
    """``(n, 37)`` within-question fractions -> unconditional probabilities through the GZ2 tree
    (:meth:`sim2obs.gz2_tree.QuestionTree.to_unconditional`). A row with any masked or non-finite
    fraction is masked where the value depends on it (here: the whole row, conservatively)."""
    frac = np.ma.asarray(fractions, dtype=np.float64)
    filled = np.ma.filled(frac, np.nan)
    bad = ~np.isfinite(filled).all(axis=1)
    probs = gz2_tree().to_unconditional(np.nan_to_num(filled))
    return np.ma.MaskedArray(probs, mask=np.repeat(bad[:, None], probs.shape[1], axis=1))


def read_gz2(path: str | Path, kind: str = "weighted_fraction") -> Table:
    """Read a Galaxy Zoo 2 table (CSV, gzipped or not): Hart et al. 2016 ``gz2_hart16.csv`` or a
    Willett et al. 2013 table.

    Returns every column of the file (empty fields and NaN masked) with ``ra, dec`` in degrees, the id
    column renamed ``objid`` (from ``dr7objid``, ``objid`` or ``specobjid``), and 37 added columns
    ``<stem>_prob``: the unconditional answer probabilities from the ``kind`` fractions
    (:data:`FRACTION_KINDS`; Dobbels et al. used the weighted fractions). ``meta["gz2_fraction_kind"]``
    records ``kind``. Raises :class:`DataFormatError` naming the file and line for a row with the wrong
    number of fields, the column (and line) for a non-numeric answer value, and the column when an id,
    position or ``kind`` answer column is missing.
    """
    import pandas as pd  # deferred: heavy import, needed only to parse the CSV

    path = Path(path)
    data = _read_bytes(path)
    if data[:9] == b"SIMPLE  =" or b"\x00" in data[:4096]:
        raise DataFormatError(path, None, "not a GZ2 CSV table (binary content)")
    try:
        df = pd.read_csv(io.BytesIO(data), low_memory=False)
    except pd.errors.ParserError as exc:
        line = _line_of(str(exc))
        raise DataFormatError(path, f"line {line}" if line else None, f"malformed CSV row ({exc})") from None
    except (UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataFormatError(path, None, f"not a GZ2 CSV table ({exc})") from None
    id_col = next((c for c in _ID_COLUMNS if c in df.columns), None)
    if id_col is None:
        raise DataFormatError(path, "dr7objid", f"no id column (one of {_ID_COLUMNS}); found {list(df.columns)[:12]}")
    wanted = fraction_columns(kind)
    for c in ["ra", "dec"] + wanted:
        if c not in df.columns:
            raise DataFormatError(path, c, "missing column of the GZ2 table")
    for c in ["ra", "dec"] + [col for col in df.columns if col.startswith("t") and col[1:3].isdigit()]:
        if df[c].dtype.kind not in "fiu":
            converted = pd.to_numeric(df[c], errors="coerce")
            bad = np.flatnonzero(converted.isna().to_numpy() & df[c].notna().to_numpy())
            if len(bad):
                raise DataFormatError(path, f"line {int(bad[0]) + 2}, column {c}",
                                      f"{df[c].iloc[bad[0]]!r} is not a number")
            df[c] = converted
    table = Table(masked=True)
    for c in df.columns:
        values = df[c].to_numpy()
        if values.dtype.kind == "O":
            values = df[c].fillna("").astype(str).to_numpy()
            table[c] = MaskedColumn(values, mask=df[c].isna().to_numpy())
        else:
            mask = df[c].isna().to_numpy()
            table[c] = MaskedColumn(values, mask=mask, unit="deg" if c in ("ra", "dec") else None)
    if id_col != "objid":
        if "objid" in table.colnames:
            table.rename_column("objid", "objid_original")
        table.rename_column(id_col, "objid")
    probs = unconditional_probabilities(vote_fractions(table, kind))
    for j, name in enumerate(probability_columns()):
        table[name] = MaskedColumn(probs.data[:, j], mask=probs.mask[:, j],
                                   description="unconditional probability of the answer (GZ2 tree)")
    table.meta.update({"catalog": "Galaxy Zoo 2", "gz2_fraction_kind": kind, "source_file": str(path),
                       "id_column": id_col})
    return table


def _line_of(message: str) -> int | None:
    """The 1-based file line pandas names in 'Expected N fields in line L, saw M'."""
    import re

    m = re.search(r"line (\d+)", message)
    return int(m.group(1)) if m else None
