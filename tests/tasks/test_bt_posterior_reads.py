"""Label hygiene of bt_posterior: every catalogue column each method reads is recorded (the same
recorder as the metallicity and multibranch_mass tests), and no method reads a label of the test
split (or of every split at once, which includes the test split)."""
import numpy as np
import pytest

from sim2obs.tasks import build_task, load_task_config
from tests.conftest import SYNC
from tests.tasks.conftest import run_recording_reads

TINY = ["data.n=60", "data.stamp=64", "++data.shard_size=60", "trainer.epochs=1", "trainer.batch_size=16",
        "dropout_rates=[0.1,0.3]", "fixed_dropout=0.1", "n_samples=8", "val_samples=8", "stn_plot_galaxies=2",
        "plots=false"]
#: Columns a method may read for the test split: observables, never labels.
OBSERVABLES = {"id", "n_secondary"}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    root = tmp_path_factory.mktemp("bt_reads")
    task = build_task("bt_posterior", load_task_config("bt_posterior", "quick", TINY), data_dir=root / "data",
                      cluster=SYNC)
    rows, reads, _ = run_recording_reads(task, root / "results")
    return {"task": task, "rows": rows, "reads": reads}


def test_every_method_is_recorded_and_reads_training_labels(recorded):
    reads, task = recorded["reads"], recorded["task"]
    methods = [r["method"] for r in recorded["rows"]]
    assert set(methods) == {"prior", "gampen_fixed_dropout", "gampen_no_stn", "gampen"}
    for method in methods:
        seen = {(c, s) for m, c, s in reads if m == method}
        assert seen, f"the recorder saw no read of {method}"
        # each method learns from training labels (the recorder sees real reads, not nothing)
        assert {(t, "train") for t in task.targets} <= seen, (method, sorted(seen))


def test_no_method_reads_a_test_label(recorded):
    task = recorded["task"]
    labels = set(task.label_columns()) | set(task.galaxy_set.schema.column_names) - OBSERVABLES
    leaks = [(m, c, s) for m, c, s in recorded["reads"]
             if s not in ("train", "val") and c in labels]
    assert leaks == [], f"methods read label columns of the test split (or of all splits): {leaks}"
    assert all(np.isfinite(r["value"]) for r in recorded["rows"])
