"""Shift diagnostics of the transfer studies (issue 14): feature distances, domain classifiers,
catalogue shifts and image statistics, on populations drawn here (numpy and GalSim)."""
import json
import math

import galsim
import numpy as np
import pytest
from scipy import linalg
from sklearn.metrics import roc_auc_score

from sim2obs.errors import Sim2obsValueError
from sim2obs.tasks.transfer import diagnostics as D
from sim2obs.tasks.transfer.image_stats import image_statistics

SCALE = 0.2  # arcsec/px of the GalSim stamps drawn here


# --------------------------------------------------------------------------------------------
# Populations
# --------------------------------------------------------------------------------------------
def features(n, seed, shift=0.0, dim=8):
    """Correlated Gaussian features; ``shift`` moves the mean by ``shift`` standard deviations
    along every whitened axis (Mahalanobis distance ``shift * sqrt(dim)``)."""
    rng = np.random.default_rng(seed)
    mix = np.random.default_rng(99).normal(size=(dim, dim)) / math.sqrt(dim)
    return (rng.normal(size=(n, dim)) + shift) @ mix


def galaxies(n, seed, noise=1.0, blur=0.0, size=1.0, stamp=40):
    """Bulge + disk galaxies (sizes, fluxes, shapes, sub-pixel offsets drawn from ``seed``),
    PSF 0.6" FWHM (+ ``blur`` arcsec FWHM), white noise of sigma 5 x ``noise``."""
    rng = np.random.default_rng(seed)
    hlr, flux = rng.uniform(0.5, 1.0, n) * size, rng.uniform(2000, 6000, n)
    q, beta, bt = rng.uniform(0.5, 1.0, n), rng.uniform(0, np.pi, n), rng.uniform(0, 0.5, n)
    offset = rng.uniform(-0.5, 0.5, (n, 2))
    psf = galsim.Gaussian(fwhm=0.6)
    if blur > 0:
        psf = galsim.Convolve(psf, galsim.Gaussian(fwhm=blur))
    out = np.empty((n, stamp, stamp))
    for i in range(n):  # GalSim draws one profile at a time
        gal = galsim.Add(galsim.Exponential(half_light_radius=hlr[i], flux=flux[i] * (1 - bt[i])),
                         galsim.DeVaucouleurs(half_light_radius=0.5 * hlr[i], flux=flux[i] * bt[i]))
        gal = gal.shear(q=q[i], beta=beta[i] * galsim.radians)
        out[i] = galsim.Convolve(gal, psf).drawImage(nx=stamp, ny=stamp, scale=SCALE, offset=offset[i]).array
    return out + rng.normal(0.0, 5.0 * noise, out.shape)


def sersic(n, hlr_px, stamp=64, flux=1000.0, offset=(0.0, 0.0), psf_fwhm=None):
    """A Sérsic profile (``hlr_px`` before the PSF), optionally convolved with a Moffat PSF of
    ``psf_fwhm`` arcsec."""
    gal = galsim.Sersic(n=n, half_light_radius=hlr_px * SCALE, flux=flux)
    if psf_fwhm:
        gal = galsim.Convolve(gal, galsim.Moffat(beta=3.5, fwhm=psf_fwhm))
    return gal.drawImage(nx=stamp, ny=stamp, scale=SCALE, offset=offset).array


@pytest.fixture(scope="module")
def source_images():
    return galaxies(80, seed=1)


def strictly_increasing(values):
    return all(b > a for a, b in zip(values, values[1:]))


# --------------------------------------------------------------------------------------------
# Feature distances and the classifier test
# --------------------------------------------------------------------------------------------
def test_same_population_gives_no_shift():
    x, y = features(300, 1), features(300, 2)
    mmd = D.mmd_test(x, y, seed=0)
    assert mmd["p_value"] > 0.05 and abs(mmd["mmd2"]) < 0.005
    c2st = D.classifier_two_sample_test(x, y, seed=0)
    assert abs(c2st["auc"] - 0.5) < 2.5 * c2st["auc_se"] + 0.02 and c2st["p_value"] > 0.05
    fd = D.frechet_distance(x, y, n_permutations=30, seed=0)
    assert fd["p_value"] > 0.05
    shifted = D.frechet_distance(x, features(300, 2, shift=0.5))
    assert fd["frechet"] < 0.2 * shifted["frechet"]


def test_feature_diagnostics_grow_with_the_shift():
    x = features(250, 1)
    rows = []
    for shift in (0.0, 0.15, 0.3, 0.6):
        y = features(250, 2, shift=shift)
        rows.append((D.mmd_test(x, y, seed=0, n_permutations=100), D.frechet_distance(x, y),
                     D.classifier_two_sample_test(x, y, seed=0, n_bootstrap=50)))
    assert strictly_increasing([m["mmd2"] for m, _, _ in rows])
    assert strictly_increasing([f["frechet"] for _, f, _ in rows])
    assert strictly_increasing([c["auc"] for _, _, c in rows])
    assert rows[0][0]["p_value"] > 0.05 and rows[-1][0]["p_value"] < 0.02
    assert rows[-1][2]["auc"] > 0.8 and rows[-1][2]["p_value"] < 1e-6


def test_identical_sets_give_chance_auc_not_a_leak():
    x = features(100, 1)
    for classifier in ("logistic", "lightgbm"):
        c2st = D.classifier_two_sample_test(x, x.copy(), classifier=classifier, seed=0, n_bootstrap=0)
        assert c2st["auc"] == pytest.approx(0.5, abs=0.05), classifier


def test_lightgbm_classifier_sees_a_variance_shift_that_is_not_a_mean_shift():
    x, y = features(300, 1), 1.8 * features(300, 2)
    assert D.classifier_two_sample_test(x, y, classifier="lightgbm", seed=0)["auc"] > 0.7
    with pytest.raises(Sim2obsValueError, match="unknown domain classifier"):
        D.classifier_two_sample_test(x, y, classifier="svm")


def test_diagnostics_are_deterministic_and_subsample():
    x, y = features(500, 1), features(400, 2, shift=0.2)
    a = D.mmd_test(x, y, seed=3, max_n=200, n_permutations=50)
    assert a == D.mmd_test(x, y, seed=3, max_n=200, n_permutations=50)
    assert (a["n_source"], a["n_target"]) == (200, 200)
    c = D.classifier_two_sample_test(x, y, seed=3, max_n=150)
    assert c == D.classifier_two_sample_test(x, y, seed=3, max_n=150) and c["n_source"] == 150


def test_mmd_matches_the_direct_unbiased_estimator():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(5, 3)) + 0.3
    s = 1.3
    got = D.mmd_test(x, y, standardize=False, bandwidth=s, n_permutations=0)["mmd2"]
    k = lambda a, b: np.exp(-((a[:, None] - b[None]) ** 2).sum(-1) / (2 * s * s))  # noqa: E731
    kxx, kyy = k(x, x), k(y, y)
    want = ((kxx.sum() - 7) / 42 + (kyy.sum() - 5) / 20 - 2 * k(x, y).mean())
    assert got == pytest.approx(want, rel=1e-10)


def test_frechet_matches_the_sqrtm_formula():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 5)), rng.normal(size=(30, 5)) * [1, 2, 1, 0.5, 1] + 0.2
    cx, cy = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    mu = x.mean(0) - y.mean(0)
    want = mu @ mu + np.trace(cx + cy - 2 * np.real(linalg.sqrtm(cx @ cy)))
    assert D.frechet_distance(x, y)["frechet"] == pytest.approx(want, rel=1e-8)


def test_vectorised_bootstrap_auc_equals_sklearn_on_each_resample():
    rng = np.random.default_rng(0)
    label = np.r_[np.zeros(50, int), np.ones(60, int)]
    score = np.round(rng.normal(size=110) + 0.5 * label, 1)  # many ties
    got = D._bootstrap_auc(label, score, 3, np.random.default_rng(5))
    counts = np.random.default_rng(5).multinomial(110, np.full(110, 1 / 110), size=3)
    order = np.argsort(score, kind="stable")
    for b in range(3):
        idx = np.repeat(order, counts[b])
        assert got[b] == pytest.approx(roc_auc_score(label[idx], score[idx]), abs=1e-12)


def test_bad_inputs_are_refused_with_the_field_named():
    x = features(20, 1)
    bad = x.copy()
    bad[4, 2] = np.nan
    with pytest.raises(Sim2obsValueError, match=r"target features holds 1 non-finite values \(first in row 4"):
        D.mmd_test(x, bad)
    with pytest.raises(Sim2obsValueError, match="different widths"):
        D.frechet_distance(x, x[:, :3])
    with pytest.raises(Sim2obsValueError, match="at least 5 rows"):
        D.classifier_two_sample_test(x, x[:3])


# --------------------------------------------------------------------------------------------
# Catalogue shift
# --------------------------------------------------------------------------------------------
def test_column_shift_measures_the_injected_offset():
    rng = np.random.default_rng(0)
    src = {"id": np.arange(2000), "mass": rng.normal(10, 0.5, 2000), "name": np.array(["a"] * 2000),
           "z": rng.uniform(0, 1, 2000)}
    tgt = {"id": np.arange(1500), "mass": rng.normal(10.25, 0.5, 1500), "z": rng.uniform(0, 1, 1500),
           "extra": np.ones(1500)}
    tgt["z"][:10] = np.nan
    out = D.column_shift(src, tgt)
    assert set(out["columns"]) == {"mass", "z"} and out["skipped"] == {}
    assert out["columns"]["mass"]["smd"] == pytest.approx(0.5, abs=0.08)
    assert out["columns"]["mass"]["ks_p_value"] < 1e-10
    assert abs(out["columns"]["z"]["smd"]) < 0.1 and out["columns"]["z"]["ks_p_value"] > 0.01
    assert out["columns"]["z"]["n_target"] == 1490
    named = D.column_shift(src, {**tgt, "name": np.array(["b"] * 1500)}, columns=["name", "mass"])
    assert named["skipped"] == {"name": "not numeric"}
    with pytest.raises(Sim2obsValueError, match="target catalogue lacks columns"):
        D.column_shift(src, tgt, columns=["name"])


# --------------------------------------------------------------------------------------------
# Image statistics on known profiles
# --------------------------------------------------------------------------------------------
def test_concentration_orders_exponential_below_de_vaucouleurs():
    st = image_statistics(np.stack([sersic(1, 5), sersic(4, 5)]))
    c_exp, c_dev = st["concentration"]
    assert 2.5 < c_exp < 2.9  # 2.7 in Conselice 2003 (and statmorph) for an exponential disk
    assert c_dev > 3.8 and c_dev - c_exp > 1.0


def test_asymmetry_is_zero_for_symmetric_and_positive_for_lopsided_galaxies():
    rng = np.random.default_rng(0)
    smooth = galsim.Exponential(half_light_radius=1.0, flux=1000)
    lopsided = smooth + galsim.Gaussian(sigma=0.2, flux=100).shift(0.6, 0.3)
    clean = np.stack([smooth.drawImage(nx=64, ny=64, scale=SCALE, offset=(0.3, -0.4)).array,
                      lopsided.drawImage(nx=64, ny=64, scale=SCALE).array])
    st = image_statistics(clean)
    assert abs(st["asymmetry"][0]) < 0.005 and st["asymmetry"][1] > 0.1
    assert st["centre_x"][0] == pytest.approx(31.8, abs=0.02) and st["centre_y"][0] == pytest.approx(31.1, abs=0.02)
    noisy = np.tile(clean, (30, 1, 1)) + rng.normal(0, 0.1, (60, 64, 64))
    st = image_statistics(noisy)
    a_sym, a_lop = st["asymmetry"][0::2], st["asymmetry"][1::2]
    assert abs(a_sym.mean()) < 0.01  # the sky-frame background correction removes the noise term
    assert a_lop.mean() > a_sym.mean() + 0.1
    assert st["sky_sigma"].mean() == pytest.approx(0.1, rel=0.05)


def test_half_light_radius_of_a_galsim_profile():
    truth_px = 6.0
    img = sersic(1, truth_px, stamp=80, offset=(0.25, 0.4))
    st = image_statistics(img[None], pixel_scale=SCALE)
    # r50 encloses half of the flux inside 1.5 r_petro (~97 % of an exponential's total flux)
    assert st["r50_px"][0] == pytest.approx(truth_px, rel=0.04)
    assert st["r50_arcsec"][0] == pytest.approx(st["r50_px"][0] * SCALE)
    assert st["petro_ok"][0] and st["flux_total"][0] == pytest.approx(1000, rel=0.05)


def test_snr_follows_the_noise_and_a_known_sky_sigma_is_used():
    rng = np.random.default_rng(1)
    img = sersic(1, 4)
    stack = np.stack([img + rng.normal(0, s, img.shape) for s in (0.05, 0.1, 0.2)])
    st = image_statistics(stack)
    assert strictly_increasing(list(st["sky_sigma"])) and strictly_increasing(list(-st["snr"]))
    assert st["snr"][0] / st["snr"][2] == pytest.approx(4.0, rel=0.2)
    known = image_statistics(stack, sky_sigma=[0.05, 0.1, 0.2])
    assert np.array_equal(known["sky_sigma"], [0.05, 0.1, 0.2])


def test_half_light_radius_follows_the_catalogue_of_a_generated_set(tiny_galsim_set):
    from scipy.stats import spearmanr

    from sim2obs.galaxyset import GalaxySet

    gs = GalaxySet(tiny_galsim_set)
    stack = gs.schema.stack("image")
    r_band = gs.images("image")[:, stack.channels.index("r")]
    st = image_statistics(r_band, pixel_scale=stack.pixel_scale_arcsec)
    # catalogue r_e: noiseless, before the PSF; ours: PSF-convolved, noisy, within 1.5 r_petro
    assert spearmanr(st["r50_arcsec"], gs.column("r_e_r")).statistic > 0.8


def test_image_statistics_refuse_bad_stacks():
    with pytest.raises(Sim2obsValueError, match=r"\(N, H, W\)"):
        image_statistics(np.zeros((32, 32)))
    with pytest.raises(Sim2obsValueError, match="at least 8 x 8"):
        image_statistics(np.zeros((2, 6, 6)))
    bad = np.zeros((3, 32, 32))
    bad[2, 5, 5] = np.inf
    with pytest.raises(Sim2obsValueError, match="1 non-finite pixels.*stamp 2"):
        image_statistics(bad)


def test_concentration_and_asymmetry_agree_with_statmorph():
    statmorph = pytest.importorskip("statmorph")
    rng = np.random.default_rng(2)
    sigma = 0.02
    for n, hlr, offset in ((1.0, 6.0, (0.0, 0.0)), (2.5, 5.0, (0.3, -0.2)), (4.0, 4.0, (0.0, 0.0))):
        clean = sersic(n, hlr, stamp=96, offset=offset, psf_fwhm=0.4)
        img = clean + rng.normal(0, sigma, clean.shape)
        seg = (clean > 0.5 * sigma).astype(int)
        ref = statmorph.source_morphology(img, seg, weightmap=np.full_like(img, sigma))[0]
        ours = image_statistics(img[None], sky_sigma=sigma)
        assert ref.flag == 0
        # measured: |dC| <= 0.03, |dA| <= 0.015, r_petro and r50 within 1 % (statmorph 0.7.2)
        assert ours["concentration"][0] == pytest.approx(ref.concentration, abs=0.05), n
        assert ours["asymmetry"][0] == pytest.approx(ref.asymmetry, abs=0.02), n
        assert ours["r_petro_px"][0] == pytest.approx(ref.rpetro_circ, rel=0.02), n
        assert ours["r50_px"][0] == pytest.approx(ref.r50, rel=0.02), n


# --------------------------------------------------------------------------------------------
# Image domain classifiers and shifts of image statistics
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind, levels, stat", [
    ("noise", (1.0, 1.08, 1.2), "sky_sigma"),
    ("blur", (0.0, 0.5, 1.0), "concentration"),
    ("size", (1.0, 1.2, 1.5), "r50_px"),
])
def test_image_diagnostics_grow_with_an_injected_shift(source_images, kind, levels, stat):
    src_stats = image_statistics(source_images)
    aucs, smds = [], []
    for level in levels:
        tgt = galaxies(80, seed=2, **{kind: level})
        tgt_stats = image_statistics(tgt)
        aucs.append(D.classifier_two_sample_test(D.image_features(source_images, stats=src_stats),
                                                 D.image_features(tgt, stats=tgt_stats), seed=0,
                                                 n_bootstrap=0)["auc"])
        smds.append(abs(D.column_shift(src_stats, tgt_stats, columns=[stat])["columns"][stat]["smd"]))
    assert aucs[0] < 0.65 and aucs[-1] > 0.8, aucs
    assert strictly_increasing(aucs), aucs
    assert strictly_increasing(smds), smds


def test_pixel_classifier_sees_a_size_change(source_images):
    same = D.image_classifier_test(source_images, galaxies(80, seed=2), representation="pixels", seed=0)
    larger = D.image_classifier_test(source_images, galaxies(80, seed=2, size=1.8), representation="pixels", seed=0)
    assert same["classifier"] == "lightgbm" and same["auc"] < 0.65
    assert larger["auc"] > 0.85


# --------------------------------------------------------------------------------------------
# The combined report
# --------------------------------------------------------------------------------------------
def test_shift_report_is_json_and_reproducible(source_images):
    rng = np.random.default_rng(0)
    src = {"name": "clean", "features": features(80, 1), "images": source_images[:, None],
           "catalogue": {"id": np.arange(80), "mass": rng.normal(10, 0.5, 80)}, "pixel_scale": SCALE}
    tgt = {"name": "blurred", "features": features(60, 2, shift=1.0),
           "images": galaxies(60, seed=3, blur=1.0)[:, None],
           "catalogue": {"id": np.arange(60), "mass": rng.normal(10, 0.5, 60)}, "pixel_scale": SCALE}
    options = {"n_permutations": 50, "n_bootstrap": 20, "image_representations": ["stats"]}
    report = D.shift_report(src, tgt, seed=4, **options)
    text = json.dumps(report, allow_nan=False)
    assert json.loads(text) == report
    assert report["features"]["mmd"]["p_value"] < 0.05
    assert report["features"]["classifier"]["auc"] > 0.8
    assert set(report["images"]["classifier"]) == {"stats"}
    assert report["images"]["statistics"]["concentration"]["smd"] < -0.5  # blur lowers concentration
    assert "r50_arcsec" in report["images"]["statistics"]
    assert set(report["catalogue"]["columns"]) == {"mass"}
    assert report == D.shift_report(src, tgt, seed=4, **options)


def test_shift_report_sections_follow_the_keys():
    src, tgt = {"features": features(30, 1)}, {"features": features(30, 2), "catalogue": {"a": np.ones(30)}}
    report = D.shift_report(src, tgt, n_permutations=10, n_bootstrap=0)
    assert "features" in report and "images" not in report and "catalogue" not in report
    assert report["skipped"] == {"catalogue": "only the target has catalogue"}
    masked = np.zeros((10, 16, 16))
    masked[3, 2, 2] = np.nan
    report = D.shift_report({"images": masked}, {"images": np.zeros((10, 16, 16))}, n_bootstrap=0)
    assert report["skipped"] == {"images": "non-finite pixels (source 1, target 0)"}
    with pytest.raises(Sim2obsValueError, match=r"unknown keys in the source.*\['feature'\]"):
        D.shift_report({"feature": features(30, 1)}, tgt)


def test_keyword_form_takes_the_protocols_inputs():
    rng = np.random.default_rng(0)
    out = D.shift_diagnostics(source_features=features(40, 1), target_features=features(40, 2, shift=2.0),
                              source_catalog=rng.normal(size=(50, 2)), target_catalog=rng.normal(1, 1, (45, 2)),
                              catalog_columns=["mass", "bt"], source_inputs=np.zeros((40, 1, 8, 8)),
                              seed=1, n_permutations=20, n_bootstrap=0)
    assert set(out["catalogue"]["columns"]) == {"mass", "bt"}
    assert out["catalogue"]["columns"]["mass"]["smd"] > 0.6
    assert out["features"]["mmd"]["p_value"] < 0.1
