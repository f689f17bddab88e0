"""The one training engine of sim2obs: every network trains through :class:`Trainer`.

The same code runs on a CPU, one GPU, or many GPUs and nodes under ``torchrun``
(DistributedDataParallel, detected from the torchrun environment variables; NCCL on CUDA,
Gloo on CPU). A run lives in one folder::

    out_dir/
      last.pt            # checkpoint after every epoch (atomic): weights, optimiser, scheduler,
                         # scaler, early-stopping state, history and RNG states
      best.pt            # weights of the epoch with the lowest validation loss
      metrics.jsonl      # one JSON line per epoch: epoch, train_loss, val_loss, lr, seconds, ...
      val_curve.png      # training and validation loss against epoch
      predictions_val.h5   # ids and predictions on the validation set (best weights)
      run.json           # the run record (model, _target_, size, config hash, versions, wall time)

A killed run started again on the same folder resumes from ``last.pt`` and ends with exactly
the metrics and weights of an uninterrupted run with the same seed: shuffling, worker seeds
and augmentation draws are keyed on (seed, epoch, rank), and the global torch / numpy / python
RNG states are checkpointed. Checkpoints hold only tensors and plain types and are read with
``torch.load(path, weights_only=True)``.

Training recipes of the seed papers map onto :class:`TrainerConfig`: Dobbels et al. (2019):
``optimiser="nadam"``, ``schedule="plateau"`` (x0.3 after 4 flat epochs), rotation/zoom/flip
augmentation; Wu & Boada (2019): ``stages`` (head first, then all layers with discriminative
learning rates), ``schedule="cosine_restarts"``, test-time augmentation; GaMPEN (Ghosh et al.
2022): ``optimiser="sgd"``, ``momentum=0.99``, ``nesterov=True``; the TNG100 multi-branch
network: ``optimiser="adam"``, ``schedule="cosine"``.

Entry point: ``torchrun --nproc_per_node=N -m sim2obs.models.engine run.yaml [key=value ...]``
(or plain ``python -m``); see :func:`main`.
"""
from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from sim2obs.device import select_device
from sim2obs.atomic import atomic_write
from sim2obs.config import to_plain
from sim2obs.errors import ConfigError, Sim2obsValueError
from sim2obs.models.augment import DIHEDRAL, PADDING_MODES, Augment, tta_mean
from sim2obs.provenance import git_commit, package_versions, stable_hash

__all__ = [
    "AugmentConfig", "FitResult", "StageConfig", "TensorDictDataset", "Trainer", "TrainerConfig",
    "galaxy_set_dataset", "load_trainer_config", "main", "model_target", "plot_curves",
    "record_run", "resolve_precision", "seed_everything", "small_input_precision", "validate_config",
    "write_metrics", "write_predictions",
]

OPTIMISERS = ("adam", "adamw", "nadam", "sgd")
SCHEDULES = ("none", "cosine", "cosine_restarts", "plateau")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
CHECKPOINT_FORMAT = "sim2obs.checkpoint"
CHECKPOINT_VERSION = 1
LAST, BEST, METRICS, CURVE, RECORD = "last.pt", "best.pt", "metrics.jsonl", "val_curve.png", "run.json"


# --------------------------------------------------------------------------------------------
# Configuration (a Hydra structured config; YAML in configs/trainer/)
# --------------------------------------------------------------------------------------------
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
    from omegaconf import OmegaConf

    from sim2obs.config import coerce_dataclass

    if cfg is None:
        return TrainerConfig()
    if isinstance(cfg, TrainerConfig):
        return cfg
    if isinstance(cfg, (str, os.PathLike)):
        path = Path(cfg).resolve()
        cfg = OmegaConf.load(path)
        if "defaults" in cfg:  # a config-group file (e.g. quick.yaml extends default.yaml)
            from hydra import compose, initialize_config_dir

            with initialize_config_dir(config_dir=str(path.parent), version_base=None):
                cfg = compose(config_name=path.stem)
    return coerce_dataclass(TrainerConfig, to_plain(cfg), "trainer")


def _stages(cfg: TrainerConfig) -> list[StageConfig]:
    stages = [s if isinstance(s, StageConfig) else StageConfig(**to_plain(s)) for s in cfg.stages]
    return stages or [StageConfig(epochs=cfg.epochs, trainable=None, lr={})]


def _augment_config(cfg: TrainerConfig) -> AugmentConfig | None:
    a = cfg.augment
    return a if a is None or isinstance(a, AugmentConfig) else AugmentConfig(**to_plain(a))


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


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------
class TensorDictDataset(Dataset):
    """An in-memory dataset with the galaxy-set item contract.

    ``inputs``: ``{stack: (N, C, H, W)}`` float tensors (other shapes ``(N, ...)`` are allowed,
    e.g. catalogue features); ``targets``: ``(N, T)``; ``ids``: ``(N,)`` int (default 0..N-1).
    Item ``i`` is ``{"inputs": {stack: (C, H, W)}, "target": (T,), "id": int, "index": i}``.
    """

    def __init__(self, inputs: Mapping[str, Tensor], targets: Tensor, ids: Tensor | None = None):
        n = len(targets)
        for name, t in inputs.items():
            if len(t) != n:
                raise Sim2obsValueError(f"input stack {name!r} has {len(t)} rows, targets {n}", value=len(t))
        if ids is not None and len(ids) != n:
            raise Sim2obsValueError(f"ids have {len(ids)} rows, targets {n}", value=len(ids))
        self.inputs = dict(inputs)
        self.targets = targets
        self.ids = ids

    #: Items are rows of in-memory tensors: the engine serves them in-process (see ``_workers_for``).
    served_in_process = True

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> dict:
        return {"inputs": {name: t[i] for name, t in self.inputs.items()}, "target": self.targets[i],
                "id": int(self.ids[i]) if self.ids is not None else int(i), "index": int(i)}


def galaxy_set_dataset(path: str | os.PathLike, split: str, inputs: Sequence[str] | None = None,
                       targets: Sequence[str] = (), in_memory: bool | str = "auto",
                       max_memory_gb: float | None = None) -> Dataset:
    """``open_galaxy_set(path).torch_dataset(split, inputs, targets, ...)``, for ``_target_`` configs.

    The split's images are held in memory when they fit in ``max_memory_gb`` (default 2 GiB) and read
    lazily otherwise; ``in_memory`` True / False forces either (:class:`sim2obs.torchdata.GalaxySetDataset`).
    The set is opened with the schema check only: every image the dataset serves is checked for NaN/inf
    as it is read, so the whole set is not decompressed once more just to be scanned."""
    from sim2obs.galaxyset import open_galaxy_set

    gs = open_galaxy_set(path, check="schema")
    return gs.torch_dataset(split, inputs=inputs, targets=list(targets), in_memory=in_memory,
                            max_memory_gb=max_memory_gb)


def _workers_for(dataset: Dataset, requested: int) -> int:
    """DataLoader workers for ``dataset``: none when it declares ``served_in_process`` (items are rows of
    arrays already in memory, no per-item work), where workers would only add an inter-process copy of
    every batch (measured 0.78-1.05x the in-process throughput on 2 cores); else ``requested``."""
    return 0 if getattr(dataset, "served_in_process", False) else int(requested)


class _EpochSeeded(Dataset):
    """``dataset`` for persistent DataLoader workers, re-seeded at every epoch.

    Workers stay alive across epochs (starting them costs seconds per epoch), so PyTorch's seeding of a
    fresh worker happens only once. The sampler (:class:`_WithEpochSeed`) hands every index out as
    ``(index, epoch_seed)``; the first item of a new epoch in a worker seeds torch, numpy and ``random``
    from (epoch seed, worker id). Worker-side draws are thus keyed on (seed, epoch, rank, worker), as with
    workers restarted every epoch, and a resumed run draws what the uninterrupted one did."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self._seed: int | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def _reseed(self, epoch_seed: int) -> None:
        if epoch_seed != self._seed:
            from torch.utils.data import get_worker_info

            info = get_worker_info()
            seed = _derive_seed(epoch_seed, info.id if info is not None else 0)
            torch.manual_seed(seed)
            random.seed(seed)
            np.random.seed(seed % 2**32)
            self._seed = epoch_seed

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, epoch_seed = key
        self._reseed(epoch_seed)
        return self.dataset[index]

    def __getitems__(self, keys: Sequence[tuple[int, int]]) -> list:
        self._reseed(keys[0][1])
        indices = [k[0] for k in keys]
        batch = getattr(self.dataset, "__getitems__", None)
        return batch(indices) if callable(batch) else [self.dataset[i] for i in indices]


class _WithEpochSeed:
    """A sampler yielding ``(index, seed)`` pairs of ``sampler``'s indices; set :attr:`seed` per epoch."""

    def __init__(self, sampler):
        self.sampler = sampler
        self.seed = 0

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        seed = self.seed
        return ((index, seed) for index in self.sampler)


def _derive_seed(*key: int) -> int:
    """A 63-bit seed from integers (seed, stream, epoch, rank): independent per-epoch streams."""
    return int(np.random.SeedSequence([int(k) for k in key]).generate_state(2, np.uint64)[0] >> np.uint64(1))


_STREAM_WORKERS, _STREAM_AUGMENT, _STREAM_EVAL = 1, 2, 3


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python ``random``, numpy and torch (every device); with ``deterministic`` also
    select deterministic torch kernels.

    DataLoader workers need no ``worker_init_fn``: PyTorch seeds torch, numpy and ``random`` in
    every worker from the loader's generator, which the engine re-seeds from (seed, epoch, rank)
    at every epoch, so worker-side randomness is distinct per worker and reproducible.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def _rng_state() -> dict:
    """Global RNG states as tensors and plain types (loadable with ``weights_only=True``)."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached)},
        "python": {"version": int(version), "internal": [int(v) for v in internal], "gauss_next": gauss_next},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


# --------------------------------------------------------------------------------------------
# Models and run artefacts (shared with sim2obs.models.estimators)
# --------------------------------------------------------------------------------------------
def model_target(model: Any) -> str:
    """The ``_target_`` of ``model``'s class: ``module.QualName``."""
    cls = type(model)
    return f"{cls.__module__}.{cls.__qualname__}"


def _describe(obj: Any) -> str | None:
    """A stable description of a callable for run identities: its qualified name, plus the
    plain public attributes of an instance (e.g. a loss module's settings); never an address."""
    if obj is None:
        return None
    target = obj if isinstance(obj, type) or hasattr(obj, "__qualname__") else type(obj)
    name = f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', '?')}"
    if target is obj:
        return name
    attrs = {k: v for k, v in sorted(vars(obj).items()) if not k.startswith("_") and k != "training"
             and isinstance(v, (type(None), bool, int, float, str, list, tuple))}
    return f"{name}({', '.join(f'{k}={v!r}' for k, v in attrs.items())})"


def _save_torch(obj: Any, path: Path) -> None:
    atomic_write(path, lambda f: torch.save(obj, f))


def write_metrics(out_dir: str | os.PathLike, history: Sequence[Mapping[str, Any]]) -> Path:
    """(Re)write ``metrics.jsonl`` atomically: one JSON line per epoch record."""
    path = Path(out_dir) / METRICS
    text = "".join(json.dumps(dict(r)) + "\n" for r in history)
    atomic_write(path, lambda f: f.write(text), mode="w")
    return path


def _append_metrics(out_dir: Path, record: Mapping[str, Any]) -> None:
    with open(out_dir / METRICS, "a") as f:
        f.write(json.dumps(dict(record)) + "\n")


def write_predictions(out_dir: str | os.PathLike, split: str, ids: np.ndarray, predictions: np.ndarray,
                      targets: Sequence[str] | None = None) -> Path:
    """Save ``predictions_<split>.h5`` (:class:`sim2obs.predictions.Predictions`): ``ids`` (N,)
    and ``predictions`` (N, T) as the network output them; ``targets`` names the T outputs
    (default ``output_0`` ...)."""
    from sim2obs.predictions import Predictions

    values = np.asarray(predictions, dtype=np.float64).reshape(len(ids), -1)
    names = tuple(targets) if targets is not None else tuple(f"output_{k}" for k in range(values.shape[1]))
    return Predictions(np.asarray(ids, dtype=np.int64), values, names).save(
        Path(out_dir) / f"predictions_{split}.h5", split=split)


def plot_curves(history: Sequence[Mapping[str, Any]], path: str | os.PathLike, best_epoch: int | None = None) -> Path:
    """PNG of train and validation loss against epoch (matplotlib Agg canvas, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    x = [r["epoch"] for r in history]
    for key, label in (("train_loss", "train"), ("val_loss", "validation")):
        y = [r.get(key) for r in history]
        if any(v is not None for v in y):
            ax.plot(x, [np.nan if v is None else v for v in y], marker="o", ms=3, label=label)
    values = [r[k] for r in history for k in ("train_loss", "val_loss") if r.get(k) is not None]
    if values and min(values) > 0 and np.isfinite(values).all():
        ax.set_yscale("log")
    if best_epoch:
        ax.axvline(best_epoch, color="0.6", ls=":", label=f"best (epoch {best_epoch})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda f: fig.savefig(f, format="png"))
    return path


def record_run(out_dir: str | os.PathLike, *, model_name: str, target: str, config: Mapping[str, Any],
               config_hash: str, wall_seconds: float, size: Mapping[str, Any],
               results: Mapping[str, Any]) -> dict:
    """Write ``run.json``, the record of one run (networks and estimators alike), and return it.

    ``config``: the trainer and model configs; ``config_hash``: their stable hash (names the
    run); ``size``: ``{"n_parameters": ...}`` or ``{"n_estimators": ...}``; ``results``: best
    epoch / iteration, best validation loss, epochs run, etc.
    """
    record = {
        "model": model_name,
        "_target_": target,
        **dict(size),
        "config_hash": config_hash,
        "config": to_plain(config),
        "wall_seconds": float(wall_seconds),
        **dict(results),
        "package_versions": package_versions(),
        "git_commit": git_commit(),
        "created_unix": time.time(),
    }
    text = json.dumps(record, indent=2, sort_keys=True, default=str) + "\n"
    atomic_write(Path(out_dir) / RECORD, lambda f: f.write(text), mode="w")
    return record


@dataclass
class FitResult:
    """What :meth:`Trainer.fit` (and the estimator path) return.

    ``history``: the ``metrics.jsonl`` records; ``best_epoch`` (1-based) and ``best_val_loss``;
    ``stopped_early``; ``record``: the ``run.json`` dict; ``out_dir``.
    """

    history: list[dict]
    best_epoch: int
    best_val_loss: float
    stopped_early: bool
    record: dict
    out_dir: Path


# --------------------------------------------------------------------------------------------
# Runtime helpers
# --------------------------------------------------------------------------------------------
@dataclass
class _Runtime:
    device: torch.device
    precision: str          # fp32 | bf16 | fp16
    channels_last: bool
    rank: int
    world: int

    @property
    def autocast_dtype(self):
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    def autocast(self):
        dtype = self.autocast_dtype
        return torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def _model_input(inputs: Mapping[str, Tensor]) -> Tensor | dict[str, Tensor]:
    """One stack: the tensor; several: the dict."""
    return next(iter(inputs.values())) if len(inputs) == 1 else dict(inputs)


def _as_float(out: Any) -> Any:
    if isinstance(out, Tensor):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, (tuple, list)):
        return type(out)(_as_float(o) for o in out)
    if isinstance(out, Mapping):
        return {k: _as_float(v) for k, v in out.items()}
    return out


def _point_prediction(out: Any) -> Tensor:
    """The model output, or its first element when it returns a tuple (e.g. mean and scale)."""
    return out[0] if isinstance(out, (tuple, list)) else out


def _matches(name: str, prefix: str) -> bool:
    return prefix == "" or name == prefix or name.startswith(prefix + ".")


def _all_reduce_sum(*values: float, device: torch.device) -> list[float]:
    dist = _dist()
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist is not None:
        dist.all_reduce(t)
    return t.tolist()


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


# --------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------
class Trainer:
    """Trains and applies any ``nn.Module`` on galaxy-set style datasets.

    Args:
        config: a :class:`TrainerConfig` (default: its defaults).
        loss: ``loss(output, target) -> scalar`` mean over the batch, given by the task
            (default: mean squared error). ``output`` is what the model returns (a tensor, or a
            tuple for e.g. mean-and-scale heads), in float32; ``target`` is ``(B, T)``.
        augment: ``augment(inputs, generator) -> inputs`` applied to training batches on the
            device (``{stack: (B, C, H, W)}``); replaces the one built from ``config.augment``.
        callbacks: ``callback(record, model)`` called after every epoch's checkpoint, with the
            epoch record and the (unwrapped) model.
        regulariser: an optional extra loss term per training batch,
            ``regulariser(net, inputs, output) -> scalar tensor``, added to ``loss(output, target)``
            (e.g. the transfer protocol's feature-alignment loss, which runs ``net`` on a batch of
            unlabelled target images: :mod:`sim2obs.tasks.transfer.strategies`). ``net`` is the
            module being trained (DDP-wrapped under torchrun), ``inputs`` the batch's
            ``{stack: (B, C, H, W)}`` after augmentation, ``output`` the model's output; it is called
            under the same autocast as the forward pass. It is part of the run's identity (the
            checkpoint hash); None (default) leaves every run exactly as without it.

    Models are called with the image tensor when a batch has one input stack, with the dict
    ``{stack: tensor}`` when it has several.
    """

    def __init__(self, config: TrainerConfig | None = None, loss: Callable | None = None,
                 augment: Callable | None = None, callbacks: Sequence[Callable] = (),
                 regulariser: Callable | None = None):
        self.config = config
        self.loss = loss
        self.augment = augment
        self.callbacks = callbacks
        self.regulariser = regulariser

    # -- setup --------------------------------------------------------------------------------
    def _config(self) -> TrainerConfig:
        cfg = self.config if self.config is not None else TrainerConfig()
        validate_config(cfg)
        return cfg

    def _runtime(self, cfg: TrainerConfig) -> _Runtime:
        """Resolve device and precision; join the torchrun process group when launched by it."""
        import torch.distributed as dist

        device = select_device(cfg.device)
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = 0
        if world > 1:
            rank = int(os.environ["RANK"])
            if device.type == "cuda":
                device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
                torch.cuda.set_device(device)
            if not dist.is_initialized():
                dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        precision, channels_last = resolve_precision(device, cfg.precision, cfg.channels_last)
        if cfg.batch_size % world:
            raise ConfigError("trainer.batch_size", f"must be divisible by the number of processes ({world})",
                              value=cfg.batch_size)
        return _Runtime(device, precision, channels_last, rank, world)

    def _to_device(self, rt: _Runtime, batch: Mapping[str, Any]) -> tuple[dict[str, Tensor], Tensor]:
        nb = rt.device.type == "cuda"
        inputs = {k: v.to(rt.device, non_blocking=nb) for k, v in batch["inputs"].items()}
        return inputs, batch["target"].to(rt.device, non_blocking=nb)

    @staticmethod
    def _memory_format(rt: _Runtime, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        if not rt.channels_last:
            return inputs
        return {k: v.contiguous(memory_format=torch.channels_last) if v.ndim == 4 else v for k, v in inputs.items()}

    def _loader(self, rt: _Runtime, dataset: Dataset, sampler, batch_size: int, drop_last: bool,
                generator: torch.Generator, workers: int) -> DataLoader:
        # Workers persist across epochs (restarting them cost seconds per epoch); the training loader
        # re-seeds them per epoch through _EpochSeeded.
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                          pin_memory=rt.device.type == "cuda", drop_last=drop_last, generator=generator,
                          persistent_workers=workers > 0)

    def _eval_loader(self, rt: _Runtime, cfg: TrainerConfig, dataset: Dataset) -> DataLoader:
        """Unshuffled, unpadded shard ``rank::world`` of ``dataset``."""
        if len(dataset) == 0:
            raise Sim2obsValueError("dataset is empty", value=0)
        generator = torch.Generator().manual_seed(_derive_seed(cfg.seed, _STREAM_EVAL, rt.rank))
        sampler = range(rt.rank, len(dataset), rt.world)
        return self._loader(rt, dataset, sampler, max(1, cfg.batch_size // rt.world), False, generator,
                            _workers_for(dataset, cfg.num_workers))

    def _stage_setup(self, rt: _Runtime, cfg: TrainerConfig, model: nn.Module, stage: StageConfig,
                     stage_epochs: int, steps_per_epoch: int, frozen: set[str]):
        """Freeze / unfreeze for ``stage`` (``frozen`` names always stay frozen); (re)wrap in
        DDP; build optimiser and schedule."""
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
        opt = self._optimiser(cfg, param_groups)
        sched = None
        steps = max(1, stage_epochs * steps_per_epoch)
        if cfg.schedule == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=cfg.eta_min)
        elif cfg.schedule == "cosine_restarts":
            sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
                opt, T_0=max(1, cfg.restart_epochs * steps_per_epoch), T_mult=int(cfg.restart_mult),
                eta_min=cfg.eta_min)
        elif cfg.schedule == "plateau":
            # Keras semantics (Dobbels et al.): reduce on the plateau_patience-th epoch without
            # improvement; torch's patience counts the epochs it tolerates, hence the -1.
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, mode="min", factor=cfg.plateau_factor, patience=cfg.plateau_patience - 1)
        net: nn.Module = model
        if rt.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            net = DistributedDataParallel(model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
        return net, opt, sched

    @staticmethod
    def _check_prefixes(model: nn.Module, stages: Sequence[StageConfig]) -> None:
        """Every prefix named by a stage must match a parameter (catches typos before training)."""
        import difflib

        names = [n for n, _ in model.named_parameters()]
        tops = sorted({n.split(".")[0] for n in names})
        for i, stage in enumerate(stages):
            for prefix in list(stage.trainable or []) + list(stage.lr):
                if not any(_matches(n, prefix) for n in names):
                    close = difflib.get_close_matches(prefix, tops + names, n=1)
                    hint = f"; did you mean {close[0]!r}?" if close else ""
                    raise ConfigError(f"trainer.stages.{i}", f"prefix {prefix!r} matches no parameter{hint}",
                                      value=prefix, allowed=tops)

    @staticmethod
    def _optimiser(cfg: TrainerConfig, groups: list[dict]) -> torch.optim.Optimizer:
        betas = tuple(float(b) for b in cfg.betas)
        if cfg.optimiser == "adam":
            return torch.optim.Adam(groups, lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay)
        if cfg.optimiser == "adamw":
            return torch.optim.AdamW(groups, lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay)
        if cfg.optimiser == "nadam":
            return torch.optim.NAdam(groups, lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay)
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)

    def _identity(self, cfg: TrainerConfig, model: nn.Module, model_config: Any) -> dict:
        """What names a run: trainer config (less display settings), model, loss, augmentation."""
        trainer = to_plain(cfg)
        trainer.pop("progress")
        identity = {"trainer": trainer,
                    "model": to_plain(model_config) if model_config is not None else {"_target_": model_target(model)},
                    "loss": _describe(self.loss), "augment": _describe(self.augment)}
        if self.regulariser is not None:  # absent otherwise: hashes of runs without one are unchanged
            identity["regulariser"] = _describe(self.regulariser)
        return identity

    # -- training ------------------------------------------------------------------------------
    def fit(self, model: nn.Module, train_dataset: Dataset, val_dataset: Dataset, out_dir: str | os.PathLike,
            model_config: Any = None) -> FitResult:
        """Train ``model`` in place; write checkpoints, metrics, curve, predictions and record.

        ``out_dir`` holding an unfinished run of the same configuration resumes it; a finished
        one is not trained again. ``model_config`` (the Hydra config that built ``model``) is
        recorded and hashed. Parameters with ``requires_grad=False`` on entry stay frozen.
        Returns a :class:`FitResult`.
        """
        cfg = self._config()
        rt = self._runtime(cfg)
        dist = _dist()
        out = Path(out_dir)
        main = rt.rank == 0
        if main:
            out.mkdir(parents=True, exist_ok=True)
        seed_everything(cfg.seed, cfg.deterministic)
        model.to(rt.device)
        if rt.channels_last:
            model.to(memory_format=torch.channels_last)
        frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
        identity = self._identity(cfg, model, model_config)
        config_hash = stable_hash(identity)
        loss_fn = self.loss if self.loss is not None else nn.MSELoss()
        aug_cfg = _augment_config(cfg)
        augment = self.augment if self.augment is not None else (
            Augment(**asdict(aug_cfg)) if aug_cfg is not None else None)
        stages = _stages(cfg)
        self._check_prefixes(model, stages)
        starts = np.cumsum([0] + [s.epochs for s in stages])[:-1].tolist()

        def stage_of(epoch: int) -> int:
            return max(i for i, s in enumerate(starts) if s <= epoch)

        def stage_length(i: int) -> int:
            stop = starts[i + 1] if i + 1 < len(stages) else cfg.epochs
            return max(1, min(stop, cfg.epochs) - starts[i])

        if dist is not None:
            dist.barrier()
        ckpt = self._load_checkpoint(out, config_hash)
        progress = _Progress()
        if ckpt is not None:
            model.load_state_dict(ckpt["model"])
            progress = _Progress(**{f.name: ckpt[f.name] for f in fields(_Progress)})
            progress.history = [dict(r) for r in progress.history]
        if main:
            write_metrics(out, progress.history)

        sampler = DistributedSampler(train_dataset, num_replicas=rt.world, rank=rt.rank, shuffle=True,
                                     seed=cfg.seed, drop_last=False)
        loader_gen = torch.Generator()
        workers = _workers_for(train_dataset, cfg.num_workers)
        seeded = _WithEpochSeed(sampler) if workers > 0 else None  # persistent workers: see _EpochSeeded
        train_loader = self._loader(rt, train_dataset if seeded is None else _EpochSeeded(train_dataset),
                                    sampler if seeded is None else seeded, cfg.batch_size // rt.world,
                                    cfg.drop_last, loader_gen, workers)
        if len(train_loader) == 0:
            raise Sim2obsValueError("the training set gives no batch", value=len(train_dataset))
        val_loader = self._eval_loader(rt, cfg, val_dataset)
        scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.precision == "fp16")
        if ckpt is not None:
            scaler.load_state_dict(ckpt["scaler"])

        current = None
        try:
            for epoch in range(progress.epoch, cfg.epochs):
                if progress.stopped_early:
                    break
                s = stage_of(epoch)
                if s != current:
                    net, opt, sched = self._stage_setup(rt, cfg, model, stages[s], stage_length(s),
                                                        len(train_loader), frozen)
                    if ckpt is not None and epoch == ckpt["epoch"] and int(ckpt["stage"]) == s:
                        opt.load_state_dict(ckpt["optimiser"])
                        if sched is not None:
                            sched.load_state_dict(ckpt["scheduler"])
                    current = s
                if ckpt is not None and epoch == ckpt["epoch"]:
                    _set_rng_state(ckpt["rng"])
                t0 = time.perf_counter()
                lrs = {g["name"]: float(g["lr"]) for g in opt.param_groups}
                sampler.set_epoch(epoch)
                loader_gen.manual_seed(_derive_seed(cfg.seed, _STREAM_WORKERS, epoch, rt.rank))
                if seeded is not None:
                    seeded.seed = _derive_seed(cfg.seed, _STREAM_WORKERS, epoch, rt.rank)
                aug_gen = torch.Generator().manual_seed(_derive_seed(cfg.seed, _STREAM_AUGMENT, epoch, rt.rank))
                train_loss = self._train_epoch(rt, cfg, net, opt, sched, scaler, train_loader, loss_fn, augment,
                                               aug_gen, f"epoch {epoch + 1}/{cfg.epochs}")
                if dist is not None:  # evaluate every shard with rank 0's batch-norm statistics
                    for b in model.buffers():
                        dist.broadcast(b, 0)
                val_loss = self._evaluate(rt, model, val_loader, loss_fn)
                if cfg.schedule == "plateau":
                    sched.step(val_loss)
                improved = progress.update(val_loss, cfg.early_stopping_min_delta, cfg.early_stopping_patience)
                record = {"epoch": epoch + 1, "stage": s, "train_loss": train_loss, "val_loss": val_loss,
                          "lr": next(iter(lrs.values())), "lrs": lrs, "seconds": time.perf_counter() - t0}
                progress.history.append(record)
                if main:
                    _append_metrics(out, record)
                    if improved:
                        _save_torch({"model": model.state_dict(), "epoch": epoch + 1, "val_loss": val_loss},
                                    out / BEST)
                    _save_torch({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
                                 "config_hash": config_hash, **asdict(progress), "stage": s,
                                 "model": model.state_dict(), "optimiser": opt.state_dict(),
                                 "scheduler": sched.state_dict() if sched is not None else None,
                                 "scaler": scaler.state_dict(), "rng": _rng_state()}, out / LAST)
                    if cfg.progress:
                        from tqdm.auto import tqdm

                        tqdm.write(f"epoch {epoch + 1}/{cfg.epochs}: train {train_loss:.5g}  val {val_loss:.5g}"
                                   f"  lr {record['lr']:.3g}" + ("  (best)" if improved else ""))
                for callback in self.callbacks:
                    callback(record, model)
        finally:
            for name, p in model.named_parameters():
                p.requires_grad_(name not in frozen)

        if dist is not None:
            dist.barrier()
        if cfg.restore_best and (out / BEST).exists():
            model.load_state_dict(torch.load(out / BEST, map_location="cpu", weights_only=True)["model"])
        preds = self._predict(rt, cfg, model, val_dataset, tta=False)
        record = {}
        if main:
            write_predictions(out, "val", preds["ids"], preds["predictions"])
            plot_curves(progress.history, out / CURVE, progress.best_epoch)
            record = record_run(
                out, model_name=type(model).__name__, target=model_target(model), config=identity,
                config_hash=config_hash, wall_seconds=sum(r["seconds"] for r in progress.history),
                size={"n_parameters": sum(p.numel() for p in model.parameters())},
                results={"kind": "network", "epochs_run": len(progress.history), "best_epoch": progress.best_epoch,
                         "best_val_loss": progress.best_val_loss, "stopped_early": progress.stopped_early,
                         "device": str(rt.device), "precision": rt.precision, "world_size": rt.world})
        return FitResult(history=progress.history, best_epoch=progress.best_epoch,
                         best_val_loss=progress.best_val_loss, stopped_early=progress.stopped_early,
                         record=record, out_dir=out)

    @staticmethod
    def _load_checkpoint(out: Path, config_hash: str) -> dict | None:
        if not (out / LAST).exists():
            return None
        ckpt = torch.load(out / LAST, map_location="cpu", weights_only=True)
        if ckpt.get("format") != CHECKPOINT_FORMAT or ckpt.get("config_hash") != config_hash:
            raise ConfigError("out_dir", f"{out} holds a run with a different configuration "
                              f"(hash {ckpt.get('config_hash')}, this run {config_hash}); use another folder",
                              value=str(out))
        return ckpt

    def _train_epoch(self, rt: _Runtime, cfg: TrainerConfig, net: nn.Module, opt, sched, scaler, loader: DataLoader,
                     loss_fn: Callable, augment: Callable | None, aug_gen: torch.Generator, desc: str) -> float:
        """One pass over ``loader``; returns the mean training loss over all processes."""
        from tqdm.auto import tqdm

        net.train()
        params = [p for g in opt.param_groups for p in g["params"]]
        total = torch.zeros((), dtype=torch.float64, device=rt.device)
        count = 0
        for batch in tqdm(loader, desc=desc, leave=False, disable=not (cfg.progress and rt.rank == 0)):
            inputs, target = self._to_device(rt, batch)
            if augment is not None:
                inputs = augment(inputs, generator=aug_gen)
            inputs = self._memory_format(rt, inputs)
            with rt.autocast():
                output = net(_model_input(inputs))
            loss = loss_fn(_as_float(output), target)
            if self.regulariser is not None:
                with rt.autocast():
                    extra = self.regulariser(net, inputs, output)
                loss = loss + extra.float()
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.max_grad_norm is not None:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            scaler.step(opt)
            scaler.update()
            if sched is not None and cfg.schedule != "plateau":
                sched.step()
            total += loss.detach().double() * len(target)
            count += len(target)
        loss_sum, n = _all_reduce_sum(total.item(), count, device=rt.device)
        if not math.isfinite(loss_sum / n):
            raise Sim2obsValueError(f"training diverged in {desc} (non-finite loss)", value=loss_sum / n)
        return loss_sum / n

    # -- evaluation ----------------------------------------------------------------------------
    @torch.no_grad()
    def _evaluate(self, rt: _Runtime, model: nn.Module, loader: DataLoader, loss_fn: Callable) -> float:
        """Mean loss over the (sharded) loader, reduced over processes."""
        was_training = model.training
        model.eval()
        total, count = 0.0, 0
        for batch in loader:
            inputs, target = self._to_device(rt, batch)
            with rt.autocast():
                output = model(_model_input(self._memory_format(rt, inputs)))
            total += float(loss_fn(_as_float(output), target)) * len(target)
            count += len(target)
        model.train(was_training)
        total, count = _all_reduce_sum(total, count, device=rt.device)
        return total / count

    def evaluate(self, model: nn.Module, dataset: Dataset) -> float:
        """Mean loss of ``model`` (eval mode) over ``dataset``."""
        cfg = self._config()
        rt = self._runtime(cfg)
        model.to(rt.device)
        return self._evaluate(rt, model, self._eval_loader(rt, cfg, dataset),
                              self.loss if self.loss is not None else nn.MSELoss())

    @torch.no_grad()
    def _predict(self, rt: _Runtime, cfg: TrainerConfig, model: nn.Module, dataset: Dataset, tta: bool) -> dict:
        was_training = model.training
        model.eval()
        positions, ids, preds = [], [], []
        loader = self._eval_loader(rt, cfg, dataset)

        def forward(inputs: dict[str, Tensor]) -> Tensor:
            with rt.autocast():
                out = model(_model_input(self._memory_format(rt, inputs)))
            return _point_prediction(_as_float(out))

        order = iter(loader.sampler)
        for batch in loader:
            inputs, _ = self._to_device(rt, batch)
            out = tta_mean(forward, inputs, cfg.tta) if tta else forward(inputs)
            preds.append(out.reshape(len(out), -1).cpu())
            ids.append(torch.as_tensor(batch["id"]).reshape(-1).cpu())
            positions.extend(next(order) for _ in range(len(out)))
        model.train(was_training)
        parts = [(positions, torch.cat(ids).numpy(), torch.cat(preds).numpy())]
        dist = _dist()
        if dist is not None:
            gathered: list = [None] * rt.world
            dist.all_gather_object(gathered, parts[0])
            parts = gathered
        pos = np.concatenate([np.asarray(p[0], dtype=np.int64) for p in parts])
        order_ = np.argsort(pos, kind="stable")
        return {"ids": np.concatenate([p[1] for p in parts])[order_].astype(np.int64),
                "predictions": np.concatenate([p[2] for p in parts])[order_].astype(np.float32)}

    def predict(self, model: nn.Module, dataset: Dataset, tta: bool = False) -> dict[str, np.ndarray]:
        """Predictions of ``model`` (eval mode) for every item of ``dataset``, in dataset order.

        Returns ``{"ids": (N,) int64, "predictions": (N, T) float32}``. With ``tta`` the
        prediction is the mean over the dihedral transforms ``config.tta`` (default all 8).
        Under torchrun every process predicts a shard and all receive the whole result.
        """
        cfg = self._config()
        rt = self._runtime(cfg)
        model.to(rt.device)
        if rt.channels_last:
            model.to(memory_format=torch.channels_last)
        return self._predict(rt, cfg, model, dataset, tta)


# --------------------------------------------------------------------------------------------
# Entry point: python -m / torchrun -m sim2obs.models.engine run.yaml [key=value ...]
# --------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> FitResult:
    """Train from a YAML run file, optionally under ``torchrun``.

    The file holds ``model`` (a ``_target_`` config), ``train`` and ``val`` (``_target_``
    configs of datasets, e.g. :func:`galaxy_set_dataset`), ``out_dir``, ``trainer`` (the
    :class:`TrainerConfig` fields, or a path to a YAML file of them) and optionally ``loss``
    (a ``_target_`` config of the loss callable). ``key=value`` arguments override entries
    (OmegaConf dot-list syntax), e.g. ``trainer.epochs=5``.
    """
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(main.__doc__)
        raise SystemExit(0 if args else 2)
    cfg = OmegaConf.merge(OmegaConf.load(args[0]), OmegaConf.from_dotlist(args[1:]))
    for key in ("model", "train", "val", "out_dir"):
        if key not in cfg:
            raise ConfigError(key, "missing from the run file", allowed=["model", "train", "val", "out_dir",
                                                                         "trainer", "loss"])
    trainer_cfg = load_trainer_config(cfg.get("trainer"))
    seed_everything(trainer_cfg.seed)
    from sim2obs.models import build_model

    model = build_model(cfg.model)
    train = instantiate(cfg.train, _convert_="all")
    val = instantiate(cfg.val, _convert_="all")
    loss = instantiate(cfg.loss, _convert_="all") if cfg.get("loss") is not None else None
    was_initialised = _dist() is not None
    try:
        result = Trainer(trainer_cfg, loss=loss).fit(model, train, val, cfg.out_dir,
                                                     model_config=OmegaConf.to_container(cfg.model, resolve=True))
        dist = _dist()
        if dist is not None and not was_initialised:
            # No rank tears its Gloo pairs down while another still uses the group (rank 0 writes
            # after the last collective); suspected cause of a one-off abort at exit in CI,
            # "terminate called without an active exception".
            dist.barrier()
        return result
    finally:
        dist = _dist()
        if dist is not None and not was_initialised:
            dist.destroy_process_group()


#: Largest input (px) at which the CPU bf16 guard switches to fp32 (see :func:`small_input_precision`).
BF16_CPU_MIN_PX = 16


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


if __name__ == "__main__":
    main()
