"""Task ``bt_posterior``: posteriors of B/T, R_e and total flux from one image (GaMPEN).

After Ghosh et al. (2021, NeurIPS ML4PS workshop; "An ML framework for estimating Bayesian
posteriors of galaxy morphological parameters"; the GaMPEN paper, Ghosh et al. 2022 ApJ 935
138, gives the full description). A spatial transformer (STN) in front of a GaMorNet CNN with
dropout before every weight layer predicts the r-band bulge-to-total light ratio ``bt_r``, the
half-light radius ``r_e_r`` (arcsec) and the total flux ``flux_r`` (nanomaggies).

Posterior (GaMPEN 2022)
    The network's head predicts the mean and the Cholesky factor of the full 3 x 3 covariance of a
    Gaussian (``aleatoric: true``, ``covariance: full``; 9 outputs) and is trained with the
    Gaussian negative log-likelihood (the quick preset adds the squared error of the mean,
    ``mean_mse_weight``: under the NLL alone B/T's mean did not learn in its CPU budget). At
    prediction time dropout stays on (Monte-Carlo dropout,
    Gal & Ghahramani 2016): every pass draws its masks (epistemic) and then ``draws_per_pass``
    points from the Gaussian it predicts (aleatoric), ``n_samples`` in all (1000, as the paper;
    the quick preset uses 50 passes x 20 draws). The dropout rate is a variational parameter:
    several rates are trained and, for each, one width factor per target is fitted on the
    validation split as an explicit recorded step (``recalibrate``;
    :func:`sim2obs.models.gaussian_head.fit_width_scale`: samples scaled about their median in
    the scaled-label space; ``recalibration.json`` and the run info hold the factors and the
    validation coverage before and after). The rate whose **validation** coverage at
    68.27/95.45/99.73 % is closest to nominal is kept (the paper found 0.1), judged on the
    posterior the task reports (after recalibration; the paper's raw distance is recorded
    beside it), with the same number of samples as the test; its factors are applied to every
    evaluation posterior. ``aleatoric: false`` restores the MSE network whose samples carry
    dropout variance only.

Data
    GalSim bulge + disk galaxies as HSC-Wide sees them (``configs/simgen/hsc.yaml``: 0.168"
    pixels, ~0.6-0.9" seeing, sky noise 3 mag below SDSS per arcsec^2, z < 0.25, r <= 17.77),
    r band only, B/T drawn from a flat prior (``population.bulge_fraction_model: uniform``, the
    paper's "uniform distributions") with 25 % single-component galaxies (bulge only or disk
    only, ``population.single_component_fraction``), and secondary galaxies in the frame
    (``realism.secondary_mean``) that the transformer has to learn to crop out. The quick
    preset's 96-px stamps (16") leave GaMorNet a 2 x 2 map before its head.
Inputs
    the r-band image with an arcsinh stretch ``asinh(x / softening)`` (``stretch_softening`` in
    nanomaggies; ≈ 3.5 × the sky noise per pixel: 0.0025 for the HSC-like presets). No per-image normalisation: the
    total flux is a target, so the image keeps its absolute scale.
Targets
    ``bt_r``, ``r_e_r``, ``flux_r``, standard-scaled with a scaler fitted on the training split
    only. The paper standard-scales the **linear** values (appendix A: "All the target labels
    were also normalized using standard scaling"; no log transform is mentioned), so the presets
    do the same; ``log_targets`` trains any of them in log10 instead. Predictions, samples and
    metrics are always in physical units (B/T dimensionless, R_e arcsec, flux nanomaggies).
    Samples are clipped to the physical range (B/T in [0, 1], R_e and flux >= 0); clipping is
    monotonic, so it never moves a truth across an interval edge.
Point estimate
    ``Predictions.values`` holds the posterior **mode** per parameter (the paper's "most probable
    value of the predicted posterior"; ``point_estimate: median`` switches it), estimated by a
    Gaussian kernel density (Silverman bandwidth) on a binned grid with parabolic refinement
    (:func:`posterior_mode`). The posterior median's metrics are reported too, under
    ``median_point/<target>/<key>`` and ``median_point/posterior_score``.
Metrics (:mod:`sim2obs.tasks.metrics`)
    per target ``<t>/bias_mean``, ``<t>/bias_median``, ``<t>/rmse``, ``<t>/nmad``,
    ``<t>/outlier_frac`` of the point estimate; ``<t>/coverage_68|95|99``,
    ``<t>/calibration_error``, ``<t>/posterior_width``, ``<t>/crps`` (continuous
    ranked probability score, target units), ``<t>/pit_ks`` (PIT distance from uniform); pooled
    over the three targets
    ``coverage_68|95|99`` (fraction of all galaxy x target truths inside their interval) and
    ``calibration_error`` (mean of the per-target calibration errors, so over- and
    under-confident targets do not cancel); the main score ``posterior_score`` (accuracy +
    calibration, lower is better).
Methods
    ``prior`` (baseline): samples drawn from the training-set distribution of the labels,
    whatever the image (calibrated but uninformative). ``gampen_fixed_dropout`` (baseline):
    GaMPEN at the paper's published rate (``fixed_dropout``, 0.1) without validation selection.
    ``gampen_no_stn`` (baseline): the CNN alone (``no_stn_model``) at the selected rate.
    ``gampen`` (model): GaMPEN at the selected rate. Trained networks are shared between methods
    through ``<out>/_shared/`` (folders named by the hash of data, model, trainer and
    preprocessing), so a rate is trained once.

Paper numbers (``TaskMetadata.paper``, for reference only)
    The paper reports no posterior score. Its accuracy figures are residual standard deviations
    of the posterior mode on the HSC-Wide g-band z < 0.25 **real** test galaxies (Simard et al.
    2011 bulge + disk fits as truth; network trained on 150,000 GalSim galaxies, then fine-tuned
    on 30 % of 20,000 real ones): sigma(L_B/L_T) = 0.19, sigma(R_e) = 0.38 arcsec,
    sigma(flux) = 4.7e4 nJy (12.9 nanomaggies). Calibration is stated qualitatively: at dropout
    0.1 the coverage probability was "roughly equal to the confidence level" (no number). The
    ``gampen`` entry carries sigma(L_B/L_T) = 0.19 with that note; ``summary.md`` puts our
    sigmas beside all three.

The network is ``model`` (a ``_target_`` config, default :func:`sim2obs.models.stn.gampen`); it
is built with ``dropout=<rate>``, ``num_outputs`` (3; 9 with the full-covariance head, 6 diagonal) and
``in_channels=1`` for those of these keys its config names (a user's class gets only its own
arguments; MC-dropout posteriors need it to take a dropout rate).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from sim2obs.atomic import atomic_write
from sim2obs.errors import ConfigError, Sim2obsValueError
from sim2obs.tasks import TASKS
from sim2obs.tasks import metrics as M
from sim2obs.tasks.common.scaling import LabelCoder, StandardScaler
from sim2obs.tasks.common.threads import with_torch_threads
from sim2obs.tasks.base import (Method, MethodOutput, PaperResult, Predictions, Task, TaskConfig, TaskMetadata,
                                Truth)

__all__ = ["BTPosteriorConfig", "BTPosteriorTask", "LabelCoder", "StandardScaler", "arcsinh_stretch",
           "posterior_mode", "select_dropout_rate", "aleatoric_draws"]

BAND = "r"
TARGETS = (f"bt_{BAND}", f"r_e_{BAND}", f"flux_{BAND}")
UNITS = ("", "arcsec", "nanomaggy")
#: Physical range of each target (samples are clipped to it).
BOUNDS = {f"bt_{BAND}": (0.0, 1.0), f"r_e_{BAND}": (0.0, math.inf), f"flux_{BAND}": (0.0, math.inf)}
#: Nominal levels at which the dropout rate is calibrated (1, 2, 3 sigma, as GaMPEN reports).
SELECTION_LEVELS = (0.6827, 0.9545, 0.9973)
POINT_KEYS = ("bias_mean", "bias_median", "rmse", "nmad", "outlier_frac")
CALIB_KEYS = ("coverage_68", "coverage_95", "coverage_99", "calibration_error", "posterior_width", "crps", "pit_ks")
#: Bootstrap resamples of the test objects behind the coverage errors in ``summary.md``.
N_BOOTSTRAP = 500
NANOMAGGY_NJY = 3631.0  # 1 nanomaggy = 3.631 microJansky


def _metric_names() -> tuple[str, ...]:
    names = ["posterior_score", "coverage_68", "coverage_95", "coverage_99", "calibration_error"]
    for t in TARGETS:
        names += [f"{t}/{k}" for k in POINT_KEYS + CALIB_KEYS]
        names += [f"{t}/l1"] + ([f"{t}/rmsle"] if t != f"bt_{BAND}" else [])  # R_e, flux: positive linear
    names += ["median_point/posterior_score"]
    for t in TARGETS:
        names += [f"median_point/{t}/{k}" for k in POINT_KEYS]
    return tuple(names)


_PAPER_NOTE = ("on HSC-W g-band z<0.25 real galaxies; the paper gives no posterior score "
               "(see the task docstring / summary.md)")


# --------------------------------------------------------------------------------------------
# Preprocessing
# --------------------------------------------------------------------------------------------
def arcsinh_stretch(images, softening: float = 0.1):
    """``asinh(images / softening)`` elementwise (numpy array or torch tensor, any shape).

    Linear for |x| << softening (the noise), logarithmic for bright pixels; odd and strictly
    increasing, so the ordering of pixel values and the sign are kept."""
    if not softening > 0:
        raise Sim2obsValueError("the arcsinh softening must be positive", value=softening)
    if hasattr(images, "asinh"):  # torch
        return (images / softening).asinh()
    return np.arcsinh(np.asarray(images, dtype=np.float32) / np.float32(softening))


class _StretchChannel:
    """Picklable DataLoader transform: pick one channel of the ``image`` stack, arcsinh-stretch it."""

    def __init__(self, channel: int, softening: float):
        self.channel, self.softening = int(channel), float(softening)

    def __call__(self, inputs: dict) -> dict:
        x = inputs["image"][self.channel:self.channel + 1]
        return {"image": arcsinh_stretch(x.float(), self.softening)}


class _EncodeTarget:
    """Picklable DataLoader target transform: physical -> scaled (float32 tensor)."""

    def __init__(self, coder: LabelCoder):
        self.coder = coder

    def __call__(self, target):
        import torch

        return torch.as_tensor(self.coder.encode(target.numpy()), dtype=torch.float32)


def clip_to_bounds(values: np.ndarray, targets: Sequence[str]) -> np.ndarray:
    """Clip the last axis of ``values`` to each target's physical range (in place; returned)."""
    for k, t in enumerate(targets):
        lo, hi = BOUNDS.get(t, (-math.inf, math.inf))
        np.clip(values[..., k], lo, hi, out=values[..., k])
    return values


# --------------------------------------------------------------------------------------------
# Posterior summaries and dropout-rate selection
# --------------------------------------------------------------------------------------------
def posterior_mode(samples, bins: int = 256, chunk: int = 32) -> np.ndarray:
    """Mode of each marginal posterior: ``(S, ...)`` samples -> ``(...)``.

    A Gaussian kernel density (Silverman's bandwidth ``0.9 min(σ, IQR/1.34) S^-1/5``) on a grid
    of ``bins`` points spanning each column's samples, computed from a histogram (binned KDE);
    the grid maximum is refined by a parabola through it and its neighbours. A column whose
    samples are all equal returns that value."""
    s = np.asarray(samples, dtype=np.float64)
    if s.ndim < 1 or s.shape[0] < 2:
        raise Sim2obsValueError("the mode needs at least 2 samples per posterior", value=s.shape)
    if not np.isfinite(s).all():
        raise Sim2obsValueError("posterior samples contain NaN/inf")
    n = s.shape[0]
    flat = s.reshape(n, -1)
    out = np.empty(flat.shape[1])
    offsets = np.arange(bins)
    for start in range(0, flat.shape[1], chunk):
        x = flat[:, start:start + chunk]
        m = x.shape[1]
        lo, hi = x.min(axis=0), x.max(axis=0)
        span = hi - lo
        q75, q25 = np.percentile(x, [75, 25], axis=0)
        spread = np.minimum(x.std(axis=0), (q75 - q25) / 1.34)
        spread = np.where(spread > 0, spread, x.std(axis=0))
        h = 0.9 * spread * n ** -0.2
        flat_col = span <= 0
        width = np.where(flat_col, 1.0, span / (bins - 1))
        idx = np.clip(np.rint((x - lo) / width), 0, bins - 1).astype(np.int64)
        counts = np.bincount((idx + np.arange(m) * bins).ravel(), minlength=m * bins).reshape(m, bins)
        ratio = np.where(h > 0, width / np.where(h > 0, h, 1.0), 1.0)  # bin width in bandwidths
        diff = offsets[:, None] - offsets[None, :]  # (bins, bins)
        kernel = np.exp(-0.5 * (diff[None, :, :] * ratio[:, None, None]) ** 2)  # (m, bins, bins)
        density = np.einsum("mjk,mk->mj", kernel, counts.astype(np.float64))
        j = density.argmax(axis=1)
        jm, jp = np.clip(j - 1, 0, bins - 1), np.clip(j + 1, 0, bins - 1)
        rows = np.arange(m)
        y0, y1, y2 = density[rows, jm], density[rows, j], density[rows, jp]
        denom = y0 - 2 * y1 + y2
        inner = (j > 0) & (j < bins - 1) & (denom < 0)
        shift = np.where(inner, 0.5 * (y0 - y2) / np.where(inner, denom, 1.0), 0.0)
        mode = lo + (j + np.clip(shift, -0.5, 0.5)) * width
        out[start:start + m] = np.where(flat_col, lo, mode)
    return out.reshape(s.shape[1:])


def selection_distance(coverages: Mapping[float, Any]) -> float:
    """Mean |empirical − nominal| over the levels (keys, fractions) and, where a level maps to
    several values (one per target), over those."""
    devs = [np.abs(np.asarray(v, dtype=np.float64) - float(level)).ravel() for level, v in coverages.items()]
    if not devs:
        raise Sim2obsValueError("no coverage to compare with its nominal level")
    return float(np.mean(np.concatenate(devs)))


def select_dropout_rate(coverages: Mapping[float, Mapping[float, Any]]) -> tuple[float, dict[float, float]]:
    """The dropout rate whose validation coverage is closest to nominal (Ghosh et al. 2021).

    ``coverages``: ``{rate: {nominal level: empirical coverage (a float, or one per target)}}``.
    Returns ``(rate, {rate: distance})`` with the distance of :func:`selection_distance`; ties go
    to the smaller rate."""
    if not coverages:
        raise Sim2obsValueError("no dropout rate to select from")
    distances = {float(rate): selection_distance(cov) for rate, cov in coverages.items()}
    best = min(sorted(distances), key=lambda r: (round(distances[r], 12), r))
    return best, distances


def aleatoric_draws(outputs, num_targets: int, generator=None):
    """Diagonal-Gaussian head outputs ``(..., 2n)`` = ``[mean | log-variance]`` -> one draw
    ``mean + exp(log-variance / 2) · ε`` per row ``(..., n)`` (torch tensors); combined with MC
    dropout this samples epistemic and aleatoric uncertainty together."""
    import torch

    mean, log_var = outputs[..., :num_targets], outputs[..., num_targets:2 * num_targets].clamp(-15.0, 15.0)
    eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device="cpu").to(mean.device)
    return mean + torch.exp(0.5 * log_var) * eps


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------
def _default_data() -> dict[str, Any]:
    return {"n": 2000, "stamp": 64, "bands": [BAND], "population": {"bulge_fraction_model": "uniform"},
            "realism": {"secondary_mean": 0.7}}


def _default_trainer() -> dict[str, Any]:
    return {"epochs": 10, "batch_size": 32, "optimiser": "adam", "lr": 1e-3, "weight_decay": 1e-5,
            "schedule": "cosine", "augment": None, "progress": False}


def _default_model() -> dict[str, Any]:
    return {"_target_": "sim2obs.models.stn.gampen", "in_channels": 1, "conv_channels": [16, 32, 48, 48, 32],
            "dense": [128, 128], "stn_channels": [4, 8], "stn_kernels": [11, 9]}


@dataclass
class BTPosteriorConfig(TaskConfig):
    """Settings of ``bt_posterior`` (see the module docstring).

    ``model``: the network (``_target_`` config; built with ``dropout``, ``num_outputs``,
    ``in_channels`` set by the task). ``no_stn_model``: the network of the ``gampen_no_stn``
    baseline (null: no such baseline). ``trainer``: :class:`~sim2obs.models.engine.TrainerConfig`
    keys. ``dropout_rates``: the rates trained for calibration; ``fixed_dropout``: the rate of the
    ``gampen_fixed_dropout`` baseline. ``n_samples``: MC-dropout samples per galaxy for the
    evaluation split; ``val_samples``: for the validation split (null: ``n_samples``).
    ``aleatoric``: a Gaussian head trained with the Gaussian NLL (GaMPEN 2022) instead of the
    mean-squared error; every MC-dropout pass then draws ``draws_per_pass`` points from the Gaussian
    it predicts (``n_samples`` = passes x draws). ``covariance``: ``full`` (mean + Cholesky factor of
    the T x T covariance, :class:`~sim2obs.models.uncertainty.FullCovarianceGaussianNLL`, GaMPEN's
    ``aleatoric_cov``) or ``diagonal``. ``mean_mse_weight``: add this weight times the squared
    error of the predicted mean to the NLL (:class:`~sim2obs.models.gaussian_head.NLLWithMeanMSE`;
    0: the NLL alone, as GaMPEN). ``recalibrate``: after the dropout rate is chosen, fit one
    width factor per target on the validation split (:func:`~sim2obs.models.gaussian_head.fit_width_scale`,
    in the scaled-label space) and apply it to the evaluation posteriors; recorded in the run's
    ``recalibration`` info and ``recalibration.json``. ``log_targets``: targets trained in log10.
    ``stretch_softening``: arcsinh softening in nanomaggies. ``point_estimate``: ``mode`` or
    ``median`` in ``Predictions.values``. ``mode_bins``: grid of the mode estimator.
    ``sample_chunk``: rows (galaxies x samples) per forward pass while sampling.
    ``max_memory_gb``: training images are held in memory below this size, read lazily above it.
    ``stn_plot_galaxies``: test galaxies in the STN input/output figure.
    ``torch_threads``: intra-op threads while training and sampling (restored after; null: leave
    torch's setting). On a few shared CPU cores 1 thread measured ~10x faster than 2 for the
    quick network (OpenMP threads stall when the cores are busy).
    """

    data: dict[str, Any] = field(default_factory=_default_data)
    model: dict[str, Any] = field(default_factory=_default_model)
    no_stn_model: dict[str, Any] | None = None
    trainer: dict[str, Any] = field(default_factory=_default_trainer)
    dropout_rates: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.2])
    fixed_dropout: float = 0.1
    n_samples: int = 1000
    val_samples: int | None = None
    aleatoric: bool = True
    covariance: str = "full"
    draws_per_pass: int = 1
    recalibrate: bool = True
    mean_mse_weight: float = 0.0
    log_targets: list[str] = field(default_factory=list)
    stretch_softening: float = 0.1
    point_estimate: str = "mode"
    mode_bins: int = 256
    sample_chunk: int = 4096
    max_memory_gb: float = 8.0
    stn_plot_galaxies: int = 6
    torch_threads: int | None = None


# --------------------------------------------------------------------------------------------
# The task
# --------------------------------------------------------------------------------------------
@TASKS.register("bt_posterior")
class BTPosteriorTask(Task):
    """GaMPEN posteriors of B/T, R_e and flux with dropout-rate calibration (module docstring)."""

    metadata = TaskMetadata(
        name="bt_posterior",
        version="2.0",  # 2.0: HSC-like data, full-covariance Gaussian posteriors, recalibration
        description="posteriors of r-band B/T, R_e and flux from one arcsinh-stretched image: spatial "
                    "transformer + CNN with Monte-Carlo dropout, dropout rate chosen by validation coverage",
        citation="Ghosh, Urry, Rau, Perreault-Levasseur 2021, NeurIPS ML4PS workshop (GaMPEN); "
                 "Ghosh et al. 2022, ApJ 935, 138",
        inputs=("image",),
        targets=TARGETS,
        target_units=UNITS,
        main_score="posterior_score",
        metrics=_metric_names(),
        higher_is_better=False,
        requires_posterior=True,
        paper={"gampen": PaperResult(0.19, _PAPER_NOTE, metric="σ(ΔB/T)")},
    )
    config_class = BTPosteriorConfig

    # -- config -------------------------------------------------------------------------------
    def validate_config(self) -> None:
        super().validate_config()
        c: BTPosteriorConfig = self.config
        pre = f"task.{self.name}"
        if "path" not in c.data:
            bands = list(c.data.get("bands", ["g", "r", "i"]))
            if BAND not in bands:
                raise ConfigError(f"{pre}.data.bands", f"the task reads the {BAND} band", value=bands)
        if not c.dropout_rates:
            raise ConfigError(f"{pre}.dropout_rates", "give at least one dropout rate", value=c.dropout_rates)
        for key, rates in (("dropout_rates", c.dropout_rates), ("fixed_dropout", [c.fixed_dropout])):
            bad = [r for r in rates if not 0.0 < float(r) < 1.0]
            if bad:
                raise ConfigError(f"{pre}.{key}", "MC dropout needs rates in (0, 1)", value=bad[0])
        if len(set(map(float, c.dropout_rates))) != len(c.dropout_rates):
            raise ConfigError(f"{pre}.dropout_rates", "rates repeat", value=list(c.dropout_rates))
        for key in ("n_samples", "val_samples"):
            v = getattr(c, key)
            if v is not None and int(v) < 2:
                raise ConfigError(f"{pre}.{key}", "a posterior needs at least 2 samples", value=v)
        if c.covariance not in ("full", "diagonal"):
            raise ConfigError(f"{pre}.covariance", "unknown covariance", value=c.covariance,
                              allowed=["full", "diagonal"])
        if not c.mean_mse_weight >= 0:
            raise ConfigError(f"{pre}.mean_mse_weight", "must be >= 0", value=c.mean_mse_weight)
        if int(c.draws_per_pass) < 1 or (int(c.draws_per_pass) > 1 and not c.aleatoric):
            raise ConfigError(f"{pre}.draws_per_pass", "needs >= 1, and > 1 only with the aleatoric head "
                              "(without it a pass is one deterministic output)", value=c.draws_per_pass)
        if c.point_estimate not in ("mode", "median"):
            raise ConfigError(f"{pre}.point_estimate", "unknown point estimate", value=c.point_estimate,
                              allowed=["mode", "median"])
        bad = [t for t in c.log_targets if t not in TARGETS]
        if bad:
            raise ConfigError(f"{pre}.log_targets", "not a target", value=bad[0], allowed=list(TARGETS))
        if f"bt_{BAND}" in c.log_targets:
            raise ConfigError(f"{pre}.log_targets", "B/T can be 0: it cannot be trained in log10",
                              value=f"bt_{BAND}")
        for key, value in (("stretch_softening", c.stretch_softening), ("max_memory_gb", c.max_memory_gb)):
            if not value > 0:
                raise ConfigError(f"{pre}.{key}", "must be positive", value=value)
        if c.torch_threads is not None and c.torch_threads < 1:
            raise ConfigError(f"{pre}.torch_threads", "must be >= 1, or null", value=c.torch_threads)
        if c.mode_bins < 16 or c.sample_chunk < 1 or c.stn_plot_galaxies < 0:
            raise ConfigError(f"{pre}.mode_bins/sample_chunk/stn_plot_galaxies",
                              "need mode_bins >= 16, sample_chunk >= 1, stn_plot_galaxies >= 0",
                              value=(c.mode_bins, c.sample_chunk, c.stn_plot_galaxies))
        for key in ("model", "no_stn_model"):
            spec = getattr(c, key)
            if spec is not None and "_target_" not in spec:
                raise ConfigError(f"{pre}.{key}._target_", "a model config needs a _target_", value=dict(spec))
        tc = self.trainer_config()
        zoom = None if tc.augment is None else list(tc.augment.zoom)
        if zoom is not None and zoom != [1.0, 1.0]:
            raise ConfigError(f"{pre}.trainer.augment.zoom", "zooming changes R_e and flux, the task's labels; "
                              "use [1.0, 1.0] (rotations and flips are fine)", value=zoom)

    def trainer_config(self):
        from sim2obs.models.engine import load_trainer_config, validate_config

        try:
            cfg = load_trainer_config(dict(self.config.trainer))
        except ConfigError as exc:
            raise ConfigError(f"task.{self.name}.{exc.key}", str(exc).split(": ", 1)[-1].split(" (got ")[0],
                              value=exc.value, allowed=exc.allowed) from None
        validate_config(cfg)
        return cfg

    # -- methods --------------------------------------------------------------------------------
    def methods(self) -> list[Method]:
        c: BTPosteriorConfig = self.config
        common = {"aleatoric": c.aleatoric, "n_samples": c.n_samples, "point_estimate": c.point_estimate,
                  **({"covariance": c.covariance, "draws_per_pass": int(c.draws_per_pass)} if c.aleatoric else {}),
                  "recalibrate": bool(c.recalibrate)}
        out = [
            Method("prior", "baseline", "prior-only posterior: training-set label distribution, whatever the "
                   "image (calibrated, uninformative)", _run_prior, {"n_samples": c.n_samples,
                                                                      "point_estimate": c.point_estimate}),
            Method("gampen_fixed_dropout", "baseline", f"GaMPEN at the paper's dropout rate {c.fixed_dropout:g}, "
                   "no validation selection", _run_fixed,
                   {**common, "model": dict(c.model), "dropout": float(c.fixed_dropout)}),
        ]
        if c.no_stn_model is not None:
            out.append(Method("gampen_no_stn", "baseline", "the CNN without the spatial transformer, at the "
                              "selected dropout rate", _run_no_stn,
                              {**common, "model": dict(c.no_stn_model), "dropout_rates": list(c.dropout_rates)}))
        out.append(Method("gampen", "model", "GaMPEN: spatial transformer + CNN, MC dropout at the rate whose "
                          "validation coverage is closest to nominal", _run_gampen,
                          {**common, "model": dict(c.model), "dropout_rates": list(c.dropout_rates)}))
        return out

    # -- evaluation -----------------------------------------------------------------------------
    def compute_metrics(self, predictions: Predictions, truth: Truth) -> dict[str, float]:
        samples, y = predictions.samples, truth.values
        out: dict[str, float] = {}
        median = np.median(samples, axis=0)
        for k, t in enumerate(self.targets):
            for key, value in M.point_metrics(predictions.values[:, k], y[:, k]).items():
                out[f"{t}/{key}"] = value
            for key, value in M.calibration_metrics(samples[:, :, k], y[:, k]).items():
                out[f"{t}/{key}"] = value
            out[f"{t}/crps"] = M.crps(samples[:, :, k], y[:, k])
            out[f"{t}/pit_ks"] = M.pit_ks(samples[:, :, k], y[:, k], seed=self.config.seed)
            for key, value in M.point_metrics(median[:, k], y[:, k]).items():
                out[f"median_point/{t}/{key}"] = value
        for key, level in M.COVERAGE_LEVELS.items():
            out[key] = M.coverage(samples, y, level)
        out["calibration_error"] = float(np.mean([out[f"{t}/calibration_error"] for t in self.targets]))
        out["posterior_score"] = M.posterior_score(predictions.values, y, samples)
        out["median_point/posterior_score"] = M.posterior_score(median, y, samples)
        return out

    def plot(self, predictions: Predictions, truth: Truth, out_dir: Path) -> list[Path]:
        paths = super().plot(predictions, truth, out_dir)
        paths.append(_plot_example_posteriors(predictions, truth, self.targets, self.metadata.target_units,
                                              out_dir / "posterior_examples.png"))
        paths.append(_plot_pit(predictions, truth, self.targets, out_dir / "pit_histogram.png", self.config.seed))
        return paths

    def summarise(self, rows: list[dict], out_dir: Path) -> None:
        """``summary.md`` (per-method accuracy and coverage, beside the paper's sigmas; coverages
        and CRPS with bootstrap errors), ``coverage_curves.csv`` (nominal vs empirical coverage
        per method and target), ``coverage_bootstrap.csv`` (the 68/95/99.7 % coverages and CRPS
        with their 1σ bootstrap errors, ``N_BOOTSTRAP`` resamples of the test objects) and
        ``pit_histogram.csv`` (fraction of test objects per PIT decile)."""
        if not rows:
            return
        from sim2obs.tasks.base import PREDICTIONS_FILE

        split = self.config.eval_split
        lines = ["# bt_posterior: summary", "",
                 f"Evaluation split `{split}`; point estimate in `values`: posterior {self.config.point_estimate}. "
                 "sigma = standard deviation of the residuals (the paper's sigma).", "",
                 "| method | kind | posterior_score | " + " | ".join(
                     f"{t} nmad | {t} sigma | {t} cov68 | {t} cov95" for t in self.targets) + " | cov68 | cov95 | "
                 "cov99 | calib. error |",
                 "|" + "---|" * (4 + 4 * len(self.targets) + 4)]
        for r in rows:
            m = r["metrics"]
            cells = [r["method"], r["kind"], f"{m['posterior_score']:.4f}"]
            for t in self.targets:
                sigma = math.sqrt(max(m[f"{t}/rmse"] ** 2 - m[f"{t}/bias_mean"] ** 2, 0.0))
                cells += [f"{m[f'{t}/nmad']:.4g}", f"{sigma:.4g}", f"{m[f'{t}/coverage_68']:.3f}",
                          f"{m[f'{t}/coverage_95']:.3f}"]
            cells += [f"{m[k]:.3f}" for k in ("coverage_68", "coverage_95", "coverage_99", "calibration_error")]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "Paper (Ghosh et al. 2021, HSC-Wide g band, z < 0.25 real galaxies, Simard+2011 truth, "
                  "after transfer learning; not our data): sigma(B/T) = 0.19, sigma(R_e) = 0.38 arcsec, "
                  f"sigma(flux) = 4.7e4 nJy = {4.7e4 / NANOMAGGY_NJY:.1f} nanomaggy; coverage roughly nominal at "
                  "dropout 0.1 (not quantified).", ""]
        curve_rows, boot_rows, pit_rows = ["method,target,nominal,empirical"], [], []
        for r in rows:
            path = out_dir / r["method"] / PREDICTIONS_FILE.format(split=split)
            if not path.exists():
                continue
            p, truth = self.align(Predictions.load(path), split)
            for k, t in enumerate(self.targets):
                nominal, empirical = M.coverage_curve(p.samples[:, :, k], truth.values[:, k])
                curve_rows += [f"{r['method']},{t},{a:.4f},{b:.4f}" for a, b in zip(nominal, empirical)]
            cal = calibration_with_errors(p.samples, truth.values, self.targets, seed=self.config.seed,
                                          point=p.values)
            boot_rows += [{"method": r["method"], **row} for row in cal["rows"]]
            pit_rows += [f"{r['method']},{t},{j / 10:.1f},{(j + 1) / 10:.1f},{f:.4f}"
                         for t, hist in cal["pit_histogram"].items() for j, f in enumerate(hist)]
        lines += _bootstrap_lines(boot_rows, self.targets)
        text = "\n".join(lines)
        atomic_write(out_dir / "summary.md", lambda f: f.write(text), mode="w")
        csv = "\n".join(curve_rows) + "\n"
        atomic_write(out_dir / "coverage_curves.csv", lambda f: f.write(csv), mode="w")
        keys = ["method", "target", "coverage_68", "coverage_68_err", "coverage_95", "coverage_95_err",
                "coverage_99", "coverage_99_err", "crps", "crps_err", "pit_ks", "nmad", "nmad_err"]
        csv = "\n".join([",".join(keys)] + [",".join(str(b[k]) if isinstance(b[k], str) else f"{b[k]:.5g}"
                                                     for k in keys) for b in boot_rows]) + "\n"
        atomic_write(out_dir / "coverage_bootstrap.csv", lambda f: f.write(csv), mode="w")
        csv = "\n".join(["method,target,pit_lo,pit_hi,fraction"] + pit_rows) + "\n"
        atomic_write(out_dir / "pit_histogram.csv", lambda f: f.write(csv), mode="w")

    # -- what a model receives ----------------------------------------------------------------
    def spec(self):
        """``{"image": (1, stamp, stamp)}`` arcsinh-stretched r band; 3 outputs (6 with the aleatoric
        head) on scaled labels; posterior samples are scored (MC dropout)."""
        from sim2obs.models.conformance import TaskSpec

        c = self.config
        side = (int(self.galaxy_set.schema.stack("image").height) if "path" in c.data
                else int(self.simgen_config()["stamp"]))
        return TaskSpec(input_shapes={"image": (1, side, side)}, n_targets=len(self.targets),
                        n_outputs=_n_outputs(c, len(self.targets)), posterior=True)

    def model_checks(self) -> list[tuple[str, Any, Any]]:
        """``model`` (at the fixed dropout rate) and ``no_stn_model``, as the selected methods build them."""
        c, names = self.config, {m.name for m in self.selected_methods()}
        spec, out = self.spec(), []
        for key, users in (("model", {"gampen", "gampen_fixed_dropout"}), ("no_stn_model", {"gampen_no_stn"})):
            cfg = getattr(c, key)
            if cfg is not None and names & users:
                cfg = dict(cfg)
                out.append((key, {**cfg, **_task_arguments(cfg, c.fixed_dropout, spec.output_width)}, spec))
        return out

    def split_inputs(self, split: str) -> dict[str, np.ndarray]:
        """``{"image": (N, 1, H, W)}`` float32 arcsinh-stretched r-band images (:meth:`stretched_images`)."""
        return {"image": self.stretched_images(split)}

    # -- data helpers (used by the methods) -----------------------------------------------------
    def channel(self) -> int:
        spec = self.galaxy_set.schema.stack("image")
        if BAND not in spec.channels:
            raise Sim2obsValueError(f"the image stack has no {BAND} channel", value=spec.channels)
        return spec.channels.index(BAND)

    def stretched_images(self, split: str) -> np.ndarray:
        """``(N, 1, H, W)`` float32 arcsinh-stretched r-band images of ``split`` (inputs only:
        fine for the evaluation split too)."""
        images = self.galaxy_set.images("image", split)[:, self.channel():self.channel() + 1]
        return arcsinh_stretch(images, self.config.stretch_softening)

    def label_coder(self) -> LabelCoder:
        return LabelCoder(self.targets, tuple(self.config.log_targets)).fit(self.labels("train"))

    def dataset(self, split: str, coder: LabelCoder):
        """A training / validation dataset of stretched images and scaled labels: in memory when
        the split's images fit in ``max_memory_gb``, else read lazily from the galaxy set."""
        import torch

        from sim2obs.models.engine import TensorDictDataset

        gs = self.galaxy_set
        spec = gs.schema.stack("image")
        n = len(gs.indices(split))
        nbytes = n * spec.height * spec.width * 4
        if nbytes <= self.config.max_memory_gb * 1024 ** 3:
            x = torch.from_numpy(self.stretched_images(split))
            y = torch.as_tensor(coder.encode(self.labels(split)), dtype=torch.float32)
            return TensorDictDataset({"image": x}, y, torch.as_tensor(self.split_ids(split)))
        self.labels(split)  # refuses the evaluation split
        return gs.torch_dataset(split, inputs=["image"], targets=list(self.targets),
                                transform=_StretchChannel(self.channel(), self.config.stretch_softening),
                                target_transform=_EncodeTarget(coder))

    def point(self, samples: np.ndarray) -> np.ndarray:
        """The configured point estimate of ``(S, N, T)`` samples -> ``(N, T)``."""
        if self.config.point_estimate == "median":
            return np.median(samples, axis=0)
        return posterior_mode(samples, bins=self.config.mode_bins)


# --------------------------------------------------------------------------------------------
# Methods
# --------------------------------------------------------------------------------------------
def _predictions(task: BTPosteriorTask, ids: np.ndarray, samples: np.ndarray) -> Predictions:
    return Predictions(ids=ids, values=task.point(samples), targets=task.targets, samples=samples,
                       sigma=samples.std(axis=0))


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


def _n_outputs(c: BTPosteriorConfig, n_targets: int) -> int:
    """Network outputs: the targets (MSE), or the Gaussian head's mean + covariance parameters."""
    from sim2obs.models.gaussian_head import output_width

    return output_width(n_targets, c.covariance) if c.aleatoric else n_targets


def _task_arguments(model_cfg: Mapping[str, Any], rate: float, n_out: int) -> dict[str, Any]:
    """The task's values of ``dropout`` (the method's rate), ``num_outputs`` and ``in_channels``
    (1), for those of these keys the model config names: a user's class gets only its own arguments."""
    values = {"dropout": float(rate), "num_outputs": int(n_out), "in_channels": 1}
    return {k: v for k, v in values.items() if k in model_cfg}


class _Networks:
    """Trains (or reuses) one network per (model, dropout rate) under ``<out>/_shared`` and draws
    its MC-dropout posteriors."""

    def __init__(self, task: BTPosteriorTask, workdir: Path):
        self.task = task
        self.c: BTPosteriorConfig = task.config
        self.root = Task.shared_dir(workdir)
        self.coder = task.label_coder()
        self.trainer_cfg = task.trainer_config()
        self.n_out = _n_outputs(self.c, len(task.targets))
        self._datasets = None

    def key(self, model_cfg: Mapping[str, Any], rate: float) -> dict:
        from dataclasses import asdict

        trainer = asdict(self.trainer_cfg)
        trainer.pop("progress", None)
        return {"task": self.task.name, "version": self.task.metadata.version,
                "data": self.task.galaxy_set.content_hash, "model": dict(model_cfg), "dropout": float(rate),
                "aleatoric": self.c.aleatoric, "log_targets": list(self.c.log_targets),
                **({"covariance": self.c.covariance, "mean_mse_weight": self.c.mean_mse_weight}
                   if self.c.aleatoric else {}),
                "softening": self.c.stretch_softening, "trainer": trainer}

    def folder(self, model_cfg: Mapping[str, Any], rate: float) -> Path:
        from sim2obs.provenance import stable_hash

        name = str(model_cfg["_target_"]).rsplit(".", 1)[-1]
        return self.root / f"{name}_p{float(rate):g}_{stable_hash(self.key(model_cfg, rate), 10)}"

    def datasets(self):
        if self._datasets is None:
            self._datasets = (self.task.dataset("train", self.coder), self.task.dataset("val", self.coder))
        return self._datasets

    def train(self, model_cfg: Mapping[str, Any], rate: float):
        """The trained network (eval mode) and its run record."""
        from torch import nn

        from sim2obs.models import build_model
        from sim2obs.models.engine import Trainer, seed_everything
        from sim2obs.models.gaussian_head import NLLWithMeanMSE, gaussian_loss

        seed_everything(self.trainer_cfg.seed)
        overrides = _task_arguments(model_cfg, rate, self.n_out)
        model = build_model(dict(model_cfg), **overrides)
        stamp = self.task.galaxy_set.schema.stack("image").height
        need = getattr(model, "min_input_size", None)
        if need is not None and stamp < need:
            raise ConfigError(f"task.{self.task.name}.data.stamp", f"{type(model).__name__} needs images of at "
                              f"least {need} px", value=stamp)
        loss = gaussian_loss(len(self.task.targets), self.c.covariance) if self.c.aleatoric else nn.MSELoss()
        if self.c.aleatoric and self.c.mean_mse_weight > 0:
            loss = NLLWithMeanMSE(loss, self.c.mean_mse_weight)
        train, val = self.datasets()
        t0 = time.perf_counter()
        tcfg = replace(self.trainer_cfg, progress=bool(self.task.progress))  # bars on a terminal, epoch lines in logs
        label = f"{str(model_cfg['_target_']).rsplit('.', 1)[-1]} dropout {float(rate):g}"
        fit = Trainer(tcfg, loss=loss, callbacks=[] if tcfg.progress else [self.task.epoch_logger(label, tcfg.epochs)]
                      ).fit(model, train, val, self.folder(model_cfg, rate),
                                                      model_config={**dict(model_cfg), **overrides})
        model.eval()
        info = {"folder": str(fit.out_dir), "best_epoch": fit.best_epoch, "best_val_loss": fit.best_val_loss,
                "epochs_run": len(fit.history), "train_seconds": float(sum(r["seconds"] for r in fit.history)),
                "wall_seconds": time.perf_counter() - t0,
                "n_parameters": int(sum(p.numel() for p in model.parameters())),
                "_target_": str(model_cfg["_target_"])}
        return model, info

    def device(self):
        from sim2obs.device import select_device

        return select_device(self.trainer_cfg.device)

    def sample_z(self, model, images: np.ndarray, n: int, seed: int) -> np.ndarray:
        """``(n, N, T)`` posterior samples in the network's (scaled-label) space for stretched
        ``images`` ``(N, 1, H, W)``: MC-dropout passes, each drawing ``draws_per_pass`` points from
        the Gaussian it predicts when the head is aleatoric (:class:`GaussianDraw`)."""
        import torch

        from sim2obs.models.gaussian_head import GaussianDraw, flatten_draws
        from sim2obs.models.uncertainty import sample_posterior

        device = self.device()
        model.to(device)
        torch.manual_seed(seed)
        t = len(self.task.targets)
        draws = int(self.c.draws_per_pass) if self.c.aleatoric else 1
        draw = GaussianDraw(t, self.c.covariance, draws) if self.c.aleatoric else None
        passes = -(-int(n) // draws)
        block = max(1, min(len(images), 512))
        parts = []
        for start in range(0, len(images), block):
            x = torch.from_numpy(np.ascontiguousarray(images[start:start + block])).to(device)
            out = sample_posterior(model, x, passes, chunk=self.c.sample_chunk, draw=draw).float()
            out = flatten_draws(out)[:int(n)] if draw is not None else out[..., :t]
            parts.append(out.cpu().numpy())
        return np.concatenate(parts, axis=1).astype(np.float64)

    def to_physical(self, z: np.ndarray, width_scale=None) -> np.ndarray:
        """Scaled-space samples (after the optional per-target ``width_scale``) -> physical units,
        clipped to each target's range."""
        from sim2obs.models.gaussian_head import apply_width_scale

        if width_scale is not None:
            z = apply_width_scale(z, width_scale)
        return clip_to_bounds(self.coder.decode(z), self.task.targets)

    def sample(self, model, images: np.ndarray, n: int, seed: int, width_scale=None) -> np.ndarray:
        """``(n, N, T)`` physical-unit posterior samples (:meth:`sample_z`, :meth:`to_physical`)."""
        return self.to_physical(self.sample_z(model, images, n, seed), width_scale)

    def _calibration(self, samples: np.ndarray, y: np.ndarray) -> dict:
        rec = {"coverage": {}, "calibration_error": {}}
        for k, tname in enumerate(self.task.targets):
            rec["coverage"][tname] = {f"{lvl:.4f}": M.coverage(samples[:, :, k], y[:, k], lvl)
                                      for lvl in SELECTION_LEVELS}
            rec["calibration_error"][tname] = M.calibration_error(samples[:, :, k], y[:, k])
        rec["pooled"] = {f"{lvl:.4f}": M.coverage(samples, y, lvl) for lvl in SELECTION_LEVELS}
        return rec

    def validation(self, model_cfg: Mapping[str, Any], rate: float) -> dict:
        """Validation calibration of one rate (cached in its folder): coverages per target at the
        selection levels, calibration errors, the accuracy of the posterior median, and the width
        factors of the post-hoc recalibration with the coverages they give."""
        from sim2obs.models.gaussian_head import fit_width_scale

        n = int(self.c.val_samples or self.c.n_samples)
        draws = int(self.c.draws_per_pass) if self.c.aleatoric else 1
        path = self.folder(model_cfg, rate) / f"val_calibration_v2_n{n}_d{draws}_s{self.c.seed}.json"
        if path.exists():
            return json.loads(path.read_text())
        model, info = self.train(model_cfg, rate)
        z = self.sample_z(model, self.val_images(), n, self.c.seed + 17)
        samples = self.to_physical(z)
        y = self.task.labels("val")
        rec = {"rate": float(rate), "n_samples": n, "draws_per_pass": draws, **self._calibration(samples, y),
               "nmad_ratio": {}, "crps": {}}
        for k, tname in enumerate(self.task.targets):
            med = np.median(samples[:, :, k], axis=0)
            rec["nmad_ratio"][tname] = M.nmad(med - y[:, k]) / M.nmad(y[:, k])
            rec["crps"][tname] = M.crps(samples[:, :, k], y[:, k])
        scale = fit_width_scale(z, self.coder.encode(y))
        rec["width_scale"] = {t: float(v) for t, v in zip(self.task.targets, scale)}
        rec["recalibrated"] = self._calibration(self.to_physical(z, scale), y)
        rec["train"] = info
        text = json.dumps(rec, indent=1)
        atomic_write(path, lambda f: f.write(text), mode="w")
        return rec

    _val_images = None

    def val_images(self) -> np.ndarray:
        if self._val_images is None:
            self._val_images = self.task.stretched_images("val")
        return self._val_images

    def select(self, workdir: Path) -> tuple[float, list[dict]]:
        """Train every rate of ``dropout_rates`` (GaMPEN's ``model``), pick the one whose
        validation coverage is closest to nominal: of the posterior the task reports, i.e. after
        the width recalibration when ``recalibrate`` is on (``raw_distance`` records the distance
        before it, the paper's criterion); write the table to ``workdir``."""
        recs = [self.validation(self.c.model, r) for r in self.c.dropout_rates]

        def table(key: str | None) -> dict:
            return {rec["rate"]: {float(lvl): [(rec[key] if key else rec)["coverage"][t][lvl]
                                               for t in self.task.targets]
                                  for lvl in rec["pooled"]} for rec in recs}

        _, raw = select_dropout_rate(table(None))
        best, distances = select_dropout_rate(table("recalibrated" if self.c.recalibrate else None))
        for rec in recs:
            rec["distance"], rec["raw_distance"] = distances[rec["rate"]], raw[rec["rate"]]
            rec["selected"] = rec["rate"] == best
        _write_selection_table(recs, self.task.targets, workdir)
        return best, recs

    def recalibration(self, model_cfg: Mapping[str, Any], rate: float, workdir: Path) -> dict | None:
        """The post-hoc width recalibration of (model, rate), fitted on the validation split
        (:meth:`validation`), written to ``workdir/recalibration.json``; None when
        ``recalibrate`` is off."""
        from sim2obs.models.gaussian_head import RECALIBRATION_LEVELS

        if not self.c.recalibrate:
            return None
        rec = self.validation(model_cfg, rate)
        out = {"fitted_on": "val", "n_val": int(len(self.task.split_ids("val"))), "n_samples": rec["n_samples"],
               "space": "scaled labels (log10 for log_targets), about each posterior's median",
               "levels": [float(v) for v in RECALIBRATION_LEVELS], "width_scale": rec["width_scale"],
               "val_coverage_before": rec["coverage"], "val_coverage_after": rec["recalibrated"]["coverage"],
               "val_calibration_error_before": rec["calibration_error"],
               "val_calibration_error_after": rec["recalibrated"]["calibration_error"]}
        text = json.dumps(out, indent=1)
        Path(workdir).mkdir(parents=True, exist_ok=True)
        atomic_write(Path(workdir) / "recalibration.json", lambda f: f.write(text), mode="w")
        return out

    def posterior(self, model, workdir: Path, info: dict, model_cfg: Mapping[str, Any], rate: float) -> MethodOutput:
        split = self.c.eval_split
        images = self.task.stretched_images(split)
        recal = self.recalibration(model_cfg, rate, workdir)
        scale = None if recal is None else [recal["width_scale"][t] for t in self.task.targets]
        t0 = time.perf_counter()
        samples = self.sample(model, images, self.c.n_samples, self.c.seed + 29, width_scale=scale)
        info["sample_seconds"] = time.perf_counter() - t0
        info["point_estimate"] = self.c.point_estimate
        info["n_samples"] = int(self.c.n_samples)
        info["draws_per_pass"] = int(self.c.draws_per_pass) if self.c.aleatoric else 1
        info["likelihood"] = f"gaussian_{self.c.covariance}" if self.c.aleatoric else "mse"
        info["recalibration"] = recal
        info["label_coder"] = self.coder.to_dict()
        if hasattr(getattr(model, "stn", None), "theta") and self.c.stn_plot_galaxies > 0:
            info["stn"] = _stn_diagnostics(self.task, model, images, split, workdir, self.device())
        return MethodOutput(_predictions(self.task, self.task.split_ids(split), samples), info)


@with_torch_threads
def _run_fixed(task: BTPosteriorTask, workdir: Path) -> MethodOutput:
    nets = _Networks(task, workdir)
    model, info = nets.train(task.config.model, task.config.fixed_dropout)
    return nets.posterior(model, workdir, {"dropout": float(task.config.fixed_dropout), **info}, task.config.model,
                          task.config.fixed_dropout)


@with_torch_threads
def _run_gampen(task: BTPosteriorTask, workdir: Path) -> MethodOutput:
    nets = _Networks(task, workdir)
    rate, recs = nets.select(workdir)
    model, info = nets.train(task.config.model, rate)
    info = {"dropout": rate, "selection": "validation coverage closest to nominal (1, 2, 3 sigma)"
            + (", after the width recalibration" if task.config.recalibrate else ""),
            "dropout_table": _compact(recs, task.targets), **info}
    return nets.posterior(model, workdir, info, task.config.model, rate)


@with_torch_threads
def _run_no_stn(task: BTPosteriorTask, workdir: Path) -> MethodOutput:
    nets = _Networks(task, workdir)
    rate, recs = nets.select(workdir)
    model, info = nets.train(task.config.no_stn_model, rate)
    return nets.posterior(model, workdir, {"dropout": rate, "dropout_selected_by": "gampen", **info},
                          task.config.no_stn_model, rate)


def _compact(recs: list[dict], targets: Sequence[str]) -> list[dict]:
    return [{"rate": r["rate"], "distance": r["distance"], "raw_distance": r["raw_distance"],
             "selected": r["selected"], "pooled": r["pooled"],
             "coverage": r["coverage"], "calibration_error": r["calibration_error"], "nmad_ratio": r["nmad_ratio"],
             "crps": r["crps"], "width_scale": r["width_scale"], "recalibrated_coverage": r["recalibrated"]["coverage"],
             "best_epoch": r["train"]["best_epoch"], "best_val_loss": r["train"]["best_val_loss"]} for r in recs]


# --------------------------------------------------------------------------------------------
# Artefacts
# --------------------------------------------------------------------------------------------
def _write_selection_table(recs: list[dict], targets: Sequence[str], workdir: Path) -> None:
    """``dropout_selection.csv`` / ``.md`` (validation coverage per rate) and
    ``dropout_selection.png`` (distance from nominal per rate)."""
    from sim2obs.tasks import plots

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    levels = list(recs[0]["pooled"])
    head = ["rate"] + [f"{t}_cov{float(lvl) * 100:.2f}" for t in targets for lvl in levels] + \
        [f"pooled_cov{float(lvl) * 100:.2f}" for lvl in levels] + \
        [f"{t}_calibration_error" for t in targets] + [f"{t}_nmad_ratio" for t in targets] + \
        [f"{t}_width_scale" for t in targets] + ["best_val_loss", "raw_distance", "distance", "selected"]
    rows = []
    for r in recs:
        rows.append([f"{r['rate']:g}"] + [f"{r['coverage'][t][lvl]:.4f}" for t in targets for lvl in levels]
                    + [f"{r['pooled'][lvl]:.4f}" for lvl in levels]
                    + [f"{r['calibration_error'][t]:.4f}" for t in targets]
                    + [f"{r['nmad_ratio'][t]:.4f}" for t in targets]
                    + [f"{r['width_scale'][t]:.4f}" for t in targets]
                    + [f"{r['train']['best_val_loss']:.5g}", f"{r['raw_distance']:.4f}", f"{r['distance']:.4f}",
                       str(bool(r["selected"]))])
    csv = "\n".join(",".join(x) for x in [head] + rows) + "\n"
    atomic_write(workdir / "dropout_selection.csv", lambda f: f.write(csv), mode="w")
    md = ["Validation coverage per dropout rate (nominal 68.27 / 95.45 / 99.73 %); distance = mean |empirical - "
          "nominal| over levels and targets of the coverages shown (raw distance: before the width "
          "recalibration, the paper's criterion; distance: of the reported, recalibrated posterior when "
          "recalibrate is on); the selected rate has the smallest distance. Width scale: the per-target factor "
          "the recalibration fits on validation.", "",
          "| rate | " + " | ".join(f"{t} cov (68/95/99)" for t in targets) + " | pooled | width scale | raw distance "
          "| distance | selected |", "|---|" + "---|" * (len(targets) + 5)]
    for r in recs:
        cells = [f"{r['rate']:g}"] + ["/".join(f"{r['coverage'][t][lvl]:.3f}" for lvl in levels) for t in targets]
        cells += ["/".join(f"{r['pooled'][lvl]:.3f}" for lvl in levels),
                  "/".join(f"{r['width_scale'][t]:.3f}" for t in targets), f"{r['raw_distance']:.4f}",
                  f"{r['distance']:.4f}",
                  "**yes**" if r["selected"] else ""]
        md.append("| " + " | ".join(cells) + " |")
    text = "\n".join(md) + "\n"
    atomic_write(workdir / "dropout_selection.md", lambda f: f.write(text), mode="w")

    fig = plots.new_figure(5.0, 3.8)
    ax = fig.add_subplot()
    rates = [r["rate"] for r in recs]
    for lvl in levels:
        ax.plot(rates, [r["pooled"][lvl] for r in recs], marker="o", label=f"nominal {float(lvl):.4f}")
        ax.axhline(float(lvl), color="0.6", lw=0.8, ls=":")
    sel = [r["rate"] for r in recs if r["selected"]][0]
    ax.axvline(sel, color="tab:red", lw=1, label=f"selected {sel:g}")
    ax.set_xlabel("dropout rate")
    ax.set_ylabel("validation coverage (pooled)")
    ax.legend(fontsize=7)
    plots.save_figure(fig, workdir / "dropout_selection.png")


def calibration_with_errors(samples: np.ndarray, truth: np.ndarray, targets: Sequence[str], seed: int = 0,
                            n_boot: int = N_BOOTSTRAP, point: np.ndarray | None = None) -> dict:
    """Per target: coverages at 68.27/95.45/99.73 %, CRPS and (with ``point`` (N, T)) the NMAD of
    the point estimate, each with its 1σ bootstrap error (:func:`~sim2obs.tasks.metrics.bootstrap_error`,
    test objects resampled), the PIT KS distance and the PIT histogram (10 bins). ``samples``
    (S, N, T), ``truth`` (N, T)."""
    rows, hists = [], {}
    for k, t in enumerate(targets):
        s, y = samples[:, :, k], truth[:, k]
        row: dict[str, Any] = {"target": t}
        if point is not None:
            res = point[:, k] - y
            row["nmad"], row["nmad_err"] = M.nmad(res), M.bootstrap_error(M.nmad, res, n_boot=n_boot, seed=seed)
        for key, level in M.COVERAGE_LEVELS.items():
            inside = M.inside_interval(s, y, level)
            row[key], row[f"{key}_err"] = float(inside.mean()), M.bootstrap_error(np.mean, inside, n_boot=n_boot,
                                                                                  seed=seed)
        per_object = np.array([M.crps(s[:, i:i + 1], y[i:i + 1]) for i in range(len(y))])
        row["crps"], row["crps_err"] = float(per_object.mean()), M.bootstrap_error(np.mean, per_object,
                                                                                   n_boot=n_boot, seed=seed)
        row["pit_ks"] = M.pit_ks(s, y, seed=seed)
        hists[t] = M.pit_histogram(s, y, bins=10, seed=seed).tolist()
        rows.append(row)
    return {"rows": rows, "pit_histogram": hists}


def _bootstrap_lines(boot_rows: list[dict], targets: Sequence[str]) -> list[str]:
    if not boot_rows:
        return []
    out = [f"Coverage of the central 68.27 / 95.45 / 99.73 % intervals, CRPS and the point estimate's NMAD, "
           f"± 1σ bootstrap error ({N_BOOTSTRAP} resamples of the test objects); PIT KS = distance of the "
           "PIT distribution from uniform (pit_histogram.csv).", "",
           "| method | target | cov68 | cov95 | cov99.7 | CRPS | PIT KS | NMAD |", "|---|---|---|---|---|---|---|---|"]
    for b in boot_rows:
        cov = [f"{b[k]:.3f} ± {b[k + '_err']:.3f}" for k in M.COVERAGE_LEVELS]
        out.append(f"| {b['method']} | {b['target']} | " + " | ".join(cov)
                   + f" | {b['crps']:.4g} ± {b['crps_err']:.2g} | {b['pit_ks']:.3f} | "
                   f"{b['nmad']:.4g} ± {b['nmad_err']:.2g} |")
    return out + [""]


def _plot_pit(p: Predictions, truth: Truth, targets: Sequence[str], path: Path, seed: int) -> Path:
    """PIT histograms, one panel per target (flat at 1 when the posteriors are calibrated)."""
    from sim2obs.tasks import plots

    fig = plots.new_figure(3.0 * len(targets), 2.4)
    for k, t in enumerate(targets):
        ax = fig.add_subplot(1, len(targets), k + 1)
        frac = M.pit_histogram(p.samples[:, :, k], truth.values[:, k], bins=10, seed=seed)
        ax.bar(np.arange(10) / 10 + 0.05, frac * 10, width=0.1, color="tab:blue", alpha=0.7)
        ax.axhline(1.0, color="k", lw=0.8, ls=":")
        ax.set_xlabel(f"PIT {t}", fontsize=7)
        ax.tick_params(labelsize=6)
    return plots.save_figure(fig, path)


def _stn_diagnostics(task: BTPosteriorTask, model, images: np.ndarray, split: str, workdir: Path, device) -> dict:
    """Figure ``stn_input_output.png`` (input with the sampled region outlined / transformer
    output, for test galaxies with secondaries first) and the mean area fraction the
    transformer samples (|det A|; < 1: it zooms in), with and without secondaries."""
    import torch

    from sim2obs.tasks import plots

    n_sec = task.galaxy_set.column("n_secondary", split) if "n_secondary" in task.galaxy_set.schema.column_names \
        else np.zeros(len(images), int)
    stn = model.stn
    with torch.no_grad():
        thetas, outs = [], []
        for start in range(0, len(images), 256):
            x = torch.from_numpy(np.ascontiguousarray(images[start:start + 256])).to(device)
            thetas.append(stn.theta(x).float().cpu().numpy())
        theta = np.concatenate(thetas)
        area = np.abs(np.linalg.det(theta[:, :, :2]))
        order = np.concatenate([np.flatnonzero(n_sec > 0), np.flatnonzero(n_sec == 0)])
        pick = order[:min(task.config.stn_plot_galaxies, len(order))]
        x = torch.from_numpy(np.ascontiguousarray(images[pick])).to(device)
        outs = stn(x).float().cpu().numpy()
    k = len(pick)
    fig = plots.new_figure(1.9 * k + 0.4, 4.0)
    side = images.shape[-1]
    corners = np.array([[-1, -1, 1], [1, -1, 1], [1, 1, 1], [-1, 1, 1], [-1, -1, 1]], dtype=float)
    for j, i in enumerate(pick):
        vmin, vmax = np.percentile(images[i, 0], [1, 99.8])
        ax = fig.add_subplot(2, k, j + 1)
        ax.imshow(images[i, 0], origin="lower", cmap="gray", vmin=vmin, vmax=vmax)
        box = corners @ theta[i].T  # normalised input coordinates of the output frame's corners
        ax.plot((box[:, 0] + 1) * side / 2 - 0.5, (box[:, 1] + 1) * side / 2 - 0.5, color="tab:red", lw=1)
        ax.set_title(f"input ({int(n_sec[i])} sec.)", fontsize=7)
        ax.set_xlim(-0.5, side - 0.5)
        ax.set_ylim(-0.5, side - 0.5)
        ax.axis("off")
        ax = fig.add_subplot(2, k, k + j + 1)
        ax.imshow(outs[j, 0], origin="lower", cmap="gray", vmin=vmin, vmax=vmax)
        ax.set_title(f"STN output (area {area[i]:.2f})", fontsize=7)
        ax.axis("off")
    plots.save_figure(fig, Path(workdir) / "stn_input_output.png")
    with_sec = area[n_sec > 0]
    without = area[n_sec == 0]
    return {"area_fraction_mean": float(area.mean()),
            "area_fraction_with_secondaries": float(with_sec.mean()) if len(with_sec) else None,
            "area_fraction_without_secondaries": float(without.mean()) if len(without) else None,
            "translation_mean_px": float(np.mean(np.hypot(theta[:, 0, 2], theta[:, 1, 2])) * side / 2)}


def _plot_example_posteriors(p: Predictions, truth: Truth, targets: Sequence[str], units: Sequence[str],
                             path: Path) -> Path:
    """Marginal posteriors of three evaluation galaxies (histograms of the samples) with the
    truth, mode/point estimate and median marked (the paper's Fig. 2)."""
    from sim2obs.tasks import plots

    rows = min(3, len(p.ids))
    fig = plots.new_figure(3.0 * len(targets), 2.2 * rows)
    for r in range(rows):
        for k, (t, u) in enumerate(zip(targets, units)):
            ax = fig.add_subplot(rows, len(targets), r * len(targets) + k + 1)
            s = p.samples[:, r, k]
            ax.hist(s, bins=min(40, max(5, len(s) // 5)), color="tab:blue", alpha=0.7)
            ax.axvline(truth.values[r, k], color="gold", lw=2, label="truth")
            ax.axvline(p.values[r, k], color="tab:red", lw=1, label="point")
            ax.axvline(np.median(s), color="k", lw=1, ls="--", label="median")
            ax.set_xlabel(f"{t} [{u}]" if u else t, fontsize=7)
            ax.tick_params(labelsize=6)
            if r == 0 and k == 0:
                ax.legend(fontsize=6)
    return plots.save_figure(fig, path)
