"""The baselines of ``multibranch_mass``: the power law in luminosity (§4.1) and LightGBM per target
on the summary statistics (§5, Tables 3 and 6), with gain importances and the study targets."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sim2obs.atomic import atomic_write
from sim2obs.errors import Sim2obsValueError
from sim2obs.tasks import metrics as M
from sim2obs.tasks import plots
from sim2obs.tasks.base import MethodOutput, Predictions, write_csv_rows
from sim2obs.tasks.common.boosting import lightgbm_params
from sim2obs.tasks.multibranch_mass.config import LUMINOSITY, MAGNITUDE

if TYPE_CHECKING:
    from sim2obs.tasks.multibranch_mass.task import MultibranchMassTask

__all__ = ["fit_power_law", "run_power_law", "run_lightgbm"]


def fit_power_law(log_l: np.ndarray, log_y: np.ndarray) -> tuple[float, float]:
    """Least-squares fit of log y = a + b log L (a power law y ∝ L^b); returns ``(a, b)``."""
    x, y = np.asarray(log_l, float), np.asarray(log_y, float)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 2:
        raise Sim2obsValueError("a power-law fit needs two 1-D arrays of equal length >= 2", value=(x.shape, y.shape))
    if np.ptp(x) == 0:
        raise Sim2obsValueError("the luminosities are all equal: the slope is undefined", value=float(x[0]))
    b, a = np.polyfit(x, y, 1)
    return float(a), float(b)


def run_power_law(task: "MultibranchMassTask", workdir: Path) -> MethodOutput:
    """``power_law``: log y = a + b log L_r per target, least squares on the training split."""
    split = task.config.eval_split
    lum = {s: task.features(s, [LUMINOSITY])[:, 0] for s in ("train", "val", split)}
    y = {s: task.labels(s) for s in ("train", "val")}
    values = np.empty((len(lum[split]), len(task.targets)))
    info: dict[str, Any] = {"model": "power law log y = a + b log L_r", "n_parameters": 2 * len(task.targets)}
    for k, t in enumerate(task.targets):
        a, b = fit_power_law(lum["train"], y["train"][:, k])
        values[:, k] = a + b * lum[split]
        info[t] = {"a": a, "b": b, "val_scatter_dex": M.scatter_dex(a + b * lum["val"], y["val"][:, k])}
    return MethodOutput(task.predictions_of(values), info)


def run_lightgbm(task: "MultibranchMassTask", workdir: Path, with_mag: bool) -> MethodOutput:
    """One LightGBM per target (the task's three and the study targets), trained on the
    training split (objects outside the §2.3 cuts left out); gain importances and the study
    targets' evaluation-split predictions go to ``workdir`` (scored by
    :meth:`MultibranchMassTask.summarise`)."""
    import lightgbm as lgb  # deferred: importing the tasks should not load LightGBM

    cfg, lg = task.config, task.config.lightgbm
    split = cfg.eval_split
    feats = [f for f in lg.features if with_mag or f != MAGNITUDE]
    x = {s: task.features(s, feats) for s in ("train", "val", split)}
    keep = np.ones(len(x["train"]), bool)
    for col, cut in (("sersic_n", lg.sersic_n_max), ("kin_bt", lg.kin_bt_max)):
        if cut is not None:
            keep &= ~(task.features("train", [col])[:, 0] > float(cut))  # unmeasured (NaN) stay
    if not keep.any():
        raise Sim2obsValueError("the sersic_n / kin_bt cuts leave no training object",
                                value=(lg.sersic_n_max, lg.kin_bt_max))
    names = list(dict.fromkeys([*task.targets, *lg.study_targets]))
    y = {s: task.training_columns(s, names) for s in ("train", "val")}
    params = lightgbm_params(lg.params, cfg.seed, lg.num_threads)
    study_dir = workdir / "study"
    if study_dir.exists():
        shutil.rmtree(study_dir)
    study_dir.mkdir(parents=True)
    ids = task.split_ids(split).astype(np.int64)
    t0 = time.perf_counter()
    rows, manifest, values = [], [], {}
    for k, target in enumerate(names):
        booster = lgb.train(params, lgb.Dataset(x["train"][keep], y["train"][keep, k], feature_name=feats,
                                                free_raw_data=False), num_boost_round=int(lg.num_boost_round))
        pred = np.asarray(booster.predict(x[split]), dtype=np.float64)
        pred_val = np.asarray(booster.predict(x["val"]), dtype=np.float64)
        values[target] = pred
        gain = np.asarray(booster.feature_importance("gain"), dtype=np.float64)
        count = np.asarray(booster.feature_importance("split"), dtype=np.int64)
        frac = gain / gain.sum() if gain.sum() > 0 else gain
        order = np.argsort(-gain, kind="stable")
        for r, j in enumerate(order, 1):
            rows.append({"target": target, "rank": r, "feature": feats[j], "gain": float(gain[j]),
                         "gain_fraction": float(frac[j]), "split_count": int(count[j])})
        path = Predictions(ids, pred[:, None], (target,)).save(study_dir / f"{target}.h5", task=task.name,
                                                                split=split, with_mag=with_mag)
        manifest.append({"target": target, "with_mag": with_mag, "features": feats, "file": path.name,
                         "top_features": [feats[j] for j in order[:3]],
                         "val_bias": M.bias_mean(pred_val, y["val"][:, k]),
                         "val_scatter": M.scatter_dex(pred_val, y["val"][:, k])})
        if cfg.plots:
            plots.bar_table([feats[j] for j in order], frac[order], workdir / f"importance_{target}.png",
                            xlabel=f"gain importance (fraction), target {target}")
        booster.save_model(str(study_dir / f"{target}.txt"))
    write_csv_rows(workdir / "importances.csv", rows)
    text = json.dumps(manifest, indent=2) + "\n"
    atomic_write(study_dir / "manifest.json", lambda f: f.write(text), mode="w")
    info = {"model": "LightGBM", "_target_": "lightgbm.train", "features": feats,
            "num_boost_round": int(lg.num_boost_round), "n_train": int(keep.sum()),
            "n_train_excluded": int((~keep).sum()), "train_seconds": time.perf_counter() - t0,
            "val_scatter_dex": {m["target"]: m["val_scatter"] for m in manifest if m["target"] in task.targets},
            "top_features": {m["target"]: m["top_features"] for m in manifest}}
    return MethodOutput(task.predictions_of(np.stack([values[t] for t in task.targets], axis=1)), info)

