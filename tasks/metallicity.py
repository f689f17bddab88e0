"""Task ``metallicity``: gas-phase metallicity 12 + log(O/H) from g, r, i images.

After Wu & Boada (2019, MNRAS 484, 4683; arXiv:1810.12913), who trained a ResNet-34 on SDSS
g, r, i colour cutouts to predict the Tremonti et al. (2004) metallicity.

Inputs
    The ``image`` stack (bands g, r, i, nanomaggies per pixel, sky-subtracted) is turned into
    one RGB image per galaxy with the Lupton et al. (2004) asinh scheme that the SDSS cutout
    service uses (:func:`lupton_rgb`, through :func:`astropy.visualization.make_lupton_rgb`):
    bands i, r, g go to the R, G, B channels, each band is first multiplied by a weight
    (``rgb.band_scales``), the common intensity I = (R + G + B) / 3 is stretched as
    asinh(Q I / stretch) · 0.1 / asinh(0.1 Q), every channel is scaled by f(I) / I (so colours
    do not depend on brightness), negative values go to 0 and pixels whose brightest channel
    exceeds 1 are scaled down as a whole (colour kept). The output is kept as float32 in [0, 1]
    rather than the 8-bit JPEGs of the paper: the network takes floats anyway, 1/255 steps
    would only add quantisation noise (small: ~0.07 of the sky noise with the default stretch)
    and there are no JPEG artefacts; the colour scheme is the same. The defaults
    (``stretch = 0.5`` nanomaggy, ``Q = 5``, weights g 2.5, r 1.5, i 1.0) were set on the
    training split of the default set: the weights roughly equalise the three channels of a
    typical galaxy, the sky noise maps to ~0.05 (rms) and the central pixel of a
    95th-percentile-bright galaxy to ~1.

Target and loss
    ``oh12`` in dex. Networks train on the target standardised with the training split's mean
    and standard deviation, under the paper's RMSE loss (:func:`rmse_loss`; its minimiser is the
    same as in dex, the optimisation better conditioned); predictions are mapped back to dex.
    The model is picked on the validation split (best epoch); the test split's labels are never
    read by a method (:meth:`Task.labels` refuses them; its images get placeholder targets).

Methods (in the order they run)
    ``mean``            the training-split mean for every galaxy (the paper's constant
                        <Z_true>, Fig. 4 squares);
    ``random_forest``   scikit-learn random forest on the g, r, i magnitudes (§5.4);
    ``cnn``             the network of ``model`` (ResNet-34 by default) on the full-resolution
                        RGB images: staged fine-tuning (head first, then every layer with
                        discriminative learning rates), cosine annealing with restarts,
                        random dihedral (90-degree rotation and flip) augmentation, test-time
                        augmentation over the 8 dihedral transforms (appendix A);
    ``resolution_<n>px`` the resolution study (§5.3, Fig. 4): the same RGB images re-binned
                        (:func:`rebin`, flux-conserving block average) to n x n pixels, the
                        network of ``resolution.model`` trained and tested on them at that
                        size, as in the paper (block-replicated up to the network's
                        ``min_input_size`` if smaller: 8 px for a ResNet; inputs of 16 px
                        and less train in fp32, see :func:`sim2obs.models.engine.small_input_precision`).

Diagnostics (written by :meth:`MetallicityTask.summarise` and :meth:`MetallicityTask.plot`)
    ``mzr_bins.csv`` / ``mzr_summary.csv`` / ``mzr.png``: the mass-metallicity relation of the
    predicted metallicities against the true stellar mass, binned median and scatter beside the
    truth's (§6.2, Fig. 6; ``<method>/mzr.png`` per method); ``resolution_study.{csv,json,png}``:
    RMSE (with a bootstrap error) and NMAD against resolution, the baselines for reference
    (Fig. 4).
"""
from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from sim2obs.atomic import atomic_write
from sim2obs.config import to_plain
from sim2obs.errors import ConfigError, DataFormatError, Sim2obsValueError
from sim2obs.imaging import rebin
from sim2obs.provenance import stable_hash
from sim2obs.tasks import TASKS
from sim2obs.tasks import metrics as M
from sim2obs.tasks.base import (PREDICTIONS_FILE, Method, MethodOutput, PaperResult, Predictions, Task, TaskConfig,
                                TaskMetadata, Truth, write_csv_rows)

__all__ = ["MetallicityConfig", "MetallicityTask", "RGBConfig", "RandomDihedral", "RandomForestConfig",
           "ResolutionConfig", "MZRConfig", "rmse_loss", "lupton_rgb", "rebin", "mzr_bins", "mzr_scatter",
           "resolution_table", "bootstrap_rmse_error"]

TARGET = "oh12"
STACK = "image"
BANDS = ("g", "r", "i")
AUGMENTS = ("dihedral", "trainer", "none")
_CHUNK = 2048  # objects per block when converting / re-binning (bounds the temporary memory)


# --------------------------------------------------------------------------------------------
# Preprocessing: Lupton et al. (2004) RGB composite and re-binning
# --------------------------------------------------------------------------------------------
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


def lupton_rgb(images: np.ndarray, bands: Sequence[str] = BANDS, config: RGBConfig | None = None) -> np.ndarray:
    """Lupton et al. (2004) asinh RGB composite of g, r, i images.

    ``images``: ``(C, H, W)`` or ``(N, C, H, W)`` fluxes whose channels are ``bands``. Returns
    float32 ``(3, H, W)`` or ``(N, 3, H, W)`` in [0, 1], channels R, G, B = ``config.channels``
    (default i, r, g). Pixel-wise (no image statistics enter), so a batch maps exactly like its
    images one by one. Uses :func:`astropy.visualization.make_lupton_rgb`.
    """
    from astropy.visualization import LuptonAsinhStretch, ManualInterval, make_lupton_rgb

    cfg = config or RGBConfig()
    x = np.asarray(images, dtype=np.float32)  # float32 halves the cost; the stretch needs no more
    single = x.ndim == 3
    if single:
        x = x[None]
    if x.ndim != 4:
        raise Sim2obsValueError("images must be (C, H, W) or (N, C, H, W)", value=x.shape)
    bands = list(bands)
    if x.shape[1] != len(bands):
        raise Sim2obsValueError(f"images have {x.shape[1]} channels but bands {bands}", value=x.shape)
    missing = [b for b in cfg.channels if b not in bands]
    if missing:
        raise Sim2obsValueError(f"the RGB channels need bands {missing}, the images have {bands}", value=missing)
    n, _, h, w = x.shape
    # (N, H, W) -> (N*H, W): make_lupton_rgb takes 2-D images; the mapping is pixel-wise.
    planes = [x[:, bands.index(b)].reshape(n * h, w) * float(cfg.band_scales.get(b, 1.0)) for b in cfg.channels]
    stretch = LuptonAsinhStretch(stretch=float(cfg.stretch), Q=float(cfg.Q))
    with np.errstate(invalid="ignore", divide="ignore"):  # f(I)/I at I = 0 (astropy then maps it to 0)
        rgb = make_lupton_rgb(*planes, interval=ManualInterval(vmin=float(cfg.minimum), vmax=None),
                              stretch_object=stretch, output_dtype=np.float64)  # (N*H, W, 3)
    out = np.ascontiguousarray(rgb.reshape(n, h, w, 3).transpose(0, 3, 1, 2), dtype=np.float32)
    return out[0] if single else out


def _adapt_stages(tcfg, model):
    """Drop the per-prefix learning rates of ``trainer.stages`` that match no parameter of
    ``model`` (the ResNet layer groups of the presets, when another network is swapped in), so
    that those parameters take ``trainer.lr``; the ``trainable`` prefixes are kept (a stage that
    trains ``fc`` first needs a head named ``fc``). Returns ``(config, dropped prefixes)``."""
    from sim2obs.models.engine import StageConfig, _matches

    names = [n for n, _ in model.named_parameters()]
    stages, dropped = [], []
    for st in tcfg.stages:
        st = st if isinstance(st, StageConfig) else StageConfig(**to_plain(st))
        keep = {k: v for k, v in st.lr.items() if any(_matches(n, k) for n in names)}
        dropped += [k for k in st.lr if k not in keep and k not in dropped]
        stages.append(replace(st, lr=keep))
    return (replace(tcfg, stages=stages) if dropped else tcfg), dropped


def _block_replicate(x: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour up-sampling by an integer factor (no new information)."""
    return x if factor <= 1 else np.repeat(np.repeat(x, factor, axis=-2), factor, axis=-1)


# --------------------------------------------------------------------------------------------
# Training pieces: loss and augmentation
# --------------------------------------------------------------------------------------------
_RMSE_LOSS_CLASS = None


def _rmse_loss_class():
    """The :class:`RMSELoss` module class, defined on first use (importing the task needs no torch)."""
    global _RMSE_LOSS_CLASS
    if _RMSE_LOSS_CLASS is None:
        import torch
        from torch import nn

        class RMSELoss(nn.Module):
            """Root mean squared error over the batch (Wu & Boada 2019, eq. 1)."""

            def __init__(self, eps: float = 1e-12):
                super().__init__()
                self.eps = eps

            def forward(self, output, target):
                return torch.sqrt(torch.mean((output.reshape(target.shape) - target) ** 2) + self.eps)

        RMSELoss.__module__ = __name__
        RMSELoss.__qualname__ = "RMSELoss"
        _RMSE_LOSS_CLASS = RMSELoss
    return _RMSE_LOSS_CLASS


def rmse_loss():
    """A new :class:`RMSELoss` (``loss(output, target) = sqrt(mean((output - target)^2))``)."""
    return _rmse_loss_class()()


def __getattr__(name: str):
    if name == "RMSELoss":
        return _rmse_loss_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class RandomDihedral:
    """Per object, one of the 8 transforms of the dihedral group of the square (quarter turns
    and a flip), drawn uniformly; every image stack of an object gets the same one.

    Exact at every resolution (no interpolation, so the 1-8 px images of the resolution study
    are not blurred), and the same group as the test-time augmentation. It stands in for the
    rotations and flips of the paper's fastai pipeline (appendix A.5)."""

    def __call__(self, inputs, generator=None):
        import torch

        from sim2obs.models.augment import DIHEDRAL, dihedral

        images = [k for k in sorted(inputs) if inputs[k].ndim == 4]
        if not images:
            return dict(inputs)
        first = inputs[images[0]]
        draw = torch.randint(0, len(DIHEDRAL), (first.shape[0],), generator=generator)
        out = dict(inputs)
        for name in images:
            x = inputs[name]
            if x.shape[-1] != x.shape[-2]:
                raise Sim2obsValueError("dihedral augmentation needs square images", value=tuple(x.shape))
            y = torch.empty_like(x)
            for k in DIHEDRAL:
                sel = (draw == k).nonzero(as_tuple=True)[0].to(x.device)
                if len(sel):
                    y[sel] = dihedral(x[sel], k)
            out[name] = y
        return out

    def __repr__(self) -> str:
        return "RandomDihedral()"


# --------------------------------------------------------------------------------------------
# Mass-metallicity relation
# --------------------------------------------------------------------------------------------
@dataclass
class MZRConfig:
    """Binning of the mass-metallicity diagnostic: ``bin_width`` in dex of M* (paper: 0.2),
    bins with fewer than ``min_count`` galaxies are left out."""

    bin_width: float = 0.2
    min_count: int = 5


def _scatter(z: np.ndarray, centre: float) -> tuple[float, float]:
    d = z - centre
    return float(np.sqrt(np.mean(d**2))), float(1.4826 * np.median(np.abs(z - np.median(z))))


def mzr_bins(log_mstar: np.ndarray, z: np.ndarray, bin_width: float = 0.2, min_count: int = 5,
             edges: np.ndarray | None = None) -> list[dict[str, float]]:
    """The binned relation Z(M*): for each stellar-mass bin with at least ``min_count`` galaxies,
    its edges, centre, count, median Z, rms scatter about that median and NMAD."""
    m, z = np.asarray(log_mstar, float), np.asarray(z, float)
    if edges is None:
        lo = math.floor(m.min() / bin_width) * bin_width
        edges = np.arange(lo, m.max() + bin_width, bin_width)
    rows = []
    for a, b in zip(edges[:-1], edges[1:]):
        sel = (m >= a) & (m < b)
        if sel.sum() < max(1, min_count):
            continue
        med = float(np.median(z[sel]))
        rms, nmad = _scatter(z[sel], med)
        rows.append({"log_mstar_lo": float(a), "log_mstar_hi": float(b), "log_mstar_centre": float((a + b) / 2),
                     "n": int(sel.sum()), "median": med, "rms": rms, "nmad": nmad})
    return rows


def mzr_scatter(log_mstar: np.ndarray, z: np.ndarray, bins: list[dict[str, float]]) -> dict[str, float]:
    """Global scatter of ``z`` about a binned median relation (interpolated between bin centres):
    rms and NMAD of the residuals, over the galaxies inside the binned mass range."""
    if not bins:
        return {"rms": float("nan"), "nmad": float("nan"), "n": 0}
    m, z = np.asarray(log_mstar, float), np.asarray(z, float)
    inside = (m >= bins[0]["log_mstar_lo"]) & (m < bins[-1]["log_mstar_hi"])
    ref = np.interp(m[inside], [b["log_mstar_centre"] for b in bins], [b["median"] for b in bins])
    r = z[inside] - ref
    return {"rms": float(np.sqrt(np.mean(r**2))), "nmad": M.nmad(r), "n": int(inside.sum())}


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------
# The task
# --------------------------------------------------------------------------------------------
PAPER_NOTE = "Wu & Boada 2019, SDSS DR7 g,r,i 128x128 px, real data"


@TASKS.register("metallicity")
class MetallicityTask(Task):
    """Gas-phase metallicity from g, r, i images (Wu & Boada 2019); see the module docstring."""

    metadata = TaskMetadata(
        name="metallicity",
        version="1.0",
        description="gas-phase metallicity 12+log(O/H) from Lupton-RGB g,r,i images (ResNet-34, RMSE loss)",
        citation="Wu J. F., Boada S., 2019, MNRAS, 484, 4683 (arXiv:1810.12913)",
        inputs=(STACK,),
        targets=(TARGET,),
        target_units=("dex",),
        main_score="rmse",
        metrics=("rmse", "nmad", "bias_mean", "bias_median", "outlier_frac", "l1"),
        paper={
            "cnn": PaperResult(0.085, f"{PAPER_NOTE}; RMSE of the test set, NMAD 0.067 (abstract, §4.3, §7)"),
            "random_forest": PaperResult(0.130, f"{PAPER_NOTE}; RF on g,r,i magnitudes (§5.4)"),
            "mean": PaperResult(0.20, "Wu & Boada 2019 §5.2: 0.20 dex is the standard deviation of the whole "
                                      "Z_true distribution, i.e. the RMSE of the constant mean (Fig. 4 squares)"),
        },
    )
    config_class = MetallicityConfig

    def __init__(self, *args: Any, **kwargs: Any):
        self._cache: dict[tuple, np.ndarray] = {}
        super().__init__(*args, **kwargs)

    # -- config ---------------------------------------------------------------------------
    def validate_config(self) -> None:
        super().validate_config()
        cfg = self.config
        name = f"task.{self.name}"
        self.trainer_config()  # typos and bad values of trainer.* raise here
        if cfg.resolution.trainer is not None:
            self.trainer_config(resolution=True)
        for key, model in (("model", cfg.model), ("resolution.model", cfg.resolution.model)):
            if model is not None and (not isinstance(model, dict) or "_target_" not in model):
                raise ConfigError(f"{name}.{key}", "a network config needs a _target_", value=model)
        if cfg.eval_split in ("train", "val"):
            raise ConfigError(f"{name}.eval_split", "the methods train on 'train' and select on 'val'; evaluate "
                              "another split", value=cfg.eval_split)
        if cfg.augment not in AUGMENTS:
            raise ConfigError(f"{name}.augment", "unknown augmentation", value=cfg.augment, allowed=list(AUGMENTS))
        rgb = cfg.rgb
        if sorted(rgb.channels) != sorted(BANDS):
            raise ConfigError(f"{name}.rgb.channels", "must name g, r and i once each (R, G, B)",
                              value=list(rgb.channels))
        if not (rgb.stretch > 0 and rgb.Q > 0):
            raise ConfigError(f"{name}.rgb", "stretch and Q must be positive", value=(rgb.stretch, rgb.Q))
        if any(not v > 0 for v in rgb.band_scales.values()) or set(rgb.band_scales) - set(BANDS):
            raise ConfigError(f"{name}.rgb.band_scales", "positive weights of bands g, r, i",
                              value=dict(rgb.band_scales))
        sizes = list(cfg.resolution.sizes)
        if any(int(s) != s or s < 1 for s in sizes) or len(set(sizes)) != len(sizes):
            raise ConfigError(f"{name}.resolution.sizes", "distinct positive pixel counts", value=sizes)
        if "path" not in cfg.data:
            stamp = self.simgen_config()["stamp"]
            if sizes and max(sizes) > stamp:
                raise ConfigError(f"{name}.resolution.sizes", f"cannot re-bin {stamp} px stamps to more pixels",
                                  value=sizes, allowed=f"1..{stamp}")
        rf = cfg.random_forest
        if rf.n_estimators < 1 or rf.min_samples_leaf < 1 or not rf.features:
            raise ConfigError(f"{name}.random_forest", "needs features, n_estimators >= 1, min_samples_leaf >= 1",
                              value=asdict(rf))
        bad = [f for f in rf.features if f == TARGET or f.startswith("ml_") or f in ("log_mstar",)]
        if bad:
            raise ConfigError(f"{name}.random_forest.features", "labels are not observables", value=bad)
        if not cfg.mzr.bin_width > 0 or cfg.mzr.min_count < 1:
            raise ConfigError(f"{name}.mzr", "bin_width > 0 and min_count >= 1", value=asdict(cfg.mzr))

    def trainer_config(self, resolution: bool = False, model_target: str | None = None):
        """The validated trainer config of the ``cnn`` (or of the resolution study: the task's
        trainer with ``resolution.trainer`` merged on top); seed offset by the task seed. Staged
        unfreezing applies only to the ``trainer.stages_for`` networks (the ResNets)."""
        return self.merged_trainer_config(self.config.resolution.trainer if resolution else None, model_target)

    # -- data -----------------------------------------------------------------------------
    def check_set(self, gs) -> None:
        super().check_set(gs)
        spec = gs.schema.stack(STACK)
        missing = [b for b in BANDS if b not in spec.channels]
        if missing:
            raise DataFormatError(gs.path, f"{STACK}.channels", f"task {self.name} needs bands g, r, i; the "
                                  f"stack has {list(spec.channels)}")
        if spec.height != spec.width:
            raise DataFormatError(gs.path, STACK, f"task {self.name} needs square images, got {spec.shape}")
        for size in self.config.resolution.sizes:
            if size > spec.height:
                raise ConfigError(f"task.{self.name}.resolution.sizes", f"cannot re-bin {spec.height} px images "
                                  f"to {size} px", value=size)
        for col in ("log_mstar", *self.config.random_forest.features):
            if col not in gs.schema.column_names:
                raise DataFormatError(gs.path, col, f"task {self.name} needs this column")

    def label_columns(self) -> tuple[str, ...]:
        """The target, its error, and the physical parameters a model must not read (stellar mass,
        mass-to-light ratios): only observables go to the random forest."""
        gs = self.galaxy_set
        extra = [c for c in gs.schema.column_names if c == "log_mstar" or c.startswith("ml_")]
        return tuple(dict.fromkeys(super().label_columns() + tuple(extra)))

    def truth(self, split: str) -> Truth:
        """Held-out truth plus ``extra["log_mstar"]`` for the mass-metallicity diagnostic."""
        t = super().truth(split)
        t.extra["log_mstar"] = self.galaxy_set.column("log_mstar", split).astype(np.float64)
        return t

    @property
    def stamp(self) -> int:
        return int(self.galaxy_set.schema.stack(STACK).height)

    def spec(self):
        """The ``cnn``'s inputs: ``{"image": (3, stamp, stamp)}`` Lupton RGB; one output (12+log(O/H),
        standardised with the training split's mean and standard deviation)."""
        from sim2obs.models.conformance import TaskSpec

        if "path" in self.config.data:
            side = self.stamp
        else:
            side = int(self.simgen_config()["stamp"])
        return TaskSpec(input_shapes={STACK: (3, side, side)}, n_targets=1, n_outputs=1)

    def split_inputs(self, split: str) -> dict[str, np.ndarray]:
        """``{"image": (N, 3, H, W)}`` float32 Lupton RGB images in [0, 1] (:meth:`rgb_images`)."""
        return {STACK: self.rgb_images(split)}

    def rgb_images(self, split: str) -> np.ndarray:
        """``(N, 3, H, W)`` float32 Lupton RGB images of ``split`` (cached; no labels involved)."""
        key = ("rgb", split)
        if key not in self._cache:
            gs = self.galaxy_set
            idx = gs.indices(split)
            bands = gs.schema.stack(STACK).channels
            h = self.stamp
            out = np.empty((len(idx), 3, h, h), dtype=np.float32)
            for a in range(0, len(idx), _CHUNK):
                out[a:a + _CHUNK] = lupton_rgb(gs.images(STACK, indices=idx[a:a + _CHUNK]), bands, self.config.rgb)
            self._cache[key] = out
        return self._cache[key]

    def network_inputs(self, split: str, size: int | None = None, min_size: int = 1) -> np.ndarray:
        """RGB images of ``split`` re-binned to ``size`` px (None: full resolution), block-replicated
        up to ``min_size`` px if smaller."""
        full = self.rgb_images(split)
        if size is None or size == full.shape[-1]:
            x = full
        else:
            key = ("rebin", split, int(size))
            if key not in self._cache:
                self._cache[key] = np.concatenate([rebin(full[a:a + _CHUNK], int(size)).astype(np.float32)
                                                   for a in range(0, len(full), _CHUNK)]) if len(full) else \
                    np.empty((0, 3, size, size), np.float32)
            x = self._cache[key]
        return _block_replicate(x, math.ceil(min_size / x.shape[-1]))

    # -- methods --------------------------------------------------------------------------
    def methods(self) -> list[Method]:
        cfg = self.config
        rf = asdict(cfg.random_forest)
        net = {"model": to_plain(cfg.model), "pretrained": cfg.pretrained, "trainer": to_plain(cfg.trainer),
               "augment": cfg.augment, "tta": cfg.tta, "rgb": asdict(cfg.rgb)}
        out = [
            Method("mean", "baseline", "training-split mean of 12+log(O/H) for every galaxy",
                   lambda task, workdir: task._run_mean(workdir), {}, deterministic=True),
            Method("random_forest", "baseline",
                   f"random forest ({cfg.random_forest.n_estimators} trees) on {', '.join(cfg.random_forest.features)}",
                   lambda task, workdir: task._run_forest(workdir), {"random_forest": rf}),
            Method("cnn", "model", f"{str(cfg.model.get('_target_')).rsplit('.', 1)[-1]} on Lupton g,r,i RGB images",
                   lambda task, workdir: task._run_network(workdir, None), net),
        ]
        res_model = cfg.resolution.model if cfg.resolution.model is not None else cfg.model
        for size in cfg.resolution.sizes:
            out.append(Method(
                f"resolution_{int(size)}px", "baseline",
                f"{str(res_model.get('_target_')).rsplit('.', 1)[-1]} on the RGB images re-binned to "
                f"{int(size)}x{int(size)} px",
                lambda task, workdir, s=int(size): task._run_network(workdir, s),
                {**net, "model": to_plain(res_model), "resolution_px": int(size),
                 "pretrained": cfg.pretrained if cfg.resolution.model is None else None,
                 "resolution_trainer": to_plain(cfg.resolution.trainer)}))
        return out

    def _predictions(self, ids: np.ndarray, values: np.ndarray) -> Predictions:
        return Predictions(ids=np.asarray(ids, dtype=np.int64), values=np.asarray(values, float).reshape(-1, 1),
                           targets=self.targets)

    def _run_mean(self, workdir: Path) -> MethodOutput:
        y = self.labels("train")[:, 0]
        ids = self.split_ids(self.config.eval_split)
        mean = float(np.mean(y))
        return MethodOutput(self._predictions(ids, np.full(len(ids), mean)),
                            {"model": "constant", "value": mean, "n_train": int(len(y))})

    def _run_forest(self, workdir: Path) -> MethodOutput:
        from sklearn.ensemble import RandomForestRegressor

        from sim2obs.models.estimators import EstimatorTrainer, TabularData

        rf = self.config.random_forest
        feats = list(rf.features)
        data = {s: TabularData(self.features(s, feats), self.labels(s) if s != self.config.eval_split else
                               np.zeros((len(self.split_ids(s)), 1)), self.split_ids(s).astype(np.int64))
                for s in ("train", "val", self.config.eval_split)}
        params = {"n_estimators": int(rf.n_estimators), "max_features": rf.max_features,
                  "min_samples_leaf": int(rf.min_samples_leaf), "max_depth": rf.max_depth, "n_jobs": int(rf.n_jobs),
                  "random_state": int(self.config.seed)}
        est = RandomForestRegressor(**params)
        trainer = EstimatorTrainer(loss=rmse_loss())
        fit = trainer.fit(est, data["train"], data["val"], workdir / "fit",
                          model_config={"_target_": "sklearn.ensemble.RandomForestRegressor", **params})
        pred = trainer.predict(est, data[self.config.eval_split])
        return MethodOutput(self._predictions(pred["ids"], pred["predictions"][:, 0]),
                            {"model": "RandomForestRegressor", "_target_": "sklearn.ensemble.RandomForestRegressor",
                             "features": feats, "n_estimators": int(rf.n_estimators),
                             "val_rmse": float(fit.best_val_loss), "train_seconds": fit.record.get("wall_seconds")})

    def _run_network(self, workdir: Path, size: int | None) -> MethodOutput:
        """Train the network on the (re-binned) RGB images of train, select on val, predict the
        evaluation split with test-time augmentation. The evaluation split's labels are never read."""
        import torch

        from sim2obs.models import build_model
        from sim2obs.models.engine import TensorDictDataset, Trainer, seed_everything, small_input_precision

        cfg = self.config
        study = size is not None
        model_cfg = to_plain(cfg.resolution.model if study and cfg.resolution.model is not None else cfg.model)
        tcfg = self.trainer_config(resolution=study, model_target=str(model_cfg.get("_target_")))
        tcfg = replace(tcfg, progress=bool(self.progress))  # bars on a terminal; epoch lines in logs
        seed_everything(tcfg.seed)
        model = build_model(model_cfg)
        pretrained = cfg.pretrained if not (study and cfg.resolution.model is not None) else None
        pretrained_id = None
        if pretrained:
            from sim2obs.models.resnet import load_torchvision_state_dict

            path = Path(str(pretrained)).expanduser()
            if not path.is_file():
                raise ConfigError(f"task.{self.name}.pretrained", "no such state-dict file", value=str(path))
            load_torchvision_state_dict(model, torch.load(path, map_location="cpu", weights_only=True))
            pretrained_id = [str(path), path.stat().st_size]
        min_size = int(getattr(model, "min_input_size", 1) or 1)
        split = cfg.eval_split

        y = {s: self.labels(s)[:, 0] for s in ("train", "val")}
        mu, sd = float(np.mean(y["train"])), float(np.std(y["train"]))
        sd = sd if sd > 0 else 1.0
        data = {}
        for s in ("train", "val", split):
            x = torch.from_numpy(self.network_inputs(s, size, min_size))
            ids = torch.from_numpy(self.split_ids(s).astype(np.int64))
            # the evaluation split gets placeholder targets: its labels never reach the network
            target = (torch.from_numpy(((y[s] - mu) / sd).astype(np.float32))[:, None] if s in y
                      else torch.zeros((len(ids), 1), dtype=torch.float32))
            data[s] = TensorDictDataset({STACK: x}, target, ids)
        side = int(data["train"].inputs[STACK].shape[-1])
        tcfg, precision_note = small_input_precision(tcfg, side)
        tcfg, dropped = _adapt_stages(tcfg, model)
        if len(data["train"]) % max(1, tcfg.batch_size) == 1 and not tcfg.drop_last:
            tcfg = replace(tcfg, drop_last=True)  # a lone last object breaks batch norm on 1 px maps
        augment = {"dihedral": RandomDihedral(), "trainer": None, "none": None}[cfg.augment]
        if cfg.augment == "none":
            tcfg = replace(tcfg, augment=None)
        fit_identity = {"data": self.galaxy_set.content_hash, "split": split, "size": size, "min_size": min_size,
                        "pretrained": pretrained_id,
                        "rgb": asdict(cfg.rgb), "model": model_cfg, "trainer": to_plain(tcfg), "augment": cfg.augment,
                        "target_scale": [mu, sd]}
        fit_dir = workdir / f"fit-{stable_hash(fit_identity, 12)}"
        for old in workdir.glob("fit-*"):  # checkpoints of other settings of this method
            if old != fit_dir and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
        trainer = Trainer(tcfg, loss=rmse_loss(), augment=augment,
                          callbacks=[] if tcfg.progress else [self.epoch_logger(workdir.name, tcfg.epochs)])
        fit = trainer.fit(model, data["train"], data["val"], fit_dir, model_config=model_cfg)
        pred = trainer.predict(model, data[split], tta=bool(cfg.tta))
        values = pred["predictions"][:, 0].astype(np.float64) * sd + mu
        info = {"model": type(model).__name__, "_target_": str(model_cfg.get("_target_")),
                "n_parameters": int(sum(p.numel() for p in model.parameters())),
                "resolution_px": int(size) if study else self.stamp, "input_px": side,
                "epochs_run": len(fit.history), "best_epoch": fit.best_epoch,
                "val_rmse_dex": float(fit.best_val_loss) * sd,
                "train_seconds": float(sum(r["seconds"] for r in fit.history)), "tta": bool(cfg.tta),
                "target_mean": mu, "target_std": sd, "fit_dir": fit_dir.name}
        if precision_note:
            info["precision_note"] = precision_note
        if dropped:
            info["schedule_note"] = (f"learning-rate groups {dropped} match no parameter of this network: those "
                                     "parameters use trainer.lr")
        return MethodOutput(self._predictions(pred["ids"], values), info)

    # -- evaluation -----------------------------------------------------------------------
    def compute_metrics(self, predictions: Predictions, truth: Truth) -> dict[str, float]:
        return M.point_metrics(predictions.values[:, 0], truth.values[:, 0])

    def plot(self, predictions: Predictions, truth: Truth, out_dir: Path) -> list[Path]:
        paths = super().plot(predictions, truth, out_dir)
        if "log_mstar" in truth.extra:
            paths.append(plot_mzr(truth.extra["log_mstar"], truth.values[:, 0], predictions.values[:, 0],
                                  out_dir / "mzr.png", self.config.mzr, label=out_dir.name))
        return paths

    def summarise(self, rows: list[dict], out_dir: Path) -> None:
        """Cross-method artefacts: the mass-metallicity tables (per method and a summary, with a
        figure for the ``cnn``) and the resolution-study table and figure."""
        out_dir = Path(out_dir)
        if not rows:
            return
        split = self.config.eval_split
        truth = self.truth(split)
        mass, z_true = truth.extra["log_mstar"], truth.values[:, 0]
        mcfg = self.config.mzr
        lo = math.floor(mass.min() / mcfg.bin_width) * mcfg.bin_width
        edges = np.arange(lo, mass.max() + mcfg.bin_width, mcfg.bin_width)
        true_bins = mzr_bins(mass, z_true, mcfg.bin_width, mcfg.min_count, edges)
        true_global = mzr_scatter(mass, z_true, true_bins)
        bin_rows, summary = [], [{"method": "truth", "mzr_rms": true_global["rms"], "mzr_nmad": true_global["nmad"],
                                  "n": true_global["n"], "rmse": 0.0}]
        for b in true_bins:
            bin_rows.append({"method": "truth", **b})
        preds = {}
        for row in rows:
            path = out_dir / row["method"] / row.get("predictions", PREDICTIONS_FILE.format(split=split))
            if not path.exists():
                continue
            p, t = self.align(Predictions.load(path), split)
            z = p.values[:, 0]
            preds[row["method"]] = z
            pb = mzr_bins(mass, z, mcfg.bin_width, mcfg.min_count, edges)
            g = mzr_scatter(mass, z, pb)
            bin_rows += [{"method": row["method"], **b} for b in pb]
            summary.append({"method": row["method"], "mzr_rms": g["rms"], "mzr_nmad": g["nmad"], "n": g["n"],
                            "rmse": row["metrics"]["rmse"]})
        write_csv_rows(out_dir / "mzr_bins.csv", bin_rows)
        write_csv_rows(out_dir / "mzr_summary.csv", summary)
        ref = "cnn" if "cnn" in preds else (min(rows, key=lambda r: r["value"])["method"] if preds else None)
        if self.config.plots and ref in preds:
            plot_mzr(mass, z_true, preds[ref], out_dir / "mzr.png", mcfg, label=ref)

        errors = {m: bootstrap_rmse_error(z, z_true, seed=self.config.seed) for m, z in preds.items()}
        table = resolution_table(rows, errors)
        if table:
            text = json.dumps(table, indent=2) + "\n"
            atomic_write(out_dir / "resolution_study.json", lambda f: f.write(text), mode="w")
            write_csv_rows(out_dir / "resolution_study.csv", table)
            if self.config.plots:
                plot_resolution(table, rows, out_dir / "resolution_study.png")


# --------------------------------------------------------------------------------------------
# Tables and figures
# --------------------------------------------------------------------------------------------
#: What the paper says about the low resolutions (§5.4; the values themselves are only in Fig. 4).
RESOLUTION_PAPER_NOTES = {
    1: "paper: worse than the RF (RMSE > 0.130 dex), little different from 2 px (§5.3-5.4)",
    2: "paper: worse than the RF (RMSE > 0.130 dex) (§5.4)",
    4: "paper: better than the RF in RMSE and NMAD (§5.4)",
    128: "paper: RMSE 0.085, NMAD 0.067 (§4.3)",
}


def bootstrap_rmse_error(pred: np.ndarray, true: np.ndarray, n_boot: int = 500, seed: int = 0) -> float:
    """1-sigma uncertainty of the RMSE from resampling the evaluated objects (bootstrap)."""
    r = np.asarray(pred, float) - np.asarray(true, float)
    idx = np.random.default_rng(seed).integers(0, len(r), (n_boot, len(r)))
    return float(np.std(np.sqrt(np.mean(r[idx] ** 2, axis=1))))


def resolution_table(rows: Sequence[dict], rmse_errors: dict[str, float] | None = None) -> list[dict]:
    """One row per network with a ``resolution_px`` (the resolution-study methods and the ``cnn``
    at full resolution), sorted by resolution, with RMSE (and its bootstrap 1-sigma error when
    ``rmse_errors`` has it), NMAD, bias and outlier fraction."""
    rmse_errors = rmse_errors or {}
    table = []
    for r in rows:
        info = r.get("info") or {}
        if "resolution_px" not in info:
            continue
        px = int(info["resolution_px"])
        m = r["metrics"]
        network = str(info.get("_target_") or info.get("model")).rsplit(".", 1)[-1]
        table.append({"resolution_px": px, "method": r["method"], "network": network,
                      "input_px": info.get("input_px"), "rmse": m["rmse"],
                      "rmse_err": rmse_errors.get(r["method"], float("nan")), "nmad": m["nmad"],
                      "bias_median": m["bias_median"], "outlier_frac": m["outlier_frac"],
                      "paper": RESOLUTION_PAPER_NOTES.get(px, "")})
    return sorted(table, key=lambda t: (t["resolution_px"], t["method"] != "cnn"))


def plot_mzr(log_mstar: np.ndarray, z_true: np.ndarray, z_pred: np.ndarray, path: Path, config: MZRConfig,
             label: str = "predicted") -> Path:
    """Wu & Boada (2019) Fig. 6: predicted Z against true M*, binned median and scatter of the
    prediction (red) and of the truth (black), the Tremonti et al. (2004) relation (eq. 3); upper
    panel: scatter per mass bin."""
    from sim2obs.simgen.population import mass_metallicity
    from sim2obs.tasks import plots

    mass = np.asarray(log_mstar, float)
    lo = math.floor(mass.min() / config.bin_width) * config.bin_width
    edges = np.arange(lo, mass.max() + config.bin_width, config.bin_width)
    tb = mzr_bins(mass, z_true, config.bin_width, config.min_count, edges)
    pb = mzr_bins(mass, z_pred, config.bin_width, config.min_count, edges)
    fig = plots.new_figure(5.5, 6.0)
    top, ax = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1, 2.5]})
    density = plots.point_density(mass, z_pred)
    order = np.argsort(density)
    ax.scatter(mass[order], np.asarray(z_pred)[order], c=density[order], s=5, cmap="Greys", lw=0,
               vmin=-density.max() / 3)
    xs = np.linspace(mass.min(), mass.max(), 100)
    ax.plot(xs, mass_metallicity(xs), color="tab:blue", ls=":", lw=1.2, label="Tremonti+04 (W&B eq. 3)")
    for bins, colour, name in ((tb, "k", "true Z"), (pb, "tab:red", f"{label} Z")):
        if not bins:
            continue
        c = np.array([b["log_mstar_centre"] for b in bins])
        med = np.array([b["median"] for b in bins])
        rms = np.array([b["rms"] for b in bins])
        ax.plot(c, med, color=colour, lw=1.8, label=f"{name}: median")
        ax.plot(c, med + rms, color=colour, lw=1, ls="--", label=f"{name}: ±rms")
        ax.plot(c, med - rms, color=colour, lw=1, ls="--")
        size = 8 + 60 * np.array([b["n"] for b in bins]) / max(b["n"] for b in bins)
        top.scatter(c, rms, s=size, color=colour, label=f"{name} rms")
        if colour != "k":
            top.scatter(c, [b["nmad"] for b in bins], s=size, color="tab:purple", label=f"{name} NMAD")
    ax.set_xlabel("true log M* [M_sun]")
    ax.set_ylabel("12 + log(O/H)")
    ax.legend(fontsize=7, loc="lower right")
    top.set_ylabel("scatter [dex]")
    top.legend(fontsize=7, ncol=3)
    return plots.save_figure(fig, path)


def plot_resolution(table: list[dict], rows: Sequence[dict], path: Path) -> Path:
    """Wu & Boada (2019) Fig. 4: RMSE (red) and NMAD (violet) of the networks against image
    resolution; the random forest (triangles) and the constant mean (squares) for reference."""
    from sim2obs.tasks import plots

    fig = plots.new_figure(5.5, 5.0)
    ax = fig.add_subplot()
    study = [t for t in table if t["method"] != "cnn"]
    px = np.array([t["resolution_px"] for t in table], float)
    if study:
        x = [t["resolution_px"] for t in study]
        name = study[0]["network"]
        ax.errorbar(x, [t["rmse"] for t in study], yerr=[t.get("rmse_err", np.nan) for t in study], fmt="o-",
                    color="tab:red", capsize=2, label=f"RMSE ({name}, re-binned)")
        ax.plot(x, [t["nmad"] for t in study], "o--", color="tab:purple", label=f"NMAD ({name}, re-binned)")
    for t in table:
        if t["method"] == "cnn":
            ax.plot([t["resolution_px"]], [t["rmse"]], "*", ms=11, color="tab:red", label=f"cnn RMSE ({t['network']})")
            ax.plot([t["resolution_px"]], [t["nmad"]], "*", ms=11, color="tab:purple",
                    label=f"cnn NMAD ({t['network']})")
    marks = {"random_forest": ("^", "random forest"), "mean": ("s", "constant mean")}
    for r in rows:
        if r["method"] in marks:
            marker, name = marks[r["method"]]
            for key, colour in (("rmse", "tab:red"), ("nmad", "tab:purple")):
                ax.axhline(r["metrics"][key], color=colour, lw=0.6, ls=":")
                ax.plot([px.max() * 1.25], [r["metrics"][key]], marker, mfc="none", color=colour,
                        label=f"{name} {key.upper()}")
    ax.set_xscale("log", base=2)
    ticks = sorted(set(int(p) for p in px))
    ax.set_xticks(ticks, labels=[str(t) for t in ticks])
    ax.set_xlabel("image side [px]")
    ax.set_ylabel("scatter of ΔZ [dex]")
    ax.legend(fontsize=6, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.16))
    return plots.save_figure(fig, path)
