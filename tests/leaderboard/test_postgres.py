"""A team's board on a real PostgreSQL server: concurrent submitters racing to migrate a fresh
database (serialised by an advisory lock) and to record, and one file submitted at once by many.

The server's URL comes from ``SIM2OBS_TEST_PG_URL`` (``.ci/run`` installs Debian's postgresql,
starts a throw-away server and sets it). Under ``CI=true`` a missing server fails the test;
elsewhere the test is skipped with the reason.
"""
import multiprocessing as mp
import os
import uuid

import pytest

from sim2obs.leaderboard import Leaderboard, RunInfo, aggregate, rank, write_csv
from sim2obs.leaderboard.db import connect, head_revision, schema_revision, tables_match_models
from tests.toy_task import ToyTask, noisy_predictions

URL_ENV = "SIM2OBS_TEST_PG_URL"


def _admin_url() -> str:
    url = os.environ.get(URL_ENV)
    if not url:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but {URL_ENV} is not set: .ci/run must start the PostgreSQL server")
        pytest.skip(f"no PostgreSQL server: set {URL_ENV}=postgresql+psycopg://user@host:port/db "
                    "(.ci/run installs Debian's postgresql and starts one)")
    return url


@pytest.fixture
def pg_url():
    """A fresh, empty database on the test server (dropped afterwards)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = _admin_url()
    name = f"sim2obs_test_{uuid.uuid4().hex[:12]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - a configured but unreachable server is a failure
        pytest.fail(f"{URL_ENV} is set but the server cannot be used: {exc}")
    yield make_url(admin).set(database=name).render_as_string(hide_password=False)
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def _submit(args):
    url, set_path, data_dir, path, seed = args
    task = ToyTask({"data": {"path": set_path}}, data_dir=data_dir)
    board = Leaderboard(url=url, store_dir=data_dir + "/store")  # each process migrates on open
    return board.record(task, path, RunInfo(model_name="net", seed=seed)).id


def test_eight_concurrent_submitters_migrate_and_record_on_postgres(pg_url, tiny_galsim_set, tmp_path):
    toy = ToyTask({"data": {"path": str(tiny_galsim_set)}}, data_dir=tmp_path)
    paths = [str(noisy_predictions(toy, seed=s).save(tmp_path / f"p{s}.h5")) for s in range(8)]
    args = [(pg_url, str(tiny_galsim_set), str(tmp_path), p, s) for s, p in enumerate(paths)]
    with mp.get_context("fork").Pool(8) as pool:  # 8 processes racing on an empty database
        ids = pool.map(_submit, args)
    assert len(set(ids)) == 8
    engine, _ = connect(pg_url)
    assert schema_revision(engine) == head_revision() and tables_match_models(engine) == []
    board = Leaderboard(url=pg_url, store_dir=tmp_path / "store")
    assert sorted(r.seed for r in board.runs()) == list(range(8))
    assert all(len(r.metric_dict()) == 3 for r in board.runs())
    (entry,) = rank(aggregate(board.runs()))
    assert entry.n_seeds == 8 and entry.rank == 1


def test_one_csv_submitted_at_once_by_many_is_recorded_once_on_postgres(pg_url, tiny_galsim_set, tmp_path):
    toy = ToyTask({"data": {"path": str(tiny_galsim_set)}}, data_dir=tmp_path)
    csv = str(write_csv(noisy_predictions(toy, 0.1), tmp_path / "same.csv"))
    args = [(pg_url, str(tiny_galsim_set), str(tmp_path), csv, 0)] * 6
    with mp.get_context("fork").Pool(6) as pool:
        ids = pool.map(_submit, args)
    assert len(set(ids)) == 1
    board = Leaderboard(url=pg_url, store_dir=tmp_path / "store")
    assert len(board.runs()) == 1 and board.runs()[0].n_objects == len(toy.split_ids("test"))
    assert list((tmp_path / "store" / "incoming").glob("*")) == []
