"""Configuration of a training run: :class:`TrainerConfig` (a Hydra structured config; YAML in
``configs/trainer/``), its stages and augmentation, validation, and the precision decision."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

import torch

from sim2obs.config import coerce_dataclass, to_plain
from sim2obs.errors import ConfigError
from sim2obs.models.augment import DIHEDRAL, PADDING_MODES

__all__ = ["AugmentConfig", "StageConfig", "TrainerConfig", "load_trainer_config", "resolve_precision",
           "small_input_precision", "trainer_identity", "validate_config"]

OPTIMISERS = ("adam", "adamw", "nadam", "sgd")
SCHEDULES = ("none", "cosine", "cosine_restarts", "plateau")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: Largest input (px) at which the CPU bf16 guard switches to fp32 (see :func:`small_input_precision`).
BF16_CPU_MIN_PX = 16


@dataclass
class StageConfig:
    """One stage of staged fine-tuning (Wu & Boada 2019, appendix A.4).

    ``epochs``: length of the stage (the last stage also covers any epochs beyond the sum).
    ``trainable``: parameter-name prefixes that train in this stage (a prefix matches a name
    equal to it or starting with it plus "."; ``""`` matches all); ``None``: every parameter.
    ``lr``: learning rate per prefix (discriminative learning rates; the longest matching
    prefix wins); trainable parameters matched by none use :attr:`TrainerConfig.lr`.
    Each stage starts a fresh optimiser and learning-rate schedule.
    """

    epochs: int = 1
    trainable: Optional[list[str]] = None
    lr: dict[str, float] = field(default_factory=dict)


@dataclass
class AugmentConfig:
    """Training augmentation (:class:`sim2obs.models.augment.Augment`): rotation 0-360 deg,
    flips, zoom in ``zoom`` = [min, max] (Dobbels et al. 2019, §3.1)."""

    rotate: bool = True
    flip: bool = True
    zoom: list[float] = field(default_factory=lambda: [0.7, 1.3])
    shared_across_stacks: bool = True
    padding_mode: str = "zeros"


@dataclass
class TrainerConfig:
    """Every setting of a training run; plain types only (Hydra structured config).

    Attributes:
        device: "auto" (cuda, mps, cpu), "cpu", "cuda", "cuda:N", "mps". Under torchrun each
            process takes ``cuda:LOCAL_RANK``.
        precision: "fp32", "bf16" or "fp16" autocast (fp16 with a gradient scaler), or "auto":
            bf16 wherever the hardware runs it natively (CUDA with bf16; CPUs with AVX512-bf16/AMX,
            where it measured 1.3-2.6x faster on ResNet-18/34 and the Dobbels CNN), else fp32.
        channels_last: True, False or "auto" (on whenever bf16 autocast is on: together they paid on
            both CPU and GPU).
        seed: seeds torch, numpy, python and every per-epoch stream (shuffling, DataLoader
            workers, augmentation).
        deterministic: also ask torch for deterministic kernels (slower on GPU; on CUDA set
            ``CUBLAS_WORKSPACE_CONFIG=:4096:8``).
        epochs: number of epochs.
        batch_size: the effective (global) batch size; with N processes each sees
            ``batch_size / N`` objects per step, so curves do not depend on N.
        num_workers: DataLoader worker processes per training process.
        drop_last: drop the last incomplete training batch of every epoch.
        optimiser: "adam", "adamw", "nadam" (Adam with Nesterov momentum) or "sgd".
        lr: learning rate (of every parameter not given one by a stage).
        weight_decay: L2 penalty (decoupled for adamw).
        betas: Adam/AdamW/NAdam moment decay rates.
        momentum, nesterov: SGD momentum (GaMPEN: 0.99 with Nesterov).
        schedule: "none"; "cosine" (annealed per batch from lr to eta_min over each stage);
            "cosine_restarts" (per batch, first cycle ``restart_epochs`` epochs, each next one
            ``restart_mult`` times longer); "plateau" (multiply by ``plateau_factor`` when the
            validation loss has not improved for ``plateau_patience`` epochs).
        early_stopping_patience: stop after this many epochs without a validation loss below
            the best minus ``early_stopping_min_delta``; 0 disables.
        max_grad_norm: clip the global gradient norm to this value; None disables.
        stages: staged unfreezing (:class:`StageConfig`); empty: one stage, everything trains.
        stages_for: the model ``_target_`` names the stages were written for (they name layers);
            a task drops the stages for any other network. None: the stages apply to every network.
        augment: training augmentation, or None for none.
        tta: dihedral transforms (0-7) averaged by ``predict(..., tta=True)``.
        restore_best: after training, load the weights of the best validation epoch.
        precise_bn_batches: before each validation, re-estimate the running statistics of every
            BatchNorm layer from this many training batches, unaugmented like the evaluation
            inputs (:mod:`.precise_bn`); 0 keeps the moving averages of training. The global
            random state is left as it was, so the weights train exactly as without it.
        progress: show a progress bar per epoch.
    """

    device: str = "auto"
    precision: str = "auto"
    channels_last: Any = "auto"
    seed: int = 0
    deterministic: bool = False
    epochs: int = 30
    batch_size: int = 32
    num_workers: int = 0
    drop_last: bool = False
    optimiser: str = "nadam"
    lr: float = 1.0e-3
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    momentum: float = 0.9
    nesterov: bool = True
    schedule: str = "plateau"
    eta_min: float = 0.0
    restart_epochs: int = 1
    restart_mult: int = 1
    plateau_factor: float = 0.3
    plateau_patience: int = 4
    early_stopping_patience: int = 0
    early_stopping_min_delta: float = 0.0
    max_grad_norm: Optional[float] = None
    stages: list[StageConfig] = field(default_factory=list)
    stages_for: list[str] | None = None
    augment: Optional[AugmentConfig] = field(default_factory=AugmentConfig)
    tta: list[int] = field(default_factory=lambda: list(DIHEDRAL))
    restore_best: bool = True
    precise_bn_batches: int = 0
    progress: bool = True



def _native_bf16(device: torch.device) -> bool:
    """Whether ``device`` runs bf16 natively (so autocast speeds training up rather than down)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def resolve_precision(device: torch.device, precision: str = "auto", channels_last: Any = "auto") -> tuple[str, bool]:
    """The engine's precision decision: ``(precision, channels_last)`` actually used on ``device``.

    ``precision`` "auto" -> "bf16" where the device runs bf16 natively, else "fp32"; ``channels_last``
    "auto" -> on exactly when bf16 autocast is. Training, prediction and posterior sampling
    (:func:`sim2obs.models.uncertainty.sample_posterior`) all decide through this function."""
    if precision == "auto":
        precision = "bf16" if _native_bf16(device) else "fp32"
    return precision, (precision == "bf16" if channels_last == "auto" else bool(channels_last))


def load_trainer_config(cfg: Any = None) -> TrainerConfig:
    """A :class:`TrainerConfig` from None (defaults), a TrainerConfig, a mapping / OmegaConf
    node, or a YAML file (e.g. ``configs/trainer/quick.yaml``; a Hydra ``defaults`` list in it
    is composed). Keys and types are checked; an unknown key raises :class:`ConfigError`."""
    from omegaconf import OmegaConf  # deferred: import speed (OmegaConf/Hydra only when a config is read)

    if cfg is None:
        return TrainerConfig()
    if isinstance(cfg, TrainerConfig):
        return cfg
    if isinstance(cfg, (str, os.PathLike)):
        path = Path(cfg).resolve()
        cfg = OmegaConf.load(path)
        if "defaults" in cfg:  # a config-group file (e.g. quick.yaml extends default.yaml)
            from hydra import compose, initialize_config_dir  # deferred: import speed (Hydra is slow to import)

            with initialize_config_dir(config_dir=str(path.parent), version_base=None):
                cfg = compose(config_name=path.stem)
    return coerce_dataclass(TrainerConfig, to_plain(cfg), "trainer")


def _stages(cfg: TrainerConfig) -> list[StageConfig]:
    stages = [s if isinstance(s, StageConfig) else StageConfig(**to_plain(s)) for s in cfg.stages]
    return stages or [StageConfig(epochs=cfg.epochs, trainable=None, lr={})]


def _augment_config(cfg: TrainerConfig) -> AugmentConfig | None:
    a = cfg.augment
    return a if a is None or isinstance(a, AugmentConfig) else AugmentConfig(**to_plain(a))


def trainer_identity(cfg: Any) -> dict[str, Any]:
    """The settings of ``cfg`` (a :class:`TrainerConfig` or its dict) that name a run: all but the
    display setting ``progress``, and ``precise_bn_batches`` only when on (runs recorded before
    it existed keep their names)."""
    out = dict(to_plain(cfg))
    out.pop("progress", None)
    if not out.get("precise_bn_batches"):
        out.pop("precise_bn_batches", None)
    return out


def validate_config(cfg: TrainerConfig) -> None:
    """Raise :class:`ConfigError` naming the first invalid setting."""

    def need(ok: bool, key: str, message: str, value: Any, allowed: Any = None) -> None:
        if not ok:
            raise ConfigError(f"trainer.{key}", message, value=value, allowed=allowed)

    need(cfg.optimiser in OPTIMISERS, "optimiser", "unknown optimiser", cfg.optimiser, list(OPTIMISERS))
    need(cfg.schedule in SCHEDULES, "schedule", "unknown schedule", cfg.schedule, list(SCHEDULES))
    need(cfg.precision in PRECISIONS, "precision", "unknown precision", cfg.precision, list(PRECISIONS))
    need(cfg.channels_last in (True, False, "auto"), "channels_last", "must be true, false or auto",
         cfg.channels_last, [True, False, "auto"])
    need(int(cfg.epochs) >= 1, "epochs", "must be at least 1", cfg.epochs)
    need(int(cfg.batch_size) >= 1, "batch_size", "must be at least 1", cfg.batch_size)
    need(int(cfg.num_workers) >= 0, "num_workers", "must be >= 0", cfg.num_workers)
    need(cfg.lr > 0, "lr", "must be positive", cfg.lr)
    need(cfg.weight_decay >= 0, "weight_decay", "must be >= 0", cfg.weight_decay)
    need(len(cfg.betas) == 2 and all(0 <= b < 1 for b in cfg.betas), "betas", "must be two values in [0, 1)",
         list(cfg.betas))
    need(0 <= cfg.momentum < 1, "momentum", "must be in [0, 1)", cfg.momentum)
    need(not (cfg.optimiser == "sgd" and cfg.nesterov and cfg.momentum == 0), "nesterov",
         "Nesterov momentum needs momentum > 0", cfg.momentum)
    need(cfg.eta_min >= 0, "eta_min", "must be >= 0", cfg.eta_min)
    need(int(cfg.restart_epochs) >= 1, "restart_epochs", "must be at least 1", cfg.restart_epochs)
    need(int(cfg.restart_mult) >= 1, "restart_mult", "must be an integer >= 1", cfg.restart_mult)
    need(0 < cfg.plateau_factor < 1, "plateau_factor", "must be in (0, 1)", cfg.plateau_factor)
    need(int(cfg.plateau_patience) >= 1, "plateau_patience", "must be at least 1", cfg.plateau_patience)
    need(int(cfg.early_stopping_patience) >= 0, "early_stopping_patience", "must be >= 0 (0 disables)",
         cfg.early_stopping_patience)
    need(cfg.early_stopping_min_delta >= 0, "early_stopping_min_delta", "must be >= 0",
         cfg.early_stopping_min_delta)
    need(cfg.max_grad_norm is None or cfg.max_grad_norm > 0, "max_grad_norm", "must be positive or null",
         cfg.max_grad_norm)
    need(len(cfg.tta) > 0 and all(k in DIHEDRAL for k in cfg.tta), "tta",
         "must list dihedral transform indices", list(cfg.tta), "0..7")
    need(int(cfg.precise_bn_batches) == cfg.precise_bn_batches and cfg.precise_bn_batches >= 0,
         "precise_bn_batches", "must be an integer >= 0 (0 disables)", cfg.precise_bn_batches)
    for i, stage in enumerate(_stages(cfg)):
        need(int(stage.epochs) >= 1, f"stages.{i}.epochs", "must be at least 1", stage.epochs)
        need(stage.trainable is None or len(stage.trainable) > 0, f"stages.{i}.trainable",
             "must list prefixes, or be null for all parameters", stage.trainable)
        for prefix, lr in stage.lr.items():
            need(lr > 0, f"stages.{i}.lr.{prefix}", "must be positive", lr)
    aug = _augment_config(cfg)
    if aug is not None:
        need(len(aug.zoom) == 2 and 0 < aug.zoom[0] <= aug.zoom[1], "augment.zoom",
             "must be [min, max] with 0 < min <= max", list(aug.zoom))
        need(aug.padding_mode in PADDING_MODES, "augment.padding_mode", "unknown padding mode",
             aug.padding_mode, list(PADDING_MODES))


def small_input_precision(tcfg, input_px: int):
    """Train in fp32 instead of bf16 autocast when the input is at most 16 px.

    On the CPU (torch 2.13, oneDNN), the bf16 weight gradient of a 3x3 stride-2 convolution whose
    input map is 1x1 is wrong (non-zero, sometimes NaN, in the taps that only see padding); a
    ResNet, which downsamples by 32, meets such maps for inputs of 16 px and less, and its
    training then diverges. fp32 is unaffected (and, for maps this small, faster on a CPU). Not
    checked on GPUs, so applied on every device as a precaution (the cost is small at <= 16 px).
    Returns ``(config, note)``; the note is empty when nothing changed."""
    if input_px > BF16_CPU_MIN_PX or tcfg.precision not in ("auto", "bf16"):
        return tcfg, ""
    channels_last = False if tcfg.channels_last == "auto" else tcfg.channels_last
    return (replace(tcfg, precision="fp32", channels_last=channels_last),
            f"fp32 instead of {tcfg.precision}: bf16 convolution weight gradients are wrong on 1x1 maps on "
            f"the CPU (inputs <= {BF16_CPU_MIN_PX} px)")

