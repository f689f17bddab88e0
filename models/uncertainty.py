"""Predictive uncertainty: Gaussian negative log-likelihood heads and Monte-Carlo dropout sampling.

Gaussian heads write a flat output vector so that any backbone with ``num_outputs = loss.num_outputs``
can be trained with them and sampled with :func:`sample_posterior` like any other network:

- diagonal: ``[mean (n) | log-variance (n)]``                               -> ``2n`` outputs;
- full covariance (GaMPEN 2022 ``aleatoric_cov``): ``[mean (n) | raw Cholesky diagonal (n) |
  strictly-lower Cholesky entries (n(n-1)/2, row-major, ``torch.tril_indices(n, n, -1)`` order)]``
  -> ``n + n(n+1)/2`` outputs; the diagonal is made positive with softplus (or exp).
  GaMPEN used an LDL^T parametrisation with the same number of outputs; a Cholesky factor is equivalent
  and numerically simpler.

MC dropout (Gal & Ghahramani 2016): dropout stays active at prediction time while batch normalisation uses
its running statistics; each pass is one posterior sample. :func:`sample_posterior` draws ``n`` samples
by repeating the batch ``n`` times (in chunks) instead of looping, and runs a model's deterministic trunk
once when the model exposes ``split_for_posterior()``.
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterator, Literal, Mapping

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sim2obs.errors import Sim2obsValueError
from sim2obs.models.engine import resolve_precision

__all__ = [
    "DiagonalGaussianNLL",
    "FullCovarianceGaussianNLL",
    "DiagonalGaussianHead",
    "FullCovarianceGaussianHead",
    "diagonal_gaussian_nll",
    "mean_and_scale_tril",
    "full_gaussian_nll",
    "DROPOUT_TYPES",
    "enable_mc_dropout",
    "mc_dropout_mode",
    "sample_posterior",
    "sample_posterior_loop",
    "trunk_and_head",
]

SAMPLING_PRECISIONS = ("auto", "fp32", "bf16", "fp16")

Reduction = Literal["mean", "sum", "none"]
_LOG_2PI = math.log(2.0 * math.pi)


def _reduce(per_sample: Tensor, reduction: Reduction) -> Tensor:
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    if reduction == "none":
        return per_sample
    raise Sim2obsValueError("unknown reduction", value=reduction, allowed=["mean", "sum", "none"])


def _check_layout(outputs: Tensor, targets: Tensor, width: int, what: str) -> None:
    n = targets.shape[-1]
    if outputs.shape[-1] != width or outputs.shape[:-1] != targets.shape[:-1]:
        raise Sim2obsValueError(f"{what} outputs must be (..., {width}) for targets (..., {n})",
                                value=(tuple(outputs.shape), tuple(targets.shape)))


# ----------------------------------------------------------------------------- diagonal Gaussian


def diagonal_gaussian_nll(outputs: Tensor, targets: Tensor, reduction: Reduction = "mean",
                          min_log_var: float = -15.0, max_log_var: float = 15.0) -> Tensor:
    """Gaussian NLL with independent targets (in nats).

    ``outputs`` ``(B, 2n)`` = ``[mean | log-variance]``, ``targets`` ``(B, n)``. Per galaxy:
    ``0.5 * sum_i (log s2_i + (y_i - mu_i)^2 / s2_i + log 2 pi)``; the log-variance is clamped to
    ``[min_log_var, max_log_var]``. ``reduction``: mean or sum over galaxies, or ``"none"`` -> ``(B,)``.
    """
    n = targets.shape[-1]
    _check_layout(outputs, targets, 2 * n, "diagonal Gaussian")
    mean, log_var = outputs[..., :n], outputs[..., n:].clamp(min_log_var, max_log_var)
    per_sample = 0.5 * (log_var + (targets - mean) ** 2 * torch.exp(-log_var) + _LOG_2PI).sum(-1)
    return _reduce(per_sample, reduction)


class DiagonalGaussianNLL(nn.Module):
    """Loss module for the ``[mean | log-variance]`` layout; ``num_outputs = 2 * num_targets``."""

    def __init__(self, num_targets: int, reduction: Reduction = "mean"):
        super().__init__()
        self.num_targets = int(num_targets)
        self.num_outputs = 2 * self.num_targets
        self.reduction = reduction

    def split(self, outputs: Tensor) -> tuple[Tensor, Tensor]:
        """``(..., 2n)`` -> mean ``(..., n)``, variance ``(..., n)``."""
        n = self.num_targets
        return outputs[..., :n], torch.exp(outputs[..., n:])

    def forward(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return diagonal_gaussian_nll(outputs, targets, self.reduction)


# ----------------------------------------------------------------------------- full covariance


def _positive(raw: Tensor, activation: str) -> Tensor:
    if activation == "softplus":
        return F.softplus(raw) + 1e-6
    if activation == "exp":
        return torch.exp(raw.clamp(max=30.0))
    raise Sim2obsValueError("unknown diagonal activation", value=activation, allowed=["softplus", "exp"])


def mean_and_scale_tril(outputs: Tensor, num_targets: int,
                        diag_activation: Literal["softplus", "exp"] = "softplus") -> tuple[Tensor, Tensor]:
    """Full-covariance layout ``(..., n + n(n+1)/2)`` -> mean ``(..., n)``, Cholesky factor ``(..., n, n)``.

    The factor ``L`` is lower triangular with a positive diagonal; the covariance is ``L @ L.T``.
    """
    n = num_targets
    width = n + n * (n + 1) // 2
    if outputs.shape[-1] != width:
        raise Sim2obsValueError(f"full-covariance outputs must have {width} columns for {n} targets",
                                value=tuple(outputs.shape))
    mean = outputs[..., :n]
    diag = _positive(outputs[..., n:2 * n], diag_activation)
    rows, cols = torch.tril_indices(n, n, -1, device=outputs.device)
    scale_tril = torch.diag_embed(diag)
    if n > 1:
        off = torch.zeros_like(scale_tril)
        off[..., rows, cols] = outputs[..., 2 * n:]
        scale_tril = scale_tril + off
    return mean, scale_tril


def full_gaussian_nll(outputs: Tensor, targets: Tensor, reduction: Reduction = "mean",
                      diag_activation: Literal["softplus", "exp"] = "softplus") -> Tensor:
    """Multivariate Gaussian NLL with a learned full covariance (in nats).

    ``outputs`` ``(B, n + n(n+1)/2)`` (layout in the module docstring), ``targets`` ``(B, n)``. Per galaxy:
    ``0.5 * |L^-1 (y - mu)|^2 + sum_i log L_ii + 0.5 n log 2 pi``.
    """
    n = targets.shape[-1]
    _check_layout(outputs, targets, n + n * (n + 1) // 2, "full-covariance Gaussian")
    mean, scale_tril = mean_and_scale_tril(outputs, n, diag_activation)
    residual = (targets - mean).unsqueeze(-1)
    whitened = torch.linalg.solve_triangular(scale_tril, residual, upper=False).squeeze(-1)
    log_det_half = torch.diagonal(scale_tril, dim1=-2, dim2=-1).log().sum(-1)
    per_sample = 0.5 * (whitened ** 2).sum(-1) + log_det_half + 0.5 * n * _LOG_2PI
    return _reduce(per_sample, reduction)


class FullCovarianceGaussianNLL(nn.Module):
    """Loss module for the full-covariance layout; ``num_outputs = n + n(n+1)/2`` (9 for GaMPEN's 3)."""

    def __init__(self, num_targets: int, diag_activation: Literal["softplus", "exp"] = "softplus",
                 reduction: Reduction = "mean"):
        super().__init__()
        self.num_targets = int(num_targets)
        self.num_outputs = self.num_targets + self.num_targets * (self.num_targets + 1) // 2
        self.diag_activation = diag_activation
        self.reduction = reduction

    def mean_and_scale_tril(self, outputs: Tensor) -> tuple[Tensor, Tensor]:
        return mean_and_scale_tril(outputs, self.num_targets, self.diag_activation)

    def covariance(self, outputs: Tensor) -> Tensor:
        """``(..., num_outputs)`` -> covariance matrices ``(..., n, n)``."""
        _, scale_tril = self.mean_and_scale_tril(outputs)
        return scale_tril @ scale_tril.transpose(-1, -2)

    def forward(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return full_gaussian_nll(outputs, targets, self.reduction, self.diag_activation)


class DiagonalGaussianHead(nn.Module):
    """``Linear(in_features, 2n)`` writing ``[mean | log-variance]``; ``self.loss`` is the matching NLL."""

    def __init__(self, in_features: int, num_targets: int):
        super().__init__()
        self.loss = DiagonalGaussianNLL(num_targets)
        self.num_outputs = self.loss.num_outputs
        self.linear = nn.Linear(in_features, self.num_outputs)

    def forward(self, features: Tensor) -> Tensor:
        """``(B, in_features)`` -> ``(B, 2n)``."""
        return self.linear(features)


class FullCovarianceGaussianHead(nn.Module):
    """``Linear(in_features, n + n(n+1)/2)`` writing mean and Cholesky factor; ``self.loss`` the NLL.

    The biases of the Cholesky entries start at the identity factor (zero off-diagonal, unit diagonal),
    so an untrained head predicts roughly unit covariance.
    """

    def __init__(self, in_features: int, num_targets: int,
                 diag_activation: Literal["softplus", "exp"] = "softplus"):
        super().__init__()
        self.loss = FullCovarianceGaussianNLL(num_targets, diag_activation)
        self.num_outputs = self.loss.num_outputs
        self.linear = nn.Linear(in_features, self.num_outputs)
        n = self.loss.num_targets
        unit = math.log(math.e - 1.0) if diag_activation == "softplus" else 0.0  # activation^-1(1)
        with torch.no_grad():
            self.linear.bias[n:2 * n].fill_(unit)
            self.linear.bias[2 * n:].zero_()

    def forward(self, features: Tensor) -> Tensor:
        """``(B, in_features)`` -> ``(B, n + n(n+1)/2)``."""
        return self.linear(features)


# ----------------------------------------------------------------------------- MC dropout

DROPOUT_TYPES: tuple[type[nn.Module], ...] = (
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout,
)


def _dropout_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, DROPOUT_TYPES) and m.p > 0]


def enable_mc_dropout(model: nn.Module) -> nn.Module:
    """Put ``model`` in eval mode except its dropout modules (train mode). Returns ``model``.

    Batch normalisation then uses its running statistics and does not update them.
    """
    model.eval()
    for module in model.modules():
        if isinstance(module, DROPOUT_TYPES):
            module.train()
    return model


@contextlib.contextmanager
def mc_dropout_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Context manager: :func:`enable_mc_dropout` inside, every module's previous mode restored after."""
    modes = {module: module.training for module in model.modules()}
    try:
        yield enable_mc_dropout(model)
    finally:
        for module, training in modes.items():
            module.training = training


def _batch_size(x: Tensor | Mapping[str, Tensor]) -> int:
    if isinstance(x, Mapping):
        sizes = {int(v.shape[0]) for v in x.values()}
        if len(sizes) != 1:
            raise Sim2obsValueError("all inputs must share the batch size", value=sorted(sizes))
        return sizes.pop()
    return int(x.shape[0])


def _repeat(x: Tensor | Mapping[str, Tensor], copies: int) -> Tensor | dict[str, Tensor]:
    """``(B, ...)`` -> ``(copies * B, ...)``: copy ``k`` occupies rows ``k*B .. (k+1)*B - 1``."""
    if isinstance(x, Mapping):
        return {key: _repeat(value, copies) for key, value in x.items()}
    if copies == 1:
        return x
    return x.repeat(copies, *([1] * (x.dim() - 1)))


def _check_n(n: int) -> None:
    if int(n) < 1:
        raise Sim2obsValueError("the number of posterior samples must be positive", value=n)


def _require_dropout(model: nn.Module) -> None:
    if not _dropout_modules(model):
        raise Sim2obsValueError(
            f"{type(model).__name__} has no dropout with p > 0: MC-dropout samples would all be equal")


def _sampling_setup(model: nn.Module, precision: str) -> tuple[torch.dtype | None, bool, str]:
    """Autocast dtype (None: fp32), channels-last flag and device type for sampling ``model``.

    ``precision`` "auto" defers to the training engine's decision
    (:func:`sim2obs.models.engine.resolve_precision`: bf16 + channels-last where the device runs bf16
    natively), so samples are drawn at the precision the network was trained and validated at."""
    if precision not in SAMPLING_PRECISIONS:
        raise Sim2obsValueError("unknown sampling precision", value=precision, allowed=list(SAMPLING_PRECISIONS))
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    resolved, channels_last = resolve_precision(device, precision)
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(resolved), channels_last, device.type


def _channels_last(x: Tensor | Mapping[str, Tensor]) -> Tensor | dict[str, Tensor]:
    """4-D image tensors in channels-last memory format (mkldnn then runs the NHWC kernels)."""
    if isinstance(x, Mapping):
        return {key: _channels_last(value) for key, value in x.items()}
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def _split_sequential(seq: nn.Sequential) -> tuple[nn.Module | None, nn.Module]:
    """Split a plain ``nn.Sequential`` before its first child holding dropout (recursing into a plain
    ``nn.Sequential`` child): everything before that point is deterministic in MC-dropout mode."""
    children = list(seq)
    for i, child in enumerate(children):
        if not _dropout_modules(child):
            continue
        inner_trunk, inner_head = (_split_sequential(child) if type(child) is nn.Sequential  # noqa: E721
                                   else (None, child))
        trunk = children[:i] + ([inner_trunk] if inner_trunk is not None else [])
        if not trunk:
            return None, seq
        return nn.Sequential(*trunk), nn.Sequential(inner_head, *children[i + 1:])
    return None, seq


def trunk_and_head(model: nn.Module, use_trunk: bool = True) -> tuple[Callable | None, Callable]:
    """``(trunk, head)`` with ``head(trunk(x)) == model(x)`` and every dropout in ``head``.

    The trunk is None when it cannot be separated. Declared by the model through
    ``split_for_posterior()`` (returning ``(trunk, head)`` or None), or found structurally for a plain
    ``nn.Sequential`` (exact type, so no overridden ``forward``): the children before the first one
    holding dropout with ``p > 0``. Nothing else is guessed: any other model is sampled whole."""
    if not use_trunk:
        return None, model
    split = getattr(model, "split_for_posterior", None)
    if callable(split):
        parts = split()
        return (None, model) if parts is None else parts
    if type(model) is nn.Sequential:  # noqa: E721 - a subclass may override forward
        return _split_sequential(model)
    return None, model


def sample_posterior(model: nn.Module, x: Tensor | Mapping[str, Tensor], n: int, chunk: int = 2048,
                     use_trunk: bool = True, precision: str = "auto",
                     draw: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """Draw ``n`` MC-dropout samples per galaxy: ``(n, B, num_outputs)`` float32.

    Dropout is active, batch normalisation in eval mode (running statistics used, never updated); every
    module's mode is restored afterwards. Runs without gradients. ``torch.manual_seed(s)`` before the call
    gives the same samples (same device, threads, ``chunk`` and ``precision``).

    Fast path: the batch is repeated so that one forward pass handles many samples; each pass handles at
    most ``chunk`` rows (samples x galaxies) to bound memory. Every row draws its own dropout masks, so
    the samples are distributed exactly as ``n`` separate passes (:func:`sample_posterior_loop`).
    When a deterministic trunk exists (:func:`trunk_and_head`: declared by ``split_for_posterior()`` or a
    plain ``nn.Sequential``) and ``use_trunk``, the trunk runs once on ``x`` and only the head sees the
    ``n`` copies. ``precision``: "auto" (the training engine's choice, bf16 autocast + channels-last
    where bf16 is native), "fp32", "bf16" or "fp16". A model that defines its own
    ``sample_posterior(x, n)`` is asked directly. ``x`` is a tensor ``(B, ...)`` or, for multi-input
    models, a dict of them. ``draw``: applied to every pass's float32 outputs ``(rows, num_outputs)``
    -> ``(rows, ...)`` (e.g. :class:`sim2obs.models.gaussian_head.GaussianDraw`, a draw from the
    Gaussian the pass predicts); the result is then ``(n, B, ...)``.
    """
    _check_n(n)
    own = getattr(model, "sample_posterior", None)
    if callable(own):
        out = own(x, n)
        return out if draw is None else draw(out.float().flatten(0, 1)).unflatten(0, tuple(out.shape[:2]))
    _require_dropout(model)
    if chunk < 1:
        raise Sim2obsValueError("chunk must be positive", value=chunk)
    dtype, channels_last, device_type = _sampling_setup(model, precision)
    batch = _batch_size(x)
    autocast = torch.autocast(device_type, dtype=dtype or torch.float32, enabled=dtype is not None)
    with torch.no_grad(), mc_dropout_mode(model), autocast:
        trunk, head = trunk_and_head(model, use_trunk)
        if channels_last:
            x = _channels_last(x)
        if trunk is not None:
            x = trunk(x)
        copies_per_pass = max(1, chunk // batch)
        samples: list[Tensor] = []
        drawn = 0
        while drawn < n:
            copies = min(copies_per_pass, n - drawn)
            out = head(_repeat(x, copies))
            out = out.float() if out.dtype in (torch.bfloat16, torch.float16) else out
            if draw is not None:
                with torch.autocast(device_type, enabled=False):
                    out = draw(out)
            samples.append(out.reshape(copies, batch, *out.shape[1:]))
            drawn += copies
    return torch.cat(samples, dim=0)


def sample_posterior_loop(model: nn.Module, x: Tensor | Mapping[str, Tensor], n: int) -> Tensor:
    """Reference MC-dropout sampler: ``n`` separate forward passes -> ``(n, B, num_outputs)``."""
    _check_n(n)
    _require_dropout(model)
    with torch.no_grad(), mc_dropout_mode(model):
        return torch.stack([model(x) for _ in range(n)], dim=0)
