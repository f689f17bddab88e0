"""TNG mock generation: writing the mini-simulation, and mocking galaxies (3 projections each).

Run: ``python -m pytest benchmarks/test_bench_tng_mocks.py --benchmark-only``. One core;
``extra_info`` holds galaxies per second. The per-galaxy cost is the SPH image (its wide
stellar-halo kernels), the Sersic fits, the smoothing lengths and the re-binning; the 300 px case
is the paper's resolution. Each group (``mock-<px>``) also mocks the same galaxies with the SPH
images drawn by the previous vectorised numpy renderer (``benchmarks/sph_reference.py``), the
reference of the end-to-end ratio, and asserts that both give the same (float32) images to 1e-6.
"""
import itertools

import numpy as np
import pytest

from benchmarks.sph_reference import sph_image_numpy
from sim2obs.simgen import particle_maps as pm
from sim2obs.simgen import tng_mocks as tm
from sim2obs.simgen.tng_minisim import write_minisim

N_GALAXIES = 100


def test_write_minisim(benchmark, tmp_path):
    roots = (tmp_path / f"sim{i}" for i in itertools.count())
    benchmark.pedantic(lambda root: write_minisim({"n_galaxies": N_GALAXIES}, root),
                       setup=lambda: ((next(roots),), {}), rounds=3, iterations=1)
    benchmark.extra_info["subhalos_per_second"] = N_GALAXIES / benchmark.stats.stats.mean


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    out = tmp_path_factory.mktemp("mocks") / "set"
    cfg = tm.coerce_config({"generator": "tng", "source": {"minisim": {"n_galaxies": 40}}})
    src, records = tm.open_source(cfg, out)
    return src, records[:8]


@pytest.mark.parametrize("renderer", ["compiled", "numpy_reference"])
@pytest.mark.parametrize("image_px", [300, 150])
def test_mock_galaxies(benchmark, source, image_px, renderer, monkeypatch):
    src, records = source
    cfg = tm.coerce_config({"generator": "tng", "image_px": image_px, "rebin_px": [60]})
    benchmark.group = f"mock-{image_px}"

    def run():
        return [tm.mock_galaxy(src.particles(rec["subhalo_id"]), np.asarray(rec["pos"]), src.header, cfg)
                for rec in records]

    expected = run()  # compiled renderer (and the numba cache loaded) before any timing
    if renderer == "numpy_reference":
        monkeypatch.setattr(pm, "sph_image", sph_image_numpy)
    got = benchmark.pedantic(run, rounds=2, iterations=1)
    for galaxy_a, galaxy_b in zip(got, expected):
        for a, b in zip(galaxy_a, galaxy_b):
            np.testing.assert_allclose(a["images"][f"r_{image_px}"], b["images"][f"r_{image_px}"], rtol=1e-6)
            np.testing.assert_allclose(a["images"]["gr_60"], b["images"]["gr_60"], rtol=1e-6, atol=1e-6)
    benchmark.extra_info["galaxies_per_second"] = len(records) / benchmark.stats.stats.mean
    benchmark.extra_info["projections_per_second"] = 3 * len(records) / benchmark.stats.stats.mean
