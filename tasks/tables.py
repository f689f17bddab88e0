"""Plain-text tables, CSV rows and progress lines of task runs (also used by the leaderboard)."""
from __future__ import annotations

import csv
import os
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from sim2obs.atomic import atomic_write


def log_stderr(line: str) -> None:
    """Print a progress line to stderr with a UTC time stamp, flushed (long jobs speak in logs)."""
    print(time.strftime("%H:%M:%S", time.gmtime()), line, file=sys.stderr, flush=True)


def _stderr_is_terminal() -> bool:
    """Progress bars by default: on a terminal, and in a Jupyter kernel (tqdm.auto draws widgets)."""
    if "ipykernel" in sys.modules:
        return True
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):
        return False


def results_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A plain-text table: task, method, kind, main score, our value (± its 1σ bootstrap error),
    the paper's value."""
    header = ("task", "method", "kind", "score", "value", "paper (real data)")
    lines = []
    for r in rows:
        paper = r.get("paper")
        ptxt = "" if not paper else (f"{paper['metric']} = " if paper.get("metric") else "") + \
            f"{paper['value']:.4g}" + (f"  {paper['note']}" if paper.get("note") else "")
        err = (r.get("errors") or {}).get(r["main_score"])
        value = f"{r['value']:.4g}" + ("" if err is None else f" ± {err:.2g}")
        lines.append((r["task"], r["method"], r["kind"], r["main_score"], value, ptxt))
    return text_table(header, lines)


def text_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned plain-text columns with a dashed rule under the header."""
    cells = [[str(c) for c in header], *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(cells[0]), line(["-" * w for w in widths]), *map(line, cells[1:])])


def write_csv_rows(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write dict rows as a CSV table atomically (columns in order of first appearance, floats to
    6 significant digits); nothing is written for no rows."""
    if not rows:
        return
    keys = list(dict.fromkeys(k for r in rows for k in r))

    def write(f):
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})

    atomic_write(Path(path), write, mode="w")
