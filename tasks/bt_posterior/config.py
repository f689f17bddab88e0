"""Settings and constants of ``bt_posterior``: the band and targets with their units and physical
ranges, the metric names, the selection levels and :class:`BTPosteriorConfig`."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from sim2obs.tasks.base import TaskConfig

__all__ = ["BAND", "TARGETS", "UNITS", "BOUNDS", "SELECTION_LEVELS", "POINT_KEYS", "CALIB_KEYS", "N_BOOTSTRAP",
           "NANOMAGGY_NJY", "BTPosteriorConfig"]

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
    """Settings of ``bt_posterior`` (see the package docstring).

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

