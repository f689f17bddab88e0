"""Shared fixtures: tiny generated galaxy sets (seconds, not minutes)."""
import os
import sys
from pathlib import Path

import pytest

SYNC = {"kind": "synchronous"}
CLI = [sys.executable, "-m", "sim2obs.cli"]


def tiny_config(**overrides):
    cfg = {"n": 24, "stamp": 32, "shard_size": 10, "seed": 7}
    cfg.update(overrides)
    return cfg


@pytest.fixture(scope="session")
def tiny_galsim_set(tmp_path_factory) -> Path:
    from sim2obs.simgen.galsim_bulge_disk import generate

    return generate(tiny_config(), tmp_path_factory.mktemp("sets") / "tiny", cluster=SYNC, progress=False)


@pytest.fixture
def cli_env(tmp_path):
    env = dict(os.environ)
    env["SIM2OBS_DATA"] = str(tmp_path / "data")
    env["SIM2OBS_RESULTS"] = str(tmp_path / "results")
    env["PYTHONWARNINGS"] = "ignore"
    return env


def load_engine_predictions(path):
    """{"ids", "predictions"} of a predictions file written by the training engine."""
    from sim2obs.predictions import Predictions

    p = Predictions.load(path)
    return {"ids": p.ids, "predictions": p.values}
