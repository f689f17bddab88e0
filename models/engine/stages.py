"""Staged fine-tuning, optimisers and schedules: which parameters train in each stage (Wu & Boada 2019,
appendix A.4), with which learning rates, and the optimiser and learning-rate schedule every stage
starts afresh."""
from __future__ import annotations

import difflib
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from sim2obs.errors import ConfigError
from sim2obs.models.engine.config import StageConfig, TrainerConfig, _stages


def _matches(name: str, prefix: str) -> bool:
    """Whether parameter ``name`` falls under ``prefix`` (equal, ``prefix.``..., or ``""``: all)."""
    return prefix == "" or name == prefix or name.startswith(prefix + ".")


class StagePlan:
    """The stages of a run (:class:`StageConfig`; none configured: one stage in which everything
    trains) and the epochs each covers (the last one also any epochs beyond their sum)."""

    def __init__(self, cfg: TrainerConfig):
        self.stages = _stages(cfg)
        self.epochs = cfg.epochs
        self.starts = np.cumsum([0] + [s.epochs for s in self.stages])[:-1].tolist()

    def stage_of(self, epoch: int) -> int:
        """Index of the stage that trains (0-based) ``epoch``."""
        return max(i for i, s in enumerate(self.starts) if s <= epoch)

    def length(self, i: int) -> int:
        """Epochs stage ``i`` runs for (at least 1)."""
        stop = self.starts[i + 1] if i + 1 < len(self.stages) else self.epochs
        return max(1, min(stop, self.epochs) - self.starts[i])


def check_prefixes(model: nn.Module, stages: Sequence[StageConfig]) -> None:
    """Every prefix named by a stage must match a parameter (catches typos before training)."""
    names = [n for n, _ in model.named_parameters()]
    tops = sorted({n.split(".")[0] for n in names})
    for i, stage in enumerate(stages):
        for prefix in list(stage.trainable or []) + list(stage.lr):
            if not any(_matches(n, prefix) for n in names):
                close = difflib.get_close_matches(prefix, tops + names, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"trainer.stages.{i}", f"prefix {prefix!r} matches no parameter{hint}",
                                  value=prefix, allowed=tops)


def make_optimiser(cfg: TrainerConfig, groups: list[dict]) -> torch.optim.Optimizer:
    """``cfg.optimiser`` over the parameter ``groups``."""
    betas = tuple(float(b) for b in cfg.betas)
    if cfg.optimiser == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay)
    if cfg.optimiser == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay)
    if cfg.optimiser == "nadam":
        return torch.optim.NAdam(groups, lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                           weight_decay=cfg.weight_decay)


def make_schedule(cfg: TrainerConfig, opt: torch.optim.Optimizer, stage_epochs: int, steps_per_epoch: int) -> Any:
    """``cfg.schedule`` for one stage of ``stage_epochs`` epochs, or None for "none"."""
    steps = max(1, stage_epochs * steps_per_epoch)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=cfg.eta_min)
    if cfg.schedule == "cosine_restarts":
        return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            opt, T_0=max(1, cfg.restart_epochs * steps_per_epoch), T_mult=int(cfg.restart_mult),
            eta_min=cfg.eta_min)
    if cfg.schedule == "plateau":
        # Keras semantics (Dobbels et al.): reduce on the plateau_patience-th epoch without
        # improvement; torch's patience counts the epochs it tolerates, hence the -1.
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="min", factor=cfg.plateau_factor, patience=cfg.plateau_patience - 1)
    return None


def setup_stage(cfg: TrainerConfig, model: nn.Module, stage: StageConfig, stage_epochs: int,
                steps_per_epoch: int, frozen: set[str]) -> tuple[torch.optim.Optimizer, Any]:
    """Freeze / unfreeze ``model`` for ``stage`` (``frozen`` names always stay frozen); return the
    stage's optimiser (one parameter group per learning-rate prefix, ``"*"`` for the rest) and schedule."""
    prefixes = list(stage.trainable) if stage.trainable is not None else None
    groups: dict[str, list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        trainable = name not in frozen and (prefixes is None or any(_matches(name, pre) for pre in prefixes))
        p.requires_grad_(trainable)
        if trainable:
            owner = max((pre for pre in stage.lr if _matches(name, pre)), key=len, default="*")
            groups.setdefault(owner, []).append(p)
    if not groups:
        raise ConfigError("trainer.stages", "a stage leaves no parameter trainable", value=prefixes)
    param_groups = [{"params": ps, "lr": float(stage.lr.get(key, cfg.lr)), "name": key}
                    for key, ps in sorted(groups.items())]
    opt = make_optimiser(cfg, param_groups)
    return opt, make_schedule(cfg, opt, stage_epochs, steps_per_epoch)
