"""What the evaluate stage's scores become: flat metrics (``metrics/evaluate.json``), the report's rows, the gate's
inputs. Plain dicts in, plain dicts out: the stage's flow reads the files and sends these on.

Every language-model figure has its ``documents`` beside it (``MODEL.lm.documents``,
``harness.TASK.documents``), and every task figure its ``examples`` (``generated`` for completions): a number
means little without what it was measured on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tasks.modeling.tasktypes import TASK_TYPES

COST_KEYS = ("latency_p50_ms", "tokens_per_second", "params", "size_bytes")
"""Read from metrics/distill.json per model and task (distill measured them; this stage does not time again)."""
LM_KEYS = ("perplexity", "bits_per_byte", "documents")
"""Per language model: per-token perplexity and bits per byte of data/dedup's test split, and its documents."""
# in the report, perplexity is a task model's test perplexity (sft: response tokens); lm_perplexity and bits_per_byte
# are per token and per byte of the lm_documents of data/dedup's test split
COLUMNS = ("task", "accuracy", "macro_f1", "macro_f1_ci", "entity_f1", "entity_f1_ci", "f1", "f1_ci", "exact_match",
           "examples", "perplexity", "lm_perplexity", "bits_per_byte", "lm_documents", "rougeL", "bleu", "chrf",
           "generated", *COST_KEYS, "promoted")
TABLES = {"Tasks: test split quality": ("task", "accuracy", "macro_f1", "macro_f1_ci", "examples", "perplexity",
                                        "rougeL", "bleu", "chrf", "generated", "promoted"),
          "Tagging and question answering: test split quality": ("task", "entity_f1", "entity_f1_ci", "f1", "f1_ci",
                                                                 "exact_match", "examples", "promoted"),
          "Language modelling (data/dedup test split) and costs": ("task", "lm_perplexity", "bits_per_byte",
                                                                  "lm_documents", *COST_KEYS)}
"""The report's model tables: :data:`COLUMNS` in three, so that each fits a 1,400-pixel page (a table shows the rows
and columns that have values)."""
BASELINES = ("tfidf_logreg", "lead", "most_frequent_tag", "overlap_sentence")
GENERATED = ("rouge1", "rouge2", "rougeL", "bleu", "chrf", "exact_match", "mean_words")
"""Metrics of greedy completions: measured on the ``generated`` first test prompts, not every ``examples``."""
LM_ROWS = ("base", "unigram", "unigram_byte")


def _value(v: Any) -> Any:
    return round(v, 6) if isinstance(v, float) else v


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def flat_metrics(*, contamination: Mapping[str, Mapping[str, Any]], lm: Mapping[str, Mapping[str, Any]],
                 tasks: Mapping[str, Mapping[str, Mapping[str, Any]]], costs: Mapping[str, Any],
                 harness: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The stage's flat metrics (``metrics/evaluate.json``; the registry adds its own keys).

    Args:
        contamination: the contamination report (``{set: {"share", ...}}``).
        lm: ``{model: lm metrics}`` (``base``, ``unigram``, ``unigram_byte``, ``finetuned/TASK``...).
        tasks: ``{task: {model: metrics}}`` of the task models and their baselines.
        costs: metrics/distill.json; its ``teacher`` is the fine-tuned model.
        harness: lm-evaluation-harness's result, or None when it did not run.

    Returns:
        ``contamination.SET.share``, ``MODEL.lm.{perplexity,bits_per_byte,documents}``, ``MODEL.TASK.test.METRIC``
        (``_ci_low`` / ``_ci_high`` for intervals), ``MODEL.TASK.COST`` and ``harness.TASK.METRIC``.
    """
    stats: dict[str, Any] = {f"contamination.{name}.share": round(r["share"], 6) for name, r in contamination.items()}
    for name, m in lm.items():
        stats |= {f"{name.replace('/', '.')}.lm.{k}": _value(m[k]) for k in LM_KEYS}
    for task, per_model in tasks.items():
        for name, m in per_model.items():
            stats |= {f"{name}.{task}.test.{k}": _value(v) for k, v in m.items() if _number(v)}
            for k, v in m.get("ci", {}).items():
                if isinstance(v, list):
                    stats |= {f"{name}.{task}.test.{k}_ci_low": _value(v[0]), f"{name}.{task}.test.{k}_ci_high":
                              _value(v[1])}
            source = "teacher" if name == "finetuned" else name
            stats |= {f"{name}.{task}.{k}": costs[f"{source}.{task}.{k}"] for k in COST_KEYS
                      if f"{source}.{task}.{k}" in costs}
    for task, res in (harness or {}).get("tasks", {}).items():
        stats |= {f"harness.{task}.{k}": _value(v) for k, v in res.items()}
        stats[f"harness.{task}.documents"] = harness["samples"][task]
    return stats


def costs(stats: Mapping[str, Any], *, model: str, task: str) -> dict[str, Any]:
    """A model's costs (:data:`COST_KEYS`) from :func:`flat_metrics`, those distill measured."""
    return {k: stats[f"{model}.{task}.{k}"] for k in COST_KEYS if f"{model}.{task}.{k}" in stats}


def gate_metrics(kind: str, m: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """The version tags the registry gate reads (flat ``test.METRIC``) and their intervals."""
    # the type's compared metrics (its gate's among them); a causal LM's loss and BLEU too
    keys = (*TASK_TYPES[kind].compared, *(("loss", "bleu") if TASK_TYPES[kind].generative else ())) \
        if kind in TASK_TYPES else ("perplexity", "loss", "rougeL", "bleu")
    values = {f"test.{k}": float(m[k]) for k in keys if k in m}
    return values, {f"test.{k}": tuple(m["ci"][k]) for k in keys if k in m.get("ci", {})}


def card_evaluation(kind: str, m: Mapping[str, Any], lm: Mapping[str, Any] | None = None
                    ) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, tuple[float, float]]],
                               dict[str, dict[str, int]]]:
    """A model card's evaluation, intervals and counts (split -> metric -> documents or examples measured on): the
    gate's metrics on the task's ``test`` split and, for a language model scored on the corpus, ``dedup/test``."""
    values, intervals = gate_metrics(kind, m)
    test = {k.removeprefix("test."): v for k, v in values.items()}
    # exact_match is a generated figure of sft, a question's of extractive QA (no "generated" there)
    counts = {"test": {k: m["generated"] if k in GENERATED and "generated" in m else m["examples"] for k in test}}
    evaluation = {"test": test}
    if lm:
        evaluation["dedup/test"] = {k: float(lm[k]) for k in ("perplexity", "bits_per_byte")}
        counts["dedup/test"] = dict.fromkeys(evaluation["dedup/test"], int(lm["documents"]))
    return evaluation, {"test": {k.removeprefix("test."): v for k, v in intervals.items()}}, counts


def report_rows(tasks: Mapping[str, Mapping[str, Mapping[str, Any]]], stats: Mapping[str, Any],
                promoted: Mapping[str, bool]) -> list[dict[str, Any]]:
    """The report's model table: the language models first, then one row per model and task; baselines flagged.

    Args:
        tasks: ``{task: {model: metrics}}``.
        stats: :func:`flat_metrics` (the language-model figures and costs come from there).
        promoted: ``{"MODEL/TASK": promoted?}`` of the registered models (empty when none was registered).
    """
    rows: list[dict[str, Any]] = []
    for name in LM_ROWS:
        rows.append({"name": name, "task": "lm", "baseline": name != "base",
                     **{f"lm_{k}" if k != "bits_per_byte" else k: stats.get(f"{name}.lm.{k}") for k in LM_KEYS}})
    for task, per_model in tasks.items():
        for model, m in per_model.items():
            rows.append({"name": f"{model}/{task}", "task": task, "baseline": model in BASELINES,
                         **{k: m.get(k) for k in ("accuracy", "macro_f1", "entity_f1", "f1", "exact_match",
                                                  "examples", "perplexity", "rougeL", "bleu", "chrf", "generated")},
                         "macro_f1_ci": m.get("ci", {}).get("macro_f1"),
                         "entity_f1_ci": m.get("ci", {}).get("entity_f1"), "f1_ci": m.get("ci", {}).get("f1"),
                         **{f"lm_{k}" if k != "bits_per_byte" else k: stats.get(f"{model}.{task}.lm.{k}")
                            for k in LM_KEYS},
                         **{k: stats.get(f"{model}.{task}.{k}") for k in COST_KEYS},
                         "promoted": promoted.get(f"{model}/{task}")})
    return rows


def confusion(tasks: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> dict[str, Any] | None:
    """The first fine-tuned classifier's test confusion matrix, for the report (None without a classifier)."""
    for task, per_model in tasks.items():
        if "confusion" in per_model.get("finetuned", {}):
            m = per_model["finetuned"]
            return {"labels": m["labels"], "matrix": m["confusion"], "title": f"finetuned/{task} (test)"}
    return None


def funnel(clean: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The clean stage's funnel from metrics/clean.json, widest step first (the file keeps keys sorted, not in step
    order)."""
    steps = {k.split(".")[1] for k in clean if k.startswith("funnel.")}
    rows = [{"name": s, "docs": clean.get(f"funnel.{s}.docs"), "chars": clean.get(f"funnel.{s}.chars")} for s in steps]
    return sorted(rows, key=lambda r: (-(r["docs"] or 0), -(r["chars"] or 0)))


def shift(finetune: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The finetune stage's train/test shift figures from metrics/finetune.json, one row per task."""
    rows: dict[str, dict[str, Any]] = {}
    for key, value in finetune.items():
        task, _, rest = key.partition(".shift.")
        if rest:
            rows.setdefault(task, {"name": task})[rest] = value
    return list(rows.values())


def texts_size(texts: Sequence[str]) -> dict[str, int]:
    """``{"documents", "bytes"}`` of a list of documents (UTF-8)."""
    return {"documents": len(texts), "bytes": sum(len(t.encode("utf-8")) for t in texts)}


def base_checkpoint(finetuned_dir: Path) -> str | None:
    """One line naming the checkpoint the fine-tuned models started from (source, revision or hub commit, content
    digest, license), from their ``finetune_summary.json``; None when it was lmforge's own models/base."""
    import json

    path = Path(finetuned_dir) / "finetune_summary.json"
    record = json.loads(path.read_text(encoding="utf-8")).get("base_checkpoint") if path.is_file() else None
    if not record:
        return None
    pin = record.get("commit") or record.get("revision")
    return (f"{record['source']}{f'@{pin}' if pin else ''} ({record.get('model_type')}, {record['digest']}, "
            f"license: {record.get('license') or 'not stated'})")
