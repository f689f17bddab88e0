"""A reference that reads generator truths (never a method): how well 12 + log(O/H) follows from
the exact values of everything an image shows, the ceiling of any image-based method on the set."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sim2obs.tasks.common.boosting import lightgbm_params, predict_booster, train_booster

if TYPE_CHECKING:
    from sim2obs.tasks.metallicity.task import MetallicityTask

__all__ = ["IMAGE_TRUTHS", "image_truth_ceiling"]

#: What a g, r, i image of a bulge + disk galaxy shows, as exact generator values: the three
#: magnitudes (AB), the half-light radii of disk and bulge (arcsec), the disk's apparent axis ratio
#: and the r-band bulge-to-total ratio. Not the redshift, mass or SFR, which an image does not show.
IMAGE_TRUTHS = ("mag_g", "mag_r", "mag_i", "disk_hlr_arcsec", "bulge_hlr_arcsec", "disk_q", "bt_r")

#: LightGBM settings of the ceiling (L2 loss, early stopping on the validation RMSE).
CEILING_PARAMS = {"objective": "regression", "learning_rate": 0.03, "num_leaves": 15, "min_data_in_leaf": 20}
CEILING_ROUNDS, CEILING_PATIENCE = 4000, 100


def _rmse(preds: np.ndarray, data) -> tuple[str, float, bool]:
    return "rmse", float(np.sqrt(np.mean((preds - data.get_label()) ** 2))), False


def _truths(task: "MetallicityTask", split: str, names) -> np.ndarray:
    gs, rows = task.galaxy_set, task.selection(split)
    x = np.stack([gs.column(c, split).astype(np.float64) for c in names], axis=1)
    return x if rows is None else x[rows]


def image_truth_ceiling(task: "MetallicityTask", out_dir: Path) -> np.ndarray | None:
    """12 + log(O/H) of the evaluation split predicted by LightGBM trained on the training split's
    :data:`IMAGE_TRUTHS` (early stopping on validation); run artefacts in ``out_dir``. None when the
    set lacks one of those columns (a real survey set). A method that beats it has found
    information the generator did not put into the images (e.g. a leak)."""
    gs = task.galaxy_set
    if any(c not in gs.schema.column_names for c in IMAGE_TRUTHS):
        return None
    split = task.config.eval_split
    data = {s: _truths(task, s, IMAGE_TRUTHS) for s in ("train", "val", split)}
    y = {s: task.labels(s)[:, 0] for s in ("train", "val")}
    params = lightgbm_params(CEILING_PARAMS, seed=task.config.seed, threads=1)
    booster, _ = train_booster(params, CEILING_ROUNDS, CEILING_PATIENCE,
                               (data["train"], y["train"], np.ones(len(y["train"]))),
                               (data["val"], y["val"], np.ones(len(y["val"]))), IMAGE_TRUTHS, Path(out_dir),
                               feval=_rmse, describe={"reference": "image_truth_ceiling"})
    return predict_booster(booster, data[split])
