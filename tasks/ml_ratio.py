"""Task ``ml_ratio``: the stellar mass-to-light ratio M/L_g from a g-band image (Dobbels et al. 2019).

The paper's pipeline (its Fig. 3), on the simulated bulge + disk sets:

1. **Images** (§2.2). Luminosity statistics are measured on the raw g-band image; the image is then
   rescaled linearly to [0, 1] and log-scaled, F' = log(aF + 1) / log(a + 1), with a per-image
   "automatic scaling value" ``a`` fitted so that the output noise level (sigma-clipped mean + 2σ
   of the image) equals 0.2 (:func:`fit_scaling_value`, :func:`log_scale`).
2. **Morphology CNNs** (§3.1). CNNs 1-3 learn morphology labels from F' alone. On real data these are
   the 37 Galaxy Zoo 2 answers (``morphology_head: gz2``: ReLU output + the hierarchical probability
   normalisation of :mod:`sim2obs.models.gz2`); on simulations the generator's structural
   parameters play their role (``morphology_head: regression``, standardised labels, L2 loss):
   the g-band bulge-to-total ratio (GZ2 "bulge prominence"/"smooth or features"), the disk axis
   ratio (GZ2 "edge-on"), the bulge axis ratio and Sérsic index (GZ2 "rounded"/"bulge shape") and the
   log half-light radii (size). As in the paper, the CNNs train on a sub-sample of the training set
   (``cnn_train_fraction``; the paper's GZ2 cross-match held 80 %) and validate on the validation
   split; the evaluation split's labels are never read. CNN 4 is CNN ``ml_cnn_from`` with its output
   layer followed by a dense-1 layer, initialised from the trained morphology network and retrained
   on M/L with the ℒ1 loss (:class:`WeightedL1Loss`); its next-to-last layer gives features that are
   "primed" on morphology.
3. **Gradient boosting** (§3.2). LightGBM (40 leaves, ≥ 150 objects per leaf, 40 % of the features
   and 80 % of the objects per tree, ℒ1 objective through 1/ΔΥ sample weights, early stopping on the
   validation ℒ1) on the CNN outputs (plus the inner features of CNNs 1-3), the luminosity statistics
   (:func:`image_statistics`), redshift and pixel size. Permutation importances on the validation set
   (Fig. 5) and the feature-group ablation (Table 1) are written next to the model's predictions.

Baselines: the best constant (ℒ1-optimal: the 1/ΔΥ-weighted median), LightGBM on L_g and redshift
(the "reference method" of §4.1), the g − i power law fitted by ℒ1 (§4.3), LightGBM on z, L_g, L_i,
L_g/L_i (§4.3) and the same plus the morphology features ("g + i + morph", §4.3).

Files of a run (``<out>/``): per method ``result.json``, ``predictions_test.h5``, plots
(``pred_vs_true_ml_g.png``, ``residuals_ml_g.png``, ``dex_errors_ml_g.png``, ``l1_terms_ml_g.png``);
``cnn_gbm/importances.{csv,png}``, ``cnn_gbm/scaled_examples.png``, ``cnn_gbm/ablation/``;
``ablation_table.{csv,md,png}`` and ``l1_by_method.png`` (from :meth:`MLRatioTask.summarise`);
``_shared/features-<key>/`` holds the CNN runs and the extracted features (reused on resume).
"""
from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from sim2obs.atomic import atomic_write
from sim2obs.errors import ConfigError, DataFormatError, Sim2obsValueError
from sim2obs.provenance import stable_hash
from sim2obs.tasks import TASKS
from sim2obs.tasks import metrics as M
from sim2obs.tasks.base import (Method, MethodOutput, PaperResult, Predictions, Task, TaskConfig, TaskMetadata,
                                Truth)

__all__ = [
    "MLRatioTask", "MLRatioConfig", "CNNSpec", "WeightedL1Loss", "MLRatioNet", "fit_scaling_value",
    "log_scale", "noise_level", "image_statistics", "flux_to_luminosity", "fit_power_law", "weighted_median",
    "resize_images", "build_morphology_net", "permutation_importance",
]

TARGET = "ml_g"
BAND = "g"
#: Catalogue columns that are observables (measurable from the images, photometry and redshift).
#: Every other catalogue column is a label (physical or structural truth of the generator).
OBSERVABLE_PREFIXES = ("flux_", "mag_", "abs_mag_", "lum_", "psf_fwhm_", "sky_sigma_", "snr_")
OBSERVABLE_COLUMNS = ("id", "redshift", "luminosity_distance_mpc", "pixel_scale_arcsec", "pixel_scale_kpc")
#: Feature groups of the ablation (Table 1 of the paper).
GROUPS = ("cnn1-3", "cnn4", "luminosity", "distance")
#: The paper's Table 1 (test ℒ1) per ablation row.
PAPER_ABLATION = {"all": 2.29, "no cnn1-3": 2.37, "no cnn4": 2.41, "no luminosity": 2.32,
                  "no distance (fluxes)": 2.67, "luminosity + distance": 3.38}
LG_Z = ["lum_g", "redshift"]
GI = ["redshift", "lum_g", "lum_i", "lum_g/lum_i"]
STAT_NAMES = ("sum", "mean", "max", "min", "std", "centre", "centre5")
LOG_STAT_NAMES = ("sum", "mean", "std", "centre", "centre5")


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------
@dataclass
class CNNSpec:
    """One morphology CNN. ``model``: a ``_target_`` config (null: the task's ``model``); its
    ``num_outputs`` and ``in_channels`` are set by the task. ``image_size``: input size in pixels
    (null: the task's ``image_size``); ``epochs``: null: ``trainer.epochs``; ``inner_features``:
    also give the GBM the input of the network's last dense layer (the paper used the 2048
    ResNet-50 features of CNN 1)."""

    model: Optional[dict[str, Any]] = None
    image_size: Optional[int] = None
    epochs: Optional[int] = None
    inner_features: bool = True


def _default_lightgbm() -> dict[str, Any]:
    # Dobbels et al. (2019) §3.2: 40 leaves, >= 150 per leaf, 40 % features, 80 % bagging per tree.
    return {"num_leaves": 40, "min_data_in_leaf": 150, "feature_fraction": 0.4, "bagging_fraction": 0.8,
            "bagging_freq": 1, "learning_rate": 0.05}


@dataclass
class MLRatioConfig(TaskConfig):
    """Settings of the ``ml_ratio`` task (presets: ``configs/task/ml_ratio/{quick,paper}.yaml``)."""

    model: dict[str, Any] = field(default_factory=lambda: {"_target_": "sim2obs.models.cnn.DobbelsCNN",
                                                            "output_relu": False})
    trainer: dict[str, Any] = field(default_factory=dict)
    morphology_cnns: dict[str, CNNSpec] = field(default_factory=lambda: {"cnn1": CNNSpec()})
    ml_cnn_from: Optional[str] = "cnn1"     # CNN 4 starts from this network; null: no CNN 4
    ml_cnn_epochs: Optional[int] = None     # null: trainer.epochs
    ml_cnn_lr: Optional[float] = None       # null: trainer.lr
    morphology_head: str = "regression"     # regression (sims: structural labels) | gz2 (real data)
    morphology_labels: list[str] = field(default_factory=lambda: [
        "bt_g", "disk_q", "bulge_q", "bulge_sersic_n", "r_e_g", "disk_hlr_arcsec", "bulge_hlr_arcsec"])
    log_labels: list[str] = field(default_factory=lambda: ["r_e_g", "disk_hlr_arcsec", "bulge_hlr_arcsec"])
    cnn_train_fraction: float = 0.8
    image_size: Optional[int] = None        # null: the stamp size
    noise_level: float = 0.2
    sigma_clip: float = 3.0
    sigma_clip_iters: int = 5
    lightgbm: dict[str, Any] = field(default_factory=_default_lightgbm)
    lightgbm_rounds: int = 5000
    early_stopping_rounds: int = 100
    lightgbm_threads: int = 0               # 0: LightGBM's default (all cores)
    gi_morph_top_features: int = 50         # retrain g + i + morph on its most-used features; 0: off
    importance_repeats: int = 3
    ablation: bool = True


# --------------------------------------------------------------------------------------------
# Image preprocessing (§2.2) and luminosity statistics (§3.2)
# --------------------------------------------------------------------------------------------
def _as_stack(images: np.ndarray) -> np.ndarray:
    a = np.asarray(images, dtype=np.float64)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise Sim2obsValueError("images must be (H, W) or (N, H, W)", value=a.shape)
    if not np.isfinite(a).all():
        raise Sim2obsValueError("images contain NaN/inf", value=None)
    return a


def rescale_unit(images: np.ndarray) -> np.ndarray:
    """Linear rescaling of every image to [0, 1] (min to 0, max to 1); a constant image becomes 0."""
    a = _as_stack(images)
    lo = a.min(axis=(1, 2), keepdims=True)
    span = a.max(axis=(1, 2), keepdims=True) - lo
    return np.where(span > 0, (a - lo) / np.where(span > 0, span, 1.0), 0.0)


def noise_level(images: np.ndarray, sigma: float = 3.0, maxiters: int = 5) -> np.ndarray:
    """Noise level per image: mean + 2 std of the sigma-clipped pixels (astropy
    ``sigma_clipped_stats``: median centre, ``sigma`` clipping, ``maxiters`` iterations)."""
    from astropy.stats import sigma_clipped_stats

    a = _as_stack(images)
    mean, _, std = sigma_clipped_stats(a, sigma=sigma, maxiters=maxiters, axis=(1, 2))
    return np.asarray(mean + 2.0 * std, dtype=np.float64)


def _log_curve(a: np.ndarray, x: np.ndarray) -> np.ndarray:
    """log(a x + 1) / log(a + 1), elementwise (exact for tiny a: log1p)."""
    return np.log1p(a * x) / np.log1p(a)


def fit_scaling_value(unit_images: np.ndarray, target: float = 0.2, sigma: float = 3.0, maxiters: int = 5,
                      bounds: tuple[float, float] = (1e-4, 1e8)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The automatic scaling value of Dobbels et al. (2019, §2.2) for images already rescaled to [0, 1].

    The noise level n (:func:`noise_level`) maps to log(a n + 1) / log(a + 1), which rises
    monotonically from n (a → 0, linear) to 1 (a → ∞); ``a`` is found by bisection in log a so that
    it equals ``target``. Noisy images with n ≥ ``target`` cannot reach it and get the smallest
    ``a`` (nearly linear scaling); noiseless ones (n = 0) the largest.

    Returns ``(a, n, reached)``: per-image scaling values, input noise levels, and whether the
    output noise level equals ``target``.
    """
    if not 0.0 < target < 1.0:
        raise Sim2obsValueError("the target noise level must lie in (0, 1)", value=target)
    n = noise_level(unit_images, sigma, maxiters)
    lo = np.full(n.shape, math.log10(bounds[0]))
    hi = np.full(n.shape, math.log10(bounds[1]))
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        below = _log_curve(10.0 ** mid, n) < target
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    a = 10.0 ** (0.5 * (lo + hi))
    reached = np.abs(_log_curve(a, n) - target) < 1e-6
    return a, n, reached


def log_scale(unit_images: np.ndarray, a: np.ndarray | float) -> np.ndarray:
    """F' = log(a F + 1) / log(a + 1) for images F in [0, 1] (one ``a`` per image or a scalar)."""
    f = _as_stack(unit_images)
    a = np.broadcast_to(np.asarray(a, dtype=np.float64), (len(f),)).reshape(-1, 1, 1)
    if (a <= 0).any():
        raise Sim2obsValueError("scaling values must be positive", value=float(a.min()))
    return np.clip(_log_curve(a, np.clip(f, 0.0, 1.0)), 0.0, 1.0)


def _centre_slices(h: int, w: int, half: int) -> tuple[slice, slice]:
    cy, cx = h // 2, w // 2
    return slice(cy - half, cy + half + 1), slice(cx - half, cx + half + 1)


def image_statistics(images: np.ndarray, names: Sequence[str] = STAT_NAMES) -> dict[str, np.ndarray]:
    """Per-image statistics (§3.2): ``sum``, ``mean``, ``max``, ``min``, ``std`` over all pixels,
    ``centre`` (pixel [H//2, W//2]) and ``centre5`` (mean of the 5 x 5 pixels around it)."""
    a = _as_stack(images)
    h, w = a.shape[1:]
    ys, xs = _centre_slices(h, w, 2)
    every = {"sum": lambda: a.sum(axis=(1, 2)), "mean": lambda: a.mean(axis=(1, 2)),
             "max": lambda: a.max(axis=(1, 2)), "min": lambda: a.min(axis=(1, 2)),
             "std": lambda: a.std(axis=(1, 2)), "centre": lambda: a[:, h // 2, w // 2],
             "centre5": lambda: a[:, ys, xs].mean(axis=(1, 2))}
    return {k: np.asarray(every[k](), dtype=np.float64) for k in names}


def flux_to_luminosity(distance_mpc: np.ndarray, band: str = BAND) -> np.ndarray:
    """Solar luminosities per nanomaggy at luminosity distance ``distance_mpc`` (AB system, no
    K-correction: the convention of the catalogue's ``lum_<band>``): 4πD² times the flux, in L_sun."""
    from sim2obs.simgen.population import BAND_DATA

    d_pc = np.asarray(distance_mpc, dtype=np.float64) * 1e6
    msun = BAND_DATA[band]["msun_ab"]
    return 10.0 ** (-0.4 * (22.5 - msun)) * (d_pc / 10.0) ** 2


def resize_images(x: Tensor, size: int | None) -> Tensor:
    """``(N, C, H, W)`` images to ``size`` x ``size`` (Dobbels et al.: pixel-area interpolation for
    shrinking, bicubic for zooming), clipped to [0, 1]; ``None`` or the same size: unchanged."""
    from torch.nn import functional as F

    if size is None or (x.shape[-2] == size and x.shape[-1] == size):
        return x
    if size < min(x.shape[-2:]):
        return F.interpolate(x, size=(size, size), mode="area")
    return F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp_(0.0, 1.0)


# --------------------------------------------------------------------------------------------
# Losses, estimators
# --------------------------------------------------------------------------------------------
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
    from scipy.optimize import minimize

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


def _floored(y: np.ndarray, err: np.ndarray) -> np.ndarray:
    return M.floored_error(y, err, M.MIN_RELATIVE_ERROR)


def _fit_lightgbm(params: dict[str, Any], rounds: int, patience: int, x_train: np.ndarray, y_train: np.ndarray,
                  e_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, e_val: np.ndarray,
                  names: Sequence[str], out_dir: Path, seed: int, threads: int):
    """LightGBM minimising ℒ1 (objective ``l1`` with weights 1/ΔΥ, so Σ w|ŷ − y| = N ℒ1), stopping
    early on the validation ℒ1; writes the run artefacts of :mod:`sim2obs.models.engine`
    (``metrics.jsonl``, ``val_curve.png``, ``run.json``) plus ``model.txt``. Returns the booster
    and its record."""
    import lightgbm as lgb

    from sim2obs.models.engine import plot_curves, record_run, write_metrics

    out_dir.mkdir(parents=True, exist_ok=True)
    full = {"objective": "l1", "metric": "None", "verbosity": -1, "seed": int(seed), "deterministic": True,
            "force_col_wise": True, "num_threads": int(threads), **dict(params)}
    clean = [n.replace(" ", "_") for n in names]
    dtrain = lgb.Dataset(x_train, y_train, weight=1.0 / e_train, feature_name=clean, free_raw_data=False)
    dval = lgb.Dataset(x_val, y_val, weight=1.0 / e_val, reference=dtrain, free_raw_data=False)

    def l1(preds: np.ndarray, data) -> tuple[str, float, bool]:
        return "l1", float(np.mean(data.get_weight() * np.abs(preds - data.get_label()))), False

    evals: dict = {}
    t0 = time.perf_counter()
    callbacks = [lgb.record_evaluation(evals)]
    if patience > 0:
        callbacks.append(lgb.early_stopping(patience, first_metric_only=True, verbose=False))
    booster = lgb.train(full, dtrain, num_boost_round=int(rounds), valid_sets=[dtrain, dval],
                        valid_names=["train", "val"], feval=l1, callbacks=callbacks)
    wall = time.perf_counter() - t0
    val_curve = evals["val"]["l1"]
    best = int(booster.best_iteration) if booster.best_iteration > 0 else len(val_curve)
    history = [{"epoch": i + 1, "train_loss": float(tr), "val_loss": float(va), "lr": full.get("learning_rate")}
               for i, (tr, va) in enumerate(zip(evals["train"]["l1"], val_curve))]
    write_metrics(out_dir, history)
    plot_curves(history, out_dir / "val_curve.png", best)
    booster.save_model(str(out_dir / "model.txt"), num_iteration=best)
    identity = {"estimator": {"_target_": "lightgbm.train", **full, "num_boost_round": int(rounds)},
                "trainer": {"early_stopping_patience": int(patience)}, "loss": "weighted l1 (Dobbels eq. 2)",
                "features": list(names)}
    record = record_run(out_dir, model_name="LightGBM", target="lightgbm.Booster", config=identity,
                        config_hash=stable_hash(identity), wall_seconds=wall, size={"n_estimators": best},
                        results={"kind": "estimator", "epochs_run": len(history), "best_epoch": best,
                                 "best_val_loss": float(val_curve[best - 1]),
                                 "stopped_early": len(history) < int(rounds), "n_features": len(names)})
    return booster, record


def _predict_booster(booster, x: np.ndarray) -> np.ndarray:
    best = booster.best_iteration if booster.best_iteration > 0 else None
    return np.asarray(booster.predict(x, num_iteration=best), dtype=np.float64)


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


# --------------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------------
def build_morphology_net(spec: dict[str, Any], n_outputs: int, head: str = "regression") -> tuple[nn.Module, nn.Module]:
    """``(net, backbone)``: ``backbone`` is the CNN built from ``spec`` with one g-band input channel
    and ``n_outputs`` outputs; ``net`` is the backbone for ``head="regression"``, or backbone → ReLU →
    :class:`~sim2obs.models.gz2.HierarchicalProbabilityNorm` for ``head="gz2"`` (the paper's GZ2
    probability layer; ``n_outputs`` must then be 37)."""
    from sim2obs.models import build_model

    cfg = _with_task_arguments(spec, n_outputs)
    backbone = build_model(cfg)
    if head == "regression":
        return backbone, backbone
    from sim2obs.models.gz2 import HierarchicalProbabilityNorm

    return nn.Sequential(backbone, nn.ReLU(), HierarchicalProbabilityNorm()), nn.Sequential(backbone, nn.ReLU())


def _with_task_arguments(spec: dict[str, Any], n_outputs: int) -> dict[str, Any]:
    """``spec`` with the task's ``in_channels`` (1) and ``num_outputs`` for those of these keys it
    names (a user's class gets only its own arguments)."""
    values = {"in_channels": 1, "num_outputs": int(n_outputs)}
    return {**spec, **{k: v for k, v in values.items() if k in spec}}


class MLRatioNet(nn.Module):
    """CNN 4 (§3.1): a (morphology-pretrained) backbone followed by a dense-1 layer predicting M/L.

    The dense layer's output is read as ``centre + scale * z`` with fixed ``centre`` and ``scale``
    (the training set's weighted median and spread of M/L): the same function class as a plain
    dense-1 layer, but Adam's ~lr-sized steps then move the prediction by a fraction of the M/L
    spread instead of by ~lr solar units, which a short CPU run could not overcome.
    """

    def __init__(self, backbone: nn.Module, n_features: int, centre: float = 0.0, scale: float = 1.0):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(int(n_features), 1)
        nn.init.zeros_(self.head.bias)
        self.register_buffer("centre", torch.tensor(float(centre)))
        self.register_buffer("scale", torch.tensor(float(scale)))

    def forward(self, x: Tensor) -> Tensor:
        return self.centre + self.scale * self.head(self.backbone(x))


class _Extract(nn.Module):
    """Outputs of ``net``, plus (``inner``) the input of its last dense layer, as one matrix. The
    hook lives only during a forward pass (a copied network carries no stale hook)."""

    def __init__(self, net: nn.Module, inner: bool):
        super().__init__()
        self.net = net
        self.inner = inner
        self._last = None
        if inner:
            linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
            if not linears:
                raise Sim2obsValueError("inner_features needs a network with a dense (Linear) layer")
            self._last = linears[-1]

    def forward(self, x: Tensor) -> Tensor:
        if self._last is None:
            return self.net(x).float().flatten(1)
        captured: list[Tensor] = []
        handle = self._last.register_forward_hook(lambda mod, args, out: captured.append(args[0]))
        try:
            out = self.net(x).float().flatten(1)
        finally:
            handle.remove()
        return torch.cat([out, captured[-1].float().flatten(1)], dim=1)


# --------------------------------------------------------------------------------------------
# The task
# --------------------------------------------------------------------------------------------
def _paper() -> dict[str, PaperResult]:
    return {
        "best_constant": PaperResult(6.52, "ℒ1-optimal constant; Table 1 notes"),
        "gbm_lg_z": PaperResult(4.52, "reference GBM on L_g and z; §4.1, Fig. 4 top (RMSLE 0.227 dex)"),
        "gi_power_law": PaperResult(1.90, "g − i power law fitted by ℒ1; §4.3, Fig. 7, Table B.1 (RMSLE 0.084)"),
        "gbm_gi": PaperResult(1.26, "GBM on z, L_g, L_i, L_g/L_i; §4.3, Fig. 7"),
        "gbm_gi_morph": PaperResult(1.12, "g + i + morph GBM; §4.3, Fig. 7, Table B.1 (RMSLE 0.053)"),
        "cnn_gbm": PaperResult(2.29, "g + morph: CNNs + GBM; §4.1, Fig. 4 bottom, Table 1, Table B.1 "
                               "(RMSLE 0.124 dex)"),
    }


@TASKS.register("ml_ratio")
class MLRatioTask(Task):
    """Stellar M/L_g from a g-band image, redshift and pixel size (Dobbels et al. 2019)."""

    metadata = TaskMetadata(
        name="ml_ratio",
        version="1.0",
        description="stellar mass-to-light ratio M/L_g from a log-scaled g-band image plus redshift and pixel "
                    "size: morphology CNNs + LightGBM, with colour baselines",
        citation="Dobbels, W., Baes, M., Viaene, S., et al. 2019, A&A 624, A102: Morphology assisted galaxy "
                 "mass-to-light predictions using deep learning",
        inputs=("image", "redshift", "pixel_scale_kpc", "luminosity_distance_mpc", "lum_g", "lum_i", "mag_g",
                "mag_i"),
        targets=(TARGET,),
        target_units=("solMass / solLum",),
        main_score="l1",
        metrics=("l1", "l2", "rmsle", "median_l1", "frac_within_0.15dex", "bias_mean", "bias_median"),
        paper=_paper(),
    )
    config_class = MLRatioConfig

    def __init__(self, *args: Any, **kwargs: Any):
        self._cache: dict[str, Any] = {}
        super().__init__(*args, **kwargs)

    # -- config -----------------------------------------------------------------------------
    def validate_config(self) -> None:
        super().validate_config()
        from sim2obs.models.engine import load_trainer_config, validate_config

        c = self.config
        p = f"task.{self.name}"
        if c.eval_split in ("train", "val"):
            raise ConfigError(f"{p}.eval_split", "train and val fit and early-stop every method; evaluate on "
                              "another split", value=c.eval_split)
        validate_config(load_trainer_config(c.trainer))
        if c.morphology_head not in ("regression", "gz2"):
            raise ConfigError(f"{p}.morphology_head", "unknown head", value=c.morphology_head,
                              allowed=["regression", "gz2"])
        if not c.morphology_cnns:
            raise ConfigError(f"{p}.morphology_cnns", "at least one morphology CNN is needed")
        if c.ml_cnn_from is not None and c.ml_cnn_from not in c.morphology_cnns:
            raise ConfigError(f"{p}.ml_cnn_from", "must name one of morphology_cnns (or be null)",
                              value=c.ml_cnn_from, allowed=sorted(c.morphology_cnns))
        if not c.morphology_labels:
            raise ConfigError(f"{p}.morphology_labels", "at least one morphology label is needed")
        extra = [x for x in c.log_labels if x not in c.morphology_labels]
        if extra:
            raise ConfigError(f"{p}.log_labels", "must be among morphology_labels", value=extra)
        if not 0.0 < c.cnn_train_fraction <= 1.0:
            raise ConfigError(f"{p}.cnn_train_fraction", "must lie in (0, 1]", value=c.cnn_train_fraction)
        if not 0.0 < c.noise_level < 1.0:
            raise ConfigError(f"{p}.noise_level", "must lie in (0, 1)", value=c.noise_level)
        for key in ("lightgbm_rounds", "importance_repeats", "sigma_clip_iters"):
            if int(getattr(c, key)) < 1:
                raise ConfigError(f"{p}.{key}", "must be at least 1", value=getattr(c, key))
        for key in ("early_stopping_rounds", "gi_morph_top_features", "lightgbm_threads"):
            if int(getattr(c, key)) < 0:
                raise ConfigError(f"{p}.{key}", "must be >= 0", value=getattr(c, key))
        for name, spec in c.morphology_cnns.items():
            model = self._cnn_model(spec)
            if "_target_" not in model:
                raise ConfigError(f"{p}.morphology_cnns.{name}.model", "needs a _target_", value=model)
            if c.morphology_head == "regression" and model.get("output_relu"):
                raise ConfigError(f"{p}.morphology_cnns.{name}.model.output_relu", "standardised structural "
                                  "labels can be negative: use output_relu: false with the regression head",
                                  value=True)
            size = spec.image_size if spec.image_size is not None else c.image_size
            if size is not None and int(size) < 8:
                raise ConfigError(f"{p}.morphology_cnns.{name}.image_size", "must be at least 8", value=size)

    def _cnn_model(self, spec: CNNSpec) -> dict[str, Any]:
        return dict(spec.model if spec.model is not None else self.config.model)

    # -- data ---------------------------------------------------------------------------------
    def check_set(self, gs) -> None:
        super().check_set(gs)
        bands = gs.schema.stack("image").channels
        if BAND not in bands:
            raise DataFormatError(gs.path, "image", f"task {self.name} needs the g band; the stack has {list(bands)}")
        for name in self._morphology_columns():
            if name not in gs.schema.column_names:
                raise DataFormatError(gs.path, name, f"task {self.name} uses this column as a morphology label")

    def _morphology_columns(self) -> list[str]:
        if self.config.morphology_head == "gz2":
            from sim2obs.models.gz2 import gz2_tree

            return gz2_tree().column_names()
        return list(self.config.morphology_labels)

    def label_columns(self) -> tuple[str, ...]:
        """Targets, their errors, and every catalogue column that is not an observable: M/L in
        every band, stellar mass, the structural parameters (the morphology CNNs' training labels),
        attenuation, colours of the components, ... Only photometry, redshift, distance and pixel
        sizes may be features."""
        gs = self.galaxy_set
        labels = [c for c in gs.schema.column_names
                  if c not in OBSERVABLE_COLUMNS and not c.startswith(OBSERVABLE_PREFIXES)]
        return tuple(dict.fromkeys([*super().label_columns(), *labels, *self._morphology_columns()]))

    def _training_columns(self, split: str, columns: Sequence[str]) -> np.ndarray:
        """Label columns of a training or validation split (the evaluation split is refused)."""
        if split == self.config.eval_split:
            raise Sim2obsValueError(f"labels of the evaluation split {split!r} are held out", value=split)
        gs = self.galaxy_set
        return np.stack([gs.column(c, split) for c in columns], axis=1).astype(np.float64)

    def target_errors(self, split: str) -> np.ndarray:
        """ΔΥ of a training or validation split, floored at 5 % (the weights of ℒ1)."""
        y = self.labels(split)[:, 0]
        err = self._training_columns(split, [self.galaxy_set.schema.column(TARGET).error])[:, 0]
        return _floored(y, err)

    # -- image features (§2.2, §3.2) ------------------------------------------------------------
    def image_features(self, split: str) -> dict[str, Any]:
        """Per split: ``ids``; the scaled images ``scaled`` (N, H, W) in [0, 1]; the scaling values
        ``a`` and input noise levels; ``lum``/``flux``/``log`` statistics (name -> (N,)).
        Computed from the g-band images and observable columns only."""
        key = f"image:{split}"
        if key in self._cache:
            return self._cache[key]
        c = self.config
        gs = self.galaxy_set
        band = gs.schema.stack("image").channels.index(BAND)
        index = gs.indices(split)
        parts: dict[str, list] = {k: [] for k in ("scaled", "a", "noise", "reached", "flux", "log")}
        for start in range(0, len(index), 2048):  # chunks bound the memory of large sets
            raw = gs.images("image", indices=index[start:start + 2048])[:, band].astype(np.float64)
            unit = rescale_unit(raw)
            a, noise, reached = fit_scaling_value(unit, c.noise_level, c.sigma_clip, c.sigma_clip_iters)
            scaled = log_scale(unit, a)
            for k, v in (("scaled", scaled.astype(np.float32)), ("a", a), ("noise", noise), ("reached", reached),
                         ("flux", image_statistics(raw)), ("log", image_statistics(scaled, LOG_STAT_NAMES))):
                parts[k].append(v)
        stamp = gs.schema.stack("image").shape[-1]
        flux = {k: np.concatenate([p[k] for p in parts["flux"]]) for k in STAT_NAMES}
        factor = flux_to_luminosity(self.features(split, ["luminosity_distance_mpc"])[:, 0])
        out = {"ids": gs.column("id", split), "scaled": np.concatenate(parts["scaled"]),
               **{k: np.concatenate(parts[k]) for k in ("a", "noise", "reached")},
               "flux": flux, "lum": {k: v * factor for k, v in flux.items()},
               "log": {k: np.concatenate([p[k] for p in parts["log"]]) for k in LOG_STAT_NAMES},
               "size_px": np.full(len(index), float(stamp))}
        self._cache[key] = out
        return out

    def spec(self):
        """The first morphology CNN's inputs: ``{"image": (1, S, S)}`` log-scaled g band at its
        ``image_size`` (or ``image_size``); outputs: one per morphology label (standardised)."""
        from sim2obs.models.conformance import TaskSpec

        c = self.config
        first = next(iter(c.morphology_cnns.values()))
        side = first.image_size or c.image_size or (int(self.galaxy_set.schema.stack("image").height)
                                                    if "path" in c.data else int(self.simgen_config()["stamp"]))
        n = len(self._morphology_columns())
        return TaskSpec(input_shapes={"image": (1, int(side), int(side))}, n_targets=n, n_outputs=n)

    def model_checks(self) -> list[tuple[str, Any, Any]]:
        """Every morphology CNN, as ``cnn_gbm`` builds it."""
        if "cnn_gbm" not in {m.name for m in self.selected_methods()}:
            return []
        c, spec, out = self.config, self.spec(), []
        base = self.config.image_size
        for name, cnn in c.morphology_cnns.items():
            side = int(cnn.image_size or base or spec.stamp)
            s = replace(spec, input_shapes={"image": (1, side, side)})
            key = f"morphology_cnns.{name}.model" if cnn.model is not None else "model"
            out.append((key, _with_task_arguments(self._cnn_model(cnn), spec.n_targets), s))
        return out

    def split_inputs(self, split: str) -> dict[str, np.ndarray]:
        """``{"image": (N, 1, H, W)}`` float32 log-scaled g-band images in [0, 1] (§2.2; before the
        resize to a CNN's ``image_size``), ``{"features": (N, F)}`` the luminosity, image and
        distance statistics the LightGBM methods read (names: :meth:`_image_groups`)."""
        groups = self._image_groups(split)
        feats = np.concatenate([groups[g][0] for g in ("luminosity", "distance")], axis=1)
        return {"image": self.image_features(split)["scaled"][:, None], "features": feats.astype(np.float64)}

    def _image_groups(self, split: str) -> dict[str, tuple[np.ndarray, list[str]]]:
        """Feature blocks of the image statistics: ``luminosity`` (luminosity statistics, image
        size, scaling value, log-image statistics), ``flux`` (the same with flux statistics: the
        no-distance replacement of Table 1) and ``distance`` (redshift, pixel size in kpc)."""
        f = self.image_features(split)
        common = ([f["size_px"], np.log10(f["a"])] + [f["log"][k] for k in LOG_STAT_NAMES],
                  ["image_size_px", "log_scaling_value"] + [f"log_image_{k}" for k in LOG_STAT_NAMES])
        lum = np.stack([f["lum"][k] for k in STAT_NAMES] + common[0], axis=1)
        flux = np.stack([f["flux"][k] for k in STAT_NAMES] + common[0], axis=1)
        return {"luminosity": (lum, [f"lum_{k}" for k in STAT_NAMES] + common[1]),
                "flux": (flux, [f"flux_{k}" for k in STAT_NAMES] + common[1]),
                "distance": (self.features(split, ["redshift", "pixel_scale_kpc"]), ["redshift", "pixel_scale_kpc"])}

    # -- morphology CNNs (§3.1) ---------------------------------------------------------------
    def _feature_key(self) -> str:
        c = self.config
        from dataclasses import asdict

        return stable_hash({"data": self.galaxy_set.content_hash, "version": self.metadata.version,
                            "model": c.model, "trainer": {k: v for k, v in c.trainer.items() if k != "progress"},
                            "cnns": {k: asdict(v) for k, v in c.morphology_cnns.items()},
                            "ml_cnn": [c.ml_cnn_from, c.ml_cnn_epochs, c.ml_cnn_lr], "head": c.morphology_head,
                            "labels": self._morphology_columns(), "log_labels": list(c.log_labels),
                            "fraction": c.cnn_train_fraction, "image_size": c.image_size,
                            "scaling": [c.noise_level, c.sigma_clip, c.sigma_clip_iters], "seed": c.seed}, 12)

    def _morphology_targets(self, split: str) -> np.ndarray:
        cols = self._morphology_columns()
        y = self._training_columns(split, cols)
        if self.config.morphology_head == "gz2":  # weighted vote fractions -> unconditional probabilities
            from sim2obs.models.gz2 import gz2_tree

            return gz2_tree().to_unconditional(torch.as_tensor(y)).numpy()
        for j, name in enumerate(cols):
            if name in self.config.log_labels:
                if (y[:, j] <= 0).any():
                    raise DataFormatError(self.galaxy_set.path, name, "log_labels must be positive")
                y[:, j] = np.log10(y[:, j])
        return y

    def cnn_features(self, root: Path, log=print) -> dict[str, Any]:
        """Train the morphology CNNs and CNN 4 (or reuse them) and extract their features for every
        split. Cached in memory and on disk under ``root/features-<key>/``. Returns
        ``{"names": {group: [...]}, split: {group: (N, F)}}`` with groups ``cnn1-3`` and ``cnn4``."""
        key = self._feature_key()
        if ("cnn:" + key) in self._cache:
            return self._cache["cnn:" + key]
        folder = Path(root) / f"features-{key}"
        done = folder / "features.npz"
        splits = ("train", "val", self.config.eval_split)
        if done.exists():
            with np.load(done, allow_pickle=False) as z:
                names = json.loads(str(z["names"]))
                out = {"names": names}
                for s in splits:
                    if not np.array_equal(z[f"ids_{s}"], self.split_ids(s)):
                        raise DataFormatError(done, f"ids_{s}", "cached features do not match the set's ids")
                    out[s] = {g: z[f"{s}__{g}"] for g in names}
            self._cache["cnn:" + key] = out
            return out
        folder.mkdir(parents=True, exist_ok=True)
        out = self._train_cnns(folder, splits, log)
        arrays = {"names": np.asarray(json.dumps(out["names"]))}
        for s in splits:
            arrays[f"ids_{s}"] = self.split_ids(s)
            for g, x in out[s].items():
                arrays[f"{s}__{g}"] = x
        atomic_write(done, lambda f: np.savez(f, **arrays))
        self._cache["cnn:" + key] = out
        return out

    def _images_tensor(self, split: str, size: int | None) -> Tensor:
        x = torch.from_numpy(self.image_features(split)["scaled"])[:, None]
        return resize_images(x, size).contiguous()

    def _train_cnns(self, folder: Path, splits: Sequence[str], log) -> dict[str, Any]:
        from sim2obs.models.engine import TensorDictDataset, Trainer, load_trainer_config

        c = self.config
        base_cfg = load_trainer_config(c.trainer)
        ids = {s: torch.as_tensor(self.split_ids(s), dtype=torch.int64) for s in splits}
        n_train = len(ids["train"])
        rng = np.random.default_rng(c.seed)
        n_sub = max(1, int(round(c.cnn_train_fraction * n_train)))
        sub = np.sort(rng.choice(n_train, size=n_sub, replace=False))
        y_tr = self._morphology_targets("train")[sub]
        y_va = self._morphology_targets("val")
        if c.morphology_head == "regression":
            mu, sd = y_tr.mean(axis=0), y_tr.std(axis=0)
            sd = np.where(sd > 0, sd, 1.0)
            y_tr, y_va = (y_tr - mu) / sd, (y_va - mu) / sd
        n_out = y_tr.shape[1]
        label_names = self._morphology_columns()
        groups: dict[str, dict[str, list]] = {s: {"cnn1-3": [], "cnn4": []} for s in splits}
        names: dict[str, list[str]] = {"cnn1-3": [], "cnn4": []}
        nets: dict[str, nn.Module] = {}
        sizes: dict[str, int | None] = {}
        hashes: dict[str, Any] = {}
        for name, spec in c.morphology_cnns.items():
            size = spec.image_size if spec.image_size is not None else c.image_size
            sizes[name] = size
            images = {s: self._images_tensor(s, size) for s in splits}
            model_cfg = self._cnn_model(spec)
            net, backbone = build_morphology_net(model_cfg, n_out, c.morphology_head)
            cfg = copy.deepcopy(base_cfg)
            cfg.seed = int(c.seed)
            if spec.epochs is not None:
                cfg.epochs = int(spec.epochs)
            cfg.progress = bool(self.progress)  # bars on a terminal, epoch lines in logs
            trainer = Trainer(cfg, loss=nn.MSELoss(), callbacks=[] if cfg.progress else [self.epoch_logger(name, cfg.epochs)])
            t0 = time.perf_counter()
            train_ds = TensorDictDataset({"image": images["train"][sub]}, torch.as_tensor(y_tr, dtype=torch.float32),
                                         ids["train"][sub])
            val_ds = TensorDictDataset({"image": images["val"]}, torch.as_tensor(y_va, dtype=torch.float32), ids["val"])
            fit = trainer.fit(net, train_ds, val_ds, folder / name,
                              model_config={"model": model_cfg, "n_outputs": n_out, "head": c.morphology_head,
                                            "labels": label_names, "image_size": size})
            log(f"    {name}: morphology CNN, best val L2 {fit.best_val_loss:.4g} at epoch {fit.best_epoch} "
                f"({time.perf_counter() - t0:.1f} s)")
            extractor = _Extract(net, spec.inner_features)
            n_inner = 0
            for s in splits:
                x = self._predict_matrix(trainer, extractor, images[s], ids[s])
                groups[s]["cnn1-3"].append(x)
                n_inner = x.shape[1] - n_out
            names["cnn1-3"] += [f"{name}/{lab}" for lab in label_names]
            names["cnn1-3"] += [f"{name}/inner{j:04d}" for j in range(n_inner)]
            nets[name] = backbone
            hashes[name] = fit.record.get("config_hash")
        if c.ml_cnn_from is not None:
            self._train_cnn4(folder, splits, nets[c.ml_cnn_from], sizes[c.ml_cnn_from], n_out, sub, ids, base_cfg,
                             groups, names, log, hashes[c.ml_cnn_from])
        out: dict[str, Any] = {"names": {g: n for g, n in names.items() if n}}
        for s in splits:
            out[s] = {g: np.concatenate(v, axis=1) for g, v in groups[s].items() if v}
        return out

    def _train_cnn4(self, folder, splits, backbone, size, n_out, sub, ids, base_cfg, groups, names, log,
                    pretrained: Any) -> None:
        from sim2obs.models.engine import TensorDictDataset, Trainer

        c = self.config
        images = {s: self._images_tensor(s, size) for s in splits}
        y = {s: np.stack([self.labels(s)[:, 0], self.target_errors(s)], axis=1) for s in ("train", "val")}
        centre = weighted_median(y["train"][sub, 0], 1.0 / y["train"][sub, 1])
        scale = float(np.std(y["train"][sub, 0])) or 1.0
        net = MLRatioNet(copy.deepcopy(backbone), n_out, centre, scale)
        cfg = copy.deepcopy(base_cfg)
        cfg.seed = int(c.seed) + 1
        if c.ml_cnn_epochs is not None:
            cfg.epochs = int(c.ml_cnn_epochs)
        if c.ml_cnn_lr is not None:
            cfg.lr = float(c.ml_cnn_lr)
        cfg.progress = bool(self.progress)
        trainer = Trainer(cfg, loss=WeightedL1Loss(), callbacks=[] if cfg.progress else [self.epoch_logger("cnn4", cfg.epochs)])
        t0 = time.perf_counter()
        train_ds = TensorDictDataset({"image": images["train"][sub]},
                                     torch.as_tensor(y["train"][sub], dtype=torch.float32), ids["train"][sub])
        val_ds = TensorDictDataset({"image": images["val"]}, torch.as_tensor(y["val"], dtype=torch.float32), ids["val"])
        fit = trainer.fit(net, train_ds, val_ds, folder / "cnn4",
                          model_config={"cnn4_from": c.ml_cnn_from, "pretrained_run": pretrained,
                                        "image_size": size})
        log(f"    cnn4: retrained on M/L, best val ℒ1 {fit.best_val_loss:.4g} at epoch {fit.best_epoch} "
            f"({time.perf_counter() - t0:.1f} s)")
        extractor = _Extract(net.backbone, inner=False)
        for s in splits:
            groups[s]["cnn4"].append(self._predict_matrix(trainer, extractor, images[s], ids[s]))
        names["cnn4"] += [f"cnn4/f{j:02d}" for j in range(n_out)]

    @staticmethod
    def _predict_matrix(trainer, extractor: nn.Module, images: Tensor, ids: Tensor) -> np.ndarray:
        from sim2obs.models.engine import TensorDictDataset

        ds = TensorDictDataset({"image": images}, torch.zeros(len(images), 1), ids)
        pred = trainer.predict(extractor, ds)
        if not np.array_equal(pred["ids"], ids.numpy()):
            raise RuntimeError("feature extraction lost the object order")
        return pred["predictions"].astype(np.float64)

    # -- feature matrices -----------------------------------------------------------------------
    def _blocks(self, workdir: Path, log) -> dict[str, dict[str, tuple[np.ndarray, list[str]]]]:
        """Every feature block per split: cnn1-3, cnn4, luminosity, flux, distance."""
        cnn = self.cnn_features(self.shared_dir(workdir), log)
        out = {}
        for s in ("train", "val", self.config.eval_split):
            blocks = self._image_groups(s)
            for g, names in cnn["names"].items():
                blocks[g] = (cnn[s][g], list(names))
            out[s] = blocks
        return out

    @staticmethod
    def _assemble(blocks: dict[str, tuple[np.ndarray, list[str]]], groups: Sequence[str]):
        parts = [blocks[g] for g in groups if g in blocks]
        x = np.concatenate([p[0] for p in parts], axis=1)
        names = [n for p in parts for n in p[1]]
        group_of = [g for g in groups if g in blocks for _ in blocks[g][1]]
        return x, names, group_of

    def _gbm(self, workdir: Path, x: dict[str, np.ndarray], names: Sequence[str], tag: str = "gbm"):
        """Fit the task's LightGBM on train (early stopping on val); drop features constant on the
        training set first (dead neurons, §3.2). Returns (booster, kept column indices, record)."""
        c = self.config
        keep = np.flatnonzero(np.ptp(x["train"], axis=0) > 0)
        if len(keep) == 0:
            raise Sim2obsValueError("every feature is constant on the training set", value=list(names)[:5])
        y = {s: self.labels(s)[:, 0] for s in ("train", "val")}
        e = {s: self.target_errors(s) for s in ("train", "val")}
        booster, record = _fit_lightgbm(c.lightgbm, c.lightgbm_rounds, c.early_stopping_rounds,
                                        x["train"][:, keep], y["train"], e["train"], x["val"][:, keep], y["val"],
                                        e["val"], [names[j] for j in keep], workdir / tag, c.seed,
                                        c.lightgbm_threads)
        return booster, keep, record

    def _positive(self, values: np.ndarray) -> tuple[np.ndarray, int]:
        """Predictions floored at 1e-3 (an M/L is positive; logarithmic metrics need it)."""
        clipped = int((values < 1e-3).sum())
        return np.maximum(values, 1e-3), clipped

    def _output(self, values: np.ndarray, info: dict[str, Any]) -> MethodOutput:
        split = self.config.eval_split
        values, clipped = self._positive(values)
        info = {**info, "n_clipped_predictions": clipped}
        return MethodOutput(Predictions(self.split_ids(split), values[:, None], self.targets), info)

    # -- methods ------------------------------------------------------------------------------
    def methods(self) -> list[Method]:
        c = self.config
        return [
            Method("best_constant", "baseline", "ℒ1-optimal constant: 1/ΔΥ-weighted median of the training M/L",
                   self._run_constant, {"kind": "weighted_median"}, deterministic=True),
            Method("gbm_lg_z", "baseline", "LightGBM on L_g and redshift (the paper's reference method, §4.1)",
                   partial(self._run_catalogue_gbm, names=LG_Z), {"kind": "lightgbm", "features": LG_Z}),
            Method("gi_power_law", "baseline", "log M/L_g = a + b (g − i), fitted by ℒ1 on the training set (§4.3)",
                   self._run_power_law, {"kind": "power_law", "colour": ["mag_g", "mag_i"]}),
            Method("gbm_gi", "baseline", "LightGBM on redshift, L_g, L_i, L_g/L_i (§4.3)",
                   partial(self._run_catalogue_gbm, names=GI), {"kind": "lightgbm", "features": GI}),
            Method("gbm_gi_morph", "baseline", "g + i + morph: LightGBM on the image features plus L_g, L_i, "
                   "L_g/L_i (§4.3)", self._run_gi_morph,
                   {"kind": "lightgbm", "groups": list(GROUPS), "catalogue": ["lum_g", "lum_i", "lum_g/lum_i"],
                    "top_features": c.gi_morph_top_features}),
            Method("cnn_gbm", "model", "g + morph: morphology CNNs on the log-scaled g image + luminosity "
                   "statistics + redshift + pixel size, into LightGBM (the paper's pipeline)", self._run_model,
                   {"kind": "cnn+lightgbm", "groups": list(GROUPS), "ablation": c.ablation}),
        ]

    def _catalogue(self, split: str, names: Sequence[str]) -> np.ndarray:
        cols = []
        for n in names:
            if "/" in n:
                a, b = n.split("/")
                x = self.features(split, [a, b])
                cols.append(x[:, 0] / x[:, 1])
            else:
                cols.append(self.features(split, [n])[:, 0])
        return np.stack(cols, axis=1)

    def _run_constant(self, task: Task, workdir: Path) -> MethodOutput:
        y = self.labels("train")[:, 0]
        value = weighted_median(y, 1.0 / self.target_errors("train"))
        n = len(self.split_ids(self.config.eval_split))
        return self._output(np.full(n, value), {"model": "constant", "value": value, "n_parameters": 1})

    def _run_catalogue_gbm(self, task: Task, workdir: Path, names: Sequence[str]) -> MethodOutput:
        names = list(names)
        x = {s: self._catalogue(s, names) for s in ("train", "val", self.config.eval_split)}
        booster, keep, record = self._gbm(workdir, x, names)
        pred = _predict_booster(booster, x[self.config.eval_split][:, keep])
        return self._output(pred, {"model": "LightGBM", "_target_": "lightgbm.Booster", "features": names,
                                   "n_estimators": record["n_estimators"], "best_val_l1": record["best_val_loss"]})

    def _run_power_law(self, task: Task, workdir: Path) -> MethodOutput:
        colour = {s: self._catalogue(s, ["mag_g"])[:, 0] - self._catalogue(s, ["mag_i"])[:, 0]
                  for s in ("train", "val", self.config.eval_split)}
        y = self.labels("train")[:, 0]
        a, b = fit_power_law(colour["train"], y, self.target_errors("train"))
        val = M.l1(10.0 ** (a + b * colour["val"]), self.labels("val")[:, 0], self.target_errors("val"))
        pred = 10.0 ** (a + b * colour[self.config.eval_split])
        return self._output(pred, {"model": "power law log10 M/L = a + b (g - i)", "a": a, "b": b,
                                   "n_parameters": 2, "val_l1": val})

    def _run_gi_morph(self, task: Task, workdir: Path) -> MethodOutput:
        blocks = self._blocks(workdir, print)
        split = self.config.eval_split
        extra = ["lum_g", "lum_i", "lum_g/lum_i"]
        x, names = {}, None
        for s in ("train", "val", split):
            xi, names, _ = self._assemble(blocks[s], GROUPS)
            x[s] = np.concatenate([xi, self._catalogue(s, extra)], axis=1)
        names = names + extra
        booster, keep, record = self._gbm(workdir, x, names, "gbm_all")
        info = {"model": "LightGBM", "_target_": "lightgbm.Booster", "n_features_all": len(keep)}
        k = int(self.config.gi_morph_top_features)
        if 0 < k < len(keep):  # §4.3: retrain on the 50 features used the most
            counts = booster.feature_importance("split")
            top = keep[np.argsort(-counts, kind="stable")[:k]]
            x = {s: v[:, top] for s, v in x.items()}
            names = [names[j] for j in top]
            booster, keep, record = self._gbm(workdir, x, names, "gbm_top")
            info["top_features"] = names
        pred = _predict_booster(booster, x[split][:, keep])
        info.update(n_features=len(keep), n_estimators=record["n_estimators"], best_val_l1=record["best_val_loss"])
        return self._output(pred, info)

    def _run_model(self, task: Task, workdir: Path) -> MethodOutput:
        split = self.config.eval_split
        t0 = time.perf_counter()
        blocks = self._blocks(workdir, print)
        t_features = time.perf_counter() - t0
        x, names, group_of = {}, None, None
        for s in ("train", "val", split):
            x[s], names, group_of = self._assemble(blocks[s], GROUPS)
        booster, keep, record = self._gbm(workdir, x, names)
        pred = _predict_booster(booster, x[split][:, keep])
        scaling = self.image_features("train")
        self._write_importances(workdir, booster, x["val"][:, keep], [names[j] for j in keep],
                                [group_of[j] for j in keep])
        if self.config.plots:
            self._plot_scaled_examples(workdir / "scaled_examples.png")
        (workdir / "ablation" / "manifest.json").unlink(missing_ok=True)
        if self.config.ablation:
            self._write_ablation(workdir, blocks, pred, record)
        return self._output(pred, {"model": "CNNs + LightGBM", "_target_": "lightgbm.Booster",
                                   "n_features": len(keep), "n_estimators": record["n_estimators"],
                                   "best_val_l1": record["best_val_loss"], "feature_seconds": t_features,
                                   "cnns": sorted(self.config.morphology_cnns), "cnn4": self.config.ml_cnn_from,
                                   "scaling_value_median": float(np.median(scaling["a"])),
                                   "frac_noise_level_reached": float(np.mean(scaling["reached"]))})

    # -- diagnostics ----------------------------------------------------------------------------
    def _write_importances(self, workdir: Path, booster, x_val: np.ndarray, names: list[str],
                           groups: list[str]) -> None:
        """Permutation importances on the validation set (Fig. 5): ``importances.csv`` and a bar
        chart of the 20 most important features."""
        from sim2obs.tasks import plots

        y, e = self.labels("val")[:, 0], self.target_errors("val")
        counts = booster.feature_importance("split")
        used = np.flatnonzero(counts > 0)  # an unused feature cannot change a prediction
        mean, std = np.zeros(len(names)), np.zeros(len(names))
        m, s = permutation_importance(lambda a: _predict_booster(booster, a), x_val, y, e, used,
                                      self.config.importance_repeats, self.config.seed)
        mean[used], std[used] = m, s
        order = np.argsort(-mean, kind="stable")
        lines = ["feature,group,importance_l1,importance_std,split_count"]
        lines += [f"{names[j]},{groups[j]},{mean[j]:.6g},{std[j]:.6g},{int(counts[j])}" for j in order]
        atomic_write(workdir / "importances.csv", lambda f: f.write("\n".join(lines) + "\n"), mode="w")
        top = order[:20]
        if self.config.plots:
            plots.bar_table([f"{names[j]} ({groups[j]})" for j in top], mean[top], workdir / "importances.png",
                            xlabel="increase of validation ℒ1 when permuted")

    def _ablation_rows(self, blocks) -> list[tuple[str, list[str]]]:
        has = set(blocks)
        rows = [("all", ["cnn1-3", "cnn4", "luminosity", "distance"]),
                ("no cnn1-3", ["cnn4", "luminosity", "distance"]),
                ("no cnn4", ["cnn1-3", "luminosity", "distance"]),
                ("no luminosity", ["cnn1-3", "cnn4", "distance"]),
                ("no distance (fluxes)", ["cnn1-3", "cnn4", "flux"]),
                ("luminosity + distance", ["luminosity", "distance"])]
        out, seen = [], set()
        for label, groups in rows:
            present = tuple(g for g in groups if g in has)
            if present and present not in seen:
                seen.add(present)
                out.append((label, list(present)))
        return out

    def _write_ablation(self, workdir: Path, blocks, main_pred: np.ndarray, main_record: dict) -> None:
        """Table 1: LightGBM retrained on feature-group subsets; their evaluation-split predictions
        are written to ``ablation/`` (scored by :meth:`summarise`, which owns the held-out truth)."""
        split = self.config.eval_split
        folder = workdir / "ablation"
        folder.mkdir(exist_ok=True)
        manifest = []
        for k, (label, groups) in enumerate(self._ablation_rows(blocks[split])):
            if k == 0:
                pred, n_feat, val_l1 = main_pred, main_record["n_features"], main_record["best_val_loss"]
            else:
                x, names = {}, None
                for s in ("train", "val", split):
                    x[s], names, _ = self._assemble(blocks[s], groups)
                booster, keep, record = self._gbm(folder, x, names, f"gbm_{k}")
                pred, n_feat, val_l1 = _predict_booster(booster, x[split][:, keep]), len(keep), record["best_val_loss"]
            values, _ = self._positive(pred)
            path = Predictions(self.split_ids(split), values[:, None], self.targets).save(
                folder / f"row{k}.h5", task=self.name, split=split, ablation=label)
            flags = {g: (g in groups) or (g == "luminosity" and "flux" in groups) for g in GROUPS}
            flags["distance"] = "distance" in groups
            manifest.append({"row": label, "groups": groups, "flags": flags, "file": path.name,
                             "n_features": n_feat, "val_l1": val_l1, "paper_l1": PAPER_ABLATION.get(label)})
        text = json.dumps(manifest, indent=2) + "\n"
        atomic_write(folder / "manifest.json", lambda f: f.write(text), mode="w")

    def _plot_scaled_examples(self, path: Path) -> None:
        """Fig. 1: three training galaxies of low, median and high scaling value, shown linearly,
        log-scaled with the median scaling value, and with their automatic scaling value."""
        from sim2obs.tasks import plots

        f = self.image_features("train")
        a = f["a"]
        order = np.argsort(a)
        picks = [order[len(order) // 20], order[len(order) // 2], order[-1 - len(order) // 20]]
        raw = self.galaxy_set.images("image", "train", indices=self.galaxy_set.indices("train")[picks])
        unit = rescale_unit(raw[:, self.galaxy_set.schema.stack("image").channels.index(BAND)])
        rows = [("linear", unit), (f"a = {np.median(a):.3g} (median)", log_scale(unit, float(np.median(a)))),
                ("automatic a", f["scaled"][picks])]
        fig = plots.new_figure(7.5, 7.5)
        for r, (title, imgs) in enumerate(rows):
            for col in range(3):
                ax = fig.add_subplot(3, 3, 3 * r + col + 1)
                ax.imshow(imgs[col], origin="lower", cmap="gray", vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                if col == 0:
                    ax.set_ylabel(title, fontsize=8)
                if r == 2:
                    ax.set_title(f"a = {a[picks[col]]:.3g}, noise {f['noise'][picks[col]]:.2f}", fontsize=8)
        plots.save_figure(fig, path)

    # -- evaluation ---------------------------------------------------------------------------
    def compute_metrics(self, predictions: Predictions, truth: Truth) -> dict[str, float]:
        p, t = predictions.values[:, 0], truth.values[:, 0]
        if truth.errors is None:
            raise DataFormatError(self.galaxy_set.path, f"{TARGET}_err", "ℒ1 needs the target's uncertainty")
        e = truth.errors[:, 0]
        return {"l1": M.l1(p, t, e), "l2": M.l2(p, t, e), "median_l1": M.median_l1(p, t, e),
                "rmsle": M.rmsle(p, t), "frac_within_0.15dex": M.frac_within(p, t, 0.15),
                "bias_mean": M.bias_mean(p, t), "bias_median": M.bias_median(p, t)}

    def plot(self, predictions: Predictions, truth: Truth, out_dir: Path) -> list[Path]:
        """The shared plots plus the paper's Fig. 4 (right) histograms: dex errors with the
        ±0.15 dex band, and signed ℒ1 terms."""
        from sim2obs.tasks import plots

        paths = super().plot(predictions, truth, out_dir)
        p, t = predictions.values[:, 0], truth.values[:, 0]
        e = _floored(t, truth.errors[:, 0]) if truth.errors is not None else np.abs(t) * M.MIN_RELATIVE_ERROR
        paths.append(plots.residual_histogram(M.log_residuals(p, t), out_dir / f"dex_errors_{TARGET}.png",
                                              label="log10(predicted / true M/L_g) [dex]"))
        paths.append(plots.residual_histogram((p - t) / e, out_dir / f"l1_terms_{TARGET}.png",
                                              label="(predicted − true) / ΔΥ  (signed ℒ1 terms)"))
        return paths

    def summarise(self, rows: list[dict], out_dir: Path) -> None:
        """``l1_by_method.png`` (the paper's Fig. 8 style) and, when ``cnn_gbm`` ran with ablation,
        ``ablation_table.{csv,md,png}`` (Table 1) scored on the evaluation split."""
        from sim2obs.tasks import plots

        out_dir = Path(out_dir)
        if rows and self.config.plots:
            plots.bar_table([r["method"] for r in rows], [r["metrics"]["l1"] for r in rows],
                            out_dir / "l1_by_method.png", xlabel=f"test ℒ1 ({self.config.eval_split} split)")
        if not any(r["method"] == "cnn_gbm" for r in rows):
            return
        manifest_path = out_dir / "cnn_gbm" / "ablation" / "manifest.json"
        if not manifest_path.exists():
            return
        manifest = json.loads(manifest_path.read_text())
        table = []
        for entry in manifest:
            preds = Predictions.load(manifest_path.parent / entry["file"])
            metrics = self.evaluate(preds)
            table.append({**entry, "l1": metrics["l1"], "rmsle": metrics["rmsle"]})
        const = next((r for r in rows if r["method"] == "best_constant"), None)
        csv = ["row,cnn1-3,cnn4,luminosity,distance,n_features,val_l1,test_l1,test_rmsle,paper_test_l1"]
        md = ["| CNN 1-3 | CNN 4 | Luminosity | Distance | features | val ℒ1 | test ℒ1 | test RMSLE | paper ℒ1 |",
              "|:-:|:-:|:-:|:-:|--:|--:|--:|--:|--:|"]
        tick = {True: "✓", False: ""}
        for r in table:
            f = r["flags"]
            nf = "" if r["n_features"] is None else str(r["n_features"])
            vl = "" if r["val_l1"] is None else f"{r['val_l1']:.4g}"
            paper = "" if r["paper_l1"] is None else f"{r['paper_l1']:.2f}"
            csv.append(f"{r['row']},{int(f['cnn1-3'])},{int(f['cnn4'])},{int(f['luminosity'])},"
                       f"{int(f['distance'])},{nf},{vl},{r['l1']:.6g},{r['rmsle']:.6g},{paper}")
            md.append(f"| {tick[f['cnn1-3']]} | {tick[f['cnn4']]} | {tick[f['luminosity']]} | "
                      f"{tick[f['distance']]} | {nf} | {vl} | {r['l1']:.3f} | {r['rmsle']:.3f} | {paper} |")
        note = (f"\nBaseline ℒ1 (best constant): {const['metrics']['l1']:.3f} (paper 6.52).\n" if const else "")
        md_text = ("Test-set ℒ1 of LightGBM trained on the checked feature groups (Dobbels et al. 2019, "
                   "Table 1). Without distance, luminosity statistics are replaced by flux statistics.\n\n"
                   + "\n".join(md) + "\n" + note)
        atomic_write(out_dir / "ablation_table.csv", lambda fh: fh.write("\n".join(csv) + "\n"), mode="w")
        atomic_write(out_dir / "ablation_table.md", lambda fh: fh.write(md_text), mode="w")
        if self.config.plots:
            plots.bar_table([r["row"] for r in table], [r["l1"] for r in table], out_dir / "ablation_table.png",
                            xlabel=f"test ℒ1 ({self.config.eval_split} split)")
