"""Greedy sft generations through the chat template, and ROUGE / BLEU / chrF against hand-checked values."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tasks.evaluate.generation import GenerationEvalError, evaluate_generation, generate, generation_metrics
from tests.tasks.training.finetune_fixtures import SFT_PAIRS


def test_identical_text_scores_full_marks_and_disjoint_text_none() -> None:
    same = generation_metrics(references=["the cat sat on the mat."], hypotheses=["the cat sat on the mat."])
    assert same["rouge1"] == same["rouge2"] == same["rougeL"] == pytest.approx(1.0)
    assert same["bleu"] == pytest.approx(100.0) and same["chrf"] == pytest.approx(100.0)
    assert same["exact_match"] == 1.0
    none = generation_metrics(references=["the cat sat on the mat."], hypotheses=["xyz qqq"])
    assert none["rouge1"] == none["rougeL"] == 0.0 and none["bleu"] == 0.0 and none["exact_match"] == 0.0


def test_partial_overlap_matches_hand_computed_rouge() -> None:
    # reference 6 tokens "the cat sat on the mat"; hypothesis 3 tokens "the cat sat": all 3 in the reference
    m = generation_metrics(references=["the cat sat on the mat"], hypotheses=["the cat sat"])
    # unigrams: P = 3/3, R = 3/6 -> F = 2/3; bigrams: P = 2/2, R = 2/5 -> F = 4/7; LCS 3: as unigrams
    assert m["rouge1"] == pytest.approx(2 / 3) and m["rougeL"] == pytest.approx(2 / 3)
    assert m["rouge2"] == pytest.approx(4 / 7)
    assert m["bleu"] == 0.0 and 0 < m["chrf"] < 100 and m["mean_words"] == 3  # BLEU: no 4-gram in 3 words
    # every n-gram of "the cat sat on the" is in the reference: BLEU is the brevity penalty, exp(1 - 6/5)
    assert generation_metrics(references=["the cat sat on the mat"], hypotheses=["the cat sat on the"])["bleu"] == \
        pytest.approx(100 * math.exp(1 - 6 / 5))
    # averaged over examples: the perfect one and the partial one
    two = generation_metrics(references=["the cat sat on the mat", "a b c"], hypotheses=["the cat sat", "a b c"])
    assert two["rouge1"] == pytest.approx((2 / 3 + 1) / 2) and two["exact_match"] == 0.5
    with pytest.raises(GenerationEvalError, match="same non-zero number"):
        generation_metrics(references=["a"], hypotheses=[])


def test_a_fitted_sft_model_answers_its_prompts_and_the_rows_save_as_jsonl(lm_inputs: dict[str, Path],
                                                                          tmp_path: Path) -> None:
    from tasks.examples import write_rows

    rows = [{"id": f"s{i}", "prompt": p, "response": r} for i, (p, r) in enumerate(SFT_PAIRS)]
    metrics, gens = evaluate_generation(model_dir=lm_inputs["sft"], rows=rows, max_new_tokens=24)
    assert [g["id"] for g in gens] == ["s0", "s1", "s2"] and [g["reference"] for g in gens] == [r for _, r in SFT_PAIRS]
    assert [g["completion"] for g in gens] == [r for _, r in SFT_PAIRS]  # fitted: greedy decoding reproduces them
    assert metrics["exact_match"] == 1.0 and metrics["bleu"] == pytest.approx(100.0)
    untrained, _ = evaluate_generation(model_dir=lm_inputs["lm"], rows=rows, max_new_tokens=24)
    assert untrained["rougeL"] < 0.5
    write_rows(tmp_path / "gen.jsonl", gens)
    assert [json.loads(line) for line in (tmp_path / "gen.jsonl").read_text().splitlines()] == gens


def test_a_model_without_chat_template_is_refused(lm_inputs: dict[str, Path]) -> None:
    with pytest.raises(GenerationEvalError, match="chat_template"):
        generate(model_dir=lm_inputs["base"], rows=[{"prompt": "x", "response": "y"}])
