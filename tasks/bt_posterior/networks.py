"""GaMPEN's networks: one trained (or reused) network per (model config, dropout rate) under
``<out>/_shared``, its MC-dropout posteriors, their validation calibration, the dropout-rate
selection and the width recalibration."""
from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import torch
from torch import nn

from sim2obs.atomic import atomic_write
from sim2obs.device import select_device
from sim2obs.errors import ConfigError
from sim2obs.models import build_model
from sim2obs.models.engine import seed_everything, trainer_identity
from sim2obs.models.gaussian_head import (RECALIBRATION_LEVELS, GaussianDraw, NLLWithMeanMSE, apply_width_scale,
                                          fit_width_scale, flatten_draws, gaussian_loss, output_width)
from sim2obs.models.uncertainty import sample_posterior
from sim2obs.provenance import stable_hash
from sim2obs.tasks import metrics as M
from sim2obs.tasks.base import MethodOutput, Predictions, Task
from sim2obs.tasks.bt_posterior.config import SELECTION_LEVELS, BTPosteriorConfig
from sim2obs.tasks.bt_posterior.posterior import select_dropout_rate
from sim2obs.tasks.bt_posterior.preprocessing import clip_to_bounds
from sim2obs.tasks.bt_posterior.report import _stn_diagnostics, _write_selection_table
from sim2obs.tasks.common.networks import task_trainer

if TYPE_CHECKING:
    from sim2obs.tasks.bt_posterior.task import BTPosteriorTask

__all__ = ["_predictions", "_n_outputs", "_task_arguments", "network_trainer_config", "_Networks"]


def _predictions(task: "BTPosteriorTask", ids: np.ndarray, samples: np.ndarray) -> Predictions:
    return Predictions(ids=ids, values=task.point(samples), targets=task.targets, samples=samples,
                       sigma=samples.std(axis=0))



def _n_outputs(c: BTPosteriorConfig, n_targets: int) -> int:
    """Network outputs: the targets (MSE), or the Gaussian head's mean + covariance parameters."""
    return output_width(n_targets, c.covariance) if c.aleatoric else n_targets


def network_trainer_config(trainer_cfg, model_cfg: Mapping[str, Any]):
    """The trainer settings of one network: ``trainer.stages`` name layers (the quick preset's one
    stage slows the transformer, ``stn``), so they apply only to the networks ``trainer.stages_for``
    lists (every one when null); any other network (the CNN alone) trains every layer at ``trainer.lr``."""
    if trainer_cfg.stages_for is not None and str(model_cfg["_target_"]) not in trainer_cfg.stages_for:
        return replace(trainer_cfg, stages=[])
    return trainer_cfg


def _task_arguments(model_cfg: Mapping[str, Any], rate: float, n_out: int) -> dict[str, Any]:
    """The task's values of ``dropout`` (the method's rate), ``num_outputs`` and ``in_channels``
    (1), for those of these keys the model config names: a user's class gets only its own arguments."""
    values = {"dropout": float(rate), "num_outputs": int(n_out), "in_channels": 1}
    return {k: v for k, v in values.items() if k in model_cfg}


class _Networks:
    """Trains (or reuses) one network per (model, dropout rate) under ``<out>/_shared`` and draws
    its MC-dropout posteriors."""

    def __init__(self, task: "BTPosteriorTask", workdir: Path):
        self.task = task
        self.c: BTPosteriorConfig = task.config
        self.root = Task.shared_dir(workdir)
        self.coder = task.label_coder()
        self.trainer_cfg = task.trainer_config()
        self.n_out = _n_outputs(self.c, len(task.targets))
        self._datasets = None

    def key(self, model_cfg: Mapping[str, Any], rate: float) -> dict:
        trainer = trainer_identity(network_trainer_config(self.trainer_cfg, model_cfg))
        return {"task": self.task.name, "version": self.task.metadata.version,
                "data": self.task.galaxy_set.content_hash, "model": dict(model_cfg), "dropout": float(rate),
                "aleatoric": self.c.aleatoric, "log_targets": list(self.c.log_targets),
                **({"covariance": self.c.covariance, "mean_mse_weight": self.c.mean_mse_weight}
                   if self.c.aleatoric else {}),
                "softening": self.c.stretch_softening, "trainer": trainer}

    def folder(self, model_cfg: Mapping[str, Any], rate: float) -> Path:
        name = str(model_cfg["_target_"]).rsplit(".", 1)[-1]
        return self.root / f"{name}_p{float(rate):g}_{stable_hash(self.key(model_cfg, rate), 10)}"

    def datasets(self):
        if self._datasets is None:
            self._datasets = (self.task.dataset("train", self.coder), self.task.dataset("val", self.coder))
        return self._datasets

    def train(self, model_cfg: Mapping[str, Any], rate: float):
        """The trained network (eval mode) and its run record."""
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
        tcfg = replace(network_trainer_config(self.trainer_cfg, model_cfg), progress=bool(self.task.progress))
        label = f"{str(model_cfg['_target_']).rsplit('.', 1)[-1]} dropout {float(rate):g}"
        fit = task_trainer(self.task, tcfg, loss, label).fit(model, train, val, self.folder(model_cfg, rate),
                                                             model_config={**dict(model_cfg), **overrides})
        model.eval()
        info = {"folder": str(fit.out_dir), "best_epoch": fit.best_epoch, "best_val_loss": fit.best_val_loss,
                "epochs_run": len(fit.history), "train_seconds": float(sum(r["seconds"] for r in fit.history)),
                "wall_seconds": time.perf_counter() - t0,
                "n_parameters": int(sum(p.numel() for p in model.parameters())),
                "_target_": str(model_cfg["_target_"])}
        return model, info

    def device(self):
        return select_device(self.trainer_cfg.device)

    def sample_z(self, model, images: np.ndarray, n: int, seed: int) -> np.ndarray:
        """``(n, N, T)`` posterior samples in the network's (scaled-label) space for stretched
        ``images`` ``(N, 1, H, W)``: MC-dropout passes, each drawing ``draws_per_pass`` points from
        the Gaussian it predicts when the head is aleatoric (:class:`GaussianDraw`)."""
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
