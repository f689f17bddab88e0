"""The GalSim bulge + disk generator: labels agree with the drawn images, determinism,
resume after a kill, and the physical relations of the population model."""
import signal
import subprocess
import time

import galsim
import numpy as np
import pytest
from scipy import stats

from tests.conftest import CLI, SYNC, tiny_config
from sim2obs import open_galaxy_set
from sim2obs.errors import ConfigError
from sim2obs.galaxyset import MANIFEST_NAME
from sim2obs.simgen.galsim_bulge_disk import (coerce_config, draw_parameters, galaxy_profile, generate,
                                             psf_profile, render_object)
from sim2obs.provenance import file_sha256
from sim2obs.simgen.population import (PopulationConfig, draw_population, half_light_radius,
                                       mass_metallicity)


def test_set_is_valid_and_complete(tiny_galsim_set):
    gs = open_galaxy_set(tiny_galsim_set, check="full")
    gs.verify()
    assert gs.n == 24 and gs.schema.stack("image").shape == (3, 32, 32)
    assert gs.schema.stack("image").channels == ("g", "r", "i")
    prov = gs.provenance
    assert prov["generator"] == "galsim_bulge_disk" and prov["seed"] == 7
    assert "galsim" in prov["package_versions"] and prov["config"]["stamp"] == 32
    cat = gs.catalog()
    assert np.all((cat["bt_r"] >= 0) & (cat["bt_r"] <= 1))
    assert np.all(cat["ml_g_err"] >= 0.05 * cat["ml_g"] - 1e-12)
    assert np.all(cat["mag_r"] <= 17.77)
    assert np.all((cat["redshift"] >= 0.02) & (cat["redshift"] <= 0.25))
    # the image holds the galaxy: the summed flux is close to the catalogue flux (noise, and light
    # beyond the stamp, make it approximate)
    # (the 12.7" stamp cuts the wings of the larger galaxies: R_e 4" keeps ~70 % of its light, so the
    # test reads the galaxies with R_e < 2", a sixth of the stamp)
    img = gs.images("image")
    ratio = img[:, 1].sum(axis=(1, 2)) / cat["flux_r"]
    small = cat["r_e_r"] < 2.0
    assert small.sum() >= 5 and np.median(ratio[small]) == pytest.approx(1.0, abs=0.1)
    assert np.all(np.diff(ratio[np.argsort(cat["r_e_r"])][[0, -1]]) < 0)  # the largest loses the most


def test_same_bytes_whatever_the_number_of_workers(tmp_path):
    cfg = tiny_config(n=20, shard_size=5)
    a = generate(cfg, tmp_path / "sync", cluster=SYNC, progress=False)
    b = generate(cfg, tmp_path / "two", cluster={"kind": "local", "n_workers": 2}, progress=False)
    sa, sb = sorted(a.glob("part-*.h5")), sorted(b.glob("part-*.h5"))
    assert len(sa) == 4
    assert [file_sha256(p) for p in sa] == [file_sha256(p) for p in sb]
    assert open_galaxy_set(a).content_hash == open_galaxy_set(b).content_hash
    # a different shard size changes the files but not the data
    c = generate(tiny_config(n=20, shard_size=7), tmp_path / "seven", cluster=SYNC, progress=False)
    assert open_galaxy_set(c).content_hash == open_galaxy_set(a).content_hash
    d = generate(tiny_config(n=20, shard_size=5, seed=8), tmp_path / "other", cluster=SYNC, progress=False)
    assert open_galaxy_set(d).content_hash != open_galaxy_set(a).content_hash


def _draw(profile, scale, size):
    """Noiseless, pixel-integrated image on a fine grid. A Gaussian of 0.6 px sigma bounds
    k-space (a bare cuspy Sersic would need a ~20k^2 FFT); it shifts R_e by < 0.1 %."""
    return galsim.Convolve(profile, galsim.Gaussian(sigma=0.6 * scale)).drawImage(nx=size, ny=size, scale=scale)


def test_labels_agree_with_drawn_profiles():
    """B/T from drawing bulge and disk alone; flux and R_e measured on the noiseless image."""
    cfg = coerce_config(tiny_config(n=8))
    params = draw_parameters(cfg)
    scale = 0.05  # arcsec
    for j in range(6):
        row = {k: v[j] for k, v in params.items()}
        extent = max(16 * row["disk_hlr_arcsec"] / np.sqrt(row["disk_q"]), 40 * row["bulge_hlr_arcsec"])
        size = int(min(1280, max(256, extent / scale)))
        for band in ("g", "i"):
            total = row[f"flux_{band}"]
            bulge = _draw(galaxy_profile(row, band, components=("bulge",)), scale, size).array.sum()
            disk = _draw(galaxy_profile(row, band, components=("disk",)), scale, size).array.sum()
            assert bulge / (bulge + disk) == pytest.approx(row[f"bt_{band}"], abs=0.005)
            image = _draw(galaxy_profile(row, band), scale, size)
            assert image.array.sum() == pytest.approx(total, rel=0.02)
            measured = image.calculateHLR(flux=total)  # circular aperture about the centroid
            label = half_light_radius(total * row[f"bt_{band}"], row["bulge_hlr_arcsec"], row["bulge_sersic_n"],
                                      row["bulge_q"], total * (1 - row[f"bt_{band}"]), row["disk_hlr_arcsec"],
                                      row["disk_q"])
            assert measured == pytest.approx(float(label), rel=0.01)


def test_half_light_radius_of_single_round_profiles():
    r = half_light_radius(np.array([1.0]), np.array([2.0]), np.array([4.0]), np.array([1.0]),
                          np.array([0.0]), np.array([1.0]), np.array([1.0]))
    assert r[0] == pytest.approx(2.0, rel=1e-4)
    # an elliptical exponential: compare with GalSim's own measurement
    prof = galsim.Exponential(half_light_radius=1.5).shear(q=0.3, beta=0.4 * galsim.radians)
    measured = _draw(prof, 0.03, 600).calculateHLR(flux=1.0)
    analytic = half_light_radius(np.array([0.0]), np.array([1.0]), np.array([4.0]), np.array([1.0]),
                                 np.array([1.0]), np.array([1.5]), np.array([0.3]))
    assert analytic[0] == pytest.approx(measured, rel=0.01)


def test_psf_fwhm_and_noise_levels():
    cfg = coerce_config(tiny_config())
    params = draw_parameters(cfg)
    for band in cfg.bands:
        fwhm = params[f"psf_fwhm_{band}"][0]
        im = psf_profile(cfg, fwhm).drawImage(nx=128, ny=128, scale=0.02, method="no_pixel")
        assert im.calculateFWHM() == pytest.approx(fwhm, rel=0.03)
    assert np.median(draw_parameters(coerce_config(tiny_config(n=400)))["psf_fwhm_g"]) == pytest.approx(1.4, rel=0.05)


def test_pure_noise_matches_reported_sky_sigma(tiny_galsim_set):
    gs = open_galaxy_set(tiny_galsim_set)
    img = gs.images("image")
    corner = np.concatenate([img[:, :, :6, :6].reshape(len(img), 3, -1), img[:, :, -6:, -6:].reshape(len(img), 3, -1)], axis=2)
    for k, band in enumerate("gri"):
        sigma = gs.column(f"sky_sigma_{band}")[0]
        # corners hold faint galaxy wings too: the scatter is at least the sky noise and close to it
        assert np.median(np.std(corner[:, k], axis=1)) == pytest.approx(sigma, rel=0.25)


def test_population_relations():
    cfg = PopulationConfig()
    p = draw_population(np.random.default_rng(0), 4000, ("g", "r", "i"), cfg)
    # B/T correlated with mass
    assert stats.spearmanr(p["log_mstar"], p["bulge_mass_fraction"]).statistic > 0.3
    # bulges redder than the disks of star-forming galaxies (a quenched galaxy's disk has its bulge's
    # red-sequence colour: Peng et al. 2010 mass quenching, more common at high mass)
    q = p["quenched"]
    assert np.mean(p["bulge_color_gr"][~q] > p["disk_color_gr"][~q]) > 0.9
    assert np.array_equal(p["bulge_color_gr"][q], p["disk_color_gr"][q])
    assert stats.spearmanr(p["log_mstar"], q).statistic > 0.3 and 0.4 < q.mean() < 0.75
    # B/T larger in redder bands
    # (edge-on, dust dims the disk more in g and can reverse this: test the face-on half)
    # (of star-forming galaxies: a quenched one's bulge and disk share a colour)
    face_on = (p["inclination_deg"] < 60) & ~q
    assert np.mean(p["bt_i"][face_on] >= p["bt_g"][face_on]) > 0.9
    # M/L tied to colour: redder (observed g - i) means higher M/L_g
    g_minus_i = p["mag_g"] - p["mag_i"]
    assert stats.spearmanr(g_minus_i, np.log10(p["ml_g"])).statistic > 0.6
    # dust: edge-on disks are more attenuated
    assert stats.spearmanr(p["inclination_deg"], p["disk_av"]).statistic > 0.5
    # mass-metallicity relation: the published terms (FMR scatter 0.054 dex, SFR, size, fibre aperture)
    # give ~0.06 dex about the MZR, part of it tied to size (the population docstring's check)
    resid = p["oh12"] - mass_metallicity(p["log_mstar"])
    assert np.std(resid) == pytest.approx(0.061, abs=0.01)
    assert stats.spearmanr(p["disk_size_residual_dex"], resid).statistic < -0.1
    # flux-limited sample: median redshift near SDSS's ~0.1 (Wu & Boada's metallicity sample: 0.07)
    assert 0.06 < np.median(p["redshift"]) < 0.14
    assert np.all(p["mag_r"] <= 17.77)


def test_uniform_bt_prior():
    cfg = PopulationConfig(bulge_fraction_model="uniform", bulge_fraction_min=0.2, bulge_fraction_max=0.4)
    p = draw_population(np.random.default_rng(1), 500, ("r",), cfg)
    assert p["bulge_mass_fraction"].min() >= 0.2 and p["bulge_mass_fraction"].max() <= 0.4


def test_realism_options_add_light(tmp_path):
    base = tiny_config(n=6, shard_size=6)
    plain = open_galaxy_set(generate(base, tmp_path / "plain", cluster=SYNC, progress=False))
    busy = open_galaxy_set(generate(dict(base, realism={"secondary_mean": 3.0, "star_mean": 2.0, "clumps": True}),
                                    tmp_path / "busy", cluster=SYNC, progress=False))
    assert busy.column("n_secondary").sum() + busy.column("n_stars").sum() > 0
    extra = busy.images("image").sum(axis=(2, 3)) - plain.images("image").sum(axis=(2, 3))
    has_extra = (busy.column("n_secondary") + busy.column("n_stars")) > 0
    assert np.all(extra[has_extra, 1] > 0)
    # labels of the target galaxy do not change
    np.testing.assert_array_equal(plain.column("bt_r"), busy.column("bt_r"))


@pytest.mark.parametrize("override, key", [
    ({"n": -5}, "simgen.n"),
    ({"stamp": 0}, "simgen.stamp"),
    ({"bands": ["g", "q"]}, "simgen.bands"),
    ({"population": {"bulge_fraction_max": 1.5}}, "simgen.population.bulge_fraction_max"),
    ({"population": {"bulge_fraction_min": -0.1}}, "simgen.population.bulge_fraction_min"),
    ({"split": {"train": 0.9, "test": 0.3}}, "simgen.split"),
    ({"psf": {"profile": "airy"}}, "simgen.psf.profile"),
    ({"stmap": 64}, "stmap"),
])
def test_bad_config_values_are_refused(override, key):
    with pytest.raises(ConfigError) as err:
        coerce_config(tiny_config(**override))
    assert key in str(err.value)


def test_resume_after_kill_gives_identical_set(tmp_path, cli_env):
    args = ["generate", "cluster=synchronous", "simgen.n=24", "simgen.stamp=48", "simgen.shard_size=4",
            "progress=false"]
    full = tmp_path / "full"
    subprocess.run([*CLI, *args, f"out={full}"], env=cli_env, check=True, capture_output=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen([*CLI, *args, f"out={killed}"], env=cli_env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(list(killed.glob("part-*.h5"))) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list(killed.glob("part-*.h5")))
    assert 2 <= done_before < 6, "the kill should land mid-run"
    assert not (killed / MANIFEST_NAME).exists()
    subprocess.run([*CLI, *args, f"out={killed}"], env=cli_env, check=True, capture_output=True)
    a, b = open_galaxy_set(full), open_galaxy_set(killed)
    assert a.content_hash == b.content_hash
    assert b.provenance["shards_rendered_this_run"] == 6 - done_before
    assert [file_sha256(p) for p in sorted(full.glob("part-*.h5"))] == \
           [file_sha256(p) for p in sorted(killed.glob("part-*.h5"))]
    assert not list(killed.glob("*.tmp"))


def test_rendering_runs_galsim_on_one_openmp_thread(monkeypatch):
    """GalSim splits noise draws over OpenMP threads; rendering pins it to one thread, so the
    synchronous run in a many-threaded process and single-threaded Dask workers run the same code,
    and leaves the process's setting as it was."""
    cfg = coerce_config(tiny_config(n=2))
    row = {k: v[0] for k, v in draw_parameters(cfg).items()}
    seen = []
    add_noise = galsim.Image.addNoise
    monkeypatch.setattr(galsim.Image, "addNoise", lambda self, noise: (seen.append(galsim.get_omp_threads()),
                                                                        add_noise(self, noise))[1])
    before = galsim.get_omp_threads()
    galsim.set_omp_threads(2)
    try:
        threaded = galsim.get_omp_threads()
        images, _ = render_object(cfg, row, 0)
        assert galsim.get_omp_threads() == threaded  # restored
    finally:
        galsim.set_omp_threads(before)
    assert seen == [1, 1, 1]
    galsim.set_omp_threads(1)
    try:
        again, _ = render_object(cfg, row, 0)
    finally:
        galsim.set_omp_threads(before)
    np.testing.assert_array_equal(images, again)


def test_half_light_radius_encloses_half_the_light():
    """Newton on the exact enclosed flux: the circle holds half the light to ~1e-12 for bulge +
    disk mixes from pure disk to pure bulge, round to edge-on."""
    from sim2obs.simgen.half_light import _enclosed_fraction

    rng = np.random.default_rng(3)
    m = 300
    fb = rng.uniform(0, 1, m) * (rng.uniform(size=m) > 0.1)
    fd = 1 - fb
    hb, hd = rng.lognormal(0, 1, m), rng.lognormal(0.5, 1, m)
    nb, qb, qd = rng.choice([0.5, 1.0, 3.0, 4.0, 6.0], m), rng.uniform(0.5, 1, m), rng.uniform(0.15, 1, m)
    r = half_light_radius(fb, hb, nb, qb, fd, hd, qd)
    enclosed = fb * _enclosed_fraction(r, hb, nb, qb) + fd * _enclosed_fraction(r, hd, np.ones(m), qd)
    np.testing.assert_allclose(enclosed, 0.5, rtol=0, atol=1e-12)
    assert np.all(r > 0) and np.all(np.isfinite(r))


def test_image_compression_changes_files_not_content(tmp_path):
    """Stamps are stored raw by default; gzip on request gives other files with the same data."""
    import h5py

    raw = generate(tiny_config(n=6, shard_size=6), tmp_path / "raw", cluster=SYNC, progress=False)
    gz = generate(tiny_config(n=6, shard_size=6, image_compression=4), tmp_path / "gz", cluster=SYNC,
                  progress=False)
    with h5py.File(raw / "part-00000.h5") as a, h5py.File(gz / "part-00000.h5") as b:
        assert a["images/image"].compression is None and b["images/image"].compression == "gzip"
    assert file_sha256(raw / "part-00000.h5") != file_sha256(gz / "part-00000.h5")
    assert open_galaxy_set(raw).content_hash == open_galaxy_set(gz).content_hash
    open_galaxy_set(gz, check="full").verify()
    with pytest.raises(ConfigError, match="simgen.image_compression"):
        coerce_config(tiny_config(image_compression=12))


def test_a_single_shard_is_drawn_without_starting_dask(tmp_path, monkeypatch):
    """Starting and stopping worker processes costs seconds: one shard runs in this process."""
    import dask.distributed

    def refuse(*args, **kwargs):
        raise AssertionError("a LocalCluster was started for a single shard")

    monkeypatch.setattr(dask.distributed, "LocalCluster", refuse)
    out = generate(tiny_config(n=4, shard_size=8), tmp_path / "one", cluster={"kind": "local", "n_workers": 2},
                   progress=False)
    assert open_galaxy_set(out).n == 4


def test_same_bytes_from_a_fresh_process_and_a_dask_worker(cli_env, tmp_path):
    """The CLI in-process and the CLI with one Dask worker write byte-identical shards. Before
    image chunks were flushed explicitly, HDF5 placed them according to when Python's garbage
    collector closed the dataset, and shard 0 came out with other bytes (same data)."""
    args = ["simgen.n=12", "simgen.stamp=16", "simgen.shard_size=4", "simgen.seed=3", "progress=false"]
    outs = []
    for name, cluster in (("sync", ["cluster=synchronous"]), ("worker", ["cluster=local", "cluster.n_workers=1"])):
        out = tmp_path / name
        res = subprocess.run([*CLI, "generate", *cluster, *args, f"out={out}"], env=cli_env, capture_output=True,
                             text=True, timeout=300)
        assert res.returncode == 0, res.stdout + res.stderr
        outs.append([file_sha256(p) for p in sorted(out.glob("part-*.h5"))])
    assert len(outs[0]) == 3 and outs[0] == outs[1]
