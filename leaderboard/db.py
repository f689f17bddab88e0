"""Leaderboard storage: SQLAlchemy tables, versioned with Alembic migrations.

The default board is an SQLite file (``<results_dir>/leaderboard.sqlite``, nothing to start);
any SQLAlchemy URL (``postgresql+psycopg://user@host/board``) serves a board shared by a team.
:func:`connect` creates or upgrades the schema to the newest migration before use.

SQLite specifics: WAL journal (readers never block the writer), a 60 s busy timeout, and
``BEGIN IMMEDIATE`` transactions so that concurrent submitters queue for the write lock
instead of failing on a lock upgrade.
"""
from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from sqlalchemy import (JSON, DateTime, Float, ForeignKey, Integer, String, UniqueConstraint, create_engine, event,
                        inspect)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, sessionmaker

from sim2obs.errors import Sim2obsValueError

MIGRATIONS = Path(__file__).with_name("migrations")
DEFAULT_DB_NAME = "leaderboard.sqlite"


class Base(DeclarativeBase):
    pass


class Run(Base):
    """One evaluated run: a model's predictions for one task split, with everything needed to
    trust and reproduce its numbers."""

    __tablename__ = "runs"
    __table_args__ = (UniqueConstraint("task", "split", "data_content_hash", "predictions_sha256",
                                       name="uq_runs_predictions"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    submitter: Mapped[str] = mapped_column(String(200))
    task: Mapped[str] = mapped_column(String(100), index=True)
    task_version: Mapped[str] = mapped_column(String(50))
    split: Mapped[str] = mapped_column(String(100))
    n_objects: Mapped[int | None] = mapped_column(Integer, nullable=True)  # objects in the scored split
    data_name: Mapped[str] = mapped_column(String(200))
    data_content_hash: Mapped[str] = mapped_column(String(64))
    data_kind: Mapped[str] = mapped_column(String(10))  # "sim" | "real"
    model_name: Mapped[str] = mapped_column(String(200), index=True)
    model_version: Mapped[str | None] = mapped_column(String(100), nullable=True)
    model_target: Mapped[str | None] = mapped_column(String(300), nullable=True)
    n_parameters: Mapped[int | None] = mapped_column(Integer, nullable=True)
    config_hash: Mapped[str] = mapped_column(String(64))
    config: Mapped[dict] = mapped_column(JSON)
    seed: Mapped[int | None] = mapped_column(Integer, nullable=True)
    main_score: Mapped[str] = mapped_column(String(100))
    main_value: Mapped[float] = mapped_column(Float)
    predictions_sha256: Mapped[str] = mapped_column(String(64))  # of the file as submitted
    stored_sha256: Mapped[str] = mapped_column(String(64))  # of the stored copy (HDF5)
    predictions_path: Mapped[str] = mapped_column(String(500))
    train_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    eval_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    hardware: Mapped[dict] = mapped_column(JSON)
    package_versions: Mapped[dict] = mapped_column(JSON)
    sim2obs_version: Mapped[str] = mapped_column(String(50))
    git_commit: Mapped[str | None] = mapped_column(String(64), nullable=True)
    source: Mapped[str] = mapped_column(String(20))  # "benchmark" (a suite run) | "submission" (a file)
    # bootstrap (issue 15; None on runs recorded before it): the task's resamples of the scored objects
    n_bootstrap: Mapped[int | None] = mapped_column(Integer, nullable=True)
    bootstrap_seed: Mapped[int | None] = mapped_column(Integer, nullable=True)
    main_replicates: Mapped[list | None] = mapped_column(JSON, nullable=True)  # (n_bootstrap,) main score

    metrics: Mapped[list["Metric"]] = relationship(back_populates="run", cascade="all, delete-orphan",
                                                   lazy="selectin")

    def metric_dict(self) -> dict[str, float]:
        return {m.key: m.value for m in self.metrics}

    def error_dict(self) -> dict[str, float]:
        """1σ bootstrap error of each metric that has one (recomputed by the board)."""
        return {m.key: m.error for m in self.metrics if m.error is not None}


class Metric(Base):
    """One metric value of a run (every metric of the task, recomputed by the suite)."""

    __tablename__ = "metrics"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[float] = mapped_column(Float)
    error: Mapped[float | None] = mapped_column(Float, nullable=True)  # 1σ bootstrap error on the test set

    run: Mapped[Run] = relationship(back_populates="metrics")


class TransferRun(Base):
    """One point of a transfer study (model, source set, target set, strategy, k, seed), its
    metrics recomputed by the board from the stored predictions and the set it was scored on
    (``data_content_hash``: the source set for ``domain == "source"`` rows, else the target)."""

    __tablename__ = "transfer_runs"
    __table_args__ = (UniqueConstraint("task", "study", "target_name", "strategy", "k", "seed", "data_content_hash",
                                       "predictions_sha256", name="uq_transfer_runs_point"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    submitter: Mapped[str] = mapped_column(String(200))
    task: Mapped[str] = mapped_column(String(100), index=True)
    task_version: Mapped[str] = mapped_column(String(50))
    study: Mapped[str] = mapped_column(String(200))
    model_name: Mapped[str] = mapped_column(String(200))
    model_key: Mapped[str] = mapped_column(String(64))  # the model and its settings, without data and seed
    config: Mapped[dict] = mapped_column(JSON)  # the study's task config (data excluded)
    seed: Mapped[int] = mapped_column(Integer)
    strategy: Mapped[str] = mapped_column(String(100))
    k: Mapped[int] = mapped_column(Integer)
    domain: Mapped[str] = mapped_column(String(10))  # "source" | "target"
    split: Mapped[str] = mapped_column(String(100))
    target_name: Mapped[str] = mapped_column(String(200))  # ladder name, or "source"
    source_name: Mapped[str] = mapped_column(String(200))
    source_content_hash: Mapped[str] = mapped_column(String(64))
    source_path: Mapped[str] = mapped_column(String(500))
    target_data_name: Mapped[str] = mapped_column(String(200))
    target_content_hash: Mapped[str] = mapped_column(String(64))
    target_path: Mapped[str] = mapped_column(String(500))
    data_content_hash: Mapped[str] = mapped_column(String(64))  # the set the predictions were scored on
    n_objects: Mapped[int] = mapped_column(Integer)
    main_score: Mapped[str] = mapped_column(String(100))
    main_value: Mapped[float] = mapped_column(Float)
    errors: Mapped[dict] = mapped_column(JSON)  # 1σ bootstrap errors, recomputed (before 0004: as reported)
    n_bootstrap: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the resamples behind ``errors``
    bootstrap_seed: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # (n_bootstrap,) main score on every resample (0005; None before it): pairs strategies of one target and seed
    main_replicates: Mapped[list | None] = mapped_column(JSON, nullable=True)
    predictions_sha256: Mapped[str] = mapped_column(String(64))
    predictions_path: Mapped[str] = mapped_column(String(500))  # the stored copy
    study_path: Mapped[str] = mapped_column(String(500))
    folder: Mapped[str] = mapped_column(String(500))  # the point's folder, relative to the study folder
    wall_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    sim2obs_version: Mapped[str] = mapped_column(String(50))
    git_commit: Mapped[str | None] = mapped_column(String(64), nullable=True)

    metrics: Mapped[list["TransferMetric"]] = relationship(back_populates="run", cascade="all, delete-orphan",
                                                           lazy="selectin")

    def metric_dict(self) -> dict[str, float]:
        return {m.key: m.value for m in self.metrics}


class TransferMetric(Base):
    """One recomputed metric value of a transfer run."""

    __tablename__ = "transfer_metrics"

    transfer_run_id: Mapped[int] = mapped_column(ForeignKey("transfer_runs.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[float] = mapped_column(Float)

    run: Mapped[TransferRun] = relationship(back_populates="metrics")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def default_url(results_dir: str | os.PathLike) -> str:
    return f"sqlite:///{Path(results_dir).resolve() / DEFAULT_DB_NAME}"


def _sqlite_path(url: str) -> Path | None:
    from sqlalchemy.engine import make_url

    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    return Path(u.database)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # let SQLAlchemy's begin event issue BEGIN
        cur = dbapi_connection.cursor()
        cur.execute("PRAGMA busy_timeout=60000")  # first: everything below may wait for other writers
        cur.execute("PRAGMA foreign_keys=ON")
        # WAL is a property of the file, set once. Switching to it needs an exclusive lock and can fail
        # at once with "database is locked" (no busy handler) while another submitter writes, so a
        # connection that finds the file in WAL already leaves it alone, and the switch is retried.
        deadline = time.monotonic() + 60.0
        while cur.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            try:
                cur.execute("PRAGMA journal_mode=WAL")
            except sqlite3.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE")


@contextmanager
def _migration_lock(sqlite_path: Path | None) -> Iterator[None]:
    """Serialise schema upgrades of one SQLite file across processes (a lock file beside it)."""
    if sqlite_path is None:
        yield
        return
    sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    with open(sqlite_path.with_name(sqlite_path.name + ".migrate.lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _alembic_config(connection):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def schema_revision(engine) -> str | None:
    """The Alembic revision the database (an engine, or an open connection) is at (None: empty
    database)."""
    from alembic.runtime.migration import MigrationContext

    if not isinstance(engine, Engine):
        return MigrationContext.configure(engine).get_current_revision()
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config(None)).get_current_head()


#: Key of the PostgreSQL advisory lock that serialises schema upgrades of one database.
PG_MIGRATION_LOCK_KEY = 0x73696D326F6273  # "sim2obs"


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply the migrations up to ``revision`` (idempotent; safe with concurrent processes:
    a lock file beside an SQLite file, a transaction-scoped ``pg_advisory_xact_lock`` on
    PostgreSQL, taken before the revision is read, so one process migrates and the others
    then find the schema at head)."""
    from alembic import command

    if revision == "head" and schema_revision(engine) == head_revision():
        return  # the common case: no lock needed
    with _migration_lock(_sqlite_path(str(engine.url))):
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PG_MIGRATION_LOCK_KEY})")
            if revision == "head" and schema_revision(conn) == head_revision():
                return
            command.upgrade(_alembic_config(conn), revision)


def connect(url: str, create: bool = True) -> tuple[Engine, sessionmaker]:
    """Open the board at ``url``, upgrading its schema to the newest migration (``create``:
    also create an absent SQLite file). Returns the engine and a session factory."""
    path = _sqlite_path(url)
    if path is not None and not path.exists() and not create:
        raise Sim2obsValueError("no leaderboard database at this path", value=str(path))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, future=True)
    if engine.url.get_backend_name() == "sqlite":
        _configure_sqlite(engine)
    upgrade(engine)
    return engine, sessionmaker(engine, expire_on_commit=False)


def tables_match_models(engine: Engine) -> list[str]:
    """Differences between the migrated schema and the ORM models (empty: they agree)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    return [str(d) for d in diff]


__all__ = ["Base", "Run", "Metric", "TransferRun", "TransferMetric",
           "connect", "upgrade", "default_url", "schema_revision", "head_revision",
           "tables_match_models", "utcnow", "inspect"]
