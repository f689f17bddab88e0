"""Cost of a quick transfer study against its source training (pytest-benchmark;
``pytest benchmarks/test_bench_transfer.py -s``).

Group ``transfer-quick-study``: one seed of the quick study (``configs/transfer/bt_quick.yaml``:
zero-shot, three strategies over four values of k, recalibration; diagnostics off) against the
reference, the same study with ``zero_shot`` only — i.e. the source training it cannot avoid.
Both start from empty results folders on sets generated once beforehand, the reference timed
right before ours in the same round. The ratio (reference / ours) says what share of the study is
the source training; the CPU seconds of one seed, times three, are the quick study's cost on one
core (its training runs single-threaded, so on 2 free cores the wall time is about half the
CPU time of two seeds run in parallel with ``--multirun``).
"""
from __future__ import annotations

import time

import pytest
import torch

from sim2obs.tasks.transfer import run_transfer

ONE_SEED = ["seeds=[0]", "diagnostics.enabled=false"]
SOURCE_ONLY = [*ONE_SEED, "strategies=[zero_shot]"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("transfer-data")
    torch.set_num_threads(1)
    run_transfer("bt_quick", SOURCE_ONLY, results_dir=root / "warm", data_dir=root, log=lambda line: None)
    return root


def test_quick_study_against_its_source_training(benchmark, data_dir, tmp_path):
    rounds = {"n": 0}
    timings: dict[str, float] = {}

    def study(overrides, tag):
        rounds["n"] += 1
        t_wall, t_cpu = time.perf_counter(), time.process_time()
        rows = run_transfer("bt_quick", overrides, results_dir=tmp_path / f"{tag}-{rounds['n']}", data_dir=data_dir,
                            log=lambda line: None)
        timings[f"{tag}_wall"], timings[f"{tag}_cpu"] = time.perf_counter() - t_wall, time.process_time() - t_cpu
        return rows

    def setup():
        study(SOURCE_ONLY, "reference")
        return (), {}

    rows = benchmark.pedantic(lambda: study(ONE_SEED, "ours"), setup=setup, rounds=1, iterations=1)
    assert {r["strategy"] for r in rows} >= {"zero_shot", "finetune_full", "finetune_head", "target_only"}
    ratio = timings["reference_wall"] / timings["ours_wall"]
    benchmark.extra_info.update(timings, ratio=ratio, three_seed_cpu_minutes=3 * timings["ours_cpu"] / 60)
    print(f"\nRATIO source training / one-seed quick study: {ratio:.2f} ({timings['reference_wall']:.0f} s of "
          f"{timings['ours_wall']:.0f} s wall); one seed {timings['ours_cpu']:.0f} s CPU, three seeds "
          f"{3 * timings['ours_cpu'] / 60:.1f} CPU minutes", flush=True)
