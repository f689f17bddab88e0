"""The transfer strategies: what each trains, with which schedule, on which data.

===================  ==========================================================================
strategy             what happens (k: labelled target training objects)
===================  ==========================================================================
``zero_shot``        the source network as it is (k = 0)
``finetune_full``    every layer on the k objects, learning rate ``finetune.lr_factor`` x the task's
``finetune_head``    only ``adapter.head_prefixes`` on the k objects (engine stage naming them)
``finetune_staged``  engine stages: the head for ``finetune.staged_head_epochs``, then every layer
                     at the reduced rate
``target_only``      a fresh network (same seed) trained on the k objects alone
``align_mmd``        the source network trained further on the source labels plus a feature-alignment
                     loss between source batches and unlabelled target training images (k = 0)
``recalibrate``      the source network, posterior widths refitted on the k objects (no weight change)
===================  ==========================================================================

Every training goes through the one engine (:class:`~sim2obs.models.engine.Trainer`), so it
checkpoints every epoch and resumes after a kill. The alignment loss is the engine's
``regulariser`` hook: :class:`FeatureAlignment` reads the penultimate features with a forward
hook on ``adapter.feature_module`` (its input), runs the network on a batch of target images
drawn with torch's global generator (checkpointed by the engine, so a resumed run draws the same
batches) and returns ``weight x SamplesLoss(source features, target features)`` (GeomLoss,
``tensorized`` backend: pure torch, CPU or GPU).
"""
from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sim2obs.models.engine import StageConfig, Trainer, TrainerConfig
from sim2obs.tasks.transfer.config import StudyConfig

#: Strategies that train a network (the rest only predict).
TRAINED = ("finetune_full", "finetune_head", "finetune_staged", "target_only", "align_mmd")


def _epochs(cfg: TrainerConfig, n_train: int, min_steps: int, max_epochs: int) -> int:
    """``cfg.epochs``, raised so that at least ``min_steps`` optimiser steps run (capped by ``max_epochs``)."""
    steps = max(1, math.ceil(n_train / cfg.batch_size)) if not cfg.drop_last else max(1, n_train // cfg.batch_size)
    need = math.ceil(int(min_steps) / steps) if min_steps else 0
    return int(max(cfg.epochs, min(need, int(max_epochs))))


def trainer_config(adapter, study: StudyConfig, strategy: str, n_train: int) -> TrainerConfig:
    """The engine config of ``strategy`` on ``n_train`` objects: the adapter's phase config with
    the study's overrides, the strategy's learning rates and stages; nothing is selected on
    validation (``restore_best`` and early stopping off: the fine-tuning validation set is the k
    training objects themselves)."""
    ft = study.finetune
    if strategy == "target_only":
        cfg = adapter.trainer_config("target_only", study.target_only.trainer)
        epochs = _epochs(cfg, n_train, study.target_only.min_steps, study.target_only.max_epochs)
        return replace(cfg, epochs=epochs, stages=[], restore_best=False, early_stopping_patience=0)
    if strategy == "align_mmd":
        cfg = adapter.trainer_config("finetune", study.align.trainer)
        return replace(cfg, lr=cfg.lr * study.align.lr_factor, stages=[], restore_best=False,
                       early_stopping_patience=0)
    cfg = adapter.trainer_config("finetune", ft.trainer)
    cfg = replace(cfg, epochs=_epochs(cfg, n_train, ft.min_steps, ft.max_epochs), restore_best=False,
                  early_stopping_patience=0)
    head = list(adapter.head_prefixes)
    if strategy == "finetune_full":
        return replace(cfg, lr=cfg.lr * ft.lr_factor, stages=[])
    if strategy == "finetune_head":
        return replace(cfg, lr=cfg.lr * ft.head_lr_factor,
                       stages=[StageConfig(epochs=cfg.epochs, trainable=head, lr={})])
    if strategy == "finetune_staged":
        first = min(int(ft.staged_head_epochs), cfg.epochs)
        epochs = max(cfg.epochs, first + 1)
        head_lr = {p: cfg.lr * ft.head_lr_factor for p in head}
        return replace(cfg, epochs=epochs, lr=cfg.lr * ft.lr_factor,
                       stages=[StageConfig(epochs=first, trainable=head, lr=head_lr),
                               StageConfig(epochs=epochs - first, trainable=None, lr={})])
    raise ValueError(f"strategy {strategy!r} trains no network")


def _module(model: nn.Module, dotted: str) -> nn.Module:
    return model.get_submodule(dotted)


class FeatureCapture:
    """Forward hook on ``model``'s ``dotted`` module keeping the last input it received (the
    penultimate features ``(B, F)``). Use as a context manager (the hook is removed on exit)."""

    def __init__(self, model: nn.Module, dotted: str):
        self.last: torch.Tensor | None = None
        self._handle = _module(model, dotted).register_forward_hook(self._hook)

    def _hook(self, module, inputs, output) -> None:
        self.last = inputs[0]

    def close(self) -> None:
        self._handle.remove()

    def __enter__(self) -> "FeatureCapture":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FeatureAlignment:
    """The engine ``regulariser`` of ``align_mmd``: ``weight x SamplesLoss(loss, blur)`` between the
    penultimate features of the training batch (source) and of as many unlabelled target objects,
    drawn from ``target_inputs`` (``{stack: (N, ...)}``, the inputs of an unlabelled dataset; one
    stack: the network gets the tensor, several: the dict, as in the engine). Public attributes
    name it in the run identity."""

    def __init__(self, capture: FeatureCapture, target_inputs: dict[str, torch.Tensor], loss: str = "energy",
                 blur: float = 1.0, weight: float = 1.0):
        from geomloss import SamplesLoss

        self.loss, self.blur, self.weight = str(loss), float(blur), float(weight)
        self.n_target = int(len(next(iter(target_inputs.values()))))
        self._capture = capture
        self._target = dict(target_inputs)
        self._distance = SamplesLoss(self.loss, blur=self.blur, backend="tensorized")

    def __call__(self, net: nn.Module, inputs: dict[str, torch.Tensor], output: Any) -> torch.Tensor:
        source = self._capture.last
        batch = len(source)
        idx = torch.randint(0, self.n_target, (batch,))  # global generator: checkpointed by the engine
        x = {k: v[idx].to(source.device) for k, v in self._target.items()}
        net(next(iter(x.values())) if len(x) == 1 else x)
        target = self._capture.last
        return self.weight * self._distance(source.float().flatten(1), target.float().flatten(1))


def train(adapter, model: nn.Module, train_ds, val_ds, cfg: TrainerConfig, out_dir: Path,
          regulariser=None, label: str = "", log=None) -> dict[str, Any]:
    """Train ``model`` in place through the engine in ``out_dir`` (resumes a killed run); return
    what to record (epochs, losses, seconds, trainable parameters)."""
    callbacks = []
    if log is not None and not cfg.progress:
        callbacks.append(lambda r, m: log(f"    {label}: epoch {r['epoch']}/{cfg.epochs} train {r['train_loss']:.4g} "
                                          f"val {r['val_loss']:.4g} ({r['seconds']:.1f} s)"))
    # frozen layers keep their BatchNorm statistics: head-only training changes the head only
    trainer = Trainer(cfg, loss=adapter.loss(), callbacks=callbacks, regulariser=regulariser,
                      freeze_frozen_norms=bool(cfg.stages))
    model_config = adapter.model_config() if hasattr(adapter, "model_config") else None
    fit = trainer.fit(model, train_ds, val_ds, out_dir, model_config=model_config)
    model.eval()
    return {"epochs_run": len(fit.history), "final_train_loss": fit.history[-1]["train_loss"] if fit.history else None,
            "final_val_loss": fit.history[-1]["val_loss"] if fit.history else None,
            "train_seconds": float(sum(r["seconds"] for r in fit.history)), "n_train": int(len(train_ds)),
            "lr": float(cfg.lr), "epochs": int(cfg.epochs),
            "stages": [{"epochs": s.epochs, "trainable": s.trainable} for s in cfg.stages]}


def trainable_names(model: nn.Module, cfg: TrainerConfig) -> set[str]:
    """Names of the parameters some stage of ``cfg`` trains (all when it has no stages)."""
    from sim2obs.models.engine import _matches

    names = [n for n, _ in model.named_parameters()]
    if not cfg.stages:
        return set(names)
    out: set[str] = set()
    for stage in cfg.stages:
        prefixes = stage.trainable
        out |= {n for n in names if prefixes is None or any(_matches(n, p) for p in prefixes)}
    return out


def copy_weights(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    model.load_state_dict({k: v.clone() for k, v in state.items()})
    return model


def features(model: nn.Module, feature_module: str, inputs: dict[str, np.ndarray], batch: int = 256) -> np.ndarray:
    """``(N, F)`` penultimate features (dropout off: eval mode) of the network inputs
    ``{stack: (N, ...)}`` (one stack: the network gets the tensor, several: the dict)."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    n = len(next(iter(inputs.values())))
    parts = []
    with FeatureCapture(model, feature_module) as cap, torch.no_grad():
        for start in range(0, n, batch):
            x = {k: torch.from_numpy(np.ascontiguousarray(v[start:start + batch])).to(device) for k, v in inputs.items()}
            model(next(iter(x.values())) if len(x) == 1 else x)
            parts.append(cap.last.float().flatten(1).cpu().numpy())
    model.train(was)
    return np.concatenate(parts).astype(np.float64)
