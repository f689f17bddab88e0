"""Thread settings of a method run: torch's intra-op thread count for the duration of a block.
(LightGBM's thread count is a parameter: :func:`sim2obs.tasks.common.boosting.lightgbm_params`.)"""
from __future__ import annotations

import contextlib
import functools
from typing import Callable, Iterator

import torch

__all__ = ["torch_threads", "with_torch_threads"]


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """``torch.set_num_threads(n)`` inside the block (``None``: unchanged), restored after."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def with_torch_threads(run: Callable) -> Callable:
    """A method's ``run(task, workdir)`` under ``torch_threads(task.config.torch_threads)``."""
    @functools.wraps(run)
    def wrapped(task, workdir):
        with torch_threads(task.config.torch_threads):
            return run(task, workdir)

    return wrapped
