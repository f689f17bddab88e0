"""Reading predictions files made anywhere: the suite's HDF5, or CSV from a user's script.

HDF5 (what :meth:`sim2obs.tasks.Predictions.save` writes): datasets ``ids`` (N,),
``predictions`` (N, T), optional ``samples`` (S, N, T) and ``sigma`` (N, T); attribute
``targets`` (JSON list). CSV: a header row, then one row per object: ``id``, one column per
target (the point prediction), optional ``<target>_sigma`` (1σ), optional posterior samples
``<target>_sample_0`` … ``<target>_sample_{S-1}``. Anything else is refused with what is wrong
and where (file, column, row).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from sim2obs.errors import DataFormatError
from sim2obs.predictions import Predictions
from sim2obs.tasks.base import Task

_SAMPLE = re.compile(r"^(?P<target>.+)_sample_(?P<k>\d+)$")


def read_predictions(path: str | os.PathLike, task: Task) -> Predictions:
    """Predictions from an HDF5 or CSV file, for ``task``'s targets (checked here for form;
    :meth:`Task.evaluate` checks them against the split)."""
    path = Path(path)
    if not path.exists():
        raise DataFormatError(path, None, "no such predictions file")
    suffix = path.suffix.lower()
    if suffix in (".h5", ".hdf5"):
        check_hdf5(path)
        return Predictions.load(path)
    if suffix == ".csv":
        return read_csv(path, task.targets)
    raise DataFormatError(path, None, "predictions must be an HDF5 (.h5) or CSV (.csv) file")


def check_hdf5(path: Path) -> None:
    """Refuse, naming the field, an HDF5 predictions file whose ``targets`` attribute is not a
    JSON list of names, whose ``ids`` are not integers within int64, or whose ``predictions``,
    ``sigma`` or ``samples`` are not numbers."""
    import h5py

    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        raise DataFormatError(path, None, f"not a readable HDF5 predictions file ({exc})") from None
    with h5:
        for key in ("ids", "predictions"):
            if key not in h5 or not isinstance(h5[key], h5py.Dataset):
                raise DataFormatError(path, key, "missing dataset")
        raw = h5.attrs.get("targets")
        if raw is None:
            raise DataFormatError(path, "targets", "missing attribute (JSON list of target names)")
        try:
            targets = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataFormatError(path, "targets", f"attribute is not JSON ({exc}): {str(raw)[:60]!r}") from None
        if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
            raise DataFormatError(path, "targets", f"attribute must be a JSON list of names, got {str(raw)[:60]!r}")
        ids = h5["ids"]
        if ids.dtype.kind not in "iu":
            raise DataFormatError(path, "ids", f"ids must be integers, got dtype {ids.dtype}")
        if ids.dtype.kind == "u" and ids.size and int(ids[()].max()) > np.iinfo(np.int64).max:
            raise DataFormatError(path, "ids", f"id {int(ids[()].max())} does not fit in int64")
        for key in ("predictions", "sigma", "samples"):
            if key in h5 and h5[key].dtype.kind not in "fiu":
                raise DataFormatError(path, key, f"values must be numbers, got dtype {h5[key].dtype}")


def read_csv(path: Path, targets: tuple[str, ...]) -> Predictions:
    import pandas as pd

    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataFormatError(path, None, f"not a readable CSV file ({str(exc).splitlines()[0]})") from None
    columns = list(df.columns)
    if "id" not in columns:
        raise DataFormatError(path, "id", f"missing the id column (columns: {columns})")
    missing = [t for t in targets if t not in columns]
    if missing:
        raise DataFormatError(path, missing[0], f"missing prediction column(s) {missing} for targets {list(targets)}")
    samples: dict[str, dict[int, str]] = {t: {} for t in targets}
    allowed = {"id", *targets, *(f"{t}_sigma" for t in targets)}
    for c in columns:
        m = _SAMPLE.match(c)
        if m and m["target"] in samples:
            samples[m["target"]][int(m["k"])] = c
        elif c not in allowed:
            raise DataFormatError(path, c, f"unexpected column; expected id, {list(targets)}, <target>_sigma, "
                                  "<target>_sample_<k>")
    for c in columns:
        values = pd.to_numeric(df[c], errors="coerce")
        bad = values.isna() & df[c].notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataFormatError(path, c, f"row {row + 2} (line {row + 2} of the file): {df[c].iloc[row]!r} is "
                                  "not a number")
    ids = _csv_ids(path, df["id"])
    values = df[list(targets)].to_numpy(dtype=np.float64)
    sigma_cols = [f"{t}_sigma" for t in targets]
    present = [c in columns for c in sigma_cols]
    if any(present) and not all(present):
        raise DataFormatError(path, sigma_cols[present.index(False)], "give sigma for every target or none")
    sigma = df[sigma_cols].to_numpy(dtype=np.float64) if all(present) else None
    counts = {t: len(v) for t, v in samples.items()}
    arr = None
    if any(counts.values()):
        if len(set(counts.values())) != 1:
            raise DataFormatError(path, "samples", f"every target needs the same number of samples, got {counts}")
        s = counts[targets[0]]
        for t in targets:
            if sorted(samples[t]) != list(range(s)):
                raise DataFormatError(path, f"{t}_sample_*", f"sample columns must be numbered 0..{s - 1}")
        arr = np.stack([df[[samples[t][k] for t in targets]].to_numpy(dtype=np.float64) for k in range(s)])
    return Predictions(ids=ids, values=values, targets=targets, samples=arr, sigma=sigma)


def _csv_ids(path: Path, column) -> np.ndarray:
    """The id column as int64, refusing non-integers and ids beyond int64 (naming the row)."""
    limit = np.iinfo(np.int64).max
    for row, v in enumerate(column.tolist()):
        try:
            ok = float(v) == int(float(v)) and abs(int(str(v).split(".")[0])) <= limit
        except (TypeError, ValueError, OverflowError):
            ok = False
        if not ok:
            raise DataFormatError(path, "id", f"row {row + 2} (line {row + 2} of the file): {v!r} is not an "
                                  f"integer id within int64 (|id| <= {limit})")
    return np.asarray([int(str(v).split(".")[0]) for v in column.tolist()], dtype=np.int64)


def write_csv(predictions: Predictions, path: str | os.PathLike) -> Path:
    """The CSV form of ``predictions`` (what :func:`read_csv` reads)."""
    import pandas as pd

    from sim2obs.atomic import atomic_write

    data = {"id": predictions.ids}
    for k, t in enumerate(predictions.targets):
        data[t] = predictions.values[:, k]
        if predictions.sigma is not None:
            data[f"{t}_sigma"] = predictions.sigma[:, k]
    if predictions.samples is not None:
        for k, t in enumerate(predictions.targets):
            for s in range(predictions.samples.shape[0]):
                data[f"{t}_sample_{s}"] = predictions.samples[s, :, k]
    df = pd.DataFrame(data)
    path = Path(path)
    atomic_write(path, lambda f: df.to_csv(f, index=False), mode="w")
    return path
