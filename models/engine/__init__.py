"""The one training engine of sim2obs: every network trains through :class:`Trainer`.

The same code runs on a CPU, one GPU, or many GPUs and nodes under ``torchrun``
(DistributedDataParallel, detected from the torchrun environment variables; NCCL on CUDA,
Gloo on CPU). A run lives in one folder::

    out_dir/
      last.pt            # checkpoint after every epoch (atomic): weights, optimiser, scheduler,
                         # scaler, early-stopping state, history and RNG states
      best.pt            # weights of the epoch with the lowest validation loss
      metrics.jsonl      # one JSON line per epoch: epoch, train_loss, val_loss, lr, seconds, ...
      val_curve.png      # training and validation loss against epoch
      predictions_val.h5   # ids and predictions on the validation set (best weights)
      run.json           # the run record (model, _target_, size, config hash, versions, wall time)

A killed run started again on the same folder resumes from ``last.pt`` and ends with exactly
the metrics and weights of an uninterrupted run with the same seed: shuffling, worker seeds
and augmentation draws are keyed on (seed, epoch, rank), and the global torch / numpy / python
RNG states are checkpointed. Checkpoints hold only tensors and plain types and are read with
``torch.load(path, weights_only=True)``.

Training recipes of the seed papers map onto :class:`TrainerConfig`: Dobbels et al. (2019):
``optimiser="nadam"``, ``schedule="plateau"`` (x0.3 after 4 flat epochs), rotation/zoom/flip
augmentation; Wu & Boada (2019): ``stages`` (head first, then all layers with discriminative
learning rates), ``schedule="cosine_restarts"``, test-time augmentation; GaMPEN (Ghosh et al.
2022): ``optimiser="sgd"``, ``momentum=0.99``, ``nesterov=True``; the TNG100 multi-branch
network: ``optimiser="adam"``, ``schedule="cosine"``.

Entry point: ``torchrun --nproc_per_node=N -m sim2obs.models.engine run.yaml [key=value ...]``
(or plain ``python -m``); see :func:`main`.

The package's files name the engine's parts: :mod:`.config` (:class:`TrainerConfig`, validation,
precision), :mod:`.data` (datasets and loaders), :mod:`.seeding` (seeds and RNG state),
:mod:`.stages` (staged fine-tuning, optimisers, schedules), :mod:`.checkpoints` (checkpoints and
resume), :mod:`.distributed` (device and torchrun set-up, collectives), :mod:`.records` (run records
shared with the estimators), :mod:`.trainer` (the loop: :class:`Trainer`) and :mod:`.entry`
(:func:`main`). Every name is importable from ``sim2obs.models.engine`` itself.
"""
from __future__ import annotations

# Every name the former single module ``engine.py`` defined stays importable from here (private ones too:
# tasks import e.g. ``_matches``); the imports below are re-exports.
from sim2obs.models.engine.checkpoints import (CHECKPOINT_FORMAT, CHECKPOINT_VERSION, _Progress, _save_torch,
                                               load_checkpoint)
from sim2obs.models.engine.config import (BF16_CPU_MIN_PX, OPTIMISERS, PRECISIONS, SCHEDULES, AugmentConfig,
                                          StageConfig, TrainerConfig, _augment_config, _native_bf16, _stages,
                                          load_trainer_config, resolve_precision, small_input_precision,
                                          trainer_identity, validate_config)
from sim2obs.models.engine.data import (TensorDictDataset, _EpochSeeded, _WithEpochSeed, _workers_for,
                                        galaxy_set_dataset)
from sim2obs.models.engine.distributed import _all_reduce_sum, _dist, _Runtime
from sim2obs.models.engine.entry import main
from sim2obs.models.engine.records import (BEST, CURVE, LAST, METRICS, RECORD, FitResult, _append_metrics,
                                           _describe, model_target, plot_curves, record_run, write_metrics,
                                           write_predictions)
from sim2obs.models.engine.seeding import (_STREAM_AUGMENT, _STREAM_EVAL, _STREAM_WORKERS, _derive_seed,
                                           _rng_state, _set_rng_state, seed_everything)
from sim2obs.models.engine.stages import _matches
from sim2obs.models.engine.trainer import Trainer, _as_float, _model_input, _point_prediction

__all__ = [
    "AugmentConfig", "FitResult", "StageConfig", "TensorDictDataset", "Trainer", "TrainerConfig",
    "galaxy_set_dataset", "load_trainer_config", "main", "model_target", "plot_curves",
    "record_run", "resolve_precision", "seed_everything", "small_input_precision", "trainer_identity",
    "validate_config",
    "write_metrics", "write_predictions",
]
