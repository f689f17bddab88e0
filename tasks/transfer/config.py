"""Study configs of the transfer protocol (``configs/transfer.yaml``, presets in ``configs/transfer/``).

A study is a task with its config (``task``: a task preset, composed as ``sim2obs run`` does), a
source data node (``source``: what ``task.<name>.data`` takes: generator settings, or a real set
``{path, content_hash}``), named target data nodes (``targets``), a grid of ``k``, the
``strategies`` and the ``seeds``. A target node is written as **changes to another node**: its
keys are merged onto the source node (or onto the target named by its ``extends`` key: a nuisance
ladder where each rung adds one nuisance to the previous one); a node naming ``path`` is a real set
and replaces instead. :func:`resolve_targets` gives every target's full data node.

Keys (every one refused with its name when unknown or of the wrong type):

``name``
    the study's name (its folder ``<results>/transfer/<task>/<name>/``).
``task_name``
    the task (``bt_posterior``, ``multibranch_mass``, ...); an adapter must be registered for it.
``task``
    the task config (the ``data`` node in it is ignored: ``source`` / ``targets`` say the data).
``k``
    labelled target training objects per fine-tuning point (capped by the target training split).
``strategies``
    any of :data:`STRATEGIES`; ``zero_shot`` and ``align_mmd`` run at k = 0, the others at every k > 0.
``seeds``
    each seed trains the source network once, draws its own nested k subsets and repeats every point.
``finetune``
    :class:`FinetuneConfig`; ``target_only``: :class:`TargetOnlyConfig`; ``align``: :class:`AlignConfig`.
``n_boot``
    bootstrap resamples of the test objects behind every metric's error; ``n_boot_seed`` their seed.
``diagnostics``
    :class:`DiagnosticsConfig` (shift diagnostics on the trained source network's features and on images).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from sim2obs.config import coerce_dataclass, to_plain
from sim2obs.errors import ConfigError

#: Strategy names (fixed by the shared design of issue 14).
STRATEGIES = ("zero_shot", "finetune_full", "finetune_head", "finetune_staged", "target_only", "align_mmd",
              "recalibrate")
#: Strategies that use no labelled target object (run once per target and seed, at k = 0).
K0_STRATEGIES = ("zero_shot", "align_mmd")
#: GeomLoss ``SamplesLoss`` kinds the alignment accepts (energy distance, Gaussian / Laplacian MMD, Sinkhorn).
ALIGN_LOSSES = ("energy", "gaussian", "laplacian", "sinkhorn")


@dataclass
class FinetuneConfig:
    """Fine-tuning on the k labelled target objects.

    ``trainer``: :class:`~sim2obs.models.engine.TrainerConfig` keys merged onto the task's own
    trainer (e.g. ``epochs``). ``lr_factor``: every layer's learning rate is the task's ``lr`` times
    this (``finetune_full`` and the second stage of ``finetune_staged``). ``head_lr_factor``: the
    head's rate (``finetune_head``, the first stage of ``finetune_staged``) relative to ``lr``.
    ``staged_head_epochs``: epochs of the head-only first stage of ``finetune_staged``.
    ``min_steps``: at least this many optimiser steps (small k get more epochs, up to
    ``max_epochs``); 0: ``trainer.epochs`` whatever k. The k objects are also the engine's
    validation set (logged only: ``restore_best`` and early stopping are off, nothing is selected on them).
    """

    trainer: dict[str, Any] = field(default_factory=dict)
    lr_factor: float = 0.1
    head_lr_factor: float = 1.0
    staged_head_epochs: int = 1
    min_steps: int = 0
    max_epochs: int = 50


@dataclass
class TargetOnlyConfig:
    """Training from scratch on the k target objects: ``trainer`` overrides, ``min_steps`` /
    ``max_epochs`` as in :class:`FinetuneConfig`."""

    trainer: dict[str, Any] = field(default_factory=dict)
    min_steps: int = 0
    max_epochs: int = 100


@dataclass
class AlignConfig:
    """``align_mmd``: the source network trained further on the source labels plus ``weight`` times
    a distance between the penultimate features of each source batch and of a batch of unlabelled
    target training images (GeomLoss ``SamplesLoss(loss, blur=blur)``: ``energy`` distance, the MMD
    of the distance kernel; ``gaussian`` / ``laplacian`` MMD with bandwidth ``blur``; ``sinkhorn``
    OT). ``trainer``: overrides (learning rate: ``lr_factor`` x the task's); ``max_source``: source
    training objects used (0: all)."""

    loss: str = "energy"
    blur: float = 1.0
    weight: float = 1.0
    lr_factor: float = 0.1
    trainer: dict[str, Any] = field(default_factory=dict)
    max_source: int = 0


@dataclass
class DiagnosticsConfig:
    """Shift diagnostics per target and seed (``diagnostics.json``): on at most ``max_objects``
    test objects of each set; ``n_permutations`` for the MMD p-value."""

    enabled: bool = True
    max_objects: int = 400
    n_permutations: int = 200


@dataclass
class StudyConfig:
    """A transfer study (module docstring)."""

    name: str = "study"
    task_name: str = "bt_posterior"
    task: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    targets: dict[str, Any] = field(default_factory=dict)
    k: list[int] = field(default_factory=lambda: [0, 30, 100, 300, 1000, 3000])
    strategies: list[str] = field(default_factory=lambda: list(STRATEGIES))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    target_only: TargetOnlyConfig = field(default_factory=TargetOnlyConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)
    n_boot: int = 200
    n_boot_seed: int = 0
    plots: bool = True


def coerce_study(cfg: Any) -> StudyConfig:
    """``cfg`` (mapping, OmegaConf node or :class:`StudyConfig`) -> a validated :class:`StudyConfig`."""
    study = coerce_dataclass(StudyConfig, cfg, "transfer")
    validate_study(study)
    return study


def validate_study(s: StudyConfig) -> None:
    """Refuse an unusable study before any work, naming the key."""
    from sim2obs.tasks import TASKS
    from sim2obs.tasks.transfer.adapter import ADAPTERS

    TASKS.get(s.task_name)
    if s.task_name not in ADAPTERS:
        raise ConfigError("transfer.task_name", "no transfer adapter for this task", value=s.task_name,
                          allowed=ADAPTERS.names())
    bad = [x for x in s.strategies if x not in STRATEGIES]
    if bad:
        raise ConfigError("transfer.strategies", "unknown strategy", value=bad[0], allowed=list(STRATEGIES))
    if len(set(s.strategies)) != len(s.strategies):
        raise ConfigError("transfer.strategies", "strategies repeat", value=list(s.strategies))
    if not s.seeds or len(set(s.seeds)) != len(s.seeds):
        raise ConfigError("transfer.seeds", "give distinct seeds", value=list(s.seeds))
    if any(int(k) < 0 for k in s.k) or len(set(s.k)) != len(s.k):
        raise ConfigError("transfer.k", "k values must be distinct and >= 0", value=list(s.k))
    if not s.targets:
        raise ConfigError("transfer.targets", "name at least one target data node", value={})
    if "source" in s.targets:
        raise ConfigError("transfer.targets.source", "'source' names the in-domain row; rename the target")
    for name in s.targets:
        if not str(name).replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"transfer.targets.{name}", "target names are folder names: letters, digits, _ and -",
                              value=name)
    if not s.source:
        raise ConfigError("transfer.source", "give the source data node (generator settings or {path, "
                          "content_hash})", value={})
    for key, value in (("finetune.lr_factor", s.finetune.lr_factor), ("finetune.head_lr_factor",
                       s.finetune.head_lr_factor), ("align.lr_factor", s.align.lr_factor),
                       ("align.blur", s.align.blur)):
        if not value > 0:
            raise ConfigError(f"transfer.{key}", "must be positive", value=value)
    if s.align.weight < 0:
        raise ConfigError("transfer.align.weight", "must be >= 0", value=s.align.weight)
    if s.align.loss not in ALIGN_LOSSES:
        raise ConfigError("transfer.align.loss", "unknown alignment loss", value=s.align.loss,
                          allowed=list(ALIGN_LOSSES))
    if s.finetune.staged_head_epochs < 1:
        raise ConfigError("transfer.finetune.staged_head_epochs", "must be >= 1", value=s.finetune.staged_head_epochs)
    if s.n_boot < 2:
        raise ConfigError("transfer.n_boot", "a bootstrap error needs at least 2 resamples", value=s.n_boot)
    resolve_targets(s)


def _merge(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = to_plain(value)
    return out


def resolve_targets(s: StudyConfig) -> dict[str, dict[str, Any]]:
    """Every target's full data node: its keys merged onto the source node, or onto the target its
    ``extends`` names (resolved first); a node naming ``path`` (a real set) is taken as given."""
    raw = {str(k): to_plain(v) or {} for k, v in s.targets.items()}
    out: dict[str, dict[str, Any]] = {}

    def resolve(name: str, chain: tuple[str, ...]) -> dict[str, Any]:
        if name in out:
            return out[name]
        if name in chain:
            raise ConfigError(f"transfer.targets.{name}.extends", "targets extend each other in a cycle",
                              value=list(chain))
        node = dict(raw[name])
        parent = node.pop("extends", None)
        if "path" in node:
            out[name] = node
            return node
        if parent is None:
            base = to_plain(s.source)
        elif parent in raw:
            base = resolve(str(parent), chain + (name,))
        else:
            raise ConfigError(f"transfer.targets.{name}.extends", "no such target", value=parent, allowed=sorted(raw))
        out[name] = _merge(base, node)
        return out[name]

    for name in raw:
        if not isinstance(raw[name], dict):
            raise ConfigError(f"transfer.targets.{name}", "a target is a mapping of data-node changes",
                              value=raw[name])
        resolve(name, ())
    return {name: out[name] for name in raw}


def load_study_config(preset: str = "bt_quick", overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The resolved study config of ``configs/transfer/<preset>.yaml`` with Hydra-style overrides
    relative to the study (``["seeds=[0]", "task.trainer.epochs=1"]``), composed as
    ``sim2obs transfer transfer=<preset>`` does. ``SIM2OBS_TRANSFER_OVERRIDES`` (whitespace-separated)
    is appended (tests and CI shrink studies with it)."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from sim2obs.config import register_resolvers

    register_resolvers()
    extra = os.environ.get("SIM2OBS_TRANSFER_OVERRIDES", "").split()
    full = [_prefixed(o) for o in [*overrides, *extra]]
    with initialize_config_module(version_base="1.3", config_module="sim2obs.configs"):
        cfg = compose(config_name="transfer", overrides=[f"transfer={preset}", *full])
    return to_plain(OmegaConf.to_container(cfg.transfer, resolve=True))


def _prefixed(override: str) -> str:
    """``seeds=[0]`` -> ``transfer.seeds=[0]`` (with any ``+``/``~`` prefix kept)."""
    head = override[:len(override) - len(override.lstrip("+~"))]
    body = override.lstrip("+~")
    return override if body.startswith("transfer.") else f"{head}transfer.{body}"


def transfer_help() -> str:
    """``sim2obs transfer --help``: the keys (this module's docstring), ``configs/transfer.yaml`` and
    every study preset with its comments."""
    from importlib.resources import files
    from pathlib import Path

    root = Path(str(files("sim2obs.configs")))
    parts = ["sim2obs transfer [OVERRIDES]   a sim-to-real transfer study (Hydra overrides; --multirun sweeps)",
             "  transfer=<preset>  transfer.<key>=VALUE  (presets: "
             + ", ".join(sorted(f.stem for f in (root / "transfer").glob("*.yaml"))) + ")", "",
             (__doc__ or "").strip(), "", "# ---- configs/transfer.yaml ----", (root / "transfer.yaml").read_text().rstrip()]
    for f in sorted((root / "transfer").glob("*.yaml")):
        parts += ["", f"# ---- configs/transfer/{f.name} (transfer={f.stem}) ----", f.read_text().rstrip()]
    return "\n".join(parts) + "\n"
