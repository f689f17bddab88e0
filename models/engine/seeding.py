"""Seeding and RNG state: every random stream of a run is keyed on (seed, stream, epoch, rank), and the
global torch / numpy / python RNG states go into each checkpoint, so a resumed run draws exactly what an
uninterrupted one did."""
from __future__ import annotations

import random
from typing import Any, Mapping

import numpy as np
import torch

__all__ = ["seed_everything"]

#: Independent per-epoch streams: DataLoader workers / shuffling, augmentation draws, evaluation loaders.
_STREAM_WORKERS, _STREAM_AUGMENT, _STREAM_EVAL = 1, 2, 3


def _derive_seed(*key: int) -> int:
    """A 63-bit seed from integers (seed, stream, epoch, rank): independent per-epoch streams."""
    return int(np.random.SeedSequence([int(k) for k in key]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python ``random``, numpy and torch (every device); with ``deterministic`` also
    select deterministic torch kernels.

    DataLoader workers need no ``worker_init_fn``: PyTorch seeds torch, numpy and ``random`` in
    every worker from the loader's generator, which the engine re-seeds from (seed, epoch, rank)
    at every epoch, so worker-side randomness is distinct per worker and reproducible.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def _rng_state() -> dict:
    """Global RNG states as tensors and plain types (loadable with ``weights_only=True``)."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached)},
        "python": {"version": int(version), "internal": [int(v) for v in internal], "gauss_next": gauss_next},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


# --------------------------------------------------------------------------------------------
