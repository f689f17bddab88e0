"""Ranking and aggregation: one entry per model and method settings, each test set a column.

An *entry* is a model with its method settings, keyed *without* the data it was run on
(:func:`model_key`), so the runs of one model on simulated and on real test data meet on one
row. A *column* is one test set (:class:`TestSet`: kind, data name, content hash, split and
number of objects); an entry's runs on that test set aggregate over seeds as mean ± sample
standard deviation, and the seeds are counted per column (distinct seeds, not runs).

Entries are ranked only against entries scored on the same test set: the board's ranking
column is the simulated test set that most entries were scored on. A ranked entry needs
:data:`MIN_SEEDS_RANKED` distinct seeds there, or a method declared deterministic (its
output does not depend on the seed, e.g. the ``mean`` baseline). Every real test set is a
further column with its sim-to-real gap (real − sim of the main score). The papers' own
numbers (on their real data) are listed as reference rows, never ranked.
"""
from __future__ import annotations

import csv
import io
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from sim2obs.leaderboard.board import MIN_SEEDS_RANKED
from sim2obs.provenance import stable_hash
from sim2obs.tasks.base import text_table
from sim2obs.tasks.metrics import ranking_loss

KINDS = ("sim", "real")
#: Config keys that bind a run to its data or seed, not to the model (dropped by :func:`model_key`).
BINDING_KEYS = frozenset({"seed", "data", "eval_split", "split", "methods", "plots", "preset", "overrides",
                          "code_url", "notes"})


@dataclass
class Stat:
    mean: float
    std: float
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.4g} ± {self.std:.2g}" if self.n > 1 else f"{self.mean:.4g}"


@dataclass(frozen=True)
class TestSet:
    """The data a column was scored on."""

    __test__ = False  # not a pytest class

    kind: str  # "sim" | "real"
    name: str
    content_hash: str
    split: str
    n: int | None

    def describe(self) -> str:
        n = "?" if self.n is None else self.n
        return f"{self.kind}: {self.name} #{self.content_hash[:8]} {self.split} n={n}"


@dataclass
class Column:
    """An entry's runs on one test set: ``metrics[key]`` is the :class:`Stat` over them."""

    run_ids: list[int] = field(default_factory=list)
    seeds: list = field(default_factory=list)
    metrics: dict[str, Stat] = field(default_factory=dict)

    @property
    def n_seeds(self) -> int:
        """Distinct seeds (runs repeated with one seed count once; unknown seeds count 0)."""
        return len({s for s in self.seeds if s is not None})


@dataclass
class Entry:
    """One model with its method settings on one task, with one :class:`Column` per test set."""

    task: str
    model_name: str
    config_hash: str  # the model key (:func:`model_key`): the same for sim and real runs
    main_score: str
    run_ids: list[int] = field(default_factory=list)
    columns: dict[TestSet, Column] = field(default_factory=dict)
    rank: int | None = None
    source: str = ""
    deterministic: bool = False
    primary: TestSet | None = None  # the ranking column (set by :func:`rank`)
    reference: str | None = None  # a paper's number: "<metric> = <value>  <note>" (reference rows)

    def column(self, kind: str = "sim") -> Column | None:
        """The ranking column for ``sim`` (else the sim set with most seeds), the first real set
        for ``real``."""
        if kind == "sim" and self.primary is not None and self.primary.kind == "sim":
            return self.columns.get(self.primary)
        sets = sorted((t for t in self.columns if t.kind == kind), key=lambda t: (-len(self.columns[t].run_ids),
                                                                                 t.name, t.content_hash))
        return self.columns[sets[0]] if sets else None

    @property
    def metrics(self) -> dict[str, dict[str, Stat]]:
        out = {}
        for kind in KINDS:
            col = self.column(kind)
            if col is not None:
                out[kind] = col.metrics
        return out

    @property
    def n_seeds(self) -> int:
        col = self.column("sim") if self.primary is None else self.columns.get(self.primary)
        return col.n_seeds if col else 0

    def main(self, kind: str = "sim") -> Stat | None:
        col = self.column(kind)
        return None if col is None else col.metrics.get(self.main_score)

    def main_on(self, test_set: TestSet) -> Stat | None:
        col = self.columns.get(test_set)
        return None if col is None else col.metrics.get(self.main_score)

    @property
    def gap(self) -> float | None:
        """Sim-to-real gap of the main score: real − sim (None without both)."""
        sim, real = self.main("sim"), self.main("real")
        return None if sim is None or real is None else real.mean - sim.mean


def _stat(values: Sequence[float]) -> Stat:
    a = np.asarray(values, dtype=float)
    return Stat(float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0, len(a))


def model_key(config: Mapping[str, Any] | None, fallback: str = "") -> str:
    """Identity of a model and its method settings, without its data binding or seed: the
    same for a model's runs on simulated and on real test sets. A submission (its config has
    ``model``) is keyed by what the submitter declared about the model, not by the task
    settings that only chose the data."""
    if not config:
        return fallback

    def strip(obj):
        if isinstance(obj, Mapping):
            return {k: strip(v) for k, v in obj.items() if k not in BINDING_KEYS}
        return obj

    cfg = dict(config)
    if "model" in cfg:
        cfg.pop("task_config", None)
    cfg.pop("deterministic", None)
    return stable_hash(strip(cfg), 16)


def test_set_of(run) -> TestSet:
    return TestSet(run.data_kind, getattr(run, "data_name", "") or "", getattr(run, "data_content_hash", "") or "",
                   getattr(run, "split", "test") or "test", getattr(run, "n_objects", None))


def is_deterministic(run) -> bool:
    return bool((getattr(run, "config", None) or {}).get("deterministic", False))


def aggregate(runs: Iterable) -> list[Entry]:
    """Entries (unranked, in first-seen order) from run records of one task."""
    groups: dict[tuple, list] = defaultdict(list)
    for run in runs:
        key = model_key(getattr(run, "config", None), fallback=run.config_hash)
        groups[(run.task, run.model_name, key)].append(run)
    entries = []
    for (task, model, key), members in groups.items():
        e = Entry(task=task, model_name=model, config_hash=key, main_score=members[0].main_score,
                  run_ids=[r.id for r in members], source=members[0].source,
                  deterministic=all(is_deterministic(r) for r in members))
        by_set: dict[TestSet, list] = defaultdict(list)
        for r in members:
            by_set[test_set_of(r)].append(r)
        for ts, sel in by_set.items():
            keys = sorted(set().union(*(r.metric_dict() for r in sel)))
            e.columns[ts] = Column(run_ids=[r.id for r in sel], seeds=[r.seed for r in sel], metrics={
                k: _stat([r.metric_dict()[k] for r in sel if k in r.metric_dict()]) for k in keys})
        entries.append(e)
    return entries


def ranking_set(entries: Sequence[Entry]) -> TestSet | None:
    """The test set entries are ranked on: the simulated set most entries were scored on (ties:
    more objects, then name); a real set only when no entry has a simulated result."""
    counts: dict[TestSet, int] = defaultdict(int)
    for e in entries:
        if e.reference is None:
            for ts in e.columns:
                counts[ts] += 1
    if not counts:
        return None
    return min(counts, key=lambda t: (t.kind != "sim", -counts[t], -(t.n or 0), t.name, t.content_hash))


def is_rankable(e: Entry, on: TestSet | None) -> bool:
    col = e.columns.get(on) if on is not None else None
    if col is None:
        return False
    return e.deterministic or col.n_seeds >= MIN_SEEDS_RANKED


def rank(entries: list[Entry]) -> list[Entry]:
    """Ranked entries first (by the main score on the ranking test set, best first; ties keep
    order), then unranked ones (fewer than MIN_SEEDS_RANKED distinct seeds there and not
    deterministic, or no result on that test set), then reference rows."""
    refs = [e for e in entries if e.reference is not None]
    entries = [e for e in entries if e.reference is None]
    on = ranking_set(entries)

    def loss(e: Entry) -> float:
        m = e.main_on(on) if on is not None else None
        return ranking_loss(e.main_score, m.mean) if m is not None else float("inf")

    ranked = sorted((e for e in entries if is_rankable(e, on)), key=loss)
    unranked = sorted((e for e in entries if not is_rankable(e, on)), key=loss)
    for i, e in enumerate(ranked, 1):
        e.rank = i
    for e in unranked + refs:
        e.rank = None
    for e in entries + refs:
        e.primary = on
    return ranked + unranked + refs


def reference_entries(metadata) -> list[Entry]:
    """The paper's own numbers of a task (its :attr:`TaskMetadata.paper`) as reference rows."""
    out: list[Entry] = []
    if metadata is None:
        return out
    for method, ref in (getattr(metadata, "paper", None) or {}).items():
        metric = ref.metric or metadata.main_score
        text = f"{metric} = {ref.value:.4g}" + (f"  ({ref.note})" if ref.note else "")
        out.append(Entry(task=metadata.name, model_name=f"{method} (paper)", config_hash="",
                         main_score=metadata.main_score, source="paper", reference=text))
    return out


def column_sets(entries: Sequence[Entry]) -> list[tuple[str, TestSet]]:
    """(tag, test set) of every column: ``sim`` is the ranking set, then other simulated sets
    (``sim2`` …), then real sets (``real``, ``real2`` …)."""
    sets = {ts for e in entries for ts in e.columns}
    on = next((e.primary for e in entries if e.primary is not None), None) or ranking_set(list(entries))
    rest = sorted(sets - {on}, key=lambda t: (t.kind != "sim", t.name, t.content_hash, t.split))
    ordered = ([on] if on is not None else []) + rest
    out, counter = [], defaultdict(int)
    for ts in ordered:
        counter[ts.kind] += 1
        out.append((ts.kind if counter[ts.kind] == 1 else f"{ts.kind}{counter[ts.kind]}", ts))
    return out


def legend(entries: Sequence[Entry]) -> list[str]:
    """One line per column tag: the data it was scored on."""
    return [f"{tag} = {ts.describe()}" for tag, ts in column_sets(entries)]


def table_rows(entries: Sequence[Entry], metric_keys: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """Header and string cells: rank, model, then per test set its seeds and main score (real
    sets with their gap to the ranking set), then every other metric on the ranking set, then
    a note (deterministic, or the paper's number for reference rows)."""
    main_key = next((e.main_score for e in entries), "score")
    metric_keys = [k for k in metric_keys if k != main_key]  # shown first already
    sets = column_sets(entries)
    on = sets[0][1] if sets else None
    header = ["rank", "model"]
    for i, (tag, ts) in enumerate(sets):
        header += ["seeds" if i == 0 else f"seeds ({tag})", f"{main_key} ({tag})"]
        if ts.kind == "real" and on is not None and on.kind == "sim":
            header.append(f"gap ({tag}-sim)")
    header += list(metric_keys) + ["note"]
    rows = []
    for e in entries:
        row = [str(e.rank) if e.rank else ("ref" if e.reference else "-"), e.model_name]
        base = e.main_on(on) if on is not None else None
        for tag, ts in sets:
            col, m = e.columns.get(ts), e.main_on(ts)
            row += [_seeds(col, e.deterministic), str(m) if m else ""]
            if ts.kind == "real" and on is not None and on.kind == "sim":
                row.append(f"{m.mean - base.mean:+.4g}" if m and base else "")
        stats = e.columns[on].metrics if on in e.columns else {}
        row += [str(stats[k]) if k in stats else "" for k in metric_keys]
        row.append(e.reference or ("deterministic" if e.deterministic else ""))
        rows.append(row)
    return header, rows


def _seeds(col: Column | None, deterministic: bool) -> str:
    if col is None:
        return ""
    text = str(col.n_seeds)
    if len(col.run_ids) != col.n_seeds:
        text += f" ({len(col.run_ids)} runs)"
    return text + (" det." if deterministic else "")


def to_text(entries: Sequence[Entry], metric_keys: Sequence[str]) -> str:
    return text_table(*table_rows(entries, metric_keys)) + "".join(f"\n  {line}" for line in legend(entries))


def to_markdown(entries: Sequence[Entry], metric_keys: Sequence[str]) -> str:
    header, rows = table_rows(entries, metric_keys)
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out + [""] + [f"- {line}" for line in legend(entries)])


def to_csv(entries: Sequence[Entry], metric_keys: Sequence[str]) -> str:
    """Machine-readable: one row per entry and test set (reference rows: one row, kind
    ``paper``), mean and std columns per metric."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["task", "rank", "model", "model_key", "kind", "data_name", "data_hash", "split", "n_objects",
                "n_seeds", "n_runs", "deterministic", "run_ids", "reference",
                *[f"{k}_{s}" for k in metric_keys for s in ("mean", "std")]])
    for e in entries:
        if e.reference is not None:
            w.writerow([e.task, "", e.model_name, "", "paper", "", "", "", "", "", "", "", "", e.reference,
                        *[""] * (2 * len(metric_keys))])
            continue
        for ts in _ordered(e):
            col = e.columns[ts]
            w.writerow([e.task, e.rank or "", e.model_name, e.config_hash, ts.kind, ts.name, ts.content_hash, ts.split,
                        "" if ts.n is None else ts.n, col.n_seeds, len(col.run_ids), e.deterministic,
                        " ".join(map(str, col.run_ids)), "",
                        *[x for k in metric_keys for x in ((col.metrics[k].mean, col.metrics[k].std)
                                                           if k in col.metrics else ("", ""))]])
    return buf.getvalue()


def _ordered(e: Entry) -> list[TestSet]:
    return sorted(e.columns, key=lambda t: (t != e.primary, t.kind != "sim", t.name, t.content_hash, t.split))
