"""Settings and constants of the ``multibranch_mass`` task: targets, input branches, observables,
the ablation variants, the paper's numbers (Tables 4 and 6, §4.1, §4.3) and the config dataclasses."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from sim2obs.tasks.base import TaskConfig

__all__ = ["TARGETS", "BRANCHES", "KIN_BRANCHES", "KINMASK", "LUMINOSITY", "MAGNITUDE", "SUMMARY_FEATURES",
           "OBSERVABLE_COLUMNS", "VARIANTS", "DERIVED", "STUDY_TARGETS", "UNITS", "DEFAULT_IMAGE_PX",
           "DEFAULT_REBIN_PX", "SCALINGS", "PAPER_GBDT", "PAPER_CNN", "PAPER_RESOLUTION", "PAPER_JOINT",
           "paper_ablation_value", "ScalingConfig", "LightGBMConfig", "AblationConfig", "MultibranchMassConfig"]

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
