"""Batch-norm statistics re-estimated for the weights being validated ("PreciseBN", Wu & Johnson
2021, "Rethinking 'Batch' in BatchNorm", arXiv:2105.07576, §3).

During training a BatchNorm layer keeps an exponential moving average of its batch statistics,
taken over the last ~10 batches with weights that were still changing. When a network has few
batches per epoch and its deep layers see tiny spatial maps (a ResNet-18 on a 48 px map ends at
2 x 2 px, so a batch of 40 gives 160 values per channel), that average can sit far from the
statistics of the final weights, and evaluation-mode predictions shift: on the multibranch_mass
quick set the kinematic-map network's M_tot came out 0.21 dex high on train, validation and test
alike, and re-estimating the statistics removed the shift (0.03 dex).

``torch.optim.swa_utils.update_bn`` does the same averaging, but it puts every module into
training mode (which would un-freeze the norms a staged schedule froze) and knows neither
dict inputs, autocast nor a cap on the number of batches; hence this small version.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import Tensor, nn

__all__ = ["recompute_batchnorm_statistics"]


@torch.no_grad()
def recompute_batchnorm_statistics(model: nn.Module, batches: Iterable, forward: Callable[[nn.Module, object], Tensor],
                                   max_batches: int) -> int:
    """Replace the running mean and variance of every BatchNorm layer of ``model`` that is in
    training mode by their equal-weight average over up to ``max_batches`` of ``batches``
    (``forward(model, batch)`` runs one; no gradient). Layers in evaluation mode (frozen norms)
    keep their statistics, every layer its momentum. The caller puts ``model`` in training mode
    and chooses the batches (the training data, augmented as in training). Returns the number
    of batches used (0: the statistics are unchanged)."""
    norms = [m for m in model.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats and m.training]
    if not norms or max_batches < 1:
        return 0
    saved = {m: (m.momentum, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
             for m in norms}
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: every batch weighs the same
    used = 0
    try:
        for batch in batches:
            if used >= max_batches:
                break
            forward(model, batch)
            used += 1
    finally:
        for m, (momentum, mean, var, tracked) in saved.items():
            m.momentum = momentum
            if used == 0:  # nothing seen: keep what training had
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(tracked)
    return used
