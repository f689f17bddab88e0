"""Shallow CNNs from the seed papers: Dobbels et al. (2019) "custom network" and GaMorNet/GaMPEN.

Shapes: input ``(B, C, H, W)``, output ``(B, num_outputs)``. Both accept any input size at or above
``min_input_size``: the Dobbels network ends in a global max-pool, GaMorNet in an adaptive average pool
to a fixed grid (``pooled_size``), so the dense layers never depend on the image size.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sim2obs.errors import Sim2obsValueError

__all__ = ["DobbelsCNN", "GaMorNetCNN"]


def _check_dropout(p: float) -> float:
    if not 0.0 <= p < 1.0:
        raise Sim2obsValueError("dropout must be in [0, 1)", value=p)
    return float(p)


def _check_size(x: Tensor, minimum: int, name: str) -> None:
    if min(x.shape[-2:]) < minimum:
        raise Sim2obsValueError(f"{name} needs images of at least {minimum}x{minimum} px",
                                value=tuple(x.shape[-2:]))


class DobbelsCNN(nn.Module):
    """The custom CNN of Dobbels et al. (2019, §3.1), after Dieleman et al. (2015).

    Four convolutions with 32, 64, 128, 128 filters and kernels 5, 4, 3, 3, no zero padding, ReLU; a 2x2
    max-pool followed by dropout after each of the first three; a global max-pool after the fourth (no
    dropout); dense ``hidden`` (512, ReLU); dense ``num_outputs`` (37 = the GZ2 answers). Glorot-uniform
    weights and zero biases (the Keras defaults the paper used).

    Args:
        in_channels: input bands (the paper used the g band only: 1).
        num_outputs: output size (37 for GZ2 answers, 1 for M/L).
        dropout: dropout probability after the first three pooling layers. The paper does not state it;
            0.25 is the Keras-example value.
        hidden: width of the dense hidden layer (512 in the paper).
        output_relu: apply ReLU to the output (the paper does, before the GZ2 probability normalisation
            :class:`sim2obs.models.gz2.HierarchicalProbabilityNorm`).

    Designed for 69x69 inputs; works for any size >= 42 px (``min_input_size``). :meth:`forward_features`
    returns the ``(B, hidden)`` dense features. Dropout sits in the convolutional part, so there is no
    deterministic trunk worth reusing for MC-dropout sampling.
    """

    min_input_size = 42

    def __init__(self, in_channels: int = 1, num_outputs: int = 37, dropout: float = 0.25,
                 hidden: int = 512, output_relu: bool = False):
        super().__init__()
        self.in_channels = int(in_channels)
        self.num_outputs = int(num_outputs)
        self.dropout = _check_dropout(dropout)
        self.hidden = int(hidden)
        self.num_features = self.hidden
        self.output_relu = bool(output_relu)
        self.conv1 = nn.Conv2d(in_channels, 32, kernel_size=5)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=4)
        self.conv3 = nn.Conv2d(64, 128, kernel_size=3)
        self.conv4 = nn.Conv2d(128, 128, kernel_size=3)
        self.pool = nn.MaxPool2d(2)
        self.block_dropout = nn.Dropout(dropout)
        self.fc1 = nn.Linear(128, hidden)
        self.fc2 = nn.Linear(hidden, num_outputs)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, in_channels, H, W)`` -> dense features ``(B, hidden)`` (after ReLU)."""
        _check_size(x, self.min_input_size, "DobbelsCNN")
        for conv in (self.conv1, self.conv2, self.conv3):
            x = self.block_dropout(self.pool(F.relu(conv(x))))
        x = F.relu(self.conv4(x))
        x = torch.amax(x, dim=(-2, -1))  # global max-pool -> (B, 128)
        return F.relu(self.fc1(x))

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_channels, H, W)`` -> ``(B, num_outputs)``."""
        out = self.fc2(self.forward_features(x))
        return F.relu(out) if self.output_relu else out


class GaMorNetCNN(nn.Module):
    """GaMorNet-style CNN (Ghosh et al. 2020) as used inside GaMPEN (Ghosh et al. 2021/2022).

    Five convolutions (widths ``conv_channels``, kernels ``conv_kernels``; the first with stride
    ``first_stride``, all with "same" padding ``k // 2``), ReLU, 3x3 stride-2 max-pooling after
    convolutions 1, 2 and 5 (each followed by local response normalisation if ``local_response_norm``,
    as in GaMorNet), then an adaptive average pool to ``pooled_size x pooled_size`` and three fully
    connected layers (``dense`` hidden widths, ReLU, then a linear output of ``num_outputs``).

    The adaptive pool makes any input of at least ``min_input_size`` (57 px) valid; at GaMPEN's 239 px
    cutouts the grid is already 6x6 and the pool is the identity.

    Dropout (probability ``dropout``):
        - ``mc_dropout=True``: before **every** weight layer (the five convolutions and three dense
          layers), as Monte-Carlo dropout (Gal & Ghahramani 2016) prescribes and GaMPEN does.
        - ``mc_dropout=False``: only in the dense head, before each of the three dense layers; the
          convolutional trunk is then deterministic and :meth:`split_for_posterior` exposes it.

    Default widths are GaMorNet's (96, 256, 384, 384, 256 filters; 4096, 4096 dense units; ~58 M
    parameters). Shrink ``conv_channels`` and ``dense`` for small data or CPU work.
    :meth:`forward_features` returns the last hidden dense layer ``(B, dense[-1])``.
    """

    min_input_size = 57

    def __init__(
        self,
        in_channels: int = 1,
        num_outputs: int = 3,
        dropout: float = 0.1,
        mc_dropout: bool = True,
        conv_channels: Sequence[int] = (96, 256, 384, 384, 256),
        conv_kernels: Sequence[int] = (11, 5, 3, 3, 3),
        first_stride: int = 4,
        dense: Sequence[int] = (4096, 4096),
        pooled_size: int = 6,
        local_response_norm: bool = True,
    ):
        super().__init__()
        conv_channels, conv_kernels, dense = list(conv_channels), list(conv_kernels), list(dense)
        if len(conv_channels) != 5 or len(conv_kernels) != 5:
            raise Sim2obsValueError("GaMorNetCNN has five convolutions",
                                    value={"conv_channels": conv_channels, "conv_kernels": conv_kernels})
        if len(dense) != 2:
            raise Sim2obsValueError("GaMorNetCNN has two hidden dense layers (plus the output)", value=dense)
        self.in_channels = int(in_channels)
        self.num_outputs = int(num_outputs)
        self.dropout = _check_dropout(dropout)
        self.mc_dropout = bool(mc_dropout)
        self.num_features = int(dense[-1])
        self.pooled_size = int(pooled_size)

        def conv_dropout() -> nn.Module:
            return nn.Dropout(dropout) if (mc_dropout and dropout > 0) else nn.Identity()

        def dense_dropout() -> nn.Module:
            return nn.Dropout(dropout) if dropout > 0 else nn.Identity()

        def pool_block() -> list[nn.Module]:
            block: list[nn.Module] = [nn.MaxPool2d(kernel_size=3, stride=2)]
            if local_response_norm:
                block.append(nn.LocalResponseNorm(size=5))
            return block

        layers: list[nn.Module] = []
        channels = in_channels
        for i, (width, kernel) in enumerate(zip(conv_channels, conv_kernels)):
            stride = first_stride if i == 0 else 1
            layers += [conv_dropout(), nn.Conv2d(channels, width, kernel, stride=stride, padding=kernel // 2),
                       nn.ReLU(inplace=True)]
            if i in (0, 1, 4):
                layers += pool_block()
            channels = width
        layers.append(nn.AdaptiveAvgPool2d((pooled_size, pooled_size)))
        self.features = nn.Sequential(*layers)
        flat = channels * pooled_size * pooled_size
        self.hidden = nn.Sequential(
            dense_dropout(), nn.Linear(flat, dense[0]), nn.ReLU(inplace=True),
            dense_dropout(), nn.Linear(dense[0], dense[1]), nn.ReLU(inplace=True),
        )
        self.output = nn.Sequential(dense_dropout(), nn.Linear(dense[1], num_outputs))

    def forward_conv(self, x: Tensor) -> Tensor:
        """``(B, in_channels, H, W)`` -> flattened pooled maps ``(B, conv_channels[-1] * pooled_size**2)``."""
        _check_size(x, self.min_input_size, "GaMorNetCNN")
        return torch.flatten(self.features(x), 1)

    def forward_dense(self, flat: Tensor) -> Tensor:
        """Flattened conv maps -> ``(B, num_outputs)`` through the three dense layers."""
        return self.output(self.hidden(flat))

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, in_channels, H, W)`` -> last hidden dense layer ``(B, dense[-1])``."""
        return self.hidden(self.forward_conv(x))

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_channels, H, W)`` -> ``(B, num_outputs)`` (linear output)."""
        return self.forward_dense(self.forward_conv(x))

    def split_for_posterior(self) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]] | None:
        """``(trunk, head)`` if dropout lives only in the dense head (``mc_dropout=False``), else None."""
        if self.mc_dropout and self.dropout > 0:
            return None
        return self.forward_conv, self.forward_dense
