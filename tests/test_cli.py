"""The sim2obs command line: generate, data, errors before work, help and sweeps."""
import json
import subprocess

from tests.conftest import CLI
from sim2obs import open_galaxy_set


def run(args, env, check=False):
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, check=check, timeout=300)


def test_generate_writes_set_with_resolved_config(tmp_path, cli_env):
    res = run(["generate", "simgen=galsim", "simgen.n=6", "simgen.stamp=16", "cluster=synchronous",
               "progress=false"], cli_env, check=True)
    sets = list((tmp_path / "data").glob("galsim_bulge_disk-*"))
    assert len(sets) == 1 and "objects: 6" in res.stdout
    gs = open_galaxy_set(sets[0])
    resolved = gs.provenance["resolved_config"]
    assert resolved["simgen"]["stamp"] == 16 and resolved["cluster"]["kind"] == "synchronous"
    info = run(["data", "info", str(sets[0])], cli_env, check=True)
    assert "images/image: 3x16x16 [g, r, i]" in info.stdout
    valid = run(["data", "validate", str(sets[0])], cli_env, check=True)
    assert gs.content_hash in valid.stdout


def test_bad_values_fail_before_any_work(tmp_path, cli_env):
    cases = {"simgen.n=-3": "simgen.n", "simgen.bands=[g,q]": "unknown band",
             "simgen.population.bulge_fraction_max=1.2": "B/T must lie in [0, 1]",
             "+simgen.stmap=64": "stmap", "cluster.n_workers=0": "cluster.n_workers"}
    for override, message in cases.items():
        res = run(["generate", override], cli_env)
        assert res.returncode == 2, (override, res.stderr)
        assert message in res.stderr, (override, res.stderr)
    typo = run(["generate", "simgen.stmap=64"], cli_env)  # Hydra refuses keys not in the config
    assert typo.returncode != 0 and "stmap" in typo.stderr
    assert not (tmp_path / "data").exists()


def test_help_lists_groups_and_commands(cli_env):
    res = run(["generate", "--help"], cli_env, check=True)
    assert "simgen: galsim" in res.stdout and "cluster: address, local, pbs, slurm, synchronous" in res.stdout
    top = run([], cli_env, check=True)
    assert "sim2obs generate" in top.stdout and "sim2obs run" in top.stdout
    wrong = run(["genrate"], cli_env)
    assert wrong.returncode == 2 and "did you mean 'generate'" in wrong.stderr


def test_multirun_sweep_makes_one_set_per_value(tmp_path, cli_env):
    run(["generate", "--multirun", "simgen.n=4,5", "simgen.stamp=16", "cluster=synchronous", "progress=false"],
        cli_env, check=True)
    sizes = sorted(json.loads((p / "manifest.json").read_text())["n_objects"]
                   for p in (tmp_path / "data").glob("galsim_bulge_disk-*"))
    assert sizes == [4, 5]
