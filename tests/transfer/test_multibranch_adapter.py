"""The transfer adapter of multibranch_mass on tiny tng-schema sets: preprocessing fitted on the
source training split only, datasets shaped as ``task.spec()``, JSON state, head and feature layer
names that exist in the network, predictions the target task scores; the study preset (physics A ->
B of the mini-simulation) and a tiny study through the protocol end to end."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from sim2obs.errors import ConfigError, Sim2obsValueError
from sim2obs.models.engine import Trainer
from sim2obs.predictions import Predictions
from sim2obs.simgen import canonical_config, default_set_path
from sim2obs.tasks import build_task, load_task_config
from sim2obs.tasks.multibranch_mass import fit_unit_scaling
from sim2obs.tasks.transfer import coerce_study, load_study_config, run_transfer
from sim2obs.tasks.transfer.adapter import ADAPTERS
from sim2obs.tasks.transfer.config import resolve_targets
from sim2obs.tasks.transfer.multibranch_mass import MultibranchMassAdapter
from tests.tasks.test_multibranch_mass import make_tng_like_set


def _config(path, **extra):
    overrides = ["trainer.epochs=1", "trainer.batch_size=16", "trainer.progress=false", "image_resolution=16",
                 "model.head_hidden=[16]", "trainer.augment=null"]
    cfg = load_task_config("multibranch_mass", "quick", overrides)
    cfg["data"] = {"path": str(path)}
    cfg.update(extra)
    return cfg


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    """Source (seed 0) and target (another draw, 12 subhalos) tasks on tiny tng-schema sets."""
    root = tmp_path_factory.mktemp("mb_transfer")
    src = make_tng_like_set(root / "source", n_subhalos=20, seed=0)
    tgt = make_tng_like_set(root / "target", n_subhalos=12, seed=7)
    source = build_task("multibranch_mass", _config(src), data_dir=root / "d")
    target = build_task("multibranch_mass", _config(tgt), data_dir=root / "d")
    return source, target


@pytest.fixture()
def adapter(tasks):
    a = MultibranchMassAdapter(tasks[0])
    a.fit()
    return a


def test_registered_under_the_task_name():
    assert ADAPTERS.get("multibranch_mass") is MultibranchMassAdapter


def test_preprocessing_is_fitted_on_the_source_training_split_only(tasks, adapter):
    source, target = tasks
    before = json.dumps(adapter.state(), sort_keys=True)
    for b in adapter.inputs:  # the fit is the source training split's ...
        raw, valid = source._raw(b, 16, "train")
        mode = "log" if b == "image" else "linear"
        assert adapter.scalings[b] == fit_unit_scaling(raw, valid, mode, 4.0)
        # ... and the target's own statistics differ (so the check below could fail)
        raw_t, valid_t = target._raw(b, 16, "train")
        assert adapter.scalings[b] != fit_unit_scaling(raw_t, valid_t, mode, 4.0)
    y = source.labels("train")
    np.testing.assert_allclose(adapter.target_mean, y.mean(axis=0))
    assert not np.allclose(adapter.target_mean, target.labels("train").mean(axis=0))
    # preparing every split of the target leaves the fitted state unchanged
    for split in ("train", "val"):
        adapter.dataset(target, split)
    adapter.dataset(target, "test", labelled=False)
    assert json.dumps(adapter.state(), sort_keys=True) == before
    # target pixels are scaled with the source scaling: values outside [0, 1] are kept
    ds = adapter.dataset(target, "train")
    raw, valid = target._raw("vmap", 16, "train")
    np.testing.assert_array_equal(ds.inputs["vmap"][:, 0].numpy(), adapter.scalings["vmap"].apply(raw, valid))
    assert ds.inputs["image"].numpy().max() != pytest.approx(1.0)  # not re-stretched onto the target
    # and target labels are standardised with the source mean and deviation
    y_t = target.labels("train")
    np.testing.assert_allclose(ds.targets.numpy(), (y_t - adapter.target_mean) / adapter.target_std, rtol=1e-5)


def test_datasets_match_the_task_spec_and_subsets(tasks, adapter):
    source, target = tasks
    spec = target.spec()
    for task in tasks:
        ds = adapter.dataset(task, "train")
        assert set(ds.inputs) == set(spec.input_shapes)
        for b, shape in spec.input_shapes.items():
            assert tuple(ds.inputs[b].shape[1:]) == tuple(shape)
            assert ds.inputs[b].dtype == torch.float32
        assert tuple(ds.targets.shape) == (len(task.split_ids("train")), spec.n_targets)
    ids = target.split_ids("train")[[5, 0, 3]]
    sub = adapter.dataset(target, "train", ids=ids)
    assert sub.ids.tolist() == ids.tolist() and len(sub) == 3  # the protocol's order
    full = adapter.dataset(target, "train")
    np.testing.assert_array_equal(sub.inputs["image"][1].numpy(), full.inputs["image"][0].numpy())
    test = adapter.dataset(target, "test", labelled=False)
    assert tuple(test.targets.shape) == (len(target.split_ids("test")), 0)
    with pytest.raises(Sim2obsValueError, match="held out"):
        adapter.dataset(target, "test")  # the evaluation split's labels are never read
    with pytest.raises(Sim2obsValueError, match="not in"):
        adapter.dataset(target, "train", ids=[10**9])
    with pytest.raises(Sim2obsValueError, match="repeated"):
        adapter.dataset(target, "train", ids=[ids[0], ids[0]])


def test_state_round_trips_through_json_and_bad_state_is_refused(tasks, adapter):
    source, target = tasks
    state = json.loads(json.dumps(adapter.state()))
    fresh = MultibranchMassAdapter(source)
    with pytest.raises(Sim2obsValueError, match="not fitted"):
        fresh.dataset(target, "train")
    fresh.load_state(state)
    a, b = adapter.dataset(target, "val"), fresh.dataset(target, "val")
    for k in a.inputs:
        assert torch.equal(a.inputs[k], b.inputs[k])
    assert torch.equal(a.targets, b.targets)
    with pytest.raises(ConfigError, match="image_resolution"):
        fresh.load_state({**state, "image_resolution": 32})
    with pytest.raises(ConfigError, match="scaling"):
        fresh.load_state({**state, "scaling": {"image": state["scaling"]["image"]}})


def test_head_prefixes_and_feature_module_name_the_network(adapter):
    model = adapter.build_model(seed=3)
    names = [n for n, _ in model.named_parameters()]
    head = [n for n in names if any(n == p or n.startswith(p + ".") for p in adapter.head_prefixes)]
    assert head and len(head) < len(names)
    assert {n.split(".")[1] for n in names} == {"branches", "head"}
    modules = dict(model.named_modules())
    assert adapter.feature_module in modules
    seen = []
    hook = modules[adapter.feature_module].register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape))
    batch = {b: torch.rand(2, *shape) for b, shape in adapter.source.spec().input_shapes.items()}
    with torch.no_grad():
        model.eval()(batch)
    hook.remove()
    assert seen == [torch.Size([2, adapter.feature_dim()])] and adapter.feature_dim() == 512 * 3
    # the same seed gives the same initial weights
    other = adapter.build_model(seed=3)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), other.parameters()))


def test_trainer_phases(adapter):
    base = adapter.trainer_config("source")
    assert base.epochs == 1 and base.optimiser == "adam"
    assert adapter.trainer_config("finetune").lr == base.lr  # the protocol passes the reduced rate
    assert adapter.trainer_config("finetune", {"lr": 0.5, "epochs": 3}).lr == 0.5
    assert adapter.trainer_config("target_only", {"epochs": 2}).epochs == 2
    assert base.precision == "fp32"  # 16 px inputs: the engine's CPU bf16 guard
    with pytest.raises(Sim2obsValueError, match="phase"):
        adapter.trainer_config("zero_shot")
    with pytest.raises(ConfigError):
        adapter.trainer_config("source", {"optimiser": "nope"})


def test_predictions_are_scored_by_the_target_task(tasks, adapter, tmp_path):
    source, target = tasks
    model = adapter.build_model(seed=0)
    cfg = replace(adapter.trainer_config("source"), epochs=1)
    Trainer(cfg, loss=adapter.loss()).fit(model, adapter.dataset(source, "train"), adapter.dataset(source, "val"),
                                          tmp_path / "fit")
    for task in tasks:
        p = adapter.predict(task, model, "test", seed=0)
        assert p.values.shape == (len(task.split_ids("test")), 3) and p.targets == task.targets
        np.testing.assert_array_equal(p.ids, task.split_ids("test"))
        metrics = task.evaluate(p)
        assert set(metrics) >= set(task.metadata.metrics)
        assert np.isfinite(metrics[task.metadata.main_score])
        # de-standardised with the source statistics: the values live near the targets' range
        assert abs(p.values.mean(axis=0) - adapter.target_mean).max() < 5 * adapter.target_std.max()


def test_adapter_training_reproduces_the_task_cnn(tasks, tmp_path):
    """Same scaling, standardisation, network, seed and schedule as the task's own ``cnn``: the
    network trained through the adapter predicts what the task's run predicts."""
    source, _ = tasks
    task = build_task("multibranch_mass", _config(source.config.data["path"], methods=["cnn"], plots=False,
                                                  n_bootstrap=10),
                      data_dir=tmp_path / "d", progress=False)
    row = task.run(tmp_path / "run")[0]
    expected = Predictions.load(tmp_path / "run" / "cnn" / row["predictions"])
    adapter = MultibranchMassAdapter(task)
    adapter.fit()
    cfg = adapter.trainer_config("source")
    assert len(task.split_ids("train")) % cfg.batch_size != 1  # (the cnn would drop a lone last object)
    model = adapter.build_model(seed=cfg.seed)
    Trainer(cfg, loss=adapter.loss()).fit(model, adapter.dataset(task, "train"), adapter.dataset(task, "val"),
                                          tmp_path / "fit", model_config=adapter.model_config())
    got = adapter.predict(task, model, "test", seed=0)
    np.testing.assert_array_equal(got.ids, expected.ids)
    assert expected.values.std(axis=0).max() > 1e-4  # the predictions vary well beyond the tolerance
    np.testing.assert_allclose(got.values, expected.values, rtol=0, atol=1e-5)
    assert task.evaluate(got) == pytest.approx(row["metrics"], abs=1e-5)


def test_refuses_other_tasks_and_split_networks(tasks, tmp_path):
    source, target = tasks
    with pytest.raises(ConfigError, match="joint"):
        MultibranchMassAdapter(build_task("multibranch_mass", _config(source.config.data["path"], joint=False),
                                          data_dir=tmp_path))
    other = build_task("multibranch_mass", _config(target.config.data["path"], inputs=["image"]), data_dir=tmp_path)
    a = MultibranchMassAdapter(source)
    a.fit()
    with pytest.raises(ConfigError, match="input_shapes"):
        a.dataset(other, "train")


# ------------------------------------------------------------------------ the study preset, end to end
def test_physics_preset_is_the_quick_set_against_physics_b():
    study = coerce_study(load_study_config("multibranch_physics"))
    assert study.task_name == "multibranch_mass" and list(study.targets) == ["physics_b"]
    quick = load_task_config("multibranch_mass", "quick")["data"]
    source = canonical_config({"generator": "tng", **study.source})
    target = canonical_config({"generator": "tng", **resolve_targets(study)["physics_b"]})
    # the source is the set the task's quick run generates (same folder, so generated once)
    assert default_set_path(source, "d") == default_set_path(canonical_config({"generator": "tng", **quick}), "d")
    assert target["source"]["minisim"].pop("physics") == "B"
    assert source["source"]["minisim"].pop("physics") == "A"  # every mini-sim key is explicit since minisim 1.1
    assert target == source  # physics is the only change


@pytest.fixture()
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_a_tiny_multibranch_study_runs_end_to_end(tasks, tmp_path, one_thread):
    """The preset with its data nodes replaced by the tiny sets: the source row, zero-shot,
    head-only fine-tuning and feature alignment (three input branches) are scored on the target."""
    source, target = tasks
    cfg = load_study_config("multibranch_physics", [
        "seeds=[0]", "k=[0,6]", "strategies=[zero_shot,finetune_head,align_mmd]", "n_boot=5",
        "task.trainer.epochs=1", "task.trainer.batch_size=16", "task.image_resolution=16",
        "task.model.head_hidden=[16]", "task.trainer.augment=null", "finetune.trainer.epochs=1", "finetune.min_steps=0", "align.trainer.epochs=1",
        "diagnostics.max_objects=12", "diagnostics.n_permutations=10", "plots=false"])
    cfg["source"] = {"path": source.config.data["path"]}
    cfg["targets"] = {"physics_b": {"path": target.config.data["path"]}}
    rows = run_transfer(cfg, results_dir=tmp_path / "results", data_dir=tmp_path / "data")
    got = {(r["target_name"], r["strategy"], r["k"]) for r in rows}
    assert got == {("source", "source", 0), ("physics_b", "zero_shot", 0), ("physics_b", "finetune_head", 6),
                   ("physics_b", "align_mmd", 0)}
    for r in rows:
        assert r["model"] == "cnn" and np.isfinite(r["value"]) and r["main_score"] == "log_mstar_rhalf/scatter_dex"
    head = next(r for r in rows if r["strategy"] == "finetune_head")
    assert head["info"]["trainable"] and all(n.startswith("net.head.") for n in head["info"]["trainable"])
    folder = tmp_path / "results" / "transfer" / "multibranch_mass" / "multibranch_physics"
    diag = json.loads((folder / "diagnostics.json").read_text())["0"]["physics_b"]
    assert diag["features"]["frechet"]["dim"] == 512 * 3  # the penultimate features of the three branches
