"""The leaderboard: verified run records, submissions, ranking.

Every number on the board is computed here, by the task's own ``evaluate``, from a stored copy
of the predictions and the held-out truth; nothing a submitter reports is trusted (each
metric's 1σ bootstrap error too, on the task's own resamples: :func:`score`). Each record
pins the data (content hash), the code (sim2obs version, git commit, package versions) and the
configuration (full resolved config and its hash). Stored predictions are content-addressed
(``<store>/predictions/<sha256>.h5``); :meth:`Leaderboard.verify` detects a file changed after
recording and recomputes the metrics.
"""
from __future__ import annotations

import os
import platform
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from sim2obs.atomic import atomic_write
from sim2obs.errors import DataFormatError, Sim2obsValueError
from sim2obs.leaderboard.db import DEFAULT_DB_NAME, Metric, Run, connect, default_url, utcnow
from sim2obs.provenance import file_sha256, git_commit, package_versions, stable_hash
from sim2obs.predictions import Predictions
from sim2obs.tasks.base import Task

#: A ranked entry needs at least this many seeds (as WILDS asks).
MIN_SEEDS_RANKED = 3


def hardware() -> dict[str, Any]:
    """CPU model and count, and the GPU model when CUDA is available."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    out: dict[str, Any] = {"cpu": cpu, "cpu_count": os.cpu_count(), "platform": platform.platform()}
    try:
        import torch

        if torch.cuda.is_available():
            out["gpu"] = torch.cuda.get_device_name(0)
            out["gpu_count"] = torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - hardware description is best effort
        pass
    return out


@dataclass
class Scored:
    """What the board computes from a run's predictions: every metric, each one's 1σ bootstrap
    error (the task's own resamples, :meth:`Task._replicates`: ``n_bootstrap`` resamples drawn
    with ``seed``, the same for every method of the task on this test set) and the main score
    on every resample (``main_replicates``, (n_bootstrap,); it pairs differences between runs)."""

    metrics: dict[str, float]
    errors: dict[str, float]
    main_replicates: list[float] | None  # None: a resample's metrics are undefined (see :func:`score`)
    n_bootstrap: int
    seed: int


def score(task: Task, predictions: Predictions, split: str) -> Scored:
    """Align ``predictions`` with ``split``'s held-out truth (refusing anything that does not
    match it) and compute every metric with its bootstrap error. On a tiny test set a resample
    can leave a metric undefined (e.g. every draw the same object: no spread): the task leaves
    such resamples out (``main_replicates`` is then shorter than ``n_bootstrap`` and pairs with
    nothing), or records no errors when too few remain (``errors == {}``); a recomputation
    reproduces either."""
    aligned, truth = task.align(predictions, split)
    metrics = task._score(aligned, truth)
    try:
        replicates = task._replicates(aligned, truth)
    except Sim2obsValueError:
        errors, reps = {}, None
    else:
        errors, reps = replicates.errors(), replicates.values.get(task.metadata.main_score)
    if reps is not None and not np.isfinite(reps).all():  # not storable as JSON, nothing to pair
        reps = None
    return Scored(metrics, errors, None if reps is None else [float(x) for x in reps],
                  int(task.config.n_bootstrap), int(task.config.bootstrap_seed))


#: ``Task.run`` states the bootstrap errors of its float64 posterior samples, then saves them as
#: float32 (``Predictions.save``): the board's errors from the file agree only to float32 precision.
#: Stated errors of a file with samples are compared at this relative tolerance, and at this fraction
#: of the largest |sample| of the metric's target in absolute terms (keys naming no target, coverages: of 1).
#: (Transfer rows need none: the protocol scores the file it saved.)
F32_TOL = 1e-5


def float32_tolerances(predictions: Predictions | None):
    """``key -> (rtol, atol)`` for a stated error against the board's: exact up to rounding unless the
    file holds (float32) posterior samples (:data:`F32_TOL`)."""
    from sim2obs.leaderboard.transfer import ATOL, RTOL  # deferred: transfer imports this module

    if predictions is None or predictions.samples is None:
        return lambda key: (RTOL, ATOL)
    scales = {t: float(np.nanmax(np.abs(predictions.samples[..., j]))) for j, t in enumerate(predictions.targets)}

    def tol(key: str) -> tuple[float, float]:
        parts = key.split("/")
        scale = 1.0 if parts[-1].startswith("coverage") else max([scales[p] for p in parts if p in scales] or [1.0])
        return F32_TOL, F32_TOL * max(scale, 1.0)

    return tol


def stated_error_problems(stated: Mapping[str, Any], scored: Scored, predictions: Predictions) -> list[str]:
    """Every bootstrap error a submitter stated that is not the board's recomputation (within
    rounding, or float32 precision for posterior samples: :func:`float32_tolerances`)."""
    from sim2obs.leaderboard.transfer import _same  # deferred: transfer imports this module

    tol = float32_tolerances(predictions)
    extra = sorted(set(stated) - set(scored.errors))
    out = [f"error of {k!r} = {stated[k]!r} is not one the board computes" for k in extra]
    out += [f"error of {k!r}: stated {stated[k]!r}, recomputed {scored.errors[k]!r}"
            for k in sorted(set(stated) & set(scored.errors)) if not _same(stated[k], scored.errors[k], *tol(k))]
    return out


def data_kind(task: Task) -> str:
    """``sim`` for a generated set, ``real`` for a set built from survey data."""
    return "real" if "path" in task.config.data and task.galaxy_set.provenance.get("generator") is None else "sim"


@dataclass
class RunInfo:
    """What the submitter states about a run (everything else is measured or recomputed)."""

    model_name: str
    model_target: str | None = None
    model_version: str | None = None
    n_parameters: int | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    seed: int | None = None
    train_seconds: float | None = None
    submitter: str = ""
    #: The method's output does not depend on its seed (ranked without three seeds).
    deterministic: bool = False
    #: 1σ bootstrap errors the submitter computed ({metric: error}; optional): each must equal
    #: the board's recomputation, or the run is refused (as a disagreeing metric is).
    errors: Mapping[str, float] | None = None
    #: The resamples those errors were computed on, as stated (checked against the task's).
    n_bootstrap: int | None = None


class Leaderboard:
    """A board at an SQLAlchemy ``url`` (default: SQLite in ``results_dir``) with stored
    predictions under ``store_dir`` (default: ``$SIM2OBS_LEADERBOARD_STORE``, else beside the
    SQLite file; a PostgreSQL board needs one every submitter can read)."""

    def __init__(self, url: str | None = None, results_dir: str | os.PathLike | None = None,
                 store_dir: str | os.PathLike | None = None):
        results_dir = Path(results_dir or os.environ.get("SIM2OBS_RESULTS", "sim2obs_results"))
        self.url = url or default_url(results_dir)
        store_dir = store_dir or os.environ.get("SIM2OBS_LEADERBOARD_STORE") or None
        if store_dir is None:
            if not self.url.startswith("sqlite"):
                raise Sim2obsValueError("a shared (non-SQLite) board needs store_dir (--store-dir, or "
                                        "$SIM2OBS_LEADERBOARD_STORE): a folder every submitter can read for the "
                                        "stored predictions", value=self.url)
            db_file = self.url.split("///", 1)[1] if "///" in self.url else str(results_dir / DEFAULT_DB_NAME)
            store_dir = Path(db_file).parent / "leaderboard_store"
        self.store_dir = Path(store_dir)
        self.engine, self.Session = connect(self.url)

    # -- recording ------------------------------------------------------------------------
    def _store(self, source: Path, sha: str) -> Path:
        dest = self.store_dir / "predictions" / f"{sha}.h5"
        if not dest.exists():
            atomic_write(dest, lambda f: f.write(source.read_bytes()))
        return dest

    def record(self, task: Task, predictions_file: str | os.PathLike, info: RunInfo, split: str | None = None,
               source: str = "submission", eval_seconds: float | None = None, verify_data: bool = False) -> Run:
        """Validate ``predictions_file`` (HDF5 or CSV) against ``task``'s ``split``, recompute
        every metric, store a copy and record the run in one transaction. The same predictions
        (same file hash, task, split and data) return the existing record. The split's labels
        are checked against the set's manifest each time (:meth:`Task.evaluate`);
        ``verify_data`` first checks the whole set (every shard and the content hash)."""
        from sim2obs.leaderboard.submission import read_predictions

        split = split or task.config.eval_split
        path = Path(predictions_file)
        t0 = time.perf_counter()
        if verify_data:
            task.galaxy_set.verify()
        predictions = read_predictions(path, task)
        scored = score(task, predictions, split)  # refuses anything that does not match the split
        metrics = scored.metrics
        self._check_stated(path, info, scored, predictions)
        eval_seconds = eval_seconds if eval_seconds is not None else time.perf_counter() - t0
        sha = file_sha256(path)
        existing = self._find(task.name, split, task.galaxy_set.content_hash, sha)
        if existing is not None:
            return existing
        if path.suffix.lower() == ".csv":  # store the canonical HDF5 form, hash that
            # a name of this process's own: concurrent submitters of one file must not share it
            canonical = self.store_dir / "incoming" / f"{sha}.{os.getpid()}.{uuid.uuid4().hex}.h5"
            try:
                predictions.save(canonical, task=task.name, split=split)
                stored_sha = file_sha256(canonical)
                stored = self._store(canonical, stored_sha)
            finally:
                canonical.unlink(missing_ok=True)
        else:
            stored_sha, stored = sha, self._store(path, sha)
        config = dict(info.config)
        if info.deterministic:
            config["deterministic"] = True
        import sim2obs

        run = Run(created_at=utcnow(), submitter=info.submitter or _user(), task=task.name,
                  task_version=task.metadata.version, split=split, n_objects=len(predictions.ids),
                  data_name=task.galaxy_set.name,
                  data_content_hash=task.galaxy_set.content_hash, data_kind=data_kind(task),
                  model_name=info.model_name, model_version=info.model_version, model_target=info.model_target,
                  n_parameters=info.n_parameters, config_hash=config_hash(config), config=config, seed=info.seed,
                  main_score=task.metadata.main_score, main_value=metrics[task.metadata.main_score],
                  predictions_sha256=sha, stored_sha256=stored_sha, predictions_path=str(stored), train_seconds=info.train_seconds,
                  eval_seconds=eval_seconds, hardware=hardware(), package_versions=package_versions(),
                  sim2obs_version=sim2obs.__version__, git_commit=git_commit(), source=source,
                  n_bootstrap=scored.n_bootstrap, bootstrap_seed=scored.seed, main_replicates=scored.main_replicates,
                  metrics=[Metric(key=k, value=float(v), error=scored.errors.get(k)) for k, v in metrics.items()])
        try:
            with self.Session.begin() as session:
                session.add(run)
        except IntegrityError:  # another process recorded the same predictions first
            existing = self._find(task.name, split, task.galaxy_set.content_hash, sha)
            if existing is None:
                raise
            return existing
        return run

    @staticmethod
    def _check_stated(path: Path, info: RunInfo, scored: Scored, predictions: Predictions) -> None:
        """Refuse (nothing written) stated bootstrap errors the board does not recompute."""
        if info.n_bootstrap is not None and int(info.n_bootstrap) != scored.n_bootstrap:
            raise DataFormatError(path, "n_bootstrap", f"the errors were stated on {info.n_bootstrap} resamples; "
                                  f"the task's evaluation uses {scored.n_bootstrap}")
        problems = stated_error_problems(info.errors or {}, scored, predictions)
        if problems:
            raise DataFormatError(path, "errors", f"refused, run {info.model_name!r} (seed {info.seed}): its stated "
                                  "bootstrap errors are not what its predictions give: " + "; ".join(problems))

    def record_task_rows(self, task: Task, rows: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike,
                         submitter: str = "") -> list[Run]:
        """Record the rows of :meth:`Task.run` (a benchmark run records itself)."""
        out = []
        for row in rows:
            info = row.get("info") or {}
            config = {"method": row["method"], "method_config": row.get("method_config", {}),
                      "task_config": row.get("task_config", {})}
            if row.get("kind"):  # "baseline" rows give the board its "Δ vs best baseline"
                config["kind"] = row["kind"]
            seed = (row.get("task_config") or {}).get("seed")
            run_info = RunInfo(model_name=row["method"], model_target=info.get("_target_"),
                               model_version=info.get("version"), n_parameters=info.get("n_parameters"),
                               config=config, seed=seed, train_seconds=info.get("train_seconds", row.get("wall_seconds")),
                               submitter=submitter, deterministic=bool(row.get("deterministic", False)),
                               errors=row.get("errors"), n_bootstrap=row.get("n_bootstrap"))
            out.append(self.record(task, Path(out_dir) / row["method"] / row["predictions"], run_info,
                                   split=row["split"], source="benchmark"))
        return out

    def _find(self, task: str, split: str, data_hash: str, sha: str) -> Run | None:
        with self.Session() as session:
            return session.scalars(select(Run).where(Run.task == task, Run.split == split,
                                                     Run.data_content_hash == data_hash,
                                                     Run.predictions_sha256 == sha)).first()

    # -- reading --------------------------------------------------------------------------
    def runs(self, task: str | None = None) -> list[Run]:
        with self.Session() as session:
            q = select(Run).order_by(Run.id)
            if task is not None:
                q = q.where(Run.task == task)
            return list(session.scalars(q))

    def tasks(self) -> list[str]:
        with self.Session() as session:
            return sorted(set(session.scalars(select(Run.task))))

    # -- transfer studies (:mod:`sim2obs.leaderboard.transfer`; deferred: it imports this module) --
    def record_transfer(self, study_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None,
                        submitter: str = "") -> tuple[list, int]:
        """Check and record a transfer study folder (every metric recomputed; refused, naming
        the row, on any difference). Returns ``(the study's records, number newly added)``."""
        from sim2obs.leaderboard.transfer import record_transfer

        return record_transfer(self, study_dir, data_dir=data_dir, submitter=submitter)

    def transfer_runs(self, task: str | None = None) -> list:
        from sim2obs.leaderboard.transfer import transfer_runs

        return transfer_runs(self, task)

    def transfer_tasks(self) -> list[str]:
        from sim2obs.leaderboard.transfer import transfer_tasks

        return transfer_tasks(self)

    def verify(self, run: Run, task: Task | None = None) -> dict[str, Any]:
        """Check a record: the stored file's hash equals the recorded one (tamper detection)
        and, given the task, every stored number (each metric and its bootstrap error,
        ``main_score``, ``main_value``, ``n_objects``, the resamples' count and seed and the main
        score on each) equals a fresh recomputation. Returns ``{"hash_ok", "metrics_ok",
        "recomputed", "errors", "mismatches"}`` (``metrics_ok`` is None when no task was given: nothing was
        recomputed; :func:`sim2obs.leaderboard.verify.verify_board` rebuilds the task and treats
        that as a failure); a missing or changed file raises :class:`DataFormatError` naming it."""
        path = Path(run.predictions_path)
        if not path.exists():
            raise DataFormatError(path, None, f"stored predictions of run {run.id} are missing")
        want = run.stored_sha256
        got = file_sha256(path)
        if got != want:
            raise DataFormatError(path, "sha256", f"stored predictions of run {run.id} were changed after "
                                  f"recording (sha256 {got[:12]}…, recorded {want[:12]}…)")
        out: dict[str, Any] = {"hash_ok": True, "metrics_ok": None, "recomputed": None, "mismatches": None}
        if task is not None:
            from sim2obs.leaderboard.verify import compare_numbers

            predictions = Predictions.load(path)
            scored = score(task, predictions, run.split)
            out["recomputed"], out["errors"] = scored.metrics, scored.errors
            out["mismatches"] = compare_numbers(run, task, scored.metrics, predictions, scored)
            out["metrics_ok"] = not out["mismatches"]
        return out


def config_hash(config: Mapping[str, Any]) -> str:
    """Hash of a run's config without its seed, so seeds of one configuration aggregate."""
    def strip(obj):
        if isinstance(obj, Mapping):
            return {k: strip(v) for k, v in obj.items() if k != "seed"}
        return obj

    return stable_hash(strip(dict(config)), 16)


def _user() -> str:
    try:
        import getpass

        return getpass.getuser()
    except Exception:  # noqa: BLE001
        return "unknown"


__all__ = ["Leaderboard", "RunInfo", "MIN_SEEDS_RANKED", "Scored", "score", "hardware", "config_hash"]
