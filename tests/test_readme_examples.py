"""README's Python blocks run as written (issue 11), so they cannot drift from the code.

Every ```python block of README.md is executed in a fresh interpreter, in a temporary working
folder, the way README documents for tests: ``SIM2OBS_OVERRIDES`` shrinks the quick presets to
tiny data (see ``load_task_config``), ``SIM2OBS_DATA`` points at a temporary data folder, and a
path written ``…-<hash>`` (a set that ``sim2obs generate`` printed) is replaced by a tiny
generated set. Nothing else in the text is changed."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)
HASH_PATH = re.compile(r"[\w./~-]*-<hash>")
TINY = ("data.n=120 data.stamp=32 trainer.epochs=1 task.metallicity.methods=[mean,random_forest,cnn] "
        "task.metallicity.random_forest.n_estimators=10 task.metallicity.tta=false")


def test_readme_has_python_blocks():
    assert len(BLOCKS) >= 3
    assert any("get_split" in b for b in BLOCKS) and any("check_model" in b for b in BLOCKS)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_galsim_set):
    root = tmp_path_factory.mktemp("readme")
    env = dict(os.environ, SIM2OBS_DATA=str(root / "sim2obs_data"), SIM2OBS_RESULTS=str(root / "results"),
               SIM2OBS_OVERRIDES=TINY, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    return {"root": root, "env": env, "set": tiny_galsim_set}


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index, workdir):
    code = HASH_PATH.sub(str(workdir["set"]), BLOCKS[index])
    res = subprocess.run([sys.executable, "-c", code], cwd=workdir["root"], env=workdir["env"],
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, f"README python block {index}:\n{BLOCKS[index]}\n{res.stderr[-4000:]}"
