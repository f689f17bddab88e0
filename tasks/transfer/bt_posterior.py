"""Transfer adapter of ``bt_posterior`` (GaMPEN posteriors of B/T, R_e and flux).

Everything is the task's own (:mod:`sim2obs.tasks.bt_posterior`), imported, not re-implemented:
the label coder (optional log10, then standard scaling), the arcsinh stretch, the GaMPEN network
built from the task's ``model`` node at its ``fixed_dropout`` rate (one rate: no dropout-rate
selection inside a transfer study), the full-covariance Gaussian NLL (+ the mean's squared error
where the preset adds it), the batched MC-dropout posterior sampling and the per-target width
recalibration. Predictions are posterior samples with the task's point estimate, exactly as its
``gampen`` method writes them, so ``task.evaluate`` gives coverage, CRPS, PIT and the posterior score.

Preprocessing is fitted on the **source** training split only (:meth:`fit`): the label coder's
means and scales; the stretch softening is the task config's, the same for every set.

Posterior widths: the source network's posteriors (the ``source`` and ``zero_shot`` rows) carry the
width factors fitted on the source validation split when the task config has ``recalibrate: true``,
as the task's ``gampen`` method reports them (:meth:`calibrate_on_source`); the ``recalibrate``
strategy replaces them by factors fitted on the k labelled target objects (:meth:`recalibrate`);
fine-tuned and target-only networks report their raw posteriors (no labelled set but the k objects
they trained on).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from sim2obs.errors import Sim2obsValueError
from sim2obs.predictions import Predictions
from sim2obs.tasks.base import Task
from sim2obs.tasks.bt_posterior import LabelCoder, _n_outputs, _Networks, _predictions, _task_arguments
from sim2obs.tasks.transfer.adapter import ADAPTERS, TransferAdapter

#: Attribute of a network holding the per-target width factors its predictions apply.
WIDTH_SCALE_ATTR = "_transfer_width_scale"


def _positions(all_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Rows of ``all_ids`` holding ``ids`` (in ``ids``' order); an id not in the split is refused."""
    order = np.argsort(all_ids, kind="stable")
    pos = np.searchsorted(all_ids, ids, sorter=order)
    pos = np.clip(pos, 0, len(all_ids) - 1)
    rows = order[pos]
    bad = all_ids[rows] != ids
    if bad.any():
        raise Sim2obsValueError(f"{int(bad.sum())} id(s) are not in the split, e.g. {ids[bad][:5].tolist()}",
                                value=int(ids[bad][0]))
    return rows


@ADAPTERS.register("bt_posterior")
class BTPosteriorAdapter(TransferAdapter):
    """GaMPEN (STN + GaMorNet CNN + Gaussian head, MC dropout) for the transfer protocol.

    ``head_prefixes``: the output layer ``backbone.output`` (dropout + linear from the last hidden
    dense layer to the Gaussian's mean and Cholesky factor); ``feature_module``: the same module, whose
    input is the penultimate feature vector ``(B, dense[-1])``."""

    task_name = "bt_posterior"
    model_name = "gampen"
    head_prefixes = ("backbone.output",)
    feature_module = "backbone.output"

    def __init__(self, source: Task):
        super().__init__(source)
        self.coder: LabelCoder | None = None
        self._nets: _Networks | None = None
        self._images: dict[tuple[int, str], np.ndarray] = {}

    # -- preprocessing --------------------------------------------------------------------
    def fit(self) -> None:
        c = self.source.config
        self.coder = LabelCoder(self.source.targets, tuple(c.log_targets)).fit(self.source.labels("train"))

    def state(self) -> dict[str, Any]:
        self._need_fit()
        return {"label_coder": self.coder.to_dict(), "stretch_softening": float(self.source.config.stretch_softening),
                "dropout": float(self.source.config.fixed_dropout)}

    def load_state(self, state: Mapping[str, Any]) -> None:
        lc = state["label_coder"]
        coder = LabelCoder(tuple(lc["targets"]), tuple(lc["log_targets"]))
        coder.scaler.mean_ = np.asarray(lc["mean"], dtype=np.float64)
        coder.scaler.scale_ = np.asarray(lc["scale"], dtype=np.float64)
        if tuple(coder.targets) != tuple(self.source.targets):
            raise Sim2obsValueError("the stored label coder is for other targets", value=list(coder.targets))
        self.coder = coder
        self._nets = None

    def _need_fit(self) -> None:
        if self.coder is None:
            raise Sim2obsValueError("call fit() (or load_state()) on the adapter first")

    def nets(self) -> _Networks:
        """The task's network helper bound to the source task, with the adapter's (source) coder."""
        self._need_fit()
        if self._nets is None:
            nets = _Networks(self.source, Path("."))  # its folders are for the task's own training: unused here
            nets.coder = self.coder
            self._nets = nets
        return self._nets

    # -- data -----------------------------------------------------------------------------
    def stretched(self, task: Task, split: str) -> np.ndarray:
        """``(N, 1, H, W)`` stretched r-band images of ``task``'s ``split`` (cached per set and split)."""
        if float(task.config.stretch_softening) != float(self.source.config.stretch_softening):
            raise Sim2obsValueError("the target task stretches its images differently from the source",
                                    value=task.config.stretch_softening)
        key = (id(task.galaxy_set), split)
        if key not in self._images:
            self._images[key] = task.stretched_images(split)
        return self._images[key]

    def dataset(self, task: Task, split: str, ids: np.ndarray | None = None, labelled: bool = True):
        import torch

        from sim2obs.models.engine import TensorDictDataset

        self._need_fit()
        x = self.stretched(task, split)
        all_ids = np.asarray(task.split_ids(split), dtype=np.int64)
        rows = np.arange(len(all_ids)) if ids is None else _positions(all_ids, np.asarray(ids, dtype=np.int64))
        if labelled:
            y = self.coder.encode(task.labels(split)[rows])
        else:
            y = np.zeros((len(rows), 0))
        return TensorDictDataset({"image": torch.from_numpy(np.ascontiguousarray(x[rows]))},
                                 torch.as_tensor(y, dtype=torch.float32), torch.as_tensor(all_ids[rows]))

    # -- network --------------------------------------------------------------------------
    def build_model(self, seed: int):
        from sim2obs.models import build_model
        from sim2obs.models.engine import seed_everything

        c = self.source.config
        seed_everything(int(seed))
        return build_model(dict(c.model), **_task_arguments(c.model, c.fixed_dropout, self.n_outputs))

    def model_config(self) -> dict[str, Any]:
        """The model node as built (for the engine's run record)."""
        c = self.source.config
        return {**dict(c.model), **_task_arguments(c.model, c.fixed_dropout, self.n_outputs)}

    @property
    def n_outputs(self) -> int:
        return _n_outputs(self.source.config, len(self.source.targets))

    def loss(self):
        from torch import nn

        from sim2obs.models.gaussian_head import NLLWithMeanMSE, gaussian_loss

        c = self.source.config
        if not c.aleatoric:
            return nn.MSELoss()
        loss = gaussian_loss(len(self.source.targets), c.covariance)
        return NLLWithMeanMSE(loss, c.mean_mse_weight) if c.mean_mse_weight > 0 else loss

    def trainer_config(self, phase: str, overrides: Mapping[str, Any] | None = None):
        from dataclasses import replace

        if phase not in ("source", "finetune", "target_only"):
            raise Sim2obsValueError("unknown training phase", value=phase, allowed=["source", "finetune", "target_only"])
        cfg = self.source.merged_trainer_config(overrides if phase != "source" else None,
                                                str(self.source.config.model["_target_"]))
        return replace(cfg, progress=bool(self.source.progress))

    # -- predictions ----------------------------------------------------------------------
    def predict(self, task: Task, model, split: str, seed: int) -> Predictions:
        """Posterior samples of ``task``'s ``split`` (``n_samples`` per galaxy; width factors of
        the model applied when it has some) with the task's point estimate."""
        nets = self.nets()
        z = nets.sample_z(model, self.stretched(task, split), int(self.source.config.n_samples), int(seed) + 29)
        scale = getattr(model, WIDTH_SCALE_ATTR, None)
        samples = nets.to_physical(z, None if scale is None else np.asarray(scale, dtype=np.float64))
        return _predictions(task, np.asarray(task.split_ids(split), dtype=np.int64), samples)

    def _fit_widths(self, task: Task, model, split: str, ids: np.ndarray, seed: int) -> dict[str, Any]:
        from sim2obs.models.gaussian_head import fit_width_scale
        from sim2obs.tasks import metrics as M

        nets = self.nets()
        all_ids = np.asarray(task.split_ids(split), dtype=np.int64)
        rows = _positions(all_ids, np.asarray(ids, dtype=np.int64))
        z = nets.sample_z(model, self.stretched(task, split)[rows], int(self.source.config.n_samples), int(seed) + 17)
        y = task.labels(split)[rows]
        scale = fit_width_scale(z, self.coder.encode(y))
        setattr(model, WIDTH_SCALE_ATTR, [float(v) for v in scale])
        before, after = nets.to_physical(z), nets.to_physical(z, scale)
        return {"fitted_on": split, "n": int(len(rows)), "width_scale": dict(zip(task.targets, map(float, scale))),
                "coverage_68_before": M.coverage(before, y, 0.6827), "coverage_68_after": M.coverage(after, y, 0.6827),
                "coverage_95_before": M.coverage(before, y, 0.9545), "coverage_95_after": M.coverage(after, y, 0.9545)}

    def calibrate_on_source(self, model, seed: int) -> dict[str, Any] | None:
        """Width factors fitted on the source validation split (when the task config recalibrates),
        as the task's ``gampen`` method does; applied to this model's later predictions."""
        if not self.source.config.recalibrate:
            return None
        return self._fit_widths(self.source, model, "val", self.source.split_ids("val"), seed)

    def recalibrate(self, task: Task, model, ids: np.ndarray, seed: int) -> dict[str, Any] | None:
        """Per-target width factors fitted on the k labelled target training objects ``ids``
        (:func:`~sim2obs.models.gaussian_head.fit_width_scale`, in the source coder's scaled space);
        they replace any earlier factors of ``model``."""
        return self._fit_widths(task, model, "train", ids, seed)
