"""Transfer adapter of task ``multibranch_mass`` (Chu et al. 2024): the multi-branch ResNet-18 of
the task's ``cnn`` method, trained on a source set and moved to a target set (issue 14; the study
"mini-sim physics A -> B" is ``configs/transfer/multibranch_physics.yaml``).

Everything is the task's own: the per-branch [0, 1] scalings (:func:`fit_unit_scaling` through
:meth:`MultibranchMassTask.scaling`, :class:`UnitScaling`), the network (the task's model config
for its ``inputs``, wrapped in :class:`BranchInputs`), the loss (MSE on targets standardised with
the training mean and standard deviation) and the trainer schedule (``task.trainer``). The adapter
only fixes *where* the preprocessing is fitted: on the **source** training split, once
(:meth:`MultibranchMassAdapter.fit`), and applied unchanged to every split of every set.

The network seen by the protocol (``build_model``) is ``BranchInputs(MultiBranchNet)``, so

- :attr:`MultibranchMassAdapter.head_prefixes` = ``("net.head",)``: the shared MLP after the
  concatenated branch features (``head_hidden`` layers + the output layer);
- :attr:`MultibranchMassAdapter.feature_module` = ``"net.head.0"``: the first layer of that MLP,
  whose input is the concatenated branch features, ``(B, 512 x n_branches)`` (512 per ResNet-18
  branch: 1536 for the default r image + two kinematic maps; :meth:`feature_dim`).

Predictions are the ``cnn``'s: ``(N, 3)`` values in dex for ``log_mstar_rhalf``,
``log_mtot_rhalf``, ``log_ml_r`` (de-standardised with the source statistics), no σ or samples,
scored by the target task's :meth:`~sim2obs.tasks.base.Task.evaluate`.
"""
from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from sim2obs.errors import ConfigError, Sim2obsValueError
from sim2obs.models import build_model
from sim2obs.models.engine import TensorDictDataset, Trainer, seed_everything, small_input_precision
from sim2obs.predictions import Predictions
from sim2obs.tasks.base import Task
from sim2obs.tasks.multibranch_mass import BRANCHES, KIN_BRANCHES, BranchInputs, UnitScaling
from sim2obs.tasks.transfer.adapter import ADAPTERS, TransferAdapter

__all__ = ["MultibranchMassAdapter", "STATE_VERSION"]

#: Version of :meth:`MultibranchMassAdapter.state` (bumped when its keys change).
STATE_VERSION = 1
PHASES = ("source", "finetune", "target_only")
#: Features per branch of a feature-only ResNet-18.
RESNET18_FEATURES = 512


@ADAPTERS.register("multibranch_mass")
class MultibranchMassAdapter(TransferAdapter):
    """The ``cnn`` of ``multibranch_mass`` for the transfer protocol; see the module docstring."""

    task_name = "multibranch_mass"
    model_name = "cnn"  # the task's method whose network this is (the rows' "model")
    head_prefixes = ("net.head",)
    feature_module = "net.head.0"

    def __init__(self, source: Task):
        if source.name != self.task_name:
            raise Sim2obsValueError(f"the {self.task_name} adapter needs a {self.task_name} task", value=source.name,
                                    allowed=[self.task_name])
        super().__init__(source)
        cfg = source.config
        if not cfg.joint:
            raise ConfigError(f"task.{self.task_name}.joint", "the transfer protocol trains one network for the "
                              "three targets; set joint: true", value=cfg.joint)
        #: the cnn's branches, in the task's order (as its ``cnn`` method builds them)
        self.inputs = tuple(b for b in BRANCHES if b in cfg.inputs)
        self.px = int(cfg.image_resolution)
        self.scalings: dict[str, UnitScaling] | None = None
        self.target_mean: np.ndarray | None = None
        self.target_std: np.ndarray | None = None
        self._arrays: dict[tuple[str, str], tuple[dict[str, np.ndarray], np.ndarray]] = {}

    # -- preprocessing --------------------------------------------------------------------
    def fit(self) -> None:
        """The task's per-branch scalings (:meth:`MultibranchMassTask.scaling`) and the target mean
        and standard deviation (a zero deviation becomes 1), all on the source training split."""
        src = self.source
        self.scalings = {b: src.scaling(b, self.px) for b in self.inputs}
        y = src.labels("train")
        mu, sd = y.mean(axis=0), y.std(axis=0)
        self.target_mean, self.target_std = mu, np.where(sd > 0, sd, 1.0)
        self._arrays.clear()

    def state(self) -> dict[str, Any]:
        """``{"version", "task", "inputs", "image_resolution", "kinmask_channel", "scaling":
        {branch: UnitScaling fields}, "targets", "target_mean", "target_std" (dex), "source":
        content hash of the source set}``."""
        self._check_fitted()
        return {"version": STATE_VERSION, "task": self.task_name, "inputs": list(self.inputs),
                "image_resolution": self.px, "kinmask_channel": bool(self.source.config.kinmask_channel),
                "scaling": {b: asdict(s) for b, s in self.scalings.items()},
                "targets": list(self.source.targets), "target_mean": [float(v) for v in self.target_mean],
                "target_std": [float(v) for v in self.target_std],
                "source": self.source.galaxy_set.content_hash}

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state`; refused (naming the key) when it was fitted for other inputs,
        resolution, targets or another state version than the source task's config."""
        want = {"version": STATE_VERSION, "task": self.task_name, "inputs": list(self.inputs),
                "image_resolution": self.px, "kinmask_channel": bool(self.source.config.kinmask_channel),
                "targets": list(self.source.targets)}
        for key, value in want.items():
            if key not in state or state[key] != value:
                raise ConfigError(f"transfer adapter state.{key}", "does not match the source task's config",
                                  value=state.get(key), allowed=value)
        scaling = state.get("scaling") or {}
        if sorted(scaling) != sorted(self.inputs):
            raise ConfigError("transfer adapter state.scaling", "needs one scaling per input branch",
                              value=sorted(scaling), allowed=list(self.inputs))
        mu, sd = (np.asarray(state.get(k, []), dtype=np.float64) for k in ("target_mean", "target_std"))
        if mu.shape != (len(self.source.targets),) or sd.shape != mu.shape or not (sd > 0).all():
            raise ConfigError("transfer adapter state.target_std", "one mean and one positive deviation per target",
                              value=[mu.tolist(), sd.tolist()])
        self.scalings = {b: UnitScaling(**scaling[b]) for b in self.inputs}
        self.target_mean, self.target_std = mu, sd
        self._arrays.clear()

    def feature_dim(self) -> int:
        """Width of the penultimate feature vector (the input of :attr:`feature_module`):
        512 features per ResNet-18 branch."""
        return RESNET18_FEATURES * len(self.inputs)

    # -- data -----------------------------------------------------------------------------
    def dataset(self, task: Task, split: str, ids: np.ndarray | None = None, labelled: bool = True):
        """``TensorDictDataset`` of ``task``'s ``split`` (rows ``ids`` in the given order; None:
        all): inputs ``{branch: (N, C, H, W)}`` float32 scaled with the source scalings, targets
        ``(N, 3)`` standardised with the source statistics, or ``(N, 0)`` with ``labelled=False``
        (no label is read then)."""
        x, all_ids = self._scaled(task, split)
        rows = _rows(all_ids, ids, task, split)
        inputs = {b: torch.from_numpy(x[b][rows]) for b in self.inputs}
        if labelled:
            y = (task.labels(split)[rows] - self.target_mean) / self.target_std
            target = torch.from_numpy(y.astype(np.float32))
        else:
            target = torch.zeros((len(rows), 0), dtype=torch.float32)
        return TensorDictDataset(inputs, target, torch.from_numpy(all_ids[rows].astype(np.int64)))

    def _scaled(self, task: Task, split: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """``({branch: (N, C, H, W)}, ids)`` of a whole split, scaled with the source fit (cached
        per set and split)."""
        self._check_fitted()
        self._check_task(task)
        key = (task.galaxy_set.content_hash, split)
        if key not in self._arrays:
            out = {}
            for b in self.inputs:
                # the task's own raw pixels and valid-pixel mask of the branch
                raw, valid = task._raw(b, self.px, split)  # noqa: SLF001 (see the report: make public)
                x = self.scalings[b].apply(raw, valid)[:, None]
                if b in KIN_BRANCHES and self.source.config.kinmask_channel:
                    x = np.concatenate([x, valid[:, None].astype(np.float32)], axis=1)
                out[b] = np.ascontiguousarray(x, dtype=np.float32)
            self._arrays[key] = (out, np.asarray(task.split_ids(split), dtype=np.int64))
        return self._arrays[key]

    def _check_fitted(self) -> None:
        if self.scalings is None:
            raise Sim2obsValueError("the adapter is not fitted: call fit() or load_state() first")

    def _check_task(self, task: Task) -> None:
        """A target task must be the same task with the same network inputs (``task.spec()``)."""
        if task.name != self.task_name:
            raise Sim2obsValueError(f"the {self.task_name} adapter cannot prepare task {task.name!r}",
                                    value=task.name, allowed=[self.task_name])
        mine, theirs = self.source.spec(), task.spec()
        for field in ("input_shapes", "n_targets", "n_outputs"):
            a, b = getattr(mine, field), getattr(theirs, field)
            if (dict(a) if field == "input_shapes" else a) != (dict(b) if field == "input_shapes" else b):
                raise ConfigError(f"task.{self.task_name} spec.{field}", "the target set's network inputs differ "
                                  "from the source's", value=b, allowed=a)

    # -- network --------------------------------------------------------------------------
    def model_config(self) -> dict[str, Any]:
        """The ``cnn``'s Hydra model config for the adapter's inputs and the three targets."""
        return self.source._model_config(self.inputs, len(self.source.targets))  # noqa: SLF001

    def build_model(self, seed: int) -> nn.Module:
        """``BranchInputs(multi-branch ResNet-18)`` as the ``cnn`` builds it, initialised from ``seed``."""
        seed_everything(int(seed))
        return BranchInputs(build_model(self.model_config()), self.inputs)

    def loss(self) -> Callable:
        """MSE on the standardised targets (the ``cnn``'s loss)."""
        return nn.MSELoss()

    def trainer_config(self, phase: str, overrides: Mapping[str, Any] | None = None):
        """The task's ``trainer`` with ``overrides`` (the study's, e.g. the reduced fine-tuning
        learning rate: ``transfer.finetune.lr_factor`` is applied by the protocol) merged on top,
        for every phase; fp32 where an input is <= 16 px (the engine's CPU bf16 guard, as the
        ``cnn`` does)."""
        if phase not in PHASES:
            raise Sim2obsValueError("unknown training phase", value=phase, allowed=list(PHASES))
        tcfg = self.source.merged_trainer_config(dict(overrides) if overrides else None,
                                                 model_target=self.model_config().get("_target_"))
        sides = [shape[-1] for shape in self.source.spec().input_shapes.values()]
        tcfg, _ = small_input_precision(tcfg, int(min(sides)))
        return tcfg

    # -- predictions ----------------------------------------------------------------------
    def predict(self, task: Task, model, split: str, seed: int) -> Predictions:
        """``(N, 3)`` predictions (dex) of ``task``'s ``split`` in split order, de-standardised with
        the source statistics; no label of the split is read. ``seed`` is unused: the network is
        deterministic in eval mode."""
        data = self.dataset(task, split, labelled=False)
        out = Trainer(replace(self.trainer_config("source"), progress=False)).predict(model, data)
        values = out["predictions"].astype(np.float64) * self.target_std + self.target_mean
        return Predictions(ids=out["ids"], values=values, targets=task.targets)


def _rows(all_ids: np.ndarray, ids: np.ndarray | None, task: Task, split: str) -> np.ndarray:
    """Positions of ``ids`` (object ids, in the given order) in ``all_ids``; all rows when None.
    Unknown or repeated ids are refused, naming some."""
    if ids is None:
        return np.arange(len(all_ids))
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise Sim2obsValueError(f"ids repeated in the subset of {task.name} split {split!r}",
                                value=uniq[counts > 1][:5].tolist())
    order = np.argsort(all_ids, kind="stable")
    pos = np.minimum(np.searchsorted(all_ids, ids, sorter=order), max(len(all_ids) - 1, 0))
    rows = order[pos] if len(all_ids) else np.empty(0, np.int64)
    bad = ids[all_ids[rows] != ids] if len(all_ids) else ids
    if len(bad):
        raise Sim2obsValueError(f"{len(bad)} id(s) are not in {task.name} split {split!r} "
                                f"({task.galaxy_set.path})", value=bad[:5].tolist())
    return rows
