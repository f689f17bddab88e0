"""Task tests train tiny networks: one intra-op thread is faster on the few shared CPU cores.
:func:`run_recording_reads` runs a task while recording the catalogue columns its methods read; :func:`task_on_set`
builds a task at its quick preset on a given galaxy set."""
from dataclasses import replace

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_recording_reads(task, out_dir):
    """``task.run(out_dir)`` while recording every ``(method, column, split)`` that a method reads
    from the galaxy set's catalogue. Returns ``(rows, reads, log lines)``."""
    gs = task.prepare()
    reads, state = [], {"in_method": None}
    column = gs.column

    def recording_column(name, split=None):
        if state["in_method"]:
            reads.append((state["in_method"], name, split))
        return column(name, split)

    plain = task.methods

    def wrapped():
        def wrap(m):
            def run(t, workdir):
                state["in_method"] = m.name
                try:
                    return m.run(t, workdir)
                finally:
                    state["in_method"] = None
            return replace(m, run=run)
        return [wrap(m) for m in plain()]

    gs.column, task.methods = recording_column, wrapped
    logs = []
    try:
        rows = task.run(out_dir, log=logs.append)
    finally:
        gs.column, task.methods = column, plain
    return rows, reads, logs


def task_on_set(name: str, set_path, data_dir, overrides=()):
    """Task ``name`` at its quick preset with ``overrides``, reading the galaxy set at ``set_path``."""
    from sim2obs.tasks import build_task, load_task_config
    from tests.conftest import SYNC

    cfg = load_task_config(name, "quick", list(overrides))
    cfg["data"] = {"path": str(set_path)}
    return build_task(name, cfg, data_dir=data_dir, cluster=SYNC)
