"""The transfer board (issue 14): studies recorded by :mod:`sim2obs.leaderboard.transfer`,
aggregated, ranked and rendered.

Per task, one entry per (model and its settings, source set, target set) with the source
(in-domain) score, the zero-shot target score, the best few-shot target score at each k (and
which strategy gave it) and the gap (zero-shot target − source, paired per seed), each as mean ±
std over seeds with the number of seeds (a seed's repeated runs are averaged first), and with the
1σ bootstrap error on the test set. At each k, the best strategy's difference from zero-shot
(``Δ vs zero-shot``) is paired twice: per seed (the same source network) and over the *same* test
objects and bootstrap resamples (both runs' main score on every resample, ``main_replicates``):
its test error is the spread over resamples of the per-resample difference, which cancels the
galaxies both strategies find hard (the gap's two test sets cannot pair: its error is in
quadrature). Entries are
ranked only within a *comparison group* (same task version, same source and target content
hashes), by the zero-shot target score; a ranked entry needs
:data:`~sim2obs.leaderboard.board.MIN_SEEDS_RANKED` seeds there. The page shows each group's
table and one learning curve per entry (main score against k per strategy, seed error bars).
"""
from __future__ import annotations

import csv
import io
import math
from html import escape as _e
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from sim2obs.atomic import atomic_write
from sim2obs.leaderboard.board import MIN_SEEDS_RANKED
from sim2obs.leaderboard.db import TransferRun
from sim2obs.leaderboard.ranking import Stat, _boot_identity
from sim2obs.leaderboard.transfer import transfer_runs
from sim2obs.provenance import stable_hash
from sim2obs.tasks.base import text_table
from sim2obs.tasks.metrics import ranking_loss

#: Strategies that are not few-shot points: the in-domain reference and the zero-shot point.
SOURCE, ZERO_SHOT = "source", "zero_shot"


# -- the board -------------------------------------------------------------------------------
@dataclass
class Cell:
    """One point's main score over seeds: each seed's runs averaged, then mean ± std over seeds."""

    per_seed: dict[int, float]
    run_ids: list[int]
    #: each seed's 1σ bootstrap error of the main score on the test set (recomputed by the board)
    boot: dict[int, float] = field(default_factory=dict)
    #: each seed's main score on every bootstrap resample, with the resamples' identity (test set,
    #: count, seed): ``{seed: (identity, (n_boot,) array)}``; seeds whose runs lack them are absent
    reps: dict[int, tuple[tuple, np.ndarray]] = field(default_factory=dict)
    #: whether ``boot`` holds paired errors of a difference (same test objects and resamples)
    paired: bool = False

    @property
    def boot_error(self) -> float | None:
        """The bootstrap error of the seed mean: the mean of the seeds' errors (an upper bound,
        the seeds share one test set), None unless every seed has one."""
        if not self.per_seed or set(self.boot) != set(self.per_seed):
            return None
        return sum(self.boot.values()) / len(self.boot)

    @property
    def stat(self) -> Stat:
        v = [self.per_seed[s] for s in sorted(self.per_seed)]
        mean = sum(v) / len(v)
        std = math.sqrt(sum((x - mean) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0
        return Stat(mean, std, len(v))

    @property
    def n_seeds(self) -> int:
        return len(self.per_seed)


def _cell(runs: Sequence[TransferRun]) -> Cell:
    by_seed: dict[int, list[float]] = defaultdict(list)
    errs: dict[int, list[float]] = defaultdict(list)
    reps: dict[int, list[tuple]] = defaultdict(list)
    for r in runs:
        by_seed[r.seed].append(r.main_value)
        err = (r.errors or {}).get(r.main_score) if getattr(r, "n_bootstrap", None) is not None else None
        if err is not None:
            errs[r.seed].append(err)
        ident = _boot_identity(r)
        if ident is not None:
            reps[r.seed].append((ident, np.asarray(r.main_replicates, dtype=np.float64)))
    boot = {s: sum(v) / len(v) for s, v in errs.items() if len(v) == len(by_seed[s])}
    # a seed's repeated runs averaged resample by resample, when all of them share one set of resamples
    same = {s: v for s, v in reps.items() if len(v) == len(by_seed[s]) and len({i for i, _ in v}) == 1}
    return Cell({s: sum(v) / len(v) for s, v in by_seed.items()}, [r.id for r in runs], boot,
                {s: (v[0][0], np.mean([a for _, a in v], axis=0)) for s, v in same.items()})


def paired_difference(a: Cell | None, b: Cell | None) -> Cell | None:
    """``a − b`` of the main score, paired per seed (seeds in both), each seed's test error the
    standard deviation over the shared bootstrap resamples of the per-resample difference (only
    when every common seed has replicates of both on the same resamples; else no test error).
    None without a common seed."""
    if a is None or b is None:
        return None
    both = sorted(set(a.per_seed) & set(b.per_seed))
    if not both:
        return None
    diff = {s: a.per_seed[s] - b.per_seed[s] for s in both}
    if not all(s in a.reps and s in b.reps and a.reps[s][0] == b.reps[s][0] for s in both):
        return Cell(diff, [], {}, {}, paired=True)
    reps = {s: (a.reps[s][0], a.reps[s][1] - b.reps[s][1]) for s in both}
    return Cell(diff, [], {s: float(np.std(d)) for s, (_, d) in reps.items()}, reps, paired=True)


@dataclass
class TransferEntry:
    """One model (with its settings) transferred from one source set to one target set."""

    task: str
    task_version: str
    model_name: str
    model_key: str
    main_score: str
    source: tuple[str, str]  # (name, content hash)
    target: tuple[str, str]
    target_names: list[str]
    studies: list[str]
    n_objects: int | None = None  # of the target test split
    source_cell: Cell | None = None
    curves: dict[str, dict[int, Cell]] = field(default_factory=dict)  # strategy -> k -> cell
    rank: int | None = None

    @property
    def group(self) -> tuple[str, str, str]:
        """Entries are comparable (ranked together) only within one group."""
        return (self.task_version, self.source[1], self.target[1])

    @property
    def zero_shot(self) -> Cell | None:
        return self.curves.get(ZERO_SHOT, {}).get(0)

    @property
    def ks(self) -> list[int]:
        """Every k of a few-shot (or, at k = 0, adaptation) strategy."""
        return sorted({k for s, c in self.curves.items() if s != ZERO_SHOT for k in c})

    def best(self, k: int) -> tuple[str, Cell] | None:
        """The strategy with the best mean main score at ``k`` (zero-shot excluded)."""
        cands = [(s, c[k]) for s, c in self.curves.items() if s != ZERO_SHOT and k in c]
        return min(cands, key=lambda sc: (ranking_loss(self.main_score, sc[1].stat.mean), sc[0]), default=None)

    def versus_zero_shot(self, k: int, strategy: str | None = None) -> tuple[str, Cell] | None:
        """``(strategy, cell)``: ``strategy`` at ``k`` (default: the best there) minus zero-shot,
        paired per seed and over the test resamples (:func:`paired_difference`)."""
        if strategy is None:
            best = self.best(k)
            if best is None:
                return None
            strategy = best[0]
        diff = paired_difference(self.curves.get(strategy, {}).get(k), self.zero_shot)
        return None if diff is None else (strategy, diff)

    @property
    def gap(self) -> Cell | None:
        """Zero-shot target − source of the main score, paired per seed (seeds in both)."""
        z, s = self.zero_shot, self.source_cell
        if z is None or s is None or not set(z.per_seed) & set(s.per_seed):
            return None
        both = set(z.per_seed) & set(s.per_seed)
        boot = {k: math.hypot(z.boot[k], s.boot[k]) for k in both if k in z.boot and k in s.boot}  # two sets
        return Cell({k: z.per_seed[k] - s.per_seed[k] for k in both}, [], boot)


def aggregate_transfer(runs: Iterable[TransferRun]) -> list[TransferEntry]:
    """Entries (unranked) from the transfer runs of one task."""
    runs = list(runs)
    sources: dict[tuple, list] = defaultdict(list)
    targets: dict[tuple, list] = defaultdict(list)
    for r in runs:
        model = (r.task, r.task_version, r.model_name, r.model_key, r.source_content_hash)
        (sources[model] if r.domain == "source" else targets[model + (r.target_content_hash,)]).append(r)
    entries = []
    for key, members in targets.items():
        first = members[0]
        e = TransferEntry(task=first.task, task_version=first.task_version, model_name=first.model_name,
                          model_key=first.model_key, main_score=first.main_score,
                          source=(first.source_name, first.source_content_hash),
                          target=(first.target_data_name, first.target_content_hash),
                          target_names=sorted({r.target_name for r in members}),
                          studies=sorted({r.study for r in members}), n_objects=first.n_objects)
        src = sources.get(key[:5])
        e.source_cell = _cell(src) if src else None
        points: dict[tuple[str, int], list] = defaultdict(list)
        for r in members:
            points[(r.strategy, r.k)].append(r)
        for (strategy, k), sel in sorted(points.items()):
            e.curves.setdefault(strategy, {})[k] = _cell(sel)
        entries.append(e)
    return entries


def rank_transfer(entries: list[TransferEntry]) -> list[list[TransferEntry]]:
    """Comparison groups (same task version, source and target content hashes), each ranked by
    the zero-shot target score: entries with :data:`MIN_SEEDS_RANKED` seeds there first (rank
    1, 2, …), then the others (unranked)."""
    groups: dict[tuple, list[TransferEntry]] = defaultdict(list)
    for e in entries:
        groups[e.group].append(e)
    out = []
    for key in sorted(groups, key=lambda g: (min(n for e in groups[g] for n in e.target_names), g)):
        members = groups[key]

        def loss(e: TransferEntry) -> float:
            z = e.zero_shot
            return ranking_loss(e.main_score, z.stat.mean) if z is not None else float("inf")

        ranked = sorted((e for e in members if e.zero_shot and e.zero_shot.n_seeds >= MIN_SEEDS_RANKED), key=loss)
        rest = sorted((e for e in members if e not in ranked), key=loss)
        for i, e in enumerate(ranked, 1):
            e.rank = i
        for e in rest:
            e.rank = None
        out.append(ranked + rest)
    return out


def group_title(group: Sequence[TransferEntry]) -> str:
    e = group[0]
    return (f"{e.task} v{e.task_version}: source {e.source[0]} #{e.source[1][:8]} -> target "
            f"{'/'.join(e.target_names)} ({e.target[0]} #{e.target[1][:8]}, test n={e.n_objects})")


def _fmt(cell: Cell | None, extra: str = "") -> str:
    if cell is None:
        return ""
    err = cell.boot_error
    boot = "" if err is None else f" [test ± {err:.2g}{' paired' if cell.paired else ''}]"
    return f"{cell.stat}{boot} (n={cell.n_seeds}{', ' + extra if extra else ''})"


def _sigmas(cell: Cell | None) -> str:
    """``(2.1σ)``: the seed-mean difference over its paired test error."""
    err = None if cell is None else cell.boot_error
    return "" if cell is None or not err else f" ({cell.stat.mean / err:+.1f}σ)"


def table_rows(group: Sequence[TransferEntry]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of one comparison group: rank, model, studies, source, zero-shot, gap,
    the best strategy at each k, a note."""
    main = group[0].main_score
    ks = sorted({k for e in group for k in e.ks})
    header = ["rank", "model", "study", f"source {main}", f"zero-shot {main}", "gap (zero-shot - source)"]
    header += [h for k in ks for h in (f"k={k} best", f"k={k} best - zero-shot")] + ["note"]
    rows = []
    for e in group:
        row = [str(e.rank) if e.rank else "-", e.model_name, ", ".join(e.studies), _fmt(e.source_cell),
               _fmt(e.zero_shot), _fmt(e.gap)]
        for k in ks:
            b, d = e.best(k), e.versus_zero_shot(k)
            row.append(_fmt(b[1], b[0]) if b else "")
            row.append(_fmt(d[1]) + _sigmas(d[1]) if d else "")
        z = e.zero_shot
        row.append("" if e.rank else f"unranked: zero-shot needs {MIN_SEEDS_RANKED} seeds (has "
                   f"{z.n_seeds if z else 0})")
        rows.append(row)
    return header, rows


def to_text(groups: Sequence[Sequence[TransferEntry]], markdown: bool = False) -> str:
    out = []
    for g in groups:
        header, rows = table_rows(g)
        if markdown:
            table = "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                              + ["| " + " | ".join(r) + " |" for r in rows])
            out.append(f"### transfer: {group_title(g)}\n\n{table}\n")
        else:
            out.append(f"transfer: {group_title(g)}\n{text_table(header, rows)}\n")
    return "\n".join(out)


def to_csv(groups: Sequence[Sequence[TransferEntry]]) -> str:
    """One line per entry and point (source, zero_shot, each strategy at each k, gap)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["task", "task_version", "source_name", "source_hash", "target_names", "target_data_name",
                "target_hash", "rank", "model", "model_key", "studies", "point", "strategy", "k", "best_at_k",
                "main_score", "mean", "std", "n_seeds", "run_ids", "bootstrap_error", "paired"])
    for g in groups:
        for e in g:
            head = [e.task, e.task_version, e.source[0], e.source[1], "/".join(e.target_names), e.target[0],
                    e.target[1], e.rank or "", e.model_name, e.model_key, " ".join(e.studies)]
            points = [("source", SOURCE, 0, e.source_cell), ("gap", "zero_shot-source", 0, e.gap)]
            points += [("target", s, k, c) for s, by_k in sorted(e.curves.items()) for k, c in sorted(by_k.items())]
            points += [("versus_zero_shot", s, k, d) for s, by_k in sorted(e.curves.items()) if s != ZERO_SHOT
                       for k in sorted(by_k) for d in [(e.versus_zero_shot(k, s) or (None, None))[1]]]
            for point, strategy, k, cell in points:
                if cell is None:
                    continue
                best = e.best(k) if point in ("target", "versus_zero_shot") and strategy != ZERO_SHOT else None
                st = cell.stat
                w.writerow(head + [point, strategy, k, bool(best and best[0] == strategy), e.main_score, st.mean,
                                   st.std, cell.n_seeds, " ".join(map(str, cell.run_ids)),
                                   "" if cell.boot_error is None else cell.boot_error, cell.paired])
    return buf.getvalue()


def board_groups(board, task: str) -> list[list[TransferEntry]]:
    return rank_transfer(aggregate_transfer(transfer_runs(board, task)))


# -- the page --------------------------------------------------------------------------------
def learning_curve(entry: TransferEntry, path: Path) -> Path:
    """Main score against k per strategy (mean ± std over seeds as error bars), the source score
    as a grey band and the zero-shot score as a dashed line; k on a symlog axis (k = 0 shown)."""
    from sim2obs.tasks.plots import new_figure, save_figure

    fig = new_figure(6.4, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    ks_all = [0] + entry.ks
    if entry.source_cell is not None:
        s = entry.source_cell.stat
        ax.axhline(s.mean, color="0.4", lw=1, label=f"source (in-domain), n={s.n}")
        ax.axhspan(s.mean - s.std, s.mean + s.std, color="0.85", zorder=0)
    z = entry.zero_shot
    if z is not None:
        st = z.stat
        ax.axhline(st.mean, color="k", ls="--", lw=1)
        ax.errorbar([0], [st.mean], yerr=[st.std], fmt="ks", capsize=3, label=f"zero-shot, n={st.n}")
    for strategy, by_k in sorted(entry.curves.items()):
        if strategy == ZERO_SHOT:
            continue
        ks = sorted(by_k)
        stats = [by_k[k].stat for k in ks]
        lo, hi = min(s.n for s in stats), max(s.n for s in stats)
        ax.errorbar(ks, [s.mean for s in stats], yerr=[s.std for s in stats], marker="o", capsize=3,
                    label=f"{strategy}, n={lo}" + (f"-{hi}" if hi != lo else ""))
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xticks(ks_all, [str(k) for k in ks_all])
    ax.minorticks_off()
    ax.set_xlabel("k (labelled target objects)")
    ax.set_ylabel(entry.main_score)
    ax.set_title(f"{entry.model_name}: {entry.source[0]} -> {'/'.join(entry.target_names)}", fontsize=10)
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def transfer_section(board, task_name: str, out: Path, log: Callable[[str], None] = lambda s: None) -> str:
    """The HTML section of ``task_name``'s transfer board ("" when it has no transfer runs), with
    ``<task>-transfer.csv`` and the learning-curve PNGs written under ``out``."""
    groups = board_groups(board, task_name)
    if not groups:
        return ""
    atomic_write(out / f"{task_name}-transfer.csv", lambda f: f.write(to_csv(groups)), mode="w")
    parts = [f"<section id=\"transfer-{_e(task_name)}\" class=\"transfer\"><h2>{_e(task_name)}: transfer</h2>"
             "<p>Trained on the source set, scored on the target set's test split: <b>source</b> is the in-domain "
             "score, <b>zero-shot</b> the target score without target labels, <b>k=… best</b> the best strategy "
             "with k labelled target objects (named), <b>best − zero-shot</b> its difference from zero-shot paired "
             "per seed and over the same test galaxies and bootstrap resamples (<i>paired</i>; σ: the difference over "
             "that error), <b>gap</b> zero-shot − source paired per seed; each mean ± "
             "std over seeds (n = seeds), with <i>test ±</i> the 1σ bootstrap error on the test set (recomputed; the "
             f"gap's in quadrature: two test sets). Ranked by the zero-shot score (needs {MIN_SEEDS_RANKED} seeds), only "
             "within one source/target pair of content hashes and task version.</p>",
             f"<p class=\"download\"><a href=\"{_e(task_name)}-transfer.csv\" download>Download the transfer table "
             "(CSV)</a></p>"]
    for gi, group in enumerate(groups):
        header, rows = table_rows(group)
        thead = "".join(f"<th>{_e(h)}</th>" for h in header)
        body = "".join(("<tr>" if en.rank else "<tr class=\"unranked\">") + "".join(f"<td>{_e(c)}</td>" for c in r)
                       + "</tr>" for en, r in zip(group, rows))
        imgs = []
        for en in group:
            name = f"transfer-{_e(task_name)}-{stable_hash([en.group, en.model_name, en.model_key], 12)}.png"
            try:
                learning_curve(en, out / "plots" / name)
                imgs.append(f"<a href=\"plots/{name}\"><img src=\"plots/{name}\" alt=\"learning curve of "
                            f"{_e(en.model_name)}\"></a>")
            except Exception as exc:  # noqa: BLE001 - a page without a plot beats no page
                log(f"learning curve of {en.model_name} unavailable: {exc}")
        parts.append(f"<h3>{_e(group_title(group))}</h3><div class=\"scroll\"><table class=\"sortable\" "
                     f"data-transfer-group=\"{gi}\"><thead><tr>{thead}</tr></thead><tbody>{body}</tbody></table></div>"
                     + (f"<div class=\"plots\"><h4>learning curves</h4>{''.join(imgs)}</div>" if imgs else ""))
    return "".join(parts) + "</section>"


__all__ = ["aggregate_transfer", "rank_transfer", "board_groups", "TransferEntry", "Cell", "paired_difference",
           "table_rows", "to_text",
           "to_csv", "transfer_section", "learning_curve"]
