"""Throughput of the sim2obs networks (pytest-benchmark; run with ``pytest benchmarks/``, not in CI).

- Training: images/second for one forward + backward pass (batch ``TRAIN_BATCH``) of ResNet-18/34 and the
  Dobbels CNN at 64² and 128², in fp32 and with bf16 autocast + channels-last memory format.
- Posterior: galaxies/second for ``POSTERIOR_SAMPLES`` MC-dropout samples, fast path
  (:func:`sample_posterior`: repeated batch, trunk reuse) vs the per-pass loop, for a model with dropout
  before every layer (GaMorNet, GaMPEN's CNN) and one with dropout only in the head (ResNet-18).

The derived rates are in ``extra_info`` of the saved JSON (``--benchmark-json=FILE``): ``img_per_s`` /
``galaxies_per_s`` from the mean time and ``*_best`` from the fastest of the three rounds (more robust on a
shared machine). ``SIM2OBS_BENCH_THREADS`` sets torch's intra-op thread count (on a busy machine 1 thread
avoids OpenMP spin-wait slow-downs).
"""
from __future__ import annotations

import contextlib
import os

import pytest
import torch

from sim2obs.models.cnn import DobbelsCNN, GaMorNetCNN
from sim2obs.models.resnet import resnet18, resnet34
from sim2obs.models.uncertainty import sample_posterior, sample_posterior_loop

TRAIN_BATCH = 16
POSTERIOR_SAMPLES = 1000
POSTERIOR_GALAXIES = 2

if "SIM2OBS_BENCH_THREADS" in os.environ:
    torch.set_num_threads(int(os.environ["SIM2OBS_BENCH_THREADS"]))

TRAIN_MODELS = {
    "resnet18": lambda: resnet18(in_channels=1, num_outputs=1),
    "resnet34": lambda: resnet34(in_channels=1, num_outputs=1),
    "dobbels_cnn": lambda: DobbelsCNN(in_channels=1, num_outputs=37),
}


def _rates(benchmark, items: int, key: str) -> dict[str, float | None]:
    """``items`` per second from the mean and the fastest round (``None`` with --benchmark-disable)."""
    stats = getattr(benchmark, "stats", None)
    if stats is None:
        return {key: None, f"{key}_best": None}
    return {key: round(items / stats.stats.mean, 3), f"{key}_best": round(items / stats.stats.min, 3)}


@pytest.mark.parametrize("precision", ["fp32", "bf16_channels_last"])
@pytest.mark.parametrize("size", [64, 128])
@pytest.mark.parametrize("name", list(TRAIN_MODELS))
def test_training_throughput(benchmark, name, size, precision):
    torch.manual_seed(0)
    model = TRAIN_MODELS[name]().train()
    x = torch.randn(TRAIN_BATCH, 1, size, size)
    if precision == "bf16_channels_last":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
        autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    else:
        autocast = contextlib.nullcontext

    def step() -> float:
        with autocast():
            out = model(x)
        loss = out.float().square().mean()
        loss.backward()
        model.zero_grad(set_to_none=True)
        return float(loss.detach())

    loss = benchmark.pedantic(step, rounds=3, iterations=1, warmup_rounds=1)
    assert torch.isfinite(torch.tensor(loss))
    benchmark.extra_info.update(batch=TRAIN_BATCH, threads=torch.get_num_threads(),
                                **_rates(benchmark, TRAIN_BATCH, "img_per_s"))


POSTERIOR_MODELS = {
    # Dropout before all 8 weight layers: no deterministic trunk; the fast path only batches passes.
    "every_layer_dropout_gamornet": lambda: GaMorNetCNN(in_channels=1, num_outputs=3, dropout=0.1,
                                                        mc_dropout=True),
    # Dropout only before fc: the convolutional trunk runs once, the head on 1000 copies.
    "head_only_dropout_resnet18": lambda: resnet18(in_channels=1, num_outputs=3, dropout=0.1),
}


@pytest.mark.parametrize("method", ["fast", "loop"])
@pytest.mark.parametrize("name", list(POSTERIOR_MODELS))
def test_posterior_throughput(benchmark, name, method):
    torch.manual_seed(0)
    model = POSTERIOR_MODELS[name]().eval()
    x = torch.randn(POSTERIOR_GALAXIES, 1, 64, 64)
    if method == "fast":
        run = lambda: sample_posterior(model, x, POSTERIOR_SAMPLES, chunk=1024)  # noqa: E731
    else:
        run = lambda: sample_posterior_loop(model, x, POSTERIOR_SAMPLES)  # noqa: E731
    samples = benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=0)
    assert samples.shape == (POSTERIOR_SAMPLES, POSTERIOR_GALAXIES, 3)
    benchmark.extra_info.update(samples=POSTERIOR_SAMPLES, galaxies=POSTERIOR_GALAXIES,
                                threads=torch.get_num_threads(),
                                **_rates(benchmark, POSTERIOR_GALAXIES, "galaxies_per_s"))
