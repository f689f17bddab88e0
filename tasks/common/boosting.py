"""LightGBM as the tasks use it: fixed determinism and thread settings, sample weights, early
stopping on a validation loss, the run artefacts of :mod:`sim2obs.models.engine`, and
predictions at the best iteration."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from sim2obs.models.engine import plot_curves, record_run, write_metrics
from sim2obs.provenance import stable_hash

__all__ = ["lightgbm_params", "weighted_mean_abs_error", "train_booster", "predict_booster"]


def lightgbm_params(params: dict[str, Any], seed: int, threads: int, **fixed: Any) -> dict[str, Any]:
    """The parameters of ``lightgbm.train``: ``fixed`` (e.g. the objective), then the settings
    every task fixes (silent, ``seed``, deterministic, column-wise histograms, ``threads``;
    0: LightGBM's default, all cores), then the user's ``params`` (which win)."""
    return {**fixed, "verbosity": -1, "seed": int(seed), "deterministic": True, "force_col_wise": True,
            "num_threads": int(threads), **dict(params)}


def weighted_mean_abs_error(preds: np.ndarray, data) -> tuple[str, float, bool]:
    """LightGBM ``feval``: mean of weight x |prediction − label| (with weights 1/Δy: Dobbels et
    al.'s ℒ1), named ``l1``; lower is better."""
    return "l1", float(np.mean(data.get_weight() * np.abs(preds - data.get_label()))), False


def train_booster(params: dict[str, Any], rounds: int, patience: int, train: Sequence[np.ndarray],
                  val: Sequence[np.ndarray], names: Sequence[str], out_dir: Path,
                  feval: Callable = weighted_mean_abs_error, describe: dict[str, Any] | None = None):
    """Boost ``rounds`` rounds on ``train = (x, y, weight)``, evaluating ``feval`` on train and
    ``val = (x, y, weight)`` every round and stopping after ``patience`` rounds without a lower
    validation value (0: never). Writes ``metrics.jsonl``, ``val_curve.png``, ``run.json`` (the
    engine's records; ``describe`` is added to the recorded identity) and ``model.txt`` (best
    iteration) into ``out_dir``. Returns ``(booster, record)``."""
    import lightgbm as lgb  # deferred: importing the tasks should not load LightGBM

    out_dir.mkdir(parents=True, exist_ok=True)
    clean = [n.replace(" ", "_") for n in names]
    dtrain = lgb.Dataset(train[0], train[1], weight=train[2], feature_name=clean, free_raw_data=False)
    dval = lgb.Dataset(val[0], val[1], weight=val[2], reference=dtrain, free_raw_data=False)
    evals: dict = {}
    t0 = time.perf_counter()
    callbacks = [lgb.record_evaluation(evals)]
    if patience > 0:
        callbacks.append(lgb.early_stopping(patience, first_metric_only=True, verbose=False))
    booster = lgb.train(params, dtrain, num_boost_round=int(rounds), valid_sets=[dtrain, dval],
                        valid_names=["train", "val"], feval=feval, callbacks=callbacks)
    wall = time.perf_counter() - t0
    metric = next(iter(evals["val"]))
    val_curve = evals["val"][metric]
    best = int(booster.best_iteration) if booster.best_iteration > 0 else len(val_curve)
    history = [{"epoch": i + 1, "train_loss": float(tr), "val_loss": float(va), "lr": params.get("learning_rate")}
               for i, (tr, va) in enumerate(zip(evals["train"][metric], val_curve))]
    write_metrics(out_dir, history)
    plot_curves(history, out_dir / "val_curve.png", best)
    booster.save_model(str(out_dir / "model.txt"), num_iteration=best)
    identity = {"estimator": {"_target_": "lightgbm.train", **params, "num_boost_round": int(rounds)},
                "trainer": {"early_stopping_patience": int(patience)}, **(describe or {}), "features": list(names)}
    record = record_run(out_dir, model_name="LightGBM", target="lightgbm.Booster", config=identity,
                        config_hash=stable_hash(identity), wall_seconds=wall, size={"n_estimators": best},
                        results={"kind": "estimator", "epochs_run": len(history), "best_epoch": best,
                                 "best_val_loss": float(val_curve[best - 1]),
                                 "stopped_early": len(history) < int(rounds), "n_features": len(names)})
    return booster, record


def predict_booster(booster, x: np.ndarray) -> np.ndarray:
    """float64 predictions of ``booster`` on ``x`` at its best iteration (every tree if it did not
    stop early)."""
    best = booster.best_iteration if booster.best_iteration > 0 else None
    return np.asarray(booster.predict(x, num_iteration=best), dtype=np.float64)
