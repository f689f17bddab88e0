"""``sim2obs list`` and ``sim2obs run --help`` (issue 11): what is here, and each key documented."""
import json
import subprocess

from tests.conftest import CLI


def test_list_shows_tasks_methods_presets_models_generators_and_sets(cli_env, tiny_galsim_set, tmp_path):
    res = subprocess.run([*CLI, "list", "--data-dir", str(tiny_galsim_set.parent)], env=cli_env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    for text in ("metallicity:", "presets: paper, quick", "random_forest", "cnn_gbm", "gampen_no_stn",
                 "presets: ablation, paper, quick", "resnet34", "configs/model/gampen.yaml", "galsim, tng",
                 str(tiny_galsim_set), "n=24"):
        assert text in out, text
    cat = json.loads(subprocess.run([*CLI, "list", "--json", "--data-dir", str(tmp_path / "empty")], env=cli_env,
                                    capture_output=True, text=True, timeout=300).stdout)
    assert {t["name"] for t in cat["tasks"]} == {"ml_ratio", "metallicity", "bt_posterior", "multibranch_mass"}
    assert cat["data_sets"] == [] and "gampen" in {m["name"] for m in cat["models"]}


def test_run_help_documents_every_key(cli_env):
    res = subprocess.run([*CLI, "run", "--help"], env=cli_env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    # the comments of the presets are the keys' documentation; the replace rule and task shapes are explained
    assert "stretch: 0.5         # weighted nanomaggies" in out
    assert "n_estimators: 200" in out and "# the custom CNN needs >= 42 px" in out
    assert "${task_spec:in_channels}" in out and "REPLACED" in out
    assert "configs/task/multibranch_mass/quick.yaml" in out


def test_generate_help_documents_every_key(cli_env):
    res = subprocess.run([*CLI, "generate", "--help"], env=cli_env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "stamp: 64              # pixels per side" in res.stdout
    assert "configs/simgen/tng.yaml" in res.stdout and "cluster: address, local, pbs, slurm, synchronous" in res.stdout
