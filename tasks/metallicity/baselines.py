"""The baselines of Wu & Boada (2019): the training-split mean (Fig. 4 squares) and a random
forest on the g, r, i magnitudes (§5.4)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sim2obs.models.estimators import EstimatorTrainer, TabularData
from sim2obs.tasks.base import MethodOutput
from sim2obs.tasks.metallicity.training import rmse_loss

if TYPE_CHECKING:
    from sim2obs.tasks.metallicity.task import MetallicityTask

__all__ = ["run_mean", "run_forest"]


def run_mean(task: "MetallicityTask", workdir: Path) -> MethodOutput:
    """The training-split mean of 12 + log(O/H) for every galaxy."""
    y = task.labels("train")[:, 0]
    ids = task.split_ids(task.config.eval_split)
    mean = float(np.mean(y))
    return MethodOutput(task.predictions(ids, np.full(len(ids), mean)),
                        {"model": "constant", "value": mean, "n_train": int(len(y))})


def run_forest(task: "MetallicityTask", workdir: Path) -> MethodOutput:
    """scikit-learn random forest on catalogue observables (``random_forest.features``)."""
    from sklearn.ensemble import RandomForestRegressor  # deferred: scikit-learn takes ~3 s to import

    rf, split = task.config.random_forest, task.config.eval_split
    feats = list(rf.features)
    data = {s: TabularData(task.features(s, feats), task.labels(s) if s != split else
                           np.zeros((len(task.split_ids(s)), 1)), task.split_ids(s).astype(np.int64))
            for s in ("train", "val", split)}
    params = {"n_estimators": int(rf.n_estimators), "max_features": rf.max_features,
              "min_samples_leaf": int(rf.min_samples_leaf), "max_depth": rf.max_depth, "n_jobs": int(rf.n_jobs),
              "random_state": int(task.config.seed)}
    est = RandomForestRegressor(**params)
    trainer = EstimatorTrainer(loss=rmse_loss())
    fit = trainer.fit(est, data["train"], data["val"], workdir / "fit",
                      model_config={"_target_": "sklearn.ensemble.RandomForestRegressor", **params})
    pred = trainer.predict(est, data[split])
    return MethodOutput(task.predictions(pred["ids"], pred["predictions"][:, 0]),
                        {"model": "RandomForestRegressor", "_target_": "sklearn.ensemble.RandomForestRegressor",
                         "features": feats, "n_estimators": int(rf.n_estimators),
                         "val_rmse": float(fit.best_val_loss), "train_seconds": fit.record.get("wall_seconds")})
