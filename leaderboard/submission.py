"""Reading predictions files made anywhere: the suite's HDF5, or CSV from a user's script.

HDF5 (what :meth:`sim2obs.tasks.Predictions.save` writes): datasets ``ids`` (N,),
``predictions`` (N, T), optional ``samples`` (S, N, T) and ``sigma`` (N, T); attribute
``targets`` (JSON list). CSV: a header row, then one row per object: ``id``, one column per
target (the point prediction), optional ``<target>_sigma`` (1σ), optional posterior samples
``<target>_sample_0`` … ``<target>_sample_{S-1}``. Anything else is refused with what is wrong
and where (file, column, row).
"""
from __future__ import annotations

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
        return Predictions.load(path)
    if suffix == ".csv":
        return read_csv(path, task.targets)
    raise DataFormatError(path, None, "predictions must be an HDF5 (.h5) or CSV (.csv) file")


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
    ids = df["id"].to_numpy()
    if df["id"].isna().any() or not np.all(np.equal(np.mod(ids, 1), 0)):
        raise DataFormatError(path, "id", "ids must be integers")
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
    return Predictions(ids=ids.astype(np.int64), values=values, targets=targets, samples=arr, sigma=sigma)


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
