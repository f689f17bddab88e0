"""``cluster=address``: `sim2obs generate` sends its shards to an existing Dask scheduler (a
LocalCluster started here on 127.0.0.1), and the set it writes is the same, byte for byte, as an
in-process run with the same seed."""
import subprocess

import pytest
from distributed import Client, LocalCluster

from sim2obs import open_galaxy_set
from sim2obs.provenance import file_sha256
from tests.conftest import CLI

ARGS = ["simgen.n=12", "simgen.stamp=16", "simgen.shard_size=4", "simgen.seed=3", "progress=false"]


@pytest.fixture
def scheduler():
    """A scheduler with one worker process (of one thread) on the loopback interface."""
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        yield cluster.scheduler_address, client


def _shards_run(client):
    """Names of the task prefixes the scheduler has run (render_shard, ...)."""
    return client.run_on_scheduler(lambda dask_scheduler: sorted(dask_scheduler.task_prefixes))


def test_generate_runs_its_shards_on_an_existing_scheduler(scheduler, cli_env, tmp_path):
    address, client = scheduler
    assert address.startswith("tcp://127.0.0.1:")
    assert _shards_run(client) == []
    out = tmp_path / "via_address"
    res = subprocess.run([*CLI, "generate", "cluster=address", f"cluster.address={address}", *ARGS, f"out={out}"],
                         env=cli_env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    prefixes = _shards_run(client)
    assert any("render" in p or "shard" in p for p in prefixes), prefixes  # the scheduler did the work
    gs = open_galaxy_set(out, check="full")
    assert gs.n == 12
    local = tmp_path / "in_process"
    res = subprocess.run([*CLI, "generate", "cluster=synchronous", *ARGS, f"out={local}"], env=cli_env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert [file_sha256(p) for p in sorted(out.glob("part-*.h5"))] == \
        [file_sha256(p) for p in sorted(local.glob("part-*.h5"))]


def test_an_unreachable_address_is_an_error_not_a_hang(cli_env, tmp_path):
    env = dict(cli_env, DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT="3s")  # fail fast (default 30 s)
    res = subprocess.run([*CLI, "generate", "cluster=address", "cluster.address=tcp://127.0.0.1:9", *ARGS,
                          f"out={tmp_path / 'x'}"], env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode != 0
    assert not (tmp_path / "x" / "manifest.json").exists()
