"""Head-only training touches the head only: with ``freeze_frozen_norms`` the frozen layers'
BatchNorm running statistics stay those of the pre-trained network (without it they drift)."""
import torch
from torch import nn

from sim2obs.models.engine import StageConfig, TensorDictDataset, Trainer, TrainerConfig


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(4, 1)

    def forward(self, x):
        return self.head(self.body(x))


def _train(tmp_path, freeze):
    torch.manual_seed(0)
    net = Net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    data = TensorDictDataset({"image": 3.0 + 2.0 * torch.randn(32, 1, 8, 8)}, torch.randn(32, 1))
    cfg = TrainerConfig(device="cpu", precision="fp32", epochs=2, batch_size=8, optimiser="adam", schedule="none",
                        augment=None, tta=[0], progress=False, restore_best=False,
                        stages=[StageConfig(epochs=2, trainable=["head"], lr={})])
    Trainer(cfg, loss=nn.MSELoss(), freeze_frozen_norms=freeze).fit(net, data, data, tmp_path / f"run-{freeze}")
    return {k for k, v in net.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])}


def test_frozen_batchnorm_statistics_stay_put_only_when_asked(tmp_path):
    assert _train(tmp_path, freeze=True) == {"head.weight", "head.bias"}
    drifted = _train(tmp_path, freeze=False)
    assert {"body.1.running_mean", "body.1.running_var"} <= drifted and "body.0.weight" not in drifted


def test_the_option_enters_the_run_identity_only_when_set():
    cfg, net = TrainerConfig(device="cpu"), Net()
    assert "freeze_frozen_norms" not in Trainer(cfg)._identity(cfg, net, None)
    assert Trainer(cfg, freeze_frozen_norms=True)._identity(cfg, net, None)["freeze_frozen_norms"] is True
