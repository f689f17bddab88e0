"""Augmentation on batched tensors: exact special cases, consistency across stacks, determinism,
and the dihedral group used for test-time augmentation."""
from __future__ import annotations

import pytest
import torch

from sim2obs.errors import Sim2obsValueError
from sim2obs.models.augment import DIHEDRAL, Augment, affine, dihedral, tta_mean


def images(b=3, c=2, h=16, w=16, seed=0):
    return torch.randn(b, c, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_quarter_turns_equal_rot90(k):
    x = images()
    torch.testing.assert_close(affine(x, 90.0 * k), torch.rot90(x, k, dims=(-2, -1)), atol=1e-5, rtol=0)


def test_half_turn_of_a_non_square_image_is_a_double_flip():
    x = images(h=10, w=16)
    torch.testing.assert_close(affine(x, 180.0), x.flip(-1).flip(-2), atol=1e-5, rtol=0)


def test_zoom_one_and_no_rotation_is_the_identity():
    x = images()
    torch.testing.assert_close(affine(x, 0.0, zoom=1.0), x, atol=1e-5, rtol=0)
    same = Augment(rotate=False, flip=False, zoom=(1.0, 1.0))({"image": x}, torch.Generator().manual_seed(0))
    torch.testing.assert_close(same["image"], x, atol=1e-5, rtol=0)


def test_flips():
    x = images()
    torch.testing.assert_close(affine(x, 0.0, flip_x=True), x.flip(-1))
    torch.testing.assert_close(affine(x, 0.0, flip_y=True), x.flip(-2))


def test_zoom_in_magnifies_and_zoom_out_shrinks():
    yy, xx = torch.meshgrid(torch.arange(32.0) - 15.5, torch.arange(32.0) - 15.5, indexing="ij")
    blob = torch.exp(-(xx**2 + yy**2) / (2 * 3.0**2))[None, None]

    def width(img):
        w = img[0, 0] / img[0, 0].sum()
        return float(torch.sqrt((w * (xx**2 + yy**2)).sum()))

    assert width(affine(blob, 0.0, zoom=1.3)) == pytest.approx(1.3 * width(blob), rel=0.03)
    assert width(affine(blob, 0.0, zoom=0.7)) == pytest.approx(0.7 * width(blob), rel=0.03)


def test_per_object_parameters():
    x = images(b=2)
    out = affine(x, torch.tensor([90.0, 0.0]), zoom=torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(out[0], torch.rot90(x[0], 1, dims=(-2, -1)), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1], x[1], atol=1e-5, rtol=0)


def test_same_transform_across_stacks_unless_disabled():
    x = images(b=8)
    inputs = {"image": x, "maps": x.clone(), "features": torch.randn(8, 5)}
    shared = Augment()(inputs, torch.Generator().manual_seed(1))
    torch.testing.assert_close(shared["image"], shared["maps"])
    assert shared["features"] is inputs["features"]  # non-image inputs pass through
    assert not torch.allclose(shared["image"], x)
    separate = Augment(shared_across_stacks=False)(inputs, torch.Generator().manual_seed(1))
    assert not torch.allclose(separate["image"], separate["maps"])


def test_same_transform_across_stacks_of_different_sizes():
    """A coarse map of the same field of view gets the same geometric transform: transforming
    then downsampling the image matches the transformed map (up to interpolation)."""
    yy, xx = torch.meshgrid(torch.arange(32.0) - 15.5, torch.arange(32.0) - 15.5, indexing="ij")
    blob = torch.exp(-((xx - 5) ** 2 / 30 + (yy + 3) ** 2 / 8))  # off-centre, elongated
    x = blob.expand(6, 1, 32, 32).contiguous()
    coarse = torch.nn.functional.avg_pool2d(x, 2)
    for shared, bound in ((True, lambda e: e < 0.15), (False, lambda e: e > 0.5)):
        out = Augment(shared_across_stacks=shared)({"image": x, "coarse": coarse}, torch.Generator().manual_seed(3))
        err = (torch.nn.functional.avg_pool2d(out["image"], 2) - out["coarse"]).abs().max()
        assert bound(float(err)), (shared, float(err))


def test_deterministic_given_a_generator():
    x = {"image": images()}
    a = Augment()(x, torch.Generator().manual_seed(5))["image"]
    b = Augment()(x, torch.Generator().manual_seed(5))["image"]
    c = Augment()(x, torch.Generator().manual_seed(6))["image"]
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_invalid_settings_raise():
    with pytest.raises(Sim2obsValueError, match="zoom"):
        Augment(zoom=(1.3, 0.7))({"image": images()})
    with pytest.raises(Sim2obsValueError, match="padding"):
        affine(images(), 10.0, padding_mode="wrap")
    with pytest.raises(Sim2obsValueError, match="dihedral"):
        dihedral(images(), 8)


def test_dihedral_group_has_eight_distinct_members_and_is_closed():
    x = images(b=1, c=1, h=5, w=5)
    members = [dihedral(x, k) for k in DIHEDRAL]
    assert len({tuple(m.flatten().tolist()) for m in members}) == 8
    keys = {tuple(m.flatten().tolist()) for m in members}
    for m in members:
        for k in DIHEDRAL:
            assert tuple(dihedral(m, k).flatten().tolist()) in keys
    torch.testing.assert_close(dihedral(x, 4), x.flip(-1))


def test_tta_mean_averages_over_transforms():
    x = images(b=2, c=1, h=6, w=6)
    corner = lambda inputs: inputs["image"][:, 0, :1, 0]  # noqa: E731 - the top-left pixel: not invariant
    expected = torch.stack([dihedral(x, k)[:, 0, :1, 0] for k in DIHEDRAL]).mean(0)
    torch.testing.assert_close(tta_mean(corner, {"image": x}), expected)
    torch.testing.assert_close(tta_mean(corner, {"image": x}, [0]), corner({"image": x}))
    # the mean of the four corners, since the dihedral group moves the corner to each corner twice
    corners = torch.stack([x[:, 0, 0, 0], x[:, 0, 0, -1], x[:, 0, -1, 0], x[:, 0, -1, -1]]).mean(0)
    torch.testing.assert_close(tta_mean(corner, {"image": x})[:, 0], corners)
