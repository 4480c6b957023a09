"""Entity-level scores: hand-computed cases, the tricky sequences read as conlleval reads them (and not as seqeval's
strict mode would), and per-sentence counts that sum to seqeval's figures."""

from __future__ import annotations

import random

import pytest

from tasks.modeling.entity_metrics import EntityScoreError, entity_scores, micro_from_counts, sentence_counts
from tasks.modeling.tagging import convert


def test_a_hand_computed_case() -> None:
    refs = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "I-ORG"]]
    preds = [["B-PER", "I-PER", "O", "B-PER"], ["O", "B-ORG", "O"]]
    # true: PER 0-1, LOC 3, ORG 1-2; predicted: PER 0-1, PER 3, ORG 1 (a partial span is a miss); one hit
    got = entity_scores(refs, preds)
    assert got["entity_precision"] == pytest.approx(1 / 3) and got["entity_recall"] == pytest.approx(1 / 3)
    assert got["entity_f1"] == pytest.approx(1 / 3)
    assert got["token_accuracy"] == pytest.approx(5 / 7)
    assert (got["sentences"], got["entities"], got["predicted"]) == (2, 3, 3)
    assert got["per_type"] == {"LOC": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1},
                               "ORG": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1},
                               "PER": {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3), "support": 1}}
    assert sentence_counts(refs, preds) == [[1, 2, 2, 3, 4], [0, 1, 1, 2, 3]]


def test_an_i_without_b_counts_as_an_entity_as_conlleval_counts_it() -> None:
    from seqeval.metrics import f1_score
    from seqeval.scheme import IOB2

    refs, preds = [["O", "B-PER", "I-PER"]], [["O", "I-PER", "I-PER"]]
    assert entity_scores(refs, preds)["entity_f1"] == 1.0
    assert f1_score(refs, preds) == 1.0  # seqeval's default mode is conlleval's
    assert f1_score(refs, preds, mode="strict", scheme=IOB2) == 0.0  # strict drops the ill-formed chunk: not chosen


def test_a_type_change_mid_entity_gives_two_entities_and_no_hit() -> None:
    got = entity_scores([["B-PER", "I-PER", "O"]], [["B-PER", "I-LOC", "O"]])
    assert (got["entity_precision"], got["entity_recall"], got["entity_f1"], got["predicted"]) == (0.0, 0.0, 0.0, 2)
    assert got["token_accuracy"] == pytest.approx(2 / 3)


def test_iob1_references_are_read_by_their_own_rules() -> None:
    refs = [["I-PER", "I-PER", "B-PER", "O", "I-LOC"]]  # IOB1: PER 0-1, PER 2, LOC 4
    assert entity_scores(refs, refs)["entity_f1"] == 1.0
    assert entity_scores(refs, refs)["entities"] == 3
    as_iob2 = [convert(refs[0], "IOB2")]
    same = entity_scores(refs, as_iob2)
    assert same["entity_f1"] == 1.0 and same["token_accuracy"] == pytest.approx(3 / 5)  # tags compared as written
    merged = entity_scores(refs, [["I-PER", "I-PER", "I-PER", "O", "I-LOC"]])  # one PER 0-2 instead of two
    assert (merged["entity_precision"], merged["entity_recall"]) == (0.5, pytest.approx(1 / 3))


def test_nothing_to_find_and_nothing_found_scores_zero() -> None:
    got = entity_scores([["O", "O"]], [["O", "O"]])
    assert (got["entity_f1"], got["token_accuracy"], got["per_type"]) == (0.0, 1.0, {})
    assert entity_scores([], [])["entity_f1"] == 0.0


def test_mismatched_inputs_are_refused() -> None:
    with pytest.raises(EntityScoreError, match="1 reference sentences and 2"):
        entity_scores([["O"]], [["O"], ["O"]])
    with pytest.raises(EntityScoreError, match="sentence 0: 2 reference tags and 1"):
        sentence_counts([["O", "O"]], [["O"]])


def test_counts_sum_to_seqevals_figures_on_random_sets() -> None:
    from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score

    rng = random.Random(0)
    vocab = ["O", "O", "O"] + [f"{p}-{t}" for p in "BIES" for t in ("PER", "LOC", "ORG")]
    for _ in range(200):
        refs = [[rng.choice(vocab) for _ in range(rng.randrange(1, 9))] for _ in range(rng.randrange(1, 6))]
        preds = [[t if rng.random() < 0.6 else rng.choice(vocab) for t in r] for r in refs]
        got = entity_scores(refs, preds)
        summed = micro_from_counts([sum(c) for c in zip(*sentence_counts(refs, preds), strict=True)])
        for name, value in (("entity_precision", precision_score(refs, preds, zero_division=0)),
                            ("entity_recall", recall_score(refs, preds, zero_division=0)),
                            ("entity_f1", f1_score(refs, preds, zero_division=0)),
                            ("token_accuracy", accuracy_score(refs, preds))):
            assert got[name] == pytest.approx(value)
            assert summed[name] == pytest.approx(value)
