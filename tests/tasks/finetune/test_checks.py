"""Record checks: every quarantine reason, through the entry point on a file with one bad record of each kind."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.finetune.checks import check_record, jsonable, load_tokenizer
from tasks.finetune.errors import NoExamplesError
from tasks.finetune.items import DEFAULT_FIELDS, REASONS, Bad, Example, Raw
from tests.tasks.finetune.conftest import labelled, rows, run, task, write_jsonl


def test_every_reason_is_quarantined_with_where_and_detail(tmp_path: Path, tokenizer_dir: Path) -> None:
    good = labelled({"a": 4, "b": 4})
    bad = [
        {"label": "a"},                                   # missing_field
        {"text": ["not", "a", "string"], "label": "a"},   # non_string_field
        {"text": "   \n", "label": "a"},                  # empty_field
        {"text": "a fine text", "label": "zebra"},         # unknown_label
        {"text": "x" * 201, "label": "a"},                # too_long (max_chars 200)
        {"text": "the cat " * 20, "label": "b"},           # too_long_tokens (max_length 32)
        dict(good[0]),                                    # duplicate of the first
        {"text": "a fine text", "label": True},           # non_string_field: a bool is no label
    ]
    write_jsonl(tmp_path / "data.jsonl", good + bad)
    with open(tmp_path / "data.jsonl", "a") as f:
        f.write("{broken\n")
    counters = run(tmp_path, [task(labels=["a", "b"], max_chars=200)], tokenizer_dir, max_length=32)
    quarantine = rows(tmp_path, "t", "quarantine")
    found = {(q["where"], q["reason"]) for q in quarantine}
    n = len(good)
    assert found == {(f"data.jsonl:{n + 1}", "missing_field"), (f"data.jsonl:{n + 2}", "non_string_field"),
                     (f"data.jsonl:{n + 3}", "empty_field"), (f"data.jsonl:{n + 4}", "unknown_label"),
                     (f"data.jsonl:{n + 5}", "too_long"), (f"data.jsonl:{n + 6}", "too_long_tokens"),
                     (f"data.jsonl:{n + 7}", "duplicate"), (f"data.jsonl:{n + 8}", "non_string_field"),
                     (f"data.jsonl:{n + 9}", "invalid_json")}
    duplicate = next(q for q in quarantine if q["reason"] == "duplicate")
    assert duplicate["detail"] == "same as data.jsonl:1 (label 'a')" and duplicate["record"] == good[0]
    assert all(q["detail"] for q in quarantine)
    assert counters["t.quarantined"] == 9 and counters["t.quarantined.non_string_field"] == 2
    assert counters["t.examples_in"] == n + 9 and counters["t.kept"] == n
    assert {q["reason"] for q in quarantine} <= set(REASONS)


def test_sft_too_long_tokens_counts_the_rendered_prompt(tmp_path: Path, tokenizer_dir: Path) -> None:
    from tasks.examples import render_prompt

    tok = load_tokenizer(tokenizer_dir)
    prompt_tokens = len(tok.encode(render_prompt("hi"), add_special_tokens=False).ids)
    response = "the cat sat"
    n = prompt_tokens + len(tok.encode(response, add_special_tokens=False).ids) + 1
    write_jsonl(tmp_path / "data.jsonl", [{"prompt": "hi", "response": response}] * 2)
    data = [{"kind": "files", "paths": ["data.jsonl"]}]
    with pytest.raises(NoExamplesError, match="too_long_tokens"):
        run(tmp_path, [task("s", "sft", data)], tokenizer_dir, max_length=n - 1)
    counters = run(tmp_path, [task("s", "sft", data)], tokenizer_dir, max_length=n)
    assert counters["s.kept"] == 1 and counters["s.quarantined.duplicate"] == 1


def test_integer_labels_become_strings_and_split_names_map() -> None:
    fields = {**DEFAULT_FIELDS, "split": "part"}
    ex = check_record(Raw("f:1", {"text": "t", "label": 7, "part": "Validation"}, fields), task_type="classification",
                      labels=None, max_chars=10)
    assert isinstance(ex, Example) and ex.values == {"text": "t", "label": "7"} and ex.split == "val"
    bad = check_record(Raw("f:2", {"text": "t", "label": 7, "part": "holdout"}, fields), task_type="classification",
                       labels=None, max_chars=10)
    assert isinstance(bad, Bad) and bad.reason == "unknown_split"


def test_sft_fields_and_missing_nan(tmp_path: Path) -> None:
    ok = check_record(Raw("f:1", {"prompt": "p", "response": "r"}, DEFAULT_FIELDS), task_type="sft", labels=None,
                      max_chars=2)
    assert isinstance(ok, Example) and ok.values == {"prompt": "p", "response": "r"}
    long = check_record(Raw("f:1", {"prompt": "p", "response": "rr"}, DEFAULT_FIELDS), task_type="sft", labels=None,
                        max_chars=2)
    assert isinstance(long, Bad) and long.reason == "too_long"  # prompt and response together
    nan = check_record(Raw("f:2", {"prompt": float("nan"), "response": "r"}, DEFAULT_FIELDS), task_type="sft",
                       labels=None, max_chars=10)
    assert isinstance(nan, Bad) and nan.reason == "missing_field" and nan.record["prompt"] == "nan"


def test_token_counts_follow_the_training_layout(tokenizer_dir: Path) -> None:
    from tasks.examples import render_prompt
    from tasks.finetune.checks import drop_too_long

    tok = load_tokenizer(tokenizer_dir)
    ex = Example("i", {"prompt": "the cat", "response": "sat on a mat"}, "w")
    expected = (len(tok.encode(render_prompt("the cat"), add_special_tokens=False).ids)
                + len(tok.encode("sat on a mat", add_special_tokens=False).ids) + 1)
    assert drop_too_long(tok, "sft", [ex], expected) == ([ex], [])  # exactly max_length tokens fit, one more not
    kept, bad = drop_too_long(tok, "sft", [ex], expected - 1)
    assert kept == [] and [(b.reason, b.detail) for b in bad] == [("too_long_tokens",
                                                                  f"{expected} tokens > max_length {expected - 1}")]
    cls = Example("j", {"text": "<|eos|>", "label": "a"}, "w")
    assert drop_too_long(tok, "classification", [cls], 2)[0] == []  # a special token spelled in data stays plain text


def test_jsonable_keeps_records_writable() -> None:
    assert jsonable({"a": b"x", 1: [float("inf"), None, "y" * 2100]}) == {
        "a": "b'x'", "1": ["inf", None, "y" * 2000 + "...[2100 chars]"]}
