"""The training engine: optimisers, schedules, early stopping, clipping, staged unfreezing,
checkpoints and exact resumption, precision, artefacts, predictions and test-time augmentation."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from lightgbm import LGBMRegressor
from sklearn.linear_model import Ridge
from torch import nn

from ._tiny import FlatNet, PixelNet, TinyNet, TwoStackNet, tiny_dataset
from sim2obs.errors import ConfigError, Sim2obsValueError
from sim2obs.models.augment import dihedral
from sim2obs.models.engine import (TensorDictDataset, Trainer, TrainerConfig, galaxy_set_dataset, model_target,
                                   load_trainer_config, validate_config)
from sim2obs.models.estimators import EstimatorConfig, EstimatorTrainer, TabularData, tabular_from_galaxy_set
from tests.conftest import load_engine_predictions as _load_predictions

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "trainer"



def quick(**overrides) -> TrainerConfig:
    """Tiny CPU settings: 2 batches of 16 per epoch on the default 32-object dataset."""
    base = dict(device="cpu", precision="fp32", channels_last=False, epochs=2, batch_size=16, optimiser="adam",
                lr=1e-2, schedule="none", augment=None, progress=False)
    base.update(overrides)
    return TrainerConfig(**base)


def fit(tmp_path, cfg, model=None, name="run", train=None, val=None, **trainer_kw):
    torch.manual_seed(0)
    model = model if model is not None else TinyNet()
    result = Trainer(cfg, **trainer_kw).fit(model, train or tiny_dataset(32, seed=1), val or tiny_dataset(16, seed=2),
                                            tmp_path / name)
    return model, result


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def state(model: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------------------------------------
# Optimisers and schedules
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, check", [
    ("adam", lambda g: g["decoupled_weight_decay"] is False and "momentum_decay" not in g),
    ("adamw", lambda g: g["decoupled_weight_decay"] is True),
    ("nadam", lambda g: "momentum_decay" in g),
    ("sgd", lambda g: g["nesterov"] is True and g["momentum"] == 0.99),
], ids=["adam", "adamw", "nadam", "sgd"])
def test_each_optimiser_builds_and_steps(tmp_path, name, check):
    torch.manual_seed(0)
    model = TinyNet()
    before = state(model)
    cfg = quick(optimiser=name, momentum=0.99, epochs=1, restore_best=False)
    Trainer(cfg).fit(model, tiny_dataset(32, seed=1), tiny_dataset(16, seed=2), tmp_path)
    group = torch.load(tmp_path / "last.pt", weights_only=True)["optimiser"]["param_groups"][0]
    assert check(group), group
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("schedule, factors", [
    ("none", [1, 1, 1, 1]),
    # 2 steps per epoch, annealed per step over the 8 steps of the run
    ("cosine", [(1 + math.cos(math.pi * s / 8)) / 2 for s in (0, 2, 4, 6)]),
    # first cycle 2 steps (1 epoch), then 4 steps: restarts at steps 2 and 6
    ("cosine_restarts", [1, 1, 0.5, 1]),
])
def test_schedules_follow_their_curves(tmp_path, schedule, factors):
    cfg = quick(schedule=schedule, epochs=4, restart_epochs=1, restart_mult=2, lr=0.01)
    fit(tmp_path, cfg)
    lrs = [r["lr"] for r in metrics(tmp_path / "run")]
    np.testing.assert_allclose(lrs, [0.01 * f for f in factors], rtol=1e-9, atol=1e-12)


def test_plateau_multiplies_lr_by_0_3_after_4_flat_epochs(tmp_path):
    _, result = fit(tmp_path, quick(schedule="plateau", epochs=10, lr=0.01), model=FlatNet())
    lrs = [r["lr"] for r in result.history]
    assert len({r["val_loss"] for r in result.history}) == 1  # the validation loss is flat
    # best at epoch 1; epochs 2-5 flat -> x0.3 from epoch 6; epochs 6-9 flat -> x0.3 again
    np.testing.assert_allclose(lrs, [0.01] * 5 + [0.003] * 4 + [0.0009], rtol=1e-9)


def test_early_stopping_stops_after_patience_flat_epochs(tmp_path):
    _, flat = fit(tmp_path, quick(epochs=20, early_stopping_patience=3), model=FlatNet(), name="flat")
    assert flat.stopped_early and len(flat.history) == 4 and flat.best_epoch == 1
    assert len(metrics(tmp_path / "flat")) == 4
    _, learning = fit(tmp_path, quick(epochs=3, early_stopping_patience=3), name="learning")
    assert not learning.stopped_early and len(learning.history) == 3


def test_gradient_clipping_bounds_the_update(tmp_path):
    big = TensorDictDataset({"image": torch.ones(8, 1, 8, 8)}, torch.full((8, 2), 100.0))
    cfg = quick(optimiser="sgd", momentum=0.0, nesterov=False, lr=1.0, epochs=1, batch_size=8, restore_best=False)

    def update_norm(max_grad_norm, name):
        torch.manual_seed(0)
        model = TinyNet()
        before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        Trainer(replace(cfg, max_grad_norm=max_grad_norm)).fit(model, big, big, tmp_path / name)
        after = torch.cat([p.detach().flatten() for p in model.parameters()])
        return float((after - before).norm())

    assert update_norm(None, "free") > 1.0
    assert update_norm(0.01, "clipped") <= 0.01 * (1 + 1e-5)


# ---------------------------------------------------------------------------------------------
# Staged unfreezing with discriminative learning rates
# ---------------------------------------------------------------------------------------------
def test_staged_unfreezing_freezes_then_unfreezes_with_group_lrs(tmp_path):
    stages = [{"epochs": 1, "trainable": ["head"], "lr": {"head": 0.05}},
              {"epochs": 1, "trainable": None, "lr": {"head": 0.05, "body": 0.005}}]
    snapshots = []
    torch.manual_seed(0)
    model = TinyNet()
    initial = state(model)
    trainer = Trainer(quick(stages=stages, restore_best=False),
                      callbacks=[lambda record, m: snapshots.append(state(m))])
    result = trainer.fit(model, tiny_dataset(32, seed=1), tiny_dataset(16, seed=2), tmp_path)
    after1, after2 = snapshots
    body = [k for k in initial if k.startswith("body.")]
    head = [k for k in initial if k.startswith("head.")]
    assert all(torch.equal(after1[k], initial[k]) for k in body)
    assert all(not torch.equal(after1[k], initial[k]) for k in head)
    assert all(not torch.equal(after2[k], after1[k]) for k in body)
    assert result.history[0]["lrs"] == {"head": 0.05}
    assert result.history[1]["lrs"] == {"body": 0.005, "head": 0.05}
    groups = torch.load(tmp_path / "last.pt", weights_only=True)["optimiser"]["param_groups"]
    assert sorted((g["name"], g["lr"], len(g["params"])) for g in groups) == [("body", 0.005, 2), ("head", 0.05, 2)]
    assert all(p.requires_grad for p in model.parameters())


def test_parameters_frozen_by_the_user_stay_frozen(tmp_path):
    torch.manual_seed(0)
    model = TinyNet()
    model.body.requires_grad_(False)
    before = state(model)
    Trainer(quick(restore_best=False)).fit(model, tiny_dataset(32, seed=1), tiny_dataset(16, seed=2), tmp_path)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items() if k.startswith("body."))
    assert not torch.equal(before["head.1.weight"], model.head[1].weight)
    assert [p.requires_grad for p in model.parameters()] == [False, False, True, True]


def test_stage_prefix_typo_is_a_config_error_before_training(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'head'") as info:
        fit(tmp_path, quick(stages=[{"epochs": 1}, {"epochs": 1, "lr": {"haed": 0.1}}]))
    assert info.value.key == "trainer.stages.1"
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


# ---------------------------------------------------------------------------------------------
# Checkpoints and resumption
# ---------------------------------------------------------------------------------------------
class Killed(RuntimeError):
    pass


def resume_config(schedule):
    stages = [{"epochs": 1, "trainable": ["head"], "lr": {"head": 0.02}},
              {"epochs": 3, "trainable": None, "lr": {"body": 0.005}}]
    return quick(optimiser="nadam", schedule=schedule, epochs=4, stages=stages, early_stopping_patience=3,
                 max_grad_norm=5.0, augment={"zoom": [0.8, 1.2]}, restart_mult=2)


def run_resumable(out, cfg, kill_after_epoch=None, kill_at_loss_call=None):
    """Fit TinyNet (BN + dropout) into ``out``; optionally raise after an epoch or mid-epoch."""
    calls = {"n": 0}

    def loss(output, target):
        calls["n"] += 1
        if kill_at_loss_call is not None and calls["n"] == kill_at_loss_call:
            raise Killed("mid-epoch")
        return nn.functional.mse_loss(output, target)

    def callback(record, model):
        if record["epoch"] == kill_after_epoch:
            raise Killed("after epoch")

    torch.manual_seed(123)
    model = TinyNet(dropout=0.3, batch_norm=True)
    result = Trainer(cfg, loss=loss, callbacks=[callback]).fit(model, tiny_dataset(32, seed=1),
                                                               tiny_dataset(16, seed=2), out)
    return model, result


@pytest.mark.parametrize("schedule", ["cosine_restarts", "plateau"])
@pytest.mark.parametrize("kill, done", [
    ({"kill_after_epoch": 1}, 1),  # resumes at a stage boundary: fresh optimiser for stage 2
    ({"kill_after_epoch": 2}, 2),  # resumes inside stage 2: optimiser and schedule restored
    ({"kill_at_loss_call": 8}, 2),  # 3 loss calls per epoch (2 train, 1 val): dies mid-epoch 3
], ids=["after_epoch_1", "after_epoch_2", "mid_epoch_3"])
def test_killed_run_resumes_to_identical_result(tmp_path, schedule, kill, done):
    cfg = resume_config(schedule)
    full_model, full = run_resumable(tmp_path / "full", cfg)
    with pytest.raises(Killed):
        run_resumable(tmp_path / "resumed", cfg, **kill)
    assert len(metrics(tmp_path / "resumed")) == done
    resumed_model, resumed = run_resumable(tmp_path / "resumed", cfg)

    def strip(rows):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]

    assert strip(metrics(tmp_path / "resumed")) == strip(metrics(tmp_path / "full"))
    assert len(full.history) == 4
    for k, v in full_model.state_dict().items():
        assert torch.equal(v, resumed_model.state_dict()[k]), k
    last_full = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    last_resumed = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)
    for k, v in last_full["model"].items():
        assert torch.equal(v, last_resumed["model"][k]), k
    a, b = (_load_predictions(tmp_path / d / "predictions_val.h5") for d in ("full", "resumed"))
    np.testing.assert_array_equal(a["predictions"], b["predictions"])
    assert full.record["config_hash"] == resumed.record["config_hash"]


def test_checkpoints_load_with_weights_only(tmp_path):
    fit(tmp_path, resume_config("cosine_restarts"))
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert {"model", "optimiser", "scheduler", "scaler", "epoch", "stage", "best_val_loss", "best_epoch",
            "bad_epochs", "stopped_early", "history", "rng", "config_hash"} <= set(last)
    assert set(last["rng"]) >= {"torch", "numpy", "python"} and last["epoch"] == 4
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert set(best) == {"model", "epoch", "val_loss"}
    assert not list((tmp_path / "run").glob("*.tmp"))


def test_finished_run_is_not_retrained_and_other_config_is_refused(tmp_path):
    cfg = quick()
    _, first = fit(tmp_path, cfg)
    model, again = fit(tmp_path, cfg)
    assert [r["seconds"] for r in again.history] == [r["seconds"] for r in first.history]
    with pytest.raises(ConfigError, match="different configuration"):
        fit(tmp_path, replace(cfg, lr=0.5))


def test_same_seed_same_run_and_other_seed_differs(tmp_path):
    cfg = quick(augment={}, epochs=1)
    runs = [fit(tmp_path, replace(cfg, seed=s), name=n)[1].history[0]["train_loss"]
            for s, n in ((0, "a"), (0, "b"), (1, "c"))]
    assert runs[0] == runs[1] != runs[2]


class NumpyNoise(torch.utils.data.Dataset):
    """Images filled with one draw from numpy's global generator (as a user's numpy-based
    augmentation in the dataset would draw); target zero."""

    def __len__(self):
        return 16

    def __getitem__(self, i):
        image = torch.full((1, 8, 8), float(np.random.normal()))
        return {"inputs": {"image": image}, "target": torch.zeros(2), "id": i, "index": i}


class ItemRecorder(TinyNet):
    def __init__(self):
        super().__init__()
        self.values = []

    def forward(self, x):
        if self.training:
            self.values += x.mean((1, 2, 3)).tolist()
        return super().forward(x)


def test_dataloader_workers_draw_distinct_reproducible_numpy_streams(tmp_path):
    def draws(seed, name):
        model, _ = fit(tmp_path, quick(seed=seed, num_workers=2, batch_size=2, epochs=2, restore_best=False),
                       model=ItemRecorder(), train=NumpyNoise(), val=tiny_dataset(4), name=name)
        return model.values

    a, b, c = draws(0, "a"), draws(0, "b"), draws(1, "c")
    assert len(a) == 32 and a == b
    assert len(set(a)) == 32  # no two workers (or epochs) repeat each other's draws
    assert not set(a) & set(c)


class WorkerPid(NumpyNoise):
    """Images filled with the pid of the process that made them."""

    def __getitem__(self, i):
        import os

        return {"inputs": {"image": torch.full((1, 8, 8), float(os.getpid()))}, "target": torch.zeros(2),
                "id": i, "index": i}


def test_training_workers_persist_across_epochs(tmp_path):
    model, _ = fit(tmp_path, quick(num_workers=2, batch_size=2, epochs=3, restore_best=False),
                   model=ItemRecorder(), train=WorkerPid(), val=tiny_dataset(4))
    assert len(model.values) == 48 and len(set(model.values)) == 2  # the same two workers all three epochs


def test_persistent_workers_resume_to_the_same_draws(tmp_path):
    class Killed(Exception):
        pass

    def kill_after_first(record, model):
        if record["epoch"] == 1:
            raise Killed

    cfg = quick(num_workers=2, batch_size=2, epochs=2, restore_best=False)
    full, _ = fit(tmp_path, cfg, model=ItemRecorder(), train=NumpyNoise(), val=tiny_dataset(4), name="full")
    with pytest.raises(Killed):
        fit(tmp_path, cfg, model=ItemRecorder(), train=NumpyNoise(), val=tiny_dataset(4), name="cut",
            callbacks=[kill_after_first])
    resumed, _ = fit(tmp_path, cfg, model=ItemRecorder(), train=NumpyNoise(), val=tiny_dataset(4), name="cut")
    assert len(full.values) == 32 and resumed.values == full.values[16:]


# ---------------------------------------------------------------------------------------------
# Precision, memory format, calling convention
# ---------------------------------------------------------------------------------------------
class DtypeNet(TinyNet):
    """Records what it is called with: type, dtype of its first activation, memory format."""

    def forward(self, x):
        self.seen = {"type": type(x).__name__, "dtype": self.body[0](x).dtype,
                     "channels_last": x.is_contiguous(memory_format=torch.channels_last),
                     "contiguous": x.is_contiguous()}
        return super().forward(x)


@pytest.mark.parametrize("precision, dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16),
                                              ("fp16", torch.float16)])
def test_autocast_precision_on_cpu(tmp_path, precision, dtype):
    model, result = fit(tmp_path, quick(precision=precision), model=DtypeNet())
    assert model.seen["dtype"] == dtype
    assert all(math.isfinite(r["train_loss"]) and math.isfinite(r["val_loss"]) for r in result.history)
    assert result.record["precision"] == precision


@pytest.mark.parametrize("channels_last", [True, False])
def test_channels_last(tmp_path, channels_last):
    model, _ = fit(tmp_path, quick(channels_last=channels_last), model=DtypeNet(in_channels=2),
                   train=tiny_dataset(32, seed=1, channels=2), val=tiny_dataset(16, seed=2, channels=2))
    assert model.body[0].weight.is_contiguous(memory_format=torch.channels_last) is channels_last
    assert (model.seen["channels_last"], model.seen["contiguous"]) == (channels_last, not channels_last)


def test_one_stack_gives_a_tensor_several_give_a_dict(tmp_path):
    two = tiny_dataset(32, seed=1, stacks=("image", "maps"))
    model, result = fit(tmp_path, quick(augment={}), model=TwoStackNet(), train=two,
                        val=tiny_dataset(16, seed=2, stacks=("image", "maps")), name="two")
    assert model.seen == {"dict"} and len(result.history) == 2
    one, _ = fit(tmp_path, quick(), model=DtypeNet(), name="one")
    assert one.seen["type"] == "Tensor"


# ---------------------------------------------------------------------------------------------
# Artefacts, predictions, test-time augmentation
# ---------------------------------------------------------------------------------------------
def test_run_writes_metrics_curve_predictions_and_record(tmp_path):
    _, result = fit(tmp_path, quick(epochs=3))
    out = tmp_path / "run"
    rows = metrics(out)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert {"epoch", "train_loss", "val_loss", "lr", "seconds"} <= set(rows[0])
    assert (out / "val_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    preds = _load_predictions(out / "predictions_val.h5")
    np.testing.assert_array_equal(preds["ids"], np.arange(16) + 1000)
    assert preds["predictions"].shape == (16, 2)
    record = json.loads((out / "run.json").read_text())
    assert record["_target_"] == model_target(TinyNet()) and record["model"] == "TinyNet"
    assert record["n_parameters"] == sum(p.numel() for p in TinyNet().parameters())
    assert record["config_hash"] == result.record["config_hash"] and "torch" in record["package_versions"]
    assert record["best_epoch"] == min(rows, key=lambda r: r["val_loss"])["epoch"]


def test_predict_keeps_order_and_tta_averages_dihedral_transforms():
    torch.manual_seed(0)
    model = PixelNet()
    data = tiny_dataset(10, seed=3)
    trainer = Trainer(quick(batch_size=4))
    plain = trainer.predict(model, data)
    np.testing.assert_array_equal(plain["ids"], np.arange(10) + 1000)
    x = data.inputs["image"]
    with torch.no_grad():
        np.testing.assert_allclose(plain["predictions"], model(x).numpy(), rtol=1e-6)
        expected = torch.stack([model(dihedral(x, k)) for k in range(8)]).mean(0).numpy()
    tta = trainer.predict(model, data, tta=True)
    np.testing.assert_allclose(tta["predictions"], expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(tta["predictions"], plain["predictions"], atol=1e-4)
    identity_only = Trainer(quick(batch_size=4, tta=[0])).predict(model, data, tta=True)
    np.testing.assert_allclose(identity_only["predictions"], plain["predictions"], rtol=1e-6)


def test_galaxy_set_through_the_engine(tmp_path, tiny_galsim_set):
    train = galaxy_set_dataset(tiny_galsim_set, "train", targets=["log_mstar"])
    val = galaxy_set_dataset(tiny_galsim_set, "val", targets=["log_mstar"])
    torch.manual_seed(0)
    model = TinyNet(in_channels=3, n_targets=1)
    result = Trainer(quick(epochs=1, batch_size=8, num_workers=2, augment={})).fit(model, train, val, tmp_path)
    preds = _load_predictions(tmp_path / "predictions_val.h5")
    np.testing.assert_array_equal(preds["ids"], [val[i]["id"] for i in range(len(val))])
    assert preds["predictions"].shape == (len(val), 1)
    assert math.isfinite(result.history[0]["val_loss"])



def test_held_galaxy_sets_are_served_in_process_and_lazy_ones_by_workers(tmp_path, tiny_galsim_set):
    seen = []

    class Spy(Trainer):
        def _loader(self, rt, dataset, sampler, batch_size, drop_last, generator, workers):
            loader = super()._loader(rt, dataset, sampler, batch_size, drop_last, generator, workers)
            seen.append((getattr(dataset, "held_in_memory", None), workers, loader.persistent_workers))
            return loader

    held = galaxy_set_dataset(tiny_galsim_set, "train", targets=["log_mstar"])
    lazy = galaxy_set_dataset(tiny_galsim_set, "val", targets=["log_mstar"], in_memory=False)
    torch.manual_seed(0)
    Spy(quick(epochs=1, batch_size=8, num_workers=2)).fit(TinyNet(in_channels=3, n_targets=1), held, lazy, tmp_path)
    assert seen[0] == (True, 0, False)  # rows of arrays in memory: workers would only copy batches
    assert seen[1] == (False, 2, True)  # read from the shards: persistent workers overlap the reads

# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------
def test_default_yaml_is_the_dataclass_default_and_quick_composes():
    assert asdict(load_trainer_config(CONFIGS / "default.yaml")) == asdict(TrainerConfig())
    quick_cfg = load_trainer_config(CONFIGS / "quick.yaml")
    assert quick_cfg.epochs == 2 and quick_cfg.augment is None and quick_cfg.optimiser == "nadam"
    for path in CONFIGS.glob("*.yaml"):
        validate_config(load_trainer_config(path))


def test_trainer_group_composes_in_the_packaged_configs():
    from hydra import compose, initialize_config_module

    with initialize_config_module("sim2obs.configs", version_base=None):
        cfg = compose("trainer/finetune")
    tc = load_trainer_config(cfg.trainer)
    assert tc.schedule == "cosine_restarts" and [s.epochs for s in tc.stages] == [2, 7]


@pytest.mark.parametrize("override, key", [
    ({"optimiser": "adamm"}, "trainer.optimiser"),
    ({"schedule": "step"}, "trainer.schedule"),
    ({"precision": "fp8"}, "trainer.precision"),
    ({"plateau_factor": 1.5}, "trainer.plateau_factor"),
    ({"tta": [9]}, "trainer.tta"),
    ({"augment": {"zoom": [1.3, 0.7]}}, "trainer.augment.zoom"),
])
def test_invalid_settings_name_the_key(override, key):
    with pytest.raises(ConfigError) as info:
        validate_config(load_trainer_config(override))
    assert info.value.key == key


def test_unknown_key_suggests_a_name():
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        load_trainer_config({"epoch": 3})


def test_diverging_training_raises(tmp_path):
    bad = TensorDictDataset({"image": torch.randn(8, 1, 8, 8)}, torch.full((8, 2), float("nan")))
    with pytest.raises(Sim2obsValueError, match="diverged"):
        fit(tmp_path, quick(), train=bad)


class RecorderNet(TinyNet):
    """Records the sum of every input batch, split by train / eval mode."""

    def __init__(self):
        super().__init__()
        self.sums = {True: [], False: []}

    def forward(self, x):
        self.sums[self.training].append(float(x.sum()))
        return super().forward(x)


def test_augmentation_changes_training_batches_only(tmp_path):
    data = tiny_dataset(16, seed=1)
    raw = float(data.inputs["image"].sum())
    cfg = quick(epochs=1, batch_size=16, restore_best=False)
    plain, _ = fit(tmp_path, cfg, model=RecorderNet(), train=data, val=data, name="plain")
    augmented, _ = fit(tmp_path, replace(cfg, augment={}), model=RecorderNet(), train=data, val=data, name="aug")
    assert plain.sums[True] == pytest.approx([raw], rel=1e-5)
    assert augmented.sums[True] != pytest.approx([raw], rel=1e-3)
    assert augmented.sums[False][0] == pytest.approx(raw, rel=1e-5)  # validation is not augmented
    calls = []

    def custom(inputs, generator):
        calls.append(isinstance(generator, torch.Generator))
        return {k: v + 1.0 for k, v in inputs.items()}

    model, _ = fit(tmp_path, replace(cfg, augment=None), model=RecorderNet(), train=data, val=data, name="custom",
                   augment=custom)
    assert calls == [True] and model.sums[True] == pytest.approx([raw + data.inputs["image"].numel()], rel=1e-5)


# ---------------------------------------------------------------------------------------------
# Estimators share the run / record path
# ---------------------------------------------------------------------------------------------
def tabular(n, seed, n_targets=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    y = 2 * x[:, :1] + 0.5 * rng.normal(size=(n, n_targets))
    return TabularData(x, y, np.arange(n) + 500)


def test_lightgbm_writes_the_same_artefacts_as_a_network(tmp_path):
    val = tabular(60, 2)
    estimator = LGBMRegressor(n_estimators=300, learning_rate=0.3, min_child_samples=5, verbose=-1)
    result = EstimatorTrainer(EstimatorConfig(early_stopping_patience=5)).fit(estimator, tabular(200, 1), val,
                                                                             tmp_path / "lgbm")
    fit(tmp_path, quick(), name="net")
    lgbm, net = tmp_path / "lgbm", tmp_path / "net"
    artefacts = {"metrics.jsonl", "predictions_val.h5", "run.json", "val_curve.png"}
    assert artefacts <= {p.name for p in lgbm.iterdir()} and artefacts <= {p.name for p in net.iterdir()}
    rows = metrics(lgbm)
    assert set(metrics(net)[0]) >= set(rows[0]) >= {"epoch", "train_loss", "val_loss", "lr", "seconds"}
    # early stopping on the validation loss: 5 rounds past the best, predictions from the best round
    assert result.stopped_early and len(rows) == result.best_epoch + 5 < 300
    assert result.best_epoch == min(rows, key=lambda r: r["val_loss"])["epoch"]
    preds = _load_predictions(lgbm / "predictions_val.h5")
    np.testing.assert_array_equal(preds["ids"], val.ids)
    mse = float(np.mean((preds["predictions"][:, 0] - val.targets[:, 0]) ** 2))
    assert mse == pytest.approx(rows[result.best_epoch - 1]["val_loss"], rel=1e-5)
    records = [json.loads((d / "run.json").read_text()) for d in (lgbm, net)]
    shared = {"model", "_target_", "config_hash", "config", "wall_seconds", "package_versions", "kind",
              "best_epoch", "best_val_loss", "epochs_run", "stopped_early"}
    assert shared <= set(records[0]) and shared <= set(records[1])
    assert records[0]["_target_"] == "lightgbm.sklearn.LGBMRegressor"
    assert records[0]["n_estimators"] == result.best_epoch and records[1]["n_parameters"] > 0
    assert records[0]["config"]["estimator"]["learning_rate"] == 0.3


def test_sklearn_estimator_on_galaxy_set_catalogue(tmp_path, tiny_galsim_set):
    train, val = (tabular_from_galaxy_set(tiny_galsim_set, s, ["redshift", "mag_r", "r_e_r"], ["log_mstar"])
                  for s in ("train", "val"))
    result = EstimatorTrainer().fit(Ridge(), train, val, tmp_path)
    assert [r["epoch"] for r in metrics(tmp_path)] == [1] and result.record["_target_"].endswith("Ridge")
    preds = _load_predictions(tmp_path / "predictions_val.h5")
    np.testing.assert_array_equal(preds["ids"], val.ids)
    assert preds["predictions"].shape == (len(val), 1)


def test_lightgbm_with_several_targets_asks_for_a_wrapper(tmp_path):
    with pytest.raises(Sim2obsValueError, match="MultiOutputRegressor"):
        EstimatorTrainer().fit(LGBMRegressor(verbose=-1), tabular(50, 1, 2), tabular(20, 2, 2), tmp_path)


def test_auto_precision_follows_native_bf16_support():
    """Measured: bf16 autocast + channels-last pay wherever bf16 is native; fp32 elsewhere."""
    from sim2obs.models.engine import Trainer, TrainerConfig

    rt = Trainer(TrainerConfig(device="cpu"))._runtime(TrainerConfig(device="cpu"))
    native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert rt.precision == ("bf16" if native else "fp32")
    assert rt.channels_last == native
    forced = Trainer()._runtime(TrainerConfig(device="cpu", precision="fp32", channels_last="auto"))
    assert forced.precision == "fp32" and forced.channels_last is False
