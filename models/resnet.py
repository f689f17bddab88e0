"""ResNet-18/34/50 (He et al. 2016) written from scratch, state-dict compatible with torchvision.

Parameter and buffer names are identical to ``torchvision.models.resnet{18,34,50}`` (``conv1.weight``,
``bn1.running_mean``, ``layer1.0.conv1.weight``, ``layer2.0.downsample.0.weight``, ``fc.weight`` ...), so
torchvision checkpoints load with :func:`load_torchvision_state_dict` without renaming. The Bottleneck is
torchvision's "v1.5" (stride on the 3x3 convolution).

Shapes: input ``(B, in_channels, H, W)`` with any ``H, W`` (global average pooling); output
``(B, num_outputs)``; :meth:`ResNet.forward_features` gives ``(B, 512)`` (18/34) or ``(B, 2048)`` (50).
"""
from __future__ import annotations

from typing import Callable, Literal, Mapping, Sequence

import torch
from torch import Tensor, nn

from sim2obs.errors import Sim2obsValueError

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "resnet18",
    "resnet34",
    "resnet50",
    "load_torchvision_state_dict",
]


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or 1x1-projection) shortcut. ``expansion = 1``."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries the stride), 1x1 expand by 4, with a shortcut. ``expansion = 4``."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv1x1(in_planes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


_BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(nn.Module):
    """Residual network with torchvision's module names.

    Args:
        block: ``"basic"`` (ResNet-18/34) or ``"bottleneck"`` (ResNet-50 and deeper).
        layers: number of blocks in ``layer1..layer4``, e.g. ``(2, 2, 2, 2)`` for ResNet-18.
        in_channels: input channels (bands); any positive number.
        num_outputs: size of the ``fc`` head (ignored when ``features_only``).
        small_input: stem for small cutouts (~64 px): ``conv1`` is 3x3 stride 1 and there is no max-pool,
            so the first stage sees the full resolution. Key names are unchanged but ``conv1.weight`` has
            shape ``(64, in_channels, 3, 3)`` instead of ``(64, in_channels, 7, 7)``.
        features_only: build no ``fc``; ``forward`` returns the pooled features ``(B, num_features)``.
        dropout: dropout probability applied to the pooled features just before ``fc`` (to the returned
            features if ``features_only``); 0 = none. It is the only dropout, so the convolutional trunk is
            deterministic (see :meth:`split_for_posterior`).
        zero_init_residual: zero the last BN scale of every block (torchvision option, default off).

    Attributes: ``num_features`` (512 or 2048), ``in_channels``, ``min_input_size`` (smallest side in px).
    """

    def __init__(
        self,
        block: Literal["basic", "bottleneck"],
        layers: Sequence[int],
        in_channels: int = 3,
        num_outputs: int = 1,
        small_input: bool = False,
        features_only: bool = False,
        dropout: float = 0.0,
        zero_init_residual: bool = False,
    ):
        super().__init__()
        if block not in _BLOCKS:
            raise Sim2obsValueError("unknown ResNet block", value=block, allowed=sorted(_BLOCKS))
        if len(layers) != 4 or any(int(n) < 1 for n in layers):
            raise Sim2obsValueError("layers must be four positive block counts", value=list(layers))
        if in_channels < 1:
            raise Sim2obsValueError("in_channels must be positive", value=in_channels)
        if not 0.0 <= dropout < 1.0:
            raise Sim2obsValueError("dropout must be in [0, 1)", value=dropout)
        block_cls = _BLOCKS[block]
        self.block = block
        self.layers = tuple(int(n) for n in layers)
        self.in_channels = int(in_channels)
        self.num_outputs = int(num_outputs)
        self.small_input = bool(small_input)
        self.features_only = bool(features_only)
        self.dropout = float(dropout)
        self.zero_init_residual = bool(zero_init_residual)
        self.num_features = 512 * block_cls.expansion
        self.min_input_size = 1 if small_input else 8
        self._in_planes = 64

        if small_input:
            self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity() if small_input else nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block_cls, 64, self.layers[0], stride=1)
        self.layer2 = self._make_layer(block_cls, 128, self.layers[1], stride=2)
        self.layer3 = self._make_layer(block_cls, 256, self.layers[2], stride=2)
        self.layer4 = self._make_layer(block_cls, 512, self.layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.head_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = None if features_only else nn.Linear(self.num_features, num_outputs)
        self._init_weights(zero_init_residual)

    def _make_layer(self, block_cls, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self._in_planes != planes * block_cls.expansion:
            downsample = nn.Sequential(
                _conv1x1(self._in_planes, planes * block_cls.expansion, stride),
                nn.BatchNorm2d(planes * block_cls.expansion),
            )
        stage = [block_cls(self._in_planes, planes, stride, downsample)]
        self._in_planes = planes * block_cls.expansion
        stage += [block_cls(self._in_planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def _init_weights(self, zero_init_residual: bool) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, Bottleneck):
                    nn.init.zeros_(module.bn3.weight)
                elif isinstance(module, BasicBlock):
                    nn.init.zeros_(module.bn2.weight)

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, in_channels, H, W)`` -> pooled features ``(B, num_features)``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward_head(self, features: Tensor) -> Tensor:
        """``(B, num_features)`` -> ``(B, num_outputs)``: dropout, then ``fc`` unless features_only."""
        features = self.head_dropout(features)
        return features if self.fc is None else self.fc(features)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_channels, H, W)`` -> ``(B, num_outputs)``, or ``(B, num_features)`` if features_only."""
        return self.forward_head(self.forward_features(x))

    def split_for_posterior(self) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]:
        """``(trunk, head)`` for MC-dropout sampling: the trunk has no dropout, the head holds it."""
        return self.forward_features, self.forward_head


def resnet18(in_channels: int = 3, num_outputs: int = 1, small_input: bool = False,
             features_only: bool = False, dropout: float = 0.0) -> ResNet:
    """ResNet-18: BasicBlock, ``[2, 2, 2, 2]``, 512 features."""
    return ResNet("basic", (2, 2, 2, 2), in_channels, num_outputs, small_input, features_only, dropout)


def resnet34(in_channels: int = 3, num_outputs: int = 1, small_input: bool = False,
             features_only: bool = False, dropout: float = 0.0) -> ResNet:
    """ResNet-34: BasicBlock, ``[3, 4, 6, 3]``, 512 features."""
    return ResNet("basic", (3, 4, 6, 3), in_channels, num_outputs, small_input, features_only, dropout)


def resnet50(in_channels: int = 3, num_outputs: int = 1, small_input: bool = False,
             features_only: bool = False, dropout: float = 0.0) -> ResNet:
    """ResNet-50: Bottleneck, ``[3, 4, 6, 3]``, 2048 features."""
    return ResNet("bottleneck", (3, 4, 6, 3), in_channels, num_outputs, small_input, features_only, dropout)


def load_torchvision_state_dict(model: ResNet, state_dict: Mapping[str, Tensor]) -> list[str]:
    """Load torchvision ResNet weights into ``model``, adapting what cannot be copied as is.

    - ``conv1.weight`` for ``in_channels != 3``: the RGB kernels are averaged over the colour axis and
      repeated ``in_channels`` times, scaled by ``3 / in_channels`` so that an image whose channels are
      all equal gives the same first-layer response as the grey RGB image did.
    - ``conv1.weight`` with another kernel size (``small_input`` stem), and ``fc.*`` of another size or
      absent from the model (``features_only``), keep their fresh initialisation.

    Every other key must match in name and shape (else :class:`Sim2obsValueError`).
    Returns the sorted list of model keys that were *not* loaded from ``state_dict``.
    """
    own = model.state_dict()
    incoming = dict(state_dict)
    kept_fresh: list[str] = []

    conv1 = incoming.get("conv1.weight")
    if conv1 is not None:
        target_shape = own["conv1.weight"].shape
        if conv1.shape[2:] != target_shape[2:]:
            del incoming["conv1.weight"]
            kept_fresh.append("conv1.weight")
        elif conv1.shape[1] != target_shape[1]:
            channels = target_shape[1]
            grey = conv1.mean(dim=1, keepdim=True)
            incoming["conv1.weight"] = grey.repeat(1, channels, 1, 1) * (conv1.shape[1] / channels)

    for key in ("fc.weight", "fc.bias"):
        if key in incoming and (key not in own or incoming[key].shape != own[key].shape):
            del incoming[key]
            if key in own:
                kept_fresh.append(key)

    unexpected = sorted(set(incoming) - set(own))
    missing = sorted(set(own) - set(incoming) - set(kept_fresh))
    if unexpected or missing:
        raise Sim2obsValueError(
            "state dict does not fit this ResNet",
            value={"unexpected": unexpected[:10], "missing": missing[:10]},
        )
    mismatched = [k for k, v in incoming.items() if v.shape != own[k].shape]
    if mismatched:
        raise Sim2obsValueError(
            "state dict shapes differ",
            value={k: (tuple(incoming[k].shape), tuple(own[k].shape)) for k in mismatched[:10]},
        )
    own.update({k: v.to(dtype=own[k].dtype) for k, v in incoming.items()})
    model.load_state_dict(own)
    return sorted(kept_fresh)
