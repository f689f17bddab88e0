"""GalSim generation: ``generate(...)`` against a straightforward GalSim loop
(``benchmarks/galsim_reference.py``: de Vaucouleurs + exponential, Moffat per band, CCD noise, one
h5py write, default GSParams, one process) on the same galaxies, 64 x 64 px in g, r, i.

Run: ``python -m pytest benchmarks/test_bench_generation.py --benchmark-only -s``
(``SIM2OBS_BENCH_N`` galaxies, default 2000; ``SIM2OBS_BENCH_ROUNDS`` rounds, default 1).

Group ``galsim-generation``: the reference loop, ``generate`` on a local cluster of two
single-threaded workers (the default on 2 cores; includes starting Dask, writing and hashing the
shards and the manifest) and ``generate`` in this process; pytest-benchmark prints each with its
ratio to the fastest. Group ``galsim-generation-interleaved`` runs the reference and the two-worker
``generate`` alternately, so that load from other processes falls on both, and prints
``reference / generate`` (``extra_info['speedup']``).

Accuracy: sim2obs draws with looser GSParams than GalSim's defaults. ``extra_info`` of the
``generate`` benchmarks holds max |delta pixel| / sky sigma between the noiseless images drawn with
sim2obs's GSParams and with GalSim's defaults, over the first 200 galaxies in every band (printed).
"""
import itertools
import os
import time

import galsim
import numpy as np
import pytest

from benchmarks.galsim_reference import naive_galsim_loop
from sim2obs.simgen.galsim_bulge_disk import (coerce_config, draw_parameters, galaxy_profile, generate,
                                             one_galsim_thread, psf_profile, render_object, sky_sigma_nmgy)

N = int(os.environ.get("SIM2OBS_BENCH_N", "2000"))
ROUNDS = int(os.environ.get("SIM2OBS_BENCH_ROUNDS", "1"))
CONFIG = {"n": N, "stamp": 64, "bands": ["g", "r", "i"]}
TWO_WORKERS = {"kind": "local", "n_workers": 2}
_counter = itertools.count()


@pytest.fixture(scope="module")
def galaxies():
    cfg = coerce_config(CONFIG)
    return cfg, draw_parameters(cfg)


def _fresh(tmp_path, label):
    return tmp_path / f"{label}-{next(_counter)}"  # a complete set at the path would be returned as is


def pixel_error_over_noise(cfg, params, m=200) -> float:
    """max over galaxies, bands and pixels of |image(sim2obs GSParams) - image(GalSim default
    GSParams)| / sky sigma, noiseless, for the first ``m`` galaxies."""
    quiet = coerce_config(dict(CONFIG, n=m, noise={"enabled": False}))
    worst = 0.0
    with one_galsim_thread():
        for j in range(min(m, len(params["redshift"]))):
            row = {k: v[j] for k, v in params.items()}
            ours, _ = render_object(quiet, row, j)
            for k, band in enumerate(cfg.bands):
                exact = galsim.Convolve([galaxy_profile(row, band), psf_profile(cfg, row[f"psf_fwhm_{band}"])])
                ref = exact.drawImage(nx=cfg.stamp, ny=cfg.stamp, scale=cfg.pixel_scale,
                                      offset=(row["offset_x_px"], row["offset_y_px"])).array
                worst = max(worst, float(np.abs(ours[k] - ref).max()) / sky_sigma_nmgy(cfg, band))
    return worst


def _record(benchmark, accuracy=None):
    benchmark.extra_info["galaxies"] = N
    benchmark.extra_info["stamps_per_second"] = 3 * N / benchmark.stats.stats.min
    if accuracy is not None:
        benchmark.extra_info["max_abs_dpixel_over_sky_sigma"] = accuracy
        print(f"\nmax |delta pixel| / sky sigma (sim2obs GSParams vs GalSim defaults, 200 galaxies x 3 bands): "
              f"{accuracy:.3g}")


@pytest.mark.benchmark(group="galsim-generation")
def test_reference_naive_loop(benchmark, galaxies, tmp_path):
    cfg, params = galaxies
    benchmark.pedantic(lambda: naive_galsim_loop(cfg, params, _fresh(tmp_path, "naive")), rounds=ROUNDS,
                       iterations=1)
    _record(benchmark)


@pytest.mark.benchmark(group="galsim-generation")
def test_generate_two_workers(benchmark, galaxies, tmp_path):
    cfg, params = galaxies
    benchmark.pedantic(lambda: generate(CONFIG, _fresh(tmp_path, "two"), cluster=TWO_WORKERS, progress=False),
                       rounds=ROUNDS, iterations=1)
    _record(benchmark, pixel_error_over_noise(cfg, params))


@pytest.mark.benchmark(group="galsim-generation")
def test_generate_in_process(benchmark, tmp_path):
    benchmark.pedantic(lambda: generate(CONFIG, _fresh(tmp_path, "sync"), cluster={"kind": "synchronous"},
                                        progress=False), rounds=ROUNDS, iterations=1)
    _record(benchmark)


@pytest.mark.benchmark(group="galsim-generation-interleaved")
def test_speedup_interleaved(benchmark, galaxies, tmp_path):
    """Reference and two-worker ``generate`` alternately (``ROUNDS`` pairs, at least 2); the
    speedup is the ratio of their best times."""
    cfg, params = galaxies
    times = {"reference": [], "generate": []}

    def pairs():
        for _ in range(max(2, ROUNDS)):
            t0 = time.perf_counter()
            naive_galsim_loop(cfg, params, _fresh(tmp_path, "naive"))
            t1 = time.perf_counter()
            generate(CONFIG, _fresh(tmp_path, "two"), cluster=TWO_WORKERS, progress=False)
            times["reference"].append(t1 - t0)
            times["generate"].append(time.perf_counter() - t1)

    benchmark.pedantic(pairs, rounds=1, iterations=1)
    speedup = min(times["reference"]) / min(times["generate"])
    benchmark.extra_info.update({"galaxies": N, "reference_s": times["reference"], "generate_s": times["generate"],
                                 "speedup": speedup})
    print(f"\n{N} galaxies x 3 bands x 64^2: reference {min(times['reference']):.2f} s, generate (2 workers) "
          f"{min(times['generate']):.2f} s: speedup {speedup:.2f}x (best of {len(times['generate'])} interleaved pairs)")
