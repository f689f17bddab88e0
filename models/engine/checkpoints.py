"""Checkpoints and resume: ``last.pt`` after every epoch (weights, optimiser, scheduler, scaler,
:class:`_Progress`, history, RNG states), ``best.pt`` at every new best validation loss. Both hold only
tensors and plain types and are read with ``torch.load(path, weights_only=True)``."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sim2obs.atomic import atomic_write
from sim2obs.errors import ConfigError
from sim2obs.models.engine.records import BEST, LAST
from sim2obs.models.engine.seeding import _rng_state, _set_rng_state

CHECKPOINT_FORMAT = "sim2obs.checkpoint"
CHECKPOINT_VERSION = 1


@dataclass
class _Progress:
    """Where a run stands: completed epochs, best validation loss and epoch, early stopping."""

    epoch: int = 0
    best_val_loss: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    stopped_early: bool = False
    history: list = field(default_factory=list)

    def update(self, val_loss: float, min_delta: float, patience: int) -> bool:
        """Count one finished epoch; return whether ``val_loss`` is a new best."""
        self.epoch += 1
        improved = val_loss < self.best_val_loss - min_delta
        if improved:
            self.best_val_loss, self.best_epoch, self.bad_epochs = val_loss, self.epoch, 0
        else:
            self.bad_epochs += 1
        self.stopped_early = patience > 0 and self.bad_epochs >= patience
        return improved


def _save_torch(obj: Any, path: Path) -> None:
    atomic_write(path, lambda f: torch.save(obj, f))


def load_checkpoint(out: Path, config_hash: str) -> dict | None:
    """``out/last.pt``, or None when there is none; a checkpoint of another configuration raises
    :class:`ConfigError` (a folder holds one run)."""
    if not (out / LAST).exists():
        return None
    ckpt = torch.load(out / LAST, map_location="cpu", weights_only=True)
    if ckpt.get("format") != CHECKPOINT_FORMAT or ckpt.get("config_hash") != config_hash:
        raise ConfigError("out_dir", f"{out} holds a run with a different configuration "
                          f"(hash {ckpt.get('config_hash')}, this run {config_hash}); use another folder",
                          value=str(out))
    return ckpt


def resume_progress(model: nn.Module, ckpt: dict | None) -> _Progress:
    """Load ``ckpt``'s weights into ``model`` and return its progress; a fresh one without ``ckpt``."""
    if ckpt is None:
        return _Progress()
    model.load_state_dict(ckpt["model"])
    progress = _Progress(**{f.name: ckpt[f.name] for f in fields(_Progress)})
    progress.history = [dict(r) for r in progress.history]
    return progress


def resume_stage(ckpt: dict | None, epoch: int, stage: int, opt: torch.optim.Optimizer, sched: Any) -> None:
    """When the run resumes at ``epoch`` inside ``stage``, restore its optimiser and schedule."""
    if ckpt is not None and epoch == ckpt["epoch"] and int(ckpt["stage"]) == stage:
        opt.load_state_dict(ckpt["optimiser"])
        if sched is not None:
            sched.load_state_dict(ckpt["scheduler"])


def resume_rng(ckpt: dict | None, epoch: int) -> None:
    """At the epoch a run resumes from, restore the global RNG states it was checkpointed with."""
    if ckpt is not None and epoch == ckpt["epoch"]:
        _set_rng_state(ckpt["rng"])


def save_checkpoints(out: Path, *, config_hash: str, progress: _Progress, stage: int, model: nn.Module,
                     opt: torch.optim.Optimizer, sched: Any, scaler: torch.amp.GradScaler,
                     improved: bool, val_loss: float) -> None:
    """After an epoch: ``best.pt`` when ``improved``, then ``last.pt`` (atomic writes)."""
    if improved:
        _save_torch({"model": model.state_dict(), "epoch": progress.epoch, "val_loss": val_loss}, out / BEST)
    _save_torch({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
                 "config_hash": config_hash, **asdict(progress), "stage": stage,
                 "model": model.state_dict(), "optimiser": opt.state_dict(),
                 "scheduler": sched.state_dict() if sched is not None else None,
                 "scaler": scaler.state_dict(), "rng": _rng_state()}, out / LAST)


def restore_best(model: nn.Module, out: Path) -> None:
    """Load the weights of ``out/best.pt`` into ``model`` when the file exists."""
    if (out / BEST).exists():
        model.load_state_dict(torch.load(out / BEST, map_location="cpu", weights_only=True)["model"])
