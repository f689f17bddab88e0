"""The ``metallicity`` task's declaration: metadata, configuration checks, data binding (labels,
the RGB network inputs), its methods and its evaluation."""
from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from sim2obs.config import to_plain
from sim2obs.errors import ConfigError, DataFormatError
from sim2obs.models.conformance import TaskSpec
from sim2obs.tasks import TASKS
from sim2obs.tasks import metrics as M
from sim2obs.tasks.base import Method, PaperResult, Predictions, Task, TaskMetadata, Truth
from sim2obs.tasks.metallicity import report
from sim2obs.tasks.metallicity.baselines import run_forest, run_mean
from sim2obs.tasks.metallicity.config import (AUGMENTS, BANDS, CHUNK, COLOURS, LOG_SSFR_STAR_FORMING, SFR_COLUMN,
                                                 STACK, TARGET, MetallicityConfig)
from sim2obs.tasks.metallicity.network import run_network
from sim2obs.tasks.metallicity.observables import OBSERVABLES
from sim2obs.tasks.metallicity.preprocessing import block_replicate, lupton_rgb, rebin

__all__ = ["MetallicityTask"]

PAPER_NOTE = "Wu & Boada 2019, SDSS DR7 g,r,i 128x128 px, real data"


@TASKS.register("metallicity")
class MetallicityTask(Task):
    """Gas-phase metallicity from g, r, i images (Wu & Boada 2019); see the package docstring."""

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
        observables=OBSERVABLES,
    )
    config_class = MetallicityConfig

    def __init__(self, *args: Any, **kwargs: Any):
        self._cache: dict[tuple, np.ndarray] = {}
        self._selection: dict[str, np.ndarray | None] = {}
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
        self._validate_rgb()
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
        noise = list(cfg.label_noise)
        if any(not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0) for v in noise) \
                or len(set(noise)) != len(noise):
            raise ConfigError(f"{name}.label_noise", "distinct positive scatters in dex", value=noise)
        bad_colours = [c for c in cfg.colour_study if c not in COLOURS]
        if bad_colours or len(set(cfg.colour_study)) != len(cfg.colour_study):
            raise ConfigError(f"{name}.colour_study", "distinct band sets", value=list(cfg.colour_study),
                              allowed=list(COLOURS))
        if not cfg.mzr.bin_width > 0 or cfg.mzr.min_count < 1:
            raise ConfigError(f"{name}.mzr", "bin_width > 0 and min_count >= 1", value=asdict(cfg.mzr))

    def _validate_rgb(self) -> None:
        rgb, name = self.config.rgb, f"task.{self.name}"
        if sorted(rgb.channels) != sorted(BANDS):
            raise ConfigError(f"{name}.rgb.channels", "must name g, r and i once each (R, G, B)",
                              value=list(rgb.channels))
        if not (rgb.stretch > 0 and rgb.Q > 0):
            raise ConfigError(f"{name}.rgb", "stretch and Q must be positive", value=(rgb.stretch, rgb.Q))
        if any(not v > 0 for v in rgb.band_scales.values()) or set(rgb.band_scales) - set(BANDS):
            raise ConfigError(f"{name}.rgb.band_scales", "positive weights of bands g, r, i",
                              value=dict(rgb.band_scales))

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
        self._select(gs)

    def _select(self, gs) -> None:
        """The star-forming sample of every split (``star_forming_only``; done here, when the set is
        opened, not by any method): rows with log SFR - log M* > -11 (1/yr). A simulated set without
        ``log_sfr`` is refused; a real one (``data.path``) is taken as already selected."""
        self._selection = {}
        if not self.config.star_forming_only:
            return
        if SFR_COLUMN not in gs.schema.column_names:
            if "path" in self.config.data:
                return
            raise DataFormatError(gs.path, SFR_COLUMN, f"task {self.name} selects star-forming galaxies "
                                  "(star_forming_only) and needs this column; regenerate the set")
        for split in gs.split_names:
            ssfr = gs.column(SFR_COLUMN, split) - gs.column("log_mstar", split)
            self._selection[split] = np.flatnonzero(ssfr > LOG_SSFR_STAR_FORMING)

    def selection(self, split: str) -> np.ndarray | None:
        """Row positions (within ``split``) of the task's sample, or None for the whole split."""
        self.prepare()
        return self._selection.get(split)

    def _rows(self, split: str, values: np.ndarray) -> np.ndarray:
        rows = self.selection(split)
        return values if rows is None else values[rows]

    def split_ids(self, split: str) -> np.ndarray:
        """Ids of the task's sample in ``split`` (the star-forming galaxies, see :meth:`selection`)."""
        return self._rows(split, super().split_ids(split))

    def labels(self, split: str) -> np.ndarray:
        return self._rows(split, super().labels(split))

    def features(self, split: str, columns) -> np.ndarray:
        return self._rows(split, super().features(split, columns))

    def label_columns(self) -> tuple[str, ...]:
        """The target, its error, and the physical parameters a model must not read (stellar mass,
        mass-to-light ratios): only observables go to the random forest."""
        gs = self.galaxy_set
        extra = [c for c in gs.schema.column_names if c in ("log_mstar", SFR_COLUMN) or c.startswith("ml_")]
        return tuple(dict.fromkeys(super().label_columns() + tuple(extra)))

    def truth(self, split: str) -> Truth:
        """Held-out truth plus ``extra["log_mstar"]`` for the mass-metallicity diagnostic."""
        t = super().truth(split)
        t.extra["log_mstar"] = self.galaxy_set.column("log_mstar", split).astype(np.float64)
        rows = self.selection(split)
        return t if rows is None else t.subset(rows)

    @property
    def stamp(self) -> int:
        return int(self.galaxy_set.schema.stack(STACK).height)

    def spec(self):
        """The ``cnn``'s inputs: ``{"image": (3, stamp, stamp)}`` Lupton RGB; one output (12+log(O/H),
        standardised with the training split's mean and standard deviation)."""
        side = self.stamp if "path" in self.config.data else int(self.simgen_config()["stamp"])
        return TaskSpec(input_shapes={STACK: (3, side, side)}, n_targets=1, n_outputs=1)

    def split_inputs(self, split: str) -> dict[str, np.ndarray]:
        """``{"image": (N, 3, H, W)}`` float32 Lupton RGB images in [0, 1] (:meth:`rgb_images`)."""
        return {STACK: self.rgb_images(split)}

    def rgb_images(self, split: str) -> np.ndarray:
        """``(N, 3, H, W)`` float32 Lupton RGB images of ``split`` (cached; no labels involved)."""
        key = ("rgb", split)
        if key not in self._cache:
            gs = self.galaxy_set
            idx = self._rows(split, np.asarray(gs.indices(split)))
            bands = gs.schema.stack(STACK).channels
            h = self.stamp
            out = np.empty((len(idx), 3, h, h), dtype=np.float32)
            for a in range(0, len(idx), CHUNK):
                out[a:a + CHUNK] = lupton_rgb(gs.images(STACK, indices=idx[a:a + CHUNK]), bands, self.config.rgb)
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
                self._cache[key] = np.concatenate([rebin(full[a:a + CHUNK], int(size)).astype(np.float32)
                                                   for a in range(0, len(full), CHUNK)]) if len(full) else \
                    np.empty((0, 3, size, size), np.float32)
            x = self._cache[key]
        return block_replicate(x, math.ceil(min_size / x.shape[-1]))

    # -- methods --------------------------------------------------------------------------
    def methods(self) -> list[Method]:
        cfg = self.config
        rf = asdict(cfg.random_forest)
        net = {"model": to_plain(cfg.model), "pretrained": cfg.pretrained, "trainer": to_plain(cfg.trainer),
               "augment": cfg.augment, "tta": cfg.tta, "rgb": asdict(cfg.rgb)}
        out = [
            Method("mean", "baseline", "training-split mean of 12+log(O/H) for every galaxy", run_mean, {},
                   deterministic=True),
            Method("random_forest", "baseline",
                   f"random forest ({cfg.random_forest.n_estimators} trees) on {', '.join(cfg.random_forest.features)}",
                   run_forest, {"random_forest": rf}),
            Method("cnn", "model", f"{str(cfg.model.get('_target_')).rsplit('.', 1)[-1]} on Lupton g,r,i RGB images",
                   lambda task, workdir: run_network(task, workdir, None), net),
        ]
        res_model = cfg.resolution.model if cfg.resolution.model is not None else cfg.model
        for size in cfg.resolution.sizes:
            out.append(Method(
                f"resolution_{int(size)}px", "baseline",
                f"{str(res_model.get('_target_')).rsplit('.', 1)[-1]} on the RGB images re-binned to "
                f"{int(size)}x{int(size)} px",
                lambda task, workdir, s=int(size): run_network(task, workdir, s),
                {**net, "model": to_plain(res_model), "resolution_px": int(size),
                 "pretrained": cfg.pretrained if cfg.resolution.model is None else None,
                 "resolution_trainer": to_plain(cfg.resolution.trainer)}))
        for sigma in cfg.label_noise:
            out.append(Method(
                f"label_noise_{float(sigma):g}", "model",
                f"the cnn trained on labels with {float(sigma):g} dex of added scatter (§5.2), scored on the true ones",
                lambda task, workdir, v=float(sigma): run_network(task, workdir, None, label_noise=v),
                {**net, "label_noise_dex": float(sigma)}))
        if cfg.mzr_of_predicted_mstar:
            out.append(Method(
                "mzr_of_cnn_mstar", "baseline", "the cnn trained on log M*, then the Tremonti MZR (eq. 3) at the "
                "predicted mass (Fig. 5, Z_MZR)",
                lambda task, workdir: run_network(task, workdir, None, target="log_mstar"),
                {**net, "target": "log_mstar"}))
        for colour in cfg.colour_study:
            out.append(Method(
                f"colour_{colour}", "model", f"the cnn on {'+'.join(colour)}-band images (Fig. 4 colour study)",
                lambda task, workdir, c=colour: run_network(task, workdir, None, colour=c), {**net, "colour": colour}))
        return out

    def predictions(self, ids: np.ndarray, values: np.ndarray) -> Predictions:
        """:class:`Predictions` of the target for objects ``ids`` (int64) with ``values`` (N,) in dex."""
        return Predictions(ids=np.asarray(ids, dtype=np.int64), values=np.asarray(values, float).reshape(-1, 1),
                           targets=self.targets)

    # -- evaluation -----------------------------------------------------------------------
    def compute_metrics(self, predictions: Predictions, truth: Truth) -> dict[str, float]:
        return M.point_metrics(predictions.values[:, 0], truth.values[:, 0])

    def plot(self, predictions: Predictions, truth: Truth, out_dir: Path) -> list[Path]:
        paths = super().plot(predictions, truth, out_dir)
        if "log_mstar" in truth.extra:
            paths.append(report.plot_mzr(truth.extra["log_mstar"], truth.values[:, 0], predictions.values[:, 0],
                                         out_dir / "mzr.png", self.config.mzr, label=out_dir.name))
        return paths

    def summarise(self, rows: list[dict], out_dir: Path) -> None:
        """Cross-method artefacts: the mass-metallicity tables (per method and a summary, with a
        figure for the ``cnn``) and the resolution-study table and figure (:mod:`.report`)."""
        if not rows:
            return
        out_dir = Path(out_dir)
        preds = report.write_mzr_tables(self, rows, out_dir)
        report.write_resolution_study(self, rows, preds, out_dir)
        if self.config.mzr_oracle and preds:
            report.write_oracle_comparison(self, preds, out_dir)
