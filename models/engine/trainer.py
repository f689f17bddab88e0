"""The training loop: :class:`Trainer` (fit, evaluate, predict). Its parts live beside it: configuration
(:mod:`.config`), data and loaders (:mod:`.data`), seeding (:mod:`.seeding`), stages, optimisers and
schedules (:mod:`.stages`), checkpoints and resume (:mod:`.checkpoints`), distributed set-up
(:mod:`.distributed`) and run records (:mod:`.records`)."""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from sim2obs.config import to_plain
from sim2obs.errors import Sim2obsValueError
from sim2obs.models.augment import Augment, tta_mean
from sim2obs.models.engine.checkpoints import (_Progress, load_checkpoint, restore_best, resume_progress,
                                               resume_rng, resume_stage, save_checkpoints)
from sim2obs.models.engine.config import TrainerConfig, _augment_config, trainer_identity, validate_config
from sim2obs.models.engine.data import TrainLoader, eval_loader, make_loader
from sim2obs.models.engine.distributed import (_all_reduce_sum, _Runtime, all_gather, barrier, broadcast_buffers,
                                               setup_runtime, wrap_ddp)
from sim2obs.models.engine.records import (CURVE, FitResult, _append_metrics, _describe, model_target, plot_curves,
                                           record_run, write_metrics, write_predictions)
from sim2obs.models.engine.precise_bn import recompute_batchnorm_statistics
from sim2obs.models.engine.seeding import seed_everything
from sim2obs.models.engine.stages import StagePlan, check_prefixes, setup_stage
from sim2obs.provenance import stable_hash

__all__ = ["Trainer"]


def _model_input(inputs: Mapping[str, Tensor]) -> Tensor | dict[str, Tensor]:
    """One stack: the tensor; several: the dict."""
    return next(iter(inputs.values())) if len(inputs) == 1 else dict(inputs)


def _as_float(out: Any) -> Any:
    if isinstance(out, Tensor):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, (tuple, list)):
        return type(out)(_as_float(o) for o in out)
    if isinstance(out, Mapping):
        return {k: _as_float(v) for k, v in out.items()}
    return out


def _point_prediction(out: Any) -> Tensor:
    """The model output, or its first element when it returns a tuple (e.g. mean and scale)."""
    return out[0] if isinstance(out, (tuple, list)) else out


class Trainer:
    """Trains and applies any ``nn.Module`` on galaxy-set style datasets.

    Args:
        config: a :class:`TrainerConfig` (default: its defaults).
        loss: ``loss(output, target) -> scalar`` mean over the batch, given by the task
            (default: mean squared error). ``output`` is what the model returns (a tensor, or a
            tuple for e.g. mean-and-scale heads), in float32; ``target`` is ``(B, T)``.
        augment: ``augment(inputs, generator) -> inputs`` applied to training batches on the
            device (``{stack: (B, C, H, W)}``); replaces the one built from ``config.augment``.
        callbacks: ``callback(record, model)`` called after every epoch's checkpoint, with the
            epoch record and the (unwrapped) model.
        regulariser: an optional extra loss term per training batch,
            ``regulariser(net, inputs, output) -> scalar tensor``, added to ``loss(output, target)``
            (e.g. the transfer protocol's feature-alignment loss, which runs ``net`` on a batch of
            unlabelled target images: :mod:`sim2obs.tasks.transfer.strategies`). ``net`` is the
            module being trained (DDP-wrapped under torchrun), ``inputs`` the batch's
            ``{stack: (B, C, H, W)}`` after augmentation, ``output`` the model's output; it is called
            under the same autocast as the forward pass. It is part of the run's identity (the
            checkpoint hash); None (default) leaves every run exactly as without it.
        freeze_frozen_norms: in a stage that freezes some layers, keep their normalisation layers
            (BatchNorm) in evaluation mode, so their running statistics stay those of the
            pre-trained network (head-only fine-tuning touches the head and nothing else). Part of
            the run's identity when True; False (default) leaves every run as before.

    Models are called with the image tensor when a batch has one input stack, with the dict
    ``{stack: tensor}`` when it has several.
    """

    def __init__(self, config: TrainerConfig | None = None, loss: Callable | None = None,
                 augment: Callable | None = None, callbacks: Sequence[Callable] = (),
                 regulariser: Callable | None = None, freeze_frozen_norms: bool = False):
        self.config = config
        self.loss = loss
        self.augment = augment
        self.callbacks = callbacks
        self.regulariser = regulariser
        self.freeze_frozen_norms = bool(freeze_frozen_norms)

    # -- setup --------------------------------------------------------------------------------
    def _config(self) -> TrainerConfig:
        cfg = self.config if self.config is not None else TrainerConfig()
        validate_config(cfg)
        return cfg

    def _runtime(self, cfg: TrainerConfig) -> _Runtime:
        """Resolve device and precision; join the torchrun process group when launched by it."""
        return setup_runtime(cfg)

    @staticmethod
    def _place(rt: _Runtime, model: nn.Module) -> None:
        """Move ``model`` to the device, channels-last when the runtime uses it."""
        model.to(rt.device)
        if rt.channels_last:
            model.to(memory_format=torch.channels_last)

    def _loss_fn(self) -> Callable:
        return self.loss if self.loss is not None else nn.MSELoss()

    def _augmenter(self, cfg: TrainerConfig) -> Callable | None:
        """The given ``augment``, else the one ``cfg.augment`` describes, else None."""
        if self.augment is not None:
            return self.augment
        aug_cfg = _augment_config(cfg)
        return Augment(**asdict(aug_cfg)) if aug_cfg is not None else None

    def _loader(self, rt: _Runtime, dataset: Dataset, sampler, batch_size: int, drop_last: bool,
                generator: torch.Generator, workers: int) -> DataLoader:
        """Every DataLoader of the loop is built here (:func:`~.data.make_loader`); a subclass may wrap it."""
        return make_loader(rt, dataset, sampler, batch_size, drop_last, generator, workers)

    def _eval_loader(self, rt: _Runtime, cfg: TrainerConfig, dataset: Dataset) -> DataLoader:
        """Unshuffled, unpadded shard ``rank::world`` of ``dataset``."""
        return eval_loader(rt, cfg, dataset, make=self._loader)

    def _to_device(self, rt: _Runtime, batch: Mapping[str, Any]) -> tuple[dict[str, Tensor], Tensor]:
        nb = rt.device.type == "cuda"
        inputs = {k: v.to(rt.device, non_blocking=nb) for k, v in batch["inputs"].items()}
        return inputs, batch["target"].to(rt.device, non_blocking=nb)

    @staticmethod
    def _memory_format(rt: _Runtime, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        if not rt.channels_last:
            return inputs
        return {k: v.contiguous(memory_format=torch.channels_last) if v.ndim == 4 else v for k, v in inputs.items()}

    def _identity(self, cfg: TrainerConfig, model: nn.Module, model_config: Any) -> dict:
        """What names a run: trainer config (less display settings), model, loss, augmentation."""
        identity = {"trainer": trainer_identity(cfg),
                    "model": to_plain(model_config) if model_config is not None else {"_target_": model_target(model)},
                    "loss": _describe(self.loss), "augment": _describe(self.augment)}
        if self.regulariser is not None:  # absent otherwise: hashes of runs without one are unchanged
            identity["regulariser"] = _describe(self.regulariser)
        if self.freeze_frozen_norms:  # absent otherwise, as the regulariser
            identity["freeze_frozen_norms"] = True
        return identity

    # -- training ------------------------------------------------------------------------------
    # -- training ------------------------------------------------------------------------------
    def fit(self, model: nn.Module, train_dataset: Dataset, val_dataset: Dataset, out_dir: str | os.PathLike,
            model_config: Any = None) -> FitResult:
        """Train ``model`` in place; write checkpoints, metrics, curve, predictions and record.

        ``out_dir`` holding an unfinished run of the same configuration resumes it; a finished
        one is not trained again. ``model_config`` (the Hydra config that built ``model``) is
        recorded and hashed. Parameters with ``requires_grad=False`` on entry stay frozen.
        Returns a :class:`FitResult`.
        """
        cfg = self._config()
        rt = self._runtime(cfg)
        out = Path(out_dir)
        if rt.rank == 0:
            out.mkdir(parents=True, exist_ok=True)
        seed_everything(cfg.seed, cfg.deterministic)
        self._place(rt, model)
        frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
        identity = self._identity(cfg, model, model_config)
        config_hash = stable_hash(identity)
        loss_fn, augment = self._loss_fn(), self._augmenter(cfg)
        plan = StagePlan(cfg)
        check_prefixes(model, plan.stages)
        barrier()
        ckpt = load_checkpoint(out, config_hash)
        progress = resume_progress(model, ckpt)
        if rt.rank == 0:
            write_metrics(out, progress.history)
        train = TrainLoader(rt, cfg, train_dataset, make=self._loader)
        val_loader = self._eval_loader(rt, cfg, val_dataset)
        scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.precision == "fp16")
        if ckpt is not None:
            scaler.load_state_dict(ckpt["scaler"])

        stage = None
        try:
            for epoch in range(progress.epoch, cfg.epochs):
                if progress.stopped_early:
                    break
                if plan.stage_of(epoch) != stage:  # a new stage: what trains, a fresh optimiser and schedule
                    stage = plan.stage_of(epoch)
                    opt, sched = setup_stage(cfg, model, plan.stages[stage], plan.length(stage), len(train), frozen)
                    net = wrap_ddp(rt, model)
                    resume_stage(ckpt, epoch, stage, opt, sched)
                resume_rng(ckpt, epoch)
                t0 = time.perf_counter()
                lrs = {g["name"]: float(g["lr"]) for g in opt.param_groups}
                aug_gen = train.start_epoch(epoch)
                train_loss = self._train_epoch(rt, cfg, net, opt, sched, scaler, train.loader, loss_fn, augment,
                                               aug_gen, f"epoch {epoch + 1}/{cfg.epochs}")
                if cfg.precise_bn_batches:
                    self._precise_bn(rt, cfg, model, train.loader)
                broadcast_buffers(model)  # evaluate every shard with rank 0's batch-norm statistics
                val_loss = self._evaluate(rt, model, val_loader, loss_fn)
                if cfg.schedule == "plateau":
                    sched.step(val_loss)
                improved = progress.update(val_loss, cfg.early_stopping_min_delta, cfg.early_stopping_patience)
                record = {"epoch": epoch + 1, "stage": stage, "train_loss": train_loss, "val_loss": val_loss,
                          "lr": next(iter(lrs.values())), "lrs": lrs, "seconds": time.perf_counter() - t0}
                progress.history.append(record)
                if rt.rank == 0:
                    self._record_epoch(out, cfg, record, improved, config_hash=config_hash, progress=progress,
                                       stage=stage, model=model, opt=opt, sched=sched, scaler=scaler)
                for callback in self.callbacks:
                    callback(record, model)
        finally:
            for name, p in model.named_parameters():
                p.requires_grad_(name not in frozen)

        barrier()
        if cfg.restore_best:
            restore_best(model, out)
        return self._finish(rt, cfg, model, val_dataset, out, progress, identity, config_hash)

    @staticmethod
    def _record_epoch(out: Path, cfg: TrainerConfig, record: dict, improved: bool, **state: Any) -> None:
        """Rank 0 after an epoch: append its metrics line, write the checkpoints, print a progress line."""
        _append_metrics(out, record)
        save_checkpoints(out, improved=improved, val_loss=record["val_loss"], **state)
        if cfg.progress:
            tqdm.write(f"epoch {record['epoch']}/{cfg.epochs}: train {record['train_loss']:.5g}  "
                       f"val {record['val_loss']:.5g}  lr {record['lr']:.3g}" + ("  (best)" if improved else ""))

    def _finish(self, rt: _Runtime, cfg: TrainerConfig, model: nn.Module, val_dataset: Dataset, out: Path,
                progress: _Progress, identity: dict, config_hash: str) -> FitResult:
        """After training: validation predictions, curve and run record (rank 0); the :class:`FitResult`."""
        preds = self._predict(rt, cfg, model, val_dataset, tta=False)
        record = {}
        if rt.rank == 0:
            write_predictions(out, "val", preds["ids"], preds["predictions"])
            plot_curves(progress.history, out / CURVE, progress.best_epoch)
            record = record_run(
                out, model_name=type(model).__name__, target=model_target(model), config=identity,
                config_hash=config_hash, wall_seconds=sum(r["seconds"] for r in progress.history),
                size={"n_parameters": sum(p.numel() for p in model.parameters())},
                results={"kind": "network", "epochs_run": len(progress.history), "best_epoch": progress.best_epoch,
                         "best_val_loss": progress.best_val_loss, "stopped_early": progress.stopped_early,
                         "device": str(rt.device), "precision": rt.precision, "world_size": rt.world})
        return FitResult(history=progress.history, best_epoch=progress.best_epoch,
                         best_val_loss=progress.best_val_loss, stopped_early=progress.stopped_early,
                         record=record, out_dir=out)

    def _train_epoch(self, rt: _Runtime, cfg: TrainerConfig, net: nn.Module, opt, sched, scaler, loader: DataLoader,
                     loss_fn: Callable, augment: Callable | None, aug_gen: torch.Generator, desc: str) -> float:
        """One pass over ``loader``; returns the mean training loss over all processes."""
        net.train()
        if self.freeze_frozen_norms:
            freeze_norms_without_trainable_parameters(net)
        params = [p for g in opt.param_groups for p in g["params"]]
        total = torch.zeros((), dtype=torch.float64, device=rt.device)
        count = 0
        for batch in tqdm(loader, desc=desc, leave=False, disable=not (cfg.progress and rt.rank == 0)):
            inputs, target = self._to_device(rt, batch)
            if augment is not None:
                inputs = augment(inputs, generator=aug_gen)
            inputs = self._memory_format(rt, inputs)
            with rt.autocast():
                output = net(_model_input(inputs))
            loss = loss_fn(_as_float(output), target)
            if self.regulariser is not None:
                with rt.autocast():
                    extra = self.regulariser(net, inputs, output)
                loss = loss + extra.float()
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.max_grad_norm is not None:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            scaler.step(opt)
            scaler.update()
            if sched is not None and cfg.schedule != "plateau":
                sched.step()
            total += loss.detach().double() * len(target)
            count += len(target)
        loss_sum, n = _all_reduce_sum(total.item(), count, device=rt.device)
        if not math.isfinite(loss_sum / n):
            raise Sim2obsValueError(f"training diverged in {desc} (non-finite loss)", value=loss_sum / n)
        return loss_sum / n

    def _precise_bn(self, rt: _Runtime, cfg: TrainerConfig, model: nn.Module, loader: DataLoader) -> None:
        """Re-estimate the batch-norm statistics of ``model`` from the first ``cfg.precise_bn_batches``
        batches of this epoch's training order, *not* augmented: the statistics are those of the
        inputs the network is evaluated on (free rotations pad corners and interpolate, which shifts
        them; on multibranch_mass, statistics of augmented batches left a 0.26 dex bias in M_tot
        where unaugmented ones left 0.03). The global random state (dropout draws) is restored."""

        def forward(net: nn.Module, batch: Mapping[str, Any]) -> None:
            inputs, _ = self._to_device(rt, batch)
            with rt.autocast():
                net(_model_input(self._memory_format(rt, inputs)))

        model.train()
        if self.freeze_frozen_norms:
            freeze_norms_without_trainable_parameters(model)
        with torch.random.fork_rng(devices=[rt.device] if rt.device.type == "cuda" else []):
            recompute_batchnorm_statistics(model, loader, forward, int(cfg.precise_bn_batches))

    # -- evaluation ----------------------------------------------------------------------------
    @torch.no_grad()
    def _evaluate(self, rt: _Runtime, model: nn.Module, loader: DataLoader, loss_fn: Callable) -> float:
        """Mean loss over the (sharded) loader, reduced over processes."""
        was_training = model.training
        model.eval()
        total, count = 0.0, 0
        for batch in loader:
            inputs, target = self._to_device(rt, batch)
            with rt.autocast():
                output = model(_model_input(self._memory_format(rt, inputs)))
            total += float(loss_fn(_as_float(output), target)) * len(target)
            count += len(target)
        model.train(was_training)
        total, count = _all_reduce_sum(total, count, device=rt.device)
        return total / count

    def evaluate(self, model: nn.Module, dataset: Dataset) -> float:
        """Mean loss of ``model`` (eval mode) over ``dataset``."""
        cfg = self._config()
        rt = self._runtime(cfg)
        model.to(rt.device)
        return self._evaluate(rt, model, self._eval_loader(rt, cfg, dataset), self._loss_fn())

    @torch.no_grad()
    def _predict(self, rt: _Runtime, cfg: TrainerConfig, model: nn.Module, dataset: Dataset, tta: bool) -> dict:
        was_training = model.training
        model.eval()
        positions, ids, preds = [], [], []
        loader = self._eval_loader(rt, cfg, dataset)

        def forward(inputs: dict[str, Tensor]) -> Tensor:
            with rt.autocast():
                out = model(_model_input(self._memory_format(rt, inputs)))
            return _point_prediction(_as_float(out))

        order = iter(loader.sampler)
        for batch in loader:
            inputs, _ = self._to_device(rt, batch)
            out = tta_mean(forward, inputs, cfg.tta) if tta else forward(inputs)
            preds.append(out.reshape(len(out), -1).cpu())
            ids.append(torch.as_tensor(batch["id"]).reshape(-1).cpu())
            positions.extend(next(order) for _ in range(len(out)))
        model.train(was_training)
        parts = all_gather((positions, torch.cat(ids).numpy(), torch.cat(preds).numpy()), rt.world)
        pos = np.concatenate([np.asarray(p[0], dtype=np.int64) for p in parts])
        order_ = np.argsort(pos, kind="stable")
        return {"ids": np.concatenate([p[1] for p in parts])[order_].astype(np.int64),
                "predictions": np.concatenate([p[2] for p in parts])[order_].astype(np.float32)}

    def predict(self, model: nn.Module, dataset: Dataset, tta: bool = False) -> dict[str, np.ndarray]:
        """Predictions of ``model`` (eval mode) for every item of ``dataset``, in dataset order.

        Returns ``{"ids": (N,) int64, "predictions": (N, T) float32}``. With ``tta`` the
        prediction is the mean over the dihedral transforms ``config.tta`` (default all 8).
        Under torchrun every process predicts a shard and all receive the whole result.
        """
        cfg = self._config()
        rt = self._runtime(cfg)
        self._place(rt, model)
        return self._predict(rt, cfg, model, dataset, tta)


# --------------------------------------------------------------------------------------------
# Entry point: python -m / torchrun -m sim2obs.models.engine run.yaml [key=value ...]


def freeze_norms_without_trainable_parameters(net: nn.Module) -> list[str]:
    """Put every normalisation layer with running statistics (BatchNorm) whose parameters are all
    frozen into evaluation mode; return their names."""
    names = []
    for name, module in net.named_modules():
        if isinstance(module, nn.modules.batchnorm._NormBase) and module.track_running_stats and \
                not any(p.requires_grad for p in module.parameters(recurse=False)):
            module.eval()
            names.append(name)
    return names
