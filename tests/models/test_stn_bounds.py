"""The bounded spatial transformer (issue 15): identity at initialisation, the unbounded map for small
changes, never a frame off the image however far the regression drifts, finite gradients."""
from pathlib import Path

import pytest
import torch
import yaml
from torch.nn import functional as F

from sim2obs.errors import Sim2obsValueError
from sim2obs.models import build_model
from sim2obs.models.stn import SpatialTransformer, gampen


def _stn(**kw):
    torch.manual_seed(0)
    return SpatialTransformer(in_channels=1, channels=(4, 6), kernels=(5, 3), **kw)


def _set_raw(stn, raw):
    with torch.no_grad():
        stn.fc_loc[2].bias.copy_(torch.tensor(raw))


def test_bounded_transformer_is_the_identity_at_initialisation():
    stn = _stn(max_translation=0.3, max_linear_change=0.4)
    x = torch.randn(3, 1, 32, 32)
    assert torch.allclose(stn.theta(x), torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(3, 2, 3))
    assert torch.allclose(stn(x), x, atol=1e-5)


def test_a_regression_gone_far_off_stays_within_the_bounds_and_the_image_stays_in_view():
    x = torch.rand(2, 1, 32, 32) + 1.0  # positive everywhere: zero output pixels are sampled off the image
    raw = [0.2, -3.0, 7.0, 5.0, 40.0, -9.0]  # translation 7 and -9 half-frames: far off the image
    free, bounded = _stn(), _stn(max_translation=0.3, max_linear_change=0.4)
    _set_raw(free, raw)
    _set_raw(bounded, raw)
    assert free(x).abs().max() == 0  # unbounded: the frame left the image, the network sees zeros
    theta = bounded.theta(x)
    assert theta[:, :, 2].abs().max() <= 0.3 + 1e-6
    assert (theta[:, :, :2] - torch.eye(2)).abs().max() <= 0.4 + 1e-6
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    inside = (grid.abs() <= 1).all(-1).float().mean()
    assert inside > 0.3 and (bounded(x) > 0).float().mean() > 0.3


def test_small_changes_pass_through_almost_unchanged_and_gradients_are_finite():
    raw = [1.01, 0.02, -0.01, 0.0, 0.97, 0.015]
    stn = _stn(max_translation=0.3, max_linear_change=0.4)
    _set_raw(stn, raw)
    x = torch.randn(2, 1, 32, 32)
    assert torch.allclose(stn.theta(x)[0].flatten(), torch.tensor(raw), atol=2e-4)
    only_shift = _stn(max_translation=0.3)  # the linear part unbounded: no NaN from its infinite bound
    _set_raw(only_shift, [3.0, 0, 2.0, 0, 1.0, 0])
    theta = only_shift.theta(x).detach()
    assert theta[0, 0, 0].item() == pytest.approx(3.0)
    assert theta[0, 0, 2].item() == pytest.approx(0.3 * torch.tanh(torch.tensor(2 / 0.3)).item())
    (only_shift(x) ** 2).sum().backward()
    grads = [p.grad for p in only_shift.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("kw", [{"max_translation": 0.0}, {"max_linear_change": -0.1}])
def test_non_positive_bounds_are_refused(kw):
    with pytest.raises(Sim2obsValueError, match=next(iter(kw))):
        _stn(**kw)


def test_gampen_and_its_config_bound_the_transformer():
    net = gampen(conv_channels=(4, 4, 4, 4, 4), dense=(8, 8), stn_channels=(2, 2), stn_kernels=(3, 3),
                 stn_max_translation=0.25, stn_max_linear_change=0.5)
    assert (net.stn.max_translation, net.stn.max_linear_change) == (0.25, 0.5)
    cfg = yaml.safe_load((Path(__file__).resolve().parents[2] / "configs/model/gampen.yaml").read_text())
    small = build_model({**cfg, "conv_channels": [4, 4, 4, 4, 4], "dense": [8, 8], "stn_channels": [2, 2]})
    assert small.stn.max_translation == cfg["stn_max_translation"] > 0
    assert small.stn.max_linear_change == cfg["stn_max_linear_change"] > 0
