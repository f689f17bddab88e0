"""The ``prior`` baseline: every galaxy's posterior is the training-set label distribution."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sim2obs.tasks.base import MethodOutput, Predictions
from sim2obs.tasks.bt_posterior.posterior import posterior_mode

if TYPE_CHECKING:
    from sim2obs.tasks.bt_posterior.task import BTPosteriorTask

__all__ = ["_run_prior"]


def _run_prior(task: BTPosteriorTask, workdir: Path) -> MethodOutput:
    """Samples drawn (jointly, with replacement) from the training labels, for every galaxy."""
    c = task.config
    labels = task.labels("train")
    ids = task.split_ids(c.eval_split)
    rng = np.random.default_rng(c.seed)
    samples = labels[rng.integers(0, len(labels), size=(c.n_samples, len(ids)))]
    # One posterior for all galaxies: its point estimate from all training labels.
    if c.point_estimate == "median":
        point = np.median(labels, axis=0)
    else:
        point = posterior_mode(labels[:, None, :], bins=c.mode_bins)[0]
    preds = Predictions(ids=ids, values=np.broadcast_to(point, (len(ids), len(point))).copy(), targets=task.targets,
                        samples=samples, sigma=np.broadcast_to(labels.std(axis=0), (len(ids), len(point))).copy())
    return MethodOutput(preds, {"point_estimate": c.point_estimate, "n_train": int(len(labels))})
