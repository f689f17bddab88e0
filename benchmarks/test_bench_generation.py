"""Generation throughput: sim2obs's renderer versus a straightforward GalSim loop.

Run: ``python -m pytest benchmarks/test_bench_generation.py``. Both draw the same 64x64, 3-band
galaxies on one core; ``extra_info`` holds galaxies per second per core.
"""
import galsim
import numpy as np
import pytest

from sim2obs.simgen.galsim_bulge_disk import coerce_config, draw_parameters, render_object

N = 200


@pytest.fixture(scope="module")
def galaxies():
    cfg = coerce_config({"n": N, "stamp": 64, "bands": ["g", "r", "i"]})
    params = draw_parameters(cfg)
    return cfg, [{k: v[j] for k, v in params.items()} for j in range(N)]


def _record(benchmark, n):
    benchmark.extra_info["galaxies_per_second_per_core"] = n / benchmark.stats.stats.mean
    benchmark.extra_info["stamps_per_second_per_core"] = 3 * n / benchmark.stats.stats.mean


def test_sim2obs_renderer(benchmark, galaxies):
    cfg, rows = galaxies
    benchmark.pedantic(lambda: [render_object(cfg, row, j) for j, row in enumerate(rows)], rounds=3, iterations=1)
    _record(benchmark, len(rows))


def test_plain_galsim_loop(benchmark, galaxies):
    """What a first script does: default GSParams, a fresh Sersic n for every galaxy, no caching."""
    cfg, rows = galaxies
    rng = galsim.BaseDeviate(1)

    def loop():
        out = np.empty((len(rows), 3, 64, 64), np.float32)
        for j, row in enumerate(rows):
            n_jitter = float(row["bulge_sersic_n"]) + 1e-3 * (j % 97)  # continuous n, as drawn from a prior
            for k, band in enumerate(cfg.bands):
                bulge = galsim.Sersic(n=n_jitter, half_light_radius=row["bulge_hlr_arcsec"],
                                      flux=row[f"flux_{band}"] * row[f"bt_{band}"]).shear(
                    q=row["bulge_q"], beta=row["bulge_position_angle_deg"] * galsim.degrees)
                disk = galsim.Exponential(half_light_radius=row["disk_hlr_arcsec"],
                                          flux=row[f"flux_{band}"] * (1 - row[f"bt_{band}"])).shear(
                    q=row["disk_q"], beta=row["position_angle_deg"] * galsim.degrees)
                psf = galsim.Moffat(beta=3.5, fwhm=row[f"psf_fwhm_{band}"])
                im = galsim.Convolve([bulge + disk, psf]).drawImage(nx=64, ny=64, scale=cfg.pixel_scale)
                im.addNoise(galsim.GaussianNoise(rng, sigma=0.03))
                out[j, k] = im.array
        return out

    benchmark.pedantic(loop, rounds=1, iterations=1)
    _record(benchmark, len(rows))


def test_sim2obs_renderer_same_n_grid_plain_gsparams(benchmark, galaxies):
    """The plain loop with the n grid but default GSParams: isolates the GSParams effect."""
    cfg, rows = galaxies
    tight = coerce_config({"n": N, "stamp": 64, "folding_threshold": 5e-3, "maxk_threshold": 1e-3})
    benchmark.pedantic(lambda: [render_object(tight, row, j) for j, row in enumerate(rows)], rounds=2, iterations=1)
    _record(benchmark, len(rows))
