"""A network trained on a task's training split (model selection on validation) and applied to
any split: the datasets, the trainer with the task's epoch logger, predictions in object order,
feature extraction, and the guards every task needs."""
from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from sim2obs.errors import Sim2obsValueError
from sim2obs.models.engine import TensorDictDataset, Trainer
from sim2obs.provenance import stable_hash

__all__ = ["split_dataset", "task_trainer", "predict_in_order", "FeatureExtractor", "extract_features",
           "guard_lone_batch", "fit_folder"]


def split_dataset(inputs: Mapping[str, Tensor], ids, targets: np.ndarray | None = None,
                  n_targets: int = 1) -> TensorDictDataset:
    """A :class:`~sim2obs.models.engine.TensorDictDataset` of one split: ``inputs`` ``{stack: (N,
    C, H, W)}``, ``ids`` (N,) int64, ``targets`` (N, T) (float32 on the way in); ``None`` (an
    evaluation split, whose labels never reach a network) gives zero placeholders ``(N, n_targets)``."""
    ids = torch.as_tensor(ids, dtype=torch.int64)
    if targets is None:
        target = torch.zeros((len(ids), int(n_targets)), dtype=torch.float32)
    else:
        target = torch.as_tensor(np.asarray(targets, dtype=np.float32))
    return TensorDictDataset(dict(inputs), target, ids)


def task_trainer(task, config, loss: Callable, label: str, augment: Callable | None = None) -> Trainer:
    """A :class:`~sim2obs.models.engine.Trainer` for one of ``task``'s networks: progress bars when
    ``config.progress``, else one log line per epoch through ``task.epoch_logger(label, ...)``."""
    callbacks = [] if config.progress else [task.epoch_logger(label, config.epochs)]
    return Trainer(config, loss=loss, augment=augment, callbacks=callbacks)


def predict_in_order(trainer: Trainer, model: nn.Module, dataset: TensorDictDataset, tta: bool = False) -> np.ndarray:
    """``(N, K)`` float64 outputs of ``model`` on ``dataset``, in the dataset's object order
    (checked against its ids)."""
    pred = trainer.predict(model, dataset, tta=tta)
    if not np.array_equal(pred["ids"], dataset.ids.numpy()):
        raise RuntimeError("prediction lost the object order")
    return pred["predictions"].astype(np.float64)


class FeatureExtractor(nn.Module):
    """Outputs of ``net``, plus (``inner``) the input of its last dense layer, as one ``(B, F)``
    matrix. The hook lives only during a forward pass (a copied network carries no stale hook)."""

    def __init__(self, net: nn.Module, inner: bool):
        super().__init__()
        self.net = net
        self.inner = inner
        self._last = None
        if inner:
            linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
            if not linears:
                raise Sim2obsValueError("inner_features needs a network with a dense (Linear) layer")
            self._last = linears[-1]

    def forward(self, x: Tensor) -> Tensor:
        if self._last is None:
            return self.net(x).float().flatten(1)
        captured: list[Tensor] = []
        handle = self._last.register_forward_hook(lambda mod, args, out: captured.append(args[0]))
        try:
            out = self.net(x).float().flatten(1)
        finally:
            handle.remove()
        return torch.cat([out, captured[-1].float().flatten(1)], dim=1)


def extract_features(trainer: Trainer, net: nn.Module, inner: bool, inputs: Mapping[str, Tensor], ids) -> np.ndarray:
    """``(N, F)`` float64 features of a trained ``net`` (:class:`FeatureExtractor`) for one split."""
    return predict_in_order(trainer, FeatureExtractor(net, inner), split_dataset(inputs, ids))


def guard_lone_batch(config: Any, n_train: int):
    """``config`` with ``drop_last`` when the training split would end in a batch of one object
    (batch norm cannot normalise it)."""
    if n_train % max(1, config.batch_size) == 1 and not config.drop_last:
        return replace(config, drop_last=True)
    return config


def fit_folder(root: Path, identity: Any, prune: bool = False) -> Path:
    """``root/fit-<hash of identity>``: the checkpoints of one training setting (resumed when the
    setting recurs). ``prune``: remove the other ``fit-*`` folders of ``root`` (other settings)."""
    folder = Path(root) / f"fit-{stable_hash(identity, 12)}"
    if prune:
        for old in Path(root).glob("fit-*"):
            if old != folder and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
    return folder
