"""The benchmark's metric definitions: one module, fixed result keys.

Every task computes its scores through these functions, so a number called ``l1`` or
``coverage_68`` means the same thing in every task and on the leaderboard. Inputs are 1-D
arrays (one target) unless stated; residuals are ``prediction - truth``. Functions refuse
NaN/inf and empty inputs with a :class:`~sim2obs.errors.Sim2obsValueError` that names the
argument.

==========================  ===================================================================
key                         definition
==========================  ===================================================================
``l1``                      mean absolute error. Where the task's truth has catalogue
                            uncertainties Δy: Dobbels et al. (2019, eq. 2) mean |ŷ − y| / Δy, Δy
                            floored at 5 % of |y| (dimensionless); without them: mean |ŷ − y| in
                            the target's units. Every task records it (``<target>/l1`` per target
                            for several targets).
``l2``                      mean ((ŷ − y) / Δy)², same floor
``median_l1``               median |ŷ − y| / Δy
``rmsle``                   sqrt(mean((log10 ŷ − log10 y)²)), dex; recorded for targets that are
                            positive linear quantities (M/L, R_e, flux); ŷ ≤ 0 is refused
``rmse``                    sqrt(mean((ŷ − y)²)), in the target's units
``nmad``                    1.4826 · median |Δ − median Δ|
``bias_mean``               mean Δ
``bias_median``             median Δ
``frac_within_0.15dex``     fraction with |log10 ŷ − log10 y| ≤ 0.15 (positive quantities)
``outlier_frac``            fraction with |Δ − median Δ| > 3 NMAD (or a fixed threshold)
``scatter_dex``             1σ standard deviation of Δlog10, dex
``coverage_68|95|99``       fraction of truths inside the central 68.27/95.45/99.73 % interval
                            (1/2/3σ): of the posterior samples when given, else ŷ ± zσ with the
                            submitted Gaussian σ (z = 1, 2, 3); pooled over targets. Recorded for
                            every submission that carries samples or σ, whatever the task
``calibration_error``       mean |empirical − nominal| coverage over levels 0.05, 0.10 … 0.95
``posterior_width``         mean width of the central 68.27 % interval
``crps``                    continuous ranked probability score of the posterior samples,
                            mean over objects of E|X − y| − ½ E|X − X′| (Gneiting & Raftery
                            2007, eq. 20), in the target's units; 0 for a point mass at the truth
``pit_ks``                  Kolmogorov-Smirnov distance of the probability integral transforms
                            PIT = P(X < y) (ties split uniformly at random) from U(0, 1): 0 for a
                            calibrated posterior; the PIT histogram is :func:`pit_histogram`
``posterior_score``         accuracy + calibration in one number (lower is better; 0 is perfect):
                            mean over targets of mean|ŷ − y| / mean|y − median(y)|, plus the
                            mean over targets of ``calibration_error``. Predicting the population
                            median with a calibrated posterior scores ≈ 1, and no estimate that
                            ignores the data scores below 1 in expectation (the median minimises
                            the mean absolute error; the NMAD this term used before could be
                            lowered by a two-valued guess); a perfect point estimate with a
                            miscalibrated posterior scores its calibration error.
==========================  ===================================================================
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from sim2obs.errors import Sim2obsValueError

#: Nominal levels (fractions) of the reported coverages: 1, 2 and 3 sigma.
COVERAGE_LEVELS: dict[str, float] = {"coverage_68": 0.6827, "coverage_95": 0.9545, "coverage_99": 0.9973}
#: Levels averaged by :func:`calibration_error`.
CALIBRATION_GRID: np.ndarray = np.round(np.arange(0.05, 0.951, 0.05), 2)
#: Dobbels et al. (2019): minimum relative uncertainty of the true value in ℒ1/ℒ2.
MIN_RELATIVE_ERROR = 0.05

#: Every metric key, with whether larger is better (for ranking).
HIGHER_IS_BETTER: dict[str, bool] = {
    "l1": False, "l2": False, "median_l1": False, "rmsle": False, "rmse": False, "nmad": False,
    "bias_mean": False, "bias_median": False, "frac_within_0.15dex": True, "outlier_frac": False,
    "scatter_dex": False, "coverage_68": True, "coverage_95": True, "coverage_99": True,
    "calibration_error": False, "posterior_width": False, "posterior_score": False,
    "crps": False, "pit_ks": False,
}
#: Keys ranked by closeness to zero (biases) or to a nominal level (coverages), not by size.
TARGET_VALUE: dict[str, float] = {"bias_mean": 0.0, "bias_median": 0.0, **COVERAGE_LEVELS}


def _array(x, name: str, ndim: int | None = 1) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if ndim is not None and a.ndim != ndim:
        raise Sim2obsValueError(f"{name} must be {ndim}-D, got shape {a.shape}", value=a.shape)
    if a.size == 0:
        raise Sim2obsValueError(f"{name} is empty: a metric needs at least one object", value=0)
    bad = ~np.isfinite(a)
    if bad.any():
        where = np.argwhere(bad)[0].tolist()
        raise Sim2obsValueError(f"{name} has {int(bad.sum())} NaN/inf value(s), first at index {where}",
                                value=a[tuple(where)].item())
    return a


def _pair(pred, true, *, positive: bool = False) -> tuple[np.ndarray, np.ndarray]:
    p, t = _array(pred, "predictions"), _array(true, "truth")
    if p.shape != t.shape:
        raise Sim2obsValueError(f"predictions have shape {p.shape}, truth {t.shape}", value=p.shape)
    if positive:
        for a, name in ((p, "predictions"), (t, "truth")):
            if (a <= 0).any():
                i = int(np.argmax(a <= 0))
                raise Sim2obsValueError(f"{name} must be positive for a logarithmic metric; index {i} is {a[i]}",
                                        value=float(a[i]))
    return p, t


def floored_error(true, error, min_relative: float = MIN_RELATIVE_ERROR) -> np.ndarray:
    """Δy floored at ``min_relative`` · |y| (Dobbels et al. 2019: 5 %), so that no object with
    a tiny (or zero) catalogue error dominates the weighted losses."""
    t, e = _array(true, "truth"), _array(error, "uncertainty")
    if e.shape != t.shape:
        raise Sim2obsValueError(f"uncertainty has shape {e.shape}, truth {t.shape}", value=e.shape)
    if (e < 0).any():
        raise Sim2obsValueError("uncertainties must be >= 0", value=float(e.min()))
    floored = np.maximum(e, min_relative * np.abs(t))
    if (floored <= 0).any():
        raise Sim2obsValueError("uncertainty and truth are both zero: the weighted loss is undefined",
                                value=0.0)
    return floored


def weighted_abs_errors(pred, true, error, min_relative: float = MIN_RELATIVE_ERROR) -> np.ndarray:
    """Per-object |ŷ − y| / Δy with the floored Δy (the terms of ℒ1)."""
    p, t = _pair(pred, true)
    return np.abs(p - t) / floored_error(t, error, min_relative)


def l1(pred, true, error, min_relative: float = MIN_RELATIVE_ERROR) -> float:
    """Uncertainty-weighted ℒ1 (Dobbels et al. 2019 eq. 2); 1 means errors as large as Δy."""
    return float(weighted_abs_errors(pred, true, error, min_relative).mean())


def median_l1(pred, true, error, min_relative: float = MIN_RELATIVE_ERROR) -> float:
    """Median of the ℒ1 terms."""
    return float(np.median(weighted_abs_errors(pred, true, error, min_relative)))


def l2(pred, true, error, min_relative: float = MIN_RELATIVE_ERROR) -> float:
    """Uncertainty-weighted ℒ2: mean squared (ŷ − y)/Δy."""
    return float((weighted_abs_errors(pred, true, error, min_relative) ** 2).mean())


def log_residuals(pred, true) -> np.ndarray:
    """log10 ŷ − log10 y in dex (both positive)."""
    p, t = _pair(pred, true, positive=True)
    return np.log10(p) - np.log10(t)


def rmsle(pred, true) -> float:
    """Root mean squared log10 error, dex."""
    return float(np.sqrt(np.mean(log_residuals(pred, true) ** 2)))


def frac_within(pred, true, dex: float = 0.15) -> float:
    """Fraction of objects whose prediction is within ``dex`` of the truth in log10."""
    return float(np.mean(np.abs(log_residuals(pred, true)) <= dex))


def rmse(pred, true) -> float:
    """Root mean squared error in the target's units."""
    p, t = _pair(pred, true)
    return float(np.sqrt(np.mean((p - t) ** 2)))


def nmad(x) -> float:
    """Normalised median absolute deviation 1.4826 · median|x − median x| (σ for a Gaussian)."""
    a = _array(x, "residuals")
    return float(1.4826 * np.median(np.abs(a - np.median(a))))


def bias_mean(pred, true) -> float:
    p, t = _pair(pred, true)
    return float(np.mean(p - t))


def bias_median(pred, true) -> float:
    p, t = _pair(pred, true)
    return float(np.median(p - t))


def outlier_fraction(pred, true, threshold: float | None = None) -> float:
    """Fraction of residuals further than ``threshold`` from their median; the default
    threshold is 3 NMAD (a 3σ outlier for the Gaussian core)."""
    p, t = _pair(pred, true)
    r = p - t
    cut = 3.0 * nmad(r) if threshold is None else float(threshold)
    return float(np.mean(np.abs(r - np.median(r)) > cut))


def scatter_dex(pred_log, true_log) -> float:
    """1σ standard deviation of Δlog (inputs already log10 quantities), dex."""
    p, t = _pair(pred_log, true_log)
    return float(np.std(p - t))


# --------------------------------------------------------------------------------------------
# Posterior calibration
# --------------------------------------------------------------------------------------------
class SortedSamples(np.ndarray):
    """Posterior samples known to be sorted along the sample axis 0 (:func:`sorted_samples`).
    Slices and object subsets (``x[:, idx]``, ``x[:, :, k]``) stay sorted and keep the type;
    arithmetic and reductions return plain arrays."""

    def __array_wrap__(self, obj, context=None, return_scalar=False):
        out = np.asarray(obj).view(np.ndarray)
        return out[()] if return_scalar else out


def _posterior(samples, true) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(samples, SortedSamples) and samples.dtype == np.float64 and samples.ndim >= 2:
        # sorted per object: any -inf is in the first row, any +inf or NaN in the last
        _array(samples[[0, -1]], "posterior samples", ndim=None)
        s = samples
    else:
        s = _array(samples, "posterior samples", ndim=None)
    t = _array(true, "truth", ndim=None)
    if s.ndim != t.ndim + 1 or s.shape[1:] != t.shape:
        raise Sim2obsValueError(f"posterior samples must have shape (S, *truth.shape) = (S, {t.shape}), "
                                f"got {s.shape}", value=s.shape)
    if s.shape[0] < 2:
        raise Sim2obsValueError("a posterior needs at least 2 samples", value=s.shape[0])
    return s, t


def sorted_samples(samples) -> SortedSamples:
    """``samples`` sorted along the sample axis 0, as :class:`SortedSamples` (returned as is when
    they already are). Every interval below is read from sorted samples: sort once per
    evaluation (``Task`` does) rather than once per credible level, and a bootstrap over objects
    never sorts again (a subset of objects stays sorted). Per-target marginals only: sorting
    each object's samples per target breaks the joint draws across targets."""
    if isinstance(samples, SortedSamples) and samples.dtype == np.float64:
        return samples
    return np.sort(np.asarray(samples, dtype=np.float64), axis=0).view(SortedSamples)


def sorted_quantiles(x: np.ndarray, qs: Sequence[float]) -> np.ndarray:
    """Quantiles ``qs`` over axis 0 of samples ``x`` already sorted along it: ``(len(qs),
    *x.shape[1:])``, the same numbers as ``np.quantile(x, qs, axis=0)`` (its default linear
    method, Hyndman & Fan type 7, with numpy's interpolation arithmetic)."""
    n = x.shape[0]
    out = np.empty((len(qs),) + x.shape[1:])
    for j, q in enumerate(qs):
        virtual = (n - 1) * q
        if virtual >= n - 1:
            out[j] = x[-1]
            continue
        below = int(np.floor(virtual))
        gamma = virtual - below
        a, b = x[below], x[below + 1]
        out[j] = b - (b - a) * (1 - gamma) if gamma >= 0.5 else a + (b - a) * gamma
    return out


def interval(samples, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Central credible interval at ``level`` (0 < level < 1) per object: the
    (1 − level)/2 and (1 + level)/2 quantiles over the sample axis 0."""
    if not 0.0 < level < 1.0:
        raise Sim2obsValueError("credible level must lie in (0, 1)", value=level)
    lo, hi = sorted_quantiles(sorted_samples(samples), [(1 - level) / 2, (1 + level) / 2])
    return lo, hi


def inside_interval(samples, true, level: float) -> np.ndarray:
    """Boolean array of ``true``'s shape: the truth lies inside its central ``level`` interval."""
    s, t = _posterior(samples, true)
    lo, hi = interval(s, level)
    return (t >= lo) & (t <= hi)


def coverage(samples, true, level: float) -> float:
    """Fraction of truths inside their central ``level`` interval. ``samples``: (S, N) or
    (S, N, T); ``true``: (N,) or (N, T). The whole array is pooled (call per target for
    per-target coverage)."""
    return float(np.mean(inside_interval(samples, true, level)))


def coverage_curve(samples, true, levels: Sequence[float] = CALIBRATION_GRID) -> tuple[np.ndarray, np.ndarray]:
    """(nominal levels, empirical coverages) for a calibration plot."""
    s, t = _posterior(samples, true)
    s = sorted_samples(s)
    levels = np.asarray(levels, dtype=np.float64)
    return levels, np.array([coverage(s, t, float(q)) for q in levels])


def calibration_error(samples, true, levels: Sequence[float] = CALIBRATION_GRID) -> float:
    """Mean |empirical − nominal| coverage over ``levels``: 0 for a calibrated posterior."""
    nominal, empirical = coverage_curve(samples, true, levels)
    return float(np.mean(np.abs(empirical - nominal)))


def posterior_width(samples, level: float = COVERAGE_LEVELS["coverage_68"]) -> float:
    """Mean width of the central ``level`` interval, in the target's units."""
    _array(samples if not isinstance(samples, SortedSamples) else samples[[0, -1]], "posterior samples", ndim=None)
    lo, hi = interval(samples, level)
    return float(np.mean(hi - lo))


def gaussian_samples(mean, sigma, n_samples: int, seed: int = 0) -> np.ndarray:
    """(n_samples, *mean.shape) draws of independent Gaussians: turns point predictions with
    1σ uncertainties into samples that the coverage metrics accept."""
    m = _array(mean, "mean", ndim=None)
    s = _array(sigma, "sigma", ndim=None)
    if s.shape != m.shape or (s < 0).any():
        raise Sim2obsValueError(f"sigma must be >= 0 with the shape of the mean {m.shape}", value=s.shape)
    rng = np.random.default_rng(seed)
    return m + s * rng.standard_normal((int(n_samples), *m.shape))


def crps(samples, true) -> float:
    """Mean CRPS of ``samples`` (S, N) against ``true`` (N,) (module table), from the sorted
    samples: E|X − X′| = 2 / S² Σ_i (2i − S − 1) x_(i), so O(S log S) per object."""
    s, t = _posterior(samples, true)
    x = sorted_samples(s)
    n = x.shape[0]
    first = np.mean(np.abs(x - t), axis=0)
    weights = (2.0 * np.arange(1, n + 1) - n - 1).reshape((n,) + (1,) * (x.ndim - 1))
    spread = 2.0 * np.sum(weights * x, axis=0) / n**2
    return float(np.mean(first - 0.5 * spread))


def pit(samples, true, seed: int = 0) -> np.ndarray:
    """Probability integral transform of each truth under its posterior, ``(N,)`` in [0, 1]:
    (#{x < y} + U · #{x = y}) / S, U uniform (seeded), so a truth on a clipped bound (B/T = 0)
    whose posterior piles up there gets a uniform value, not an edge."""
    s, t = _posterior(samples, true)
    below = np.sum(s < t, axis=0)
    ties = np.sum(s == t, axis=0)
    u = np.random.default_rng(seed).uniform(size=np.shape(t))
    return np.ravel((below + u * ties) / s.shape[0])


def pit_histogram(samples, true, bins: int = 10, seed: int = 0) -> np.ndarray:
    """Fraction of objects per PIT bin ``(bins,)`` (flat at 1/bins when calibrated; a U shape
    means over-confident, a hump under-confident)."""
    counts, _ = np.histogram(pit(samples, true, seed), bins=int(bins), range=(0.0, 1.0))
    return counts / counts.sum()


def pit_ks(samples, true, seed: int = 0) -> float:
    """``pit_ks`` of the module table: sup |F_PIT(u) − u|."""
    u = np.sort(pit(samples, true, seed))
    n = len(u)
    return float(max(np.max(np.arange(1, n + 1) / n - u), np.max(u - np.arange(n) / n)))


def bootstrap_error(statistic, *arrays, n_boot: int = 500, seed: int = 0) -> float:
    """1σ bootstrap error of ``statistic(*arrays)``: the objects (axis 0 of every array) are
    resampled with replacement ``n_boot`` times (one index draw shared by all arrays, so paired
    quantities keep their pairing). For a coverage, pass :func:`inside_interval` and ``np.mean``."""
    arrays = [np.asarray(a) for a in arrays]
    sizes = {len(a) for a in arrays}
    if len(sizes) != 1 or 0 in sizes:
        raise Sim2obsValueError("bootstrap arrays must describe the same (>= 1) objects", value=sorted(sizes))
    n_obj = sizes.pop()
    rng = np.random.default_rng(seed)
    stats = [statistic(*[a[idx] for a in arrays]) for idx in rng.integers(0, n_obj, (int(n_boot), n_obj))]
    return float(np.std(stats))


def calibration_metrics(samples, true) -> dict[str, float]:
    """coverage_68/95/99, calibration_error and posterior_width of one target."""
    out = {key: coverage(samples, true, level) for key, level in COVERAGE_LEVELS.items()}
    out["calibration_error"] = calibration_error(samples, true)
    out["posterior_width"] = posterior_width(samples)
    return out


def posterior_score(pred, true, samples) -> float:
    """The combined accuracy + calibration score (see the module table). ``pred``, ``true``:
    (N, T); ``samples``: (S, N, T)."""
    p, t = np.asarray(pred, float), np.asarray(true, float)
    if p.ndim == 1:
        p, t, samples = p[:, None], t[:, None], np.asarray(samples)[..., None]
    s, _ = _posterior(samples, t)
    accuracy, calibration = [], []
    for k in range(t.shape[1]):
        spread = float(np.mean(np.abs(t[:, k] - np.median(t[:, k]))))
        if spread == 0:
            raise Sim2obsValueError(f"target {k} has no spread (mean |y - median| 0): the score is undefined",
                                    value=0.0)
        accuracy.append(float(np.mean(np.abs(_pair(p[:, k], t[:, k])[0] - t[:, k]))) / spread)
        calibration.append(calibration_error(s[:, :, k], t[:, k]))
    return float(np.mean(accuracy) + np.mean(calibration))


def gaussian_coverage(pred, true, sigma, level: float) -> float:
    """Fraction of truths within ŷ ± z σ, z the two-sided Gaussian quantile of ``level``
    (1, 2, 3 for 68.27/95.45/99.73 %). Arrays of one shape; σ >= 0."""
    from statistics import NormalDist

    p, t = _pair(np.ravel(pred), np.ravel(true))
    s = _array(np.ravel(sigma), "sigma")
    if s.shape != p.shape or (s < 0).any():
        raise Sim2obsValueError(f"sigma must be >= 0 with the predictions' shape {p.shape}", value=s.shape)
    z = NormalDist().inv_cdf(0.5 + level / 2)
    return float(np.mean(np.abs(p - t) <= z * s))


def mean_abs_error(pred, true, error=None) -> float:
    """``l1`` as the module table defines it: Dobbels' weighted ℒ1 with uncertainties, else
    the plain mean absolute error."""
    if error is not None:
        return l1(pred, true, error)
    p, t = _pair(pred, true)
    return float(np.mean(np.abs(p - t)))


def shared_metrics(keys, targets: Sequence[str], pred, true, errors=None, samples=None, sigma=None) -> dict[str, float]:
    """The keys every task shares, computed the one way this module defines them: of ``keys``
    (a task's declared metrics) ``l1``/``rmsle`` (one target) or ``<target>/l1``,
    ``<target>/rmsle`` (several); plus ``coverage_68/95/99`` whenever ``samples`` (S, N, T)
    or ``sigma`` (N, T) are given. ``pred``, ``true``, ``errors``: (N, T)."""
    p, t = np.asarray(pred, float), np.asarray(true, float)
    out: dict[str, float] = {}
    for k, name in enumerate(targets):
        prefix = "" if len(targets) == 1 else f"{name}/"
        e = None if errors is None else np.asarray(errors, float)[:, k]
        if f"{prefix}l1" in keys:
            out[f"{prefix}l1"] = mean_abs_error(p[:, k], t[:, k], e)
        if f"{prefix}rmsle" in keys:
            out[f"{prefix}rmsle"] = rmsle(p[:, k], t[:, k])
    for key, level in COVERAGE_LEVELS.items():
        if samples is not None:
            out[key] = coverage(samples, t, level)
        elif sigma is not None:
            out[key] = gaussian_coverage(p, t, sigma, level)
    return out


def point_metrics(pred, true) -> dict[str, float]:
    """rmse, nmad (of the residuals), bias_mean, bias_median and outlier_frac."""
    p, t = _pair(pred, true)
    return {"rmse": rmse(p, t), "nmad": nmad(p - t), "bias_mean": bias_mean(p, t),
            "bias_median": bias_median(p, t), "outlier_frac": outlier_fraction(p, t)}


def ranking_loss(key: str, value: float) -> float:
    """A number that is smaller for a better ``value`` of metric ``key`` (distance to the
    target for biases and coverages, the value or its negative otherwise); a per-target key
    such as ``bt_r/nmad`` is judged by its last part."""
    base = key.rsplit("/", 1)[-1]
    if base in TARGET_VALUE:
        return abs(value - TARGET_VALUE[base])
    if base not in HIGHER_IS_BETTER:
        raise Sim2obsValueError("unknown metric key", value=key, allowed=sorted(HIGHER_IS_BETTER))
    return -value if HIGHER_IS_BETTER[base] else value


def is_better(key: str, a: float, b: float) -> bool:
    """Whether score ``a`` beats ``b`` under metric ``key`` (a per-target key such as
    ``bt/nmad`` is judged by its last part)."""
    return ranking_loss(key, a) < ranking_loss(key, b)
