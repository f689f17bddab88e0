"""Pieces that several tasks share, each written once.

================  ==========================================================================
module            what is inside
================  ==========================================================================
``scaling``       :class:`StandardScaler` (per-column standardisation) and :class:`LabelCoder`
                  (optional log10 of some columns, then standard scaling): physical labels <->
                  network targets
``boosting``      LightGBM: the task-independent parameters (determinism, threads, seed), a
                  weighted fit with early stopping on the validation loss that writes the
                  engine's run artefacts, and prediction at the best iteration
``networks``      a network trained on a task's train/val split and applied to any split:
                  datasets with placeholder targets for held-out splits, the trainer with the
                  task's epoch logger, prediction in object order, feature extraction (outputs
                  plus the input of the last dense layer), the batch-norm guard
``threads``       torch thread count for the duration of a method
================  ==========================================================================

Bootstrap errors live in :mod:`sim2obs.tasks.bootstrap` (paired, per method) and
:func:`sim2obs.tasks.metrics.bootstrap_error` (any statistic).
"""
