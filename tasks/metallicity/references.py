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
#: Galaxies the ceiling trains on: drawn afresh from the set's own generator config with another seed
#: (parameters only, no images: ~3 s), so the ceiling does not depend on the size of the set's training
#: split. 80 % train, 20 % validation, before the star-forming selection.
CEILING_DRAW = 40_000


def _rmse(preds: np.ndarray, data) -> tuple[str, float, bool]:
    return "rmse", float(np.sqrt(np.mean((preds - data.get_label()) ** 2))), False


def _fresh_population(task: "MetallicityTask") -> dict[str, np.ndarray] | None:
    """:data:`CEILING_DRAW` galaxies of the set's population (the ``galsim`` generator config in its
    provenance, seed + 1), star-forming ones only if the task selects them; None for a set the
    ``galsim`` generator did not make."""
    from sim2obs.simgen.galsim_bulge_disk import coerce_config, draw_parameters  # deferred: ~2 s import
    from sim2obs.simgen.population import star_forming

    config = dict((task.galaxy_set.provenance or {}).get("config") or {})
    if config.pop("generator", None) != "galsim":
        return None
    p = draw_parameters(coerce_config({**config, "n": CEILING_DRAW, "seed": int(config.get("seed", 0)) + 1}))
    if task.selection("train") is not None:
        keep = star_forming(p["log_mstar"], p["log_sfr"])
        p = {k: v[keep] for k, v in p.items() if np.ndim(v) == 1 and len(v) == CEILING_DRAW}
    return p


def image_truth_ceiling(task: "MetallicityTask", out_dir: Path) -> np.ndarray | None:
    """12 + log(O/H) of the evaluation split predicted by LightGBM on its :data:`IMAGE_TRUTHS`,
    trained (early stopping on validation) on a fresh draw of the set's population
    (:func:`_fresh_population`); run artefacts in ``out_dir``. None for a set without those columns
    or not made by the ``galsim`` generator (a real survey set). A method clearly below it has
    found information the generator did not put into the images (look for a leak)."""
    gs = task.galaxy_set
    if any(c not in gs.schema.column_names for c in IMAGE_TRUTHS):
        return None
    fresh = _fresh_population(task)
    if fresh is None:
        return None
    x = np.stack([np.asarray(fresh[c], np.float64) for c in IMAGE_TRUTHS], axis=1)
    y = np.asarray(fresh["oh12"], np.float64)
    n_train = int(0.8 * len(y))
    params = lightgbm_params(CEILING_PARAMS, seed=task.config.seed, threads=1)
    booster, _ = train_booster(params, CEILING_ROUNDS, CEILING_PATIENCE,
                               (x[:n_train], y[:n_train], np.ones(n_train)),
                               (x[n_train:], y[n_train:], np.ones(len(y) - n_train)), IMAGE_TRUTHS, Path(out_dir),
                               feval=_rmse, describe={"reference": "image_truth_ceiling",
                                                      "trained_on": f"{len(y)} galaxies drawn afresh"})
    split, rows = task.config.eval_split, task.selection(task.config.eval_split)
    test = np.stack([gs.column(c, split).astype(np.float64) for c in IMAGE_TRUTHS], axis=1)
    return predict_booster(booster, test if rows is None else test[rows])
