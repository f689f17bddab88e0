"""PreciseBN (``trainer.precise_bn_batches``): before each validation the batch-norm statistics are
re-estimated from unaugmented training batches; the weights train exactly as without it, frozen
norms keep theirs, and runs without it keep their names."""
import pytest
import torch
from torch import nn

from sim2obs.errors import ConfigError
from sim2obs.models.engine import (AugmentConfig, StageConfig, TensorDictDataset, Trainer, TrainerConfig,
                                   load_trainer_config, trainer_identity, validate_config)
from sim2obs.models.engine.precise_bn import recompute_batchnorm_statistics


class Net(nn.Module):
    """A batch norm straight on the input (its statistics are the input's), then a dropout (the
    global random state is drawn from in training mode)."""

    def __init__(self):
        super().__init__()
        self.norm = nn.BatchNorm2d(2)
        self.body = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Dropout(0.3))
        self.head = nn.Linear(4, 1)

    def forward(self, x):
        return self.head(self.body(self.norm(x)))


def _data(seed: int, n: int = 48) -> TensorDictDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, 8, 8, generator=g) * torch.tensor([1.0, 3.0]).view(1, 2, 1, 1) + torch.tensor(
        [5.0, -2.0]).view(1, 2, 1, 1)
    return TensorDictDataset({"image": x}, torch.randn(n, 1, generator=g))


def _cfg(**kw) -> TrainerConfig:
    base = dict(device="cpu", precision="fp32", channels_last=False, epochs=3, batch_size=8, optimiser="adam",
                lr=1e-2, schedule="none", augment=AugmentConfig(rotate=True, flip=True, zoom=[0.7, 1.3]),
                tta=[0], progress=False, restore_best=False)
    base.update(kw)
    return TrainerConfig(**base)


def _fit(tmp_path, name, **kw):
    torch.manual_seed(0)
    net = Net()
    data = _data(1)
    Trainer(_cfg(**kw)).fit(net, data, _data(2, 16), tmp_path / name)
    return net, data


def test_statistics_are_those_of_the_unaugmented_training_inputs(tmp_path):
    net, data = _fit(tmp_path, "precise", precise_bn_batches=6)  # 48 objects = 6 batches of 8: all of them
    x = data.inputs["image"]
    # equal-weight average of the batch means = the mean of the training inputs (equal batches)
    assert torch.allclose(net.norm.running_mean, x.mean(dim=(0, 2, 3)), atol=1e-5)
    # the variance: an average of (shuffled) batch variances, close to the inputs' own
    assert torch.allclose(net.norm.running_var, x.var(dim=(0, 2, 3)), rtol=0.05)
    assert net.norm.momentum == 0.1  # restored
    plain, _ = _fit(tmp_path, "plain")
    # the moving average over augmented batches (zoom pads with zeros) sits elsewhere
    assert (plain.norm.running_mean - x.mean(dim=(0, 2, 3))).abs().max() > 0.05


def test_weights_train_exactly_as_without_it(tmp_path):
    with_bn, _ = _fit(tmp_path, "precise", precise_bn_batches=2)
    without, _ = _fit(tmp_path, "plain")
    for (name, a), b in zip(with_bn.named_parameters(), without.parameters()):
        assert torch.equal(a, b), name
    assert not torch.equal(with_bn.norm.running_mean, without.norm.running_mean)


def test_a_cap_on_batches_and_frozen_norms_are_respected():
    net = Net().train()
    batches = [torch.full((4, 2, 8, 8), float(k)) for k in range(5)]

    def forward(model, batch):
        model(batch)

    assert recompute_batchnorm_statistics(net, batches, forward, 2) == 2
    assert torch.allclose(net.norm.running_mean, torch.full((2,), 0.5))  # batches 0 and 1 only
    net.norm.eval()  # a frozen norm keeps what it has
    assert recompute_batchnorm_statistics(net, batches, forward, 5) == 0
    assert torch.allclose(net.norm.running_mean, torch.full((2,), 0.5))
    net.norm.train()
    before = net.norm.running_mean.clone()
    assert recompute_batchnorm_statistics(net, [], forward, 5) == 0  # nothing seen: nothing lost
    assert torch.equal(net.norm.running_mean, before)


def test_staged_training_leaves_frozen_norms_alone(tmp_path):
    torch.manual_seed(0)
    net = Net()
    before = net.norm.running_mean.clone()
    cfg = _cfg(epochs=2, precise_bn_batches=3, stages=[StageConfig(epochs=2, trainable=["head"], lr={})])
    Trainer(cfg, freeze_frozen_norms=True).fit(net, _data(1), _data(2, 16), tmp_path / "staged")
    assert torch.equal(net.norm.running_mean, before)


def test_the_setting_names_a_run_only_when_on_and_is_validated():
    assert "precise_bn_batches" not in trainer_identity(TrainerConfig())
    assert "progress" not in trainer_identity(TrainerConfig())
    assert trainer_identity(TrainerConfig(precise_bn_batches=4))["precise_bn_batches"] == 4
    with pytest.raises(ConfigError) as info:
        validate_config(load_trainer_config({"precise_bn_batches": -1}))
    assert info.value.key == "trainer.precise_bn_batches"
