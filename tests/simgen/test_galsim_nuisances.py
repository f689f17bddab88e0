"""Observed-like nuisance switches of the GalSim generator (sim2obs.simgen.galsim_nuisances): off, the
data are those of the generator before the switches existed; on, each changes the pixels or labels in
its own direction, and the same seed gives the same bytes."""
import json

import numpy as np
import pytest
from hydra import compose, initialize_config_module
from scipy import stats

from tests.conftest import SYNC
from sim2obs import open_galaxy_set
from sim2obs.errors import ConfigError
from sim2obs.galaxyset import MANIFEST_NAME
from sim2obs.galaxyset.hashing import combine_field_digests, field_digests
from sim2obs.simgen import galsim_nuisances as N
from sim2obs.simgen import galsim_bulge_disk as G
from sim2obs.simgen.galsim_bulge_disk import (coerce_config, draw_parameters, galaxy_profile, generate,
                                             psf_profile, render_object, sky_sigma_nmgy)

HSC_NOISE = {"electrons_per_nanomaggy": {"g": 231000.0, "r": 226000.0, "i": 188000.0, "z": 40200.0}}
HSC = {"pixel_scale": 0.168, "population": {"bulge_fraction_model": "uniform", "single_component_fraction": 0.25},
       "psf": {"fwhm_g_median": 0.77}, "noise": HSC_NOISE}
# Hashes of small sets written with every switch off (numpy, astropy and GalSim as pinned in
# constraints.txt): the switches must leave such sets as they are. They are content hashes over every field
# except the two the metallicity physics of issue 15 added or changed later (log_sfr, oh12: tested in
# tests/tasks/test_metallicity_physics.py). Until GENERATOR_VERSION 1.2 they were those of the generator
# before the switches (1.1, commit 79f9643); 1.3 draws every galaxy on an FFT sized for the stamp
# (sim2obs.simgen.galsim_render: pixels within 0.03 sky sigma of GalSim's drawImage, see
# benchmarks/test_bench_generation.py), and its population adds Peng et al. 2010 mass quenching, masses from
# 10^8.5, the Curti et al. 2020 FMR scatter, the fibre aperture term and the SED-fit M/L errors (issue 15), so
# the data, and these hashes, were computed again with 1.3.
LEFT_OUT = ("log_sfr", "oh12")
BEFORE = {
    "default": ({}, "a4d806086b3883b56e916184da45a73cde22a62f6b9008fae6a91badb9d94af1"),
    "hsc": (HSC, "d414838244151a0918b5a3c3cc841d547dc5b017b7c13e902b8a9f706eeae599"),
    "secondary": ({"realism": {"secondary_mean": 1.5}},
                  "c2409c89938ee8a54829a59224573d7b843efe16649b8a56292cbbec9cf2347e"),
}
# A small clean HSC-like r-band config (what hsc_clean.yaml is, at test size).
CLEAN = {"n": 6, "stamp": 40, "bands": ["r"], "seed": 3, "pixel_scale": 0.168,
         "population": {"bulge_fraction_model": "uniform", "bulge_sersic_n": [4.0]},
         "psf": {"fwhm_g_median": 0.77, "fwhm_scatter_dex": 0.0}, "noise": HSC_NOISE}


def _with(base: dict, section: str, **values) -> dict:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    out[section] = {**out.get(section, {}), **values}
    return out


def _rows(cfg):
    p = draw_parameters(cfg)
    return [{k: v[j] for k, v in p.items()} for j in range(cfg.n)]


def _noiseless(cfg_dict):
    return coerce_config(_with(cfg_dict, "noise", enabled=False))


def _lag1_correlation(x: np.ndarray) -> float:
    """Mean correlation coefficient of horizontally and vertically neighbouring pixels."""
    return 0.5 * (np.corrcoef(x[:, 1:].ravel(), x[:, :-1].ravel())[0, 1]
                  + np.corrcoef(x[1:].ravel(), x[:-1].ravel())[0, 1])


def _asymmetry(a: np.ndarray) -> float:
    """Rotational asymmetry sum |I - I_180| / sum |I| about the stamp centre (Conselice 2000, no
    background term)."""
    return float(np.abs(a - a[::-1, ::-1]).sum() / np.abs(a).sum())


@pytest.mark.parametrize("name", sorted(BEFORE))
def test_switches_off_reproduce_the_data_from_before_the_switches(tmp_path, name):
    over, expected = BEFORE[name]
    cfg = {"n": 10, "stamp": 24, "shard_size": 5, "seed": 11, **over}
    path = generate(cfg, tmp_path / name, cluster=SYNC, progress=False)
    manifest = json.loads((path / MANIFEST_NAME).read_text())
    schema = dict(manifest["schema"])
    schema["columns"] = [c for c in schema["columns"] if c["name"] not in LEFT_OUT]
    assert combine_field_digests(schema, field_digests(path, manifest)) == expected


def test_noiseless_sets_are_written_with_the_s_n_of_their_depth(tmp_path):
    """noise.enabled=false used to write snr = inf, which the galaxy-set writer refuses."""
    cfg = dict(CLEAN, n=3, stamp=24, shard_size=3)
    noisy = open_galaxy_set(generate(cfg, tmp_path / "noisy", cluster=SYNC, progress=False))
    clean = open_galaxy_set(generate(_with(cfg, "noise", enabled=False), tmp_path / "clean", cluster=SYNC,
                                     progress=False))
    assert np.all(clean.column("sky_sigma_r") == 0)
    np.testing.assert_allclose(clean.column("snr_r"), noisy.column("snr_r"), rtol=1e-12)


def test_psf_spread_changes_only_the_psf():
    fixed = draw_parameters(coerce_config(dict(CLEAN, n=300)))
    spread = draw_parameters(coerce_config(_with(dict(CLEAN, n=300), "psf", fwhm_scatter_dex=0.07)))
    assert np.ptp(fixed["psf_fwhm_r"]) == 0.0
    assert np.std(np.log10(spread["psf_fwhm_r"])) == pytest.approx(0.07, rel=0.15)
    for key in ("offset_x_px", "bt_r", "bulge_hlr_arcsec", "flux_r"):
        np.testing.assert_array_equal(fixed[key], spread[key])


def test_correlated_noise_correlates_neighbouring_pixels_at_the_same_depth():
    clean = _noiseless(CLEAN)
    white, cosmos = coerce_config(CLEAN), coerce_config(_with(CLEAN, "noise", correlated="cosmos"))
    sigma = sky_sigma_nmgy(white, "r")
    assert sky_sigma_nmgy(cosmos, "r") == sigma  # the catalogue's depth is the same
    corr, std = {"white": [], "cosmos": []}, {"white": [], "cosmos": []}
    for j, row in enumerate(_rows(white)[:4]):
        row = dict(row, flux_r=row["flux_r"] * 1e-4)  # faint: the background noise dominates its own
        galaxy = render_object(clean, row, j)[0][0]
        for name, cfg in (("white", white), ("cosmos", cosmos)):
            noise = render_object(cfg, row, j)[0][0] - galaxy
            corr[name].append(_lag1_correlation(noise))
            std[name].append(noise.std() / sigma)
    assert np.all(np.abs(corr["white"]) < 0.08), corr
    assert np.all(np.array(corr["cosmos"]) > 0.35), corr  # COSMOS: ~0.48
    np.testing.assert_allclose(std["white"], 1.0, atol=0.1)
    np.testing.assert_allclose(std["cosmos"], 1.0, atol=0.2)  # correlated: fewer independent pixels


def test_cosmos_noise_has_the_requested_variance_and_correlation():
    import galsim

    im = galsim.ImageF(256, 256, scale=0.168)
    im.addNoise(N.cosmos_noise(0.168).copy(rng=galsim.BaseDeviate(1)).withVariance(4.0))
    assert im.array.var() == pytest.approx(4.0, rel=0.1)
    assert 0.4 < _lag1_correlation(im.array) < 0.56  # COSMOS drizzled pixels: ~0.48


def test_knots_raise_the_asymmetry():
    smooth = _noiseless(CLEAN)
    knots = _noiseless(_with(CLEAN, "realism", clumps=True))
    for j, row in enumerate(_rows(smooth)[:4]):
        row = dict(row, offset_x_px=0.0, offset_y_px=0.0)  # centred: a smooth galaxy is symmetric
        a, b = render_object(smooth, row, j)[0][0], render_object(knots, row, j)[0][0]
        assert _asymmetry(a) < 1e-5 and _asymmetry(b) > 0.03
        assert a.sum() == pytest.approx(b.sum(), rel=0.02)  # knots take disk light, add none (in-stamp: ~)


def test_knots_drawn_apart_match_the_galaxy_drawn_whole():
    """The knots are convolved with the PSF on their own (8x faster than inside the galaxy's FFT):
    the same image as the whole profile, knots included, convolved at once."""
    import galsim

    cfg = _noiseless(_with(CLEAN, "realism", clumps=True))
    row = dict(_rows(cfg)[0], offset_x_px=0.0, offset_y_px=0.0)
    (apart,), _ = render_object(cfg, row, 0)
    seed = G._object_seed(cfg, 0, G._PURPOSE_KNOTS)  # the knot seed of object 0
    whole = galaxy_profile(row, "r", knots_rng=galsim.BaseDeviate(seed), clump_count=cfg.realism.clump_count,
                           clump_fraction=cfg.realism.clump_flux_fraction)
    gsp = galsim.GSParams(folding_threshold=cfg.folding_threshold, maxk_threshold=cfg.maxk_threshold)
    at_once = galsim.Convolve([whole, psf_profile(cfg, row["psf_fwhm_r"], gsp)], gsparams=gsp).drawImage(
        nx=cfg.stamp, ny=cfg.stamp, scale=cfg.pixel_scale).array
    assert np.abs(apart - at_once).max() < 1e-4 * at_once.max()
    assert _asymmetry(apart) > 0.03


def test_free_sersic_spreads_n_and_leaves_the_rest():
    fixed = draw_parameters(coerce_config(dict(CLEAN, n=400)))
    free = draw_parameters(coerce_config(_with(dict(CLEAN, n=400), "population", free_sersic=True)))
    assert set(fixed["bulge_sersic_n"]) == {4.0}
    n = free["bulge_sersic_n"]
    assert n.min() >= 1.0 and n.max() <= 6.0 and len(np.unique(n)) > 60
    assert np.allclose(n / N.SERSIC_N_STEP, np.round(n / N.SERSIC_N_STEP))
    assert stats.kstest(n, stats.uniform(1.0 - 0.025, 5.05).cdf).pvalue > 1e-3
    for key in ("bt_r", "bulge_hlr_arcsec", "flux_r", "psf_fwhm_r", "redshift"):
        np.testing.assert_array_equal(fixed[key], free[key])


def test_stars_are_point_sources_with_rising_counts():
    u = np.random.default_rng(0).uniform(size=40_000)
    mags = N.star_magnitudes(u, [14.0, 22.0], 0.15)
    assert mags.min() >= 14.0 and mags.max() <= 22.0
    counts, _ = np.histogram(mags, bins=8, range=(14, 22))
    slope = np.polyfit(np.arange(14.5, 22), np.log10(counts), 1)[0]
    assert slope == pytest.approx(0.15, abs=0.02)
    np.testing.assert_allclose(N.star_magnitudes(u, [14.0, 20.0], 0.0), 14.0 + 6.0 * u)

    base = _noiseless(CLEAN)
    starry = _noiseless(_with(CLEAN, "realism", star_mean=3.0, star_mag_range=[16.0, 19.0]))
    seen = 0
    for j, row in enumerate(_rows(base)):
        (a,), _ = render_object(base, row, j)
        (b,), extra = render_object(starry, row, j)
        added = b - a
        assert added.min() > -1e-4 * max(added.max(), 1e-3)  # light added (FFT ringing aside)
        if extra["n_stars"]:
            seen += 1
            k = 60 * extra["n_stars"]  # PSF FWHM ~4.3 px: a star fits in ~60 px
            assert np.sort(added.ravel())[-k:].sum() > 0.8 * added.sum() > 0  # Moffat wings: ~85 %
            assert added.sum() < 10 ** (-0.4 * (16.0 - 22.5)) * extra["n_stars"]
    assert seen >= 3


def test_single_component_fraction():
    off = draw_parameters(coerce_config(dict(CLEAN, n=800)))
    on = draw_parameters(coerce_config(_with(dict(CLEAN, n=800), "population", single_component_fraction=0.25)))
    assert not np.any((off["bt_r"] == 0) | (off["bt_r"] == 1))
    assert np.mean((on["bt_r"] == 0) | (on["bt_r"] == 1)) == pytest.approx(0.25, abs=0.05)


def test_chabrier_calibration_shifts_mass_labels_only(tmp_path):
    bell = dict(CLEAN, n=4, stamp=24, shard_size=4)
    chab = _with(bell, "population", ml_calibration="chabrier")
    a = open_galaxy_set(generate(bell, tmp_path / "bell", cluster=SYNC, progress=False))
    b = open_galaxy_set(generate(chab, tmp_path / "chab", cluster=SYNC, progress=False))
    np.testing.assert_array_equal(a.images("image"), b.images("image"))
    np.testing.assert_array_equal(a.column("flux_r"), b.column("flux_r"))
    np.testing.assert_allclose(b.column("ml_r") / a.column("ml_r"), 10 ** -0.093, rtol=1e-12)
    np.testing.assert_allclose(b.column("ml_r_err") / a.column("ml_r_err"), 10 ** -0.093, rtol=1e-12)
    np.testing.assert_allclose(b.column("log_mstar") - a.column("log_mstar"), -0.093, atol=1e-12)


def _compose(overrides=()):
    with initialize_config_module("sim2obs.configs", version_base=None):
        return compose(config_name="simgen/hsc_clean", overrides=[f"simgen.{o}" for o in overrides]).simgen


def test_hsc_clean_is_hsc_without_nuisances():
    with initialize_config_module("sim2obs.configs", version_base=None):
        hsc = coerce_config(compose(config_name="simgen/hsc").simgen)
    clean = coerce_config(_compose())
    assert (clean.pixel_scale, clean.stamp, clean.noise, clean.psf.fwhm_g_median) == \
           (hsc.pixel_scale, hsc.stamp, hsc.noise, hsc.psf.fwhm_g_median)
    assert clean.psf.fwhm_scatter_dex == 0 and clean.noise.correlated == "none"
    assert clean.population.bulge_sersic_n == [4.0] and not clean.population.free_sersic
    assert clean.population.single_component_fraction == 0 and clean.population.ml_calibration == "bell2003"
    r = clean.realism
    assert r.secondary_mean == 0 and r.star_mean == 0 and not r.clumps


def test_every_ladder_step_changes_the_clean_set_reproducibly(tmp_path):
    """Each step's overrides (as documented in hsc_clean.yaml) apply to the clean preset and change
    the data; all steps together give the same bytes twice (COSMOS noise cache cleared in between)."""
    small = ["n=3", "stamp=24", "shard_size=3", "bands=[r]", "seed=5"]

    def content_hash(name, overrides):
        out = generate(_compose([*small, *overrides]), tmp_path / name, cluster=SYNC, progress=False)
        return open_galaxy_set(out).content_hash

    clean = content_hash("clean", ())
    for name, overrides in {**N.LADDER, **N.LABEL_SHIFT}.items():
        assert content_hash(name, overrides) != clean, name
    everything = tuple(o for steps in (*N.LADDER.values(), *N.LABEL_SHIFT.values()) for o in steps)
    first = content_hash("all", everything)
    N.cosmos_noise.cache_clear()
    assert content_hash("all_again", everything) == first


@pytest.mark.parametrize("section, values, key", [
    ("noise", {"correlated": "pink"}, "simgen.noise.correlated"),
    ("noise", {"correlated_fraction": 0.0}, "simgen.noise.correlated_fraction"),
    ("population", {"free_sersic_range": [0.1, 7.0]}, "simgen.population.free_sersic_range"),
    ("population", {"ml_calibration": "salpeter"}, "simgen.population.ml_calibration"),
    ("realism", {"star_mag_range": [22.0, 14.0]}, "simgen.realism.star_mag_range"),
    ("realism", {"star_count_slope": float("nan")}, "simgen.realism.star_count_slope"),
    ("realism", {"star_mean": -1.0}, "simgen.realism.star_mean"),
])
def test_bad_nuisance_values_are_refused(section, values, key):
    with pytest.raises(ConfigError) as err:
        coerce_config(_with(CLEAN, section, **values))
    assert key in str(err.value)
