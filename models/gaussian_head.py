"""Aleatoric Gaussian heads as posteriors: per-pass draws and post-hoc width recalibration.

GaMPEN (Ghosh et al. 2022, ApJ 935, 138, §2-3) predicts, for every forward pass, the mean and the
full covariance of a multivariate Gaussian over its outputs, trains with the Gaussian negative
log-likelihood, and keeps dropout active at prediction time: each pass draws its own dropout masks
(epistemic uncertainty) and then one point from the Gaussian it predicts (aleatoric uncertainty).
The pooled draws are the posterior.

The output layouts and losses are those of :mod:`sim2obs.models.uncertainty`
(:class:`~sim2obs.models.uncertainty.FullCovarianceGaussianNLL`: ``[mean | Cholesky diagonal |
strictly-lower Cholesky entries]``, ``n + n(n+1)/2`` outputs; :class:`DiagonalGaussianNLL`:
``[mean | log-variance]``, ``2n``). This module adds

- :func:`gaussian_loss` / :func:`output_width`: the loss and network width of a covariance kind;
- :class:`GaussianDraw`: the per-pass draw, a picklable callable for
  :func:`sim2obs.models.uncertainty.sample_posterior` (``draw=``), and :func:`flatten_draws`;
- :func:`fit_width_scale` / :func:`apply_width_scale`: the post-hoc recalibration. Each target's
  posterior is widened or narrowed about its median by one factor, fitted on a validation split
  so that the central credible intervals cover their nominal fraction of validation truths
  (the per-parameter temperature/width scaling of Kuleshov et al. 2018 and Levi et al. 2022,
  applied to samples).
"""
from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
import torch
from torch import Tensor

from sim2obs.errors import Sim2obsValueError
from sim2obs.models.uncertainty import DiagonalGaussianNLL, FullCovarianceGaussianNLL, mean_and_scale_tril

__all__ = ["COVARIANCES", "GaussianDraw", "apply_width_scale", "fit_width_scale", "flatten_draws",
           "gaussian_loss", "output_width", "RECALIBRATION_LEVELS"]

COVARIANCES = ("full", "diagonal")
Covariance = Literal["full", "diagonal"]
#: Nominal central-interval levels the width scale is fitted to: 0.05 ... 0.95 and 2, 3 sigma.
RECALIBRATION_LEVELS: tuple[float, ...] = tuple(np.round(np.arange(0.05, 0.951, 0.05), 2)) + (0.9545, 0.9973)


def _check_covariance(covariance: str) -> None:
    if covariance not in COVARIANCES:
        raise Sim2obsValueError("unknown covariance kind", value=covariance, allowed=list(COVARIANCES))


def output_width(num_targets: int, covariance: Covariance = "full") -> int:
    """Network outputs of the Gaussian head: ``n + n(n+1)/2`` (full) or ``2n`` (diagonal)."""
    _check_covariance(covariance)
    n = int(num_targets)
    return n + n * (n + 1) // 2 if covariance == "full" else 2 * n


def gaussian_loss(num_targets: int, covariance: Covariance = "full") -> torch.nn.Module:
    """The Gaussian NLL loss module of the head (:mod:`sim2obs.models.uncertainty`)."""
    _check_covariance(covariance)
    return FullCovarianceGaussianNLL(num_targets) if covariance == "full" else DiagonalGaussianNLL(num_targets)


class GaussianDraw:
    """``(rows, output_width)`` head outputs -> ``(rows, draws, n)`` draws from each row's Gaussian.

    Full covariance: ``mean + L @ eps`` with ``L`` the predicted Cholesky factor; diagonal:
    ``mean + exp(log_var / 2) * eps``; ``eps`` standard normal from torch's global generator (so
    ``torch.manual_seed`` before sampling fixes the draws). Picklable (plain attributes only)."""

    def __init__(self, num_targets: int, covariance: Covariance = "full", draws: int = 1):
        _check_covariance(covariance)
        if int(draws) < 1:
            raise Sim2obsValueError("draws per pass must be >= 1", value=draws)
        self.num_targets, self.covariance, self.draws = int(num_targets), covariance, int(draws)
        self.width = output_width(self.num_targets, covariance)

    def __call__(self, outputs: Tensor) -> Tensor:
        n = self.num_targets
        if outputs.shape[-1] != self.width:
            raise Sim2obsValueError(f"a {self.covariance}-covariance head for {n} targets has {self.width} "
                                    "outputs", value=tuple(outputs.shape))
        outputs = outputs.float()
        eps = torch.randn((*outputs.shape[:-1], self.draws, n), device=outputs.device)
        if self.covariance == "full":
            mean, tril = mean_and_scale_tril(outputs, n)
            return mean.unsqueeze(-2) + torch.einsum("...ij,...dj->...di", tril, eps)
        mean, log_var = outputs[..., :n], outputs[..., n:].clamp(-15.0, 15.0)
        return mean.unsqueeze(-2) + torch.exp(0.5 * log_var).unsqueeze(-2) * eps


def flatten_draws(samples: Tensor | np.ndarray) -> Tensor | np.ndarray:
    """``(passes, B, draws, n)`` -> ``(passes * draws, B, n)`` (pass-major)."""
    p, b, d, n = samples.shape
    if isinstance(samples, np.ndarray):
        return samples.transpose(0, 2, 1, 3).reshape(p * d, b, n)
    return samples.permute(0, 2, 1, 3).reshape(p * d, b, n)


def _coverage_grid(samples: np.ndarray, truth: np.ndarray, scales: np.ndarray,
                   levels: Sequence[float]) -> np.ndarray:
    """Coverage ``(len(scales), len(levels))`` of one target's central intervals, scaled about
    the median. ``samples`` (S, N), ``truth`` (N,)."""
    med = np.median(samples, axis=0)
    r = truth - med
    out = np.empty((len(scales), len(levels)))
    for j, level in enumerate(levels):
        lo, hi = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2], axis=0)
        inside = (r[None, :] >= scales[:, None] * (lo - med)[None, :]) & \
                 (r[None, :] <= scales[:, None] * (hi - med)[None, :])
        out[:, j] = inside.mean(axis=1)
    return out


def fit_width_scale(samples, truth, levels: Sequence[float] = RECALIBRATION_LEVELS,
                    bounds: tuple[float, float] = (0.2, 5.0), steps: int = 321) -> np.ndarray:
    """Per-target width factors ``(T,)`` that calibrate ``samples`` ``(S, N, T)`` against
    ``truth`` ``(N, T)`` (a validation split, in the space the samples will be scaled in).

    For each target the factor ``s`` minimises the mean |coverage − nominal| over ``levels`` of
    the central intervals after ``x -> median + s (x − median)`` (:func:`apply_width_scale`);
    ``s`` is searched on a log grid over ``bounds``, ties going to the factor closest to 1."""
    s = np.asarray(samples, dtype=np.float64)
    t = np.asarray(truth, dtype=np.float64)
    if s.ndim != 3 or t.shape != s.shape[1:] or s.shape[0] < 2:
        raise Sim2obsValueError("fit_width_scale needs samples (S >= 2, N, T) and truth (N, T)",
                                value=(s.shape, t.shape))
    if not (np.isfinite(s).all() and np.isfinite(t).all()):
        raise Sim2obsValueError("fit_width_scale: samples or truth contain NaN/inf")
    lo, hi = bounds
    if not 0 < lo < 1 < hi:
        raise Sim2obsValueError("width-scale bounds must bracket 1", value=bounds)
    grid = np.exp(np.linspace(np.log(lo), np.log(hi), int(steps)))
    nominal = np.asarray(levels, dtype=np.float64)
    out = np.empty(s.shape[2])
    for k in range(s.shape[2]):
        dist = np.abs(_coverage_grid(s[:, :, k], t[:, k], grid, levels) - nominal[None, :]).mean(axis=1)
        best = np.flatnonzero(np.isclose(dist, dist.min(), rtol=0, atol=1e-12))
        out[k] = grid[best[np.argmin(np.abs(np.log(grid[best])))]]
    return out


def apply_width_scale(samples, scale) -> np.ndarray:
    """``median + scale (x − median)`` per target: ``(S, N, T)`` samples, ``(T,)`` factors > 0."""
    s = np.asarray(samples, dtype=np.float64)
    f = np.asarray(scale, dtype=np.float64)
    if f.shape != (s.shape[-1],) or not (f > 0).all():
        raise Sim2obsValueError("one positive width factor per target is needed", value=f.tolist())
    med = np.median(s, axis=0)
    return med + f * (s - med)


class NLLWithMeanMSE(torch.nn.Module):
    """``nll(outputs, y) + weight * mean((mean(outputs) - y)^2)``: the Gaussian NLL plus a squared
    error on the predicted mean (the first ``num_targets`` outputs).

    Under the NLL alone the mean's gradient is divided by the predicted variance, so a target whose
    variance the head first inflates to the prior's (B/T) learns its mean slowly (Seitzer et al.
    2022, "On the pitfalls of heteroscedastic uncertainty estimation"); the squared-error term keeps
    a variance-independent pull on the mean. ``num_outputs`` is the NLL's."""

    def __init__(self, nll: torch.nn.Module, weight: float = 1.0):
        super().__init__()
        if not weight >= 0:
            raise Sim2obsValueError("the mean-squared-error weight must be >= 0", value=weight)
        self.nll, self.weight = nll, float(weight)
        self.num_targets, self.num_outputs = nll.num_targets, nll.num_outputs

    def forward(self, outputs: Tensor, targets: Tensor) -> Tensor:
        mse = ((outputs[..., :self.num_targets] - targets) ** 2).sum(-1).mean()
        return self.nll(outputs, targets) + self.weight * mse
