"""What the transfer protocol needs from a task: one :class:`TransferAdapter` per task.

The protocol (``sim2obs.tasks.transfer.protocol``) is the same for every task: train a network on
the source set, then evaluate it zero-shot on the target set, fine-tune it on ``k`` labelled target
objects with several strategies, train on the same ``k`` objects from scratch, and align its
features with unlabelled target images. What differs between tasks is how a network is built,
how its inputs and labels are preprocessed, what loss it trains with and how its predictions
become :class:`~sim2obs.predictions.Predictions` the task scores. An adapter says exactly that.

Rules every adapter keeps (the tests check them):

- **Preprocessing is fitted on the source training split only** (:meth:`fit`) and applied
  unchanged to every split of every set, as a deployed model would be: a target set never refits a
  scaler, a label coder or an image stretch.
- **Target labels come only from the ``k`` training ids the protocol passes.** The evaluation
  split's labels are never read (``Task.labels`` refuses them); predictions are scored by the
  target task's own ``Task.evaluate``.
- The adapter's state after :meth:`fit` is plain JSON (:meth:`state` / :meth:`load_state`), so a
  resumed study rebuilds the same preprocessing without refitting.
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np

from sim2obs.predictions import Predictions
from sim2obs.registry import Registry
from sim2obs.tasks.base import Task

ADAPTERS: "Registry[type[TransferAdapter]]" = Registry("transfer adapter")


class TransferAdapter:
    """How the transfer protocol trains and scores one task's network.

    Subclasses register under the task's name (``@ADAPTERS.register("bt_posterior")``) and set
    :attr:`head_prefixes` (parameter-name prefixes of the layers a head-only fine-tuning trains,
    e.g. ``("head",)``) and :attr:`feature_module` (the dotted name of the module whose *input*
    is the penultimate feature vector, e.g. ``"head.0"``; the protocol hooks it for the alignment
    loss and the shift diagnostics)."""

    task_name: ClassVar[str]
    head_prefixes: ClassVar[tuple[str, ...]]
    feature_module: ClassVar[str]

    def __init__(self, source: Task):
        """``source``: the task bound to the source set (its config is the study's task config)."""
        self.source = source

    # -- preprocessing --------------------------------------------------------------------
    def fit(self) -> None:
        """Fit every scaler, coder and stretch on the source task's training split."""
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        """The fitted preprocessing as plain JSON data."""
        raise NotImplementedError

    def load_state(self, state: Mapping[str, Any]) -> None:
        raise NotImplementedError

    # -- data -----------------------------------------------------------------------------
    def dataset(self, task: Task, split: str, ids: np.ndarray | None = None, labelled: bool = True):
        """A dataset in the engine's contract (``TensorDictDataset``: ``{"inputs", "target", "id"}``)
        of ``task``'s ``split`` restricted to ``ids`` (None: all), preprocessed with the source
        fit. ``labelled=False`` gives ``(N, 0)`` targets and never reads labels (unlabelled target
        images for alignment, or the evaluation split)."""
        raise NotImplementedError

    # -- network --------------------------------------------------------------------------
    def build_model(self, seed: int):
        """A freshly initialised network (``torch.nn.Module``), seeded."""
        raise NotImplementedError

    def loss(self) -> Callable:
        """The training loss ``loss(output, target) -> scalar tensor``."""
        raise NotImplementedError

    def trainer_config(self, phase: str, overrides: Mapping[str, Any] | None = None):
        """The :class:`~sim2obs.models.engine.TrainerConfig` of ``phase``: ``"source"`` (the
        task's own schedule), ``"finetune"`` or ``"target_only"``; ``overrides`` (from the study
        config) are merged on top."""
        raise NotImplementedError

    # -- predictions ----------------------------------------------------------------------
    def predict(self, task: Task, model, split: str, seed: int) -> Predictions:
        """Predictions of ``task``'s ``split`` in the form ``task.evaluate`` scores (point values,
        and σ or posterior samples where the task has them)."""
        raise NotImplementedError

    def recalibrate(self, task: Task, model, ids: np.ndarray, seed: int) -> dict[str, Any] | None:
        """Optional post-hoc recalibration on the ``k`` labelled target objects ``ids`` (e.g. a
        per-target posterior width scale); returns the recorded factors, or None where the task
        has nothing to recalibrate. Applied by later :meth:`predict` calls of this model."""
        return None

    @property
    def targets(self) -> Sequence[str]:
        return self.source.targets
