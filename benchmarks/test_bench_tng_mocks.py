"""TNG mock generation: writing the mini-simulation, and mocking one galaxy (3 projections).

Run: ``python -m pytest benchmarks/test_bench_tng_mocks.py``. One core; ``extra_info`` holds
galaxies per second. The per-galaxy cost is the SPH image (its wide stellar-halo kernels), the
Sersic fits and the particle reads; the 300 px case is the paper's resolution.
"""
import itertools

import numpy as np
import pytest

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


@pytest.mark.parametrize("image_px", [300, 150])
def test_mock_galaxies(benchmark, source, image_px):
    src, records = source
    cfg = tm.coerce_config({"generator": "tng", "image_px": image_px, "rebin_px": [60]})

    def run():
        for rec in records:
            tm.mock_galaxy(src.particles(rec["subhalo_id"]), np.asarray(rec["pos"]), src.header, cfg)

    benchmark.pedantic(run, rounds=2, iterations=1)
    benchmark.extra_info["galaxies_per_second"] = len(records) / benchmark.stats.stats.mean
    benchmark.extra_info["projections_per_second"] = 3 * len(records) / benchmark.stats.stats.mean
