"""Spatial transformer front end (Jaderberg et al. 2015) as in GaMPEN (Ghosh et al. 2021).

A localisation network (two convolutions + fully connected regression) predicts the six parameters of an
affine map per image; ``F.affine_grid`` / ``F.grid_sample`` resample the input with it. The regression
layer starts at zero weights and the identity bias, so an untrained transformer passes images through
unchanged. Optionally the map is bounded about the identity (``max_translation``, ``max_linear_change``),
so that the frame's centre always stays on the image (unbounded, in bt_posterior's quick set-up at lr
1e-3 one trainer seed of six translated its frame off the image within ten epochs and fed the network
zeros from then on). Shapes: ``(B, C, H, W)`` in and out.
"""
from __future__ import annotations

from typing import Callable, Literal, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sim2obs.errors import Sim2obsValueError
from sim2obs.models.cnn import GaMorNetCNN

__all__ = ["SpatialTransformer", "STNWrapped", "with_stn", "gampen"]

_IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


class SpatialTransformer(nn.Module):
    """Learned affine resampling of the input images.

    Localisation: ``conv(k0) -> maxpool 3/2 -> ReLU -> conv(k1) -> maxpool 3/2 -> ReLU`` (GaMPEN's layout),
    an adaptive average pool to ``pooled_size x pooled_size`` (so any image size works), then
    ``Linear -> ReLU -> Linear(6)``. The last layer is initialised to zero weights and the identity bias.

    Args:
        in_channels: image channels.
        channels: widths of the two localisation convolutions (GaMPEN: 64, 96).
        kernels: their kernel sizes (GaMPEN: 11, 9).
        hidden: width of the hidden regression layer (GaMPEN: 32).
        pooled_size: side of the pooled localisation map fed to the regression.
        padding_mode: ``grid_sample`` padding outside the input (``"zeros"``, ``"border"``, ``"reflection"``).
        max_translation: largest shift of the frame's centre, in normalised coordinates (the image spans
            [-1, 1]: 0.3 = 15 % of its side); None: unbounded.
        max_linear_change: largest change of each entry of the 2 x 2 linear part from the identity (0.4:
            scales between 0.6 and 1.4 per axis); None: unbounded.

    Bounded, each parameter is ``identity + bound * tanh((raw - identity) / bound)`` of the regression's
    output ``raw``: the identity at initialisation, the unbounded map for small changes (slope 1), and
    never beyond the bound.

    :meth:`theta` gives the ``(B, 2, 3)`` affine matrices in normalised coordinates (``[-1, 1]``, output
    -> input), :meth:`transform` (= ``forward``) the transformed images, e.g. to plot what the network
    looks at.
    """

    def __init__(
        self,
        in_channels: int = 1,
        channels: Sequence[int] = (64, 96),
        kernels: Sequence[int] = (11, 9),
        hidden: int = 32,
        pooled_size: int = 8,
        padding_mode: Literal["zeros", "border", "reflection"] = "zeros",
        max_translation: float | None = None,
        max_linear_change: float | None = None,
    ):
        super().__init__()
        channels, kernels = list(channels), list(kernels)
        if len(channels) != 2 or len(kernels) != 2:
            raise Sim2obsValueError("the localisation network has two convolutions",
                                    value={"channels": channels, "kernels": kernels})
        if padding_mode not in ("zeros", "border", "reflection"):
            raise Sim2obsValueError("unknown padding_mode", value=padding_mode,
                                    allowed=["zeros", "border", "reflection"])
        for key, bound in (("max_translation", max_translation), ("max_linear_change", max_linear_change)):
            if bound is not None and not float(bound) > 0:
                raise Sim2obsValueError(f"{key} must be positive, or None for unbounded", value=bound)
        self.in_channels = int(in_channels)
        self.padding_mode = padding_mode
        self.max_translation = None if max_translation is None else float(max_translation)
        self.max_linear_change = None if max_linear_change is None else float(max_linear_change)
        inf = float("inf")
        lin, shift = self.max_linear_change or inf, self.max_translation or inf
        self.register_buffer("_bounds", torch.tensor([lin, lin, shift, lin, lin, shift]), persistent=False)
        # Smallest side for which both conv + 3/2-pool stages leave at least one pixel.
        after_second = 3 + kernels[1] - 1
        self.min_input_size = 2 * (after_second - 1) + 3 + kernels[0] - 1
        self.localization = nn.Sequential(
            nn.Conv2d(in_channels, channels[0], kernel_size=kernels[0]),
            nn.MaxPool2d(3, stride=2),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels[0], channels[1], kernel_size=kernels[1]),
            nn.MaxPool2d(3, stride=2),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d((pooled_size, pooled_size)),
            nn.Flatten(),
        )
        self.fc_loc = nn.Sequential(
            nn.Linear(channels[1] * pooled_size * pooled_size, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, 6),
        )
        nn.init.zeros_(self.fc_loc[2].weight)
        with torch.no_grad():
            self.fc_loc[2].bias.copy_(torch.tensor(_IDENTITY))

    def theta(self, x: Tensor) -> Tensor:
        """``(B, C, H, W)`` -> affine matrices ``(B, 2, 3)``."""
        if min(x.shape[-2:]) < self.min_input_size:
            raise Sim2obsValueError(
                f"SpatialTransformer needs images of at least {self.min_input_size} px",
                value=tuple(x.shape[-2:]))
        raw = self.fc_loc(self.localization(x))
        if self.max_translation is not None or self.max_linear_change is not None:
            identity, bounds = raw.new_tensor(_IDENTITY), self._bounds.to(raw.dtype)
            free = torch.isinf(bounds)
            safe = torch.where(free, torch.ones_like(bounds), bounds)  # finite in both branches: finite gradients
            change = raw - identity
            raw = identity + torch.where(free, change, safe * torch.tanh(change / safe))
        return raw.view(-1, 2, 3)

    def transform(self, x: Tensor) -> Tensor:
        """``(B, C, H, W)`` -> resampled images ``(B, C, H, W)``."""
        grid = F.affine_grid(self.theta(x).to(x.dtype), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, padding_mode=self.padding_mode, align_corners=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.transform(x)


class STNWrapped(nn.Module):
    """``backbone(stn(x))``: any backbone behind a :class:`SpatialTransformer`.

    Shapes follow the backbone: ``(B, C, H, W)`` -> ``backbone``'s output. ``transformed(x)`` returns the
    STN output for plots. For MC-dropout sampling the (dropout-free) transformer is part of the
    deterministic trunk: see :meth:`split_for_posterior`.
    """

    def __init__(self, stn: SpatialTransformer, backbone: nn.Module):
        super().__init__()
        self.stn = stn
        self.backbone = backbone
        self.in_channels = stn.in_channels
        self.num_outputs = getattr(backbone, "num_outputs", None)
        self.min_input_size = max(stn.min_input_size, getattr(backbone, "min_input_size", 1))

    def transformed(self, x: Tensor) -> Tensor:
        """The images as the backbone sees them ``(B, C, H, W)``."""
        return self.stn(x)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.backbone.forward_features(self.stn(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone(self.stn(x))

    def split_for_posterior(self) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]:
        """Trunk = STN (+ the backbone's own trunk if it has one); head = the rest of the backbone."""
        split = getattr(self.backbone, "split_for_posterior", None)
        inner = split() if callable(split) else None
        if inner is None:
            return self.stn, self.backbone
        trunk, head = inner
        return (lambda x: trunk(self.stn(x))), head


def with_stn(backbone: nn.Module, in_channels: int | None = None, **stn_kwargs) -> STNWrapped:
    """Put a :class:`SpatialTransformer` in front of ``backbone`` (channels taken from it if not given)."""
    channels = in_channels if in_channels is not None else getattr(backbone, "in_channels", None)
    if channels is None:
        raise Sim2obsValueError("with_stn needs in_channels (the backbone has no in_channels attribute)")
    return STNWrapped(SpatialTransformer(channels, **stn_kwargs), backbone)


def gampen(
    in_channels: int = 1,
    num_outputs: int = 3,
    dropout: float = 0.1,
    conv_channels: Sequence[int] = (96, 256, 384, 384, 256),
    dense: Sequence[int] = (4096, 4096),
    stn_channels: Sequence[int] = (64, 96),
    stn_kernels: Sequence[int] = (11, 9),
    stn_max_translation: float | None = None,
    stn_max_linear_change: float | None = None,
) -> STNWrapped:
    """GaMPEN: :class:`SpatialTransformer` + :class:`GaMorNetCNN` with dropout before every weight layer.

    ``num_outputs`` = 3 point estimates (L_B/L_T, R_e, flux). For the full-covariance Gaussian NLL of
    GaMPEN 2022 use ``FullCovarianceGaussianNLL(3).num_outputs`` (= 9). Dropout 0.1 is the rate GaMPEN
    found calibrated. Cutouts were 239 px; anything >= 57 px works. ``stn_max_translation`` and
    ``stn_max_linear_change`` bound the transformer's affine map (:class:`SpatialTransformer`; None:
    unbounded, as the paper's).
    """
    cnn = GaMorNetCNN(in_channels, num_outputs, dropout=dropout, mc_dropout=True,
                      conv_channels=conv_channels, dense=dense)
    stn = SpatialTransformer(in_channels, channels=stn_channels, kernels=stn_kernels,
                             max_translation=stn_max_translation, max_linear_change=stn_max_linear_change)
    return STNWrapped(stn, cnn)
