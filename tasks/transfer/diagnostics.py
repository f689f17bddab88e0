"""Domain-shift diagnostics of the transfer studies (issue 14): how far a target set is from the
source set, measured on a trained network's features, on the images and on the catalogue.

Pure functions on numpy arrays; the protocol calls :func:`shift_report` and writes its result
(plain JSON data) to ``diagnostics.json``. Every function is seeded: the same inputs and seed
give the same numbers. Large sets are subsampled (without replacement, seeded) to ``max_n``
objects per set before the quadratic-cost tests.

- :func:`mmd_test`: squared maximum mean discrepancy (Gretton et al. 2012, JMLR 13, 723), the
  unbiased estimator ``MMD^2_u`` with a Gaussian kernel whose bandwidth is the median pairwise
  distance of the pooled sample (the median heuristic), and a permutation p-value.
- :func:`frechet_distance`: the Fréchet (2-Wasserstein) distance between Gaussians fitted to the
  two feature sets (Dowson & Landau 1982; the "FID" of Heusel et al. 2017), optionally with a
  permutation p-value.
- :func:`classifier_two_sample_test`: a domain classifier (Lopez-Paz & Oquab 2017): k-fold
  cross-validated out-of-fold ROC AUC of telling target from source (0.5: indistinguishable),
  with a bootstrap standard error, the spread over folds and the one-sided Mann-Whitney p-value
  of the out-of-fold scores.
- :func:`image_classifier_test`: the same test on images, represented by their simple
  statistics (:mod:`~sim2obs.tasks.transfer.image_stats`) or by re-binned, flattened pixels.
- :func:`column_shift`: per catalogue column, the standardised mean difference and the
  two-sample Kolmogorov-Smirnov statistic and p-value.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import linalg, stats
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sim2obs.errors import Sim2obsValueError
from sim2obs.tasks.transfer.image_stats import detection_image, image_features, image_statistics

__all__ = ["mmd_test", "frechet_distance", "classifier_two_sample_test", "image_classifier_test",
           "image_features", "column_shift", "shift_report", "shift_diagnostics", "jsonable", "CLASSIFIERS",
           "DEFAULT_MAX_N"]

DEFAULT_MAX_N = 1000  # objects per set kept by the quadratic-cost tests (MMD kernel: (2n)^2)
CLASSIFIERS = ("logistic", "lightgbm")


# --------------------------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------------------------
def _matrix(x: Any, name: str, min_rows: int = 2) -> np.ndarray:
    """``x`` as a finite float64 ``(N, D)`` matrix (a 1-D array is one feature)."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise Sim2obsValueError(f"{name} must be a (N, D) array", value=a.shape)
    if a.shape[0] < min_rows:
        raise Sim2obsValueError(f"{name} needs at least {min_rows} rows", value=a.shape[0])
    bad = ~np.isfinite(a)
    if bad.any():
        raise Sim2obsValueError(f"{name} holds {int(bad.sum())} non-finite values "
                                f"(first in row {int(np.argmax(bad.any(axis=1)))})")
    return a


def _pair(x: Any, y: Any, name: str, min_rows: int = 2) -> tuple[np.ndarray, np.ndarray]:
    a, b = _matrix(x, f"source {name}", min_rows), _matrix(y, f"target {name}", min_rows)
    if a.shape[1] != b.shape[1]:
        raise Sim2obsValueError(f"source and target {name} have different widths",
                                value=(a.shape[1], b.shape[1]))
    return a, b


def _subsample(a: np.ndarray, max_n: int | None, rng: np.random.Generator) -> np.ndarray:
    """At most ``max_n`` rows of ``a``, drawn without replacement (in their original order)."""
    if max_n is None or a.shape[0] <= max_n:
        return a
    return a[np.sort(rng.choice(a.shape[0], size=int(max_n), replace=False))]


def _permutation_p(observed: float, null: np.ndarray) -> float:
    """``(1 + #{null >= observed}) / (1 + n)``: never 0, exact for a finite permutation test."""
    return float((1 + np.sum(null >= observed)) / (1 + null.size))


# --------------------------------------------------------------------------------------------
# Feature-distribution distances
# --------------------------------------------------------------------------------------------
def mmd_test(x: np.ndarray, y: np.ndarray, seed: int = 0, n_permutations: int = 200,
             max_n: int | None = DEFAULT_MAX_N, standardize: bool = True,
             bandwidth: float | None = None) -> dict[str, Any]:
    """Unbiased ``MMD^2`` between the rows of ``x`` ``(n, D)`` and ``y`` ``(m, D)`` with a
    Gaussian kernel ``k(a, b) = exp(-|a - b|^2 / (2 s^2))``, and its permutation p-value.

    ``standardize``: scale every feature by the pooled mean and standard deviation first (the
    pooled statistics do not change under permutation, so the test stays exact); ``bandwidth``
    ``s`` (in the standardised units): None takes the median pairwise distance of the pooled
    sample. The p-value is ``(1 + #{MMD^2_perm >= MMD^2}) / (1 + n_permutations)`` over random
    relabellings of the pooled sample (all permutations evaluated in one matrix product; None
    when ``n_permutations`` is 0).

    Returns ``{"mmd2", "p_value", "bandwidth", "n_source", "n_target", "n_permutations"}``."""
    rng = np.random.default_rng(seed)
    x, y = _pair(x, y, "features")
    x, y = _subsample(x, max_n, rng), _subsample(y, max_n, rng)
    z = np.vstack([x, y])
    if standardize:
        sd = z.std(axis=0)
        z = (z - z.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    sq = np.maximum(np.sum(z * z, 1)[:, None] + np.sum(z * z, 1)[None, :] - 2.0 * z @ z.T, 0.0)
    if bandwidth is None:
        iu = np.triu_indices(z.shape[0], 1)
        bandwidth = float(np.sqrt(np.median(sq[iu])))
        bandwidth = bandwidth if bandwidth > 0 else 1.0
    if not bandwidth > 0:
        raise Sim2obsValueError("MMD bandwidth must be positive", value=bandwidth)
    kernel = np.exp(-sq / (2.0 * bandwidth**2))
    n, m = x.shape[0], y.shape[0]
    labels = np.zeros((1 + n_permutations, n + m))
    labels[0, :n] = 1.0
    for p in range(n_permutations):  # one random relabelling per row
        labels[p + 1, rng.permutation(n + m)[:n]] = 1.0
    stat = _mmd2_from_kernel(kernel, labels, n, m)
    return {"mmd2": float(stat[0]), "p_value": _permutation_p(stat[0], stat[1:]) if n_permutations > 0 else None,
            "bandwidth": bandwidth, "n_source": n, "n_target": m, "n_permutations": n_permutations}


def _mmd2_from_kernel(kernel: np.ndarray, labels: np.ndarray, n: int, m: int) -> np.ndarray:
    """Unbiased ``MMD^2`` for every row of ``labels`` (1: first sample, 0: second), given the
    pooled kernel matrix whose diagonal is 1."""
    rowsum = kernel.sum(axis=1)
    ka = labels @ kernel                        # (P, N): K a for every labelling a
    kxx = np.sum(labels * ka, axis=1) - n       # sum_{i != j in x} k
    kxy = np.sum(labels * (rowsum - ka), axis=1)
    kyy = np.sum((1.0 - labels) * (rowsum - ka), axis=1) - m
    return kxx / (n * (n - 1)) + kyy / (m * (m - 1)) - 2.0 * kxy / (n * m)


def _psd_sqrt(c: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (eigenvalues < 0 from
    round-off set to 0)."""
    w, v = linalg.eigh(c)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def _frechet(x: np.ndarray, y: np.ndarray) -> float:
    """``|mu_x - mu_y|^2 + Tr C_x + Tr C_y - 2 Tr (C_x C_y)^{1/2}``, with the trace of the matrix
    square root taken as ``sum sqrt(eig(C_x^{1/2} C_y C_x^{1/2}))`` (same eigenvalues, but a
    symmetric problem: stable for singular covariances and ~10x faster than ``sqrtm``)."""
    mu = x.mean(axis=0) - y.mean(axis=0)
    cx, cy = np.atleast_2d(np.cov(x, rowvar=False)), np.atleast_2d(np.cov(y, rowvar=False))
    root = _psd_sqrt(cx)
    eig = linalg.eigvalsh(root @ cy @ root)
    value = float(mu @ mu + np.trace(cx) + np.trace(cy) - 2.0 * np.sum(np.sqrt(np.clip(eig, 0.0, None))))
    return max(value, 0.0)


def frechet_distance(x: np.ndarray, y: np.ndarray, seed: int = 0, max_n: int | None = None,
                     n_permutations: int = 0) -> dict[str, Any]:
    """Fréchet distance between Gaussians fitted to the rows of ``x`` ``(n, D)`` and ``y``
    ``(m, D)``: ``|mu_x - mu_y|^2 + Tr(C_x + C_y - 2 (C_x C_y)^{1/2})`` (see :func:`_frechet`), in
    squared feature units. It is biased upwards for small sets (about ``D^2 / n`` for two draws
    of one population), so compare values at equal ``n``; ``n_permutations > 0`` adds a
    permutation p-value (one ``sqrtm`` per permutation).

    Returns ``{"frechet", "p_value" (None without permutations), "n_source", "n_target", "dim"}``."""
    rng = np.random.default_rng(seed)
    x, y = _pair(x, y, "features")
    x, y = _subsample(x, max_n, rng), _subsample(y, max_n, rng)
    value = _frechet(x, y)
    p_value = None
    if n_permutations > 0:
        z, n = np.vstack([x, y]), x.shape[0]
        null = np.empty(n_permutations)
        for p in range(n_permutations):
            idx = rng.permutation(z.shape[0])
            null[p] = _frechet(z[idx[:n]], z[idx[n:]])
        p_value = _permutation_p(value, null)
    return {"frechet": value, "p_value": p_value, "n_source": x.shape[0], "n_target": y.shape[0],
            "dim": x.shape[1]}


# --------------------------------------------------------------------------------------------
# Classifier two-sample tests
# --------------------------------------------------------------------------------------------
def _classifier(name: str, seed: int):
    if name == "logistic":
        return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    if name == "lightgbm":
        from lightgbm import LGBMClassifier  # deferred: import cost only when chosen

        return LGBMClassifier(n_estimators=100, learning_rate=0.1, num_leaves=15, min_child_samples=10,
                              subsample=0.8, subsample_freq=1, colsample_bytree=0.8, n_jobs=1,
                              random_state=seed, deterministic=True, force_row_wise=True, verbose=-1)
    raise Sim2obsValueError("unknown domain classifier", value=name, allowed=list(CLASSIFIERS))


def _bootstrap_auc(label: np.ndarray, score: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """ROC AUCs of ``n_boot`` bootstrap resamples of the objects, all at once: each resample is a
    row of multinomial counts, and the AUC (ties counted 1/2) is the count-weighted
    Mann-Whitney sum over groups of equal scores. Resamples missing a class are dropped."""
    if n_boot <= 0:
        return np.zeros(0)
    order = np.argsort(score, kind="stable")
    s, pos = score[order], label[order].astype(bool)
    counts = rng.multinomial(s.size, np.full(s.size, 1.0 / s.size), size=n_boot).astype(np.float64)
    _, start, size = np.unique(s, return_index=True, return_counts=True)
    group = np.repeat(np.arange(start.size), size)
    cum_neg = np.cumsum(counts * ~pos, axis=1)
    end_neg = cum_neg[:, start + size - 1]                        # negatives up to each group's end
    below = np.concatenate([np.zeros((n_boot, 1)), end_neg[:, :-1]], axis=1)
    equal = end_neg - below
    hits = (counts * pos) * (below + 0.5 * equal)[:, group]
    n_pos, n_neg = (counts * pos).sum(axis=1), (counts * ~pos).sum(axis=1)
    ok = (n_pos > 0) & (n_neg > 0)
    return hits.sum(axis=1)[ok] / (n_pos[ok] * n_neg[ok])


def classifier_two_sample_test(x: np.ndarray, y: np.ndarray, seed: int = 0, classifier: str = "logistic",
                               n_folds: int = 5, n_bootstrap: int = 200,
                               max_n: int | None = DEFAULT_MAX_N) -> dict[str, Any]:
    """Domain-classifier AUC: how well a classifier tells target rows ``y`` from source rows ``x``.

    ``classifier``: ``"logistic"`` (standardised features, L2-regularised logistic regression)
    or ``"lightgbm"`` (gradient-boosted trees, one thread, deterministic). Stratified
    ``n_folds``-fold cross-validation gives one out-of-fold score per object; ``auc`` is the ROC
    AUC of all out-of-fold scores (target = positive class; 0.5 for one population, 1 for
    separable sets); rows present in both sets are kept in one fold. ``auc_se``: bootstrap standard error over objects (``n_bootstrap``
    resamples); ``fold_aucs`` and their standard deviation ``fold_std``; ``p_value``: one-sided
    Mann-Whitney U test of target scores > source scores (approximate: out-of-fold scores of
    different folds come from different fits).

    Returns ``{"auc", "auc_se", "fold_aucs", "fold_std", "p_value", "classifier", "n_folds",
    "n_source", "n_target"}``."""
    rng = np.random.default_rng(seed)
    x, y = _pair(x, y, "inputs", min_rows=n_folds)
    x, y = _subsample(x, max_n, rng), _subsample(y, max_n, rng)
    z = np.vstack([x, y])
    label = np.r_[np.zeros(x.shape[0], dtype=int), np.ones(y.shape[0], dtype=int)]
    score = np.empty(z.shape[0])
    # identical rows (an object in both sets) share a fold: a copy left in training would be
    # "recognised" with the other label and push the AUC far below 0.5
    _, groups = np.unique(z, axis=0, return_inverse=True)
    groups = groups.ravel()
    if groups.max() + 1 < z.shape[0]:
        folds = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(z, label, groups)
    else:
        folds = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(z, label)
    fold_aucs = []
    for train, test in folds:  # one fit per fold
        model = _classifier(classifier, seed).fit(z[train], label[train])
        score[test] = model.predict_proba(z[test])[:, 1]
        fold_aucs.append(float(roc_auc_score(label[test], score[test])))
    auc = float(roc_auc_score(label, score))
    boot = _bootstrap_auc(label, score, n_bootstrap, rng)
    p_value = float(stats.mannwhitneyu(score[label == 1], score[label == 0], alternative="greater").pvalue)
    return {"auc": auc, "auc_se": float(np.std(boot, ddof=1)) if boot.size > 1 else None,
            "fold_aucs": fold_aucs, "fold_std": float(np.std(fold_aucs, ddof=1)), "p_value": p_value,
            "classifier": classifier, "n_folds": n_folds, "n_source": x.shape[0], "n_target": y.shape[0]}


def image_classifier_test(source_images: np.ndarray, target_images: np.ndarray, seed: int = 0,
                          representation: str = "stats", classifier: str | None = None,
                          pixels: int = 16, **kwargs) -> dict[str, Any]:
    """Classifier two-sample test on images (see :func:`image_features` for ``representation``
    and ``pixels``). ``classifier`` None: ``"logistic"`` on statistics, ``"lightgbm"`` on
    pixels (a linear model on pixels sees only mean images, not a change of noise or width).
    Other keyword arguments go to :func:`classifier_two_sample_test`."""
    if classifier is None:
        classifier = "lightgbm" if representation == "pixels" else "logistic"
    fs = image_features(source_images, representation, pixels, name="source images")
    ft = image_features(target_images, representation, pixels, name="target images")
    out = classifier_two_sample_test(fs, ft, seed=seed, classifier=classifier, **kwargs)
    out["representation"] = representation
    return out


# --------------------------------------------------------------------------------------------
# Catalogue and image-statistic shifts
# --------------------------------------------------------------------------------------------
def _column_names(table: Any) -> list[str]:
    """Column names of a mapping, a ``pandas.DataFrame`` or an ``astropy.table.Table``."""
    if hasattr(table, "colnames"):
        return list(table.colnames)
    if hasattr(table, "columns") and not isinstance(table, Mapping):
        return [str(c) for c in table.columns]
    if isinstance(table, Mapping):
        return list(table.keys())
    raise Sim2obsValueError("a catalogue must be a mapping of columns, a DataFrame or a Table",
                            value=type(table).__name__)


def _shift_one(s: np.ndarray, t: np.ndarray) -> dict[str, Any]:
    ms, mt, vs, vt = s.mean(), t.mean(), s.var(ddof=1), t.var(ddof=1)
    pooled = math.sqrt((vs + vt) / 2.0)
    smd = (mt - ms) / pooled if pooled > 0 else (0.0 if mt == ms else math.copysign(math.inf, mt - ms))
    ks = stats.ks_2samp(s, t)
    return {"smd": float(smd), "ks": float(ks.statistic), "ks_p_value": float(ks.pvalue),
            "mean_source": float(ms), "mean_target": float(mt), "std_source": float(math.sqrt(vs)),
            "std_target": float(math.sqrt(vt)), "median_source": float(np.median(s)),
            "median_target": float(np.median(t)), "n_source": int(s.size), "n_target": int(t.size)}


def column_shift(source: Any, target: Any, columns: Sequence[str] | None = None,
                 exclude: Sequence[str] = ("id",)) -> dict[str, Any]:
    """Per-column shift between two catalogues (mappings of 1-D arrays, DataFrames or Tables).

    ``columns``: the columns to compare (None: every column both have, in the source's order,
    less ``exclude``). Per column, over its finite values: ``smd``, the standardised mean
    difference ``(mean_t - mean_s) / sqrt((var_s + var_t) / 2)`` (Cohen's d; |d| < 0.1 is
    usually read as negligible; +-inf when both sets are constant and differ), ``ks`` and
    ``ks_p_value`` from ``scipy.stats.ks_2samp``, means, standard deviations, medians and counts.

    Returns ``{"columns": {name: {...}}, "skipped": {name: reason}}``; a named column that a
    set lacks is an error."""
    names_s, names_t = _column_names(source), _column_names(target)
    if columns is None:
        columns = [c for c in names_s if c in set(names_t) and c not in set(exclude)]
    else:
        for side, names in (("source", names_s), ("target", names_t)):
            missing = [c for c in columns if c not in names]
            if missing:
                raise Sim2obsValueError(f"the {side} catalogue lacks columns {missing}", allowed=names)
    out, skipped = {}, {}
    for name in columns:
        s, t = np.asarray(source[name]), np.asarray(target[name])
        if s.ndim != 1 or t.ndim != 1:
            skipped[name] = "not a 1-D column"
            continue
        if not (np.issubdtype(s.dtype, np.number) or s.dtype == bool) or \
                not (np.issubdtype(t.dtype, np.number) or t.dtype == bool):
            skipped[name] = "not numeric"
            continue
        s, t = s.astype(np.float64), t.astype(np.float64)
        s, t = s[np.isfinite(s)], t[np.isfinite(t)]
        if s.size < 2 or t.size < 2:
            skipped[name] = f"fewer than 2 finite values (source {s.size}, target {t.size})"
            continue
        out[name] = _shift_one(s, t)
    return {"columns": out, "skipped": skipped}


# --------------------------------------------------------------------------------------------
# The combined report
# --------------------------------------------------------------------------------------------
REPORT_KEYS = ("name", "features", "images", "catalogue", "pixel_scale", "sky_sigma")
_REPORTED_STATS = ("concentration", "asymmetry", "r50_px", "r50_arcsec", "r_petro_px", "snr",
                   "flux_total", "sky_sigma")


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data: numpy scalars and arrays to Python numbers and lists,
    non-finite floats to None (strict JSON has no NaN or inf)."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def _check_side(side: Mapping[str, Any], which: str) -> None:
    if not isinstance(side, Mapping):
        raise Sim2obsValueError(f"the {which} of a shift report must be a dict", value=type(side).__name__)
    unknown = sorted(set(side) - set(REPORT_KEYS))
    if unknown:
        raise Sim2obsValueError(f"unknown keys in the {which} of a shift report: {unknown}",
                                allowed=list(REPORT_KEYS))


def _image_section(src: Mapping, tgt: Mapping, rng: np.random.Generator, seed: int, opts: dict) -> dict:
    """Image-statistic shifts and image domain classifiers on at most ``max_n`` images a side."""
    picked = {}
    for which, side in (("source", src), ("target", tgt)):
        imgs = np.asarray(side["images"])
        n = imgs.shape[0]
        idx = np.arange(n) if opts["max_n"] is None or n <= opts["max_n"] else \
            np.sort(rng.choice(n, size=opts["max_n"], replace=False))
        sky = side.get("sky_sigma")
        sky = None if sky is None else np.broadcast_to(np.asarray(sky, dtype=np.float64), (n,))[idx]
        scale = side.get("pixel_scale")
        scale = np.asarray(scale, dtype=np.float64)[idx] if np.ndim(scale) > 0 else scale
        st = image_statistics(detection_image(imgs[idx], f"{which} images"), pixel_scale=scale,
                              sky_sigma=sky)
        picked[which] = (imgs[idx], st)
    (img_s, st_s), (img_t, st_t) = picked["source"], picked["target"]
    names = [k for k in _REPORTED_STATS if k in st_s and k in st_t]
    section: dict[str, Any] = {"statistics": column_shift(st_s, st_t, columns=names)["columns"],
                               "classifier": {}, "skipped": {}}
    c2st = {k: opts[k] for k in ("n_folds", "n_bootstrap")}
    section["classifier"]["stats"] = classifier_two_sample_test(
        image_features(img_s, stats=st_s), image_features(img_t, stats=st_t), seed=seed, **c2st)
    section["classifier"]["stats"]["representation"] = "stats"
    if "pixels" in opts["image_representations"]:
        if img_s.shape[1:] != img_t.shape[1:]:
            section["skipped"]["pixels"] = f"image shapes differ: {img_s.shape[1:]} vs {img_t.shape[1:]}"
        else:
            section["classifier"]["pixels"] = image_classifier_test(
                img_s, img_t, seed=seed, representation="pixels", pixels=min(opts["pixels"], *img_s.shape[-2:]),
                **c2st)
    return section


def shift_report(source: Mapping[str, Any], target: Mapping[str, Any], seed: int = 0, *,
                 max_n: int | None = DEFAULT_MAX_N, n_permutations: int = 200, frechet_permutations: int = 0,
                 n_folds: int = 5, n_bootstrap: int = 200, image_representations: Sequence[str] = ("stats", "pixels"),
                 pixels: int = 16, columns: Sequence[str] | None = None) -> dict[str, Any]:
    """Every shift diagnostic that the two sets' keys allow, as plain JSON data.

    ``source`` and ``target``: dicts with any of ``features`` ``(N, D)`` (penultimate features
    of the trained network), ``images`` ``(N, H, W)`` or ``(N, C, H, W)`` (sky-subtracted, any
    linear flux unit; statistics are measured on the channel sum), ``catalogue`` (mapping of 1-D
    columns, DataFrame or Table), ``pixel_scale`` (arcsec/px, scalar or ``(N,)``), ``sky_sigma``
    (known background noise per pixel of the channel sum, scalar or ``(N,)``) and ``name``. A
    section runs when both sets have its key, and is listed under ``skipped`` with the reason
    when only one has it.

    Sections: ``features`` = ``{"mmd": mmd_test, "frechet": frechet_distance, "classifier":
    classifier_two_sample_test (logistic)}``; ``images`` = ``{"statistics": {stat: column
    shift}, "classifier": {"stats": ..., "pixels": ...}}`` (skipped, with the count, when either
    stack holds non-finite pixels); ``catalogue`` = column_shift. Each
    test subsamples to ``max_n`` objects per set (seeded). Same inputs and seed: same output."""
    _check_side(source, "source")
    _check_side(target, "target")
    opts = {"max_n": max_n, "n_folds": n_folds, "n_bootstrap": n_bootstrap, "pixels": pixels,
            "image_representations": tuple(image_representations)}
    report: dict[str, Any] = {"seed": int(seed), "max_n": max_n, "source_name": source.get("name"),
                              "target_name": target.get("name"), "skipped": {}}
    for key in ("features", "images", "catalogue"):
        have = [w for w, side in (("source", source), ("target", target)) if side.get(key) is not None]
        if len(have) == 1:
            report["skipped"][key] = f"only the {have[0]} has {key}"
    if source.get("features") is not None and target.get("features") is not None:
        fs, ft = source["features"], target["features"]
        report["features"] = {
            "mmd": mmd_test(fs, ft, seed=seed, n_permutations=n_permutations, max_n=max_n),
            "frechet": frechet_distance(fs, ft, seed=seed, max_n=max_n, n_permutations=frechet_permutations),
            "classifier": classifier_two_sample_test(fs, ft, seed=seed, n_folds=n_folds,
                                                     n_bootstrap=n_bootstrap, max_n=max_n),
        }
    if source.get("images") is not None and target.get("images") is not None:
        bad = {w: int(np.size(side["images"]) - np.isfinite(side["images"]).sum())
               for w, side in (("source", source), ("target", target))}
        if any(bad.values()):  # masked maps: report why, do not fail a finished study
            report["skipped"]["images"] = f"non-finite pixels (source {bad['source']}, target {bad['target']})"
        else:
            report["images"] = _image_section(source, target, np.random.default_rng([seed, 1]), seed, opts)
    if source.get("catalogue") is not None and target.get("catalogue") is not None:
        report["catalogue"] = column_shift(source["catalogue"], target["catalogue"], columns=columns)
    return jsonable(report)


def _catalogue(table: Any, names: Sequence[str] | None, which: str) -> Any:
    """A ``(N, T)`` label matrix with its column ``names`` as a mapping; other tables unchanged."""
    if table is None or not isinstance(table, np.ndarray):
        return table
    a = table[:, None] if table.ndim == 1 else table
    names = list(names) if names is not None else [f"column_{i}" for i in range(a.shape[1])]
    if a.ndim != 2 or a.shape[1] != len(names):
        raise Sim2obsValueError(f"the {which} catalogue has {a.shape[1:]} columns but {len(names)} names",
                                value=names)
    return {n: a[:, i] for i, n in enumerate(names)}


def shift_diagnostics(*, source_features: np.ndarray | None = None, target_features: np.ndarray | None = None,
                      source_images: np.ndarray | None = None, target_images: np.ndarray | None = None,
                      source_catalog: Any = None, target_catalog: Any = None,
                      catalog_columns: Sequence[str] | None = None, source_inputs: np.ndarray | None = None,
                      target_inputs: np.ndarray | None = None, source_pixel_scale: Any = None,
                      target_pixel_scale: Any = None, source_sky_sigma: Any = None, target_sky_sigma: Any = None,
                      seed: int = 0, **options) -> dict[str, Any]:
    """Keyword form of :func:`shift_report` (the protocol's ``report.diagnostic_inputs`` names).

    ``*_catalog``: ``(N, T)`` label matrices whose columns are ``catalog_columns``, or any table
    :func:`column_shift` takes. ``*_inputs`` (the network's preprocessed inputs) are accepted and
    unused: the image diagnostics read the raw images. ``*_pixel_scale`` and ``*_sky_sigma``:
    as ``pixel_scale`` and ``sky_sigma`` in :func:`shift_report` (the noise of the channel sum,
    e.g. ``sqrt(sum_b sky_sigma_b^2)`` from a GalSim set's catalogue; better than the edge-frame
    estimate when galaxies fill the stamp). ``options`` go to :func:`shift_report`."""
    del source_inputs, target_inputs
    sides = []
    for which, feats, imgs, cat, scale, sky in (
            ("source", source_features, source_images, source_catalog, source_pixel_scale, source_sky_sigma),
            ("target", target_features, target_images, target_catalog, target_pixel_scale, target_sky_sigma)):
        side = {"features": feats, "images": imgs, "catalogue": _catalogue(cat, catalog_columns, which),
                "pixel_scale": scale, "sky_sigma": sky}
        sides.append({k: v for k, v in side.items() if v is not None})
    return shift_report(sides[0], sides[1], seed=seed, **options)
