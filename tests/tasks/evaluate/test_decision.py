"""The report's decision per task (issue 27 item 1): the champion with its registry version, kind and run; the
comparison with the baselines and the previous champion, with intervals; what the gate did and why; a plain warning
when a baseline wins; and a hint when the champion comes from an earlier run than the tables below it."""

from __future__ import annotations

from typing import Any

from tasks.evaluate.decision import decide, decide_task, lines, render

GATE = {"metric": "test.macro_f1", "direction": "higher", "margin": 0.01, "require_ci": False}


def version(number: str, model: str, base: str, f1: float, ci: tuple[float, float], *, this_run: bool,
            promotion: str = "promoted: ...") -> dict[str, Any]:
    """Registry facts of one version, as pipelines.catalog.decision_facts gives them."""
    return {"version": number, "model": model, "base": base, "run_id": f"run{number}",
            "pipeline_run_id": f"pipe{number}", "metrics": {"test.macro_f1": f1, "test.accuracy": f1 + 0.05},
            "intervals": {"test.macro_f1": list(ci)},
            "promotion": promotion, "this_run": this_run}


def scores(f1: float, ci: tuple[float, float]) -> dict[str, Any]:
    return {"macro_f1": f1, "accuracy": f1 + 0.05, "ci": {"macro_f1": list(ci)}}


def test_an_earlier_champion_a_refused_candidate_and_a_baseline_that_wins() -> None:
    # the case: after a second run the registry kept the first run's int8 champion (0.685), this run's
    # fine-tuned model was refused, and TF-IDF + LR (0.711) beats them all
    facts = {"registered_model": "lmforge-doc_section", "gate": GATE,
             "champion": version("5", "int8", "student v4", 0.685, (0.62, 0.75), this_run=False),
             "previous": None,
             "candidates": [{"model": "finetuned", "version": "6", "promoted": False,
                             "reason": "test.macro_f1 0.67 is not > 0.695 (champion v5 0.685 + margin 0.01)"}]}
    d = decide_task("doc_section", "classification", facts,
                    {"finetuned": scores(0.67, (0.6, 0.73)), "tfidf_logreg": scores(0.711, (0.65, 0.77))},
                    ["tfidf_logreg"])
    assert d.headline == ("Use lmforge-doc_section v5 (alias champion): int8 model from student v4, test macro_f1 "
                          "0.685 [0.620, 0.750], registered by evaluate run run5 in an earlier run.")
    assert d.warnings == ["A baseline beats the champion: tfidf_logreg has test macro_f1 0.711 [0.650, 0.770] against "
                          "v5 int8, from student v4's 0.685 [0.620, 0.750] (the intervals overlap: the difference may "
                          "be noise). Serve the baseline for this task, or improve the model before relying on it."]
    assert d.gate == ["Rule: a new version replaces the champion when its test macro_f1 is higher by more than 0.01 "
                      "(registry.gates in params.yaml).",
                      "v6 (fine-tuned): kept out: test.macro_f1 0.67 is not > 0.695 (champion v5 0.685 + margin 0.01)"]
    assert d.notes == ["v5 was registered by an earlier run (pipeline run pipe5): the tables below show this run's "
                       "models, not it; its figures here are those tagged on the version.",
                       "The champion did not change in this run (v5)."]
    assert [(r.name, r.role, r.values["macro_f1"]) for r in d.rows] == [
        ("v5 int8, from student v4", "champion", 0.685), ("v6 fine-tuned", "this run", 0.67),
        ("tfidf_logreg", "baseline", 0.711)]
    assert lines([d])[1].startswith("doc_section: WARNING: A baseline beats the champion: tfidf_logreg")
    page = render([d])
    assert "Warning: A baseline beats the champion" in page and 'class="champion"' in page


def test_a_champion_that_moved_in_this_run_against_the_previous_one_and_no_registry() -> None:
    facts = {"registered_model": "lmforge-complete",
             "gate": {"metric": "test.perplexity", "direction": "lower", "margin": 0.5, "require_ci": True},
             "champion": {**version("3", "student", "finetuned v2", 0, (0, 0), this_run=True),
                          "metrics": {"test.perplexity": 30.0, "test.rougeL": 0.2},
                          "intervals": {"test.perplexity": [28.0, 32.0]}},
             "previous": {**version("1", "finetuned", "models/base", 0, (0, 0), this_run=False),
                          "metrics": {"test.perplexity": 40.0, "test.rougeL": 0.1}, "intervals": {}},
             "candidates": [{"model": "student", "version": "3", "promoted": True, "reason": "test.perplexity 30 < "
                             "39.5 (champion v1 40 - margin 0.5), confidence interval too"}]}
    [d] = decide({"complete": facts}, {"complete": {"student": {"perplexity": 30.0, "rougeL": 0.2},
                                                    "lead": {"rougeL": 0.15}}},
                 {"complete": "sft"}, {"complete": ["lead"]})
    assert d.metrics == ("perplexity", "rougeL")
    assert d.headline.startswith("Use lmforge-complete v3 (alias champion): student model from finetuned v2, test "
                                 "perplexity 30.000 [28.000, 32.000], registered by evaluate run run3 in this run.")
    assert d.notes == ["The champion moved from v1 to v3 in this run."]
    assert d.gate[0].endswith("is lower by more than 0.5 and its confidence interval clears that bar too "
                              "(registry.gates in params.yaml).")
    assert d.warnings == []  # the lead baseline's ROUGE-L 0.15 is below the champion's 0.2
    assert [r.role for r in d.rows] == ["champion", "previous champion", "this run", "baseline"]
    # nothing registered: no champion named, the best model of the run is what a baseline is held against
    [d] = decide({}, {"topic": {"finetuned": scores(0.5, (0.4, 0.6)), "tfidf_logreg": scores(0.9, (0.85, 0.95))}},
                 {"topic": "classification"}, {"topic": ["tfidf_logreg"]})
    assert d.headline.startswith("No champion for topic: no model was registered")
    assert d.warnings[0].startswith("A baseline beats the best model: tfidf_logreg has test macro_f1 0.900")
    assert "(the intervals overlap" not in d.warnings[0]
