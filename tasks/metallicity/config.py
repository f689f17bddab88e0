"""Settings and constants of the ``metallicity`` task (presets: ``configs/task/metallicity/{quick,paper}.yaml``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sim2obs.tasks.base import TaskConfig

__all__ = ["MetallicityConfig", "RGBConfig", "RandomForestConfig", "ResolutionConfig", "MZRConfig"]

TARGET = "oh12"
STACK = "image"
BANDS = ("g", "r", "i")
AUGMENTS = ("dihedral", "trainer", "none")
CHUNK = 2048  # objects per block when converting / re-binning (bounds the temporary memory)
COLOURS = ("r", "gr")  # the colour study's band sets (Fig. 4)
SFR_COLUMN = "log_sfr"
LOG_SSFR_STAR_FORMING = -11.0  # 1/yr; the same as sim2obs.simgen.population.LOG_SSFR_STAR_FORMING (tested)


@dataclass
class RGBConfig:
    """The asinh colour composite (Lupton et al. 2004, as the SDSS cutout service makes them).

    ``channels``: the bands mapped to R, G, B (SDSS: i, r, g); ``band_scales``: weight of each
    band before the stretch (nanomaggies x weight); ``stretch``: the linear range of the asinh
    (weighted nanomaggies; intensities well below it are mapped linearly); ``Q``: the asinh
    softening; ``minimum``: the level mapped to black (0: sky-subtracted images)."""

    channels: list[str] = field(default_factory=lambda: ["i", "r", "g"])
    band_scales: dict[str, float] = field(default_factory=lambda: {"g": 2.5, "r": 1.5, "i": 1.0})
    stretch: float = 0.5
    Q: float = 5.0
    minimum: float = 0.0


@dataclass
class MZRConfig:
    """Binning of the mass-metallicity diagnostic: ``bin_width`` in dex of M* (paper: 0.2),
    bins with fewer than ``min_count`` galaxies are left out."""

    bin_width: float = 0.2
    min_count: int = 5


@dataclass
class RandomForestConfig:
    """scikit-learn ``RandomForestRegressor`` on catalogue observables (default: the g, r, i
    magnitudes, as in §5.4). The paper takes its hyperparameters from Acquaviva (2016) without
    listing them; these are scikit-learn's defaults apart from the number of trees."""

    features: list[str] = field(default_factory=lambda: ["mag_g", "mag_r", "mag_i"])
    n_estimators: int = 200
    max_features: Any = 1.0
    min_samples_leaf: int = 1
    max_depth: Any = None
    n_jobs: int = 1


@dataclass
class ResolutionConfig:
    """The resolution study (§5.3). ``sizes``: side lengths (px) of the re-binned images, one
    method ``resolution_<n>px`` each (the ``cnn`` is the full-resolution point); ``model``: the
    network (null: the task's ``model``); ``trainer``: overrides of the task's ``trainer`` for these
    runs (null: the same schedule). Images are fed at their re-binned size; a network that
    declares a larger ``min_input_size`` gets them block-replicated up to it (nearest neighbour,
    no new information)."""

    sizes: list[int] = field(default_factory=lambda: [32, 16, 8, 4, 2, 1])
    model: Any = None
    trainer: Any = None


def _default_model() -> dict[str, Any]:
    return {"_target_": "sim2obs.models.resnet.resnet34", "in_channels": 3, "num_outputs": 1,
            "small_input": False, "features_only": False, "dropout": 0.0}


@dataclass
class MetallicityConfig(TaskConfig):
    """Settings of the metallicity task (presets: ``configs/task/metallicity/{quick,paper}.yaml``).

    ``model``: Hydra config of the network (any ``_target_``; 3 input channels, 1 output);
    ``pretrained``: null, or a torchvision ResNet state-dict file (e.g. the ImageNet weights the
    paper starts from) loaded into ``model`` with
    :func:`~sim2obs.models.resnet.load_torchvision_state_dict` before training (``cnn`` and,
    when ``resolution.model`` is null, the resolution study; the ``fc`` head stays fresh);
    ``trainer``: :class:`sim2obs.models.engine.TrainerConfig` fields; ``augment``:
    ``"dihedral"`` (:class:`RandomDihedral`), ``"trainer"`` (``trainer.augment``) or ``"none"``;
    ``tta``: average the test predictions over ``trainer.tta``; ``rgb``: :class:`RGBConfig`;
    ``random_forest``: :class:`RandomForestConfig`; ``resolution``: :class:`ResolutionConfig`;
    ``mzr``: :class:`MZRConfig`. ``seed`` offsets the trainer seed and seeds the forest.

    ``star_forming_only``: keep only star-forming galaxies (log sSFR > -11 from the catalogue's
    ``log_sfr``, :func:`sim2obs.simgen.population.star_forming`) in every split, as the strong-line
    O/H of the paper's MPA-JHU sample exists only for them (a set without ``log_sfr``, e.g. a real
    catalogue already selected, is used whole and the run info says so); ``mzr_oracle``: run the
    ``mzr_oracle`` reference (the exact Tremonti MZR at the *true* M*: it reads a label, an upper
    bound of what M* alone gives, not a method to rank) and the ``image_truth_ceiling`` reference; ``label_noise``: the §5.2 study, one
    ``label_noise_<sigma>`` method per sigma (dex): the ``cnn`` trained and selected on labels with
    added N(0, sigma) scatter, scored against the true ones; ``colour_study``: the Fig. 4 colour
    study, ``"r"`` (r band copied to all three channels) and/or ``"gr"`` (R = r, B = g, G their mean),
    one ``colour_<bands>`` method each, the ``cnn`` on those images; ``mzr_of_predicted_mstar``: the
    Fig. 5 comparison, method ``mzr_of_cnn_mstar``: the ``cnn`` trained on the stellar mass, its
    prediction put through the Tremonti MZR (eq. 3), to set beside the ``cnn``'s direct Z.
    """

    model: dict[str, Any] = field(default_factory=_default_model)
    pretrained: Any = None
    trainer: dict[str, Any] = field(default_factory=dict)
    augment: str = "dihedral"
    tta: bool = True
    rgb: RGBConfig = field(default_factory=RGBConfig)
    random_forest: RandomForestConfig = field(default_factory=RandomForestConfig)
    resolution: ResolutionConfig = field(default_factory=ResolutionConfig)
    mzr: MZRConfig = field(default_factory=MZRConfig)
    star_forming_only: bool = True
    mzr_oracle: bool = True
    label_noise: list[float] = field(default_factory=list)
    colour_study: list[str] = field(default_factory=list)
    mzr_of_predicted_mstar: bool = True
