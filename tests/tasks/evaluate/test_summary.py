"""The evaluate stage's summaries: flat metrics with the number of documents or examples beside every figure, costs
from distill's metrics, the report's rows, a model card's evaluation, the funnel and the shift tables."""

from __future__ import annotations

from tasks.evaluate import summary

LM = {"base": {"perplexity": 30.5, "bits_per_byte": 1.7921234567, "documents": 15, "tokens": 900},
      "unigram": {"perplexity": 200.0, "bits_per_byte": 2.8, "documents": 15},
      "finetuned/qa": {"perplexity": 33.0, "bits_per_byte": 1.85, "documents": 15}}
TASKS = {"topic": {"finetuned": {"examples": 40, "accuracy": 0.9, "macro_f1": 0.85, "labels": ["a", "b"],
                                 "confusion": [[18, 2], [2, 18]], "ci": {"macro_f1": [0.7, 0.95], "bootstrap": 50}},
                   "tfidf_logreg": {"examples": 40, "accuracy": 0.8, "macro_f1": 0.75}},
         "qa": {"finetuned": {"perplexity": 12.0, "loss": 2.48, "examples": 40, "rougeL": 0.3, "generated": 16},
                "lead": {"rougeL": 0.2, "generated": 16}}}
COSTS = {"teacher.topic.latency_p50_ms": 4.0, "teacher.topic.params": 1000, "student.topic.params": 500}
CONTAMINATION = {"dedup/test": {"share": 0.2, "documents": 15}}
HARNESS = {"tasks": {"lmforge_dedup_test": {"bits_per_byte": 1.79212, "word_perplexity": 80.0}},
           "samples": {"lmforge_dedup_test": 15}}


def test_every_lm_figure_has_its_document_count() -> None:
    stats = summary.flat_metrics(contamination=CONTAMINATION, lm=LM, tasks=TASKS, costs=COSTS, harness=HARNESS)
    assert stats["base.lm.bits_per_byte"] == 1.792123 and stats["base.lm.documents"] == 15
    assert stats["finetuned.qa.lm.documents"] == 15 and "finetuned.qa.lm.tokens" not in stats
    assert stats["harness.lmforge_dedup_test.documents"] == 15
    assert stats["harness.lmforge_dedup_test.bits_per_byte"] == 1.79212
    assert stats["contamination.dedup/test.share"] == 0.2
    assert stats["finetuned.qa.test.examples"] == 40 and stats["finetuned.qa.test.generated"] == 16
    assert stats["finetuned.topic.test.macro_f1_ci_low"] == 0.7 and "finetuned.topic.test.bootstrap_ci_low" not in stats
    # the fine-tuned model is distill's teacher: its costs are the teacher's
    assert stats["finetuned.topic.latency_p50_ms"] == 4.0 and stats["finetuned.topic.params"] == 1000
    assert "tfidf_logreg.topic.params" not in stats
    no_harness = summary.flat_metrics(contamination={}, lm=LM, tasks={}, costs={}, harness=None)
    assert not [k for k in no_harness if k.startswith("harness.")]


def test_report_rows_carry_documents_and_examples() -> None:
    stats = summary.flat_metrics(contamination={}, lm={**LM, "unigram_byte": LM["unigram"]}, tasks=TASKS, costs=COSTS)
    rows = {r["name"]: r for r in summary.report_rows(TASKS, stats, {"finetuned/topic": True})}
    assert rows["base"]["lm_documents"] == 15 and rows["base"]["bits_per_byte"] == 1.792123
    assert rows["unigram"]["baseline"] and not rows["base"]["baseline"]
    assert rows["finetuned/qa"]["lm_documents"] == 15 and rows["finetuned/qa"]["generated"] == 16
    assert rows["finetuned/topic"]["examples"] == 40 and rows["finetuned/topic"]["promoted"] is True
    assert rows["tfidf_logreg/topic"]["baseline"] and rows["tfidf_logreg/topic"]["promoted"] is None
    assert {k for r in rows.values() for k in r} - {"name", "baseline"} <= set(summary.COLUMNS)


def test_card_evaluation_counts_what_each_figure_covers() -> None:
    evaluation, intervals, counts = summary.card_evaluation("sft", TASKS["qa"]["finetuned"], LM["finetuned/qa"])
    assert evaluation == {"test": {"perplexity": 12.0, "loss": 2.48, "rougeL": 0.3},
                          "dedup/test": {"perplexity": 33.0, "bits_per_byte": 1.85}}
    assert counts == {"test": {"perplexity": 40, "loss": 40, "rougeL": 16},
                      "dedup/test": {"perplexity": 15, "bits_per_byte": 15}}
    evaluation, intervals, counts = summary.card_evaluation("classification", TASKS["topic"]["finetuned"])
    assert intervals == {"test": {"macro_f1": (0.7, 0.95)}} and counts == {"test": {"accuracy": 40, "macro_f1": 40}}


def test_funnel_and_shift_from_other_stages_metrics() -> None:
    clean = {"funnel.collected.docs": 100, "funnel.collected.chars": 9000, "funnel.kept.docs": 80,
             "funnel.kept.chars": 7000, "kept": 80}
    assert [r["name"] for r in summary.funnel(clean)] == ["collected", "kept"]
    assert summary.funnel({}) == []
    shift = summary.shift({"topic.shift.length_ratio": 1.1, "topic.test.accuracy": 0.9})
    assert shift == [{"name": "topic", "length_ratio": 1.1}]
