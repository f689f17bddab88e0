"""Bootstrap errors of every metric, and paired errors of differences between methods.

The evaluated objects are resampled with replacement; every method of a task is scored on the
*same* resamples (the indices depend only on the number of objects and the seed), so the
difference of two methods' scores has a paired error: the spread of the per-resample
differences, smaller than the two errors in quadrature whenever the methods err on the same
galaxies. ``Task.run`` records ``errors`` in every result row and writes ``differences.csv``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from sim2obs.errors import Sim2obsValueError
from sim2obs.predictions import Predictions

#: Resamples used for the recorded errors (1σ from the spread of the resampled metric).
N_BOOTSTRAP = 200


def bootstrap_indices(n_objects: int, n_boot: int = N_BOOTSTRAP, seed: int = 0) -> np.ndarray:
    """(n_boot, n_objects) int64 resampling indices, a function of (n_objects, n_boot, seed) only."""
    if n_objects < 1 or n_boot < 2:
        raise Sim2obsValueError("a bootstrap needs >= 1 object and >= 2 resamples", value=(n_objects, n_boot))
    return np.random.default_rng(seed).integers(0, n_objects, (int(n_boot), int(n_objects)))


@dataclass
class Replicates:
    """The metrics of one method on every resample: ``values[metric]`` is ``(n_boot,)``."""

    values: dict[str, np.ndarray]

    def errors(self) -> dict[str, float]:
        """1σ bootstrap error of each metric (standard deviation over resamples)."""
        return {k: float(np.std(v)) for k, v in self.values.items() if np.isfinite(v).all()}


def replicate_metrics(score: Callable[[Predictions, object], Mapping[str, float]], predictions: Predictions,
                      truth, indices: np.ndarray) -> Replicates:
    """Score ``predictions`` against ``truth`` (a :class:`~sim2obs.tasks.base.Truth`, both
    aligned) on each row of ``indices``; ``score(predictions, truth) -> {metric: value}``.
    Resamples on which a metric is undefined (the score raises :class:`Sim2obsValueError`, e.g.
    a tiny set resampled into a single object) are left out; with fewer than half of them
    left, no error is recorded."""
    rows = []
    for idx in indices:
        try:
            rows.append(score(predictions.subset(idx), truth.subset(idx)))
        except Sim2obsValueError:  # undefined on this resample (e.g. a tiny set drawn as one object)
            continue
    if len(rows) < max(2, len(indices) // 2):
        return Replicates({})  # too few resamples where the metrics exist: no error is recorded
    keys = [k for k in rows[0] if all(k in r for r in rows)]
    return Replicates({k: np.array([float(r[k]) for r in rows]) for k in keys})


def paired_differences(replicates: Mapping[str, Replicates], values: Mapping[str, float], metric: str,
                       reference: Sequence[str] | None = None) -> list[dict]:
    """Differences ``value(a) − value(b)`` of ``metric`` for every ordered pair of methods where
    ``b`` is in ``reference`` (default: every other method), with the paired 1σ error and the
    fraction of resamples where ``a`` scores below ``b``."""
    names = [m for m in replicates if metric in replicates[m].values]
    refs = [m for m in (reference if reference is not None else names) if m in names]
    rows = []
    for a in names:
        for b in refs:
            if a == b:
                continue
            d = replicates[a].values[metric] - replicates[b].values[metric]
            rows.append({"method": a, "versus": b, "metric": metric, "difference": float(values[a] - values[b]),
                         "error": float(np.std(d)), "fraction_lower": float(np.mean(d < 0))})
    return rows
