"""The evaluation report: one self-contained ``index.html`` with its PNG plots beside it.

It opens from disk with no server and no network: CSS inline, images as relative ``<img src>``, no script, no CDN;
the only absolute links are the MLflow run URLs the caller passes. Inputs are plain dicts, so the report renders
whatever the stage measured; every value is HTML-escaped.
"""

from __future__ import annotations

import html
import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tasks.atomic import atomic_write_bytes, atomic_write_text
from tasks.evaluate.decision import TaskDecision, render

CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222;font-size:14px;max-width:1340px}
table{border-collapse:collapse;margin:1em 0;max-width:100%}th,td{border:1px solid #ccc;padding:3px 6px;
text-align:right}th{background:#f3f3f3;font-weight:600}td:first-child,th:first-child{text-align:left}
tr.baseline td{color:#666;font-style:italic}img{max-width:100%;border:1px solid #eee}
.plots{display:flex;flex-wrap:wrap;gap:1em}figure{margin:0}#decision .task{margin:0 0 1.5em}
#decision p.use{font-size:16px;font-weight:600}#decision p.warn{background:#fff1f0;border-left:4px solid #c0392b;
padding:6px 10px}#decision td.verdict,#decision td:nth-child(2){text-align:left}#decision td.verdict{max-width:520px}
#decision tr.champion td{background:#eef6ff;font-weight:600}#decision th:last-child{text-align:left}"""


def _cell(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return "" if v is None else str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    if isinstance(v, Sequence) and not isinstance(v, str) and len(v) == 2:  # a confidence interval
        return f"[{_cell(v[0])}, {_cell(v[1])}]"
    return html.escape(str(v))


def table(rows: Sequence[Mapping[str, Any]], *, columns: Sequence[str] | None = None, key: str = "name",
          css_class: Mapping[int, str] | None = None) -> str:
    """An HTML table of dict rows: ``key`` first, then ``columns`` (default: every key, in first-seen order)."""
    if not rows:
        return "<p>(none)</p>"
    cols = list(columns or dict.fromkeys(k for r in rows for k in r if k != key))
    # a long column name may break after an underscore: the table fits the page instead of running off it
    head = "".join(f"<th>{html.escape(c).replace('_', '_<wbr>')}</th>" for c in [key, *cols])
    body = "".join(f"<tr{' class=' + repr(css_class[i]) if css_class and i in css_class else ''}>"
                   + "".join(f"<td>{_cell(r.get(c))}</td>" for c in [key, *cols]) + "</tr>"
                   for i, r in enumerate(rows))
    return f"<table><tr>{head}</tr>{body}</table>"


def _figure(fig: Any, path: Path) -> Path:
    import io

    buf = io.BytesIO()
    if fig.get_layout_engine() is None:  # a figure with its own engine (constrained: a legend outside) keeps it
        fig.tight_layout()
    fig.savefig(buf, format="png", metadata={"Software": None})
    atomic_write_bytes(path, buf.getvalue())
    return path


def quality_latency_figure(models: Sequence[Mapping[str, Any]], *, quality: str, latency: str) -> Any:
    """Quality against latency, one marker per model (squares: baselines), named in a legend beside the axes: models
    of the same size sit on top of each other, and labels written at the points overlapped there."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [m for m in models if isinstance(m.get(quality), int | float) and isinstance(m.get(latency), int | float)]
    # constrained layout makes room for the legend beside the axes (tight_layout would leave it cut off)
    fig, ax = plt.subplots(figsize=(8.5, 4.2), dpi=100, layout="constrained")
    cmap = plt.get_cmap("tab20")
    for i, m in enumerate(points):
        ax.scatter(m[latency], m[quality], marker="s" if m.get("baseline") else "o", color=cmap(i % 20), s=40,
                   label=str(m["name"]), alpha=0.85)
    ax.set_xlabel(latency)
    ax.set_ylabel(quality)
    ax.set_title(f"{quality} vs {latency}" + ("" if points else " (no model has both)"))
    if points:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False,
                  ncols=1 + len(points) // 16)
    return fig


def _plots(out: Path, models: Sequence[Mapping[str, Any]], *, quality: str, latency: str,
           bar_metrics: Sequence[str], confusion: Mapping[str, Any] | None) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = [_figure(quality_latency_figure(models, quality=quality, latency=latency),
                       out / "quality_vs_latency.png")]
    plt.close("all")
    for metric in bar_metrics:
        have = [m for m in models if isinstance(m.get(metric), int | float)]
        if not have:  # an empty chart says nothing; the table shows the metric is missing
            continue
        # constrained: the slanted names stay inside the picture, each ending under its bar
        fig, ax = plt.subplots(figsize=(min(13.0, max(5.0, 0.8 * len(have) + 2)), 4.2), dpi=100,
                               layout="constrained")
        ax.bar(range(len(have)), [m[metric] for m in have],
               color=["#999" if m.get("baseline") else "#3a7bd5" for m in have])
        ax.set_xticks(range(len(have)), [str(m["name"]) for m in have], rotation=35, ha="right",
                      rotation_mode="anchor", fontsize=8)
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} by model (grey: baselines)")
        written.append(_figure(fig, out / f"compare_{metric}.png"))
        plt.close(fig)
    if confusion:
        labels, matrix = list(confusion["labels"]), confusion["matrix"]
        fig, ax = plt.subplots(figsize=(1.2 * len(labels) + 2.5, 1.1 * len(labels) + 2), dpi=100)
        ax.imshow(matrix, cmap="Blues")
        for i, row in enumerate(matrix):
            for j, v in enumerate(row):
                ax.text(j, i, str(v), ha="center", va="center", fontsize=9)
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(str(confusion.get("title", "confusion matrix")))
        written.append(_figure(fig, out / "confusion.png"))
        plt.close(fig)
    return written


def write_report(*, out_dir: Path, models: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None,
                 quality: str = "bits_per_byte", latency: str = "latency_ms",
                 bar_metrics: Sequence[str] = ("bits_per_byte",), confusion: Mapping[str, Any] | None = None,
                 learning_curves: Sequence[Path] = (), funnel: Sequence[Mapping[str, Any]] = (),
                 shift: Sequence[Mapping[str, Any]] = (), contamination: Mapping[str, Mapping[str, Any]] | None = None,
                 mlflow_runs: Mapping[str, str] | None = None, title: str = "lmforge evaluation",
                 tables: Mapping[str, Sequence[str]] | None = None, decisions: Sequence[TaskDecision] = ()) -> Path:
    """Write ``out_dir/index.html`` and its plots (PNG files beside it); returns the HTML file.

    Args:
        out_dir: e.g. ``reports/evaluate``.
        models: one row per model or baseline: ``name``, ``baseline`` (bool), and any metric or cost columns.
        columns: the model table's columns, in order (default: every key seen).
        quality: the metric on the quality-vs-latency plot's y axis.
        latency: the cost on its x axis.
        bar_metrics: metrics that get a model-comparison bar chart each (skipped when no model has it).
        confusion: ``{"labels": [...], "matrix": [[...]], "title": str}`` of the classifier, or None.
        learning_curves: PNG files shown by relative link (e.g. the fine-tune stage's learning curves).
        funnel: data funnel rows (``name`` = step, then counters).
        shift: distribution-shift rows (``name`` = split or feature, then figures).
        contamination: :func:`tasks.evaluate.contamination.overlap`'s report.
        mlflow_runs: ``{label: URL}`` of the MLflow runs: the only absolute links in the page.
        title: the page title.
        tables: instead of one table of ``columns``, one table per title with its columns (a row appears in a table
            when it has a value in a column only that table shows; a column no shown row fills is left out): narrow
            enough for a 1,400-pixel page.
        decisions: the decision per task (``tasks.evaluate.decision``), shown first.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots = _plots(out, models, quality=quality, latency=latency, bar_metrics=bar_metrics, confusion=confusion)
    groups = dict(tables) if tables else {"": list(columns or [])}
    model_tables = []
    # a row appears in a table when it has a value in a column of that table's own (not one every table shares)
    seen = Counter(c for cols in groups.values() for c in cols[1:])
    for heading, cols in groups.items():
        own = [c for c in cols[1:] if seen[c] == 1] or cols[1:]
        shown = [m for m in models if not tables or any(m.get(c) is not None for c in own)]
        if tables:  # a column no shown row fills (another task type's metric) is left out: the page stays narrow
            cols = [*cols[:1], *[c for c in cols[1:] if any(m.get(c) is not None for m in shown)]]
        rows = [{k: v for k, v in m.items() if k != "baseline"} for m in shown]
        marks = {i: "baseline" for i, m in enumerate(shown) if m.get("baseline")}
        model_tables.append((f"<h3>{html.escape(heading)}</h3>" if heading else "")
                            + table(rows, columns=cols or None, css_class=marks))
    figures = "".join(f'<figure><img src="{html.escape(p.name)}" alt="{html.escape(p.stem)}"><figcaption>'
                      f"{html.escape(p.stem)}</figcaption></figure>" for p in plots)
    # relative links: the report folder can be opened (or copied with its neighbours) without a server
    rel = [Path(os.path.relpath(Path(c).resolve(), out.resolve())).as_posix() for c in learning_curves]
    curves = "".join(f'<figure><img src="{html.escape(r)}" alt="{html.escape(Path(r).stem)}"><figcaption>'
                     f"{html.escape(r)}</figcaption></figure>" for r in rel)
    contam = [{"name": name, **{k: (", ".join(r["ids"][:20]) + (" ..." if len(r["ids"]) > 20 else "")
                                    if k == "ids" else r[k]) for k in ("documents", "too_short", "contaminated",
                                                                        "share", "ids")}}
              for name, r in sorted((contamination or {}).items())]
    links = "".join(f'<li><a href="{html.escape(url, quote=True)}">{html.escape(label)}</a></li>'
                    for label, url in sorted((mlflow_runs or {}).items()))
    body = [f"<h1>{html.escape(title)}</h1>", render(decisions) if decisions else "",
            "<h2>Models and baselines</h2>", *model_tables,
            f'<h2>Plots</h2><div class="plots">{figures}</div>',
            f'<h2>Learning curves</h2><div class="plots">{curves or "<p>(none)</p>"}</div>',
            "<h2>Data funnel</h2>", table(list(funnel)), "<h2>Distribution shift</h2>", table(list(shift)),
            "<h2>Contamination (word 13-gram overlap with training data)</h2>", table(contam),
            f"<h2>MLflow runs</h2><ul>{links or '<li>(none)</li>'}</ul>"]
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{CSS}</style></head><body>" + "\n".join(body) + "</body></html>\n")
    atomic_write_text(out / "index.html", page)
    return out / "index.html"
