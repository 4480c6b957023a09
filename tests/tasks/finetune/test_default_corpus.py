"""The default tasks derived from a tiny data/dedup written here with pyarrow in the records schema, laid out as
the clean stage leaves the default corpus (no blank lines, no indentation)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tasks.finetune.default_corpus import (
    PREFIX,
    cap_train,
    document_sections,
    first_sentences,
    is_class_line,
    is_signature,
    iter_default_classification,
    iter_default_sft,
    pack_lines,
    rebalance_eval,
)
from tasks.finetune.errors import DefaultCorpusError
from tasks.finetune.items import Example
from tests.tasks.finetune.conftest import rows, run, task

PROSE = ("The statement evaluates each expression in turn and binds the result to the target names.",
         "When the target is a subscription the object must support item assignment or it raises an error.",
         "Names bound in a class body are local to that body and become attributes of the class object.")
OVERVIEW = ("This module provides helpers for reading configuration files in a simple format.",
            "It keeps the order of sections and supports interpolation of values between them.",
            "Use the reader class for files and the parser function for strings held in memory.")
API = ("Return the parsed value of the named option as an integer or raise an error otherwise.",
       "The fallback is returned when the option is missing and no default section supplies it.")


def _module(name: str) -> str:
    return "\n".join([f"The {name} module.", *OVERVIEW, "get_int(self, section, option, fallback=None) -> int", *API,
                      "class Reader(Base, Mixin)", f"Read {name} files. More text follows here in a sentence.",
                      "parse(text, *, strict=True)", "Parse the text e.g. a string of options. It returns a dict.",
                      "ignored() extra words here"])


def write_dedup(root: Path, docs: dict[str, list[tuple[str, str]]]) -> Path:
    """``root/{split}/part-00000.parquet`` with columns id, text, source, url, path, metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for split, items in docs.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        table = pa.table({"id": [f"{i:032x}" for i in range(len(items))], "text": [t for _, t in items],
                          "source": ["default"] * len(items), "url": [None] * len(items),
                          "path": [p for p, _ in items],
                          "metadata": [json.dumps({"format": "pydoc"})] * len(items)},
                         schema=pa.schema([(c, pa.string()) for c in ("id", "text", "source", "url", "path",
                                                                      "metadata")]))
        pq.write_table(table, root / split / "part-00000.parquet")
    return root


@pytest.fixture
def dedup(tmp_path: Path) -> Path:
    return write_dedup(tmp_path / "dedup", {
        "train": [("pydoc:topics/assign", "\n".join(PROSE * 3)), ("pydoc:module/configparser", _module("ini"))],
        "val": [("pydoc:module/netrc", _module("netrc"))],
        "test": [("pydoc:topics/for", "\n".join(PROSE[::-1] * 3)), ("pydoc:module/shlex", _module("shell"))],
    })


def test_signatures_and_class_lines() -> None:
    assert is_signature("decode(self, s, _w=WHITESPACE.match)") and is_signature("async run(self, *a) -> None")
    assert is_signature("f(x) -> dict[str, int]")
    assert not is_signature("Return the value (an int) of x.") and not is_signature("print(x) for example")
    assert not is_signature("class Foo(Bar)") and is_class_line("class Foo(Bar, metaclass=M)")
    assert not is_class_line("class of objects (see above)")


def test_pack_lines_and_first_sentences() -> None:
    # the 41-character tail "c...\nd..." is under min_chars: dropped
    assert pack_lines(["a" * 150, "b" * 100, "c" * 30, "", "d" * 10], min_chars=50, max_chars=260) == [
        "a" * 150 + "\n" + "b" * 100]
    assert first_sentences(["Parse the text e.g. a", "string. It returns."]) == "Parse the text e.g. a string."
    assert first_sentences(["x" * 301 + "."]) is None
    assert first_sentences(["One. Two. Three."], sentences=2) == "One. Two."


def test_sections() -> None:
    sections = document_sections("pydoc:module/m", _module("m"))
    assert sections["overview"] == ["The m module.", *OVERVIEW]
    assert sections["api"][:2] == list(API) and "class Reader(Base, Mixin)" not in sections["api"]
    assert not any(is_signature(line) for line in sections["api"])
    assert list(document_sections("pydoc:topics/x", "a\nb")) == ["reference"]


def test_classification_labels_and_document_splits(dedup: Path) -> None:
    items = list(iter_default_classification(dedup))
    got = Counter((i.split, i.record["label"]) for i in items)
    assert got == {("train", "reference"): 2, ("train", "overview"): 1, ("train", "api"): 1,
                   ("val", "overview"): 1, ("val", "api"): 1,
                   ("test", "reference"): 2, ("test", "overview"): 1, ("test", "api"): 1}
    assert all(200 <= len(i.record["text"]) <= 600 for i in items)
    assert items[0].where == f"{PREFIX}pydoc:topics/assign#p0"


def test_sft_pairs(dedup: Path) -> None:
    items = list(iter_default_sft(dedup))
    train = [i.record for i in items if i.split == "train"]
    assert train == [{"prompt": "get_int(self, section, option, fallback=None) -> int", "response": API[0]},
                     {"prompt": "parse(text, *, strict=True)", "response": "Parse the text e.g. a string of options."}]
    assert Counter(i.split for i in items) == {"train": 2, "val": 2, "test": 2}


def _ex(i: int, label: str, split: str, where: str = PREFIX) -> Example:
    return Example(f"{label}{split}{i}", {"text": f"{label} {split} {i}", "label": label}, f"{where}d#p{i}", split)


def test_rebalance_pools_a_class_short_in_val_or_test() -> None:
    examples = ([_ex(i, "r", "val") for i in range(2)] + [_ex(i, "r", "test") for i in range(30)]
                + [_ex(i, "o", "val") for i in range(12)] + [_ex(i, "o", "test") for i in range(12)]
                + [_ex(i, "x", "val", "file:") for i in range(1)])
    out = rebalance_eval(examples, min_eval=10, seed=0)
    got = Counter((ex.values["label"], ex.split) for ex in out)
    assert got == {("r", "val"): 16, ("r", "test"): 16, ("o", "val"): 12, ("o", "test"): 12, ("x", "val"): 1}
    assert out == rebalance_eval(examples, min_eval=10, seed=0) != rebalance_eval(examples, min_eval=10, seed=1)


def test_cap_water_fills_the_classes() -> None:
    examples = ([_ex(i, "small", "train") for i in range(100)] + [_ex(i, "big", "train") for i in range(900)]
                + [_ex(i, "mid", "train") for i in range(500)] + [_ex(i, "big", "val") for i in range(50)])
    out = cap_train(examples, max_train=700, seed=0, label="label")
    assert Counter((ex.values["label"], ex.split) for ex in out) == {
        ("small", "train"): 100, ("big", "train"): 300, ("mid", "train"): 300, ("big", "val"): 50}
    assert cap_train(examples, max_train=5000, seed=0, label="label") == examples
    assert len(cap_train(examples, max_train=10, seed=0, label=None)) == 60


def test_end_to_end_default_tasks(tmp_path: Path, dedup: Path, tokenizer_dir: Path) -> None:
    tasks = [task("doc_section", data=[{"kind": "default"}], min_per_class=1),
             task("docstring", "sft", [{"kind": "default"}])]
    counters = run(tmp_path, tasks, tokenizer_dir, dedup_dir=dedup, default_min_eval=1, max_length=2048)
    assert {r["label"] for r in rows(tmp_path, "doc_section", "train")} == {"reference", "overview", "api"}
    assert counters["doc_section.train"] == 4 and counters["doc_section.quarantined"] == 0
    # reference has no val passage: its 2 test passages are pooled and split one and one
    assert counters["doc_section.labels.reference.val"] == counters["doc_section.labels.reference.test"] == 1
    assert counters["doc_section.val"] == 3 and counters["doc_section.test"] == 3
    assert counters["docstring.train"] == 2 and counters["docstring.quarantined.duplicate"] == 4  # same per module
    first = {p.name + p.parent.name: p.read_bytes() for p in (tmp_path / "out").rglob("*.*")}
    assert run(tmp_path, tasks, tokenizer_dir, dedup_dir=dedup, default_min_eval=1, max_length=2048) == counters
    assert {p.name + p.parent.name: p.read_bytes() for p in (tmp_path / "out").rglob("*.*")} == first


def test_missing_dedup(tmp_path: Path, dedup: Path, tokenizer_dir: Path) -> None:
    from tasks.finetune.prepare import check_tasks

    tasks = [task(data=[{"kind": "default"}])]
    check_tasks(tasks=tasks, base_dir=tmp_path)  # a preflight before the dedup stage ran: nothing to check yet
    check_tasks(tasks=tasks, base_dir=tmp_path, dedup_dir=dedup)
    (dedup / "val" / "part-00000.parquet").unlink()
    with pytest.raises(DefaultCorpusError, match="no .*/val/part-\\*.parquet.*run `lmforge run dedup` first"):
        check_tasks(tasks=tasks, base_dir=tmp_path, dedup_dir=dedup)
    with pytest.raises(DefaultCorpusError):
        run(tmp_path, tasks, tokenizer_dir, dedup_dir=dedup)
    assert not (tmp_path / "out").exists()
