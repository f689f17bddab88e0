"""Transfer studies on the leaderboard (issue 14): record a study folder, and verify it later.

A study folder (``<results>/transfer/<task>/<study>/``, written by ``sim2obs transfer``) holds
``transfer_results.json``: one row per point (model, source set, target set, strategy, k,
seed), each with its predictions file. :func:`record_transfer` trusts none of the row's
numbers: it checks each predictions file's sha256, rebuilds the task from the row's
``task_config`` on the set the row was scored on (``{path, content_hash}`` of the source set for
``domain == "source"`` rows, else of the target set), recomputes every metric with
``task.evaluate`` and refuses the whole study, naming the row, when any stored number differs
beyond rounding (the protocol scores the predictions file it saved, so a row's numbers are the
file's exactly; no float32 allowance). The board stores its own recomputed numbers.
Each metric's 1σ bootstrap error is recomputed too, on ``n_boot`` resamples drawn with
``n_boot_seed`` (the row's, when it states them: then an error that differs refuses the row as a
metric does; else the protocol's defaults, and the row's own errors are not used), and so is the
main score on every resample (``main_replicates``): runs of one target test set and seed scored on
the same resamples pair, so the board gives differences between strategies a paired error.
Nothing is written unless every row passes; re-recording a folder adds no rows.
:func:`verify_transfer` re-checks stored transfer runs (``leaderboard verify``). The board and
its page: :mod:`sim2obs.leaderboard.transfer_board`.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Mapping

import dataclasses

import numpy as np
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from sim2obs.errors import DataFormatError, Sim2obsError, Sim2obsValueError
from sim2obs.leaderboard.db import TransferMetric, TransferRun, utcnow
from sim2obs.leaderboard.ranking import model_key
from sim2obs.leaderboard.submission import check_hdf5
from sim2obs.predictions import Predictions
from sim2obs.provenance import file_sha256, git_commit
from sim2obs.tasks import TASKS
from sim2obs.tasks import metrics as M
from sim2obs.tasks.bootstrap import N_BOOTSTRAP, bootstrap_indices, replicate_metrics

RESULTS_FILE = "transfer_results.json"
#: Relative and absolute tolerance of a recomputed metric against the row's (JSON floats: the row
#: and the board score the same predictions file, so only JSON rounding may differ).
RTOL, ATOL = 1e-9, 1e-12
_FIELDS = {"task": str, "task_version": str, "study": str, "model": str, "source": dict, "target_name": str,
           "target": dict, "strategy": str, "k": int, "seed": int, "domain": str, "split": str, "main_score": str,
           "value": (int, float), "metrics": dict, "predictions": str, "predictions_sha256": str, "folder": str,
           "task_config": dict}


# -- recording -------------------------------------------------------------------------------
def read_results(study_dir: str | os.PathLike) -> list[dict]:
    """The rows of ``<study_dir>/transfer_results.json``, each checked for form (field, type)."""
    path = Path(study_dir) / RESULTS_FILE
    if not path.is_file():
        raise DataFormatError(path, None, "no transfer_results.json: not a transfer study folder")
    try:
        rows = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataFormatError(path, None, f"not JSON ({exc})") from None
    if not isinstance(rows, list) or not rows:
        raise DataFormatError(path, None, "must be a non-empty JSON list of rows")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataFormatError(path, f"[{i}]", "a row must be a JSON object")
        for key, kind in _FIELDS.items():
            value = row.get(key)
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise DataFormatError(path, f"[{i}].{key}", f"{row_label(i, row)}: missing or not a "
                                      f"{getattr(kind, '__name__', 'number')} (got {value!r:.80})")
        for side in ("source", "target"):
            for key in ("name", "content_hash", "path"):
                if not isinstance(row[side].get(key), str):
                    raise DataFormatError(path, f"[{i}].{side}.{key}", f"{row_label(i, row)}: missing")
        if row["domain"] not in ("source", "target"):
            raise DataFormatError(path, f"[{i}].domain", f"{row_label(i, row)}: must be 'source' or 'target', "
                                  f"got {row['domain']!r}")
        if row["k"] < 0:
            raise DataFormatError(path, f"[{i}].k", f"{row_label(i, row)}: k must be >= 0, got {row['k']}")
    return rows


def row_label(i: int, row: Mapping[str, Any]) -> str:
    """``row 5 (seed-1/hsc/finetune_full/k-30)``: how errors name a row."""
    where = row.get("folder") or "/".join([f"seed-{row.get('seed')}", str(row.get("target_name")),
                                           str(row.get("strategy")), f"k-{row.get('k')}"])
    return f"row {i} ({where})"


def scored_identity(row: Mapping[str, Any]) -> dict:
    """The ``{name, content_hash, path}`` of the set a row was scored on."""
    return row["source"] if row["domain"] == "source" else row["target"]


class TransferTasks:
    """Tasks rebuilt from a row's task config on the set it names (cached per config and set).
    A set is looked for at its recorded path, then relative to ``study_dir``, then by folder
    name under ``data_dir``; its content hash must be the recorded one."""

    def __init__(self, data_dir: str | os.PathLike | None = None):
        self.data_dir = Path(data_dir or os.environ.get("SIM2OBS_DATA", "sim2obs_data"))
        self._cache: dict[str, Any] = {}

    def locate(self, path: str, study_dir: str | os.PathLike | None = None) -> Path:
        p = Path(path)
        candidates = [p] + ([Path(study_dir) / p] if study_dir and not p.is_absolute() else []) + [
            self.data_dir / p.name]
        for c in candidates:
            if (c / "manifest.json").exists():
                return c
        raise DataFormatError(p, None, "the set is not on this machine (looked at "
                              + ", ".join(str(c) for c in candidates) + ")")

    def get(self, task_name: str, task_config: Mapping[str, Any], identity: Mapping[str, str],
            study_dir: str | os.PathLike | None = None):
        if task_name not in TASKS:
            raise Sim2obsValueError(f"unknown task {task_name!r}", value=task_name, allowed=sorted(TASKS.names()))
        cfg = {k: v for k, v in task_config.items() if k != "data"}
        key = json.dumps([task_name, cfg, identity["content_hash"], identity["path"], str(study_dir)],
                         sort_keys=True, default=str)
        if key not in self._cache:
            try:
                data = {"path": str(self.locate(identity["path"], study_dir)), "content_hash": identity["content_hash"]}
                task = TASKS.get(task_name)({**cfg, "data": data}, data_dir=self.data_dir)
                task.prepare(generate=False)  # refuses a set whose content hash is not the recorded one
                self._cache[key] = task
            except (Sim2obsError, OSError) as exc:
                self._cache[key] = exc
        built = self._cache[key]
        if isinstance(built, Exception):
            raise built
        return built


def _same(a: Any, b: Any, rtol: float = RTOL, atol: float = ATOL) -> bool:
    try:
        a, b = float(a), float(b)
    except (TypeError, ValueError):
        return False
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=rtol, abs_tol=atol)


def exact(key: str) -> tuple[float, float]:
    """``(rtol, atol)`` of every comparison of a row's number with the board's: exact up to JSON rounding."""
    return RTOL, ATOL


def metric_problems(stored: Mapping[str, Any], recomputed: Mapping[str, float], main_score: str,
                    main_value: Any, task, tol: Callable[[str], tuple[float, float]] | None = None) -> list[str]:
    """Every difference between a row's (or a record's) numbers and the recomputed metrics
    (``tol``: per-key tolerances, default exact up to rounding)."""
    tol = tol or exact
    out = [f"metric {k!r} = {stored[k]!r} is not one the task computes" for k in sorted(set(stored) - set(recomputed))]
    out += [f"metric {k!r} (recomputed {recomputed[k]:.6g}) is missing" for k in sorted(set(recomputed) - set(stored))]
    out += [f"metric {k!r}: stored {stored[k]!r}, recomputed {recomputed[k]!r}"
            for k in sorted(set(stored) & set(recomputed)) if not _same(stored[k], recomputed[k], *tol(k))]
    main = task.metadata.main_score
    if main_score != main:
        out.append(f"main_score: stored {main_score!r}, the task's is {main!r}")
    elif not _same(main_value, recomputed[main], *tol(main)):
        out.append(f"value: stored {main_value!r}, recomputed {main} = {recomputed[main]!r}")
    return out


def boot_params(row: Mapping[str, Any]) -> tuple[int, int, bool]:
    """``(n_boot, n_boot_seed, stated)``: the row's resamples, else the protocol's defaults."""
    n, seed = row.get("n_boot"), row.get("n_boot_seed")
    if isinstance(n, int) and isinstance(seed, int) and not isinstance(n, bool):
        return n, seed, True
    return N_BOOTSTRAP, 0, False


def score_with_errors(task, predictions: Predictions, split: str, n_boot: int,
                      seed: int) -> tuple[dict[str, float], dict[str, float], list[float] | None]:
    """Every metric of ``predictions`` on ``split``, each one's 1σ bootstrap error on ``n_boot``
    resamples drawn with ``seed`` (as the transfer protocol scores a point; {} when a resample
    leaves a metric undefined, as on a tiny test set) and the main score on every resample
    (``(n_boot,)``; None unless it is defined and finite on all of them: then nothing pairs with it)."""
    aligned, truth = task.align(predictions, split)
    metrics = task._score(aligned, truth)
    if aligned.samples is not None:  # sorted once; every resample's subset stays sorted
        aligned = dataclasses.replace(aligned, samples=M.sorted_samples(aligned.samples))
    idx = bootstrap_indices(len(truth.ids), n_boot, seed=seed)
    try:
        reps = replicate_metrics(task._score, aligned, truth, idx)
    except Sim2obsValueError:  # a resample leaves a metric undefined (tiny test set): no errors
        return metrics, {}, None
    main = reps.values.get(task.metadata.main_score)
    ok = main is not None and len(main) == n_boot and bool(np.isfinite(main).all())
    return metrics, reps.errors(), ([float(x) for x in main] if ok else None)


def error_problems(stated: Mapping[str, Any], errors: Mapping[str, float], tol) -> list[str]:
    out = [f"error of {k!r} = {stated[k]!r} is not one the task computes" for k in sorted(set(stated) - set(errors))]
    out += [f"error of {k!r} (recomputed {errors[k]:.6g}) is missing" for k in sorted(set(errors) - set(stated))]
    return out + [f"error of {k!r}: stated {stated[k]!r}, recomputed {errors[k]!r}"
                  for k in sorted(set(stated) & set(errors)) if not _same(stated[k], errors[k], *tol(k))]


def check_row(i: int, row: Mapping[str, Any], study_dir: Path, tasks: TransferTasks,
              results: Path) -> tuple[Any, Predictions, dict[str, float], Path, dict[str, float], list[float] | None]:
    """Check one row (predictions file and hash, task version, split, every number) and return
    ``(task, predictions, recomputed metrics, predictions file, recomputed errors, main score on
    every resample)``; refuses naming the row."""
    label = row_label(i, row)
    pred = (study_dir / row["folder"] / row["predictions"]).resolve()
    if not pred.is_relative_to(study_dir.resolve()):
        raise DataFormatError(results, f"[{i}].folder", f"{label}: the predictions file {pred} is outside the study")
    if not pred.is_file():
        raise DataFormatError(pred, None, f"{label}: no such predictions file")
    sha = file_sha256(pred)
    if sha != row["predictions_sha256"]:
        raise DataFormatError(pred, "sha256", f"{label}: the predictions file was changed after the study wrote it "
                              f"(sha256 {sha[:12]}…, the row says {row['predictions_sha256'][:12]}…)")
    try:
        task = tasks.get(row["task"], row["task_config"], scored_identity(row), study_dir)
    except Sim2obsError as exc:
        raise DataFormatError(results, f"[{i}]", f"{label}: its task cannot be rebuilt here: {exc}") from None
    if row["task_version"] != task.metadata.version:
        raise DataFormatError(results, f"[{i}].task_version", f"{label}: task {task.name} v{row['task_version']} "
                              f"in the row, this sim2obs has v{task.metadata.version}")
    if row["split"] != task.config.eval_split:
        raise DataFormatError(results, f"[{i}].split", f"{label}: scored on split {row['split']!r}; the board "
                              f"ranks the held-out split {task.config.eval_split!r}")
    check_hdf5(pred)
    predictions = Predictions.load(pred)
    n_boot, boot_seed, stated = boot_params(row)
    try:
        recomputed, errors, reps = score_with_errors(task, predictions, row["split"], n_boot, boot_seed)
    except Sim2obsError as exc:
        raise DataFormatError(pred, None, f"{label}: the predictions cannot be scored: {exc}") from None
    problems = metric_problems(row["metrics"], recomputed, row["main_score"], row["value"], task)
    if stated and isinstance(row.get("errors"), dict):
        problems += error_problems(row["errors"], errors, exact)
    if problems:
        raise DataFormatError(results, f"[{i}].metrics", f"{label}: refused, its numbers are not what its "
                              "predictions give: " + "; ".join(problems))
    return task, predictions, recomputed, pred, errors, reps


def _finite(d: Mapping[str, Any]) -> dict:
    return {k: (float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None) for k, v in d.items()}


def record_transfer(board, study_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None,
                    submitter: str = "") -> tuple[list[TransferRun], int]:
    """Check every row of the study in ``study_dir`` (see the module docstring) and record them
    in one transaction. Returns ``(records of the study's rows, number newly added)``."""
    import sim2obs

    study_dir = Path(study_dir)
    results = study_dir / RESULTS_FILE
    rows = read_results(study_dir)
    tasks = TransferTasks(data_dir)
    checked = [check_row(i, row, study_dir, tasks, results) for i, row in enumerate(rows)]
    commit, user = git_commit(), submitter or _user()
    new, existing, seen = [], [], set()
    for row, (task, predictions, metrics, pred, errors, reps) in zip(rows, checked):
        sha = row["predictions_sha256"]
        data_hash = scored_identity(row)["content_hash"]
        point = (row["task"], row["study"], row["target_name"], row["strategy"], row["k"], row["seed"], data_hash, sha)
        found = _find(board, row, data_hash, sha)
        if found is not None or point in seen:  # recorded before, or listed twice
            existing += [found] if found is not None else []
            continue
        seen.add(point)
        stored = board._store(pred, sha)
        cfg = {k: v for k, v in row["task_config"].items() if k != "data"}
        src, tgt = row["source"], row["target"]
        new.append(TransferRun(
            created_at=utcnow(), submitter=user, task=row["task"], task_version=row["task_version"],
            study=row["study"], model_name=row["model"], model_key=model_key(cfg, fallback=row["model"]), config=cfg,
            seed=row["seed"], strategy=row["strategy"], k=row["k"], domain=row["domain"], split=row["split"],
            target_name=row["target_name"], source_name=src["name"], source_content_hash=src["content_hash"],
            source_path=src["path"], target_data_name=tgt["name"], target_content_hash=tgt["content_hash"],
            target_path=tgt["path"], data_content_hash=data_hash, n_objects=len(predictions.ids),
            main_score=task.metadata.main_score, main_value=float(metrics[task.metadata.main_score]),
            errors=_finite(errors), n_bootstrap=boot_params(row)[0], bootstrap_seed=boot_params(row)[1],
            main_replicates=reps,
            predictions_sha256=sha, predictions_path=str(stored),
            study_path=str(study_dir.resolve()), folder=row["folder"], wall_seconds=row.get("wall_seconds"),
            sim2obs_version=sim2obs.__version__, git_commit=commit,
            metrics=[TransferMetric(key=k, value=float(v)) for k, v in metrics.items()]))
    if new:
        try:
            with board.Session.begin() as session:
                session.add_all(new)
        except IntegrityError:  # another process recorded the same study first
            again = [_find(board, row, scored_identity(row)["content_hash"], row["predictions_sha256"]) for row in rows]
            if any(r is None for r in again):
                raise
            return again, 0
    return existing + new, len(new)


def _find(board, row, data_hash: str, sha: str) -> TransferRun | None:
    with board.Session() as session:
        return session.scalars(select(TransferRun).where(
            TransferRun.task == row["task"], TransferRun.study == row["study"],
            TransferRun.target_name == row["target_name"], TransferRun.strategy == row["strategy"],
            TransferRun.k == row["k"], TransferRun.seed == row["seed"], TransferRun.data_content_hash == data_hash,
            TransferRun.predictions_sha256 == sha)).first()


def transfer_runs(board, task: str | None = None) -> list[TransferRun]:
    with board.Session() as session:
        q = select(TransferRun).order_by(TransferRun.id)
        if task is not None:
            q = q.where(TransferRun.task == task)
        return list(session.scalars(q))


def transfer_tasks(board) -> list[str]:
    with board.Session() as session:
        return sorted(set(session.scalars(select(TransferRun.task))))


def _user() -> str:
    from sim2obs.leaderboard.board import _user as user

    return user()


# -- verification ----------------------------------------------------------------------------
def check_transfer_run(run: TransferRun, tasks: TransferTasks | None):
    """:class:`~sim2obs.leaderboard.verify.RunCheck` of one stored transfer row: the stored file
    unchanged, then (``tasks`` given) every stored number recomputed on the recorded set."""
    from sim2obs.leaderboard.verify import DIFFER, NOT_CHECKED, OK, TAMPERED, RunCheck  # deferred: verify imports us

    label = f"{run.task}/{run.model_name} {run.study} {run.target_name}/{run.strategy}/k-{run.k}/seed-{run.seed}"
    check = RunCheck(run.id, label, OK, kind="transfer run")
    path = Path(run.predictions_path)
    if not path.is_file():
        check.status, check.problems = TAMPERED, [f"{path}: stored predictions are missing"]
    elif file_sha256(path) != run.predictions_sha256:
        check.status, check.problems = TAMPERED, [f"{path}: stored predictions were changed after recording"]
    elif tasks is None:
        check.status, check.problems = NOT_CHECKED, ["metrics not recomputed (--hashes-only)"]
    if check.status != OK or tasks is None:
        return check
    src = {"name": run.source_name, "content_hash": run.source_content_hash, "path": run.source_path}
    tgt = {"name": run.target_data_name, "content_hash": run.target_content_hash, "path": run.target_path}
    identity = src if run.domain == "source" else tgt
    try:
        task = tasks.get(run.task, run.config, identity, run.study_path)
        predictions = Predictions.load(path)
        if run.n_bootstrap is None:  # recorded before the board recomputed errors: none to check
            check.recomputed, errors, reps = task.evaluate(predictions, run.split), None, None
        else:
            check.recomputed, errors, reps = score_with_errors(task, predictions, run.split, run.n_bootstrap,
                                                               run.bootstrap_seed or 0)
    except Sim2obsError as exc:
        check.status, check.problems = NOT_CHECKED, [str(exc)]
        return check
    problems = metric_problems(run.metric_dict(), check.recomputed, run.main_score, run.main_value, task)
    if errors is not None:
        problems += error_problems(run.errors or {}, errors, exact)
    stored_reps = getattr(run, "main_replicates", None)
    if errors is not None and stored_reps is not None and (
            reps is None or len(reps) != len(stored_reps) or not all(map(_same, stored_reps, reps))):
        problems.append(f"main_replicates: the stored main score on the {run.n_bootstrap} resamples is not the "
                        "recomputed one")
    if run.n_objects != len(predictions.ids):
        problems.append(f"n_objects: stored {run.n_objects}, the stored predictions hold {len(predictions.ids)}")
    if run.task_version != task.metadata.version:
        problems.append(f"task_version: stored {run.task_version}, this sim2obs has {task.metadata.version}")
    check.status, check.problems = (DIFFER, problems) if problems else (OK, [])
    return check


def verify_transfer(board, data_dir=None, task: str | None = None, hashes_only: bool = False,
                    log: Callable[[str], None] = print) -> list:
    """Check every transfer run of ``board`` (one line logged per run)."""
    tasks = None if hashes_only else TransferTasks(data_dir)
    checks = []
    for run in transfer_runs(board, task):
        checks.append(check_transfer_run(run, tasks))
        log(checks[-1].line())
    return checks


__all__ = ["record_transfer", "read_results", "row_label", "transfer_runs", "transfer_tasks", "verify_transfer",
           "check_transfer_run", "TransferTasks", "score_with_errors", "exact", "RESULTS_FILE"]
