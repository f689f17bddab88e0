"""Conformance checks on good and bad networks and estimators, and a user's own model trained
from a ``_target_`` config without touching sim2obs."""
from __future__ import annotations

import json
import sys
import textwrap

import numpy as np
import pytest
import torch
import yaml
from lightgbm import LGBMRegressor
from sklearn.linear_model import Ridge
from torch import nn

from ._tiny import TinyNet
from sim2obs.errors import Sim2obsValueError
from sim2obs.models.conformance import ConformanceReport, TaskSpec, check_model
from sim2obs.models import build_model
from sim2obs.models.engine import main

SPEC = TaskSpec(input_shapes={"image": (1, 8, 8)}, n_targets=2)


def fails(check: str, model, spec=SPEC, match: str = ""):
    with pytest.raises(Sim2obsValueError, match=f"conformance check '{check}'.*{match}"):
        check_model(model, spec)


# ---------------------------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------------------------
class WrongWidth(TinyNet):
    def forward(self, x):
        return super().forward(x)[:, :1]


class DropoutInEval(TinyNet):
    def forward(self, x):
        return nn.functional.dropout(super().forward(x), 0.5, training=True)


class NanGrad(TinyNet):
    def forward(self, x):
        zero = self.head[1].bias.sum() * 0
        return super().forward(x) + torch.sqrt(zero)  # finite output; d sqrt(0) = inf, times 0: nan gradient


class Unused(TinyNet):
    def __init__(self, width: int = 4):
        super().__init__(width=width)
        self.spare = nn.Linear(2, 2)


class Forgetful(nn.Module):
    """Does not keep its constructor argument: no config can rebuild it."""

    def __init__(self, hidden: int):
        super().__init__()
        self.fc = nn.Linear(64, hidden)
        self.out = nn.Linear(hidden, 2)

    def forward(self, x):
        return self.out(self.fc(x.flatten(1)))


class Renamed(nn.Module):
    """Stores ``hidden`` under another name: a rebuilt config falls back to the default width."""

    def __init__(self, hidden: int = 16):
        super().__init__()
        self.n_hidden = hidden
        self.fc = nn.Linear(64, hidden)
        self.out = nn.Linear(hidden, 2)

    def forward(self, x):
        return self.out(self.fc(x.flatten(1)))


class DegenerateSampler(TinyNet):
    def sample_posterior(self, x, n):
        return self(x).unsqueeze(0).expand(n, -1, -1)


class GaussianSampler(TinyNet):
    def sample_posterior(self, x, n):
        mean = self(x)
        return mean + torch.randn(n, *mean.shape)


def test_a_good_network_passes_every_check():
    report = check_model(TinyNet(), SPEC)
    assert isinstance(report, ConformanceReport) and report.kind == "network"
    assert report.checks == {"hyperparameters": "passed", "output_shape": "passed", "eval_determinism": "passed",
                             "forward_backward": "passed", "posterior": "skipped: the task needs no posterior"}
    assert "eval_determinism" in str(report)


def test_posterior_checks_pass_for_mc_dropout_and_own_samplers():
    spec = TaskSpec(input_shapes={"image": (1, 8, 8)}, n_targets=2, posterior=True)
    assert check_model(TinyNet(dropout=0.5), spec).checks["posterior"] == "passed"
    assert check_model(GaussianSampler(), spec).checks["posterior"] == "passed"


def test_a_config_is_built_and_checked():
    cfg = {"_target_": f"{TinyNet.__module__}.TinyNet", "width": 3, "n_targets": 2}
    report = check_model(cfg, SPEC)
    assert report.checks["build"] == "passed" and report.model == "TinyNet"
    fails("build", {"_target_": f"{TinyNet.__module__}.TinyNet", "no_such_argument": 1})


def test_two_input_stacks_are_passed_as_a_dict():
    from ._tiny import TwoStackNet

    spec = TaskSpec(input_shapes={"image": (1, 8, 8), "maps": (1, 6, 6)}, n_targets=2)
    assert check_model(TwoStackNet(), spec).checks["output_shape"] == "passed"


def test_wrong_output_shape_fails_naming_shapes():
    fails("output_shape", WrongWidth(), match=r"\(4, 1\), expected \(4, 2\)")
    fails("output_shape", TinyNet(), TaskSpec(input_shapes={"image": (1, 8, 8)}, n_targets=2, n_outputs=4))


def test_non_deterministic_eval_fails():
    fails("eval_determinism", DropoutInEval())


def test_bad_gradients_fail():
    fails("forward_backward", NanGrad(), match="non-finite gradients")
    fails("forward_backward", Unused(), match="spare")


def test_unrecoverable_hyperparameters_fail():
    fails("hyperparameters", Forgetful(8), match=r"\['hidden'\] have no default")
    fails("hyperparameters", Renamed(8), match="another architecture")
    assert check_model(Renamed(16), SPEC).checks["hyperparameters"] == "passed (defaults assumed for ['hidden'])"

    class Local(TinyNet):
        pass

    fails("hyperparameters", Local(), match="inside a function")


def test_missing_or_degenerate_posterior_fails():
    spec = TaskSpec(input_shapes={"image": (1, 8, 8)}, n_targets=2, posterior=True)
    fails("posterior", TinyNet(), spec, match="cannot draw them")
    fails("posterior", DegenerateSampler(), spec, match="degenerate")


def test_the_checked_model_is_left_untouched():
    model = TinyNet(dropout=0.2)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    check_model(model, TaskSpec(input_shapes={"image": (1, 8, 8)}, n_targets=2, posterior=True))
    assert model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ---------------------------------------------------------------------------------------------
# Estimators
# ---------------------------------------------------------------------------------------------
class FlatPredictor:
    """fit/predict, but predict returns one value for the whole table."""

    def fit(self, X, y):
        self.mean_ = float(np.mean(y))
        return self

    def predict(self, X):
        return np.array([self.mean_])

    def get_params(self, deep=True):
        return {}


def test_estimators_pass():
    spec = TaskSpec(n_targets=1, n_features=3)
    assert check_model(Ridge(alpha=2.0), spec).kind == "estimator"
    report = check_model(LGBMRegressor(n_estimators=10, min_child_samples=5, verbose=-1), spec)
    assert set(report.checks) == {"interface", "hyperparameters", "output_shape", "determinism", "posterior"}
    assert check_model({"_target_": "sklearn.linear_model.Ridge", "alpha": 0.5}, spec).checks["build"] == "passed"


def test_bad_estimators_fail():
    spec = TaskSpec(n_targets=1, n_features=3)
    fails("output_shape", FlatPredictor(), spec, match=r"shape \(1,\)")
    fails("interface", object(), spec)
    fails("posterior", Ridge(), TaskSpec(n_targets=1, n_features=3, posterior=True))


# ---------------------------------------------------------------------------------------------
# A user's own package: built from _target_, checked, trained, with no change to sim2obs
# ---------------------------------------------------------------------------------------------
USER_MODULE = '''
import torch
from torch import nn


class SersicNet(nn.Module):
    """A user's network: (B, 1, 8, 8) -> (B, n_targets)."""

    def __init__(self, n_targets: int = 1, hidden: int = 8):
        super().__init__()
        self.n_targets = n_targets
        self.hidden = hidden
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.Tanh(), nn.Linear(hidden, n_targets))

    def forward(self, x):
        return self.net(x)


def make_data(n: int, seed: int):
    from sim2obs.models.engine import TensorDictDataset

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g)
    return TensorDictDataset({"image": x}, x.mean((1, 2, 3)).unsqueeze(1) * 8)
'''


def test_user_model_from_target_config_is_checked_and_trained(tmp_path, monkeypatch):
    package = f"userpkg_{tmp_path.name.replace('-', '_')}"
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / package / "nets.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    model_cfg = {"_target_": f"{package}.nets.SersicNet", "n_targets": 1, "hidden": 8}
    try:
        model = build_model(model_cfg)
        assert type(model).__module__ == f"{package}.nets"
        spec = {"input_shapes": {"image": (1, 8, 8)}, "n_targets": 1}
        assert check_model(model, spec).checks["hyperparameters"] == "passed"
        assert check_model(model_cfg, spec).checks["build"] == "passed"
        run = {"model": model_cfg,
               "train": {"_target_": f"{package}.nets.make_data", "n": 64, "seed": 0},
               "val": {"_target_": f"{package}.nets.make_data", "n": 16, "seed": 1},
               "trainer": {"device": "cpu", "epochs": 3, "batch_size": 16, "optimiser": "adam", "lr": 0.02,
                           "schedule": "none", "augment": None, "progress": False},
               "out_dir": str(tmp_path / "run")}
        (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))
        result = main([str(tmp_path / "run.yaml")])
    finally:
        for name in [m for m in sys.modules if m.startswith(package)]:
            monkeypatch.delitem(sys.modules, name)
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["_target_"] == f"{package}.nets.SersicNet" and record["config"]["model"] == model_cfg
    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"]


@pytest.mark.parametrize("name, kwargs, shape", [
    ("resnet18", {"in_channels": 1, "num_outputs": 2, "small_input": True, "dropout": 0.2}, (1, 32, 32)),
    ("dobbels_cnn", {"in_channels": 1, "num_outputs": 2, "hidden": 64}, (1, 48, 48)),
])
def test_suite_networks_pass_as_instances(name, kwargs, shape):
    """A user checking a suite network built by hand (not from its config) gets a clean pass."""
    model = build_model(name, **kwargs)
    report = check_model(model, TaskSpec(input_shapes={"image": shape}, n_targets=2, n_samples=4, batch_size=2))
    assert report.checks["hyperparameters"] == "passed"


def test_gampen_config_passes_with_posteriors():
    """Composite networks (modules as constructor arguments) are checked through their config."""
    from pathlib import Path

    cfg = yaml.safe_load((Path(__file__).resolve().parents[2] / "configs/model/gampen.yaml").read_text())
    cfg.update(num_outputs=3)
    report = check_model(cfg, TaskSpec(input_shapes={"image": (1, 64, 64)}, n_targets=3, posterior=True,
                                       n_samples=4, batch_size=2))
    assert report.checks["posterior"] == "passed" and report.checks["hyperparameters"].startswith("passed")
