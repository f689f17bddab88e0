"""``sim2obs leaderboard verify``: every stored number checked again, each run on its own.

For every run of the board (and every transfer run, :mod:`sim2obs.leaderboard.transfer`):

1. the stored predictions exist and their sha256 is the recorded one (tamper detection);
2. the run's task is rebuilt from its recorded task config, on this machine's copy of the data
   whose content hash the run recorded;
3. every metric is recomputed by the task's own ``evaluate`` and compared with every number the
   run stores: each metric row (none missing, none extra), ``main_score`` (the task's),
   ``main_value`` (the main score's recomputed value) and ``n_objects``; and each metric's
   bootstrap error, recomputed on the task's resamples (``Task._replicates``), with the
   resamples' count and seed and the main score on every resample.

A run that cannot be checked (no task config recorded, task unknown, data not on this machine,
or data whose content hash is not the recorded one) is reported as NOT CHECKED, with the reason,
and counts as a failure: ``verify`` exits 0 only when every run was recomputed and agreed. A
failure of one run never switches checking off for another (tasks are cached per config, but the
data hash is compared per run).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from sim2obs.errors import DataFormatError, Sim2obsError, Sim2obsValueError
from sim2obs.leaderboard.transfer import verify_transfer
from sim2obs.predictions import Predictions
from sim2obs.provenance import file_sha256

#: Relative and absolute tolerance of a recomputed number against the stored one (stored as
#: 64-bit floats; the recomputation is deterministic, so only rounding may differ).
RTOL, ATOL = 1e-9, 1e-12

OK, DIFFER, NOT_CHECKED, TAMPERED = "ok", "DIFFER", "NOT CHECKED", "TAMPERED"


@dataclass
class RunCheck:
    """The outcome for one run: ``status`` is one of ``ok``, ``DIFFER`` (recomputed numbers
    disagree with stored ones), ``NOT CHECKED`` (could not recompute), ``TAMPERED`` (stored file
    missing or changed); ``problems`` says what and where."""

    run_id: int
    label: str
    status: str
    problems: list[str] = field(default_factory=list)
    recomputed: dict[str, float] | None = None
    kind: str = "run"  # "run" | "transfer run" (a point of a transfer study)

    @property
    def ok(self) -> bool:
        return self.status == OK

    def line(self) -> str:
        if self.ok:
            return f"{self.kind} #{self.run_id} {self.label}: hash ok, every stored number recomputed equal"
        return f"{self.kind} #{self.run_id} {self.label}: {self.status}: " + "; ".join(self.problems)


def _close(a: float, b: float) -> bool:
    if a is None or b is None:
        return False
    a, b = float(a), float(b)
    if math.isnan(a) or math.isnan(b):
        return False
    return math.isclose(a, b, rel_tol=RTOL, abs_tol=ATOL)


def compare_numbers(run, task, recomputed: Mapping[str, float], predictions: Predictions | None = None,
                    scored=None) -> list[str]:
    """Every difference between the numbers ``run`` stores and ``recomputed`` (the task's
    metrics from the stored predictions) and, given ``scored`` (a
    :class:`~sim2obs.leaderboard.board.Scored`), its bootstrap numbers; [] when they all agree."""
    problems = compare_errors(run, scored) if scored is not None else []
    stored = run.metric_dict()
    for key in sorted(set(stored) - set(recomputed)):
        problems.append(f"stored metric {key!r} = {stored[key]!r} is not one the task computes")
    for key in sorted(set(recomputed) - set(stored)):
        problems.append(f"metric {key!r} (recomputed {recomputed[key]:.6g}) is missing from the record")
    for key in sorted(set(stored) & set(recomputed)):
        if not _close(stored[key], recomputed[key]):
            problems.append(f"metric {key!r}: stored {stored[key]!r}, recomputed {recomputed[key]!r}")
    main = task.metadata.main_score
    if run.main_score != main:
        problems.append(f"main_score: stored {run.main_score!r}, the task's is {main!r}")
    if main in recomputed and not _close(run.main_value, recomputed[main]):
        problems.append(f"main_value: stored {run.main_value!r}, recomputed {main} = {recomputed[main]!r}")
    n_objects = getattr(run, "n_objects", None)
    if predictions is not None and n_objects is not None and int(n_objects) != len(predictions.ids):
        problems.append(f"n_objects: stored {n_objects}, the stored predictions hold {len(predictions.ids)}")
    return problems


def compare_errors(run, scored) -> list[str]:
    """Every difference between a run's stored bootstrap numbers (each metric's error, the
    resamples' count and seed, the main score on every resample) and the board's recomputation.
    A run recorded before the board kept errors (no ``n_bootstrap``, no error) has none to check."""
    stored = run.error_dict() if hasattr(run, "error_dict") else {}
    n_boot, reps = getattr(run, "n_bootstrap", None), getattr(run, "main_replicates", None)
    if n_boot is None and not stored and reps is None:
        return []
    problems = []
    if n_boot != scored.n_bootstrap:
        problems.append(f"n_bootstrap: stored {n_boot}, the task's evaluation uses {scored.n_bootstrap}")
    if getattr(run, "bootstrap_seed", None) != scored.seed:
        problems.append(f"bootstrap_seed: stored {getattr(run, 'bootstrap_seed', None)}, the task's is {scored.seed}")
    for key in sorted(set(stored) - set(scored.errors)):
        problems.append(f"error of {key!r} = {stored[key]!r} is not one the board computes")
    for key in sorted(set(scored.errors) - set(stored)):
        problems.append(f"error of {key!r} (recomputed {scored.errors[key]:.6g}) is missing from the record")
    for key in sorted(set(stored) & set(scored.errors)):
        if not _close(stored[key], scored.errors[key]):
            problems.append(f"error of {key!r}: stored {stored[key]!r}, recomputed {scored.errors[key]!r}")
    want = scored.main_replicates
    if (reps is None) != (want is None) or (want is not None and (
            len(reps) != len(want) or not all(_close(a, b) for a, b in zip(reps, want)))):
        problems.append(f"main_replicates: the stored main score on the {scored.n_bootstrap} resamples is not the "
                        "recomputed one")
    return problems


class TaskRebuilder:
    """Rebuild a run's task from its recorded task config on the data in ``data_dir``. Built
    tasks (and the reason a config cannot be built) are cached per (task, config); the data's
    content hash is compared with each run's own recorded hash every time."""

    def __init__(self, data_dir: str | os.PathLike | None):
        self.data_dir = data_dir
        self._cache: dict[str, Any] = {}

    def __call__(self, run):
        """The task of ``run``; raises :class:`Sim2obsError` saying why it cannot be rebuilt."""
        from sim2obs.tasks import TASKS

        cfg = (run.config or {}).get("task_config")
        if cfg is None:
            raise Sim2obsValueError("the run was recorded without its task config: its task cannot be rebuilt",
                                    value=sorted(run.config or {}))
        if run.task not in TASKS:
            raise Sim2obsValueError(f"unknown task {run.task!r}", value=run.task, allowed=sorted(TASKS.names()))
        key = json.dumps([run.task, cfg], sort_keys=True, default=str)
        if key not in self._cache:
            try:
                task = TASKS.get(run.task)(cfg, data_dir=self.data_dir)
                task.prepare(generate=False)
                self._cache[key] = task
            except (Sim2obsError, OSError) as exc:
                self._cache[key] = exc
        built = self._cache[key]
        if isinstance(built, Exception):
            raise DataFormatError(Path(str(self.data_dir)), None,
                                  f"the data of task {run.task} is not usable here ({built})")
        here = built.galaxy_set.content_hash
        if here != run.data_content_hash:
            raise DataFormatError(built.galaxy_set.path, "content_hash",
                                  f"the run recorded data hash {run.data_content_hash[:16]}…, the data here is "
                                  f"{here[:16]}…: its metrics cannot be recomputed on this data")
        return built


def check_run(board, run, rebuild: Callable[[Any], Any] | None) -> RunCheck:
    """Check one run (see the module docstring); ``rebuild=None`` checks the stored file only."""
    label = f"{run.task}/{run.model_name}"
    try:
        board.verify(run, None)  # the stored file: present, unchanged
    except Sim2obsError as exc:
        return RunCheck(run.id, label, TAMPERED, [str(exc)])
    if rebuild is None:
        return RunCheck(run.id, label, NOT_CHECKED, ["metrics not recomputed (--hashes-only)"])
    try:
        task = rebuild(run)
    except Sim2obsError as exc:
        return RunCheck(run.id, label, NOT_CHECKED, [str(exc)])
    try:
        result = board.verify(run, task)
    except Sim2obsError as exc:  # the stored predictions no longer fit the task's split
        return RunCheck(run.id, label, DIFFER, [f"the stored predictions cannot be scored again: {exc}"])
    if result.get("recomputed") is None:
        return RunCheck(run.id, label, NOT_CHECKED, ["no metric was recomputed"])
    problems = list(result.get("mismatches") or ([] if result["metrics_ok"] else ["recomputed metrics differ"]))
    return RunCheck(run.id, label, OK if not problems else DIFFER, problems, result["recomputed"])


def verify_board(board, data_dir: str | os.PathLike | None = None, task: str | None = None,
                 hashes_only: bool = False, log: Callable[[str], None] = print) -> list[RunCheck]:
    """Check every run of ``board`` (of ``task`` only, if given), logging one line per run and
    a summary; returns the checks (all ``ok`` only when every run was recomputed and agreed)."""
    rebuild = None if hashes_only else TaskRebuilder(data_dir)
    checks = []
    for run in board.runs(task):
        check = check_run(board, run, rebuild)
        log(check.line())
        checks.append(check)
    checks += verify_transfer(board, data_dir, task, hashes_only, log)
    n = len(checks)
    if hashes_only:
        unchanged = sum(c.status != TAMPERED for c in checks)
        log(f"{unchanged}/{n} stored files unchanged; metrics NOT recomputed (--hashes-only)")
        return checks
    good = sum(c.ok for c in checks)
    counts = {s: sum(c.status == s for c in checks) for s in (DIFFER, NOT_CHECKED, TAMPERED)}
    tail = ", ".join(f"{v} {k.lower()}" for k, v in counts.items() if v)
    n_transfer = sum(c.kind == "transfer run" for c in checks)
    what = f"runs ({n_transfer} of them transfer runs)" if n_transfer else "runs"
    log(f"{good}/{n} {what} verified" + (f" ({tail})" if tail else ""))
    return checks
