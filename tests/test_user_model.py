"""A user's own network through config (issue 11, "Bringing a model"): the README command with an
ordinary class, node replacement instead of merging, task shapes as ``${task_spec:KEY}``, staged
unfreezing only for the networks it names, and the conformance check before any work."""
import json
import os
import subprocess
import textwrap

import pytest

from sim2obs.errors import ConfigError, Sim2obsValueError
from sim2obs.tasks import build_task, load_task_config
from tests.conftest import CLI

NETS = '''
import torch
from torch import nn


class MyNet(nn.Module):
    """An ordinary class: no constructor arguments at all, 3 input channels, 1 output."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 1)

    def forward(self, x):
        return self.head(self.conv(x).mean(dim=(2, 3)))


class Sized(nn.Module):
    """Takes the task's shapes from the config."""

    def __init__(self, in_channels, num_outputs, width=4):
        super().__init__()
        self.in_channels, self.num_outputs, self.width = in_channels, num_outputs, width
        self.conv = nn.Conv2d(in_channels, width, 3, padding=1)
        self.head = nn.Linear(width, num_outputs)

    def forward(self, x):
        return self.head(self.conv(x).mean(dim=(2, 3)))


class BadShape(MyNet):
    """Returns (B, 1, 1): must be refused, not reshaped."""

    def forward(self, x):
        return super().forward(x)[:, :, None]
'''

TINY = ["cluster=synchronous", "progress=false", "leaderboard.record=false", "tasks=[metallicity]",
        "task.metallicity.data.n=60", "task.metallicity.data.stamp=32", "task.metallicity.data.seed=5",
        "task.metallicity.trainer.epochs=1", "task.metallicity.tta=false", "task.metallicity.plots=false"]


@pytest.fixture(scope="module")
def user_pkg(tmp_path_factory):
    root = tmp_path_factory.mktemp("userpkg")
    (root / "mypkg").mkdir()
    (root / "mypkg" / "__init__.py").write_text("")
    (root / "mypkg" / "nets.py").write_text(textwrap.dedent(NETS))
    return root


@pytest.fixture
def env(user_pkg, tmp_path):
    return dict(os.environ, SIM2OBS_DATA=str(tmp_path / "data"), SIM2OBS_RESULTS=str(tmp_path / "results"),
                PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1",
                PYTHONPATH=os.pathsep.join([str(user_pkg), os.environ.get("PYTHONPATH", "")]))


def _run(args, env):
    return subprocess.run([*CLI, "run", *args], env=env, capture_output=True, text=True, timeout=600)


def test_readme_command_runs_an_ordinary_class(env, tmp_path):
    res = _run([*TINY, "task.metallicity.methods=[mean,cnn]", "task.metallicity.model._target_=mypkg.nets.MyNet"],
               env)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = json.loads((tmp_path / "results" / "results.json").read_text())
    cnn = next(r for r in rows if r["method"] == "cnn")
    assert cnn["info"]["_target_"] == "mypkg.nets.MyNet" and cnn["info"]["model"] == "MyNet"
    assert cnn["task_config"]["model"] == {"_target_": "mypkg.nets.MyNet"}  # nothing merged onto it
    assert "model check passed: MyNet" in res.stderr  # checked, and the log speaks on stderr
    assert "metallicity/cnn: epoch 1/1" in res.stderr and "metallicity/cnn: running" in res.stderr


def test_wrong_output_shape_is_refused_before_any_work(env, tmp_path):
    res = _run([*TINY, "task.metallicity.model._target_=mypkg.nets.BadShape"], env)
    assert res.returncode == 2, res.stderr[-3000:]
    assert "sim2obs: error: task.metallicity.model" in res.stderr
    assert "output shape (4, 1, 1), expected (4, 1)" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "data").exists() and not (tmp_path / "results").exists()  # no set, no baseline


def test_nonexistent_target_is_reported_first_through_the_suites_errors(env, tmp_path):
    res = _run([*TINY, "task.metallicity.model._target_=mypkg.nets.NoSuchNet"], env)
    assert res.returncode == 2, res.stderr[-3000:]
    assert "sim2obs: error: config 'task.metallicity.model._target_': cannot import 'mypkg.nets.NoSuchNet'" \
        in res.stderr
    assert "Traceback" not in res.stderr and "HYDRA_FULL_ERROR" not in res.stderr
    assert not (tmp_path / "data").exists() and not (tmp_path / "results").exists()


def test_model_node_is_replaced_not_merged(user_pkg, monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(user_pkg))
    cfg = load_task_config("metallicity", "quick", ["model._target_=mypkg.nets.Sized", "++model.width=8",
                                                    "++model.in_channels=${task_spec:in_channels}",
                                                    "++model.num_outputs=${task_spec:n_outputs}"])
    assert cfg["model"] == {"_target_": "mypkg.nets.Sized", "width": 8, "in_channels": "${task_spec:in_channels}",
                            "num_outputs": "${task_spec:n_outputs}"}
    task = build_task("metallicity", cfg, data_dir=tmp_path)
    assert task.config.model == {"_target_": "mypkg.nets.Sized", "width": 8, "in_channels": 3, "num_outputs": 1}
    (report,) = task.check_models()
    assert report.model == "Sized"
    # the whole node given at once; and a Python dict config: the dataclass default is not merged either
    whole = load_task_config("metallicity", "quick", ["model={_target_:mypkg.nets.MyNet}"])
    assert whole["model"] == {"_target_": "mypkg.nets.MyNet"}
    direct = build_task("metallicity", {"model": {"_target_": "mypkg.nets.MyNet"}}, data_dir=tmp_path)
    assert direct.config.model == {"_target_": "mypkg.nets.MyNet"}
    # without a _target_ a node still adjusts the preset's network
    tweak = load_task_config("metallicity", "quick", ["model.dropout=0.5"])
    assert tweak["model"]["_target_"].endswith("resnet18") and tweak["model"]["small_input"] is False
    with pytest.raises(ConfigError, match="unknown task_spec key"):
        build_task("metallicity", {"model": {"_target_": "mypkg.nets.Sized", "in_channels": "${task_spec:chans}",
                                             "num_outputs": 1}}, data_dir=tmp_path)


def test_staged_unfreezing_applies_only_to_the_networks_it_names(tmp_path):
    task = build_task("metallicity", load_task_config("metallicity", "quick"), data_dir=tmp_path)
    resnet = task.trainer_config(model_target="sim2obs.models.resnet.resnet34")
    assert [s.trainable for s in resnet.stages] == [["fc"], None]
    own = task.trainer_config(model_target="mypkg.nets.MyNet")
    assert own.stages == [] and own.epochs == resnet.epochs


def test_a_data_node_given_by_the_user_replaces_the_default(tmp_path):
    cfg = load_task_config("bt_posterior", "quick", ["+data.path=/sets/real", "+data.content_hash=abc123"])
    assert cfg["data"] == {"path": "/sets/real", "content_hash": "abc123"}
    task = build_task("bt_posterior", cfg, data_dir=tmp_path)  # not "give either a real set ... not both"
    assert task.config.data == {"path": "/sets/real", "content_hash": "abc123"}
    other = load_task_config("metallicity", "quick", ["++data.generator=galsim", "data.n=50"])
    assert other["data"] == {"generator": "galsim", "n": 50}


def test_check_model_with_the_tasks_spec(user_pkg, monkeypatch, tmp_path):
    from sim2obs.models.conformance import check_model

    monkeypatch.syspath_prepend(str(user_pkg))
    from mypkg.nets import BadShape, MyNet

    task = build_task("metallicity", load_task_config("metallicity", "quick"), data_dir=tmp_path)
    assert task.spec().input_shapes == {"image": (3, 64, 64)} and task.spec().output_width == 1
    assert check_model(MyNet(), task.spec()).checks["output_shape"] == "passed"
    with pytest.raises(Sim2obsValueError, match=r"output shape \(4, 1, 1\)"):
        check_model(BadShape(), task.spec())
    tasks = {name: build_task(name, load_task_config(name, "quick"), data_dir=tmp_path)
             for name in ("ml_ratio", "bt_posterior", "multibranch_mass")}
    specs = {name: task.spec() for name, task in tasks.items()}
    stamp = tasks["bt_posterior"].simgen_config()["stamp"]
    assert specs["bt_posterior"].posterior and specs["bt_posterior"].input_shapes == {"image": (1, stamp, stamp)}
    assert specs["ml_ratio"].input_shapes == {"image": (1, 48, 48)}
    assert set(specs["multibranch_mass"].input_shapes) == {"image", "vmap", "sigmamap"}
