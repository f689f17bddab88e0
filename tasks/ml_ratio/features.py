"""Feature matrices of the gradient boosting (§3.2) and the task's LightGBM fit: CNN features,
image statistics and catalogue observables per split, assembled by feature group."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from sim2obs.errors import Sim2obsValueError
from sim2obs.tasks.base import MethodOutput, Predictions
from sim2obs.tasks.common.boosting import lightgbm_params, train_booster

if TYPE_CHECKING:
    from sim2obs.tasks.ml_ratio.task import MLRatioTask

__all__ = ["blocks", "assemble", "catalogue", "fit_gbm", "positive", "method_output"]

Blocks = dict[str, tuple[np.ndarray, list[str]]]


def blocks(task: "MLRatioTask", workdir: Path, log) -> dict[str, Blocks]:
    """Every feature block per split: cnn1-3, cnn4, luminosity, flux, distance."""
    cnn = task.cnn_features(task.shared_dir(workdir), log)
    out = {}
    for s in ("train", "val", task.config.eval_split):
        split_blocks = task.image_groups(s)
        for g, names in cnn["names"].items():
            split_blocks[g] = (cnn[s][g], list(names))
        out[s] = split_blocks
    return out


def assemble(split_blocks: Blocks, groups: Sequence[str]) -> tuple[np.ndarray, list[str], list[str]]:
    """``(x (N, F), feature names, group of each feature)`` of the ``groups`` present."""
    parts = [split_blocks[g] for g in groups if g in split_blocks]
    x = np.concatenate([p[0] for p in parts], axis=1)
    names = [n for p in parts for n in p[1]]
    group_of = [g for g in groups if g in split_blocks for _ in split_blocks[g][1]]
    return x, names, group_of


def catalogue(task: "MLRatioTask", split: str, names: Sequence[str]) -> np.ndarray:
    """``(N, K)`` observables; a name ``a/b`` is the ratio of two. ``lum_g``, ``lum_i``, ``mag_g`` and
    ``mag_i`` are the task's photometry (:meth:`MLRatioTask.photometry`: measured on the images by
    default), any other name a catalogue column."""
    phot = task.photometry(split)

    def column(n: str) -> np.ndarray:
        return phot[n] if n in phot else task.features(split, [n])[:, 0]

    cols = []
    for n in names:
        if "/" in n:
            a, b = n.split("/")
            cols.append(column(a) / column(b))
        else:
            cols.append(column(n))
    return np.stack(cols, axis=1)


def fit_gbm(task: "MLRatioTask", workdir: Path, x: dict[str, np.ndarray], names: Sequence[str], tag: str = "gbm"):
    """Fit the task's LightGBM on train (ℒ1 through 1/ΔΥ weights, early stopping on val); drop
    features constant on the training set first (dead neurons, §3.2). Returns (booster, kept
    column indices, record)."""
    c = task.config
    keep = np.flatnonzero(np.ptp(x["train"], axis=0) > 0)
    if len(keep) == 0:
        raise Sim2obsValueError("every feature is constant on the training set", value=list(names)[:5])
    data = {s: (x[s][:, keep], task.labels(s)[:, 0], 1.0 / task.target_errors(s)) for s in ("train", "val")}
    params = lightgbm_params(c.lightgbm, c.seed, c.lightgbm_threads, objective="l1", metric="None")
    booster, record = train_booster(params, c.lightgbm_rounds, c.early_stopping_rounds, data["train"], data["val"],
                                    [names[j] for j in keep], workdir / tag,
                                    describe={"loss": "weighted l1 (Dobbels eq. 2)"})
    return booster, keep, record


def positive(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Predictions floored at 1e-3 (an M/L is positive; logarithmic metrics need it), and how many were."""
    clipped = int((values < 1e-3).sum())
    return np.maximum(values, 1e-3), clipped


def method_output(task: "MLRatioTask", values: np.ndarray, info: dict[str, Any]) -> MethodOutput:
    """Positive predictions of the evaluation split, with ``n_clipped_predictions`` in ``info``."""
    values, clipped = positive(values)
    info = {**info, "n_clipped_predictions": clipped}
    return MethodOutput(Predictions(task.split_ids(task.config.eval_split), values[:, None], task.targets), info)
