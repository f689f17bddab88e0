"""Compute-device selection: CUDA, then Apple MPS, then CPU, unless the config names one."""
from __future__ import annotations

from sim2obs.errors import Sim2obsValueError

DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")


def select_device(preference: str = "auto"):
    """Return a ``torch.device``.

    ``preference`` is ``"auto"`` (first available of cuda, mps, cpu), ``"cpu"``, ``"mps"``,
    ``"cuda"`` or ``"cuda:N"``. Asking for an accelerator that is absent is an error rather
    than a silent fall-back, so a run never reports CPU timings as GPU ones.
    """
    import torch

    pref = str(preference).lower()
    base = pref.split(":")[0]
    if base not in DEVICE_CHOICES:
        raise Sim2obsValueError("unknown device", value=preference, allowed=list(DEVICE_CHOICES))
    mps_ok = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if base == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if mps_ok else torch.device("cpu")
    if base == "cuda" and not torch.cuda.is_available():
        raise Sim2obsValueError("CUDA was requested but no CUDA device is available", value=preference)
    if base == "mps" and not mps_ok:
        raise Sim2obsValueError("MPS was requested but is not available", value=preference)
    return torch.device(pref)
