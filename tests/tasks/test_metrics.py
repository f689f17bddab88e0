"""The shared metric definitions against hand-computed values and edge cases."""
import numpy as np
import pytest

from sim2obs.errors import Sim2obsValueError
from sim2obs.tasks import metrics as m


def test_l1_floors_the_uncertainty_at_five_percent():
    true = np.array([2.0, 4.0, 10.0])
    pred = np.array([2.5, 3.0, 10.0])
    err = np.array([0.5, 0.0, 0.1])  # 0.0 -> floored to 0.2; 0.1 -> floored to 0.5
    # |0.5|/0.5 = 1, |1|/0.2 = 5, 0/0.5 = 0
    assert m.l1(pred, true, err) == pytest.approx((1 + 5 + 0) / 3)
    assert m.l2(pred, true, err) == pytest.approx((1 + 25 + 0) / 3)
    assert m.median_l1(pred, true, err) == pytest.approx(1.0)


def test_l1_with_zero_truth_and_zero_error_is_refused():
    with pytest.raises(Sim2obsValueError, match="both zero"):
        m.l1([1.0], [0.0], [0.0])


def test_negative_uncertainty_is_refused():
    with pytest.raises(Sim2obsValueError, match=">= 0"):
        m.l1([1.0], [1.0], [-0.1])


def test_log_metrics():
    true = np.array([1.0, 10.0, 100.0])
    pred = np.array([10.0, 10.0, 100.0 * 10 ** 0.1])
    assert m.rmsle(pred, true) == pytest.approx(np.sqrt((1.0 + 0 + 0.01) / 3))
    assert m.frac_within(pred, true, 0.15) == pytest.approx(2 / 3)
    with pytest.raises(Sim2obsValueError, match="positive"):
        m.rmsle([1.0, -1.0], [1.0, 1.0])


def test_point_metrics_by_hand():
    true = np.zeros(5)
    pred = np.array([-1.0, 0.0, 0.5, 1.0, 10.0])
    assert m.rmse(pred, true) == pytest.approx(np.sqrt((1 + 0 + 0.25 + 1 + 100) / 5))
    assert m.bias_mean(pred, true) == pytest.approx(10.5 / 5)
    assert m.bias_median(pred, true) == pytest.approx(0.5)
    # median 0.5; |x - 0.5| = 1.5, 0.5, 0, 0.5, 9.5 -> median 0.5
    assert m.nmad(pred - true) == pytest.approx(1.4826 * 0.5)
    # 3 NMAD = 2.2239: only the 10.0 residual (9.5 from the median) is an outlier
    assert m.outlier_fraction(pred, true) == pytest.approx(0.2)
    assert m.outlier_fraction(pred, true, threshold=1.0) == pytest.approx(0.4)
    assert m.scatter_dex(pred, true) == pytest.approx(np.std(pred))
    assert set(m.point_metrics(pred, true)) == {"rmse", "nmad", "bias_mean", "bias_median", "outlier_frac"}


def test_nmad_matches_sigma_for_a_gaussian():
    x = np.random.default_rng(1).normal(0, 0.3, 200_000)
    assert m.nmad(x) == pytest.approx(0.3, rel=0.01)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_predictions_are_refused_with_their_index(bad):
    with pytest.raises(Sim2obsValueError, match=r"predictions has 1 NaN/inf value\(s\), first at index \[1\]"):
        m.rmse([1.0, bad, 2.0], [1.0, 1.0, 1.0])


def test_empty_inputs_are_refused():
    with pytest.raises(Sim2obsValueError, match="empty"):
        m.rmse([], [])
    with pytest.raises(Sim2obsValueError, match="empty"):
        m.nmad([])


def test_shape_mismatch_is_refused():
    with pytest.raises(Sim2obsValueError, match="shape"):
        m.rmse([1.0, 2.0], [1.0])


def _calibrated(n=4000, s=400, seed=0):
    """Truth drawn from the same Gaussian the posterior samples come from."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(0, 1, n)
    sigma = rng.uniform(0.2, 1.0, n)
    truth = mu + sigma * rng.standard_normal(n)
    samples = mu + sigma * rng.standard_normal((s, n))
    return samples, truth, mu, sigma


def test_coverage_of_a_calibrated_posterior_is_nominal():
    samples, truth, _, _ = _calibrated()
    for key, level in m.COVERAGE_LEVELS.items():
        tol = 4 * np.sqrt(level * (1 - level) / truth.size) + 0.01  # binomial error + finite-sample quantiles
        assert m.coverage(samples, truth, level) == pytest.approx(level, abs=tol), key
    assert m.calibration_error(samples, truth) < 0.02


def test_coverage_of_an_overconfident_posterior_is_below_nominal():
    samples, truth, mu, _ = _calibrated()
    narrow = mu + 0.5 * (samples - mu)
    for level in m.COVERAGE_LEVELS.values():
        assert m.coverage(narrow, truth, level) < level - 0.05
    assert m.calibration_error(narrow, truth) > 0.1
    assert m.posterior_width(narrow) == pytest.approx(0.5 * m.posterior_width(samples), rel=0.02)


def test_gaussian_samples_give_calibrated_coverage():
    _, truth, mu, sigma = _calibrated()
    samples = m.gaussian_samples(mu, sigma, 300, seed=3)
    assert samples.shape == (300, truth.size)
    assert m.coverage(samples, truth, 0.6827) == pytest.approx(0.6827, abs=0.03)


def test_posterior_samples_shape_is_checked():
    with pytest.raises(Sim2obsValueError, match="shape"):
        m.coverage(np.zeros((10, 3)), np.zeros(4), 0.68)
    with pytest.raises(Sim2obsValueError, match="at least 2 samples"):
        m.coverage(np.zeros((1, 4)), np.zeros(4), 0.68)
    with pytest.raises(Sim2obsValueError, match=r"\(0, 1\)"):
        m.coverage(np.zeros((5, 4)), np.zeros(4), 1.0)


def test_posterior_score_rewards_accuracy_and_calibration():
    samples, truth, mu, _ = _calibrated()
    informative = m.posterior_score(mu, truth, samples)
    rng = np.random.default_rng(5)
    prior = truth[rng.integers(0, truth.size, (400, truth.size))]  # image-blind, calibrated
    blind = m.posterior_score(np.median(prior, axis=0), truth, prior)
    overconfident = m.posterior_score(mu, truth, mu + 0.3 * (samples - mu))
    assert blind == pytest.approx(1.0, abs=0.06)
    assert informative < blind
    assert informative < overconfident


def test_ranking_direction():
    assert m.is_better("l1", 1.0, 2.0)
    assert m.is_better("frac_within_0.15dex", 0.9, 0.8)
    assert m.is_better("bias_median", -0.01, 0.02)
    assert m.is_better("bt_r/coverage_68", 0.70, 0.60)
    assert not m.is_better("coverage_68", 0.95, 0.70)  # over-coverage is 0.27 off, under 0.02
    with pytest.raises(Sim2obsValueError, match="unknown metric"):
        m.is_better("accuracy", 1, 0)


# ---------------------------------------------------------------------------- CRPS, PIT, bootstrap
def test_crps_matches_the_gaussian_closed_form():
    """CRPS(N(mu, s), y) = s (z (2 Phi(z) - 1) + 2 phi(z) - 1 / sqrt(pi)), z = (y - mu) / s
    (Gneiting & Raftery 2007); the sample estimator agrees, and a point mass gives |x - y|."""
    from scipy import stats

    rng = np.random.default_rng(0)
    y = np.array([0.0, 0.7, -2.0, 3.0])
    s = 1.5
    samples = s * rng.standard_normal((20_000, len(y)))
    z = y / s
    exact = s * (z * (2 * stats.norm.cdf(z) - 1) + 2 * stats.norm.pdf(z) - 1 / np.sqrt(np.pi))
    assert m.crps(samples, y) == pytest.approx(exact.mean(), rel=0.01)
    assert m.crps(np.full((5, 2), 1.0), np.array([1.0, 3.0])) == pytest.approx(1.0)  # (0 + 2) / 2


def test_pit_is_uniform_for_a_calibrated_posterior_and_u_shaped_for_an_overconfident_one():
    rng = np.random.default_rng(1)
    centre = rng.normal(size=2000)
    truth = centre + rng.normal(size=2000)
    good = centre + rng.normal(size=(500, 2000))
    assert m.pit_ks(good, truth) < 0.04
    assert np.allclose(m.pit_histogram(good, truth), 0.1, atol=0.025)
    narrow = centre + 0.3 * rng.normal(size=(500, 2000))
    hist = m.pit_histogram(narrow, truth)
    assert m.pit_ks(narrow, truth) > 0.2 and hist[0] > 0.25 and hist[-1] > 0.25
    # truths on a bound the samples pile up on (B/T = 0) get spread PIT values, not 0
    tied = m.pit(np.zeros((100, 500)), np.zeros(500))
    assert 0.4 < tied.mean() < 0.6 and tied.min() >= 0 and tied.max() <= 1


def test_bootstrap_error_of_a_coverage_is_binomial():
    rng = np.random.default_rng(2)
    inside = rng.uniform(size=400) < 0.7
    err = m.bootstrap_error(np.mean, inside, n_boot=2000, seed=3)
    assert err == pytest.approx(np.sqrt(0.7 * 0.3 / 400), rel=0.15)
    assert m.bootstrap_error(np.mean, inside, n_boot=200, seed=3) == m.bootstrap_error(np.mean, inside,
                                                                                        n_boot=200, seed=3)
    with pytest.raises(Sim2obsValueError, match="same"):
        m.bootstrap_error(lambda a, b: 0.0, np.zeros(3), np.zeros(4))
    samples = rng.normal(size=(300, 50))
    assert np.mean(m.inside_interval(samples, np.zeros(50), 0.9545)) == m.coverage(samples, np.zeros(50), 0.9545)
