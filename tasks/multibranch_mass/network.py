"""The ``cnn`` of ``multibranch_mass`` and its ablation variants (§4, Table 4): the multi-branch
ResNet-18 on standardised targets, the best validation epoch kept, the evaluation split predicted
without reading its labels."""
from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from sim2obs.atomic import atomic_write
from sim2obs.config import to_plain
from sim2obs.models import build_model
from sim2obs.models.engine import seed_everything, small_input_precision, trainer_identity
from sim2obs.tasks import metrics as M
from sim2obs.tasks.base import MethodOutput
from sim2obs.tasks.common.networks import fit_folder, guard_lone_batch, predict_in_order, split_dataset, task_trainer
from sim2obs.tasks.common.scaling import StandardScaler
from sim2obs.tasks.multibranch_mass.config import BRANCHES, KIN_BRANCHES, VARIANTS

if TYPE_CHECKING:
    from sim2obs.tasks.multibranch_mass.task import MultibranchMassTask

__all__ = ["BranchInputs", "model_config", "run_network"]


class BranchInputs(nn.Module):
    """Calls a multi-branch network with a dict ``{branch: tensor}`` also when the training engine
    passes a single tensor (a batch with one input stack): ``names[0]`` is then its branch."""

    def __init__(self, net: nn.Module, names: Sequence[str]):
        super().__init__()
        self.net = net
        self.names = list(names)

    def forward(self, x):
        return self.net(x if isinstance(x, Mapping) else {self.names[0]: x})


# the engine records the network's class by module and name in the run identity: keep the public path
BranchInputs.__module__ = "sim2obs.tasks.multibranch_mass"


def model_config(task: "MultibranchMassTask", inputs: Sequence[str], n_outputs: int) -> dict[str, Any]:
    """``task.config.model`` with the task's ``input_channels``, ``num_outputs`` and ``enabled`` for
    those of these keys it names (a user's class gets only its own arguments)."""
    m = to_plain(task.config.model)
    channels = {b: 2 if (task.config.kinmask_channel and b in KIN_BRANCHES) else 1 for b in BRANCHES}
    values = {"input_channels": channels, "num_outputs": int(n_outputs), "enabled": list(inputs)}
    m.update({k: v for k, v in values.items() if k in m})
    return m


def _fit_identity(task: "MultibranchMassTask", inputs: tuple[str, ...], px: int, cols: list[int],
                  scaler: StandardScaler, model_cfg: dict, tcfg) -> dict[str, Any]:
    """What names one trained network (its ``fit-<hash>`` folder, shared by equal settings)."""
    cfg = task.config
    return {"data": task.galaxy_set.content_hash, "version": task.metadata.version, "split": cfg.eval_split,
            "inputs": list(inputs), "px": px, "kinmask_channel": cfg.kinmask_channel,
            "scaling": {b: asdict(task.scaling(b, px)) for b in inputs},
            "targets": [task.targets[k] for k in cols],
            "target_scale": [scaler.mean_[cols].tolist(), scaler.scale_[cols].tolist()],
            "model": model_cfg, "trainer": trainer_identity(tcfg)}


def run_network(task: "MultibranchMassTask", workdir: Path, inputs: Sequence[str], px: int,
                ablation: bool) -> MethodOutput:
    """Train the multi-branch network(s) on train (one for the targets jointly, or one per
    target), keep the best validation epoch, predict the evaluation split (whose labels are never
    read: its dataset gets placeholder targets). Targets are standardised with the training mean
    and standard deviation; predictions are mapped back to dex."""
    cfg = task.config
    split = cfg.eval_split
    inputs = tuple(inputs)
    tcfg = replace(task.trainer_config(ablation=ablation), progress=bool(task.progress))  # bars or epoch lines
    y = {s: task.labels(s) for s in ("train", "val")}
    scaler = StandardScaler().fit(y["train"])
    mu, sd = scaler.mean_, scaler.scale_
    z = {s: scaler.transform(v) for s, v in y.items()}
    x = {s: {b: torch.from_numpy(task.network_inputs(b, px, s)) for b in inputs} for s in ("train", "val", split)}
    ids = {s: task.split_ids(s).astype(np.int64) for s in ("train", "val", split)}
    sides = {b: int(x["train"][b].shape[-1]) for b in inputs}
    tcfg, precision_note = small_input_precision(tcfg, min(sides.values()))
    tcfg = guard_lone_batch(tcfg, len(ids["train"]))  # a lone last object breaks batch norm
    groups = [list(range(len(task.targets)))] if cfg.joint else [[k] for k in range(len(task.targets))]
    values = np.empty((len(ids[split]), len(task.targets)))
    fits, n_params, val_scatter = [], 0, {}
    root = task.shared_dir(workdir) / "networks"
    for cols in groups:
        model_cfg = model_config(task, inputs, len(cols))
        seed_everything(tcfg.seed)
        net = BranchInputs(build_model(model_cfg), inputs)
        data = {s: split_dataset(x[s], ids[s], z[s][:, cols] if s in z else None, len(cols))
                for s in ("train", "val", split)}
        identity = _fit_identity(task, inputs, px, cols, scaler, model_cfg, tcfg)
        fit_dir = fit_folder(root, identity)
        trainer = task_trainer(task, tcfg, nn.MSELoss(), f"{workdir.name} {'+'.join(inputs)}")
        fit = trainer.fit(net, data["train"], data["val"], fit_dir, model_config=model_cfg)
        atomic_write(fit_dir / "identity.json", lambda f: f.write(json.dumps(identity, indent=2) + "\n"), mode="w")
        values[:, cols] = predict_in_order(trainer, net, data[split]) * sd[cols] + mu[cols]
        pv = predict_in_order(trainer, net, data["val"]) * sd[cols] + mu[cols]
        for j, k in enumerate(cols):
            val_scatter[task.targets[k]] = M.scatter_dex(pv[:, j], y["val"][:, k])
        n_params += int(sum(p.numel() for p in net.parameters()))
        fits.append({"targets": [task.targets[k] for k in cols], "fit_dir": str(fit_dir.relative_to(root.parent)),
                     "epochs_run": len(fit.history), "best_epoch": fit.best_epoch,
                     "best_val_mse_standardised": float(fit.best_val_loss),
                     "train_seconds": float(sum(r["seconds"] for r in fit.history))})
    info = {"model": "MultiBranchNet", "_target_": str(cfg.model.get("_target_")), "inputs": list(inputs),
            "variant": next((v for v, b in VARIANTS.items() if b == inputs), None) if ablation else "default",
            "resolution_px": px, "input_px": sides, "joint": cfg.joint, "n_parameters": n_params,
            "val_scatter_dex": val_scatter, "fits": fits,
            "train_seconds": float(sum(f["train_seconds"] for f in fits)),
            "target_mean": mu.tolist(), "target_std": sd.tolist(),
            "scaling": {b: asdict(task.scaling(b, px)) for b in inputs}}
    if precision_note:
        info["precision_note"] = precision_note
    return MethodOutput(task.predictions_of(values), info)
