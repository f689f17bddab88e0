"""The ℒ1 of Dobbels et al. (2019, eq. 2) as a torch loss, the estimators the baselines fit with
it, and permutation importances (§4.2)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from sim2obs.errors import Sim2obsValueError
from sim2obs.tasks import metrics as M

__all__ = ["WeightedL1Loss", "weighted_median", "fit_power_law", "permutation_importance"]


class WeightedL1Loss(nn.Module):
    """ℒ1 of Dobbels et al. (2019, eq. 2) for torch: mean |ŷ − y| / max(Δy, 5 % y).

    ``output``: ``(B, 1)`` or ``(B,)`` predictions; ``target``: ``(B, 2)`` columns [y, Δy].
    """

    def __init__(self, min_relative: float = M.MIN_RELATIVE_ERROR):
        super().__init__()
        self.min_relative = float(min_relative)

    def forward(self, output: Tensor, target: Tensor) -> Tensor:
        if target.ndim != 2 or target.shape[1] != 2:
            raise Sim2obsValueError("WeightedL1Loss targets are (B, 2): value and uncertainty",
                                    value=tuple(target.shape))
        pred = output.reshape(len(target), -1)[:, 0].float()
        y, err = target[:, 0].float(), target[:, 1].float()
        floor = torch.maximum(err, self.min_relative * y.abs())
        return ((pred - y).abs() / floor).mean()


# run records name the loss by its public path (unchanged since the task became a package)
WeightedL1Loss.__module__ = "sim2obs.tasks.ml_ratio"


def weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """The value c minimising Σ w_i |c − v_i| (the lower weighted median)."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if len(v) == 0 or len(v) != len(w) or (w < 0).any() or w.sum() <= 0:
        raise Sim2obsValueError("weighted median needs matching non-empty values and non-negative weights",
                                value=(len(v), len(w)))
    order = np.argsort(v, kind="stable")
    cum = np.cumsum(w[order])
    return float(v[order][np.searchsorted(cum, 0.5 * cum[-1])])


def fit_power_law(x: np.ndarray, y: np.ndarray, err: np.ndarray,
                  min_relative: float = M.MIN_RELATIVE_ERROR) -> tuple[float, float]:
    """Fit log10 y = a + b x by minimising ℒ1 = mean |10^(a + b x) − y| / Δy (Δy floored at 5 % of y),
    as Dobbels et al. (2019, §4.3) recalibrated the g − i power law of Zibetti et al. (2009).
    Starts from weighted least squares in log space, then Nelder-Mead. Returns ``(a, b)``."""
    from scipy.optimize import minimize  # deferred: scipy.optimize takes ~0.7 s to import

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    e = M.floored_error(y, err, min_relative)
    if (y <= 0).any():
        raise Sim2obsValueError("a power law needs positive targets", value=float(y.min()))
    w = (y / e) ** 2  # d log y = dy / (y ln 10): weights of the log residuals
    design = np.stack([np.ones_like(x), x], axis=1)
    start = np.linalg.lstsq(design * np.sqrt(w)[:, None], np.log10(y) * np.sqrt(w), rcond=None)[0]

    def loss(p: np.ndarray) -> float:
        return float(np.mean(np.abs(10.0 ** np.clip(p[0] + p[1] * x, -30, 30) - y) / e))

    best = minimize(loss, start, method="Nelder-Mead", options={"xatol": 1e-9, "fatol": 1e-12, "maxiter": 20000})
    best = minimize(loss, best.x, method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-13, "maxiter": 20000})
    return float(best.x[0]), float(best.x[1])


def permutation_importance(predict, x: np.ndarray, y: np.ndarray, err: np.ndarray, columns: Sequence[int],
                           repeats: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Increase of ℒ1 on (x, y) when one column is permuted (Dobbels et al. 2019, §4.2; Strobl et al.
    2007): mean and standard deviation over ``repeats`` permutations, for each of ``columns``."""
    rng = np.random.default_rng(seed)
    base = M.l1(predict(x), y, err)
    means, stds = np.zeros(len(columns)), np.zeros(len(columns))
    for k, j in enumerate(columns):
        deltas = []
        for _ in range(int(repeats)):
            xp = x.copy()
            xp[:, j] = xp[rng.permutation(len(xp)), j]
            deltas.append(M.l1(predict(xp), y, err) - base)
        means[k], stds[k] = float(np.mean(deltas)), float(np.std(deltas))
    return means, stds
