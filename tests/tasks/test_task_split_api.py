"""One accessor for a task's data (issue 11): ``task.get_split(split)`` gives ids, the inputs the
task's networks receive and (train/val only) labels, as arrays and as a torch Dataset."""
import numpy as np
import pytest
import torch

from sim2obs.errors import Sim2obsValueError
from sim2obs.tasks import TaskSplit, build_task, load_task_config

GALSIM = ["data.n=60", "data.stamp=32", "data.seed=5"]
OVERRIDES = {
    "metallicity": GALSIM,
    # label_noise=false: the labels are then the catalogue's M/L (their noise is tested in test_ml_ratio_sample)
    "ml_ratio": GALSIM + ["image_size=null", "morphology_cnns.cnn1.image_size=null", "label_noise=false"],
    "bt_posterior": ["data.n=40", "data.stamp=32"],
    "multibranch_mass": ["data.source.minisim.n_galaxies=12", "data.image_px=40", "data.rebin_px=[20]",
                         "+data.kin_px=16", "+data.selection.log_mstar_30kpc_min=9.3", "image_resolution=20"],
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("split_api")


@pytest.mark.parametrize("name", sorted(OVERRIDES))
def test_get_split_gives_ids_inputs_and_labels(name, data_dir):
    task = build_task(name, load_task_config(name, "quick", OVERRIDES[name]), data_dir=data_dir)
    spec = task.spec()
    train, test = task.get_split("train"), task.get_split("test")
    assert isinstance(train, TaskSplit) and train.targets == task.targets
    gs = task.galaxy_set

    def rows(split, values):  # a task that selects a sample (metallicity: star-forming galaxies) says which rows
        sel = task.selection(split) if hasattr(task, "selection") else None
        return values if sel is None else values[sel]

    assert np.array_equal(train.ids, rows("train", gs.column("id", "train"))) and train.ids.dtype == np.int64
    assert np.array_equal(test.ids, rows("test", gs.column("id", "test")))
    # labels of train/val in target order; the evaluation split's are held out
    assert train.labels.shape == (len(train), len(task.targets))
    assert np.array_equal(train.labels[:, 0], rows("train", gs.column(task.targets[0], "train")))
    assert test.labels is None
    # the images are what the networks get: the spec's shapes
    images = {k: v for k, v in train.inputs.items() if v.ndim == 4}
    assert {k: v.shape[1:] for k, v in images.items()} == {k: tuple(s) for k, s in spec.input_shapes.items()}
    assert all(v.dtype == np.float32 and len(v) == len(train) and np.isfinite(v).all() for v in images.values())
    # as a torch Dataset with the engine's item contract
    ds = train.torch_dataset()
    item = ds[0]
    assert len(ds) == len(train) and item["id"] == int(train.ids[0])
    assert torch.allclose(item["target"], torch.as_tensor(train.labels[0], dtype=torch.float32))
    assert set(item["inputs"]) == set(images)
    assert test.torch_dataset()[0]["target"].shape == (0,)
    standardised = (train.labels - train.labels.mean(0)) / train.labels.std(0)
    assert torch.allclose(train.torch_dataset(standardised)[1]["target"],
                          torch.as_tensor(standardised[1], dtype=torch.float32))
    with pytest.raises(Sim2obsValueError, match="no split"):
        task.get_split("tset")
