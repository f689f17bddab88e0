"""Study outputs: ``table.txt``, ``learning_curve.png``, ``coverage_vs_k.png`` (posterior tasks) and
the shift diagnostics of ``diagnostics.json``.

- ``table.txt``: per target, strategy and k, the main score as mean ± standard deviation over the
  seeds (n = seeds present), the mean bootstrap error of one seed's value, and for posterior tasks
  the pooled 68 % and 95 % coverages.
- ``learning_curve.png``: the main score against k per strategy, one panel per target, error bars
  = standard deviation over seeds (k = 0 strategies and the source's in-domain score drawn as
  horizontal lines).
- ``coverage_vs_k.png``: for tasks scored on posteriors, the pooled 68 % and 95 % coverage against k
  per strategy (nominal levels dotted).
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from sim2obs.atomic import atomic_write
from sim2obs.tasks.base import text_table

COVERAGE_KEYS = (("coverage_68", 0.6827), ("coverage_95", 0.9545))


def _groups(rows: Sequence[dict]) -> dict[tuple[str, str, int], list[dict]]:
    out: dict[tuple[str, str, int], list[dict]] = defaultdict(list)
    for r in rows:
        out[(r["target_name"], r["strategy"], int(r["k"]))].append(r)
    return out


def _stats(values: Sequence[float]) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    return float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0


def summary_rows(rows: Sequence[dict]) -> list[dict[str, Any]]:
    """One record per (target, strategy, k): mean and std over seeds of the main score (and of the
    coverages where the metrics have them)."""
    out = []
    for (target, strategy, k), group in _groups(rows).items():
        mean, std = _stats([r["value"] for r in group])
        rec = {"target": target, "strategy": strategy, "k": k, "n_seeds": len(group), "main_score": group[0]["main_score"],
               "mean": mean, "std": std,
               "boot_err": float(np.nanmean([r["errors"].get(r["main_score"], np.nan) for r in group]))}
        for key, _ in COVERAGE_KEYS:
            if all(key in r["metrics"] for r in group):
                rec[key], rec[key + "_std"] = _stats([r["metrics"][key] for r in group])
        out.append(rec)
    return out


def format_table(rows: Sequence[dict]) -> str:
    recs = summary_rows(rows)
    if not recs:
        return "(no points)"
    cov = all("coverage_68" in r for r in recs)
    header = ["target", "strategy", "k", "seeds", f"{recs[0]['main_score']} (mean ± std over seeds)", "bootstrap err"]
    if cov:
        header += ["coverage_68", "coverage_95"]
    lines = []
    for r in recs:
        line = [r["target"], r["strategy"], r["k"], r["n_seeds"], f"{r['mean']:.4f} ± {r['std']:.4f}",
                f"{r['boot_err']:.4f}"]
        if cov:
            line += [f"{r['coverage_68']:.3f} ± {r['coverage_68_std']:.3f}",
                     f"{r['coverage_95']:.3f} ± {r['coverage_95_std']:.3f}"]
        lines.append(line)
    return text_table(header, lines)


def _panel_curves(ax, recs: list[dict], key: str, err: str, xmax: float) -> None:
    by = defaultdict(list)
    for r in recs:
        by[r["strategy"]].append(r)
    for i, (strategy, items) in enumerate(sorted(by.items())):
        items.sort(key=lambda r: r["k"])
        color = f"C{i % 10}"
        if all(r["k"] == 0 for r in items):
            r = items[0]
            ax.axhline(r[key], color=color, ls="--" if strategy != "source" else ":", lw=1.2,
                       label=f"{strategy} ({r[key]:.3g})")
            ax.axhspan(r[key] - r[err], r[key] + r[err], color=color, alpha=0.12, lw=0)
            continue
        ax.errorbar([r["k"] for r in items], [r[key] for r in items], yerr=[r[err] for r in items], marker="o",
                    ms=3, capsize=2, color=color, label=strategy)
    ax.set_xscale("log")
    ks = sorted({r["k"] for r in recs if r["k"] > 0})
    if ks:
        ax.set_xticks(ks, [str(k) for k in ks], fontsize=7)
        ax.minorticks_off()
    ax.set_xlim(right=xmax * 1.3)
    ax.set_xlabel("k (labelled target objects)")


def write_report(rows: Sequence[dict], out_dir: str | Path, plots: bool = True) -> list[Path]:
    """Write ``table.txt`` and (``plots``) the learning curve and, for posterior tasks, coverage vs k."""
    out_dir = Path(out_dir)
    text = format_table(rows) + "\n"
    atomic_write(out_dir / "table.txt", lambda f: f.write(text), mode="w")
    paths = [out_dir / "table.txt"]
    if not plots or not rows:
        return paths
    from sim2obs.tasks import plots as P

    recs = summary_rows(rows)
    source = [r for r in recs if r["target"] == "source"]
    targets = [t for t in dict.fromkeys(r["target"] for r in recs) if t != "source"]
    xmax = max([r["k"] for r in recs] + [1])
    main = rows[0]["main_score"]
    better = "higher" if rows[0].get("higher_is_better") else "lower"
    ncol = max(1, len(targets))
    fig = P.new_figure(4.2 * ncol, 3.6)
    for j, target in enumerate(targets):
        ax = fig.add_subplot(1, ncol, j + 1)
        _panel_curves(ax, [r for r in recs if r["target"] == target] + source, "mean", "std", xmax)
        ax.set_title(target, fontsize=9)
        ax.set_ylabel(f"{main} ({better} is better)" if j == 0 else "")
        ax.legend(fontsize=6)
    paths.append(P.save_figure(fig, out_dir / "learning_curve.png"))
    if all("coverage_68" in r for r in recs):
        fig = P.new_figure(4.2 * ncol, 6.4)
        for i, (key, nominal) in enumerate(COVERAGE_KEYS):
            for j, target in enumerate(targets):
                ax = fig.add_subplot(2, ncol, i * ncol + j + 1)
                _panel_curves(ax, [r for r in recs if r["target"] == target] + source, key, key + "_std", xmax)
                ax.axhline(nominal, color="k", lw=0.8, ls=":")
                ax.set_title(f"{target}: {key}", fontsize=9)
                if i == 0 and j == 0:
                    ax.legend(fontsize=6)
        paths.append(P.save_figure(fig, out_dir / "coverage_vs_k.png"))
    return paths


# --------------------------------------------------------------------------------------------
# Shift diagnostics (helper D's sim2obs.tasks.transfer.diagnostics does the statistics)
# --------------------------------------------------------------------------------------------
def diagnostic_inputs(protocol, seed: int, target: str, source_model) -> dict[str, Any]:
    """Numpy inputs of the shift diagnostics of (source, ``target``): the source network's
    penultimate features (dropout off) and the stretched network inputs of at most
    ``diagnostics.max_objects`` test objects of each set, raw images of the same objects, and the
    catalogue labels of each set's **training** split (the evaluation split's labels stay unread)."""
    from sim2obs.tasks.transfer.strategies import features

    cfg = protocol.cfg.diagnostics
    adapter = source_model.adapter()
    model = source_model.copy()
    out: dict[str, Any] = {}
    for side, name in (("source", "source"), ("target", target)):
        task = protocol.task(name, seed)
        split = task.config.eval_split
        ds = adapter.dataset(task, split, labelled=False)
        n = len(ds)
        pick = np.sort(np.random.default_rng(seed).permutation(n)[:min(n, cfg.max_objects)])
        x = {k: v.numpy()[pick] for k, v in ds.inputs.items()}
        out[f"{side}_inputs"] = next(iter(x.values()))
        out[f"{side}_features"] = features(model, adapter.feature_module, x)
        schema = task.galaxy_set.schema
        names = schema.stack_names
        stack = next((s for s in task.metadata.inputs if s in names), names[0] if names else None)
        if stack is not None:  # the first image input, raw (pixels in the set's units)
            out[f"{side}_images"] = task.galaxy_set.images(stack, split)[pick]
            out[f"{side}_pixel_scale"] = schema.stack(stack).pixel_scale_arcsec
        out[f"{side}_catalog"] = task.labels("train")
    out["catalog_columns"] = list(protocol.task("source", seed).targets)
    return out


def shift_diagnostics(protocol, seed: int, target: str, source_model) -> dict[str, Any]:
    """The shift diagnostics of (source, ``target``) for ``seed``; hook for helper D's module
    :mod:`sim2obs.tasks.transfer.diagnostics` (``shift_diagnostics(**inputs)``). Without it, the
    record says so (``status``) and holds only the feature means' distance."""
    inputs = diagnostic_inputs(protocol, seed, target, source_model)
    try:
        from sim2obs.tasks.transfer import diagnostics as D
    except ImportError:
        D = None
    fs, ft = inputs["source_features"], inputs["target_features"]
    rec: dict[str, Any] = {"n_source": int(len(fs)), "n_target": int(len(ft)),
                           "feature_mean_distance": float(np.linalg.norm(fs.mean(0) - ft.mean(0)))}
    if D is None or not hasattr(D, "shift_diagnostics"):
        rec["status"] = "sim2obs.tasks.transfer.diagnostics.shift_diagnostics not available"
        return rec
    cfg = protocol.cfg.diagnostics
    rec.update(D.shift_diagnostics(**inputs, n_permutations=cfg.n_permutations, seed=seed))
    rec["status"] = "ok"
    return rec
