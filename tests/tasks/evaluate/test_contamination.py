"""13-gram contamination: a planted test document is found, clean ones are not, the threshold fails with ids."""

from __future__ import annotations

import pytest

from tasks.evaluate.contamination import (
    ContaminationError,
    check_contamination,
    ngram_hashes,
    normalize,
    overlap,
    training_ngrams,
)

PASSAGE = ("The quick brown fox, it was said, jumped over the lazy dog; then it ran home across the wide field "
           "before the evening rain began to fall on the hills.")


def _words(seed: int, n: int) -> str:
    import random

    rng = random.Random(seed)
    return " ".join(f"w{rng.randrange(10_000)}" for _ in range(n))


def test_normalisation_ignores_case_and_punctuation() -> None:
    assert normalize("Hello, World! It's x_y") == ["hello", "world", "its", "xy"]
    a = ngram_hashes("The quick brown fox jumped!", n=3)
    b = ngram_hashes("the QUICK brown, fox -- jumped", n=3)
    assert list(a) == list(b) and len(a) == 3 and len(ngram_hashes("too short", n=3)) == 0


def test_a_planted_test_document_is_found_and_clean_ones_are_not() -> None:
    train = [_words(i, 200) for i in range(30)]
    train[7] = train[7] + " " + PASSAGE + " " + _words(99, 50)  # the passage hides inside a training document
    ngrams = training_ngrams(iter(train))
    assert ngrams.dtype.name == "uint64" and list(ngrams) == sorted(set(ngrams.tolist()))
    assert list(training_ngrams(train + train, fold_every=300)) == list(ngrams)  # folding in pieces: same set
    planted = {"id": "t-planted", "text": _words(500, 40) + " " + PASSAGE.upper().replace(",", "")}
    near = {"id": "t-near", "text": " ".join(PASSAGE.split()[:12]) + " " + _words(501, 30)}  # 12 words: below n
    rows = [{"id": f"t{i}", "text": _words(1000 + i, 80)} for i in range(8)] + [planted, near]
    rows.append({"id": "t-short", "text": "only a few words"})
    sft = [{"id": "s1", "prompt": "Explain:", "response": PASSAGE}, {"id": "s2", "prompt": "x", "response": "y z"}]
    report = overlap(train=ngrams, eval_sets={"test": rows, "docstring/test": sft})
    assert report["test"]["ids"] == ["t-planted"] and report["test"]["contaminated"] == 1
    assert report["test"]["too_short"] == 1 and report["test"]["share"] == pytest.approx(1 / 11)
    assert report["test"]["overlap_ngrams"] == len(PASSAGE.split()) - 13 + 1
    assert report["docstring/test"]["ids"] == ["s1"] and report["docstring/test"]["share"] == 0.5
    check_contamination(report, max_share=0.5)  # at the limit: allowed
    with pytest.raises(ContaminationError, match=r"docstring/test: 1/2 .*\['s1'\]") as e:
        check_contamination(report, max_share=0.1)
    assert "t-planted" not in str(e.value)  # test's share (1/11 = 9.1%) is below 10%
    with pytest.raises(ContaminationError, match=r"test: 1/11 .*\['t-planted'\]"):
        check_contamination(report, max_share=0.0)


def test_no_training_text_means_no_overlap() -> None:
    report = overlap(train=training_ngrams([]), eval_sets={"test": [{"id": "a", "text": PASSAGE}]})
    assert report["test"]["contaminated"] == 0
