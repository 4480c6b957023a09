"""Tag schemes: spans read as conlleval / seqeval read them (hand cases, and seqeval itself on random sequences),
scheme checks, the detection of a data set's scheme, lossless conversion, and the sentence checks' quarantine
reasons."""

from __future__ import annotations

import random

import pytest

from tasks.modeling.tagging import (
    check_sentence,
    convert,
    detect_scheme,
    entity_types,
    label_types,
    spans,
    training_labels,
    violations,
)

TYPES = ("PER", "LOC")


@pytest.mark.parametrize(("tags", "expected"), [
    (["B-PER", "I-PER", "O", "B-LOC"], [("PER", 0, 1), ("LOC", 3, 3)]),
    (["O", "I-PER", "I-PER", "O"], [("PER", 1, 2)]),  # IOB1 start / IOB2 orphan: conlleval opens an entity
    (["I-PER", "B-PER", "I-PER"], [("PER", 0, 0), ("PER", 1, 2)]),  # IOB1: B- splits adjacent same-type entities
    (["B-PER", "I-LOC", "I-LOC"], [("PER", 0, 0), ("LOC", 1, 2)]),  # a type change mid-entity ends it
    (["B-PER", "B-PER"], [("PER", 0, 0), ("PER", 1, 1)]),
    (["S-PER", "B-LOC", "I-LOC", "E-LOC", "O"], [("PER", 0, 0), ("LOC", 1, 3)]),
    (["B-PER", "E-PER", "E-PER"], [("PER", 0, 1), ("PER", 2, 2)]),  # an E- after E- opens a new one
    (["O", "O"], []),
    ([], []),
])
def test_spans_by_hand(tags: list[str], expected: list[tuple[str, int, int]]) -> None:
    assert spans(tags) == expected


def test_spans_are_seqevals_default_reading_on_random_sequences() -> None:
    from seqeval.metrics.sequence_labeling import get_entities

    rng = random.Random(0)
    vocab = ["O"] + [f"{p}-{t}" for p in "BIES" for t in TYPES]
    for _ in range(3000):
        tags = [rng.choice(vocab) for _ in range(rng.randrange(1, 12))]
        assert spans(tags) == get_entities(tags), tags


@pytest.mark.parametrize("tag", ["PER", "X-PER", "B-", "b-PER", "B_PER", ""])
def test_bad_tags_are_refused(tag: str) -> None:
    with pytest.raises(ValueError, match="not O or B-/I-/E-/S-"):
        spans(["O", tag])


def random_entities(rng: random.Random, length: int) -> list[tuple[str, int, int]]:
    out, i = [], 0
    while i < length:
        if rng.random() < 0.4:
            end = min(length - 1, i + rng.randrange(3))
            out.append((rng.choice(TYPES), i, end))
            i = end + 1
        else:
            i += 1
    return out


def test_conversion_between_schemes_keeps_the_entities() -> None:
    from tasks.modeling.tagging import write

    rng = random.Random(1)
    for _ in range(2000):
        n = rng.randrange(1, 10)
        entities = random_entities(rng, n)
        for scheme in ("IOB1", "IOB2", "BIOES"):
            tags = write(entities, n, scheme)
            assert spans(tags) == entities
            assert violations(tags, scheme) == [], (scheme, tags)
            for other in ("IOB1", "IOB2", "BIOES"):
                assert convert(convert(tags, other), scheme) == tags


def test_writing_each_scheme_by_hand() -> None:
    entities = [("PER", 0, 1), ("PER", 2, 2), ("LOC", 4, 4)]
    assert convert(["B-PER", "I-PER", "B-PER", "O", "B-LOC"], "IOB1") == ["I-PER", "I-PER", "B-PER", "O", "I-LOC"]
    assert convert(["I-PER", "I-PER", "B-PER", "O", "I-LOC"], "IOB2") == ["B-PER", "I-PER", "B-PER", "O", "B-LOC"]
    assert convert(["B-PER", "I-PER", "B-PER", "O", "B-LOC"], "BIOES") == ["B-PER", "E-PER", "S-PER", "O", "S-LOC"]
    assert spans(["B-PER", "E-PER", "S-PER", "O", "S-LOC"]) == entities


def test_violations_name_the_word_and_the_rule() -> None:
    assert violations(["O", "I-PER"], "IOB2") == [(1, "I-PER follows O: in IOB2 an entity starts with B-")]
    assert violations(["I-PER"], "IOB2")[0][1].startswith("I-PER follows nothing")
    assert violations(["B-PER", "I-LOC"], "IOB2")[0][0] == 1  # a type change is an I- that follows nothing of its type
    assert violations(["O", "I-PER"], "IOB1") == []
    assert violations(["O", "B-PER"], "IOB1")[0][0] == 1
    assert violations(["I-PER", "B-PER"], "IOB1") == []
    assert violations(["B-PER", "O"], "BIOES")[0][0] == 0  # a B- that is never closed
    assert violations(["O", "E-PER"], "BIOES")[0][0] == 1
    assert violations(["S-PER"], "IOB2") == [(0, "S-PER is not an IOB2 tag (E-/S- are BIOES)")]


def test_detecting_the_scheme_of_a_data_set() -> None:
    iob2 = [["B-PER", "I-PER", "O"], ["O", "B-LOC"], ["O", "I-LOC"]]  # one annotation error
    report = detect_scheme(iob2)
    assert (report.scheme, report.breaks, report.sentences) == ("IOB2", {"IOB1": 2, "IOB2": 1}, 3)
    iob1 = [["I-PER", "I-PER", "O"], ["O", "I-LOC", "B-LOC"], ["I-ORG"]]
    assert detect_scheme(iob1).scheme == "IOB1"
    assert detect_scheme([["O", "O"], ["B-PER"]]).scheme == "IOB2"  # nothing tells IOB1: the common reading
    assert detect_scheme([["B-PER", "E-PER"], ["S-LOC", "O"]]).scheme == "BIOES"
    assert detect_scheme([]).scheme == "IOB2"


def test_label_sets() -> None:
    assert entity_types(["O", "B-PER", "I-LOC", "S-PER"]) == ["LOC", "PER"]
    assert training_labels(["PER", "LOC"]) == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    assert label_types(["O", "B-PER", "I-PER"]) == {"PER"}
    assert label_types(["PER", "LOC"]) == {"PER", "LOC"}


@pytest.mark.parametrize(("tokens", "tags", "labels", "scheme", "reason"), [
    ("a b", ["O", "O"], None, "IOB2", "non_string_field"),
    (["a", 3], ["O", "O"], None, "IOB2", "non_string_field"),
    (["a", "b"], ["O", None], None, "IOB2", "non_string_field"),
    (["a", "b"], [0, 1], None, "IOB2", "non_string_field"),  # integer tags need labels to name them
    ([], [], None, "IOB2", "empty_field"),
    (["a", " "], ["O", "O"], None, "IOB2", "empty_field"),
    (["a", "b"], ["O"], None, "IOB2", "length_mismatch"),
    (["a", "b"], ["O", "PER"], None, "IOB2", "invalid_tag"),
    (["a", "b"], ["O", "B-ORG"], ["O", "B-PER", "I-PER"], "IOB2", "unknown_label"),
    (["a", "b"], ["O", "B-ORG"], ["PER"], "IOB2", "unknown_label"),
    (["a", "b"], ["O", "I-PER"], None, "IOB2", "invalid_tag_sequence"),
    (["a", "b"], ["B-PER", "O"], None, "BIOES", "invalid_tag_sequence"),
])
def test_bad_sentences_get_a_quarantine_reason(tokens: object, tags: object, labels: list[str] | None, scheme: str,
                                               reason: str) -> None:
    got = check_sentence(tokens, tags, labels=labels, scheme=scheme)
    assert got[0] == reason, got
    assert isinstance(got[1], str) and got[1]


def test_good_sentences_pass_and_integer_tags_are_named_by_the_labels() -> None:
    labels = ["O", "B-PER", "I-PER"]
    assert check_sentence(["Ann", "Lee", "ran"], [1, 2, 0], labels=labels, scheme="IOB2") == (
        ["Ann", "Lee", "ran"], ["B-PER", "I-PER", "O"])
    assert check_sentence(("New York",), ["I-LOC"], labels=["LOC"], scheme="IOB1") == (["New York"], ["I-LOC"])
    assert check_sentence(["a"], ["I-PER"], labels=None, scheme=None) == (["a"], ["I-PER"])  # scheme not checked
    detail = check_sentence(["a", "b", "c"], ["O", "I-PER", "I-LOC"], labels=None, scheme="IOB2")[1]
    assert "tag 1 ('b')" in detail and "(and 1 more)" in detail
