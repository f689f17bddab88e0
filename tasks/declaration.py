"""What a task is made of, as plain data: its metadata (:class:`TaskMetadata`), the settings
every task has (:class:`TaskConfig`), the held-out truth (:class:`Truth`), a split as models
receive it (:class:`TaskSplit`), and its methods (:class:`Method`, :class:`MethodOutput`).
:class:`~sim2obs.tasks.base.Task` uses them; they are re-exported there."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from sim2obs.errors import Sim2obsValueError
from sim2obs.predictions import Predictions

if TYPE_CHECKING:  # annotations only: base imports this module
    from sim2obs.tasks.base import Task


# --------------------------------------------------------------------------------------------
# Metadata and config
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PaperResult:
    """A number the paper reports, printed beside ours for reference (the papers used real
    data, so ours are not expected to match)."""

    value: float
    note: str = ""
    metric: str | None = None  # when the paper reports another quantity than the main score


@dataclass(frozen=True)
class Observables:
    """The catalogue columns a task's methods may read (:meth:`Task.features`): what a survey
    measures (photometry, redshift, observing conditions, sizes measured from the images), never
    a generator's truth (masses, M/L, SFR, metallicity, B/T, structural parameters, ...).

    ``columns``: exact names; ``prefixes``: every column whose name starts with one of them
    (e.g. ``mag_`` for ``mag_g``, ``mag_r``, ...); ``exclude``: names refused although a prefix
    matches (e.g. ``mag_r`` where ``flux_r`` is a target). A task's targets and label columns
    are refused whatever is declared; ``id`` is always readable."""

    columns: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def allows(self, name: str) -> bool:
        """Whether column ``name`` is declared observable."""
        if name == "id":
            return True
        if name in self.exclude:
            return False
        return name in self.columns or any(name.startswith(p) for p in self.prefixes)

    def names(self) -> list[str]:
        """The declaration as text items: exact names, ``prefix*``, and ``-excluded``."""
        return [*self.columns, *(f"{p}*" for p in self.prefixes), *(f"-{e}" for e in self.exclude)]

    def __str__(self) -> str:
        return ", ".join(self.names()) or "none"


@dataclass(frozen=True)
class TaskMetadata:
    """What a task is. ``targets`` are catalogue columns (the model's outputs, in order);
    ``main_score`` is one of ``metrics`` (keys of :mod:`sim2obs.tasks.metrics`, or
    ``target/key`` for a per-target metric); ``paper`` maps method names to the paper's value
    of the main score; ``observables`` declares the catalogue columns methods may read
    (:class:`Observables`; the default declares none: :meth:`Task.features` then refuses every
    column)."""

    name: str
    version: str
    description: str
    citation: str
    inputs: tuple[str, ...]
    targets: tuple[str, ...]
    target_units: tuple[str, ...]
    main_score: str
    metrics: tuple[str, ...]
    higher_is_better: bool = False
    requires_posterior: bool = False
    paper: Mapping[str, PaperResult] = field(default_factory=dict)
    observables: Observables = Observables()

    def paper_row(self, method: str) -> dict | None:
        """The paper's number for ``method`` as a result row records it, or None."""
        ref = self.paper.get(method)
        return None if ref is None else {"value": ref.value, "note": ref.note, "metric": ref.metric}

    def __post_init__(self):
        if self.main_score not in self.metrics:
            raise Sim2obsValueError("main_score must be one of the task's metrics", value=self.main_score,
                                    allowed=list(self.metrics))
        if len(self.target_units) != len(self.targets):
            raise Sim2obsValueError("one unit per target", value=self.target_units)
        declared = [t for t in self.targets if self.observables.allows(t)]
        if declared:
            raise Sim2obsValueError(f"task {self.name}: targets are never observables (list them in "
                                    "Observables.exclude where a prefix matches them)", value=declared)


@dataclass
class TaskConfig:
    """Settings every task has. ``data``: generator overrides (``{"generator": "galsim",
    "n": 2000, ...}``) or a real set ``{"path": ..., "content_hash": ...}``; ``methods``: the
    methods to run (null: all); ``eval_split``: the held-out split the task scores;
    ``n_bootstrap``: resamples of the evaluated objects behind every recorded error, drawn with
    ``bootstrap_seed`` (not the training ``seed``: runs of every seed are scored on the same
    resamples, so their differences pair)."""

    data: dict[str, Any] = field(default_factory=dict)
    methods: list[str] | None = None
    eval_split: str = "test"
    seed: int = 0
    plots: bool = True
    n_bootstrap: int = 200
    bootstrap_seed: int = 0


@dataclass
class Truth:
    """Held-out truth of one split, aligned with :class:`Predictions` after :meth:`Task.align`.
    ``errors``: (N, T) catalogue uncertainties where the task has them; ``extra``: other
    catalogue columns a task's diagnostics need (e.g. stellar mass)."""

    ids: np.ndarray
    values: np.ndarray
    errors: np.ndarray | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def subset(self, order: np.ndarray) -> "Truth":
        """Rows ``order`` (an index array, repeats allowed) of every field."""
        return Truth(self.ids[order], self.values[order], None if self.errors is None else self.errors[order],
                     {k: np.asarray(v)[order] for k, v in self.extra.items()})


@dataclass
class TaskSplit:
    """One split of a task's data as its models receive it (:meth:`Task.get_split`; like WILDS'
    ``get_subset``).

    ``ids``: ``(N,)`` int64 object ids; ``inputs``: ``{name: array}``, images ``(N, C, H, W)``
    float32 preprocessed exactly as the task's networks get them (names and shapes:
    :meth:`Task.spec`), catalogue observables ``(N, F)`` float64 where a task has them;
    ``labels``: ``(N, T)`` float64 targets in ``targets`` order and units, or None for the
    evaluation split (held out; score predictions with :meth:`Task.evaluate`)."""

    task: str
    split: str
    ids: np.ndarray
    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None
    targets: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.ids)

    def torch_dataset(self, labels: np.ndarray | None = None):
        """A :class:`~sim2obs.models.engine.TensorDictDataset` of the image inputs (item:
        ``{"inputs": {name: (C, H, W)}, "target": (T,), "id": int, "index": i}``), the contract
        :class:`~sim2obs.models.engine.Trainer` takes. ``labels``: ``(N, T)`` to train on instead
        of :attr:`labels` (e.g. standardised); the evaluation split gets ``(N, 0)`` targets."""
        import torch

        from sim2obs.models.engine import TensorDictDataset

        y = self.labels if labels is None else np.asarray(labels)
        if y is None:
            y = np.zeros((len(self.ids), 0))
        if y.ndim == 1:
            y = y[:, None]
        if len(y) != len(self.ids):
            raise Sim2obsValueError(f"labels must have one row per object of split {self.split!r} "
                                    f"({len(self.ids)})", value=y.shape)
        x = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in self.inputs.items() if v.ndim == 4}
        return TensorDictDataset(x, torch.as_tensor(y, dtype=torch.float32),
                                 torch.as_tensor(self.ids, dtype=torch.int64))


# --------------------------------------------------------------------------------------------
# Methods
# --------------------------------------------------------------------------------------------
@dataclass
class MethodOutput:
    """What a method returns: predictions for the evaluation split, and what to record about it
    (``info``: e.g. ``model``, ``_target_``, ``n_parameters``, ``train_seconds``)."""

    predictions: Predictions
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Method:
    """A baseline or model of a task. ``run(task, workdir)`` trains on the task's training and
    validation data and predicts its evaluation split; ``config`` (plain data) identifies the
    method for resuming and for the leaderboard."""

    name: str
    kind: str  # "baseline" | "model"
    description: str
    run: Callable[["Task", Path], MethodOutput]
    config: dict[str, Any] = field(default_factory=dict)
    #: Its output does not depend on the task seed (e.g. a training-set mean): the leaderboard
    #: ranks it without the three seeds it asks of other methods.
    deterministic: bool = False
