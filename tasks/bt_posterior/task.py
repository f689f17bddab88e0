"""The ``bt_posterior`` task's declaration: metadata, configuration checks, its methods, its
evaluation and data binding (stretched images, scaled labels, the point estimate)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from sim2obs.errors import ConfigError, Sim2obsValueError
from sim2obs.models.conformance import TaskSpec
from sim2obs.models.engine import load_trainer_config
from sim2obs.models.engine import validate_config as validate_trainer_config
from sim2obs.tasks import TASKS
from sim2obs.tasks import metrics as M
from sim2obs.tasks.base import Method, PaperResult, Predictions, Task, TaskMetadata, Truth
from sim2obs.tasks.bt_posterior.baselines import _run_prior
from sim2obs.tasks.bt_posterior.config import _PAPER_NOTE, BAND, TARGETS, UNITS, BTPosteriorConfig, _metric_names
from sim2obs.tasks.bt_posterior.gampen import _run_fixed, _run_gampen, _run_no_stn
from sim2obs.tasks.bt_posterior.networks import _n_outputs, _task_arguments
from sim2obs.tasks.bt_posterior.observables import OBSERVABLES
from sim2obs.tasks.bt_posterior.posterior import posterior_mode
from sim2obs.tasks.bt_posterior.preprocessing import _EncodeTarget, _StretchChannel, arcsinh_stretch
from sim2obs.tasks.bt_posterior.report import _plot_example_posteriors, _plot_pit, write_summary
from sim2obs.tasks.common.networks import split_dataset
from sim2obs.tasks.common.scaling import LabelCoder

__all__ = ["BTPosteriorTask"]


@TASKS.register("bt_posterior")
class BTPosteriorTask(Task):
    """GaMPEN posteriors of B/T, R_e and flux with dropout-rate calibration (package docstring)."""

    metadata = TaskMetadata(
        name="bt_posterior",
        version="2.1",  # 2.0: HSC-like data, full-covariance Gaussian posteriors, recalibration; 2.1:
        # posterior_score's accuracy term is the mean absolute error (was the NMAD: a two-valued guess beat a constant)
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
        observables=OBSERVABLES,
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
        try:
            cfg = load_trainer_config(dict(self.config.trainer))
        except ConfigError as exc:
            raise ConfigError(f"task.{self.name}.{exc.key}", str(exc).split(": ", 1)[-1].split(" (got ")[0],
                              value=exc.value, allowed=exc.allowed) from None
        validate_trainer_config(cfg)
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
        """``summary.md``, ``coverage_curves.csv``, ``coverage_bootstrap.csv`` and ``pit_histogram.csv``
        (:func:`~sim2obs.tasks.bt_posterior.report.write_summary`)."""
        write_summary(self, rows, out_dir)

    # -- what a model receives ----------------------------------------------------------------
    def spec(self):
        """``{"image": (1, stamp, stamp)}`` arcsinh-stretched r band; 3 outputs (6 with the aleatoric
        head) on scaled labels; posterior samples are scored (MC dropout)."""
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
        gs = self.galaxy_set
        spec = gs.schema.stack("image")
        n = len(gs.indices(split))
        nbytes = n * spec.height * spec.width * 4
        if nbytes <= self.config.max_memory_gb * 1024 ** 3:
            x = torch.from_numpy(self.stretched_images(split))
            return split_dataset({"image": x}, self.split_ids(split), coder.encode(self.labels(split)))
        self.labels(split)  # refuses the evaluation split
        return gs.torch_dataset(split, inputs=["image"], targets=list(self.targets),
                                transform=_StretchChannel(self.channel(), self.config.stretch_softening),
                                target_transform=_EncodeTarget(coder))

    def point(self, samples: np.ndarray) -> np.ndarray:
        """The configured point estimate of ``(S, N, T)`` samples -> ``(N, T)``."""
        if self.config.point_estimate == "median":
            return np.median(samples, axis=0)
        return posterior_mode(samples, bins=self.config.mode_bins)
