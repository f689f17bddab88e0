"""The ``ml_ratio`` task's declaration: metadata, configuration checks, data binding (which
columns are labels, the image features, the network inputs), its methods and its evaluation."""
from __future__ import annotations

from dataclasses import asdict, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sim2obs.errors import ConfigError, DataFormatError, Sim2obsValueError
from sim2obs.models.conformance import TaskSpec
from sim2obs.models.engine import load_trainer_config, validate_config
from sim2obs.models.gz2 import gz2_tree
from sim2obs.provenance import stable_hash
from sim2obs.tasks import TASKS
from sim2obs.tasks import metrics as M
from sim2obs.tasks import plots
from sim2obs.tasks.base import Method, PaperResult, Predictions, Task, TaskMetadata, Truth
from sim2obs.tasks.ml_ratio import baselines, networks, report, sample
from sim2obs.tasks.ml_ratio.config import (BAND, GI, GROUPS, LG_Z, LOG_STAT_NAMES, OBSERVABLE_COLUMNS,
                                              OBSERVABLE_PREFIXES, STAT_NAMES, TARGET, CNNSpec, MLRatioConfig)
from sim2obs.tasks.ml_ratio.model import run_model
from sim2obs.tasks.ml_ratio.observables import OBSERVABLES
from sim2obs.tasks.ml_ratio.preprocessing import flux_to_luminosity

__all__ = ["MLRatioTask"]


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
        observables=OBSERVABLES,
    )
    config_class = MLRatioConfig

    def __init__(self, *args: Any, **kwargs: Any):
        self._cache: dict[str, Any] = {}
        self._rows: dict[str, np.ndarray] | None = None   # the D25 sample (_select)
        self._d25: dict[str, np.ndarray | None] = {}
        super().__init__(*args, **kwargs)

    # -- config -----------------------------------------------------------------------------
    def validate_config(self) -> None:
        super().validate_config()
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
        if c.photometry not in ("aperture", "catalogue"):
            raise ConfigError(f"{p}.photometry", "unknown photometry", value=c.photometry,
                              allowed=["aperture", "catalogue"])
        if c.d25_min_arcmin is not None and not c.d25_min_arcmin >= 0:
            raise ConfigError(f"{p}.d25_min_arcmin", "must be >= 0 (or null: no size cut)", value=c.d25_min_arcmin)
        if c.cutout_fov_d25 is not None and not c.cutout_fov_d25 > 0:
            raise ConfigError(f"{p}.cutout_fov_d25", "must be > 0 (or null: the whole stamp)", value=c.cutout_fov_d25)
        if not 0.0 < c.noise_level < 1.0:
            raise ConfigError(f"{p}.noise_level", "must lie in (0, 1)", value=c.noise_level)
        for key in ("lightgbm_rounds", "importance_repeats", "sigma_clip_iters"):
            if int(getattr(c, key)) < 1:
                raise ConfigError(f"{p}.{key}", "must be at least 1", value=getattr(c, key))
        for key in ("early_stopping_rounds", "gi_morph_top_features", "lightgbm_threads"):
            if int(getattr(c, key)) < 0:
                raise ConfigError(f"{p}.{key}", "must be >= 0", value=getattr(c, key))
        self._validate_cnns()

    def _validate_cnns(self) -> None:
        c, p = self.config, f"task.{self.name}"
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
        for name in self.morphology_columns():
            if name not in gs.schema.column_names:
                raise DataFormatError(gs.path, name, f"task {self.name} uses this column as a morphology label")
        if self.config.photometry == "aperture" and "i" not in bands:
            raise DataFormatError(gs.path, "image", f"task {self.name} measures g and i photometry on the images "
                                  f"(photometry: aperture); the stack has {list(bands)}")
        self._select(gs)

    # -- the sample (§2.1) and its labels (sample.py) ---------------------------------------------
    def _select(self, gs) -> None:
        """D25 of every object (HyperLeda's ``d25_arcmin`` on a real set, else the generator's model:
        :func:`sample.d25_arcsec`; None when neither exists) and the D25 > ``d25_min_arcmin`` sample
        of every split (done when the set opens, not by any method)."""
        rows_of, self._d25 = {}, {}
        model_cols = ("bulge_hlr_arcsec", "bulge_sersic_n", "bulge_q", "bulge_position_angle_deg",
                      "disk_hlr_arcsec", "disk_q", "position_angle_deg", "flux_g", "bt_g")
        names = set(gs.schema.column_names)
        for split in gs.split_names:
            if "d25_arcmin" in names:
                d25 = 60.0 * gs.column("d25_arcmin", split).astype(np.float64)
            elif names.issuperset(model_cols):
                cols = [*model_cols, *(c for c in ("flux_r", "bt_r", "bulge_color_gr", "disk_color_gr",
                                                   "bulge_av", "disk_av") if c in names)]
                d25 = sample.d25_arcsec({c: gs.column(c, split) for c in cols})
            else:
                d25 = None
            if d25 is None or self.config.d25_min_arcmin is None:
                rows = np.arange(len(gs.column("id", split)))
            else:
                rows = np.flatnonzero(d25 > 60.0 * float(self.config.d25_min_arcmin))
            rows_of[split], self._d25[split] = rows, None if d25 is None else d25[rows]
        self._rows = rows_of

    def sample_rows(self, split: str) -> np.ndarray:
        """Row positions (within ``split`` of the set) of the task's D25-selected sample."""
        if self._rows is None:
            self._select(self.galaxy_set)
        return self._rows[split]

    def selection(self, split: str) -> np.ndarray:
        """Row positions of the sample in ``split`` (the name the metallicity task uses too)."""
        return self.sample_rows(split)

    def d25(self, split: str) -> np.ndarray | None:
        """``(N,)`` D25 (arcsec) of the sample in ``split``, or None when the set has none."""
        self.sample_rows(split)
        return self._d25[split]

    def split_ids(self, split: str) -> np.ndarray:
        return super().split_ids(split)[self.sample_rows(split)]

    def features(self, split: str, columns) -> np.ndarray:
        return super().features(split, columns)[self.sample_rows(split)]

    def _noisy(self) -> bool:
        return bool(self.config.label_noise) and self.galaxy_set.kind == "simulated"

    def _measured(self, split: str, values: np.ndarray) -> np.ndarray:
        """SED-fit-like labels of a simulated set (:func:`sample.noisy_labels`), else ``values``."""
        if not self._noisy():
            return values
        gs, rows = self.galaxy_set, self.sample_rows(split)
        err = gs.column(gs.schema.column(TARGET).error, split)[rows].astype(np.float64)
        out = values.copy()
        out[:, 0] = sample.noisy_labels(values[:, 0], err / values[:, 0], self.split_ids(split),
                                        self.config.label_noise_seed)
        return out

    def labels(self, split: str) -> np.ndarray:
        """(N, 1) M/L of a training or validation split: on a simulated set the SED-fit-like
        measurement (truth × log-normal ΔΥ/Υ), as GSWLC's labels are (``label_noise``)."""
        return self._measured(split, super().labels(split)[self.sample_rows(split)])

    def truth(self, split: str) -> Truth:
        """Held-out labels as :meth:`labels` gives them, plus ``extra["ml_g_noiseless"]`` (the
        generator's M/L) on a simulated set with label noise."""
        t = super().truth(split).subset(self.sample_rows(split))
        if self._noisy():
            t.extra["ml_g_noiseless"] = t.values[:, 0].copy()
            t.values = self._measured(split, t.values)
        return t

    def morphology_columns(self) -> list[str]:
        """The morphology CNNs' label columns: the 37 GZ2 answers (``gz2`` head) or ``morphology_labels``."""
        if self.config.morphology_head == "gz2":
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
        return tuple(dict.fromkeys([*super().label_columns(), *labels, *self.morphology_columns()]))

    def _training_columns(self, split: str, columns) -> np.ndarray:
        """Label columns of a training or validation split (the evaluation split is refused)."""
        if split == self.config.eval_split:
            raise Sim2obsValueError(f"labels of the evaluation split {split!r} are held out", value=split)
        gs, rows = self.galaxy_set, self.sample_rows(split)
        return np.stack([gs.column(c, split)[rows] for c in columns], axis=1).astype(np.float64)

    def target_errors(self, split: str) -> np.ndarray:
        """ΔΥ of a training or validation split, floored at 5 % (the weights of ℒ1)."""
        y = self.labels(split)[:, 0]
        err = self._training_columns(split, [self.galaxy_set.schema.column(TARGET).error])[:, 0]
        return M.floored_error(y, err, M.MIN_RELATIVE_ERROR)

    def morphology_labels(self, split: str) -> np.ndarray:
        """``(N, L)`` morphology labels of a training or validation split: GZ2 unconditional
        probabilities (``gz2`` head), or the structural columns (``log_labels`` checked positive)."""
        cols = self.morphology_columns()
        y = self._training_columns(split, cols)
        if self.config.morphology_head == "gz2":  # weighted vote fractions -> unconditional probabilities
            return gz2_tree().to_unconditional(torch.as_tensor(y)).numpy()
        for j, name in enumerate(cols):
            if name in self.config.log_labels and (y[:, j] <= 0).any():
                raise DataFormatError(self.galaxy_set.path, name, "log_labels must be positive")
        return y

    # -- image features (§2.2, §3.2) ------------------------------------------------------------
    def image_features(self, split: str) -> dict[str, Any]:
        """Per split (the D25 sample): ``ids``; the scaled g-band cutouts ``scaled`` (N, S, S) in [0, 1]
        (1.125 D25 fields resampled to S = :meth:`working_size` px); the scaling values ``a`` and input
        noise levels; ``lum``/``flux``/``log`` statistics (name -> (N,)) of the cutouts; ``size_px``
        (the cutout's side before resampling, the paper's "original image size"); ``aperture``
        ({band: (N,)} g and i fluxes measured in the D25 aperture, nanomaggies); ``capped`` (bool
        (N,): the cutout wanted more than the stamp). Computed from the images and observables only
        (:func:`sample.measure_images`)."""
        key = f"image:{split}"
        if key in self._cache:
            return self._cache[key]
        c, gs = self.config, self.galaxy_set
        stack = gs.schema.stack("image")
        index = gs.indices(split)[self.sample_rows(split)]
        d25 = self.d25(split)
        fov = c.cutout_fov_d25
        pix = (np.full(len(index), float(stack.pixel_scale_arcsec)) if stack.pixel_scale_arcsec
               else self.features(split, ["pixel_scale_arcsec"])[:, 0])
        chunks = []
        for start in range(0, len(index), 1024):  # chunks bound the memory of large sets
            rows = slice(start, start + 1024)
            raw = gs.images("image", indices=index[rows])
            chunks.append(sample.measure_images(raw, tuple(stack.channels), None if d25 is None else d25[rows],
                                                pix[rows], fov, self.working_size(),
                                                (c.noise_level, c.sigma_clip, c.sigma_clip_iters)))
        cat = {k: np.concatenate([ch[k] for ch in chunks]) for k in ("scaled", "a", "noise", "reached", "side",
                                                                     "capped")}
        flux = {k: np.concatenate([ch["flux"][k] for ch in chunks]) for k in STAT_NAMES}
        factor = flux_to_luminosity(self.features(split, ["luminosity_distance_mpc"])[:, 0])
        out = {"ids": self.split_ids(split), **{k: v for k, v in cat.items() if k != "side"},
               "flux": flux, "lum": {k: v * factor for k, v in flux.items()},
               "log": {k: np.concatenate([ch["log"][k] for ch in chunks]) for k in LOG_STAT_NAMES},
               "aperture": {b: np.concatenate([ch["aperture"][b] for ch in chunks]) for b in stack.channels},
               "size_px": cat["side"]}
        self._cache[key] = out
        return out

    def working_size(self) -> int:
        """Side (px) the scaled cutouts are resampled to once: the largest CNN input (or the stamp)."""
        c = self.config
        sizes = [s.image_size or c.image_size for s in c.morphology_cnns.values()]
        sizes = [int(x) for x in sizes if x is not None]
        return max(sizes) if sizes else int(self.galaxy_set.schema.stack("image").shape[-1])

    def photometry(self, split: str) -> dict[str, np.ndarray]:
        """``lum_g``, ``lum_i`` (L_sun, 4πD² × flux, no K-correction) and ``mag_g``, ``mag_i`` (AB) of the
        sample in ``split``: measured in the D25 aperture on the noisy images (``photometry:
        aperture``; fluxes below 1e-3 nanomaggies are floored there) or the catalogue's (``catalogue``)."""
        names = ("lum_g", "lum_i", "mag_g", "mag_i")
        if self.config.photometry == "catalogue":
            return dict(zip(names, self.features(split, list(names)).T))
        ap = self.image_features(split)["aperture"]
        dist = self.features(split, ["luminosity_distance_mpc"])[:, 0]
        out = {}
        for b in ("g", "i"):
            f = np.maximum(ap[b], 1e-3)
            out[f"lum_{b}"] = f * flux_to_luminosity(dist, b)
            out[f"mag_{b}"] = 22.5 - 2.5 * np.log10(f)
        return out

    def image_groups(self, split: str) -> dict[str, tuple[np.ndarray, list[str]]]:
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

    def feature_key(self) -> str:
        """Identity of the trained CNNs and their features (data, networks, schedule, labels, scaling, seed)."""
        c = self.config
        return stable_hash({"data": self.galaxy_set.content_hash, "version": self.metadata.version,
                            "model": c.model, "trainer": {k: v for k, v in c.trainer.items() if k != "progress"},
                            "cnns": {k: asdict(v) for k, v in c.morphology_cnns.items()},
                            "ml_cnn": [c.ml_cnn_from, c.ml_cnn_epochs, c.ml_cnn_lr], "head": c.morphology_head,
                            "labels": self.morphology_columns(), "log_labels": list(c.log_labels),
                            "fraction": c.cnn_train_fraction, "image_size": c.image_size,
                            "scaling": [c.noise_level, c.sigma_clip, c.sigma_clip_iters], "seed": c.seed,
                            "sample": [c.d25_min_arcmin, c.cutout_fov_d25, c.label_noise, c.label_noise_seed]}, 12)

    def cnn_features(self, root: Path, log=print) -> dict[str, Any]:
        """The morphology CNNs' and CNN 4's features of every split (:func:`networks.cnn_features`;
        trained once, then cached in memory and on disk under ``root/features-<key>/``)."""
        key = "cnn:" + self.feature_key()
        if key not in self._cache:
            self._cache[key] = networks.cnn_features(self, root, log)
        return self._cache[key]

    # -- network inputs -------------------------------------------------------------------------
    def spec(self):
        """The first morphology CNN's inputs: ``{"image": (1, S, S)}`` log-scaled g band at its
        ``image_size`` (or ``image_size``); outputs: one per morphology label (standardised)."""
        c = self.config
        first = next(iter(c.morphology_cnns.values()))
        side = first.image_size or c.image_size or (int(self.galaxy_set.schema.stack("image").height)
                                                    if "path" in c.data else int(self.simgen_config()["stamp"]))
        n = len(self.morphology_columns())
        return TaskSpec(input_shapes={"image": (1, int(side), int(side))}, n_targets=n, n_outputs=n)

    def model_checks(self) -> list[tuple[str, Any, Any]]:
        """Every morphology CNN, as ``cnn_gbm`` builds it."""
        if "cnn_gbm" not in {m.name for m in self.selected_methods()}:
            return []
        c, spec, out = self.config, self.spec(), []
        for name, cnn in c.morphology_cnns.items():
            side = int(cnn.image_size or c.image_size or spec.stamp)
            s = replace(spec, input_shapes={"image": (1, side, side)})
            key = f"morphology_cnns.{name}.model" if cnn.model is not None else "model"
            out.append((key, networks.with_task_arguments(self._cnn_model(cnn), spec.n_targets), s))
        return out

    def split_inputs(self, split: str) -> dict[str, np.ndarray]:
        """``{"image": (N, 1, H, W)}`` float32 log-scaled g-band images in [0, 1] (§2.2; before the
        resize to a CNN's ``image_size``), ``{"features": (N, F)}`` the luminosity, image and
        distance statistics the LightGBM methods read (names: :meth:`image_groups`)."""
        groups = self.image_groups(split)
        feats = np.concatenate([groups[g][0] for g in ("luminosity", "distance")], axis=1)
        return {"image": self.image_features(split)["scaled"][:, None], "features": feats.astype(np.float64)}

    # -- methods ------------------------------------------------------------------------------
    def methods(self) -> list[Method]:
        c = self.config
        return [
            Method("best_constant", "baseline", "ℒ1-optimal constant: 1/ΔΥ-weighted median of the training M/L",
                   baselines.run_constant, {"kind": "weighted_median"}, deterministic=True),
            Method("gbm_lg_z", "baseline", "LightGBM on L_g and redshift (the paper's reference method, §4.1)",
                   partial(baselines.run_catalogue_gbm, names=LG_Z), {"kind": "lightgbm", "features": LG_Z}),
            Method("gi_power_law", "baseline", "log M/L_g = a + b (g − i), fitted by ℒ1 on the training set (§4.3)",
                   baselines.run_power_law, {"kind": "power_law", "colour": ["mag_g", "mag_i"]}),
            Method("gbm_gi", "baseline", "LightGBM on redshift, L_g, L_i, L_g/L_i (§4.3)",
                   partial(baselines.run_catalogue_gbm, names=GI), {"kind": "lightgbm", "features": GI}),
            Method("gbm_gi_morph", "baseline", "g + i + morph: LightGBM on the image features plus L_g, L_i, "
                   "L_g/L_i (§4.3)", baselines.run_gi_morph,
                   {"kind": "lightgbm", "groups": list(GROUPS), "catalogue": ["lum_g", "lum_i", "lum_g/lum_i"],
                    "top_features": c.gi_morph_top_features}),
            Method("cnn_gbm", "model", "g + morph: morphology CNNs on the log-scaled g image + luminosity "
                   "statistics + redshift + pixel size, into LightGBM (the paper's pipeline)", run_model,
                   {"kind": "cnn+lightgbm", "groups": list(GROUPS), "ablation": c.ablation}),
        ]

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
        """The shared plots plus the paper's Fig. 4 (right) histograms (:func:`report.plot_error_histograms`)."""
        return super().plot(predictions, truth, out_dir) + report.plot_error_histograms(predictions, truth, out_dir)

    def summarise(self, rows: list[dict], out_dir: Path) -> None:
        """``l1_by_method.png`` (the paper's Fig. 8 style) and, when ``cnn_gbm`` ran with ablation,
        ``ablation_table.{csv,md,png}`` (Table 1) scored on the evaluation split."""
        out_dir = Path(out_dir)
        if rows and self.config.plots:
            plots.bar_table([r["method"] for r in rows], [r["metrics"]["l1"] for r in rows],
                            out_dir / "l1_by_method.png", xlabel=f"test ℒ1 ({self.config.eval_split} split)")
        report.write_ablation_table(self, rows, out_dir)
        report.write_noiseless_scores(self, rows, out_dir)
