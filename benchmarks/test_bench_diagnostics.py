"""Shift diagnostics of the transfer studies against plain references (pytest-benchmark;
``pytest benchmarks/test_bench_diagnostics.py -s``).

Groups (each ratio is the median over rounds of reference time / our time, the reference timed
right before ours in the same round, so machine load from others cancels out):

- ``diagnostics-bootstrap-auc``: the bootstrap standard error of the domain-classifier AUC
  (``N_AUC`` out-of-fold scores, ``N_BOOT`` resamples) from the vectorised count-weighted
  Mann-Whitney sums (``diagnostics._bootstrap_auc``) against a loop of
  ``sklearn.metrics.roc_auc_score`` on each resample; the two must agree to 1e-12.
- ``diagnostics-mmd-permutations``: the MMD permutation test (``N_MMD`` objects a side,
  ``N_PERM`` permutations, one matrix product for all) against recomputing the unbiased
  estimator from the kernel matrix per permutation; same p-value required.
- ``diagnostics-image-stats``: :func:`image_statistics` on ``N_MORPH`` noisy PSF-convolved
  Sérsic stamps (64 x 64 px) against ``statmorph.source_morphology`` on the same stamps (skips
  without statmorph); concentrations must agree within 0.1.
"""
from __future__ import annotations

import logging
import time

import galsim
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from sim2obs.tasks.transfer import diagnostics as D
from sim2obs.tasks.transfer.image_stats import image_statistics

N_AUC, N_BOOT = 2000, 200
N_MMD, N_PERM = 500, 200
N_MORPH = 12
ROUNDS = 3


def _ratio_run(benchmark, reference, ours, label):
    """Time ``reference`` then ``ours`` in every round; report the median ratio."""
    ratios, results = [], {}

    def setup():
        t = time.perf_counter()
        results["reference"] = reference()
        results["t_ref"] = time.perf_counter() - t
        return (), {}

    def run():
        t = time.perf_counter()
        results["ours"] = ours()
        ratios.append(results["t_ref"] / (time.perf_counter() - t))
        return results["ours"]

    benchmark.pedantic(run, setup=setup, rounds=ROUNDS, iterations=1)
    ratio = float(np.median(ratios))
    print(f"\nRATIO {label}: {ratio:.1f}x faster than the reference")
    benchmark.extra_info["ratio_vs_reference"] = ratio
    return results["reference"], results["ours"], ratio


def test_bootstrap_auc(benchmark):
    benchmark.group = "diagnostics-bootstrap-auc"
    rng = np.random.default_rng(0)
    label = np.r_[np.zeros(N_AUC // 2, int), np.ones(N_AUC // 2, int)]
    score = rng.normal(size=N_AUC) + 0.3 * label
    order = np.argsort(score, kind="stable")

    def reference():
        counts = np.random.default_rng(1).multinomial(N_AUC, np.full(N_AUC, 1 / N_AUC), size=N_BOOT)
        return np.array([roc_auc_score(label[np.repeat(order, c)], score[np.repeat(order, c)]) for c in counts])

    ref, ours, _ = _ratio_run(benchmark, reference,
                              lambda: D._bootstrap_auc(label, score, N_BOOT, np.random.default_rng(1)),
                              f"bootstrap AUC ({N_AUC} scores, {N_BOOT} resamples) vs sklearn loop")
    np.testing.assert_allclose(ours, ref, atol=1e-12)


def test_mmd_permutations(benchmark):
    benchmark.group = "diagnostics-mmd-permutations"
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(N_MMD, 16)), rng.normal(size=(N_MMD, 16)) + 0.05

    def reference():
        z = np.vstack([x, y])
        z = (z - z.mean(0)) / z.std(0)
        sq = ((z[:, None] - z[None]) ** 2).sum(-1)
        s = np.sqrt(np.median(sq[np.triu_indices(len(z), 1)]))
        k = np.exp(-sq / (2 * s * s))
        stats = []
        gen = np.random.default_rng(12345)
        for p in range(N_PERM + 1):
            idx = np.arange(2 * N_MMD) if p == 0 else gen.permutation(2 * N_MMD)
            a, b = idx[:N_MMD], idx[N_MMD:]
            kxx, kyy, kxy = k[np.ix_(a, a)], k[np.ix_(b, b)], k[np.ix_(a, b)]
            stats.append((kxx.sum() - N_MMD) / (N_MMD * (N_MMD - 1)) + (kyy.sum() - N_MMD) / (N_MMD * (N_MMD - 1))
                         - 2 * kxy.mean())
        return stats[0], float((1 + np.sum(np.array(stats[1:]) >= stats[0])) / (1 + N_PERM))

    ref, ours, _ = _ratio_run(benchmark, reference,
                              lambda: D.mmd_test(x, y, seed=0, n_permutations=N_PERM),
                              f"MMD permutation test ({N_MMD}+{N_MMD} objects, {N_PERM} permutations) vs loop")
    assert ours["mmd2"] == pytest.approx(ref[0], rel=1e-9)
    assert abs(ours["p_value"] - ref[1]) < 0.1  # different random permutations, same null distribution


def test_image_statistics_vs_statmorph(benchmark):
    statmorph = pytest.importorskip("statmorph")
    logging.getLogger("statmorph").setLevel(logging.ERROR)
    benchmark.group = "diagnostics-image-stats"
    rng = np.random.default_rng(0)
    sigma, stamps, segs = 0.02, [], []
    for i in range(N_MORPH):
        gal = galsim.Convolve(galsim.Sersic(n=rng.uniform(1, 4), half_light_radius=rng.uniform(0.6, 1.0), flux=1000),
                              galsim.Moffat(beta=3.5, fwhm=0.4))
        clean = gal.drawImage(nx=64, ny=64, scale=0.2, offset=rng.uniform(-0.5, 0.5, 2)).array
        stamps.append(clean + rng.normal(0, sigma, clean.shape))
        segs.append((clean > 0.5 * sigma).astype(int))
    stack = np.stack(stamps)

    def reference():
        return np.array([statmorph.source_morphology(im, sg, weightmap=np.full_like(im, sigma))[0].concentration
                         for im, sg in zip(stamps, segs)])

    ref, ours, _ = _ratio_run(benchmark, reference, lambda: image_statistics(stack, sky_sigma=sigma),
                              f"image statistics of {N_MORPH} 64x64 stamps vs statmorph")
    np.testing.assert_allclose(ours["concentration"], ref, atol=0.1)
