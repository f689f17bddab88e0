"""Multi-branch network: one backbone per named input, features concatenated, one shared MLP head.

After the multi-branch ResNet-18 of the TNG100 mass study (§3.1 of the seed paper): an image and
kinematic maps of different sizes each go through their own backbone; the concatenated features feed
fully connected layers. Inputs can be switched off by configuration (``enabled``) for ablations.
"""
from __future__ import annotations

import difflib
from typing import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from sim2obs.errors import ConfigError, Sim2obsValueError
from sim2obs.models.resnet import resnet18

__all__ = ["MultiBranchNet", "multibranch_resnet18"]


def _as_list(value: int | Sequence[int] | None) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value]


def _check_enabled(enabled: Sequence[str] | None, known: Sequence[str], key: str) -> list[str]:
    """The enabled branch names in ``known`` order; unknown names raise with a did-you-mean hint."""
    if enabled is None:
        return list(known)
    enabled = [str(name) for name in enabled]
    for name in enabled:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"unknown branch; did you mean {close[0]!r}?" if close else "unknown branch"
            raise ConfigError(key, hint, value=name, allowed=list(known))
    if not enabled:
        raise ConfigError(key, "at least one branch must be enabled", value=enabled, allowed=list(known))
    return [name for name in known if name in enabled]


class MultiBranchNet(nn.Module):
    """One backbone per named input; concatenated features -> shared MLP -> ``(B, num_outputs)``.

    Args:
        branches: ``name -> backbone``; each backbone maps its input ``(B, C_name, H_name, W_name)`` to a
            feature vector ``(B, F_name)``. ``F_name`` is read from the backbone's ``num_features``
            attribute (e.g. a ``features_only`` ResNet) or given in ``feature_dims``.
        head_hidden: hidden widths of the shared MLP (``[]`` = a single linear layer).
        num_outputs: output size.
        enabled: names of the branches to use (default all). Disabled branches are dropped: they are not
            submodules, hold no parameters, are never called, and the head input shrinks accordingly.
        dropout: dropout probability before every linear layer of the head (0 = none). The backbones are
            then a deterministic trunk for MC-dropout sampling (:meth:`split_for_posterior`).
        feature_dims: ``name -> F_name`` for backbones without ``num_features``.

    ``forward(inputs)`` takes a dict ``name -> tensor``; keys of disabled branches (and any other extra
    keys) are ignored, so one data pipeline serves every ablation.
    """

    def __init__(
        self,
        branches: Mapping[str, nn.Module],
        head_hidden: int | Sequence[int] = (256,),
        num_outputs: int = 1,
        enabled: Sequence[str] | None = None,
        dropout: float = 0.0,
        feature_dims: Mapping[str, int] | None = None,
    ):
        super().__init__()
        if not branches:
            raise ConfigError("branches", "at least one branch is needed", value=dict(branches))
        if not 0.0 <= dropout < 1.0:
            raise Sim2obsValueError("dropout must be in [0, 1)", value=dropout)
        names = _check_enabled(enabled, list(branches), "enabled")
        feature_dims = dict(feature_dims or {})
        dims: dict[str, int] = {}
        for name in names:
            dim = feature_dims.get(name, getattr(branches[name], "num_features", None))
            if dim is None:
                raise ConfigError(f"feature_dims.{name}",
                                  "backbone has no num_features attribute; give its feature size")
            dims[name] = int(dim)
        self.branch_names = names
        self.feature_dims = dims
        self.num_outputs = int(num_outputs)
        self.dropout_p = float(dropout)
        self.input_channels = {n: getattr(branches[n], "in_channels", None) for n in names}
        self.min_input_size = {n: getattr(branches[n], "min_input_size", 1) for n in names}
        self.branches = nn.ModuleDict({name: branches[name] for name in names})

        layers: list[nn.Module] = []
        width = sum(dims.values())
        for hidden in _as_list(head_hidden):
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            layers += [nn.Linear(width, hidden), nn.ReLU(inplace=True)]
            width = hidden
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(width, num_outputs))
        self.head = nn.Sequential(*layers)
        self.num_features = sum(dims.values())

    def forward_features(self, inputs: Mapping[str, Tensor]) -> Tensor:
        """``{name: (B, C, H, W)}`` -> concatenated branch features ``(B, sum F_name)``."""
        missing = [name for name in self.branch_names if name not in inputs]
        if missing:
            raise Sim2obsValueError("inputs lack enabled branches", value=missing,
                                    allowed=sorted(inputs))
        return torch.cat([self.branches[name](inputs[name]) for name in self.branch_names], dim=1)

    def forward(self, inputs: Mapping[str, Tensor]) -> Tensor:
        """``{name: (B, C, H, W)}`` -> ``(B, num_outputs)``."""
        return self.head(self.forward_features(inputs))

    def split_for_posterior(self) -> tuple[Callable, Callable]:
        """``(trunk, head)``: the backbones are the trunk, the MLP (holding any dropout) the head."""
        return self.forward_features, self.head


def multibranch_resnet18(
    input_channels: Mapping[str, int],
    num_outputs: int = 1,
    small_input: bool | Mapping[str, bool] = False,
    head_hidden: int | Sequence[int] = (256,),
    enabled: Sequence[str] | None = None,
    dropout: float = 0.0,
) -> MultiBranchNet:
    """A :class:`MultiBranchNet` with one feature-only ResNet-18 (512 features) per input.

    ``input_channels``: ``name -> channels`` (e.g. ``{"image": 1, "vmap": 1, "sigmamap": 1}``);
    ``small_input``: one flag for all branches or ``name -> flag`` (use it for small maps, e.g. 48-64 px
    kinematic maps). Only enabled branches are built.
    """
    names = _check_enabled(enabled, list(input_channels), "enabled")
    if isinstance(small_input, Mapping):
        unknown = sorted(set(small_input) - set(input_channels))
        if unknown:
            raise ConfigError("small_input", "flags for unknown inputs", value=unknown,
                              allowed=sorted(input_channels))
        flags = {name: bool(small_input.get(name, False)) for name in names}
    else:
        flags = {name: bool(small_input) for name in names}
    branches = {
        name: resnet18(in_channels=int(input_channels[name]), small_input=flags[name], features_only=True)
        for name in names
    }
    return MultiBranchNet(branches, head_hidden=head_hidden, num_outputs=num_outputs, dropout=dropout)
