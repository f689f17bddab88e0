"""The morphology CNNs 1-3 and CNN 4 of Dobbels et al. (2019, §3.1): their construction, training
on the task's splits, and the features they give the gradient boosting (cached on disk)."""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from sim2obs.atomic import atomic_write
from sim2obs.errors import DataFormatError
from sim2obs.models import build_model
from sim2obs.models.engine import load_trainer_config, seed_everything
from sim2obs.models.gz2 import HierarchicalProbabilityNorm
from sim2obs.tasks.common.networks import extract_features, split_dataset, task_trainer
from sim2obs.tasks.common.scaling import LabelCoder
from sim2obs.tasks.ml_ratio.estimators import WeightedL1Loss, weighted_median
from sim2obs.tasks.ml_ratio.preprocessing import resize_images

if TYPE_CHECKING:
    from sim2obs.tasks.ml_ratio.task import MLRatioTask

__all__ = ["MLRatioNet", "build_morphology_net", "cnn_features"]


def build_morphology_net(spec: dict[str, Any], n_outputs: int, head: str = "regression") -> tuple[nn.Module, nn.Module]:
    """``(net, backbone)``: ``backbone`` is the CNN built from ``spec`` with one g-band input channel
    and ``n_outputs`` outputs; ``net`` is the backbone for ``head="regression"``, or backbone → ReLU →
    :class:`~sim2obs.models.gz2.HierarchicalProbabilityNorm` for ``head="gz2"`` (the paper's GZ2
    probability layer; ``n_outputs`` must then be 37)."""
    backbone = build_model(with_task_arguments(spec, n_outputs))
    if head == "regression":
        return backbone, backbone
    return nn.Sequential(backbone, nn.ReLU(), HierarchicalProbabilityNorm()), nn.Sequential(backbone, nn.ReLU())


def with_task_arguments(spec: dict[str, Any], n_outputs: int) -> dict[str, Any]:
    """``spec`` with the task's ``in_channels`` (1) and ``num_outputs`` for those of these keys it
    names (a user's class gets only its own arguments)."""
    values = {"in_channels": 1, "num_outputs": int(n_outputs)}
    return {**spec, **{k: v for k, v in values.items() if k in spec}}


class MLRatioNet(nn.Module):
    """CNN 4 (§3.1): a (morphology-pretrained) backbone followed by a dense-1 layer predicting M/L.

    The dense layer's output is read as ``centre + scale * z`` with fixed ``centre`` and ``scale``
    (the training set's weighted median and spread of M/L): the same function class as a plain
    dense-1 layer, but Adam's ~lr-sized steps then move the prediction by a fraction of the M/L
    spread instead of by ~lr solar units, which a short CPU run could not overcome.
    """

    def __init__(self, backbone: nn.Module, n_features: int, centre: float = 0.0, scale: float = 1.0):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(int(n_features), 1)
        nn.init.zeros_(self.head.bias)
        self.register_buffer("centre", torch.tensor(float(centre)))
        self.register_buffer("scale", torch.tensor(float(scale)))

    def forward(self, x: Tensor) -> Tensor:
        return self.centre + self.scale * self.head(self.backbone(x))


# run records name the network by its public path (unchanged since the task became a package)
MLRatioNet.__module__ = "sim2obs.tasks.ml_ratio"


def cnn_features(task: "MLRatioTask", root: Path, log=print) -> dict[str, Any]:
    """Train the morphology CNNs and CNN 4 (or reuse them from disk) and extract their features for
    every split; cached under ``root/features-<key>/features.npz``. Returns ``{"names": {group:
    [...]}, split: {group: (N, F)}}`` with groups ``cnn1-3`` and ``cnn4``."""
    folder = Path(root) / f"features-{task.feature_key()}"
    done = folder / "features.npz"
    splits = ("train", "val", task.config.eval_split)
    if done.exists():
        with np.load(done, allow_pickle=False) as z:
            names = json.loads(str(z["names"]))
            out = {"names": names}
            for s in splits:
                if not np.array_equal(z[f"ids_{s}"], task.split_ids(s)):
                    raise DataFormatError(done, f"ids_{s}", "cached features do not match the set's ids")
                out[s] = {g: z[f"{s}__{g}"] for g in names}
        return out
    folder.mkdir(parents=True, exist_ok=True)
    out = _CNNRun(task, folder, splits, log).run()
    arrays = {"names": np.asarray(json.dumps(out["names"]))}
    for s in splits:
        arrays[f"ids_{s}"] = task.split_ids(s)
        for g, x in out[s].items():
            arrays[f"{s}__{g}"] = x
    atomic_write(done, lambda f: np.savez(f, **arrays))
    return out


class _CNNRun:
    """One training of the morphology CNNs (on a ``cnn_train_fraction`` sub-sample of train,
    selected on val) and of CNN 4, collecting the features of every split."""

    def __init__(self, task: "MLRatioTask", folder: Path, splits: Sequence[str], log):
        c = self.c = task.config
        self.task, self.folder, self.splits, self.log = task, folder, tuple(splits), log
        self.base_cfg = load_trainer_config(c.trainer)
        self.ids = {s: torch.as_tensor(task.split_ids(s), dtype=torch.int64) for s in self.splits}
        n_train = len(self.ids["train"])
        rng = np.random.default_rng(c.seed)
        n_sub = max(1, int(round(c.cnn_train_fraction * n_train)))
        self.sub = np.sort(rng.choice(n_train, size=n_sub, replace=False))
        self.groups: dict[str, dict[str, list]] = {s: {"cnn1-3": [], "cnn4": []} for s in self.splits}
        self.names: dict[str, list[str]] = {"cnn1-3": [], "cnn4": []}

    def images(self, size: int | None) -> dict[str, Tensor]:
        """Log-scaled g images of every split at ``size`` px, ``(N, 1, size, size)``."""
        return {s: resize_images(torch.from_numpy(self.task.image_features(s)["scaled"])[:, None], size).contiguous()
                for s in self.splits}

    def trainer_config(self, seed: int, epochs: int | None, lr: float | None = None):
        cfg = copy.deepcopy(self.base_cfg)
        cfg.seed = int(seed)
        if epochs is not None:
            cfg.epochs = int(epochs)
        if lr is not None:
            cfg.lr = float(lr)
        cfg.progress = bool(self.task.progress)  # bars on a terminal, epoch lines in logs
        return cfg

    def morphology_targets(self) -> tuple[np.ndarray, np.ndarray]:
        """Training (sub-sample) and validation targets of the morphology CNNs: GZ2 probabilities,
        or the structural labels (log10 of ``log_labels``) standardised on the training sub-sample."""
        y_tr = self.task.morphology_labels("train")[self.sub]
        y_va = self.task.morphology_labels("val")
        if self.c.morphology_head != "regression":
            return y_tr, y_va
        coder = LabelCoder(self.task.morphology_columns(), self.c.log_labels).fit(y_tr)
        return coder.encode(y_tr), coder.encode(y_va)

    def run(self) -> dict[str, Any]:
        c, sub = self.c, self.sub
        y_tr, y_va = self.morphology_targets()
        n_out = y_tr.shape[1]
        nets, sizes, hashes = {}, {}, {}
        for name, spec in c.morphology_cnns.items():
            sizes[name] = spec.image_size if spec.image_size is not None else c.image_size
            images = self.images(sizes[name])
            model_cfg = self.task._cnn_model(spec)
            cfg = self.trainer_config(c.seed, spec.epochs)
            seed_everything(cfg.seed)  # initial weights follow the seed, not the process's generator state
            net, nets[name] = build_morphology_net(model_cfg, n_out, c.morphology_head)
            trainer = task_trainer(self.task, cfg, nn.MSELoss(), name)
            t0 = time.perf_counter()
            fit = trainer.fit(net, split_dataset({"image": images["train"][sub]}, self.ids["train"][sub], y_tr),
                              split_dataset({"image": images["val"]}, self.ids["val"], y_va), self.folder / name,
                              model_config={"model": model_cfg, "n_outputs": n_out, "head": c.morphology_head,
                                            "labels": self.task.morphology_columns(), "image_size": sizes[name]})
            self.log(f"    {name}: morphology CNN, best val L2 {fit.best_val_loss:.4g} at epoch {fit.best_epoch} "
                     f"({time.perf_counter() - t0:.1f} s)")
            n_inner = 0
            for s in self.splits:
                x = extract_features(trainer, net, spec.inner_features, {"image": images[s]}, self.ids[s])
                self.groups[s]["cnn1-3"].append(x)
                n_inner = x.shape[1] - n_out
            self.names["cnn1-3"] += [f"{name}/{lab}" for lab in self.task.morphology_columns()]
            self.names["cnn1-3"] += [f"{name}/inner{j:04d}" for j in range(n_inner)]
            hashes[name] = fit.record.get("config_hash")
        if c.ml_cnn_from is not None:
            self.train_cnn4(nets[c.ml_cnn_from], sizes[c.ml_cnn_from], n_out, hashes[c.ml_cnn_from])
        out: dict[str, Any] = {"names": {g: n for g, n in self.names.items() if n}}
        for s in self.splits:
            out[s] = {g: np.concatenate(v, axis=1) for g, v in self.groups[s].items() if v}
        return out

    def train_cnn4(self, backbone: nn.Module, size: int | None, n_out: int, pretrained: Any) -> None:
        """CNN 4: the morphology backbone plus a dense-1 layer, retrained on M/L with the ℒ1."""
        c, sub, task = self.c, self.sub, self.task
        images = self.images(size)
        y = {s: np.stack([task.labels(s)[:, 0], task.target_errors(s)], axis=1) for s in ("train", "val")}
        centre = weighted_median(y["train"][sub, 0], 1.0 / y["train"][sub, 1])
        scale = float(np.std(y["train"][sub, 0])) or 1.0
        cfg = self.trainer_config(int(c.seed) + 1, c.ml_cnn_epochs, c.ml_cnn_lr)
        seed_everything(cfg.seed)  # the dense-1 head's initial weights follow the seed
        net = MLRatioNet(copy.deepcopy(backbone), n_out, centre, scale)
        trainer = task_trainer(task, cfg, WeightedL1Loss(), "cnn4")
        t0 = time.perf_counter()
        fit = trainer.fit(net, split_dataset({"image": images["train"][sub]}, self.ids["train"][sub], y["train"][sub]),
                          split_dataset({"image": images["val"]}, self.ids["val"], y["val"]), self.folder / "cnn4",
                          model_config={"cnn4_from": c.ml_cnn_from, "pretrained_run": pretrained, "image_size": size})
        self.log(f"    cnn4: retrained on M/L, best val ℒ1 {fit.best_val_loss:.4g} at epoch {fit.best_epoch} "
                 f"({time.perf_counter() - t0:.1f} s)")
        for s in self.splits:
            self.groups[s]["cnn4"].append(extract_features(trainer, net.backbone, False, {"image": images[s]},
                                                           self.ids[s]))
        self.names["cnn4"] += [f"cnn4/f{j:02d}" for j in range(n_out)]
