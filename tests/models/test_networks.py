"""Shapes, architecture details and configuration of every network in sim2obs.models."""
from __future__ import annotations

import math

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from sim2obs.errors import ConfigError, Sim2obsValueError, UnknownNameError
from sim2obs.models import MODELS, build_model
from sim2obs.models.cnn import DobbelsCNN, GaMorNetCNN
from sim2obs.models.multibranch import MultiBranchNet, multibranch_resnet18
from sim2obs.models.resnet import ResNet, load_torchvision_state_dict, resnet18, resnet34, resnet50
from sim2obs.models.stn import SpatialTransformer, STNWrapped, gampen, with_stn

from .conftest import MODEL_CONFIGS

SMALL_GAMORNET = dict(conv_channels=(8, 16, 16, 16, 8), dense=(32, 16))


def _key_shapes(model: nn.Module) -> list[list]:
    return [[key, list(value.shape)] for key, value in model.state_dict().items()]


# ----------------------------------------------------------------------------------------- ResNet


@pytest.mark.parametrize("name, factory", [("resnet18", resnet18), ("resnet50", resnet50)])
def test_resnet_state_dict_matches_torchvision(name, factory, load_fixture):
    expected = load_fixture(f"torchvision_{name}_keys.json")
    model = factory(in_channels=3, num_outputs=1000)
    assert _key_shapes(model) == expected["keys"]
    assert sum(p.numel() for p in model.parameters()) == expected["num_parameters"]


def test_resnet34_has_torchvision_parameter_count():
    assert sum(p.numel() for p in resnet34(num_outputs=1000).parameters()) == 21_797_672


def test_small_input_stem_keeps_key_names():
    default, small = resnet18(in_channels=2), resnet18(in_channels=2, small_input=True)
    assert list(default.state_dict()) == list(small.state_dict())
    assert small.conv1.weight.shape == (64, 2, 3, 3) and default.conv1.weight.shape == (64, 2, 7, 7)
    assert isinstance(small.maxpool, nn.Identity)
    # Without the stride-4 stem the first stage keeps the full 32 x 32 resolution.
    stem = small.maxpool(small.relu(small.bn1(small.conv1(torch.randn(1, 2, 32, 32)))))
    assert stem.shape == (1, 64, 32, 32)


@pytest.mark.parametrize("factory, features", [(resnet18, 512), (resnet34, 512), (resnet50, 2048)])
@pytest.mark.parametrize("channels, size, small", [(1, 32, True), (5, 48, False)])
def test_resnet_output_shapes(factory, features, channels, size, small):
    model = factory(in_channels=channels, num_outputs=4, small_input=small).eval()
    x = torch.randn(2, channels, size, size)
    assert model(x).shape == (2, 4)
    assert model.forward_features(x).shape == (2, features)
    assert model.num_features == features


def test_resnet_features_only_has_no_head():
    model = resnet18(in_channels=1, features_only=True).eval()
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 512)
    assert not any(key.startswith("fc.") for key in model.state_dict())
    noisy = resnet18(in_channels=1, features_only=True, dropout=0.5).train()  # dropout on the features
    x = torch.randn(2, 1, 32, 32)
    assert not torch.equal(noisy(x), noisy(x))


def test_resnet_dropout_acts_before_fc_only():
    model = resnet18(in_channels=1, num_outputs=3, dropout=0.5)
    assert list(model.state_dict()) == list(resnet18(in_channels=1, num_outputs=3).state_dict())
    x = torch.randn(2, 1, 32, 32)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))
    trunk, head = model.split_for_posterior()
    assert torch.allclose(head(trunk(x)), model(x))


def test_resnet_rejects_bad_options():
    with pytest.raises(Sim2obsValueError):
        ResNet("basic", (2, 2, 2))
    with pytest.raises(Sim2obsValueError):
        ResNet("wide", (2, 2, 2, 2))
    with pytest.raises(ValueError):
        resnet18(dropout=1.5)


def test_load_torchvision_weights_adapts_conv1_and_head():
    source = resnet18(in_channels=3, num_outputs=1000)  # stands in for torchvision's resnet18
    with torch.no_grad():
        source.conv1.weight.normal_(0.0, 0.1)
        source.layer3[1].conv2.weight.normal_(0.0, 0.05)
    weights = source.state_dict()
    target = resnet18(in_channels=4, num_outputs=2)
    fresh = load_torchvision_state_dict(target, weights)
    assert fresh == ["fc.bias", "fc.weight"]
    expected_conv1 = weights["conv1.weight"].mean(1, keepdim=True).repeat(1, 4, 1, 1) * 3 / 4
    assert torch.allclose(target.conv1.weight, expected_conv1)
    assert torch.equal(target.layer3[1].conv2.weight, weights["layer3.1.conv2.weight"])
    # A grey image gives the same features through 4 equal channels as through 3 equal RGB channels.
    grey = torch.rand(2, 1, 40, 40)
    source.eval(), target.eval()
    assert torch.allclose(target.forward_features(grey.repeat(1, 4, 1, 1)),
                          source.forward_features(grey.repeat(1, 3, 1, 1)), atol=1e-4, rtol=1e-4)


def test_load_torchvision_weights_small_stem_keeps_fresh_conv1():
    weights = resnet18(num_outputs=1000).state_dict()
    target = resnet18(in_channels=1, small_input=True, features_only=True)
    before = target.conv1.weight.clone()
    assert load_torchvision_state_dict(target, weights) == ["conv1.weight"]
    assert torch.equal(target.conv1.weight, before)
    assert torch.equal(target.bn1.running_var, weights["bn1.running_var"])


def test_load_torchvision_weights_rejects_other_architecture():
    with pytest.raises(Sim2obsValueError, match="does not fit"):
        load_torchvision_state_dict(resnet18(), resnet50(num_outputs=1000).state_dict())


# ------------------------------------------------------------------------------------- Dobbels CNN


def test_dobbels_architecture_matches_paper():
    model = DobbelsCNN()
    convs = [model.conv1, model.conv2, model.conv3, model.conv4]
    assert [c.out_channels for c in convs] == [32, 64, 128, 128]
    assert [c.kernel_size for c in convs] == [(5, 5), (4, 4), (3, 3), (3, 3)]
    assert all(c.padding == (0, 0) for c in convs)
    assert (model.fc1.out_features, model.fc2.out_features) == (512, 37)
    sizes = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: sizes.append(out.shape[-1])) for m in convs]
    model.eval()(torch.randn(1, 1, 69, 69))
    for h in hooks:
        h.remove()
    assert sizes == [65, 29, 12, 4]  # 69-4, (32)-3, (14)-2, (6)-2
    for layer in convs + [model.fc1, model.fc2]:  # Glorot uniform, zero bias
        fan_in = layer.weight[0].numel()
        fan_out = layer.weight.shape[0] * layer.weight[0, 0].numel()
        assert layer.weight.abs().max() <= math.sqrt(6.0 / (fan_in + fan_out))
        assert torch.count_nonzero(layer.bias) == 0


@pytest.mark.parametrize("size", [42, 69])
def test_dobbels_shapes(size):
    model = DobbelsCNN(in_channels=2, num_outputs=5, output_relu=True).eval()
    x = torch.randn(2, 2, size, size)
    assert model(x).shape == (2, 5) and bool((model(x) >= 0).all())
    assert model.forward_features(x).shape == (2, 512)


def test_dobbels_too_small_input_is_explained():
    with pytest.raises(Sim2obsValueError, match="at least 42"):
        DobbelsCNN()(torch.randn(1, 1, 41, 41))


# ------------------------------------------------------------------------------------ GaMorNet CNN


def _weight_layers_and_their_predecessors(model: GaMorNetCNN) -> list[tuple[nn.Module, nn.Module]]:
    sequence = list(model.features) + list(model.hidden) + list(model.output)
    return [(sequence[i - 1] if i else None, m) for i, m in enumerate(sequence)
            if isinstance(m, (nn.Conv2d, nn.Linear))]


def test_gamornet_mc_dropout_precedes_every_weight_layer():
    model = GaMorNetCNN(dropout=0.2, mc_dropout=True, **SMALL_GAMORNET)
    pairs = _weight_layers_and_their_predecessors(model)
    assert len(pairs) == 8  # 5 convolutions + 3 dense
    assert all(isinstance(before, nn.Dropout) and before.p == 0.2 for before, _ in pairs)
    assert model.split_for_posterior() is None


def test_gamornet_without_mc_dropout_keeps_dropout_in_dense_head():
    model = GaMorNetCNN(dropout=0.2, mc_dropout=False, **SMALL_GAMORNET)
    assert not any(isinstance(m, nn.Dropout) for m in model.features)
    pairs = _weight_layers_and_their_predecessors(model)
    dense_pairs = [(b, m) for b, m in pairs if isinstance(m, nn.Linear)]
    assert len(dense_pairs) == 3 and all(isinstance(b, nn.Dropout) for b, _ in dense_pairs)
    x = torch.randn(2, 1, 64, 64)
    trunk, head = model.split_for_posterior()
    model.eval()
    assert torch.allclose(head(trunk(x)), model(x))


@pytest.mark.parametrize("size", [57, 72])
def test_gamornet_shapes(size):
    model = GaMorNetCNN(in_channels=3, num_outputs=4, **SMALL_GAMORNET).eval()
    x = torch.randn(2, 3, size, size)
    assert model(x).shape == (2, 4)
    assert model.forward_features(x).shape == (2, 16)


def test_gamornet_default_widths_and_minimum_size():
    model = GaMorNetCNN()
    assert [m.out_channels for m in model.features if isinstance(m, nn.Conv2d)] == [96, 256, 384, 384, 256]
    assert [m.out_features for m in list(model.hidden) + list(model.output)
            if isinstance(m, nn.Linear)] == [4096, 4096, 3]
    with pytest.raises(Sim2obsValueError, match="at least 57"):
        model(torch.randn(1, 1, 56, 56))


# ------------------------------------------------------------------------------ spatial transformer


def test_stn_is_identity_at_initialisation():
    stn = SpatialTransformer(in_channels=2, channels=(4, 6), kernels=(5, 3))
    x = torch.randn(3, 2, 40, 36)
    identity = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).expand(3, 2, 3)
    assert torch.allclose(stn.theta(x), identity)
    assert torch.allclose(stn(x), x, atol=1e-5)
    assert torch.allclose(stn.transform(x), x, atol=1e-5)


def test_stn_regression_layer_learns():
    stn = SpatialTransformer(in_channels=1, channels=(4, 6), kernels=(5, 3))
    x = torch.randn(2, 1, 40, 40)
    (stn(x) * torch.randn_like(x)).sum().backward()
    assert stn.fc_loc[2].weight.grad.abs().sum() > 0


def test_stn_too_small_input_is_explained():
    stn = SpatialTransformer(in_channels=1)
    assert stn.min_input_size == 11 + 2 * 9 + 4
    stn(torch.randn(1, 1, 33, 33))
    with pytest.raises(Sim2obsValueError, match="at least 33"):
        stn(torch.randn(1, 1, 32, 32))


def test_stn_wrapped_backbone_sees_transformed_images():
    backbone = resnet18(in_channels=1, num_outputs=2, small_input=True).eval()
    wrapped = with_stn(backbone, channels=(4, 6), kernels=(5, 3)).eval()
    assert isinstance(wrapped, STNWrapped)
    x = torch.randn(2, 1, 40, 40)
    assert torch.allclose(wrapped.transformed(x), x, atol=1e-5)
    assert torch.allclose(wrapped(x), backbone(x), atol=1e-4)
    with torch.no_grad():
        wrapped.stn.fc_loc[2].bias.copy_(torch.tensor([0.5, 0.0, 0.0, 0.0, 0.5, 0.0]))  # zoom in x2
    assert not torch.allclose(wrapped.transformed(x), x, atol=1e-3)


def test_gampen_combines_stn_and_mc_dropout_cnn():
    model = gampen(in_channels=1, num_outputs=9, conv_channels=(8, 16, 16, 16, 8), dense=(32, 16),
                   stn_channels=(4, 6)).eval()
    assert isinstance(model.stn, SpatialTransformer) and model.backbone.mc_dropout
    assert model(torch.randn(2, 1, 64, 64)).shape == (2, 9)
    trunk, head = model.split_for_posterior()
    assert trunk is model.stn and head is model.backbone


# ---------------------------------------------------------------------------------- multi-branch


def test_multibranch_mixes_resolutions_and_channels():
    model = multibranch_resnet18({"image": 2, "vmap": 1}, num_outputs=3,
                                 small_input={"vmap": True}, head_hidden=[16]).eval()
    inputs = {"image": torch.randn(2, 2, 48, 48), "vmap": torch.randn(2, 1, 24, 24)}
    assert model(inputs).shape == (2, 3)
    assert model.head[0].in_features == 1024
    assert model.branches["vmap"].small_input and not model.branches["image"].small_input


def test_multibranch_ablation_builds_and_calls_only_enabled_branches():
    model = multibranch_resnet18({"image": 1, "vmap": 1, "sigmamap": 1}, num_outputs=1,
                                 enabled=["image", "sigmamap"], head_hidden=[]).eval()
    assert list(model.branches) == ["image", "sigmamap"]
    assert not any(key.startswith("branches.vmap") for key in model.state_dict())
    assert model.head[0].in_features == 1024
    inputs = {"image": torch.randn(2, 1, 32, 32), "sigmamap": torch.randn(2, 1, 32, 32),
              "vmap": torch.randn(2, 1, 7, 7)}  # ignored: the branch is disabled
    assert model(inputs).shape == (2, 1)
    with pytest.raises(Sim2obsValueError, match="lack enabled branches"):
        model({"image": inputs["image"]})


def test_multibranch_generic_backbones_and_errors():
    branches = {"a": nn.Sequential(nn.Flatten(), nn.Linear(12, 5)), "b": resnet18(1, features_only=True)}
    model = MultiBranchNet(branches, head_hidden=(8,), num_outputs=2, feature_dims={"a": 5}).eval()
    out = model({"a": torch.randn(3, 3, 2, 2), "b": torch.randn(3, 1, 32, 32)})
    assert out.shape == (3, 2)
    with pytest.raises(ConfigError, match="did you mean 'image'"):
        multibranch_resnet18({"image": 1, "vmap": 1}, enabled=["imgae"])
    with pytest.raises(ConfigError, match="num_features"):
        MultiBranchNet({"a": nn.Flatten()}, num_outputs=1)


# ------------------------------------------------------------------------------ registry + configs


def test_registry_and_configs_name_the_same_models():
    assert sorted(p.stem for p in MODEL_CONFIGS.glob("*.yaml")) == MODELS.names()
    with pytest.raises(UnknownNameError, match="did you mean 'resnet18'"):
        MODELS.get("resnet81")


@pytest.mark.parametrize("config", sorted(MODEL_CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_model_config_instantiates_and_runs(config, make_input):
    cfg = OmegaConf.load(config)
    model = instantiate(cfg).eval()
    assert isinstance(model, nn.Module)
    with torch.no_grad():
        out = model(make_input(model, batch=2, size=32))
    assert out.shape == (2, cfg.num_outputs)
    assert bool(torch.isfinite(out).all())
    # The registry builds the same architecture from the same arguments.
    arguments = OmegaConf.to_container(cfg)
    arguments.pop("_target_")
    same = build_model(config.stem, **arguments)
    assert list(same.state_dict()) == list(model.state_dict())
