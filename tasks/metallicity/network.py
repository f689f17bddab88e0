"""The networks of Wu & Boada (2019): ``cnn`` on the full-resolution RGB images (appendix A) and
the ``resolution_<n>px`` study on re-binned ones (§5.3)."""
from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from sim2obs.config import to_plain
from sim2obs.errors import ConfigError
from sim2obs.models import build_model
from sim2obs.models.engine import seed_everything, small_input_precision, trainer_identity
from sim2obs.models.resnet import load_torchvision_state_dict
from sim2obs.tasks.base import MethodOutput
from sim2obs.tasks.common.networks import fit_folder, guard_lone_batch, predict_in_order, split_dataset, task_trainer
from sim2obs.tasks.common.scaling import StandardScaler
from sim2obs.tasks.metallicity.config import STACK, TARGET
from sim2obs.tasks.metallicity.preprocessing import colour_variant, noisy_labels
from sim2obs.tasks.metallicity.training import RandomDihedral, adapt_stages, rmse_loss

if TYPE_CHECKING:
    from sim2obs.tasks.metallicity.task import MetallicityTask

__all__ = ["run_network"]


def _load_pretrained(task: "MetallicityTask", model: nn.Module, study: bool) -> list | None:
    """Load ``pretrained`` (a torchvision state dict) into ``model`` when it applies (the ``cnn``,
    and the study when it uses the task's ``model``); returns its identity ``[path, size]``."""
    cfg = task.config
    pretrained = cfg.pretrained if not (study and cfg.resolution.model is not None) else None
    if not pretrained:
        return None
    path = Path(str(pretrained)).expanduser()
    if not path.is_file():
        raise ConfigError(f"task.{task.name}.pretrained", "no such state-dict file", value=str(path))
    load_torchvision_state_dict(model, torch.load(path, map_location="cpu", weights_only=True))
    return [str(path), path.stat().st_size]


def _training_labels(task: "MetallicityTask", split: str, label_noise: float, target: str = TARGET) -> np.ndarray:
    """Labels of a training or validation split, with the §5.2 scatter added when ``label_noise`` > 0;
    ``target = "log_mstar"``: the true stellar masses instead (the Fig. 5 network), ``(n, 1)``."""
    if target == TARGET:
        return noisy_labels(task.labels(split), label_noise, task.config.seed, split)
    if split == task.config.eval_split:
        raise ConfigError(f"task.{task.name}.eval_split", "the evaluation split's labels are never read",
                          value=split)
    rows = task.selection(split)
    mass = task.galaxy_set.column(target, split).astype(np.float64)
    return (mass if rows is None else mass[rows]).reshape(-1, 1)


def _datasets(task: "MetallicityTask", size: int | None, min_size: int, scaler: StandardScaler,
              colour: str | None = None, label_noise: float = 0.0, target: str = TARGET) -> dict:
    """Train, val and evaluation-split datasets of the (re-binned) RGB images (``colour``: the
    colour study's band set, :func:`colour_variant`); targets standardised with ``scaler`` (with
    ``label_noise`` dex of added scatter, §5.2); the evaluation split gets placeholder targets: its
    labels never reach the network."""
    data = {}
    for s in ("train", "val", task.config.eval_split):
        x = task.network_inputs(s, size, min_size)
        if colour is not None:
            x = colour_variant(x, colour, task.config.rgb.channels)
        x = torch.from_numpy(x)
        y = scaler.transform(_training_labels(task, s, label_noise, target)) if s in ("train", "val") else None
        data[s] = split_dataset({STACK: x}, task.split_ids(s), y)
    return data


def _schedule(task: "MetallicityTask", tcfg, model: nn.Module, data: dict) -> tuple[Any, Any, dict[str, str]]:
    """The trainer config adapted to this run (precision of small inputs, the network's layer
    groups, a lone last batch, the augmentation); returns ``(config, augment, notes)``."""
    side = int(data["train"].inputs[STACK].shape[-1])
    tcfg, precision_note = small_input_precision(tcfg, side)
    tcfg, dropped = adapt_stages(tcfg, model)
    tcfg = guard_lone_batch(tcfg, len(data["train"]))  # a lone last object breaks batch norm on 1 px maps
    augment = {"dihedral": RandomDihedral(), "trainer": None, "none": None}[task.config.augment]
    if task.config.augment == "none":
        tcfg = replace(tcfg, augment=None)
    notes = {}
    if precision_note:
        notes["precision_note"] = precision_note
    if dropped:
        notes["schedule_note"] = (f"learning-rate groups {dropped} match no parameter of this network: those "
                                  "parameters use trainer.lr")
    return tcfg, augment, notes


def run_network(task: "MetallicityTask", workdir: Path, size: int | None, colour: str | None = None,
                label_noise: float = 0.0, target: str = TARGET) -> MethodOutput:
    """Train the network on the (re-binned) RGB images of train, select on val, predict the
    evaluation split with test-time augmentation. The evaluation split's labels are never read.
    ``colour``: the colour study's band set (``"r"``, ``"gr"``; None: g, r, i); ``label_noise``:
    dex of N(0, sigma) scatter added to the training and validation labels (§5.2); ``target =
    "log_mstar"``: the network learns the stellar mass instead and the prediction is the Tremonti MZR
    (Wu & Boada eq. 3) at the predicted mass (Fig. 5, Z_MZR)."""
    cfg = task.config
    study = size is not None
    model_cfg = to_plain(cfg.resolution.model if study and cfg.resolution.model is not None else cfg.model)
    tcfg = task.trainer_config(resolution=study, model_target=str(model_cfg.get("_target_")))
    tcfg = replace(tcfg, progress=bool(task.progress))  # bars on a terminal; epoch lines in logs
    seed_everything(tcfg.seed)
    model = build_model(model_cfg)
    pretrained_id = _load_pretrained(task, model, study)
    min_size = int(getattr(model, "min_input_size", 1) or 1)
    scaler = StandardScaler().fit(_training_labels(task, "train", label_noise, target))
    mu, sd = float(scaler.mean_[0]), float(scaler.scale_[0])
    data = _datasets(task, size, min_size, scaler, colour, label_noise, target)
    tcfg, augment, notes = _schedule(task, tcfg, model, data)
    fit_identity = {"data": task.galaxy_set.content_hash, "split": cfg.eval_split, "size": size,
                    "min_size": min_size, "pretrained": pretrained_id, "rgb": asdict(cfg.rgb), "model": model_cfg,
                    "trainer": trainer_identity(tcfg), "augment": cfg.augment, "target_scale": [mu, sd]}
    if colour is not None or label_noise > 0:  # only then: the other methods keep their fit folders
        fit_identity.update(colour=colour, label_noise=float(label_noise))
    if target != TARGET:
        fit_identity["target"] = target
    fit_dir = fit_folder(workdir, fit_identity, prune=True)  # checkpoints of other settings go
    trainer = task_trainer(task, tcfg, rmse_loss(), workdir.name, augment)
    fit = trainer.fit(model, data["train"], data["val"], fit_dir, model_config=model_cfg)
    pred = predict_in_order(trainer, model, data[cfg.eval_split], tta=bool(cfg.tta))
    values = scaler.inverse_transform(pred[:, :1])[:, 0]
    if target != TARGET:
        from sim2obs.simgen.population import mass_metallicity  # deferred: sim2obs.simgen takes ~2 s to import
        mass_pred, values = values, mass_metallicity(values)
    info = {"model": type(model).__name__, "_target_": str(model_cfg.get("_target_")),
            "n_parameters": int(sum(p.numel() for p in model.parameters())),
            "resolution_px": int(size) if study else task.stamp, "input_px": int(data["train"].inputs[STACK].shape[-1]),
            "epochs_run": len(fit.history), "best_epoch": fit.best_epoch,
            "val_rmse_dex": float(fit.best_val_loss) * sd,
            "train_seconds": float(sum(r["seconds"] for r in fit.history)), "tta": bool(cfg.tta),
            "target_mean": mu, "target_std": sd, "fit_dir": fit_dir.name, **notes}
    if colour is not None:
        info["colour"] = colour
    if label_noise > 0:
        info["label_noise_dex"] = float(label_noise)
    if target != TARGET:
        info.update(target=target, val_rmse_log_mstar_dex=info.pop("val_rmse_dex"),
                    predicted_log_mstar_median=float(np.median(mass_pred)) if len(mass_pred) else float("nan"))
    return MethodOutput(task.predictions(task.split_ids(cfg.eval_split), values), info)
