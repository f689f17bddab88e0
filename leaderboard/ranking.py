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

Uncertainties (issue 15): every run carries each metric's 1σ bootstrap error on its test set and
its main score on each of the task's resamples, all recomputed by the board. A column's error is
its runs' (one run: exact; several runs on the same resamples: the spread of their mean over the
resamples; runs on different resamples, e.g. seeds whose task seeds differ: the weighted mean of
the per-resample-set errors, an upper bound). A difference between two columns (:class:`Diff`:
the sim-to-real gap, Δ vs the best baseline, the gap to the next ranked entry) has a *paired*
error when both were scored on the same resamples (same set, split, n, ``n_bootstrap`` and
resample seed, in the same proportions), else the two errors in quadrature; it says which. A
ranked entry whose difference to the next is within that 1σ error is marked ``≈``.
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

#: Marks a ranked entry whose difference to the next ranked entry is within its 1σ error.
TIE = "≈"
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


@dataclass
class Diff:
    """A difference of the main score between two columns (``a − b``) with its 1σ error:
    ``paired`` (both on the same resamples) or the two errors in quadrature; error None when
    either column has none."""

    value: float
    error: float | None
    paired: bool

    @property
    def how(self) -> str:
        return "" if self.error is None else ("paired" if self.paired else "quadrature")

    @property
    def within(self) -> bool:
        """|difference| within its 1σ error (noise, not rank)."""
        return self.error is not None and abs(self.value) <= self.error

    def __str__(self) -> str:
        if self.error is None:
            return f"{self.value:+.4g}"
        return f"{self.value:+.4g} ± {self.error:.2g} ({self.how})"


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
    #: 1σ bootstrap error of each metric's mean over the runs (see the module docstring)
    errors: dict[str, float] = field(default_factory=dict)
    #: resample identity -> the main score on each resample, per run (None: a run has none)
    boot: dict[tuple, list[np.ndarray]] | None = None

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
    kind: str | None = None  # "baseline" for a task's baselines (as its runs recorded), else None
    tie_next: Diff | None = None  # set by :func:`rank` when the next ranked entry is within 1σ
    vs_baseline: Diff | None = None  # main score − the best baseline's (set by :func:`rank`)

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

    def error_on(self, test_set: TestSet | None) -> float | None:
        """1σ bootstrap error of the main score on ``test_set`` (None: not recorded)."""
        col = self.columns.get(test_set) if test_set is not None else None
        return None if col is None else col.errors.get(self.main_score)


def difference(a: Column | None, b: Column | None, key: str) -> Diff | None:
    """``a − b`` of metric ``key`` (the main score for a paired error) as a :class:`Diff`."""
    if a is None or b is None or key not in a.metrics or key not in b.metrics:
        return None
    value = a.metrics[key].mean - b.metrics[key].mean
    paired = _paired_error(a, b)
    if paired is not None:
        return Diff(value, paired, True)
    ea, eb = a.errors.get(key), b.errors.get(key)
    return Diff(value, None if ea is None or eb is None else float(np.hypot(ea, eb)), False)


def _weights(col: Column) -> dict[tuple, float] | None:
    if not col.boot:
        return None
    n = sum(len(v) for v in col.boot.values())
    return {g: len(v) / n for g, v in col.boot.items()}


def _paired_error(a: Column, b: Column) -> float | None:
    """Σ_g w_g · std over resamples of (mean_a,g − mean_b,g) when both columns hold the same
    resample sets g in the same proportions w_g (exact for one set; an upper bound otherwise),
    else None."""
    wa, wb = _weights(a), _weights(b)
    if wa is None or wb is None or set(wa) != set(wb) or any(abs(wa[g] - wb[g]) > 1e-12 for g in wa):
        return None
    return float(sum(w * np.std(np.mean(a.boot[g], axis=0) - np.mean(b.boot[g], axis=0)) for g, w in wa.items()))


def _boot_identity(run) -> tuple | None:
    """The resamples a run's replicates were computed on (same tuple: same resample indices);
    None when the task left resamples out (metric undefined there): then nothing pairs with it."""
    n_boot, reps = getattr(run, "n_bootstrap", None), getattr(run, "main_replicates", None)
    if n_boot is None or not reps or len(reps) != n_boot:
        return None
    return (getattr(run, "data_content_hash", ""), getattr(run, "split", ""), getattr(run, "n_objects", None),
            int(n_boot), getattr(run, "bootstrap_seed", None))


def column_errors(runs: Sequence, main: str) -> tuple[dict[str, float], dict[tuple, list[np.ndarray]] | None]:
    """(errors, boot) of a column from its runs (see the module docstring)."""
    errs = [run.error_dict() if hasattr(run, "error_dict") else {} for run in runs]
    keys = set.intersection(*(set(e) for e in errs)) if errs else set()
    errors = {k: float(np.mean([e[k] for e in errs])) for k in keys}
    boot: dict[tuple, list[np.ndarray]] | None = defaultdict(list)
    for run in runs:
        g = _boot_identity(run)
        if g is None:
            boot = None
            break
        boot[g].append(np.asarray(run.main_replicates, dtype=float))
    if boot:
        w = {g: len(v) / len(runs) for g, v in boot.items()}
        errors[main] = float(sum(wg * np.std(np.mean(boot[g], axis=0)) for g, wg in w.items()))
    return errors, (dict(boot) if boot else None)


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
    cfg.pop("kind", None)  # a label of the method, recorded beside its settings
    return stable_hash(strip(cfg), 16)


def test_set_of(run) -> TestSet:
    return TestSet(run.data_kind, getattr(run, "data_name", "") or "", getattr(run, "data_content_hash", "") or "",
                   getattr(run, "split", "test") or "test", getattr(run, "n_objects", None))


def is_deterministic(run) -> bool:
    return bool((getattr(run, "config", None) or {}).get("deterministic", False))


def method_kind(run) -> str | None:
    """The method kind a benchmark run recorded (``baseline``, ``model``…), else None."""
    return (getattr(run, "config", None) or {}).get("kind")


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
                  deterministic=all(is_deterministic(r) for r in members),
                  kind=method_kind(members[0]))
        by_set: dict[TestSet, list] = defaultdict(list)
        for r in members:
            by_set[test_set_of(r)].append(r)
        for ts, sel in by_set.items():
            keys = sorted(set().union(*(r.metric_dict() for r in sel)))
            errors, boot = column_errors(sel, e.main_score)
            e.columns[ts] = Column(run_ids=[r.id for r in sel], seeds=[r.seed for r in sel], metrics={
                k: _stat([r.metric_dict()[k] for r in sel if k in r.metric_dict()]) for k in keys},
                errors=errors, boot=boot)
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
        e.tie_next = e.vs_baseline = None
    for upper, lower in zip(ranked, ranked[1:]):
        d = difference(upper.columns.get(on), lower.columns.get(on), upper.main_score)
        upper.tie_next = d if d is not None and d.within else None
    best = best_baseline(entries, on)
    for e in entries:
        if best is not None and e is not best:
            e.vs_baseline = difference(e.columns.get(on), best.columns.get(on), e.main_score)
    return ranked + unranked + refs


def best_baseline(entries: Sequence[Entry], on: TestSet | None) -> Entry | None:
    """The task's best baseline on the ranking set (ranked ones first), or None."""
    cands = [e for e in entries if e.kind == "baseline" and e.reference is None and e.main_on(on) is not None]
    return min(cands, key=lambda e: (e.rank is None, ranking_loss(e.main_score, e.main_on(on).mean)), default=None)


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
    """One line per column tag: the data it was scored on; then, when the board has bootstrap
    errors, what ``±``, ``sd`` and ``≈`` mean."""
    lines = [f"{tag} = {ts.describe()}" for tag, ts in column_sets(entries)]
    if any(c.errors for e in entries for c in e.columns.values()):
        lines += ["value ± error: 1σ bootstrap error on the test set (recomputed by the board; several seeds: "
                  "the error of their mean); (seed sd …): the spread over seeds",
                  "differences (gap, Δ vs best baseline) ± 1σ: paired when both were scored on the same resamples "
                  "(same set, n_bootstrap and resample seed), else the errors in quadrature",
                  f"{TIE} after a rank: its difference to the next ranked entry is within that 1σ error (noise, "
                  "not rank)"]
    return lines


def cell(stat: Stat | None, error: float | None) -> str:
    """``mean ± error (seed sd …)`` with a bootstrap error; ``mean ± sd`` (seeds) without one."""
    if stat is None:
        return ""
    if error is None:
        return str(stat)
    return f"{stat.mean:.4g} ± {error:.2g}" + (f" (seed sd {stat.std:.2g})" if stat.n > 1 else "")


def _rank_text(e: Entry) -> str:
    if e.rank:
        return f"{e.rank}{TIE}" if e.tie_next is not None else str(e.rank)
    return "ref" if e.reference else "-"


def _note(e: Entry) -> str:
    parts = [e.reference or ("deterministic" if e.deterministic else "")]
    if e.tie_next is not None:
        parts.append(f"{TIE} next: {e.tie_next}")
    return "; ".join(p for p in parts if p)


def table_rows(entries: Sequence[Entry], metric_keys: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """Header and string cells: rank, model, then per test set its seeds and main score (real
    sets with their gap to the ranking set), then every other metric on the ranking set, then
    a note (deterministic, or the paper's number for reference rows)."""
    main_key = next((e.main_score for e in entries), "score")
    metric_keys = [k for k in metric_keys if k != main_key]  # shown first already
    sets = column_sets(entries)
    on = sets[0][1] if sets else None
    best = best_baseline(entries, on)
    header = ["rank", "model"]
    for i, (tag, ts) in enumerate(sets):
        header += ["seeds" if i == 0 else f"seeds ({tag})", f"{main_key} ({tag})"]
        if i == 0 and best is not None:
            header.append(f"Δ vs best baseline ({best.model_name})")
        if ts.kind == "real" and on is not None and on.kind == "sim":
            header.append(f"gap ({tag}-sim)")
    header += list(metric_keys) + ["note"]
    rows = []
    for e in entries:
        row = [_rank_text(e), e.model_name]
        for i, (tag, ts) in enumerate(sets):
            col = e.columns.get(ts)
            row += [_seeds(col, e.deterministic), cell(e.main_on(ts), e.error_on(ts))]
            if i == 0 and best is not None:
                row.append("best baseline" if e is best else str(e.vs_baseline or ""))
            if ts.kind == "real" and on is not None and on.kind == "sim":
                row.append(str(difference(col, e.columns.get(on), e.main_score) or ""))
        column = e.columns.get(on) if on is not None else None
        stats, errs = (column.metrics, column.errors) if column is not None else ({}, {})
        row += [cell(stats.get(k), errs.get(k)) for k in metric_keys]
        row.append(_note(e))
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
    ``paper``); ``tie_with_next`` (``≈``), the difference to the best baseline (ranking set row)
    or the gap to the ranking set (other rows) with its 1σ error and how it was computed
    (``paired``/``quadrature``), then per metric its 1σ bootstrap error, mean and std over seeds."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["task", "rank", "model", "model_key", "kind", "data_name", "data_hash", "split", "n_objects",
                "n_seeds", "n_runs", "deterministic", "run_ids", "reference", "tie_with_next", "versus",
                "difference", "difference_error", "difference_error_kind",
                *[f"{k}_{s}" for k in metric_keys for s in ("error", "mean", "std")]])
    for e in entries:
        if e.reference is not None:
            w.writerow([e.task, "", e.model_name, "", "paper", "", "", "", "", "", "", "", "", e.reference,
                        *[""] * (5 + 3 * len(metric_keys))])
            continue
        best = best_baseline(entries, e.primary)
        for ts in _ordered(e):
            col = e.columns[ts]
            if ts == e.primary:
                versus, d = ((f"best baseline {best.model_name}", e.vs_baseline) if best is not None and e is not best
                             else ("", None))
            else:
                versus, d = "ranking set (gap)", difference(col, e.columns.get(e.primary), e.main_score)
            diff = ("", "", "") if d is None else (d.value, "" if d.error is None else d.error, d.how)
            w.writerow([e.task, e.rank or "", e.model_name, e.config_hash, ts.kind, ts.name, ts.content_hash, ts.split,
                        "" if ts.n is None else ts.n, col.n_seeds, len(col.run_ids), e.deterministic,
                        " ".join(map(str, col.run_ids)), "", TIE if ts == e.primary and e.tie_next else "",
                        versus if d is not None else "", *diff,
                        *[x for k in metric_keys for x in _metric_cells(col, k)]])
    return buf.getvalue()


def _metric_cells(col: Column, key: str) -> tuple:
    if key not in col.metrics:
        return ("", "", "")
    return (col.errors.get(key, ""), col.metrics[key].mean, col.metrics[key].std)


def _ordered(e: Entry) -> list[TestSet]:
    return sorted(e.columns, key=lambda t: (t != e.primary, t.kind != "sim", t.name, t.content_hash, t.split))
