"""Ranking and aggregation: one entry per (model, configuration), seeds aggregated as
mean ± standard deviation, simulated and real test data side by side.

An entry is ranked only with at least :data:`MIN_SEEDS_RANKED` seeds on the simulated test
data (the board's rules); others are listed below the ranked ones, marked unranked.
"""
from __future__ import annotations

import csv
import io
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from sim2obs.leaderboard.board import MIN_SEEDS_RANKED
from sim2obs.tasks.base import text_table
from sim2obs.tasks.metrics import ranking_loss

KINDS = ("sim", "real")


@dataclass
class Stat:
    mean: float
    std: float
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.4g} ± {self.std:.2g}" if self.n > 1 else f"{self.mean:.4g}"


@dataclass
class Entry:
    """One model configuration on one task. ``metrics[kind][key]``: the :class:`Stat` over
    seeds on that kind of test data (``sim`` or ``real``)."""

    task: str
    model_name: str
    config_hash: str
    main_score: str
    run_ids: list[int] = field(default_factory=list)
    seeds: dict[str, list] = field(default_factory=dict)
    metrics: dict[str, dict[str, Stat]] = field(default_factory=dict)
    rank: int | None = None
    source: str = ""

    @property
    def n_seeds(self) -> int:
        return len(self.seeds.get("sim", []))

    def main(self, kind: str = "sim") -> Stat | None:
        return self.metrics.get(kind, {}).get(self.main_score)

    @property
    def gap(self) -> float | None:
        """Sim-to-real gap of the main score: real − sim (None without both)."""
        sim, real = self.main("sim"), self.main("real")
        return None if sim is None or real is None else real.mean - sim.mean


def _stat(values: Sequence[float]) -> Stat:
    a = np.asarray(values, dtype=float)
    return Stat(float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0, len(a))


def aggregate(runs: Iterable) -> list[Entry]:
    """Entries (unranked, in first-seen order) from run records of one task."""
    groups: dict[tuple, list] = defaultdict(list)
    for run in runs:
        groups[(run.task, run.model_name, run.config_hash)].append(run)
    entries = []
    for (task, model, chash), members in groups.items():
        e = Entry(task=task, model_name=model, config_hash=chash, main_score=members[0].main_score,
                  run_ids=[r.id for r in members], source=members[0].source)
        for kind in KINDS:
            sel = [r for r in members if r.data_kind == kind]
            if not sel:
                continue
            e.seeds[kind] = [r.seed for r in sel]
            keys = sorted(set().union(*(r.metric_dict() for r in sel)))
            e.metrics[kind] = {k: _stat([r.metric_dict()[k] for r in sel if k in r.metric_dict()]) for k in keys}
        entries.append(e)
    return entries


def rank(entries: list[Entry]) -> list[Entry]:
    """Ranked entries first (by the simulated-test main score, best first; ties keep order),
    then unranked ones (fewer than MIN_SEEDS_RANKED seeds, or no simulated result)."""
    def loss(e: Entry) -> float:
        m = e.main("sim") or e.main("real")
        return ranking_loss(e.main_score, m.mean) if m is not None else float("inf")

    ranked = sorted((e for e in entries if e.n_seeds >= MIN_SEEDS_RANKED), key=loss)
    unranked = sorted((e for e in entries if e.n_seeds < MIN_SEEDS_RANKED), key=loss)
    for i, e in enumerate(ranked, 1):
        e.rank = i
    for e in unranked:
        e.rank = None
    return ranked + unranked


def table_rows(entries: Sequence[Entry], metric_keys: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """Header and string cells: rank, model, seeds, main score (sim, real, gap), every metric."""
    has_real = any("real" in e.metrics for e in entries)
    metric_keys = [k for k in metric_keys if not entries or k != entries[0].main_score]  # shown first already
    header = ["rank", "model", "seeds", f"{entries[0].main_score if entries else 'score'} (sim)"]
    if has_real:
        header += ["real", "gap (real-sim)"]
    header += [k for k in metric_keys]
    rows = []
    for e in entries:
        main = e.main("sim")
        row = [str(e.rank) if e.rank else "-", e.model_name, str(e.n_seeds), str(main) if main else ""]
        if has_real:
            real = e.main("real")
            row += [str(real) if real else "", f"{e.gap:+.4g}" if e.gap is not None else ""]
        sim = e.metrics.get("sim", {})
        row += [str(sim[k]) if k in sim else "" for k in metric_keys]
        rows.append(row)
    return header, rows


def to_text(entries: Sequence[Entry], metric_keys: Sequence[str]) -> str:
    return text_table(*table_rows(entries, metric_keys))


def to_markdown(entries: Sequence[Entry], metric_keys: Sequence[str]) -> str:
    header, rows = table_rows(entries, metric_keys)
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def to_csv(entries: Sequence[Entry], metric_keys: Sequence[str]) -> str:
    """Machine-readable: one row per entry and kind, mean and std columns per metric."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["task", "rank", "model", "config_hash", "kind", "n_seeds", "run_ids",
                *[f"{k}_{s}" for k in metric_keys for s in ("mean", "std")]])
    for e in entries:
        for kind, stats in e.metrics.items():
            w.writerow([e.task, e.rank or "", e.model_name, e.config_hash, kind, len(e.seeds[kind]),
                        " ".join(map(str, e.run_ids)),
                        *[x for k in metric_keys for x in ((stats[k].mean, stats[k].std) if k in stats else ("", ""))]])
    return buf.getvalue()
