"""Task ``multibranch_mass``: central stellar mass, total mass and M*/L_r of simulated TNG galaxies
from an r image, a g - r colour map and stellar kinematic maps (Chu et al. 2024, MNRAS;
"Galaxy stellar and total mass estimation using machine learning", arXiv:2311.10351).

Data (the ``tng`` generator, schema in the shared spec): one object = one (subhalo, projection);
splits per subhalo. Stacks ``r_<N>`` (dust-attenuated r luminosity per pixel, L_sun; N = 300,
150, 60 px across +-3 R_half), ``gr_<N>`` (g - r, AB mag; 0 where there is no light), ``vmap``
and ``sigmamap`` (48 x 48 luminosity-weighted l.o.s. mean velocity and dispersion, km/s; 0 where
invalid) and ``kinmask`` (1 where a kinematic pixel is valid).

Targets (all in dex; ``metadata.targets``)
    ``log_mstar_rhalf`` (log10 M* within the 3D stellar half-mass radius, M_sun),
    ``log_mtot_rhalf`` (log10 total mass within it, M_sun), ``log_ml_r`` (log10 projected
    M*/L_r within the projected R_half, M_sun/L_sun). Every other physical column of the set
    (all ``log_m*``, ``f_dm_rhalf``, ``rhalf_kpc``, ``fov_kpc``, ids of the subhalo, ...) is a
    label too: :meth:`MultibranchMassTask.features` gives only the observables of
    :data:`OBSERVABLE_COLUMNS` (the summary statistics of the paper's Table 1, ``log_lr_rhalf``
    and redshift).

Preprocessing (§2.2: "linearly scale all pixels of images and maps to [0, 1]"), per input
branch, fitted on the training split only (:func:`fit_unit_scaling`, :class:`UnitScaling`):
    ``image``    ``scaling.image: log`` (default): x = log10(max(L, floor)) with
                 floor = (brightest training pixel) x 10^-``log_range_dex`` (default 4 dex),
                 then min-max to [0, 1] (so dark pixels are 0 and the brightest training pixel
                 1); ``linear``: min-max of L itself. The paper scaled linearly, but SPH images
                 span > 4 dex and linearly scaled they are black apart from the centre; the log
                 keeps the outskirts. One global scaling (not per image), so the total
                 luminosity, the strongest predictor of mass (§5), stays in the input.
    ``colour``   min-max of g - r over the lit pixels (r luminosity > 0) of the training set;
                 unlit pixels stay 0.
    ``vmap``, ``sigmamap``  min-max over the valid pixels (``kinmask``) of the training set;
                 invalid pixels stay 0. ``kinmask_channel: true`` adds the mask as a second
                 channel of both kinematic branches.
Validation and test pixels use the training scaling and may fall slightly outside [0, 1].

Methods (in the order they run)
    ``power_law``         log y = a + b log L_r per target (L_r = ``log_lr_rhalf``, fitted by
                          least squares on train; §4.1, 0.16 dex for M*);
    ``lightgbm``          LightGBM, 500 trees of 5 leaves, objective regression, one model per
                          target, on the summary statistics (mag_r, g_r, sfr_1gyr, sersic_n, q_3d,
                          sigma_e, lambda_r, kin_bt, f_cold, f_hot; §2.3, Table 3); training objects
                          with Sersic n > 100 or kin_bt > 1 are left out (§2.3), the evaluation
                          split is predicted whole;
    ``lightgbm_no_mag``   the same without mag_r (Table 6 "w/o Mag");
    ``cnn``               the multi-branch ResNet-18 (:mod:`sim2obs.models.multibranch`) on
                          ``inputs`` (default r image + the two kinematic maps) at
                          ``image_resolution`` px; the three targets jointly (``joint: true``; false:
                          one network per target); MSE on targets standardised with the training
                          mean and standard deviation; Adam with cosine annealing (paper Table 2:
                          batch 40, lr 1e-4, 200 epochs); the epoch of lowest validation loss is kept
                          (§4). The evaluation split's labels are never read (its datasets get
                          placeholder targets);
    ``cnn_<variant>``     with ``ablation.enabled`` (``configs/task/multibranch_mass/ablation.yaml``):
                          the paper's Table 4 inputs ``image``, ``image_colour`` ("g and r images"),
                          ``maps`` (the two V maps), ``image_maps``, ``image_colour_maps``, and
                          ``cnn_image_<N>px``: the image-only network at each other resolution of the
                          set (the image-only row at ``image_resolution`` is ``cnn_image``). Networks
                          with identical settings are trained once (``_shared/networks/fit-<hash>``).

    Run the ablation with ``sim2obs run tasks=[multibranch_mass] task/multibranch_mass=ablation``
    (quick scale), or at paper scale with ``task/multibranch_mass=paper
    task.multibranch_mass.ablation.enabled=true``.

Metrics (per target ``t``; residual = prediction - truth, dex): ``t/bias_mean`` (the paper's
"mean"), ``t/scatter_dex`` (its "1-sigma": standard deviation of the residuals), ``t/rmse``,
``t/nmad``. Main score: ``log_mstar_rhalf/scatter_dex`` (lower is better; biases rank by |bias|).

Diagnostics (files under the run folder)
    ``lightgbm[_no_mag]/importances.csv`` and ``importance_<target>.png``: LightGBM gain importances
    per target, for the three targets and the study targets of Table 6 (``lightgbm.study_targets``:
    also log_mdm_rhalf, f_star_rhalf = M*/M_tot and f_dm_rhalf, trained only as diagnostics: their
    predictions stay out of the leaderboard); ``lightgbm_study.{csv,md}`` (from :meth:`summarise`):
    per study target, with and without mag_r: bias, scatter, top-3 features by gain and the paper's
    Table 6 values; ``correlation_matrix.{csv,png}``: Pearson R of the features and study targets on
    the training split (Fig. 10); ``ablation_table.{csv,md}``: variant, inputs, resolution, target,
    bias, scatter and the paper's Table 4 value; ``scatter_by_method.png``.

Numbers the paper's text lost (chosen here, all configurable): the selection cuts (the generator's
``selection``), the LightGBM learning rate (0.1, LightGBM's default), the log dynamic range of the
image scaling (4 dex), the MLP head (one hidden layer of 256, ``configs/model/multibranch_resnet18``).
The paper quotes the fractions' scatters in "dex"; f_star_rhalf and f_dm_rhalf are linear fractions
here (as the set stores f_dm_rhalf), so their scatter is in fraction units.
"""
from __future__ import annotations

import csv
import io
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import nn

from sim2obs.atomic import atomic_write
from sim2obs.config import to_plain
from sim2obs.errors import ConfigError, DataFormatError, Sim2obsValueError
from sim2obs.provenance import stable_hash
from sim2obs.tasks import TASKS
from sim2obs.tasks import metrics as M
from sim2obs.tasks.base import (Method, MethodOutput, PaperResult, Predictions, Task, TaskConfig, TaskMetadata,
                                Truth, write_csv_rows)

__all__ = [
    "MultibranchMassTask", "MultibranchMassConfig", "ScalingConfig", "LightGBMConfig", "AblationConfig",
    "UnitScaling", "fit_unit_scaling", "fit_power_law", "BranchInputs", "TARGETS", "BRANCHES", "VARIANTS",
    "SUMMARY_FEATURES", "OBSERVABLE_COLUMNS", "paper_ablation_value",
]

TARGETS = ("log_mstar_rhalf", "log_mtot_rhalf", "log_ml_r")
BRANCHES = ("image", "colour", "vmap", "sigmamap")
KIN_BRANCHES = ("vmap", "sigmamap")
KINMASK = "kinmask"
LUMINOSITY = "log_lr_rhalf"
MAGNITUDE = "mag_r"
#: The GBDT inputs of the paper's Table 1.
SUMMARY_FEATURES = ("mag_r", "g_r", "sfr_1gyr", "sersic_n", "q_3d", "sigma_e", "lambda_r", "kin_bt", "f_cold",
                    "f_hot")
#: Catalogue columns that are observables; every other column of the set is a label.
OBSERVABLE_COLUMNS = (*SUMMARY_FEATURES, LUMINOSITY, "redshift", "summary_flags")
#: Input branches of the ablation variants (paper Table 4).
VARIANTS: dict[str, tuple[str, ...]] = {
    "image": ("image",),
    "image_colour": ("image", "colour"),
    "maps": ("vmap", "sigmamap"),
    "image_maps": ("image", "vmap", "sigmamap"),
    "image_colour_maps": ("image", "colour", "vmap", "sigmamap"),
}
#: Study targets computed from other columns: name -> (columns, function, unit).
DERIVED = {"f_star_rhalf": (("log_mstar_rhalf", "log_mtot_rhalf"), lambda ms, mt: 10.0 ** (ms - mt), "")}
#: Targets the LightGBM study may fit (label columns of the set, and the derived ones).
STUDY_TARGETS = ("log_mstar_rhalf", "log_mdm_rhalf", "log_mgas_rhalf", "log_mtot_rhalf", "log_ml_r", "f_dm_rhalf",
                 "f_star_rhalf", "log_msub", "log_mstar_30kpc")
UNITS = {"f_dm_rhalf": "fraction", "f_star_rhalf": "fraction"}
#: Defaults of the tng generator (shared spec) for the image sizes, when the data config omits them.
DEFAULT_IMAGE_PX, DEFAULT_REBIN_PX = 300, (150, 60)
SCALINGS = ("log", "linear")
_CHUNK = 1024

#: Paper Table 6 (LightGBM): scatter per (target, with mag_r).
PAPER_GBDT: dict[tuple[str, bool], float] = {
    ("log_mstar_rhalf", True): 0.05, ("log_mstar_rhalf", False): 0.08,
    ("log_mdm_rhalf", True): 0.13, ("log_mdm_rhalf", False): 0.15,
    ("log_mtot_rhalf", True): 0.08, ("log_mtot_rhalf", False): 0.11,
    ("f_star_rhalf", True): 0.08, ("f_dm_rhalf", True): 0.06, ("log_ml_r", True): 0.06,
}
#: Paper Table 4 / §4.1-4.4 (CNN, 300 px r images): scatter per (inputs, target).
PAPER_CNN: dict[tuple[str, ...], dict[str, float]] = {
    ("image",): {"log_mstar_rhalf": 0.06, "log_mtot_rhalf": 0.07, "log_ml_r": 0.10},
    ("image", "colour"): {"log_mstar_rhalf": 0.05, "log_mtot_rhalf": 0.07, "log_ml_r": 0.05},
    ("vmap", "sigmamap"): {"log_mstar_rhalf": 0.05, "log_mtot_rhalf": 0.09, "log_ml_r": 0.11},
    ("image", "vmap", "sigmamap"): {"log_mstar_rhalf": 0.04, "log_mtot_rhalf": 0.06, "log_ml_r": 0.07},
    ("image", "colour", "vmap", "sigmamap"): {"log_ml_r": 0.04},
}
#: Paper §4.1: M* scatter of the r-image-only network per image resolution (px).
PAPER_RESOLUTION = {300: 0.06, 150: 0.06, 60: 0.07}
#: Paper §4.3: the network trained on M* and M_tot together (r image + 2 V maps).
PAPER_JOINT = {"log_mstar_rhalf": 0.04, "log_mtot_rhalf": 0.06}


def paper_ablation_value(inputs: Sequence[str], resolution_px: int, target: str,
                         joint: bool = False) -> tuple[float | None, str]:
    """The paper's CNN scatter (dex) for ``inputs`` at ``resolution_px`` and ``target`` (``joint``:
    for a network predicting several targets), and a note saying where it comes from (None when the
    paper has no such network)."""
    key = tuple(b for b in BRANCHES if b in inputs)
    if key == ("image",) and target == "log_mstar_rhalf" and resolution_px in PAPER_RESOLUTION:
        return PAPER_RESOLUTION[resolution_px], f"§4.1, r image at {resolution_px} px"
    if joint and key == ("image", "vmap", "sigmamap") and target in PAPER_JOINT:
        return PAPER_JOINT[target], "§4.3, M* and M_tot by one network, 300 px images"
    value = PAPER_CNN.get(key, {}).get(target)
    if value is None:
        return None, ""
    needs_image = "image" in key or "colour" in key
    return value, "Table 4" + (", 300 px images" if needs_image else "") + ", one target per network"


# --------------------------------------------------------------------------------------------
# Preprocessing: linear scaling to [0, 1] fitted on the training split
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class UnitScaling:
    """x' = (f(x) - lo) / (hi - lo), 0 where the pixel is invalid.

    ``mode``: ``linear`` (f(x) = x) or ``log`` (f(x) = log10(max(x, floor)); ``lo`` = log10(floor),
    so unlit pixels map to 0). ``lo``, ``hi`` are in f's units (the raw unit, or dex of it)."""

    mode: str
    lo: float
    hi: float
    floor: float | None = None

    def apply(self, images: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """Scaled float32 copy of ``images`` (any shape); ``valid`` (same shape, bool) marks the
        pixels to scale, the others are set to 0."""
        x = np.asarray(images, dtype=np.float32)
        if self.mode == "log":
            x = np.log10(np.maximum(x, np.float32(self.floor)))
        span = self.hi - self.lo if self.hi > self.lo else 1.0
        out = ((x - np.float32(self.lo)) / np.float32(span)).astype(np.float32, copy=False)
        if valid is not None:
            out = np.where(valid, out, np.float32(0.0))
        return out


def fit_unit_scaling(images: np.ndarray, valid: np.ndarray | None = None, mode: str = "linear",
                     log_range_dex: float = 4.0) -> UnitScaling:
    """The :class:`UnitScaling` mapping the ``valid`` pixels of ``images`` (the training split)
    onto [0, 1]: min-max of the values (``linear``) or of log10 of the values floored at
    ``max x 10^-log_range_dex`` (``log``, for luminosities >= 0)."""
    if mode not in SCALINGS:
        raise Sim2obsValueError("unknown scaling", value=mode, allowed=list(SCALINGS))
    x = np.asarray(images)
    mask = None if valid is None else np.asarray(valid, bool)
    if mask is not None and mask.shape != x.shape:
        raise Sim2obsValueError(f"valid mask has shape {mask.shape}, images {x.shape}", value=mask.shape)
    if x.size == 0 or (mask is not None and not mask.any()):
        raise Sim2obsValueError("no valid pixel to fit a scaling on", value=x.shape)
    extra = {} if mask is None else {"where": mask}
    hi = float(np.max(x, initial=-np.inf, **extra))
    if mode == "linear":
        return UnitScaling("linear", float(np.min(x, initial=np.inf, **extra)), hi)
    if not log_range_dex > 0:
        raise Sim2obsValueError("log_range_dex must be positive", value=log_range_dex)
    if not hi > 0:
        raise Sim2obsValueError("a logarithmic scaling needs some positive pixel", value=hi)
    floor = hi * 10.0 ** (-float(log_range_dex))
    return UnitScaling("log", math.log10(floor), math.log10(hi), floor)


def fit_power_law(log_l: np.ndarray, log_y: np.ndarray) -> tuple[float, float]:
    """Least-squares fit of log y = a + b log L (a power law y ∝ L^b); returns ``(a, b)``."""
    x, y = np.asarray(log_l, float), np.asarray(log_y, float)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 2:
        raise Sim2obsValueError("a power-law fit needs two 1-D arrays of equal length >= 2", value=(x.shape, y.shape))
    if np.ptp(x) == 0:
        raise Sim2obsValueError("the luminosities are all equal: the slope is undefined", value=float(x[0]))
    b, a = np.polyfit(x, y, 1)
    return float(a), float(b)


class BranchInputs(nn.Module):
    """Calls a multi-branch network with a dict ``{branch: tensor}`` also when the training engine
    passes a single tensor (a batch with one input stack): ``names[0]`` is then its branch."""

    def __init__(self, net: nn.Module, names: Sequence[str]):
        super().__init__()
        self.net = net
        self.names = list(names)

    def forward(self, x):
        return self.net(x if isinstance(x, Mapping) else {self.names[0]: x})


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------
@dataclass
class ScalingConfig:
    """Scaling of the r image (see the module docstring): ``image``: ``log`` or ``linear``;
    ``log_range_dex``: dynamic range kept by the log scaling below the brightest training pixel."""

    image: str = "log"
    log_range_dex: float = 4.0


def _default_lgbm_params() -> dict[str, Any]:
    # Table 3: num_leaves 5, objective regression, min_data_in_leaf 20 (LightGBM's default), no
    # depth limit; the learning rate is not given (LightGBM's default 0.1).
    return {"objective": "regression", "num_leaves": 5, "min_data_in_leaf": 20, "max_depth": -1,
            "learning_rate": 0.1}


@dataclass
class LightGBMConfig:
    """The GBDT of §3.2 / §5. ``features``: observables (``lightgbm_no_mag`` drops mag_r);
    ``num_boost_round`` trees (Table 3: 500); ``params``: LightGBM parameters; training objects
    with ``sersic_n > sersic_n_max`` or ``kin_bt > kin_bt_max`` are left out (§2.3; null: keep);
    ``num_threads`` (0: LightGBM's default); ``study_targets``: the diagnostics of Table 6 (gain
    importances and the ``lightgbm_study`` table; the three task targets are always fitted)."""

    features: list[str] = field(default_factory=lambda: list(SUMMARY_FEATURES))
    num_boost_round: int = 500
    params: dict[str, Any] = field(default_factory=_default_lgbm_params)
    sersic_n_max: Optional[float] = 100.0
    kin_bt_max: Optional[float] = 1.0
    num_threads: int = 0
    study_targets: list[str] = field(default_factory=lambda: [
        "log_mstar_rhalf", "log_mdm_rhalf", "log_mtot_rhalf", "f_star_rhalf", "f_dm_rhalf", "log_ml_r"])


@dataclass
class AblationConfig:
    """The input and resolution study of Table 4 (methods ``cnn_<variant>``, ``cnn_image_<N>px``).

    ``variants``: names of :data:`VARIANTS`; ``resolutions``: r-image sizes (px) of the image-only
    network (null: every size the set has); ``trainer``: overrides of the task's ``trainer`` for
    these networks (null: the same schedule)."""

    enabled: bool = False
    variants: list[str] = field(default_factory=lambda: list(VARIANTS))
    resolutions: Optional[list[int]] = None
    trainer: Any = None


def _default_model() -> dict[str, Any]:
    return {"_target_": "sim2obs.models.multibranch.multibranch_resnet18",
            "input_channels": {"image": 1, "vmap": 1, "sigmamap": 1}, "num_outputs": 1,
            "small_input": {"image": False, "vmap": True, "sigmamap": True}, "head_hidden": [256],
            "enabled": None, "dropout": 0.0}


@dataclass
class MultibranchMassConfig(TaskConfig):
    """Settings of the ``multibranch_mass`` task (presets:
    ``configs/task/multibranch_mass/{quick,paper,ablation}.yaml``).

    ``model``: Hydra config of the multi-branch network; the task sets its ``input_channels`` (1 per
    branch, 2 for the kinematic branches with ``kinmask_channel``), ``num_outputs`` and ``enabled``
    (a swapped-in ``_target_`` must accept these three and a dict of branch tensors);
    ``trainer``: :class:`sim2obs.models.engine.TrainerConfig` fields; ``inputs``: branches of the
    ``cnn`` (of ``image``, ``colour``, ``vmap``, ``sigmamap``); ``image_resolution``: size (px) of
    the r image and colour map (a stack ``r_<N>`` of the set); ``kinmask_channel``; ``joint``: one
    network for the three targets (false: one per target); ``scaling``: :class:`ScalingConfig`;
    ``lightgbm``: :class:`LightGBMConfig`; ``ablation``: :class:`AblationConfig`. ``seed`` offsets
    the trainer seed and seeds LightGBM."""

    model: dict[str, Any] = field(default_factory=_default_model)
    trainer: dict[str, Any] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=lambda: ["image", "vmap", "sigmamap"])
    image_resolution: int = 60
    kinmask_channel: bool = False
    joint: bool = True
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    lightgbm: LightGBMConfig = field(default_factory=LightGBMConfig)
    ablation: AblationConfig = field(default_factory=AblationConfig)


# --------------------------------------------------------------------------------------------
# The task
# --------------------------------------------------------------------------------------------
PAPER_NOTE = "Chu et al. 2024, TNG100-1 z=0, 28,110 projections (test 8,110), 300 px r images"


def _metric_names() -> tuple[str, ...]:
    keys = [f"{TARGETS[0]}/scatter_dex"]
    for t in TARGETS:
        keys += [f"{t}/{k}" for k in ("scatter_dex", "bias_mean", "rmse", "nmad", "l1")]
    return tuple(dict.fromkeys(keys))


@TASKS.register("multibranch_mass")
class MultibranchMassTask(Task):
    """Central M*, M_tot and M*/L_r from images and kinematic maps (Chu et al. 2024); see the
    module docstring."""

    metadata = TaskMetadata(
        name="multibranch_mass",
        version="1.0",
        description="central stellar mass, total mass (within R_half) and M*/L_r of TNG galaxies from r image, "
                    "g-r map and stellar kinematic maps (multi-branch ResNet-18), with LightGBM and power-law "
                    "baselines",
        citation="Chu J., Tang H., Xu D., Lu S., Long R., 2024, MNRAS: Galaxy stellar and total mass estimation "
                 "using machine learning (arXiv:2311.10351)",
        inputs=("r_<N>", "gr_<N>", "vmap", "sigmamap", KINMASK, LUMINOSITY, *SUMMARY_FEATURES),
        targets=TARGETS,
        target_units=("dex", "dex", "dex"),
        main_score=f"{TARGETS[0]}/scatter_dex",
        metrics=_metric_names(),
        higher_is_better=False,
        paper={
            "cnn": PaperResult(0.04, f"{PAPER_NOTE}; r image + 2 V maps, §4.1, Table 4 (M_tot 0.06, M*/L 0.07)"),
            "power_law": PaperResult(0.16, f"{PAPER_NOTE}; power law in luminosity, §4.1, Fig. 6"),
            "lightgbm": PaperResult(0.05, f"{PAPER_NOTE}; LightGBM on Table 1 statistics, §5.2, Table 6"),
            "lightgbm_no_mag": PaperResult(0.08, f"{PAPER_NOTE}; LightGBM without the magnitude, §5.2, Table 6"),
        },
    )
    config_class = MultibranchMassConfig

    def __init__(self, *args: Any, **kwargs: Any):
        self._cache: dict[tuple, Any] = {}
        super().__init__(*args, **kwargs)

    # -- config ---------------------------------------------------------------------------
    def validate_config(self) -> None:
        super().validate_config()
        cfg = self.config
        name = f"task.{self.name}"
        self.trainer_config()  # typos and bad values of trainer.* raise here
        if cfg.ablation.trainer is not None:
            self.trainer_config(ablation=True)
        if not isinstance(cfg.model, dict) or "_target_" not in cfg.model:
            raise ConfigError(f"{name}.model", "a network config needs a _target_", value=cfg.model)
        if cfg.eval_split in ("train", "val"):
            raise ConfigError(f"{name}.eval_split", "the methods train on 'train' and select on 'val'; evaluate "
                              "another split", value=cfg.eval_split)
        self._check_branches(f"{name}.inputs", cfg.inputs)
        if int(cfg.image_resolution) != cfg.image_resolution or cfg.image_resolution < 1:
            raise ConfigError(f"{name}.image_resolution", "a positive number of pixels", value=cfg.image_resolution)
        available = self.available_resolutions()
        if available and cfg.image_resolution not in available and any(b in cfg.inputs for b in ("image", "colour")):
            raise ConfigError(f"{name}.image_resolution", "the set has no r image of this size",
                              value=cfg.image_resolution, allowed=available)
        if cfg.scaling.image not in SCALINGS:
            raise ConfigError(f"{name}.scaling.image", "unknown scaling", value=cfg.scaling.image,
                              allowed=list(SCALINGS))
        if not cfg.scaling.log_range_dex > 0:
            raise ConfigError(f"{name}.scaling.log_range_dex", "must be positive", value=cfg.scaling.log_range_dex)
        lg = cfg.lightgbm
        bad = [f for f in lg.features if f not in OBSERVABLE_COLUMNS]
        if bad or not lg.features or len(set(lg.features)) != len(lg.features):
            raise ConfigError(f"{name}.lightgbm.features", "distinct observables (labels are not features)",
                              value=bad or list(lg.features), allowed=list(OBSERVABLE_COLUMNS))
        if lg.features == [MAGNITUDE]:
            raise ConfigError(f"{name}.lightgbm.features", "lightgbm_no_mag needs a feature besides mag_r",
                              value=list(lg.features))
        if int(lg.num_boost_round) < 1:
            raise ConfigError(f"{name}.lightgbm.num_boost_round", "must be at least 1", value=lg.num_boost_round)
        if int(lg.num_threads) < 0:
            raise ConfigError(f"{name}.lightgbm.num_threads", "must be >= 0 (0: LightGBM's default)",
                              value=lg.num_threads)
        bad = [t for t in lg.study_targets if t not in STUDY_TARGETS]
        if bad:
            raise ConfigError(f"{name}.lightgbm.study_targets", "unknown study target", value=bad,
                              allowed=list(STUDY_TARGETS))
        ab = cfg.ablation
        for v in ab.variants:
            if v not in VARIANTS:
                import difflib

                close = difflib.get_close_matches(str(v), list(VARIANTS), n=1)
                raise ConfigError(f"{name}.ablation.variants", "unknown variant" +
                                  (f"; did you mean {close[0]!r}?" if close else ""), value=v, allowed=list(VARIANTS))
        if len(set(ab.variants)) != len(ab.variants):
            raise ConfigError(f"{name}.ablation.variants", "listed twice", value=list(ab.variants))
        if ab.resolutions is not None:
            res = list(ab.resolutions)
            if any(int(r) != r or r < 1 for r in res) or len(set(res)) != len(res):
                raise ConfigError(f"{name}.ablation.resolutions", "distinct positive pixel counts", value=res)
            missing = [r for r in res if available and r not in available]
            if missing:
                raise ConfigError(f"{name}.ablation.resolutions", "the set has no r image of this size",
                                  value=missing, allowed=available)

    @staticmethod
    def _check_branches(key: str, names: Sequence[str]) -> None:
        import difflib

        for b in names:
            if b not in BRANCHES:
                close = difflib.get_close_matches(str(b), BRANCHES, n=1)
                raise ConfigError(key, "unknown input branch" + (f"; did you mean {close[0]!r}?" if close else ""),
                                  value=b, allowed=list(BRANCHES))
        if not names or len(set(names)) != len(names):
            raise ConfigError(key, "one or more distinct branches", value=list(names), allowed=list(BRANCHES))

    def trainer_config(self, ablation: bool = False):
        """The validated trainer config of the networks (with ``ablation.trainer`` merged on top for
        the ablation variants); seed offset by the task seed."""
        return self.merged_trainer_config(self.config.ablation.trainer if ablation else None)

    def simgen_config(self) -> dict[str, Any]:
        """The ``tng`` generator's config of the task's simulated set (defaults filled in)."""
        from sim2obs.simgen import canonical_config

        return canonical_config({"generator": "tng", **self.config.data})

    def available_resolutions(self) -> list[int]:
        """Sizes (px) of the r images of the set, largest first, from the config alone: the data
        config's ``image_px`` and ``rebin_px`` (the generator's defaults 300 and [150, 60] when
        absent), or the schema in ``manifest.json`` of a real set (empty if it cannot be read)."""
        data = self.config.data
        if "path" in data:
            try:
                schema = json.loads((Path(data["path"]) / "manifest.json").read_text())["schema"]
                names = [s["name"] for s in schema["stacks"]]
            except (OSError, ValueError, KeyError, TypeError):
                return []
            sizes = [int(n[2:]) for n in names if n.startswith("r_") and n[2:].isdigit()]
        else:
            sizes = [int(data.get("image_px", DEFAULT_IMAGE_PX)), *map(int, data.get("rebin_px", DEFAULT_REBIN_PX))]
        return sorted(set(sizes), reverse=True)

    # -- data -----------------------------------------------------------------------------
    @staticmethod
    def stack_name(branch: str, px: int) -> str:
        """Galaxy-set stack of an input branch: ``r_<px>``, ``gr_<px>``, ``vmap`` or ``sigmamap``."""
        return {"image": f"r_{px}", "colour": f"gr_{px}"}.get(branch, branch)

    def _networks(self) -> list[tuple[str, tuple[str, ...], int, bool]]:
        """(method name, inputs, image resolution, ablation?) of every network method."""
        cfg = self.config
        out = [("cnn", tuple(b for b in BRANCHES if b in cfg.inputs), int(cfg.image_resolution), False)]
        if cfg.ablation.enabled:
            for v in cfg.ablation.variants:
                if v in VARIANTS:  # unknown names are refused by validate_config
                    out.append((f"cnn_{v}", VARIANTS[v], int(cfg.image_resolution), True))
            sizes = cfg.ablation.resolutions if cfg.ablation.resolutions is not None else self.available_resolutions()
            for px in sizes:
                if "image" in cfg.ablation.variants and int(px) == int(cfg.image_resolution):
                    continue  # that network is cnn_image
                out.append((f"cnn_image_{int(px)}px", ("image",), int(px), True))
        return out

    def required(self) -> tuple[list[str], list[str]]:
        """(stacks, columns) the configured methods need."""
        stacks: list[str] = []
        for _, inputs, px, _ in self._networks():
            for b in inputs:
                stacks.append(self.stack_name(b, px))
                if b == "colour":
                    stacks.append(self.stack_name("image", px))  # its lit-pixel mask
                if b in KIN_BRANCHES:
                    stacks.append(KINMASK)
        lg = self.config.lightgbm
        study = [c for t in lg.study_targets for c in (DERIVED[t][0] if t in DERIVED else (t,))]
        columns = [*TARGETS, LUMINOSITY, *lg.features, *study]
        if lg.sersic_n_max is not None:
            columns.append("sersic_n")
        if lg.kin_bt_max is not None:
            columns.append("kin_bt")
        return list(dict.fromkeys(stacks)), list(dict.fromkeys(columns))

    def check_set(self, gs) -> None:
        """Refuse a set that lacks a stack, column or split the configured methods need, naming
        every missing one; kinematic maps must share one square shape and images be square."""
        stacks, columns = self.required()
        miss_s = [s for s in stacks if s not in gs.schema.stack_names]
        miss_c = [c for c in columns if c not in gs.schema.column_names]
        if miss_s or miss_c:
            what = "; ".join(x for x in (f"stacks {miss_s}" if miss_s else "", f"columns {miss_c}" if miss_c else "")
                             if x)
            raise DataFormatError(gs.path, (miss_s + miss_c)[0], f"task {self.name} needs {what} (the set has stacks "
                                  f"{list(gs.schema.stack_names)})")
        for s in stacks:
            spec = gs.schema.stack(s)
            if spec.height != spec.width:
                raise DataFormatError(gs.path, s, f"task {self.name} needs square maps, got {spec.shape}")
            if s.startswith(("r_", "gr_")) and spec.height != int(s.split("_")[1]):
                raise DataFormatError(gs.path, s, f"stack {s} holds {spec.height} px images, not {s.split('_')[1]}")
        kin = {gs.schema.stack(s).shape[1:] for s in stacks if s in (*KIN_BRANCHES, KINMASK)}
        if len(kin) > 1:
            raise DataFormatError(gs.path, KINMASK, f"vmap, sigmamap and kinmask must share one shape, got {kin}")
        for split in ("train", "val", self.config.eval_split):
            if split not in gs.split_names:
                raise DataFormatError(gs.path, "split", f"task {self.name} needs split {split!r}; the set has "
                                      f"{list(gs.split_names)}")

    def label_columns(self) -> tuple[str, ...]:
        """Every catalogue column but the observables of :data:`OBSERVABLE_COLUMNS` (and ``id``):
        the masses, fractions, M/L, radii and field of view (both set by the 3D half-mass radius),
        subhalo ids, projections, ..."""
        gs = self.galaxy_set
        labels = [c for c in gs.schema.column_names if c not in OBSERVABLE_COLUMNS and c != "id"]
        return tuple(dict.fromkeys([*super().label_columns(), *labels]))

    def features(self, split: str, columns: Sequence[str]) -> np.ndarray:
        """Observables as :meth:`Task.features`, with summary statistics the generator could not
        measure (its ``summary_flags`` bits, e.g. a failed Sersic fit) as NaN (LightGBM's missing
        value) instead of their stored 0."""
        from sim2obs.simgen.tng_mocks import SUMMARY_FLAG_BITS

        x = super().features(split, columns)
        if "summary_flags" in self.galaxy_set.schema.column_names:
            flags = self.galaxy_set.column("summary_flags", split).astype(np.int64)
            for j, name in enumerate(columns):
                if name in SUMMARY_FLAG_BITS:
                    x[(flags & SUMMARY_FLAG_BITS[name]) != 0, j] = np.nan
        return x

    def _columns(self, split: str, names: Sequence[str]) -> np.ndarray:
        """(N, K) catalogue or derived (:data:`DERIVED`) columns of any split (for the task's own
        evaluation and diagnostics, never for the methods)."""
        gs = self.galaxy_set
        cols = []
        for n in names:
            if n in DERIVED:
                deps, fn, _ = DERIVED[n]
                cols.append(fn(*(gs.column(d, split).astype(np.float64) for d in deps)))
            else:
                cols.append(gs.column(n, split).astype(np.float64))
        return np.stack(cols, axis=1)

    def training_columns(self, split: str, names: Sequence[str]) -> np.ndarray:
        """Label (or derived) columns of a training or validation split; the evaluation split is refused."""
        if split == self.config.eval_split:
            raise Sim2obsValueError(f"labels of the evaluation split {split!r} are held out; methods train and "
                                    "select on other splits", value=split)
        return self._columns(split, names)

    def scaling(self, branch: str, px: int) -> UnitScaling:
        """The :class:`UnitScaling` of ``branch`` at ``px``, fitted on the training split (cached)."""
        key = ("scaling", branch, px)
        if key not in self._cache:
            raw, valid = self._raw(branch, px, "train")
            mode = self.config.scaling.image if branch == "image" else "linear"
            self._cache[key] = fit_unit_scaling(raw, valid, mode, self.config.scaling.log_range_dex)
        return self._cache[key]

    def _raw(self, branch: str, px: int, split: str) -> tuple[np.ndarray, np.ndarray | None]:
        """(N, H, W) raw pixels of ``branch`` and the valid-pixel mask (None: every pixel)."""
        gs = self.galaxy_set
        raw = gs.images(self.stack_name(branch, px), split)[:, 0]
        if branch == "colour":
            return raw, gs.images(self.stack_name("image", px), split)[:, 0] > 0
        if branch in KIN_BRANCHES:
            return raw, gs.images(KINMASK, split)[:, 0] > 0.5
        return raw, None

    def network_inputs(self, branch: str, px: int, split: str) -> np.ndarray:
        """(N, C, H, W) float32 inputs of ``branch`` for ``split``: scaled with the training
        scaling, invalid pixels 0; the kinematic branches get the mask as a second channel with
        ``kinmask_channel`` (cached)."""
        key = ("inputs", branch, px, split, self.config.kinmask_channel)
        if key not in self._cache:
            scaling = self.scaling(branch, px)
            raw, valid = self._raw(branch, px, split)
            parts = [scaling.apply(raw[a:a + _CHUNK], None if valid is None else valid[a:a + _CHUNK])
                     for a in range(0, len(raw), _CHUNK)]
            x = (np.concatenate(parts) if parts else np.empty(raw.shape, np.float32))[:, None]
            if branch in KIN_BRANCHES and self.config.kinmask_channel:
                x = np.concatenate([x, valid[:, None].astype(np.float32)], axis=1)
            self._cache[key] = np.ascontiguousarray(x, dtype=np.float32)
        return self._cache[key]

    # -- methods --------------------------------------------------------------------------
    def methods(self) -> list[Method]:
        cfg = self.config
        lg = asdict(cfg.lightgbm)
        no_mag = [f for f in cfg.lightgbm.features if f != MAGNITUDE]
        out = [
            Method("power_law", "baseline", "log y = a + b log L_r per target, least squares on the training split "
                   "(§4.1)", lambda task, workdir: task._run_power_law(workdir), {"luminosity": LUMINOSITY},
                   deterministic=True),
            Method("lightgbm", "baseline", f"LightGBM ({cfg.lightgbm.num_boost_round} trees) per target on "
                   f"{', '.join(cfg.lightgbm.features)} (§5, Table 6)",
                   lambda task, workdir: task._run_lightgbm(workdir, True),
                   {"lightgbm": lg, "features": lg["features"]}),
            Method("lightgbm_no_mag", "baseline", f"LightGBM per target on {', '.join(no_mag)} (no magnitude; Table 6)",
                   lambda task, workdir: task._run_lightgbm(workdir, False), {"lightgbm": lg, "features": no_mag}),
        ]
        for name, inputs, px, ablation in self._networks():
            net = {"model": to_plain(cfg.model), "trainer": to_plain(cfg.trainer), "inputs": list(inputs),
                   "image_resolution": px, "kinmask_channel": cfg.kinmask_channel, "joint": cfg.joint,
                   "scaling": asdict(cfg.scaling)}
            if ablation:
                net["ablation_trainer"] = to_plain(cfg.ablation.trainer)
            res = f" at {px} px" if ("image" in inputs or "colour" in inputs) else ""
            what = f"multi-branch ResNet-18 on {' + '.join(inputs)}{res}"
            out.append(Method(name, "baseline" if ablation else "model",
                              ("ablation (Table 4): " if ablation else "") + what,
                              lambda task, workdir, i=inputs, p=px, a=ablation: task._run_network(workdir, i, p, a),
                              net))
        return out

    def _predictions(self, values: np.ndarray) -> Predictions:
        ids = self.split_ids(self.config.eval_split).astype(np.int64)
        return Predictions(ids=ids, values=np.asarray(values, float).reshape(len(ids), -1), targets=self.targets)

    def _run_power_law(self, workdir: Path) -> MethodOutput:
        split = self.config.eval_split
        lum = {s: self.features(s, [LUMINOSITY])[:, 0] for s in ("train", "val", split)}
        y = {s: self.labels(s) for s in ("train", "val")}
        values = np.empty((len(lum[split]), len(self.targets)))
        info: dict[str, Any] = {"model": "power law log y = a + b log L_r", "n_parameters": 2 * len(self.targets)}
        for k, t in enumerate(self.targets):
            a, b = fit_power_law(lum["train"], y["train"][:, k])
            values[:, k] = a + b * lum[split]
            info[t] = {"a": a, "b": b, "val_scatter_dex": M.scatter_dex(a + b * lum["val"], y["val"][:, k])}
        return MethodOutput(self._predictions(values), info)

    # -- LightGBM -------------------------------------------------------------------------
    def _run_lightgbm(self, workdir: Path, with_mag: bool) -> MethodOutput:
        """One LightGBM per target (the task's three and the study targets), trained on the
        training split (objects outside the §2.3 cuts left out); gain importances and the study
        targets' evaluation-split predictions go to ``workdir`` (scored by :meth:`summarise`)."""
        import lightgbm as lgb

        from sim2obs.tasks import plots

        cfg, lg = self.config, self.config.lightgbm
        split = cfg.eval_split
        feats = [f for f in lg.features if with_mag or f != MAGNITUDE]
        x = {s: self.features(s, feats) for s in ("train", "val", split)}
        keep = np.ones(len(x["train"]), bool)
        for col, cut in (("sersic_n", lg.sersic_n_max), ("kin_bt", lg.kin_bt_max)):
            if cut is not None:
                keep &= ~(self.features("train", [col])[:, 0] > float(cut))  # unmeasured (NaN) stay
        if not keep.any():
            raise Sim2obsValueError("the sersic_n / kin_bt cuts leave no training object",
                                    value=(lg.sersic_n_max, lg.kin_bt_max))
        names = list(dict.fromkeys([*self.targets, *lg.study_targets]))
        y = {s: self.training_columns(s, names) for s in ("train", "val")}
        params = {"verbosity": -1, "seed": int(cfg.seed), "deterministic": True, "force_col_wise": True,
                  "num_threads": int(lg.num_threads), **dict(lg.params)}
        study_dir = workdir / "study"
        if study_dir.exists():
            shutil.rmtree(study_dir)
        study_dir.mkdir(parents=True)
        ids = self.split_ids(split).astype(np.int64)
        t0 = time.perf_counter()
        rows, manifest, values = [], [], {}
        for k, target in enumerate(names):
            booster = lgb.train(params, lgb.Dataset(x["train"][keep], y["train"][keep, k], feature_name=feats,
                                                    free_raw_data=False), num_boost_round=int(lg.num_boost_round))
            pred = np.asarray(booster.predict(x[split]), dtype=np.float64)
            pred_val = np.asarray(booster.predict(x["val"]), dtype=np.float64)
            values[target] = pred
            gain = np.asarray(booster.feature_importance("gain"), dtype=np.float64)
            count = np.asarray(booster.feature_importance("split"), dtype=np.int64)
            frac = gain / gain.sum() if gain.sum() > 0 else gain
            order = np.argsort(-gain, kind="stable")
            for r, j in enumerate(order, 1):
                rows.append({"target": target, "rank": r, "feature": feats[j], "gain": float(gain[j]),
                             "gain_fraction": float(frac[j]), "split_count": int(count[j])})
            path = Predictions(ids, pred[:, None], (target,)).save(study_dir / f"{target}.h5", task=self.name,
                                                                    split=split, with_mag=with_mag)
            manifest.append({"target": target, "with_mag": with_mag, "features": feats, "file": path.name,
                             "top_features": [feats[j] for j in order[:3]],
                             "val_bias": M.bias_mean(pred_val, y["val"][:, k]),
                             "val_scatter": M.scatter_dex(pred_val, y["val"][:, k])})
            if cfg.plots:
                plots.bar_table([feats[j] for j in order], frac[order], workdir / f"importance_{target}.png",
                                xlabel=f"gain importance (fraction), target {target}")
            booster.save_model(str(study_dir / f"{target}.txt"))
        write_csv_rows(workdir / "importances.csv", rows)
        text = json.dumps(manifest, indent=2) + "\n"
        atomic_write(study_dir / "manifest.json", lambda f: f.write(text), mode="w")
        info = {"model": "LightGBM", "_target_": "lightgbm.train", "features": feats,
                "num_boost_round": int(lg.num_boost_round), "n_train": int(keep.sum()),
                "n_train_excluded": int((~keep).sum()), "train_seconds": time.perf_counter() - t0,
                "val_scatter_dex": {m["target"]: m["val_scatter"] for m in manifest if m["target"] in self.targets},
                "top_features": {m["target"]: m["top_features"] for m in manifest}}
        return MethodOutput(self._predictions(np.stack([values[t] for t in self.targets], axis=1)), info)

    # -- networks -------------------------------------------------------------------------
    def _model_config(self, inputs: Sequence[str], n_outputs: int) -> dict[str, Any]:
        """``model`` with the task's ``input_channels``, ``num_outputs`` and ``enabled`` for those of
        these keys it names (a user's class gets only its own arguments)."""
        m = to_plain(self.config.model)
        channels = {b: 2 if (self.config.kinmask_channel and b in KIN_BRANCHES) else 1 for b in BRANCHES}
        values = {"input_channels": channels, "num_outputs": int(n_outputs), "enabled": list(inputs)}
        m.update({k: v for k, v in values.items() if k in m})
        return m

    def spec(self):
        """The ``cnn``'s inputs ``{branch: (C, H, W)}`` (a dict; channels 2 for the kinematic maps
        with ``kinmask_channel``), outputs: the three targets (``joint``) or one per network."""
        from sim2obs.models.conformance import TaskSpec

        cfg = self.config
        px = int(cfg.image_resolution)
        if "path" in cfg.data:
            kin = int(self.galaxy_set.schema.stack("vmap").height)
        else:
            kin = int(cfg.data.get("kin_px", 48))
        shapes = {b: (2 if (cfg.kinmask_channel and b in KIN_BRANCHES) else 1,) + ((kin, kin) if b in KIN_BRANCHES
                                                                                   else (px, px))
                  for b in BRANCHES if b in cfg.inputs}
        n = len(self.targets) if cfg.joint else 1
        return TaskSpec(input_shapes=shapes, n_targets=n, n_outputs=n)

    def model_checks(self) -> list[tuple[str, Any, Any]]:
        """``model`` as the ``cnn`` builds it (a network of one input gets a tensor, not a dict:
        checked when it runs)."""
        if "cnn" not in {m.name for m in self.selected_methods()} or len(self.config.inputs) < 2:
            return []
        spec = self.spec()
        return [("model", self._model_config(tuple(spec.input_shapes), spec.n_targets), spec)]

    def split_inputs(self, split: str) -> dict[str, np.ndarray]:
        """``{branch: (N, C, H, W)}`` float32 inputs of the ``cnn``'s branches, scaled to [0, 1]
        with the training split's scaling (:meth:`network_inputs`)."""
        px = int(self.config.image_resolution)
        return {b: self.network_inputs(b, px, split) for b in BRANCHES if b in self.config.inputs}

    def _run_network(self, workdir: Path, inputs: Sequence[str], px: int, ablation: bool) -> MethodOutput:
        """Train the multi-branch network(s) on train, keep the best validation epoch, predict the
        evaluation split (whose labels are never read: its dataset gets placeholder targets)."""
        from sim2obs.models import build_model
        from sim2obs.models.engine import TensorDictDataset, Trainer, seed_everything
        from sim2obs.models.engine import small_input_precision

        cfg = self.config
        split = cfg.eval_split
        inputs = tuple(inputs)
        tcfg = self.trainer_config(ablation=ablation)
        tcfg = replace(tcfg, progress=bool(self.progress))  # bars on a terminal, epoch lines in logs
        y = {s: self.labels(s) for s in ("train", "val")}
        mu, sd = y["train"].mean(axis=0), y["train"].std(axis=0)
        sd = np.where(sd > 0, sd, 1.0)
        x = {s: {b: torch.from_numpy(self.network_inputs(b, px, s)) for b in inputs} for s in ("train", "val", split)}
        ids = {s: torch.from_numpy(self.split_ids(s).astype(np.int64)) for s in ("train", "val", split)}
        sides = {b: int(x["train"][b].shape[-1]) for b in inputs}
        tcfg, precision_note = small_input_precision(tcfg, min(sides.values()))
        if len(ids["train"]) % max(1, tcfg.batch_size) == 1 and not tcfg.drop_last:
            tcfg = replace(tcfg, drop_last=True)  # a lone last object breaks batch norm
        groups = [list(range(len(self.targets)))] if cfg.joint else [[k] for k in range(len(self.targets))]
        values = np.empty((len(ids[split]), len(self.targets)))
        fits, n_params, val_scatter = [], 0, {}
        root = self.shared_dir(workdir) / "networks"
        for cols in groups:
            model_cfg = self._model_config(inputs, len(cols))
            seed_everything(tcfg.seed)
            net = BranchInputs(build_model(model_cfg), inputs)
            data = {}
            for s in ("train", "val", split):
                target = (torch.from_numpy(((y[s][:, cols] - mu[cols]) / sd[cols]).astype(np.float32)) if s in y
                          else torch.zeros((len(ids[s]), len(cols)), dtype=torch.float32))
                data[s] = TensorDictDataset(x[s], target, ids[s])
            identity = {"data": self.galaxy_set.content_hash, "version": self.metadata.version, "split": split,
                        "inputs": list(inputs), "px": px, "kinmask_channel": cfg.kinmask_channel,
                        "scaling": {b: asdict(self.scaling(b, px)) for b in inputs},
                        "targets": [self.targets[k] for k in cols],
                        "target_scale": [mu[cols].tolist(), sd[cols].tolist()],
                        "model": model_cfg, "trainer": {k: v for k, v in to_plain(tcfg).items() if k != "progress"}}
            fit_dir = root / f"fit-{stable_hash(identity, 12)}"
            trainer = Trainer(tcfg, loss=nn.MSELoss(), callbacks=[] if tcfg.progress else
                              [self.epoch_logger(f"{workdir.name} {'+'.join(inputs)}", tcfg.epochs)])
            fit = trainer.fit(net, data["train"], data["val"], fit_dir, model_config=model_cfg)
            atomic_write(fit_dir / "identity.json", lambda f: f.write(json.dumps(identity, indent=2) + "\n"), mode="w")
            pred = trainer.predict(net, data[split])
            if not np.array_equal(pred["ids"], ids[split].numpy()):
                raise RuntimeError("prediction lost the object order")
            values[:, cols] = pred["predictions"].astype(np.float64) * sd[cols] + mu[cols]
            pv = trainer.predict(net, data["val"])["predictions"].astype(np.float64) * sd[cols] + mu[cols]
            for j, k in enumerate(cols):
                val_scatter[self.targets[k]] = M.scatter_dex(pv[:, j], y["val"][:, k])
            n_params += int(sum(p.numel() for p in net.parameters()))
            fits.append({"targets": [self.targets[k] for k in cols], "fit_dir": str(fit_dir.relative_to(root.parent)),
                         "epochs_run": len(fit.history), "best_epoch": fit.best_epoch,
                         "best_val_mse_standardised": float(fit.best_val_loss),
                         "train_seconds": float(sum(r["seconds"] for r in fit.history))})
        info = {"model": "MultiBranchNet", "_target_": str(cfg.model.get("_target_")), "inputs": list(inputs),
                "variant": next((v for v, b in VARIANTS.items() if b == inputs), None) if ablation else "default",
                "resolution_px": px, "input_px": sides, "joint": cfg.joint, "n_parameters": n_params,
                "val_scatter_dex": val_scatter, "fits": fits,
                "train_seconds": float(sum(f["train_seconds"] for f in fits)),
                "target_mean": mu.tolist(), "target_std": sd.tolist(),
                "scaling": {b: asdict(self.scaling(b, px)) for b in inputs}}
        if precision_note:
            info["precision_note"] = precision_note
        return MethodOutput(self._predictions(values), info)

    # -- evaluation -----------------------------------------------------------------------
    def compute_metrics(self, predictions: Predictions, truth: Truth) -> dict[str, float]:
        out: dict[str, float] = {}
        for k, t in enumerate(self.targets):
            p, y = predictions.values[:, k], truth.values[:, k]
            out[f"{t}/scatter_dex"] = M.scatter_dex(p, y)
            out[f"{t}/bias_mean"] = M.bias_mean(p, y)
            out[f"{t}/rmse"] = M.rmse(p, y)
            out[f"{t}/nmad"] = M.nmad(p - y)
        out.update(M.shared_metrics(self.metadata.metrics, self.targets, predictions.values, truth.values, truth.errors))
        return out

    def summarise(self, rows: list[dict], out_dir: Path) -> None:
        """Cross-method artefacts: the correlation matrix (training split), the LightGBM study
        table, the ablation table and the scatter of every method."""
        from sim2obs.tasks import plots

        out_dir = Path(out_dir)
        self.write_correlation_matrix(out_dir)
        self.write_lightgbm_study(rows, out_dir)
        self.write_ablation_table(rows, out_dir)
        if rows and self.config.plots:
            key = self.metadata.main_score
            plots.bar_table([r["method"] for r in rows], [r["metrics"][key] for r in rows],
                            out_dir / "scatter_by_method.png",
                            xlabel=f"scatter of Δ log M* [dex] ({self.config.eval_split} split)")

    def correlation_matrix(self) -> tuple[list[str], np.ndarray]:
        """Pearson R between the LightGBM features, log L_r and the study targets on the training
        split (paper Fig. 10): ``(names, (K, K) matrix)``."""
        lg = self.config.lightgbm
        feats = list(dict.fromkeys([*lg.features, LUMINOSITY]))
        targets = list(dict.fromkeys([*self.targets, *lg.study_targets]))
        x = np.concatenate([self.features("train", feats), self.training_columns("train", targets)], axis=1)
        import pandas as pd

        # pairwise over the objects where both are measured (unmeasured statistics are NaN)
        r = pd.DataFrame(x, columns=feats + targets).corr(method="pearson").to_numpy()
        return feats + targets, np.atleast_2d(r)

    def write_correlation_matrix(self, out_dir: Path) -> None:
        names, r = self.correlation_matrix()
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["", *names])
        for name, row in zip(names, r):
            w.writerow([name, *(f"{v:.4f}" for v in row)])
        atomic_write(out_dir / "correlation_matrix.csv", lambda f: f.write(buf.getvalue()), mode="w")
        if self.config.plots:
            plot_correlation_matrix(names, r, out_dir / "correlation_matrix.png")

    def write_lightgbm_study(self, rows: list[dict], out_dir: Path) -> list[dict]:
        """``lightgbm_study.{csv,md}`` from the ``lightgbm`` and ``lightgbm_no_mag`` runs: per study
        target and input set, bias and scatter on the evaluation split, the top-3 features by gain
        and the paper's Table 6 scatter. Returns the table rows."""
        split = self.config.eval_split
        table = []
        for method in ("lightgbm", "lightgbm_no_mag"):
            manifest_path = out_dir / method / "study" / "manifest.json"
            if not any(r["method"] == method for r in rows) or not manifest_path.exists():
                continue
            for entry in json.loads(manifest_path.read_text()):
                p = Predictions.load(manifest_path.parent / entry["file"])
                target = entry["target"]
                truth_ids = self.split_ids(split)
                if not np.array_equal(np.sort(p.ids), np.sort(truth_ids)):
                    raise DataFormatError(manifest_path.parent / entry["file"], "ids", "do not match the "
                                          f"evaluation split {split!r}")
                order = np.argsort(p.ids)[np.searchsorted(np.sort(p.ids), truth_ids)]
                pred, truth = p.values[order, 0], self._columns(split, [target])[:, 0]
                paper = PAPER_GBDT.get((target, bool(entry["with_mag"])))
                table.append({"target": target, "unit": UNITS.get(target, "dex"),
                              "inputs": "default" if entry["with_mag"] else "default w/o mag",
                              "method": method, "bias": M.bias_mean(pred, truth), "scatter": M.scatter_dex(pred, truth),
                              "top_features": " > ".join(entry["top_features"]),
                              "paper_scatter": "" if paper is None else paper})
        if not table:
            return table
        order = {t: i for i, t in enumerate(dict.fromkeys([*self.config.lightgbm.study_targets, *self.targets]))}
        table.sort(key=lambda r: (order[r["target"]], r["method"]))  # the config's order (default: Table 6's)
        write_csv_rows(out_dir / "lightgbm_study.csv", table)
        lines = ["| target | inputs | bias | scatter | top-3 features (gain) | paper scatter (Table 6) |",
                 "|---|---|--:|--:|---|--:|"]
        for r in table:
            paper = "" if r["paper_scatter"] == "" else f"{r['paper_scatter']:.2f}"
            lines.append(f"| {r['target']} [{r['unit']}] | {r['inputs']} | {r['bias']:+.3f} | {r['scatter']:.3f} | "
                         f"{r['top_features']} | {paper} |")
        text = (f"LightGBM per target ({self.config.lightgbm.num_boost_round} trees, "
                f"{self.config.lightgbm.params.get('num_leaves')} leaves) on the summary statistics; bias and 1-sigma "
                f"scatter of prediction - truth on the {split!r} split (Chu et al. 2024, Table 6; the paper's "
                "numbers are for TNG100-1, ours for the generated set).\n\n" + "\n".join(lines) + "\n")
        atomic_write(out_dir / "lightgbm_study.md", lambda f: f.write(text), mode="w")
        return table

    def write_ablation_table(self, rows: list[dict], out_dir: Path) -> list[dict]:
        """``ablation_table.{csv,md}`` (paper Table 4) from the network methods (``cnn`` and every
        ``cnn_*``): variant, inputs, resolution, target, bias, scatter, the paper's scatter. Written
        when an ablation variant ran. Returns the table rows."""
        nets = [r for r in rows if r["method"] == "cnn" or r["method"].startswith("cnn_")]
        if not any(r["method"] != "cnn" for r in nets):
            return []
        table = []
        for r in nets:
            info = r.get("info") or {}
            inputs = list(info.get("inputs") or [])
            px = int(info.get("resolution_px") or 0)
            imaged = "image" in inputs or "colour" in inputs
            for t in self.targets:
                value, note = paper_ablation_value(inputs, px, t, joint=bool(info.get("joint")))
                table.append({"method": r["method"], "variant": info.get("variant") or r["method"],
                              "inputs": "+".join(inputs), "resolution_px": px if imaged else "", "target": t,
                              "bias": r["metrics"][f"{t}/bias_mean"], "scatter": r["metrics"][f"{t}/scatter_dex"],
                              "paper_scatter": "" if value is None else value, "paper_note": note})
        write_csv_rows(out_dir / "ablation_table.csv", table)
        header = ("method", "inputs", "resolution [px]", "target", "bias [dex]", "scatter [dex]", "paper scatter",
                  "paper source")
        lines = ["| " + " | ".join(header) + " |", "|---|---|--:|---|--:|--:|--:|---|"]
        for t in table:
            paper = "" if t["paper_scatter"] == "" else f"{t['paper_scatter']:.2f}"
            lines.append(f"| {t['method']} | {t['inputs']} | {t['resolution_px']} | {t['target']} | "
                         f"{t['bias']:+.3f} | {t['scatter']:.3f} | {paper} | {t['paper_note']} |")
        text = ("Input and resolution ablation of the multi-branch network (Chu et al. 2024, Table 4): bias and "
                f"1-sigma scatter of prediction - truth on the {self.config.eval_split!r} split. Our networks predict "
                f"the three targets {'jointly' if self.config.joint else 'one per network'}; the paper trained one "
                "target per network on 300 px images and 20,000 training objects.\n\n" + "\n".join(lines) + "\n")
        atomic_write(out_dir / "ablation_table.md", lambda f: f.write(text), mode="w")
        return table


# --------------------------------------------------------------------------------------------
# Files and figures
# --------------------------------------------------------------------------------------------
def plot_correlation_matrix(names: Sequence[str], r: np.ndarray, path: Path) -> Path:
    """Heat map of Pearson R (paper Fig. 10), values written in the cells."""
    from sim2obs.tasks import plots

    n = len(names)
    fig = plots.new_figure(1.0 + 0.45 * n, 0.6 + 0.42 * n)
    ax = fig.add_subplot()
    im = ax.imshow(np.ma.masked_invalid(r), cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(n), labels=list(names), rotation=90, fontsize=7)
    ax.set_yticks(range(n), labels=list(names), fontsize=7)
    for i in range(n):
        for j in range(n):
            if np.isfinite(r[i, j]):
                ax.text(j, i, f"{r[i, j]:.2f}", ha="center", va="center", fontsize=5,
                        color="white" if abs(r[i, j]) > 0.6 else "black")
    fig.colorbar(im, ax=ax, label="Pearson R (training split)", shrink=0.8)
    return plots.save_figure(fig, path)
