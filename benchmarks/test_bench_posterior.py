"""MC-dropout posterior sampling against the plain loop (pytest-benchmark; ``pytest benchmarks/ -s``).

Each group samples ``SAMPLES`` posterior draws for ``GALAXIES`` galaxies with one network:

- ``gampen_quick`` (64x64 px): GaMPEN at the quick preset's widths (``configs/task/bt_posterior/quick.yaml``), dropout
  before every weight layer of the CNN (only the spatial transformer is a deterministic trunk);
- ``gamornet_quick`` (64x64 px): the same CNN without the transformer (no trunk at all);
- ``head_only_resnet18`` (32x32 px, to keep its 1000-pass loop short; a smaller trunk only lowers the
  ratio): ResNet-18 with dropout only before its linear head (the trunk runs once).

Methods: ``loop`` (the reference: :func:`sample_posterior_loop`, ``SAMPLES`` separate fp32 passes),
``fast_fp32`` (:func:`sample_posterior` with ``precision="fp32"``) and ``fast`` (``precision="auto"``: the
engine's choice, bf16 autocast + channels-last on CPUs with native bf16). The ``fast*`` tests also time
one loop run before each of their rounds (pedantic ``setup``, not counted), so every ratio printed
(``RATIO ...`` lines, also in ``extra_info``) is the median of round-by-round ratios taken side by side
on the same machine load. The ``fast`` test also prints the change bf16 makes to the posterior (same
seed, so the same dropout masks): mean and standard deviation shifts in units of the posterior sigma.

``SIM2OBS_BENCH_THREADS`` sets torch's intra-op threads (default 1: on a shared machine the OpenMP
spin-wait of a second thread slows the small passes of the loop many-fold, which would flatter the ratio).
"""
from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch

from sim2obs.models.cnn import GaMorNetCNN
from sim2obs.models.resnet import resnet18
from sim2obs.models.stn import gampen
from sim2obs.models.uncertainty import sample_posterior, sample_posterior_loop

SAMPLES = 1000
GALAXIES = 2
CHUNK = 2048
QUICK = {"conv_channels": (16, 32, 48, 48, 32), "dense": (128, 128)}
torch.set_num_threads(int(os.environ.get("SIM2OBS_BENCH_THREADS", "1")))

MODELS = {  # name: (network, input size in px, rounds)
    "gampen_quick": (lambda: gampen(num_outputs=3, stn_channels=(4, 8), **QUICK), 64, 3),
    "gamornet_quick": (lambda: GaMorNetCNN(1, 3, dropout=0.1, mc_dropout=True, **QUICK), 64, 3),
    "head_only_resnet18": (lambda: resnet18(in_channels=1, num_outputs=3, dropout=0.1), 32, 2),
}
CASES = [(name, method) for name in MODELS for method in ("loop", "fast_fp32", "fast")
         if not (name == "head_only_resnet18" and method == "fast_fp32")]


def _model_and_input(name: str):
    torch.manual_seed(0)
    build, size, _ = MODELS[name]
    return build().eval(), torch.randn(GALAXIES, 1, size, size)


def _posterior_shift(model, x) -> tuple[float, float]:
    """Largest |mean_bf16 - mean_fp32| / sigma and |sigma_bf16 / sigma_fp32 - 1| over galaxies and outputs."""
    torch.manual_seed(1)
    ref = sample_posterior(model, x, SAMPLES, chunk=CHUNK, precision="fp32")
    torch.manual_seed(1)
    auto = sample_posterior(model, x, SAMPLES, chunk=CHUNK)
    sigma = ref.std(0)
    return (float(((auto.mean(0) - ref.mean(0)).abs() / sigma).max()),
            float((auto.std(0) / sigma - 1).abs().max()))


@pytest.mark.parametrize("name, method", CASES)
def test_posterior_vs_loop(benchmark, name, method):
    model, x = _model_and_input(name)
    rounds = MODELS[name][2]
    benchmark.group = f"posterior-{name}"
    if method == "loop":
        samples = benchmark.pedantic(lambda: sample_posterior_loop(model, x, SAMPLES), rounds=rounds, iterations=1)
        assert samples.shape == (SAMPLES, GALAXIES, 3)
        return
    precision = "fp32" if method == "fast_fp32" else "auto"
    loop_seconds: list[float] = []

    def time_the_loop():
        t0 = time.perf_counter()
        sample_posterior_loop(model, x, SAMPLES)
        loop_seconds.append(time.perf_counter() - t0)

    samples = benchmark.pedantic(lambda: sample_posterior(model, x, SAMPLES, chunk=CHUNK, precision=precision),
                                 setup=time_the_loop, rounds=rounds, iterations=1)
    assert samples.shape == (SAMPLES, GALAXIES, 3) and samples.dtype == torch.float32
    assert not torch.allclose(samples[0], samples[1])
    stats = getattr(benchmark, "stats", None)
    if stats is None:  # --benchmark-disable
        return
    ratio = float(np.median(np.array(loop_seconds) / np.array(stats.stats.data)))
    info = {"ratio_vs_loop": round(ratio, 2), "loop_seconds": loop_seconds, "threads": torch.get_num_threads()}
    line = f"RATIO posterior {name} {method}: loop / fast = {ratio:.2f}x ({SAMPLES} samples x {GALAXIES} galaxies)"
    if method == "fast":
        d_mean, d_sigma = _posterior_shift(model, x)
        info.update(bf16_mean_shift_over_sigma=d_mean, bf16_sigma_shift_fraction=d_sigma)
        line += f"; auto vs fp32 (same masks): |d mean| <= {d_mean:.4f} sigma, |d sigma| <= {100 * d_sigma:.2f} %"
    benchmark.extra_info.update(info)
    print("\n" + line)
