"""Gaussian-head posteriors: per-pass draws (full and diagonal covariance), their use inside
MC-dropout sampling, and the post-hoc per-target width recalibration."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from sim2obs.errors import Sim2obsValueError
from sim2obs.models.gaussian_head import (GaussianDraw, apply_width_scale, fit_width_scale, flatten_draws,
                                          gaussian_loss, output_width)
from sim2obs.models.uncertainty import FullCovarianceGaussianNLL, sample_posterior


def _full_outputs(mean, tril, rows):
    """Head outputs in the full-covariance layout whose softplus'd diagonal is ``diag(tril)``."""
    n = len(mean)
    raw_diag = torch.log(torch.expm1(torch.diagonal(tril) - 1e-6))
    r, c = torch.tril_indices(n, n, -1)
    one = torch.cat([mean, raw_diag, tril[r, c]])
    return one.expand(rows, -1).clone()


def test_full_covariance_draws_have_the_predicted_mean_and_covariance():
    mean = torch.tensor([0.5, -1.0, 2.0])
    tril = torch.tensor([[0.3, 0.0, 0.0], [0.2, 0.5, 0.0], [-0.1, 0.4, 0.2]])
    out = _full_outputs(mean, tril, 40_000)
    torch.manual_seed(0)
    d = GaussianDraw(3, "full", draws=2)(out)
    assert d.shape == (40_000, 2, 3)
    x = d.reshape(-1, 3).double()
    assert torch.allclose(x.mean(0), mean.double(), atol=0.01)
    cov = torch.cov(x.T)
    assert torch.allclose(cov, (tril @ tril.T).double(), atol=0.01)
    # the loss module reads the same layout: its covariance is L L^T
    assert torch.allclose(FullCovarianceGaussianNLL(3).covariance(out[:1])[0], tril @ tril.T, atol=1e-5)
    # the off-diagonal entries matter: a diagonal-only factor would give zero correlation
    assert cov[1, 0] > 0.045 and cov[2, 1] > 0.15  # 0.06 and 0.18


def test_diagonal_draws_and_layout_checks():
    out = torch.tensor([[1.0, -2.0, np.log(4.0), np.log(0.25)]]).expand(50_000, -1)
    torch.manual_seed(1)
    x = GaussianDraw(2, "diagonal")(out)[:, 0]
    assert torch.allclose(x.mean(0), torch.tensor([1.0, -2.0]), atol=0.03)
    assert torch.allclose(x.std(0), torch.tensor([2.0, 0.5]), atol=0.03)
    assert output_width(3, "full") == 9 and output_width(3, "diagonal") == 6
    assert gaussian_loss(3).num_outputs == 9
    with pytest.raises(Sim2obsValueError, match="9 outputs"):
        GaussianDraw(3, "full")(torch.zeros(4, 6))
    with pytest.raises(Sim2obsValueError, match="covariance"):
        GaussianDraw(3, "tied")
    with pytest.raises(Sim2obsValueError, match="draws"):
        GaussianDraw(3, draws=0)


def test_flatten_draws_is_pass_major():
    a = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)  # (passes, B, draws, n)
    f = flatten_draws(a)
    assert f.shape == (8, 3, 5)
    assert np.array_equal(f[1], a[0, :, 1]) and np.array_equal(f[4], a[1, :, 0])
    assert torch.equal(flatten_draws(torch.from_numpy(a)), torch.from_numpy(f))


class _Head(nn.Module):
    """Dropout in front of a linear full-covariance head for 2 targets (5 outputs)."""

    def __init__(self):
        super().__init__()
        self.drop = nn.Dropout(0.5)
        self.lin = nn.Linear(4, 5)

    def forward(self, x):
        return self.lin(self.drop(x))


def test_sample_posterior_draws_from_the_gaussian_of_every_pass():
    torch.manual_seed(0)
    model = _Head()
    x = torch.randn(3, 4)
    torch.manual_seed(5)
    plain = sample_posterior(model, x, 200, precision="fp32")
    torch.manual_seed(5)
    drawn = sample_posterior(model, x, 200, precision="fp32", draw=GaussianDraw(2, "full", draws=4))
    assert plain.shape == (200, 3, 5) and drawn.shape == (200, 3, 4, 2)
    flat = flatten_draws(drawn)
    # dropout spread alone (the means) is narrower than dropout + the Gaussian draws
    assert (flat.std(0) > plain[..., :2].std(0)).all()
    torch.manual_seed(5)
    again = sample_posterior(model, x, 200, precision="fp32", draw=GaussianDraw(2, "full", draws=4))
    assert torch.equal(drawn, again)  # the seed fixes masks and draws


def test_width_scale_recovers_a_known_miscalibration():
    rng = np.random.default_rng(0)
    n, s = 4000, 400
    centre = rng.normal(size=(n, 2))
    truth = centre + rng.normal(size=(n, 2)) * np.array([2.0, 0.5])  # true widths 2 and 0.5
    samples = centre + rng.normal(size=(s, n, 2))  # predicted width 1 for both
    scale = fit_width_scale(samples, truth)
    assert scale == pytest.approx([2.0, 0.5], rel=0.06)
    fixed = apply_width_scale(samples, scale)
    for k in range(2):
        lo, hi = np.quantile(fixed[:, :, k], [0.15865, 0.84135], axis=0)
        assert np.mean((truth[:, k] >= lo) & (truth[:, k] <= hi)) == pytest.approx(0.6827, abs=0.02)
    # a calibrated posterior keeps a factor close to 1
    ok = centre + rng.normal(size=(s, n, 2))
    assert fit_width_scale(ok, centre + rng.normal(size=(n, 2))) == pytest.approx([1.0, 1.0], abs=0.06)


def test_width_scale_refuses_bad_input():
    with pytest.raises(Sim2obsValueError, match="samples"):
        fit_width_scale(np.zeros((10, 5)), np.zeros(5))
    with pytest.raises(Sim2obsValueError, match="NaN"):
        fit_width_scale(np.full((10, 5, 1), np.nan), np.zeros((5, 1)))
    with pytest.raises(Sim2obsValueError, match="positive"):
        apply_width_scale(np.zeros((10, 5, 2)), [1.0, -1.0])


def test_nll_with_mean_mse_adds_a_variance_free_pull_on_the_mean():
    from sim2obs.models.gaussian_head import NLLWithMeanMSE

    nll = gaussian_loss(2, "diagonal")
    loss = NLLWithMeanMSE(nll, weight=0.5)
    assert loss.num_outputs == 4 and loss.num_targets == 2
    y = torch.tensor([[1.0, -1.0], [0.0, 2.0]])
    out = torch.tensor([[0.0, 0.0, 4.0, 4.0], [0.0, 0.0, 4.0, 4.0]], requires_grad=True)  # variance e^4
    total = loss(out, y)
    mse = ((out[:, :2] - y) ** 2).sum(-1).mean()
    assert torch.allclose(total, nll(out, y) + 0.5 * mse)
    total.backward()
    g_mixed = out.grad[:, :2].clone()
    out.grad = None
    nll(out, y).backward()
    # with a wide predicted variance the NLL barely moves the mean; the squared error still does
    assert (g_mixed.abs() >= 20 * out.grad[:, :2].abs()).all() and g_mixed.abs().sum() > 1.0
    with pytest.raises(Sim2obsValueError, match=">= 0"):
        NLLWithMeanMSE(nll, weight=-1.0)
