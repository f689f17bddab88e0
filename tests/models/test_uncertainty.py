"""Gaussian NLL heads and Monte-Carlo dropout sampling."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.distributions import MultivariateNormal, Normal

from sim2obs.errors import Sim2obsValueError
from sim2obs.models.cnn import GaMorNetCNN
from sim2obs.models.multibranch import multibranch_resnet18
from sim2obs.models.resnet import resnet18
from sim2obs.models.stn import gampen
from sim2obs.models.uncertainty import (
    DiagonalGaussianHead,
    DiagonalGaussianNLL,
    FullCovarianceGaussianHead,
    FullCovarianceGaussianNLL,
    diagonal_gaussian_nll,
    enable_mc_dropout,
    full_gaussian_nll,
    mc_dropout_mode,
    sample_posterior,
    sample_posterior_loop,
)

SMALL_GAMORNET = dict(conv_channels=(8, 16, 16, 16, 8), dense=(32, 16))


# ----------------------------------------------------------------------------------- Gaussian NLL


def test_diagonal_nll_is_the_normal_log_likelihood():
    outputs, targets = torch.randn(6, 6), torch.randn(6, 3)
    mean, std = outputs[:, :3], torch.exp(0.5 * outputs[:, 3:])
    reference = -Normal(mean, std).log_prob(targets).sum(-1)
    assert torch.allclose(diagonal_gaussian_nll(outputs, targets, reduction="none"), reference, atol=1e-5)
    assert torch.allclose(DiagonalGaussianNLL(3)(outputs, targets), reference.mean(), atol=1e-5)
    assert torch.allclose(diagonal_gaussian_nll(outputs, targets, reduction="sum"), reference.sum(), atol=1e-4)


@pytest.mark.parametrize("activation", ["softplus", "exp"])
def test_full_nll_is_the_multivariate_normal_log_likelihood(activation):
    loss = FullCovarianceGaussianNLL(3, diag_activation=activation, reduction="none")
    assert loss.num_outputs == 9
    outputs, targets = torch.randn(5, 9), torch.randn(5, 3)
    mean, scale_tril = loss.mean_and_scale_tril(outputs)
    assert torch.equal(scale_tril, torch.tril(scale_tril))
    assert bool((torch.diagonal(scale_tril, dim1=-2, dim2=-1) > 0).all())
    reference = -MultivariateNormal(mean, scale_tril=scale_tril).log_prob(targets)
    assert torch.allclose(loss(outputs, targets), reference, atol=1e-4)
    assert torch.allclose(loss.covariance(outputs), scale_tril @ scale_tril.transpose(-1, -2))
    # Off-diagonal entries fill the strictly lower triangle in torch.tril_indices order.
    rows, cols = torch.tril_indices(3, 3, -1)
    assert torch.equal(scale_tril[:, rows, cols], outputs[:, 6:])


def test_full_nll_with_one_target_reduces_to_diagonal():
    outputs, targets = torch.randn(4, 2), torch.randn(4, 1)
    sigma = torch.nn.functional.softplus(outputs[:, 1:]) + 1e-6
    diagonal = torch.cat([outputs[:, :1], 2 * torch.log(sigma)], dim=1)
    assert torch.allclose(full_gaussian_nll(outputs, targets, reduction="none"),
                          diagonal_gaussian_nll(diagonal, targets, reduction="none"), atol=1e-5)


def test_gaussian_heads_train_and_start_from_unit_covariance():
    features = torch.randn(8, 10)
    targets = torch.randn(8, 3)
    full = FullCovarianceGaussianHead(10, 3)
    with torch.no_grad():
        full.linear.weight.zero_()
    covariance = full.loss.covariance(full(features))
    assert torch.allclose(covariance, torch.eye(3).expand(8, 3, 3), atol=1e-5)
    for head in (DiagonalGaussianHead(10, 3), FullCovarianceGaussianHead(10, 3)):
        out = head(features)
        assert out.shape == (8, head.num_outputs)
        head.loss(out, targets).backward()
        assert head.linear.weight.grad.abs().sum() > 0


def test_gaussian_nll_rejects_wrong_layout():
    with pytest.raises(Sim2obsValueError):
        diagonal_gaussian_nll(torch.randn(4, 5), torch.randn(4, 3))
    with pytest.raises(Sim2obsValueError):
        full_gaussian_nll(torch.randn(4, 8), torch.randn(4, 3))
    with pytest.raises(Sim2obsValueError):
        diagonal_gaussian_nll(torch.randn(4, 6), torch.randn(4, 3), reduction="median")


# ------------------------------------------------------------------------------------ MC dropout


def _mc_gamornet() -> GaMorNetCNN:
    return GaMorNetCNN(in_channels=1, num_outputs=2, dropout=0.3, mc_dropout=True, **SMALL_GAMORNET)


def _head_dropout_resnet() -> nn.Module:
    model = resnet18(in_channels=1, num_outputs=2, small_input=True, dropout=0.3)
    model.train()(torch.randn(4, 1, 16, 16))  # non-trivial BN running statistics
    return model


def test_enable_mc_dropout_sets_modes_and_context_restores_them():
    model = _head_dropout_resnet().train()
    with mc_dropout_mode(model):
        assert model.head_dropout.training and not model.bn1.training and not model.training
    assert model.training and model.bn1.training
    enable_mc_dropout(model)
    assert model.head_dropout.training and not model.layer1[0].bn2.training


@pytest.mark.parametrize("build, x", [
    (_mc_gamornet, torch.randn(3, 1, 57, 57)),
    (_head_dropout_resnet, torch.randn(3, 1, 16, 16)),
])
def test_samples_vary_and_eval_mode_is_deterministic(build, x):
    model = build().eval()
    samples = sample_posterior(model, x, n=10, chunk=7)
    assert samples.shape == (10, 3, 2)
    assert not torch.allclose(samples[0], samples[1])
    assert torch.equal(model(x), model(x))
    assert not model.training


def test_sampling_leaves_batch_norm_statistics_alone():
    model = _head_dropout_resnet().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 1, 16, 16)
    sample_posterior(model, x, n=20, use_trunk=False)
    sample_posterior_loop(model, x, n=3)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.training and model.bn1.training  # modes restored


def test_fast_path_matches_loop_in_distribution():
    model = _mc_gamornet()
    x = torch.randn(2, 1, 57, 57)
    n = 400
    fast = sample_posterior(model, x, n=n, chunk=256)
    loop = sample_posterior_loop(model, x, n=n)
    assert fast.shape == loop.shape == (n, 2, 2)
    spread = torch.sqrt((fast.var(0) + loop.var(0)) / n)
    assert bool(((fast.mean(0) - loop.mean(0)).abs() < 5 * spread).all())
    ratio = fast.std(0) / loop.std(0)
    assert bool(((ratio > 0.75) & (ratio < 1.33)).all())


def test_trunk_runs_once_for_a_head_only_dropout_model():
    model = _head_dropout_resnet()
    calls = []
    model.layer1.register_forward_hook(lambda *_: calls.append(1))
    x = torch.randn(3, 1, 8, 8)
    n = 200
    fast = sample_posterior(model, x, n=n, chunk=64)
    assert len(calls) == 1
    loop = sample_posterior_loop(model, x, n=n)
    assert len(calls) == 1 + n
    spread = torch.sqrt((fast.var(0) + loop.var(0)) / n)
    assert bool(((fast.mean(0) - loop.mean(0)).abs() < 5 * spread).all())
    calls.clear()
    sample_posterior(model, x, n=5, use_trunk=False, chunk=6)  # 2 copies per pass -> 3 passes
    assert len(calls) == 3


def test_gampen_reuses_the_spatial_transformer():
    model = gampen(num_outputs=2, conv_channels=(8, 16, 16, 16, 8), dense=(32, 16), stn_channels=(4, 6))
    calls = []
    model.stn.register_forward_hook(lambda *_: calls.append(1))
    samples = sample_posterior(model, torch.randn(2, 1, 57, 57), n=8, chunk=4)
    assert samples.shape == (8, 2, 2) and len(calls) == 1


def test_multibranch_dict_inputs_are_sampled():
    model = multibranch_resnet18({"image": 1, "vmap": 1}, num_outputs=2, small_input=True, dropout=0.2)
    inputs = {"image": torch.randn(2, 1, 12, 12), "vmap": torch.randn(2, 1, 8, 8)}
    samples = sample_posterior(model, inputs, n=6, chunk=4)
    assert samples.shape == (6, 2, 2) and not torch.allclose(samples[0], samples[1])


def test_model_with_its_own_sampler_is_delegated_to():
    class OwnSampler(nn.Module):
        def forward(self, x):
            return x

        def sample_posterior(self, x, n):
            return torch.full((n, x.shape[0], 1), 7.0)

    assert torch.equal(sample_posterior(OwnSampler(), torch.zeros(2, 1), n=3), torch.full((3, 2, 1), 7.0))


def test_sampling_a_model_without_dropout_is_refused():
    model = resnet18(in_channels=1, num_outputs=1, small_input=True)
    with pytest.raises(Sim2obsValueError, match="no dropout"):
        sample_posterior(model, torch.randn(1, 1, 8, 8), n=4)
    with pytest.raises(Sim2obsValueError, match="positive"):
        sample_posterior(_mc_gamornet(), torch.randn(1, 1, 57, 57), n=0)


def test_chunking_does_not_change_the_sample_count():
    model = _mc_gamornet()
    x = torch.randn(5, 1, 57, 57)
    for chunk in (1, 3, 5, 11, 10_000):
        assert sample_posterior(model, x, n=7, chunk=chunk).shape == (7, 5, 2)
    assert math.isfinite(float(sample_posterior(model, x, n=2).sum()))


# ----------------------------------------------------------------------------- precision, seeds, trunks
def _quick_gampen():
    torch.manual_seed(0)
    return gampen(num_outputs=3, conv_channels=(16, 32, 48, 48, 32), dense=(128, 128), stn_channels=(4, 8)).eval()


def test_sampling_runs_at_the_engine_precision():
    from sim2obs.models.engine import resolve_precision

    model = _mc_gamornet()
    seen = []
    model.output[-1].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    x = torch.randn(2, 1, 57, 57)
    auto = sample_posterior(model, x, n=4)
    forced = sample_posterior(model, x, n=4, precision="fp32")
    expected = torch.bfloat16 if resolve_precision(torch.device("cpu"))[0] == "bf16" else torch.float32
    assert seen == [expected, torch.float32]
    assert auto.dtype == forced.dtype == torch.float32  # samples come back in float32 either way
    with pytest.raises(Sim2obsValueError, match="precision"):
        sample_posterior(model, x, n=4, precision="int8")


@pytest.mark.parametrize("precision", ["auto", "fp32", "bf16"])
def test_same_seed_gives_the_same_samples(precision):
    model, x = _quick_gampen(), torch.randn(3, 1, 64, 64)
    draws = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        draws.append(sample_posterior(model, x, n=50, chunk=40, precision=precision))
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])


def test_bf16_changes_the_posterior_far_below_its_width():
    """Same seed -> the same dropout masks, so the fp32 / bf16 difference is the precision alone."""
    model, x = _quick_gampen(), torch.randn(4, 1, 64, 64)
    torch.manual_seed(1)
    ref = sample_posterior(model, x, n=400, chunk=800, precision="fp32")
    torch.manual_seed(1)
    low = sample_posterior(model, x, n=400, chunk=800, precision="bf16")
    sigma = ref.std(0)
    assert bool((sigma > 0).all())
    assert float(((low.mean(0) - ref.mean(0)).abs() / sigma).max()) < 0.1
    assert float((low.std(0) / sigma - 1).abs().max()) < 0.05
    assert float(((low - ref).abs() / sigma).median()) < 0.1  # masks were shared: per-draw changes small


def test_masks_are_independent_per_sample_and_per_galaxy():
    """The same galaxy repeated in the batch gets its own draws, and no two samples coincide."""
    model = _quick_gampen()
    x = torch.randn(1, 1, 64, 64).repeat(3, 1, 1, 1)
    samples = sample_posterior(model, x, n=200, chunk=64, precision="fp32")  # bf16 outputs can tie
    flat = samples[..., 0].reshape(-1)
    assert len(torch.unique(flat)) == flat.numel()
    c = torch.corrcoef(samples[..., 0].T)  # (3, 3) across galaxies: independent -> ~0 off-diagonal
    assert float((c - torch.eye(3)).abs().max()) < 0.3


class _Scale(nn.Module):
    def forward(self, x):
        return 2 * x


def test_plain_sequential_trunk_is_found_and_runs_once():
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten())
    model = nn.Sequential(trunk, nn.Sequential(nn.Dropout(0.3), nn.Linear(4 * 6 * 6, 2)), _Scale()).eval()
    calls = []
    model[0][0].register_forward_hook(lambda *_: calls.append(1))
    x = torch.randn(3, 1, 8, 8)
    n = 300
    fast = sample_posterior(model, x, n=n, chunk=64, precision="fp32")
    assert len(calls) == 1
    loop = sample_posterior_loop(model, x, n=n)
    spread = torch.sqrt((fast.var(0) + loop.var(0)) / n)
    assert bool(((fast.mean(0) - loop.mean(0)).abs() < 5 * spread).all())
    ratio = fast.std(0) / loop.std(0)
    assert bool(((ratio > 0.75) & (ratio < 1.33)).all())


def test_trunk_detection_is_structural_and_safe():
    from sim2obs.models.uncertainty import trunk_and_head

    drop_first = nn.Sequential(nn.Dropout(0.2), nn.Linear(3, 2))
    assert trunk_and_head(drop_first)[0] is None

    class Reversed(nn.Sequential):  # a subclass may call its children in any order
        def forward(self, x):
            return self[0](self[1](x))

    odd = Reversed(nn.Linear(3, 3), nn.Dropout(0.2))
    assert trunk_and_head(odd) == (None, odd)
    plain = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.0), nn.Linear(3, 3), nn.Dropout(0.2), nn.Linear(3, 1))
    trunk, head = trunk_and_head(plain)
    assert len(trunk) == 3 and isinstance(head[0], nn.Dropout) and head[0].p == 0.2
    assert trunk_and_head(plain, use_trunk=False) == (None, plain)
    x = torch.randn(5, 3)
    plain.eval()
    assert torch.equal(head(trunk(x)), plain(x))
