"""Every registered task, every preset: the config composes, the task builds, its metadata holds."""
import pytest

from sim2obs.errors import ConfigError, UnknownNameError
from sim2obs.tasks import TASKS, build_task, load_task_config
from sim2obs.tasks.metrics import HIGHER_IS_BETTER
from sim2obs.tasks.registry import presets


def test_every_task_has_the_quick_and_paper_presets():
    for name in TASKS.names():
        assert {"quick", "paper"} <= set(presets(name)), name


@pytest.mark.parametrize("name, preset", [(n, p) for n in TASKS.names() for p in presets(n)])
def test_every_preset_composes_and_builds(name, preset, tmp_path):
    task = build_task(name, load_task_config(name, preset), data_dir=tmp_path)
    meta = task.metadata
    assert meta.name == name and meta.citation and meta.description
    methods = [m.name for m in task.methods()]
    assert methods and len(set(methods)) == len(methods)
    assert any(m.kind == "model" for m in task.methods())
    assert set(meta.paper) <= set(methods), "paper numbers must be keyed by method names"
    for key in meta.metrics:  # every metric has a ranking direction
        assert key.rsplit("/", 1)[-1] in HIGHER_IS_BETTER, key
    if "path" not in task.config.data:
        task.simgen_config()  # the preset's data settings are a valid generator config
    assert not list(tmp_path.iterdir()), "building a task must not generate data"


def test_unknown_task_and_config_typos_are_refused():
    with pytest.raises(UnknownNameError, match="did you mean 'metallicity'"):
        TASKS.get("metalicity")
    with pytest.raises(ConfigError, match="task.metallicity"):
        build_task("metallicity", {**load_task_config("metallicity", "quick"), "epohcs": 3})
