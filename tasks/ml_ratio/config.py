"""Settings and constants of the ``ml_ratio`` task (presets: ``configs/task/ml_ratio/{quick,paper}.yaml``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from sim2obs.tasks.base import TaskConfig
from sim2obs.tasks.ml_ratio.observables import OBSERVABLE_COLUMNS, OBSERVABLE_PREFIXES  # noqa: F401 (re-exported)

__all__ = ["MLRatioConfig", "CNNSpec"]

TARGET = "ml_g"
BAND = "g"
#: Feature groups of the ablation (Table 1 of the paper).
GROUPS = ("cnn1-3", "cnn4", "luminosity", "distance")
#: The paper's Table 1 (test ℒ1) per ablation row.
PAPER_ABLATION = {"all": 2.29, "no cnn1-3": 2.37, "no cnn4": 2.41, "no luminosity": 2.32,
                  "no distance (fluxes)": 2.67, "luminosity + distance": 3.38}
LG_Z = ["lum_g", "redshift"]
GI = ["redshift", "lum_g", "lum_i", "lum_g/lum_i"]
STAT_NAMES = ("sum", "mean", "max", "min", "std", "centre", "centre5")
LOG_STAT_NAMES = ("sum", "mean", "std", "centre", "centre5")


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
    # The sample and the measurements (sample.py; Dobbels et al. 2019 §2.1-2.2, §4.3):
    d25_min_arcmin: Optional[float] = 0.4   # D25 > 0.4' (null: no size cut)
    cutout_fov_d25: Optional[float] = 1.125  # cutout side = 1.125 D25, capped at the stamp (null: the stamp)
    photometry: str = "aperture"            # aperture: g, i measured on the noisy images | catalogue
    label_noise: bool = True                # simulated sets: labels = truth x log-normal(ΔΥ/Υ)
    label_noise_seed: int = 15
