"""A static HTML leaderboard that works opened from disk (no server, no network).

``index.html``: one section per task with its description, a sortable table of ranked and
unranked entries (every metric; each test set a column, named in a legend; the papers' numbers
as reference rows), a CSV download of it, and, per entry, the plots of its best run (predicted
versus true, residual histograms, coverage curves; in file-name order, at a readable size; the
page fits a 1400-px window). ``runs/<id>.html``: one page per run with its metrics, provenance
and either the suite's configuration (a benchmark run) or exactly what the submitter sent.
Plots are drawn from the stored predictions and the held-out truth (when the task's data is
present on this machine). A task with transfer runs gets a transfer section after it
(:func:`sim2obs.leaderboard.transfer_board.transfer_section`: the transfer table per source/target
pair and a learning curve per model).
"""
from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any, Callable

from sim2obs.atomic import atomic_write
from sim2obs.leaderboard.ranking import TIE, aggregate, rank, table_rows

_STYLE = """
*{box-sizing:border-box}
body{font-family:system-ui,sans-serif;margin:0 auto;padding:1em 1.5em;max-width:1400px;color:#222}
.scroll{max-width:100%;overflow-x:auto}
table{border-collapse:collapse;margin:0.5em 0 1em;font-size:13px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
td{max-width:30em;overflow-wrap:anywhere}
th{background:#f0f0f0;cursor:pointer;user-select:none}
th.sorted-asc::after{content:" \\25B2"} th.sorted-desc::after{content:" \\25BC"}
tr.unranked td{color:#777} tr.reference td{color:#555;font-style:italic;background:#fafafa}
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(400px,1fr));gap:8px;margin:0.5em 0 1.5em}
.plots h4{grid-column:1/-1;margin:0.5em 0 0}
.plots img{width:100%;max-width:560px;height:auto;border:1px solid #ddd}
ul.legend{font-size:13px;margin:0.3em 0} ul.legend code{font-size:12px}
pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:12px;white-space:pre-wrap}
.rules{background:#fffbe6;border:1px solid #e6d98c;padding:0.5em 1em}
.download{font-size:13px}
"""

# Click a header to sort by that column; numbers sort numerically ("1.2 ± 0.1" by its mean).
_SORT_JS = """
document.querySelectorAll('table.sortable').forEach(function(table){
  table.querySelectorAll('th').forEach(function(th, col){
    th.addEventListener('click', function(){
      var body = table.tBodies[0], rows = Array.from(body.rows);
      var asc = !th.classList.contains('sorted-asc');
      table.querySelectorAll('th').forEach(function(h){h.classList.remove('sorted-asc','sorted-desc');});
      th.classList.add(asc ? 'sorted-asc' : 'sorted-desc');
      function key(r){var t=r.cells[col].textContent.trim(); var v=parseFloat(t); return isNaN(v)?t:v;}
      rows.sort(function(a,b){var x=key(a),y=key(b);
        if(typeof x==='number'&&typeof y==='number') return asc?x-y:y-x;
        return asc?String(x).localeCompare(String(y)):String(y).localeCompare(String(x));});
      rows.forEach(function(r){body.appendChild(r);});
    });
  });
});
"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_e(title)}</title>"
            f"<style>{_STYLE}</style></head><body>\n{body}\n<script>{_SORT_JS}</script></body></html>\n")


def _write(path: Path, text: str) -> Path:
    atomic_write(path, lambda f: f.write(text), mode="w")
    return path


def _plot_dir(site_dir: Path, run_id: int) -> Path:
    return Path(site_dir) / "plots" / f"run-{run_id}"


def adopt_plots(run_id: int, drawn, site_dir: str | os.PathLike) -> list[Path]:
    """Give the page of ``site_dir`` the plots a task has just drawn for a run it recorded (the
    files :meth:`Task.plot` wrote beside the run's predictions: the drawing :func:`run_plots` would
    repeat from the stored copy of those predictions), copied into the run's plot folder unless it
    holds plots already. Returns the copied paths."""
    drawn = [Path(p) for p in drawn if Path(p).suffix == ".png" and Path(p).is_file()]
    out_dir = _plot_dir(Path(site_dir), run_id)
    if not drawn or (out_dir.is_dir() and any(out_dir.glob("*.png"))):
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    copied = []
    for path in drawn:
        target = out_dir / path.name
        atomic_write(target, lambda f, src=path: f.write(src.read_bytes()))
        copied.append(target)
    return copied


def run_plots(run, task, out_dir: Path) -> list[Path]:
    """The task's plots for one stored run (predicted vs true, residuals, coverage), drawn
    into ``out_dir`` once and listed by file name (the same order on every build); [] when the
    task's data is not on this machine."""
    from sim2obs.predictions import Predictions

    out_dir.mkdir(parents=True, exist_ok=True)
    if not any(out_dir.glob("*.png")):
        predictions = Predictions.load(run.predictions_path)
        aligned, truth = task.align(predictions, run.split)
        task.plot(aligned, truth, out_dir)
    return sorted(out_dir.glob("*.png"), key=lambda p: p.name)


def build_page(board, out_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None,
               task_factory: Callable[[Any], Any] | None = None, log: Callable[[str], None] = lambda s: None) -> Path:
    """Write the site into ``out_dir``; return the path of ``index.html``. Beside it:
    ``<task>.csv`` per task and ``leaderboard.csv`` (every task), the tables for download.

    ``task_factory(run)`` returns the task object for a run (to draw its plots) or None;
    the default rebuilds it from the run's recorded task config with its data in ``data_dir``
    (never generating data).
    """
    from sim2obs.leaderboard.ranking import legend, reference_entries, to_csv
    from sim2obs.tasks import TASKS

    out = Path(out_dir)
    factory = task_factory or _default_factory(data_dir)
    from sim2obs.leaderboard.transfer_board import transfer_section

    sections, toc, csv_all = [], [], []
    for task_name in sorted(set(board.tasks()) | set(board.transfer_tasks())):
        runs = board.runs(task_name)
        transfer_html = transfer_section(board, task_name, out, log)
        if not runs:  # only transfer runs
            sections.append(transfer_html)
            toc.append(f"<li><a href=\"#transfer-{_e(task_name)}\">{_e(task_name)}: transfer</a></li>")
            continue
        meta = TASKS.get(task_name).metadata if task_name in TASKS else None
        entries = rank(aggregate(runs) + reference_entries(meta))
        keys = list(meta.metrics) if meta else sorted({k for r in runs for k in r.metric_dict()})
        header, rows = table_rows(entries, keys)
        table_csv = to_csv(entries, keys)
        _write(out / f"{task_name}.csv", table_csv)
        csv_all.append(table_csv if not csv_all else table_csv.split("\n", 1)[1])
        by_id = {r.id: r for r in runs}
        thead = "".join(f"<th>{_e(h)}</th>" for h in header + ["runs"])
        body_rows, plots_html = [], []
        for e, cells in zip(entries, rows):
            links = " ".join(f"<a href=\"runs/{i}.html\">#{i}</a>" for i in e.run_ids)
            cls = " class=\"reference\"" if e.reference else ("" if e.rank else " class=\"unranked\"")
            body_rows.append(f"<tr{cls}>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + f"<td>{links}</td></tr>")
            if not e.run_ids:
                continue
            best = _best_run([by_id[i] for i in e.run_ids])
            imgs = _plots_for(best, factory, out, log)
            if imgs:
                plots_html.append(f"<div class=\"plots\" data-run=\"{best.id}\"><h4>{_e(e.model_name)} "
                                  f"(run #{best.id})</h4>" + "".join(
                                      f"<a href=\"{_e(p)}\"><img src=\"{_e(p)}\" alt=\"{_e(Path(p).stem)} of run "
                                      f"{best.id}\"></a>" for p in imgs) + "</div>")
        desc = f"<p>{_e(meta.description)}<br><small>{_e(meta.citation)}</small></p>" if meta else ""
        main = (f"<p>Ranked by <b>{_e(entries[0].main_score if entries else '')}</b> on the test set tagged "
                "<i>sim</i> (mean over seeds ± its 1σ bootstrap error on the test set, with the seeds' standard "
                "deviation; runs recorded without errors: mean ± std over seeds); entries scored on other test sets "
                f"are not ranked against it; {TIE} marks a rank within 1σ of the next. Columns were scored on:</p>")
        items = "".join(f"<li><code>{_e(line)}</code></li>" for line in legend(entries))
        legend_html = f"<ul class=\"legend\">{items}</ul>"
        download = f"<p class=\"download\"><a href=\"{_e(task_name)}.csv\" download>Download this table (CSV)</a></p>"
        sections.append(
            f"<section id=\"task-{_e(task_name)}\"><h2>{_e(task_name)}</h2>{desc}{main}{legend_html}"
            f"<div class=\"scroll\"><table class=\"sortable\" data-task=\"{_e(task_name)}\"><thead><tr>{thead}</tr>"
            "</thead><tbody>" + "".join(body_rows) + f"</tbody></table></div>{download}" + "".join(plots_html)
            + "</section>" + transfer_html)
        toc.append(f"<li><a href=\"#task-{_e(task_name)}\">{_e(task_name)}</a> ({len(runs)} runs)</li>")
        if transfer_html:
            toc.append(f"<li><a href=\"#transfer-{_e(task_name)}\">{_e(task_name)}: transfer</a></li>")
        for run in runs:
            _write(out / "runs" / f"{run.id}.html", _run_page(run, out, factory, log))
    if csv_all:
        _write(out / "leaderboard.csv", "".join(csv_all))
    rules = ("<div class=\"rules\"><b>Rules.</b> Every number is recomputed by sim2obs from stored predictions "
             "and held-out truth. No training or model selection on test data; a ranked entry needs at least "
             "3 distinct seeds (or a method declared deterministic). Entries are ranked only against entries "
             "scored on the same test set. Greyed rows are unranked; italic rows are the papers' own numbers "
             "(on their real data), for reference.</div>")
    download = "<p class=\"download\"><a href=\"leaderboard.csv\" download>Download every table (CSV)</a></p>" \
        if csv_all else ""
    body = f"<h1>sim2obs leaderboard</h1>{rules}<ul>{''.join(toc)}</ul>{download}" + "".join(sections)
    if not sections:
        body += "<p>No runs recorded yet: run <code>sim2obs run</code> or <code>sim2obs leaderboard submit</code>.</p>"
    return _write(out / "index.html", _page("sim2obs leaderboard", body))


def _best_run(runs):
    from sim2obs.tasks.metrics import ranking_loss

    return min(runs, key=lambda r: (ranking_loss(r.main_score, r.main_value), r.id))


def _plots_for(run, factory, out: Path, log) -> list[str]:
    folder = _plot_dir(out, run.id)
    if folder.is_dir() and any(folder.glob("*.png")):  # drawn before, or adopted (adopt_plots)
        return [str(p.relative_to(out)) for p in sorted(folder.glob("*.png"), key=lambda p: p.name)]
    task = factory(run)
    if task is None:
        return []
    try:
        paths = run_plots(run, task, folder)
    except Exception as exc:  # noqa: BLE001 - a page without plots beats no page
        log(f"plots of run {run.id} unavailable: {exc}")
        return []
    return [str(p.relative_to(out)) for p in paths]


def _table(pairs) -> str:
    return "<table>" + "".join(f"<tr><td>{_e(k)}</td><td>{v}</td></tr>" for k, v in pairs) + "</table>"


def _submission_html(run) -> str:
    """What a submitter sent, and only that: model, its import path, their own parameters, a
    code link and notes (a predictions file carries no training configuration)."""
    cfg = run.config or {}
    sub = cfg.get("submitted") or {}
    code = sub.get("code_url")
    is_url = str(code).startswith(("http://", "https://"))
    code_html = "" if not code else (f"<a href=\"{_e(code)}\">{_e(code)}</a>" if is_url else _e(code))
    pairs = [("model", _e(run.model_name)), ("_target_", _e(run.model_target or "—")),
             ("model version", _e(run.model_version or "—")),
             ("parameters (count)", _e(run.n_parameters if run.n_parameters is not None else "—")),
             ("seed", _e(run.seed if run.seed is not None else "—")),
             ("deterministic", _e(bool(cfg.get("deterministic", False)))),
             ("file submitted", _e(sub.get("file", "—"))), ("code", code_html or "—"),
             ("notes", _e(sub.get("notes") or "—"))]
    params = sub.get("parameters") or ({} if "submitted" in cfg else
                                       {k: v for k, v in cfg.items() if k not in ("deterministic", "seed")})
    settings = f"<h3>Settings stated by the submitter</h3><pre>{_e(json.dumps(params, indent=2))}</pre>" if params \
        else "<p>The submitter stated no settings.</p>"
    binding = {"preset": cfg.get("preset"), "overrides": cfg.get("overrides"),
               "data": (cfg.get("task_config") or {}).get("data")}
    return (f"<h2>Submission</h2>{_table(pairs)}{settings}<h2>Data it was scored on</h2>"
            f"<pre>{_e(json.dumps(binding, indent=2, default=str))}</pre>")


def _run_page(run, out: Path, factory, log) -> str:
    errors = run.error_dict() if hasattr(run, "error_dict") else {}
    metrics = "<tr><th>metric</th><th>value</th><th>1σ bootstrap error</th></tr>" + "".join(
        f"<tr><td>{_e(k)}</td><td>{v:.6g}</td><td>{'—' if k not in errors else format(errors[k], '.3g')}</td></tr>"
        for k, v in sorted(run.metric_dict().items()))
    n_boot = getattr(run, "n_bootstrap", None)
    boot = "" if n_boot is None else (f"<p>Errors: standard deviation over {n_boot} bootstrap resamples of the "
                                      f"{run.n_objects} test objects (resample seed {run.bootstrap_seed}), "
                                      "recomputed by the board.</p>")
    imgs = "".join(f"<img src=\"../{_e(p)}\" alt=\"{_e(Path(p).stem)}\">" for p in _plots_for(run, factory, out, log))
    prov = {
        "task": f"{run.task} v{run.task_version}", "split": run.split,
        "data": f"{run.data_name} ({run.data_kind}), n = {run.n_objects if run.n_objects is not None else '?'}",
        "data content hash": run.data_content_hash, "model": run.model_name, "_target_": run.model_target,
        "parameters": run.n_parameters, "seed": run.seed, "config hash": run.config_hash,
        "predictions sha256": run.predictions_sha256, "train seconds": run.train_seconds,
        "eval seconds": run.eval_seconds, "sim2obs": run.sim2obs_version, "git commit": run.git_commit,
        "submitter": run.submitter, "recorded": run.created_at, "source": run.source,
    }
    rows = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in prov.items())
    if run.source == "submission":
        config = _submission_html(run)
    else:
        config = f"<h2>Configuration</h2><pre>{_e(json.dumps(run.config, indent=2, default=str))}</pre>"
    body = (f"<p><a href=\"../index.html\">&larr; leaderboard</a></p><h1>Run #{run.id}: {_e(run.model_name)} on "
            f"{_e(run.task)}</h1><h2>Metrics</h2><table>{metrics}</table>{boot}<div class=\"plots\">{imgs}</div>"
            f"{config}<h2>Provenance</h2><table>{rows}</table>"
            f"<h2>Hardware</h2><pre>{_e(json.dumps(run.hardware, indent=2))}</pre>"
            f"<h2>Package versions</h2><pre>{_e(json.dumps(run.package_versions, indent=2))}</pre>")
    return _page(f"run {run.id}", body)


def _default_factory(data_dir) -> Callable[[Any], Any]:
    """Rebuild each run's task from its recorded task config (cached per config)."""
    from sim2obs.tasks import TASKS

    cache: dict[str, Any] = {}

    def factory(run):
        cfg = (run.config or {}).get("task_config")
        if cfg is None or run.task not in TASKS:
            return None
        key = json.dumps([run.task, cfg], sort_keys=True, default=str)
        if key not in cache:
            try:
                task = TASKS.get(run.task)(cfg, data_dir=data_dir)
                if task.prepare(generate=False).content_hash != run.data_content_hash:
                    task = None
            except Exception:  # noqa: BLE001 - data not on this machine: no plots
                task = None
            cache[key] = task
        return cache[key]

    return factory
