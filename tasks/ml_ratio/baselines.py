"""The baselines of Dobbels et al. (2019): the ℒ1-optimal constant, LightGBM on catalogue
observables (§4.1, §4.3), the g − i power law (§4.3) and g + i + morph (§4.3)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from sim2obs.tasks import metrics as M
from sim2obs.tasks.base import MethodOutput
from sim2obs.tasks.common.boosting import predict_booster
from sim2obs.tasks.ml_ratio.config import GROUPS
from sim2obs.tasks.ml_ratio.estimators import fit_power_law, weighted_median
from sim2obs.tasks.ml_ratio.features import assemble, blocks, catalogue, fit_gbm, method_output

if TYPE_CHECKING:
    from sim2obs.tasks.ml_ratio.task import MLRatioTask

__all__ = ["run_constant", "run_catalogue_gbm", "run_power_law", "run_gi_morph"]


def run_constant(task: "MLRatioTask", workdir: Path) -> MethodOutput:
    """The 1/ΔΥ-weighted median of the training M/L for every galaxy."""
    y = task.labels("train")[:, 0]
    value = weighted_median(y, 1.0 / task.target_errors("train"))
    n = len(task.split_ids(task.config.eval_split))
    return method_output(task, np.full(n, value), {"model": "constant", "value": value, "n_parameters": 1})


def run_catalogue_gbm(task: "MLRatioTask", workdir: Path, names: Sequence[str]) -> MethodOutput:
    """LightGBM on catalogue observables ``names`` (``a/b``: a ratio)."""
    names = list(names)
    x = {s: catalogue(task, s, names) for s in ("train", "val", task.config.eval_split)}
    booster, keep, record = fit_gbm(task, workdir, x, names)
    pred = predict_booster(booster, x[task.config.eval_split][:, keep])
    return method_output(task, pred, {"model": "LightGBM", "_target_": "lightgbm.Booster", "features": names,
                                      "n_estimators": record["n_estimators"], "best_val_l1": record["best_val_loss"]})


def run_power_law(task: "MLRatioTask", workdir: Path) -> MethodOutput:
    """log10 M/L_g = a + b (g − i), fitted by ℒ1 on the training split."""
    split = task.config.eval_split
    colour = {s: catalogue(task, s, ["mag_g"])[:, 0] - catalogue(task, s, ["mag_i"])[:, 0]
              for s in ("train", "val", split)}
    y = task.labels("train")[:, 0]
    a, b = fit_power_law(colour["train"], y, task.target_errors("train"))
    val = M.l1(10.0 ** (a + b * colour["val"]), task.labels("val")[:, 0], task.target_errors("val"))
    pred = 10.0 ** (a + b * colour[split])
    return method_output(task, pred, {"model": "power law log10 M/L = a + b (g - i)", "a": a, "b": b,
                                      "n_parameters": 2, "val_l1": val})


def run_gi_morph(task: "MLRatioTask", workdir: Path) -> MethodOutput:
    """g + i + morph: LightGBM on every image feature group plus L_g, L_i and L_g/L_i, retrained on
    its ``gi_morph_top_features`` most-used features (§4.3)."""
    feature_blocks = blocks(task, workdir, print)
    split = task.config.eval_split
    extra = ["lum_g", "lum_i", "lum_g/lum_i"]
    x, names = {}, None
    for s in ("train", "val", split):
        xi, names, _ = assemble(feature_blocks[s], GROUPS)
        x[s] = np.concatenate([xi, catalogue(task, s, extra)], axis=1)
    names = names + extra
    booster, keep, record = fit_gbm(task, workdir, x, names, "gbm_all")
    info = {"model": "LightGBM", "_target_": "lightgbm.Booster", "n_features_all": len(keep)}
    k = int(task.config.gi_morph_top_features)
    if 0 < k < len(keep):  # §4.3: retrain on the 50 features used the most
        counts = booster.feature_importance("split")
        top = keep[np.argsort(-counts, kind="stable")[:k]]
        x = {s: v[:, top] for s, v in x.items()}
        names = [names[j] for j in top]
        booster, keep, record = fit_gbm(task, workdir, x, names, "gbm_top")
        info["top_features"] = names
    pred = predict_booster(booster, x[split][:, keep])
    info.update(n_features=len(keep), n_estimators=record["n_estimators"], best_val_l1=record["best_val_loss"])
    return method_output(task, pred, info)
