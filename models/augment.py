"""Image augmentation on batched tensors, on whatever device they live.

Training augmentation follows Dobbels et al. (2019, §3.1): a random rotation (0-360 deg), a
random zoom (0.7-1.3) and random horizontal and vertical flips, drawn per object. Test-time
augmentation (Wu & Boada 2019, appendix A.5) averages predictions over the 8 exact, lossless
transforms of the dihedral group of the square (:func:`dihedral`).

Images are ``(B, C, H, W)`` tensors; the inputs of one object are a dict ``{stack: (B, C, H, W)}``.
Tensors of any other rank in that dict (e.g. ``(B, F)`` catalogue features) pass through
unchanged. Random draws come from a ``torch.Generator`` on the CPU, so a transform is
reproducible given the generator's state, whatever the device of the images.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

from sim2obs.errors import Sim2obsValueError

__all__ = ["Augment", "DIHEDRAL", "affine", "dihedral", "tta_mean"]

DIHEDRAL = tuple(range(8))
"""Indices of the 8 dihedral transforms: ``k % 4`` quarter turns, then a left-right flip if ``k >= 4``."""

PADDING_MODES = ("zeros", "border", "reflection")


def affine(x: Tensor, angle_deg: Tensor | float, zoom: Tensor | float = 1.0, flip_x: Tensor | bool = False,
           flip_y: Tensor | bool = False, padding_mode: str = "zeros") -> Tensor:
    """Resample images ``x`` (B, C, H, W) about their centre, bilinearly.

    Each object is first flipped (``flip_x``: left-right, ``flip_y``: up-down), then rotated
    counter-clockwise by ``angle_deg`` degrees as displayed with row 0 on top (90 deg equals
    ``torch.rot90(x, 1, dims=(-2, -1))``), then magnified by ``zoom`` (> 1 zooms in). Parameters
    are scalars or ``(B,)`` tensors. Pixels mapped from outside the image follow ``padding_mode``.
    Non-square images are rotated in pixel units, so shapes are not distorted.
    """
    if x.ndim != 4:
        raise Sim2obsValueError("affine expects images of shape (B, C, H, W)", value=tuple(x.shape))
    if padding_mode not in PADDING_MODES:
        raise Sim2obsValueError("unknown padding mode", value=padding_mode, allowed=list(PADDING_MODES))
    b, _, h, w = x.shape
    dtype = x.dtype if x.is_floating_point() else torch.float32

    def per_object(v) -> Tensor:
        return torch.as_tensor(v, dtype=torch.float64).expand(b).clone()

    theta = per_object(angle_deg) * (math.pi / 180.0)
    zoom_t = per_object(zoom)
    if bool((zoom_t <= 0).any()):
        raise Sim2obsValueError("zoom must be positive", value=zoom_t.min().item())
    sx = 1.0 - 2.0 * per_object(flip_x)
    sy = 1.0 - 2.0 * per_object(flip_y)
    cos, sin = torch.cos(theta), torch.sin(theta)
    # Output pixel p_out (x right, y down, centred, in pixels) samples the input at
    # p_in = R(theta) diag(sx, sy) p_out / zoom; affine_grid works in coordinates normalised by
    # (W/2, H/2), hence the aspect factors.
    a11 = cos * sx / zoom_t
    a12 = -sin * sy / zoom_t * (h / w)
    a21 = sin * sx / zoom_t * (w / h)
    a22 = cos * sy / zoom_t
    zeros = torch.zeros_like(a11)
    mat = torch.stack([torch.stack([a11, a12, zeros], -1), torch.stack([a21, a22, zeros], -1)], -2)
    grid = F.affine_grid(mat.to(device=x.device, dtype=dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x.to(dtype), grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)


def dihedral(x: Tensor, k: int) -> Tensor:
    """Transform ``k`` (0-7) of the dihedral group on the last two axes: ``k % 4`` quarter turns
    (``torch.rot90``), then a left-right flip when ``k >= 4``. Exact (no interpolation); odd
    ``k`` swaps height and width, so use square images."""
    if k not in DIHEDRAL:
        raise Sim2obsValueError("dihedral transform index out of range", value=k, allowed="0..7")
    out = torch.rot90(x, k % 4, dims=(-2, -1))
    return torch.flip(out, dims=(-1,)) if k >= 4 else out


def tta_mean(forward: Callable[[dict[str, Tensor]], Tensor], inputs: Mapping[str, Tensor],
             transforms: Sequence[int] = DIHEDRAL) -> Tensor:
    """Mean of ``forward(transformed inputs)`` over the dihedral ``transforms``; every image
    stack (4-D tensor) of an object gets the same transform. ``forward`` returns ``(B, T)``."""
    if not transforms:
        raise Sim2obsValueError("test-time augmentation needs at least one transform", value=list(transforms))
    total = None
    for k in transforms:
        out = forward({name: dihedral(t, k) if t.ndim == 4 else t for name, t in inputs.items()})
        total = out if total is None else total + out
    return total / len(transforms)


class Augment:
    """Random rotation, zoom and flips of batched image stacks (Dobbels et al. 2019, §3.1).

    Args:
        rotate: rotate by an angle drawn uniformly in [0, 360) degrees.
        flip: flip left-right and up-down, each with probability 1/2.
        zoom: ``[min, max]`` magnification, drawn uniformly (``[1, 1]``: no zoom).
        shared_across_stacks: give every image stack of one object the same transform (the
            stacks show the same galaxy); otherwise each stack draws its own.
        padding_mode: value of pixels mapped from outside the image: ``"zeros"`` (sky-subtracted
            images), ``"border"`` or ``"reflection"``.

    Calling ``augment(inputs, generator)`` maps ``{stack: (B, C, H, W)}`` to a new dict of the
    same shapes; draws come from ``generator`` (CPU; the global generator if None).
    """

    def __init__(self, rotate: bool = True, flip: bool = True, zoom: Sequence[float] = (0.7, 1.3),
                 shared_across_stacks: bool = True, padding_mode: str = "zeros"):
        self.rotate = rotate
        self.flip = flip
        self.zoom = zoom
        self.shared_across_stacks = shared_across_stacks
        self.padding_mode = padding_mode

    def _draw(self, b: int, generator: torch.Generator | None) -> dict[str, Tensor]:
        lo, hi = (float(z) for z in self.zoom)
        if not 0 < lo <= hi:
            raise Sim2obsValueError("zoom must be [min, max] with 0 < min <= max", value=list(self.zoom))
        u = torch.rand(4, b, generator=generator, dtype=torch.float64)
        return {
            "angle_deg": u[0] * 360.0 if self.rotate else torch.zeros(b, dtype=torch.float64),
            "zoom": lo + (hi - lo) * u[1],
            "flip_x": (u[2] < 0.5).double() if self.flip else torch.zeros(b, dtype=torch.float64),
            "flip_y": (u[3] < 0.5).double() if self.flip else torch.zeros(b, dtype=torch.float64),
        }

    def __call__(self, inputs: Mapping[str, Tensor], generator: torch.Generator | None = None) -> dict[str, Tensor]:
        images = [name for name in sorted(inputs) if inputs[name].ndim == 4]
        if not images:
            return dict(inputs)
        b = inputs[images[0]].shape[0]
        shared = self._draw(b, generator) if self.shared_across_stacks else None
        out = dict(inputs)
        for name in images:
            params = shared if shared is not None else self._draw(b, generator)
            out[name] = affine(inputs[name], padding_mode=self.padding_mode, **params)
        return out

    def __repr__(self) -> str:
        return (f"Augment(rotate={self.rotate}, flip={self.flip}, zoom={list(self.zoom)}, "
                f"shared_across_stacks={self.shared_across_stacks}, padding_mode={self.padding_mode!r})")
