"""Training pieces of Wu & Boada (2019): the RMSE loss (eq. 1), random dihedral augmentation
(appendix A.5), and the staged schedule adapted to the network in use."""
from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from sim2obs.config import to_plain
from sim2obs.errors import Sim2obsValueError
from sim2obs.models.augment import DIHEDRAL, dihedral
from sim2obs.models.engine import StageConfig, _matches

__all__ = ["RMSELoss", "rmse_loss", "RandomDihedral", "adapt_stages"]


class RMSELoss(nn.Module):
    """Root mean squared error over the batch (Wu & Boada 2019, eq. 1)."""

    def __init__(self, eps: float = 1e-12):
        super().__init__()
        self.eps = eps

    def forward(self, output, target):
        return torch.sqrt(torch.mean((output.reshape(target.shape) - target) ** 2) + self.eps)


def rmse_loss() -> RMSELoss:
    """A new :class:`RMSELoss` (``loss(output, target) = sqrt(mean((output - target)^2))``)."""
    return RMSELoss()


class RandomDihedral:
    """Per object, one of the 8 transforms of the dihedral group of the square (quarter turns
    and a flip), drawn uniformly; every image stack of an object gets the same one.

    Exact at every resolution (no interpolation, so the 1-8 px images of the resolution study
    are not blurred), and the same group as the test-time augmentation. It stands in for the
    rotations and flips of the paper's fastai pipeline (appendix A.5)."""

    def __call__(self, inputs, generator=None):
        images = [k for k in sorted(inputs) if inputs[k].ndim == 4]
        if not images:
            return dict(inputs)
        first = inputs[images[0]]
        draw = torch.randint(0, len(DIHEDRAL), (first.shape[0],), generator=generator)
        out = dict(inputs)
        for name in images:
            x = inputs[name]
            if x.shape[-1] != x.shape[-2]:
                raise Sim2obsValueError("dihedral augmentation needs square images", value=tuple(x.shape))
            y = torch.empty_like(x)
            for k in DIHEDRAL:
                sel = (draw == k).nonzero(as_tuple=True)[0].to(x.device)
                if len(sel):
                    y[sel] = dihedral(x[sel], k)
            out[name] = y
        return out

    def __repr__(self) -> str:
        return "RandomDihedral()"


# run records name the loss and the augmentation by their public path (unchanged since the task
# became a package)
RMSELoss.__module__ = RandomDihedral.__module__ = "sim2obs.tasks.metallicity"


def adapt_stages(tcfg, model):
    """Drop the per-prefix learning rates of ``trainer.stages`` that match no parameter of
    ``model`` (the ResNet layer groups of the presets, when another network is swapped in), so
    that those parameters take ``trainer.lr``; the ``trainable`` prefixes are kept (a stage that
    trains ``fc`` first needs a head named ``fc``). Returns ``(config, dropped prefixes)``."""
    names = [n for n, _ in model.named_parameters()]
    stages, dropped = [], []
    for st in tcfg.stages:
        st = st if isinstance(st, StageConfig) else StageConfig(**to_plain(st))
        keep = {k: v for k, v in st.lr.items() if any(_matches(n, k) for n in names)}
        dropped += [k for k in st.lr if k not in keep and k not in dropped]
        stages.append(replace(st, lr=keep))
    return (replace(tcfg, stages=stages) if dropped else tcfg), dropped
