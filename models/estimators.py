"""LightGBM and scikit-learn baselines on the same run / record path as networks.

:class:`EstimatorTrainer` fits any sklearn-style estimator (``fit(X, y)`` / ``predict(X)``) on
tabular features and writes the artefacts of :class:`sim2obs.models.engine.Trainer`:
``metrics.jsonl`` (one line per LightGBM boosting round, or one line for other estimators),
``val_curve.png``, ``predictions_val.h5`` (ids and predictions) and ``run.json`` (through the
same :func:`~sim2obs.models.engine.record_run`). LightGBM models stop early on the validation
loss (the task's loss, evaluated every round) and predict with the best iteration.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from sim2obs.errors import ConfigError, Sim2obsValueError
from sim2obs.config import to_plain
from sim2obs.models.engine import (CURVE, FitResult, _describe, model_target, plot_curves,
                                   record_run, write_metrics, write_predictions)
from sim2obs.provenance import stable_hash

__all__ = ["EstimatorConfig", "EstimatorTrainer", "TabularData", "tabular_from_galaxy_set"]


@dataclass
class TabularData:
    """Tabular data of one split: ``features`` (N, F) float, ``targets`` (N, T) float, ``ids`` (N,) int."""

    features: np.ndarray
    targets: np.ndarray
    ids: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


def tabular_from_galaxy_set(galaxy_set: Any, split: str, features: Sequence[str],
                            targets: Sequence[str]) -> TabularData:
    """Catalogue columns of ``split`` of a galaxy set (a :class:`~sim2obs.galaxyset.GalaxySet` or
    its path) as :class:`TabularData`."""
    from sim2obs.galaxyset import GalaxySet, open_galaxy_set

    gs = galaxy_set if isinstance(galaxy_set, GalaxySet) else open_galaxy_set(galaxy_set)
    x = np.stack([gs.column(c, split) for c in features], axis=1).astype(np.float64)
    y = np.stack([gs.column(c, split) for c in targets], axis=1).astype(np.float64)
    return TabularData(x, y, gs.ids[gs.indices(split)].astype(np.int64))


@dataclass
class EstimatorConfig:
    """Settings of an estimator run. ``early_stopping_patience``: LightGBM boosting rounds without
    a lower validation loss before stopping (0: never)."""

    early_stopping_patience: int = 50


def _is_lightgbm(estimator: Any) -> bool:
    try:
        from lightgbm import LGBMModel
    except ImportError:  # LightGBM is a dependency, but a broken install should not block sklearn
        return False
    return isinstance(estimator, LGBMModel)


class EstimatorTrainer:
    """Fits and applies sklearn-style estimators, recording runs like :class:`Trainer`.

    Args:
        config: an :class:`EstimatorConfig`.
        loss: ``loss(prediction, target) -> scalar`` on ``(N, T)`` float32 tensors, given by the
            task (default: mean squared error); it is the ``train_loss`` / ``val_loss`` of
            ``metrics.jsonl`` and the early-stopping criterion.
    """

    def __init__(self, config: EstimatorConfig | None = None, loss: Callable | None = None):
        self.config = config
        self.loss = loss

    def _loss_value(self, prediction: np.ndarray, target: np.ndarray) -> float:
        loss = self.loss if self.loss is not None else nn.MSELoss()
        p = torch.as_tensor(np.asarray(prediction, dtype=np.float32).reshape(len(target), -1))
        t = torch.as_tensor(np.asarray(target, dtype=np.float32).reshape(len(target), -1))
        return float(loss(p, t))

    def predict(self, estimator: Any, data: TabularData) -> dict[str, np.ndarray]:
        """``{"ids": (N,) int64, "predictions": (N, T) float32}`` for ``data``."""
        pred = np.asarray(estimator.predict(data.features), dtype=np.float32).reshape(len(data), -1)
        return {"ids": np.asarray(data.ids, dtype=np.int64), "predictions": pred}

    def fit(self, estimator: Any, train: TabularData, val: TabularData, out_dir: str | os.PathLike,
            model_config: Any = None) -> FitResult:
        """Fit ``estimator`` in place on ``train`` (LightGBM: stopping early on ``val``); write
        ``metrics.jsonl``, ``val_curve.png``, ``predictions_val.h5`` and ``run.json`` into
        ``out_dir``. Returns a :class:`~sim2obs.models.engine.FitResult`."""
        cfg = self.config if self.config is not None else EstimatorConfig()
        if int(cfg.early_stopping_patience) < 0:
            raise ConfigError("estimator.early_stopping_patience", "must be >= 0 (0 disables)",
                              value=cfg.early_stopping_patience)
        for name in ("fit", "predict"):
            if not callable(getattr(estimator, name, None)):
                raise Sim2obsValueError(f"{type(estimator).__name__} has no {name}() method; an estimator needs "
                                        "fit(X, y) and predict(X)")
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        y_train = np.asarray(train.targets, dtype=np.float64).reshape(len(train), -1)
        y_val = np.asarray(val.targets, dtype=np.float64).reshape(len(val), -1)
        n_targets = y_train.shape[1]
        fit_y = y_train[:, 0] if n_targets == 1 else y_train
        params = to_plain(estimator.get_params(deep=False)) if hasattr(estimator, "get_params") else {}
        identity = {"estimator": to_plain(model_config) if model_config is not None
                    else {"_target_": model_target(estimator), **params},
                    "trainer": {"early_stopping_patience": int(cfg.early_stopping_patience)},
                    "loss": _describe(self.loss)}
        config_hash = stable_hash(identity)
        t0 = time.perf_counter()
        if _is_lightgbm(estimator):
            if n_targets != 1:
                raise Sim2obsValueError("LightGBM fits one target; wrap it in "
                                        "sklearn.multioutput.MultiOutputRegressor for several", value=n_targets)
            history, best_round, stopped = self._fit_lightgbm(estimator, train, fit_y, val, y_val[:, 0], cfg)
            # predictions use the best round when boosting stopped early, else every round
            size = {"n_estimators": best_round if stopped else len(history)}
        else:
            estimator.fit(train.features, fit_y)
            history = [{"epoch": 1,
                        "train_loss": self._loss_value(estimator.predict(train.features), y_train),
                        "val_loss": self._loss_value(estimator.predict(val.features), y_val),
                        "lr": None, "seconds": time.perf_counter() - t0}]
            best_round, stopped = 1, False
            size = {"n_estimators": getattr(estimator, "n_estimators", None)}
        wall = time.perf_counter() - t0
        preds = self.predict(estimator, val)
        best_val = self._loss_value(preds["predictions"], y_val)
        if not math.isfinite(best_val):
            raise Sim2obsValueError(f"{type(estimator).__name__} gives a non-finite validation loss", value=best_val)
        write_metrics(out, history)
        write_predictions(out, "val", preds["ids"], preds["predictions"])
        plot_curves(history, out / CURVE, best_round)
        record = record_run(
            out, model_name=type(estimator).__name__, target=model_target(estimator), config=identity,
            config_hash=config_hash, wall_seconds=wall, size=size,
            results={"kind": "estimator", "epochs_run": len(history), "best_epoch": best_round,
                     "best_val_loss": best_val, "stopped_early": stopped})
        return FitResult(history=history, best_epoch=best_round, best_val_loss=best_val, stopped_early=stopped,
                         record=record, out_dir=out)

    def _fit_lightgbm(self, estimator: Any, train: TabularData, y_train: np.ndarray, val: TabularData,
                      y_val: np.ndarray, cfg: EstimatorConfig) -> tuple[list[dict], int, bool]:
        """Boost with the task loss evaluated on train and val every round; stop after
        ``early_stopping_patience`` rounds without improvement. Returns (history, best round, stopped)."""
        from lightgbm.callback import EarlyStopException

        def task_loss(y_true: np.ndarray, y_pred: np.ndarray):
            return "loss", self._loss_value(y_pred, y_true), False

        history: list[dict] = []
        best = {"loss": math.inf, "iteration": 0, "results": None, "clock": time.perf_counter()}
        patience = int(cfg.early_stopping_patience)
        lr = float(estimator.get_params().get("learning_rate", math.nan))

        def monitor(env) -> None:
            results = {(r[0], r[1]): r[2] for r in env.evaluation_result_list}
            now = time.perf_counter()
            record = {"epoch": env.iteration + 1, "train_loss": results[("train", "loss")],
                      "val_loss": results[("val", "loss")], "lr": lr, "seconds": now - best["clock"]}
            best["clock"] = now
            history.append(record)
            if record["val_loss"] < best["loss"]:
                best.update(loss=record["val_loss"], iteration=env.iteration, results=list(env.evaluation_result_list))
            elif patience and env.iteration - best["iteration"] >= patience:
                raise EarlyStopException(best["iteration"], best["results"])

        monitor.order = 30  # after LightGBM's own evaluation logging
        import inspect

        # passing the training arrays themselves makes LightGBM reuse (and name) the training set
        if "eval_X" in inspect.signature(estimator.fit).parameters:  # LightGBM >= 4.6
            evals = {"eval_X": (train.features, val.features), "eval_y": (y_train, y_val)}
        else:
            evals = {"eval_set": [(train.features, y_train), (val.features, y_val)]}
        estimator.fit(train.features, y_train, eval_names=["train", "val"], eval_metric=task_loss,
                      callbacks=[monitor], **evals)
        best_round = best["iteration"] + 1
        stopped = len(history) < int(estimator.get_params().get("n_estimators", 0))
        return history, best_round, stopped
