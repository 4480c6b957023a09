"""SQuAD exact match and F1 against values worked out by hand by the official SQuAD 2.0 script's rules, against
torchmetrics' SQuAD metric (the official v1.1 script's normalisation, token F1 and maximum over the gold answers,
installed with the dev tools, so it runs offline) on answerable questions, and against the v2.0 script itself (the
``evaluate`` package's ``squad_v2``) where it can be loaded."""

from __future__ import annotations

import random

import pytest

from tasks.modeling.tasktypes.squad_metrics import exact, normalize_answer, question_scores, squad_scores, token_f1


@pytest.mark.parametrize(("text", "normal"), [
    ("The  Cat, sat!", "cat sat"),               # lower case, punctuation, article, spaces
    ("An apple a day", "apple day"),             # every article, as whole words only
    ("theatre another", "theatre another"),      # words that start with an article stay
    ("A-B (c)", "ab c"),                         # punctuation goes without leaving a space
    ("  Éclair\tau\ncafé ", "éclair au café"),  # non-ASCII kept; any white space collapses
    ("the", ""),
])
def test_normalisation_follows_the_script(text: str, normal: str) -> None:
    assert normalize_answer(text) == normal


def test_exact_match_and_token_f1_by_hand() -> None:
    assert exact("Paris", "paris.") == 1 and exact("the Eiffel Tower", "Eiffel tower") == 1
    assert exact("Paris", "Paris France") == 0
    # gold cat sat on mat (4 tokens), prediction cat on mat (3): P 1, R 3/4
    assert token_f1("the cat sat on the mat", "cat on mat") == pytest.approx(6 / 7)
    # tokens count with multiplicity: gold x y y, prediction y y y z share 2: P 2/4, R 2/3
    assert token_f1("x y y", "y y y z") == pytest.approx(4 / 7)
    assert token_f1("cat", "dog") == 0.0
    # either side empty: 1 if both are, else 0
    assert token_f1("", "") == 1.0 and token_f1("the", "") == 1.0 and token_f1("cat", "") == 0.0


def test_the_maximum_over_gold_answers_and_the_no_answer_rules() -> None:
    assert question_scores(["Denver Broncos", "Broncos"], "Broncos") == (1, 1.0)
    em, f1 = question_scores(["Denver Broncos", "Broncos"], "the Denver team")
    assert em == 0 and f1 == pytest.approx(0.5)  # denver broncos vs denver team: P 1/2, R 1/2
    assert question_scores([], "") == (1, 1.0) and question_scores([], "Paris") == (0, 0.0)
    assert question_scores(["Paris"], "") == (0, 0.0)
    assert question_scores(["the"], "") == (1, 1.0)  # a gold answer normalising to nothing is dropped


def test_means_over_questions_and_the_answerable_groups() -> None:
    out = squad_scores([["Paris"], [], ["cat sat"]], ["paris", "", "cat"])
    assert out["examples"] == 3
    assert out["exact_match"] == pytest.approx(2 / 3)
    assert out["f1"] == pytest.approx((1 + 1 + 2 / 3) / 3)  # cat vs cat sat: P 1, R 1/2
    assert out["has_answer"] == pytest.approx({"examples": 2, "exact_match": 0.5, "f1": 5 / 6})
    assert out["no_answer"] == {"examples": 1, "exact_match": 1.0, "f1": 1.0}
    assert out["per_question"]["f1"] == pytest.approx([1, 1, 2 / 3])
    assert "has_answer" not in squad_scores([["a b"]], ["b"])
    with pytest.raises(ValueError, match="same non-zero"):
        squad_scores([["a"]], [])


def _official() -> object:
    evaluate = pytest.importorskip("evaluate")
    try:
        return evaluate.load("squad_v2")
    except Exception as exc:  # offline, the metric's script cannot be fetched from the hub
        pytest.skip(f"the evaluate package's squad_v2 metric cannot be loaded here: {type(exc).__name__}")


def test_agrees_with_the_official_script_on_random_cases() -> None:
    metric = _official()
    rng = random.Random(0)
    words = ["the", "a", "cat", "Cat,", "sat", "mat.", "on", "an", "dog!", "x"]
    refs = [[" ".join(rng.choices(words, k=rng.randint(1, 4))) for _ in range(rng.randint(0, 3))] for _ in range(60)]
    preds = [" ".join(rng.choices(words, k=rng.randint(0, 4))) for _ in range(60)]
    ours = squad_scores(refs, preds)
    theirs = metric.compute(  # type: ignore[attr-defined]
        predictions=[{"id": str(i), "prediction_text": p, "no_answer_probability": 0.0} for i, p in enumerate(preds)],
        references=[{"id": str(i), "answers": {"text": r, "answer_start": [0] * len(r)}} for i, r in enumerate(refs)])
    assert ours["exact_match"] * 100 == pytest.approx(theirs["exact"])
    assert ours["f1"] * 100 == pytest.approx(theirs["f1"])


def test_agrees_with_torchmetrics_squad_on_random_answerable_questions() -> None:
    """Question by question: torchmetrics implements the official v1.1 script (answerable questions only; v2.0 adds
    the no-answer rules checked by hand above)."""
    from torchmetrics.functional.text import squad

    rng = random.Random(1)
    words = ["the", "a", "cat", "Cat,", "sat", "mat.", "on", "an", "dog!", "x", "Éclair", "(y)"]
    checked = 0
    for i in range(300):
        refs = [" ".join(rng.choices(words, k=rng.randint(1, 5))) for _ in range(rng.randint(1, 3))]
        if not all(normalize_answer(r) for r in refs):
            continue  # v2.0 drops a gold answer that normalises to nothing, v1.1 keeps it: outside this comparison
        pred = " ".join(rng.choices(words, k=rng.randint(0, 5)))
        theirs = squad(preds=[{"id": str(i), "prediction_text": pred}],
                       target=[{"id": str(i), "answers": {"text": refs, "answer_start": [0] * len(refs)}}])
        em, f1 = question_scores(refs, pred)
        assert (em * 100, f1 * 100) == pytest.approx((float(theirs["exact_match"]), float(theirs["f1"])), abs=1e-4), \
            (refs, pred)
        checked += 1
    assert checked > 150
