"""The report's decision: per task, which model to use and why, in words a reader acts on.

The registry's gate decides which version is the champion; this module says so beside the evidence: the champion
(its registry version, what it is, the run that made it), how it compares with the baselines and with the previous
champion (with confidence intervals), what the gate did with each of this run's models and why, and a plain
warning when a baseline wins. Inputs are plain data (the registry facts the flow reads, the scores of this run), so
any row the stage scores that is not a registered model (a baseline, a reference model) is compared the same way.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tasks.modeling.tasktypes import TASK_TYPES

COMPARED: dict[str, tuple[str, ...]] = {name: kind.compared for name, kind in TASK_TYPES.items()}
"""The metrics a task kind's decision shows, the gate's first (the registry tags them as ``test.METRIC``)."""
LOWER_IS_BETTER = frozenset({"perplexity", "loss", "bits_per_byte"})


@dataclass(frozen=True)
class Row:
    """One line of a task's comparison: a model, what it is to the decision, its figures and the gate's verdict."""

    name: str
    role: str
    values: dict[str, float | None]
    intervals: dict[str, tuple[float, float] | None]
    verdict: str = ""


@dataclass(frozen=True)
class TaskDecision:
    """What the report says about one task."""

    task: str
    kind: str
    headline: str
    metrics: tuple[str, ...]
    rows: list[Row]
    gate: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _label(model: str) -> str:
    return "fine-tuned" if model == "finetuned" else model or "kind not recorded"


def _fmt(value: float | None, interval: tuple[float, float] | None = None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" + (f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "")


def _better(metric: str, a: float, b: float) -> bool:
    return a < b if metric in LOWER_IS_BETTER else a > b


def _pair(ci: Any) -> tuple[float, float] | None:
    return (float(ci[0]), float(ci[1])) if ci else None


def _scored(name: str, role: str, scores: Mapping[str, Any], metrics: Sequence[str], verdict: str = "") -> Row:
    ci = scores.get("ci") or {}
    return Row(name, role, {m: scores.get(m) for m in metrics}, {m: _pair(ci.get(m)) for m in metrics}, verdict)


def _registered(facts: Mapping[str, Any], role: str, metrics: Sequence[str]) -> Row:
    what = _label(facts["model"]) + (f", from {facts['base']}" if facts.get("base") else "")
    return Row(f"v{facts['version']} {what}", role, {m: facts["metrics"].get(f"test.{m}") for m in metrics},
               {m: _pair(facts["intervals"].get(f"test.{m}")) for m in metrics}, facts.get("promotion", ""))


def decide_task(task: str, kind: str, facts: Mapping[str, Any] | None, scores: Mapping[str, Mapping[str, Any]],
                references: Sequence[str]) -> TaskDecision:
    """The decision of one task.

    Args:
        task: the task name.
        kind: its kind (``classification``, ``sft``).
        facts: what the registry holds for it (``pipelines.catalog.decision_facts``), or None when nothing was
            registered.
        scores: this run's ``{model: metrics}`` of the task, baselines included (``ci``: intervals by metric).
        references: the names in ``scores`` that are no registered model (baselines, reference models).
    """
    gate = (facts or {}).get("gate") or {}
    first = str(gate.get("metric", "")).removeprefix("test.") or COMPARED.get(kind, ("macro_f1",))[0]
    metrics = (first, *[m for m in COMPARED.get(kind, ()) if m != first])
    champion = (facts or {}).get("champion")
    rows: list[Row] = []
    gate_lines: list[str] = []
    warnings: list[str] = []
    notes: list[str] = []
    if champion:
        m, value = metrics[0], champion["metrics"].get(f"test.{metrics[0]}")
        where = "this run" if champion["this_run"] else "an earlier run"
        headline = (f"Use {(facts or {}).get('registered_model', task)} v{champion['version']} (alias champion): "
                    f"{_label(champion['model'])}" + (f" model from {champion['base']}" if champion["base"] else "")
                    + f", test {m} {_fmt(value, _pair(champion['intervals'].get(f'test.{m}')))}, registered by "
                    "evaluate run "
                    f"{champion['run_id'] or '?'} in {where}.")
        rows.append(_registered(champion, "champion", metrics))
        if not champion["this_run"]:
            notes.append(f"v{champion['version']} was registered by an earlier run (pipeline run "
                                  f"{champion['pipeline_run_id'] or '?'}): the tables below show this run's models, "
                                  "not it; its figures here are those tagged on the version.")
    else:
        headline = (f"No champion for {task}: no model was registered (evaluate.register_models is false, or no model "
                    "was exported); compare the rows below by hand.")
    if previous := (facts or {}).get("previous"):
        rows.append(_registered(previous, "previous champion", metrics))
        notes.append(f"The champion moved from v{previous['version']} to v{champion['version']} in this run."
                              if champion else f"v{previous['version']} was the champion before this run.")
    elif champion and facts and facts.get("candidates"):
        notes.append(f"The champion did not change in this run (v{champion['version']}).")
    for c in (facts or {}).get("candidates", []):
        verdict = ("promoted: " if c["promoted"] else "kept out: ") + c["reason"]
        rows.append(_scored(f"v{c['version']} {_label(c['model'])}", "this run", scores.get(c["model"], {}), metrics,
                            verdict))
        gate_lines.append(f"v{c['version']} ({_label(c['model'])}): {verdict}")
    if not facts:  # nothing registered: this run's models, unjudged
        rows += [_scored(name, "this run", m, metrics) for name, m in scores.items() if name not in references]
    if gate:
        gate_lines.insert(0, f"Rule: a new version replaces the champion when its test {metrics[0]} is "
                                f"{gate['direction']} by more than {gate['margin']:g}"
                                + (" and its confidence interval clears that bar too" if gate.get("require_ci")
                                   else "") + " (registry.gates in params.yaml).")
    best = rows[0] if champion else max(rows, key=lambda r: _rank(r, metrics[0]), default=None)
    for ref in references:
        row = _scored(ref, "baseline", scores.get(ref, {}), metrics)
        rows.append(row)
        if best is None:
            continue
        for m in metrics:
            ours, theirs = best.values.get(m), row.values.get(m)
            if ours is not None and theirs is not None and _better(m, theirs, ours):
                overlap = _overlap(best.intervals.get(m), row.intervals.get(m))
                warnings.append(
                    f"A baseline beats the {'champion' if champion else 'best model'}: {ref} has test {m} "
                    f"{_fmt(theirs, row.intervals.get(m))} against {best.name}'s {_fmt(ours, best.intervals.get(m))}"
                    + (" (the intervals overlap: the difference may be noise)." if overlap else ".")
                    + " Serve the baseline for this task, or improve the model before relying on it.")
                break
    return TaskDecision(task, kind, headline, metrics, rows, gate_lines, warnings, notes)


def _rank(row: Row, metric: str) -> float:
    value = row.values.get(metric)
    return float("-inf") if value is None else (-value if metric in LOWER_IS_BETTER else value)


def _overlap(a: tuple[float, float] | None, b: tuple[float, float] | None) -> bool:
    return a is not None and b is not None and a[0] <= b[1] and b[0] <= a[1]


def decide(facts: Mapping[str, Mapping[str, Any]], results: Mapping[str, Mapping[str, Mapping[str, Any]]],
           kinds: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> list[TaskDecision]:
    """:func:`decide_task` for every task of ``results``, in its order."""
    return [decide_task(task, kinds[task], facts.get(task), scores, references.get(task, ()))
            for task, scores in results.items()]


def lines(decisions: Sequence[TaskDecision]) -> list[str]:
    """The decisions as log lines: the headline, warnings, then what the gate did."""
    out = []
    for d in decisions:
        out += [f"{d.task}: {d.headline}", *(f"{d.task}: WARNING: {w}" for w in d.warnings),
                *(f"{d.task}: gate: {g}" for g in d.gate[1:])]
    return out


def render(decisions: Sequence[TaskDecision]) -> str:
    """The report's decision section (HTML, every value escaped)."""
    e = html.escape
    parts = ['<section id="decision"><h2>Decision</h2>']
    for d in decisions:
        head = "".join(f"<th>{e(m)}</th>" for m in d.metrics)
        body = "".join(f'<tr class="{e(r.role.replace(" ", "-"))}"><td>{e(r.name)}</td><td>{e(r.role)}</td>'
                       + "".join(f"<td>{e(_fmt(r.values[m], r.intervals[m]))}</td>" for m in d.metrics)
                       + f'<td class="verdict">{e(r.verdict)}</td></tr>' for r in d.rows)
        parts += [f'<div class="task"><h3>{e(d.task)} ({e(d.kind)})</h3>', f'<p class="use">{e(d.headline)}</p>',
                  *(f'<p class="warn">Warning: {e(w)}</p>' for w in d.warnings),
                  *(f'<p class="note">{e(n)}</p>' for n in d.notes),
                  f'<table class="compare"><tr><th>model</th><th>role</th>{head}<th>gate</th></tr>{body}</table>',
                  '<ul class="gate">' + "".join(f"<li>{e(g)}</li>" for g in d.gate) + "</ul></div>"]
    return "\n".join(parts) + "</section>"
