"""The GaMPEN methods: ``gampen`` (dropout rate selected on validation), ``gampen_fixed_dropout``
(the paper's rate) and ``gampen_no_stn`` (the CNN alone at the selected rate)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from sim2obs.tasks.base import MethodOutput
from sim2obs.tasks.bt_posterior.networks import _Networks
from sim2obs.tasks.common.threads import with_torch_threads

if TYPE_CHECKING:
    from sim2obs.tasks.bt_posterior.task import BTPosteriorTask

__all__ = ["_run_fixed", "_run_gampen", "_run_no_stn", "_compact"]


@with_torch_threads
def _run_fixed(task: BTPosteriorTask, workdir: Path) -> MethodOutput:
    nets = _Networks(task, workdir)
    model, info = nets.train(task.config.model, task.config.fixed_dropout)
    return nets.posterior(model, workdir, {"dropout": float(task.config.fixed_dropout), **info}, task.config.model,
                          task.config.fixed_dropout)


@with_torch_threads
def _run_gampen(task: BTPosteriorTask, workdir: Path) -> MethodOutput:
    nets = _Networks(task, workdir)
    rate, recs = nets.select(workdir)
    model, info = nets.train(task.config.model, rate)
    info = {"dropout": rate, "selection": "validation coverage closest to nominal (1, 2, 3 sigma)"
            + (", after the width recalibration" if task.config.recalibrate else ""),
            "dropout_table": _compact(recs, task.targets), **info}
    return nets.posterior(model, workdir, info, task.config.model, rate)


@with_torch_threads
def _run_no_stn(task: BTPosteriorTask, workdir: Path) -> MethodOutput:
    nets = _Networks(task, workdir)
    rate, recs = nets.select(workdir)
    model, info = nets.train(task.config.no_stn_model, rate)
    return nets.posterior(model, workdir, {"dropout": rate, "dropout_selected_by": "gampen", **info},
                          task.config.no_stn_model, rate)


def _compact(recs: list[dict], targets: Sequence[str]) -> list[dict]:
    return [{"rate": r["rate"], "distance": r["distance"], "raw_distance": r["raw_distance"],
             "selected": r["selected"], "pooled": r["pooled"],
             "coverage": r["coverage"], "calibration_error": r["calibration_error"], "nmad_ratio": r["nmad_ratio"],
             "crps": r["crps"], "width_scale": r["width_scale"], "recalibrated_coverage": r["recalibrated"]["coverage"],
             "best_epoch": r["train"]["best_epoch"], "best_val_loss": r["train"]["best_val_loss"]} for r in recs]
