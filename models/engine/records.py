"""Run records: the artefacts of a run folder that networks and estimators share (``metrics.jsonl``,
``val_curve.png``, ``predictions_<split>.h5``, ``run.json``) and :class:`FitResult`; also used by
:mod:`sim2obs.models.estimators`."""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from sim2obs.atomic import atomic_write
from sim2obs.config import to_plain
from sim2obs.predictions import Predictions
from sim2obs.provenance import git_commit, package_versions

__all__ = ["FitResult", "model_target", "plot_curves", "record_run", "write_metrics", "write_predictions"]

LAST, BEST, METRICS, CURVE, RECORD = "last.pt", "best.pt", "metrics.jsonl", "val_curve.png", "run.json"


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
    values = np.asarray(predictions, dtype=np.float64).reshape(len(ids), -1)
    names = tuple(targets) if targets is not None else tuple(f"output_{k}" for k in range(values.shape[1]))
    return Predictions(np.asarray(ids, dtype=np.int64), values, names).save(
        Path(out_dir) / f"predictions_{split}.h5", split=split)


def plot_curves(history: Sequence[Mapping[str, Any]], path: str | os.PathLike, best_epoch: int | None = None) -> Path:
    """PNG of train and validation loss against epoch (matplotlib Agg canvas, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # deferred: import speed (matplotlib)
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
