"""The fast paths of the GalSim generator (issue 16): every band from one Fourier grid sized for the
stamp, generator modules imported lazily, and the workers started (forked, GalSim's tables filled) while
the parameters are drawn."""
import operator
import os
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor

import galsim
import numpy as np
import pytest

from sim2obs import parallel
from sim2obs.parallel import ClusterInBackground, run_shards
from sim2obs.simgen import galsim_render as R
from sim2obs.simgen.galsim_bulge_disk import coerce_config, draw_parameters, galaxy_profile, psf_profile, render_object


def _galsim_image(cfg, row, band):
    """GalSim's own drawImage of the PSF-convolved galaxy at its default GSParams (nanomaggies)."""
    prof = galsim.Convolve([galaxy_profile(row, band), psf_profile(cfg, row[f"psf_fwhm_{band}"])])
    return prof.drawImage(nx=cfg.stamp, ny=cfg.stamp, scale=cfg.pixel_scale,
                          offset=(row["offset_x_px"], row["offset_y_px"])).array


def _worst_over_sigma(cfg, rows):
    worst = 0.0
    for j, row in enumerate(rows):
        ours, _ = render_object(cfg, row, j)
        for k, band in enumerate(cfg.bands):
            sigma = R.sky_sigma_nmgy(cfg, band, at_depth=True)
            worst = max(worst, float(np.abs(ours[k] - _galsim_image(cfg, row, band)).max()) / sigma)
    return worst


@pytest.mark.parametrize("stamp", [64, 33])
def test_noiseless_stamps_agree_with_galsim_drawimage_to_the_tolerance(stamp):
    """Even and odd stamps: centring, sub-pixel offsets, k-space product and the batched FFT give
    GalSim's image to well within ``alias_tolerance`` sky sigma."""
    cfg = coerce_config({"n": 12, "stamp": stamp, "seed": 5, "noise": {"enabled": False}})
    params = draw_parameters(cfg)
    rows = [{k: v[j] for k, v in params.items()} for j in range(cfg.n)]
    assert _worst_over_sigma(cfg, rows) < cfg.alias_tolerance


def _big_bright(cfg):
    """A large, bright de Vaucouleurs-like galaxy: GalSim's own FFT would be ~1000 px."""
    row = {k: v[0] for k, v in draw_parameters(cfg).items()}
    row.update(bulge_sersic_n=5.0, bulge_hlr_arcsec=6.0, disk_hlr_arcsec=12.0, bulge_q=0.7, disk_q=0.5)
    for b in cfg.bands:
        row[f"flux_{b}"], row[f"bt_{b}"] = 3000.0, 0.6
    return row


def test_a_large_galaxy_is_drawn_on_a_small_fft_within_the_tolerance():
    cfg = coerce_config({"n": 2, "stamp": 64, "noise": {"enabled": False}})
    row = _big_bright(cfg)
    sizes = []
    spy = R._k_grid

    def record(c, n, maxk):
        sizes.append(n)
        return spy(c, n, maxk)

    R._k_grid = record
    try:
        worst = _worst_over_sigma(cfg, [row])
    finally:
        R._k_grid = spy
    own = galsim.Convolve([galaxy_profile(row, "g"), psf_profile(cfg, row["psf_fwhm_g"]),
                           galsim.Pixel(cfg.pixel_scale)]).getGoodImageSize(cfg.pixel_scale)
    assert sizes and sizes[0] * 2 <= own  # at least 4x fewer pixels than GalSim's own choice
    assert worst < cfg.alias_tolerance


def test_fft_size_grows_with_brightness_and_a_tighter_tolerance():
    cfg = coerce_config({"n": 2, "stamp": 64})
    row = _big_bright(cfg)
    bulge = R._bulge(row)
    sizes = [R.fft_size(coerce_config({"n": 2, "alias_tolerance": tol}), [(bulge, 0.3, scale)])
             for tol, scale in ((0.05, 1e3), (0.05, 1e5), (0.005, 1e5))]
    assert sizes[0] < sizes[1] < sizes[2]
    assert R.fft_size(cfg, [(bulge, 0.3, 0.0)]) == galsim.Image.good_fft_size(cfg.stamp)  # no light: the stamp


def test_alias_tolerance_is_validated():
    from sim2obs.errors import ConfigError

    with pytest.raises(ConfigError, match="simgen.alias_tolerance"):
        coerce_config({"alias_tolerance": 0.0})


def test_a_worker_importing_the_galsim_generator_skips_the_tng_stack():
    code = ("import sys; import sim2obs.simgen.galsim_bulge_disk as g; "
            "print(sorted(m for m in ('numba', 'astropy.cosmology', 'sim2obs.simgen.tng_mocks') if m in sys.modules)); "
            "import sim2obs.simgen as s; print(s.GENERATORS.get('tng').__name__, s.tng_mocks.__name__)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["[]", "sim2obs.simgen.tng_mocks sim2obs.simgen.tng_mocks"]


def _worker_state() -> tuple[int, str | None]:
    return os.getpid(), os.environ.get("SIM2OBS_TEST_WARMED")


def test_local_workers_are_forked_warmed_up_and_stopped():
    # Linux: a local run forks its workers from this process; each runs the warm-up once, before any job
    warm = (os.environ.__setitem__, ("SIM2OBS_TEST_WARMED", "yes"))
    with ClusterInBackground({"kind": "local", "n_workers": 2}, n_jobs=3, preload=["operator"], warm_up=warm) as started:
        pool = started.client()
        assert isinstance(pool, ProcessPoolExecutor)
        assert run_shards(operator.mul, [(2, 2), (3, 3), (4, 4)], started, progress=False) == [4, 9, 16]
        states = run_shards(_worker_state, [()] * 6, started, progress=False)
    pids = {pid for pid, _ in states}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    assert {warmed for _, warmed in states} == {"yes"}
    assert "SIM2OBS_TEST_WARMED" not in os.environ  # only the workers ran it
    with pytest.raises(RuntimeError):  # stopped on exit
        pool.submit(operator.mul, 1, 1)
    with ClusterInBackground({"kind": "local"}, n_jobs=1) as one:  # one job: this process, no cluster
        assert one.client() is None
        assert run_shards(operator.mul, [(5, 5)], one, progress=False) == [25]


def test_without_fork_a_local_run_starts_a_dask_cluster(monkeypatch):
    # (macOS, Windows: a LocalCluster; a job importable in the workers: test modules are not on their path)
    monkeypatch.setattr(parallel, "_forks_local_workers", lambda: False)
    with ClusterInBackground({"kind": "local", "n_workers": 2}, n_jobs=3, preload=["operator"]) as started:
        client = started.client()
        assert len(client.scheduler_info()["workers"]) == 2
        assert run_shards(operator.mul, [(2, 2), (3, 3), (4, 4)], started, progress=False) == [4, 9, 16]
    assert client.status == "closed"


def test_an_error_while_the_cluster_starts_is_not_masked():
    with pytest.raises(KeyError, match="boom"):
        with ClusterInBackground({"kind": "local", "n_workers": 1}, n_jobs=2):
            raise KeyError("boom")
