"""The offline default tasks, derived by code from the default corpus in ``data/dedup/{train,val,test}`` (labels
come from the data, never from a hand-written table).

What the text looks like there: the collect stage renders a module's documentation as its docstring, then one
``signature`` line and its docstring per public function, method and class; the clean stage then leaves no blank
line and no indentation, and (C4 line filter, three words at least) drops short lines, so ``close(self)`` or
``class Foo(Bar)`` headers are mostly gone while ``decode(self, s, _w=WHITESPACE.match)`` survives. Paragraphs do
not survive: passages are packed from lines.

- classification ``doc_section``: which part of the documentation a passage (consecutive lines packed to 200-600
  characters, fewer tokens than the default max_length 256) comes from. ``reference``: a language-reference topic
  (``pydoc:topics/*``); ``overview``: a module's own docstring (the lines before its first signature line);
  ``api``: the docstrings of its functions, classes and methods (the lines after it, signature and class lines
  removed, so the label is told by the prose, not by a parenthesis). A class whose header was dropped counts its
  docstring to the overview when it comes before the first signature: some label noise, stated here.
  Measured on the default corpus (443 documents, Python 3.11), passages read: train 421 reference / 795
  overview / 1544 api, val 7 / 40 / 127, test 192 / 21 / 17. Splits follow the documents' (so evaluation
  passages come from documents the pretraining never trained on); a class with fewer than ``min_eval`` (10)
  passages in val or in test (reference in val here) has its val and test passages pooled and split half and
  half, seeded: they still come from non-train documents, at the cost of val and test sharing a few documents for
  that class. After the checks (27 over 256 tokens, 11 duplicates), the rebalancing and the cap of 1500: train 411
  / 544 / 544 (27% / 36% / 36%), val 98 / 40 / 122, test 98 / 20 / 16. Learnable, not trivial: a TF-IDF (word
  1-2 grams) logistic regression trained on that train split reaches accuracy 0.70 / macro-F1 0.66 on val and
  0.79 / 0.70 on test.
- sft ``docstring``: a signature line (``ast.parse(f"def {line}: pass")`` must parse) as the prompt, and the
  first sentence of the lines after it (up to the next signature or class line; at most 300 characters) as the
  response; at least three words. One sentence, not the first paragraph: paragraphs are gone, and a method whose
  short signature line was dropped runs its docstring into the one before, so only the summary sentence (PEP 257's
  first line) reliably belongs to the signature. Splits follow the documents'. Measured: 1582 pairs read (train
  1469, val 91, test 22); after 22 duplicates: train 1447, val 91, test 22.

Training examples are capped (``max_train``) by water-filling over the classes: the largest per-class limit whose
total fits, so small classes are kept whole; which examples stay is a seeded hash order, not the reading order.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from tasks.examples import SPLITS
from tasks.finetune.errors import DefaultCorpusError
from tasks.finetune.items import DEFAULT_FIELDS, Example, Raw
from tasks.finetune.splits import seeded_order

PREFIX = "dedup:"
"""``where`` of default examples starts with it: ``dedup:<document path>#p<k>`` (passage) or ``#s<k>`` (pair)."""
TOPIC, MODULE = "pydoc:topics/", "pydoc:module/"
_SENTENCE_END = re.compile(r"(?<!\be\.g)(?<!\bi\.e)[.!?](?=\s|$)")


def check_dedup(dedup_dir: Path) -> None:
    """Every split of ``dedup_dir`` has shards.

    Raises:
        DefaultCorpusError: a split has none.
    """
    for split in SPLITS:
        if not any((Path(dedup_dir) / split).glob("part-*.parquet")):
            raise DefaultCorpusError(f"no {dedup_dir}/{split}/part-*.parquet: the default tasks derive from the "
                                     "dedup stage's output; run `lmforge run dedup` first")


def iter_documents(dedup_dir: Path) -> Iterator[tuple[str, str, str]]:
    """(split, path, text) of every document, split by split, shard by shard, row by row.

    Raises:
        DefaultCorpusError: a split has no shard.
    """
    import pyarrow.parquet as pq

    check_dedup(dedup_dir)
    for split in SPLITS:
        for shard in sorted((Path(dedup_dir) / split).glob("part-*.parquet")):
            table = pq.read_table(shard, columns=["path", "text"])
            for path, text in zip(table.column("path").to_pylist(), table.column("text").to_pylist(), strict=True):
                if path and text:
                    yield split, path, text


def is_signature(line: str) -> bool:
    """A function or method signature as the collect stage renders it: ``name(args)`` or ``name(args) -> T``."""
    line = line.strip().removeprefix("async ")
    if not line[:1].isidentifier() or "(" not in line or not (line.endswith(")") or "->" in line):
        return False
    try:
        ast.parse(f"def {line}: pass")
    except SyntaxError:
        return False
    return True


def is_class_line(line: str) -> bool:
    """A class header as rendered: ``class Name`` or ``class Name(bases)``."""
    line = line.strip()
    if not line.startswith("class "):
        return False
    try:
        ast.parse(f"{line}: pass")
    except SyntaxError:
        return False
    return True


def pack_lines(lines: list[str], *, min_chars: int, max_chars: int) -> list[str]:
    """Consecutive non-empty lines joined (by newlines) into passages of at most ``max_chars`` (a longer line
    stands alone); passages under ``min_chars`` are dropped."""
    out, current = [], ""
    for line in (s.strip() for s in lines):
        if not line:
            continue
        if current and len(current) + 1 + len(line) > max_chars:
            out.append(current)
            current = ""
        current = f"{current}\n{line}" if current else line
    if current:
        out.append(current)
    return [p for p in out if len(p) >= min_chars]


def document_sections(path: str, text: str) -> dict[str, list[str]]:
    """The lines of one document by class: reference, overview, api (see the module docstring)."""
    lines = text.split("\n")
    if path.startswith(TOPIC):
        return {"reference": lines}
    first = next((i for i, line in enumerate(lines) if is_signature(line)), len(lines))
    api = [line for line in lines[first:] if not is_signature(line) and not is_class_line(line)]
    return {"overview": lines[:first], "api": api}


def iter_default_classification(dedup_dir: Path, *, min_chars: int = 200, max_chars: int = 600) -> Iterator[Raw]:
    """Passages labelled by documentation part, each with its document's split."""
    for split, path, text in iter_documents(dedup_dir):
        if not path.startswith((TOPIC, MODULE)):
            continue
        k = 0
        for label, lines in document_sections(path, text).items():
            for passage in pack_lines(lines, min_chars=min_chars, max_chars=max_chars):
                yield Raw(f"{PREFIX}{path}#p{k}", {"text": passage, "label": label}, DEFAULT_FIELDS, split)
                k += 1


def first_sentences(lines: list[str], max_chars: int = 300, sentences: int = 1) -> str | None:
    """The first ``sentences`` sentences of the joined lines (fewer if they pass ``max_chars``), or None when the
    first sentence alone is longer."""
    text = " ".join(" ".join(lines).split())
    ends = [m.end() for m in _SENTENCE_END.finditer(text[: max_chars + 1]) if m.end() <= max_chars][:sentences]
    return text[: ends[-1]] if ends else None


def iter_default_sft(dedup_dir: Path, *, max_response_chars: int = 300, min_words: int = 3) -> Iterator[Raw]:
    """(signature, first sentences of its docstring) pairs of module documents, each with its document's split."""
    for split, path, text in iter_documents(dedup_dir):
        if not path.startswith(MODULE):
            continue
        lines = text.split("\n")
        heads = [i for i, line in enumerate(lines) if is_signature(line) or is_class_line(line)] + [len(lines)]
        for k, (start, end) in enumerate(zip(heads, heads[1:], strict=False)):
            if not is_signature(lines[start]):
                continue
            response = first_sentences(lines[start + 1:end], max_response_chars)
            if response and len(response.split()) >= min_words:
                record = {"prompt": lines[start].strip(), "response": response}
                yield Raw(f"{PREFIX}{path}#s{k}", record, DEFAULT_FIELDS, split)


def rebalance_eval(examples: list[Example], *, min_eval: int, seed: int) -> list[Example]:
    """Classes with fewer than ``min_eval`` default examples in val or test: their val and test examples pooled and
    split half and half in seeded order (val gets the odd one). Other examples are returned unchanged."""
    pools: dict[str, list[Example]] = defaultdict(list)
    for ex in examples:
        if ex.where.startswith(PREFIX) and ex.split in ("val", "test"):
            pools[ex.values["label"]].append(ex)
    moved: dict[str, str] = {}
    for pool in pools.values():
        if min(sum(ex.split == s for ex in pool) for s in ("val", "test")) >= min_eval:
            continue
        half = (len(pool) + 1) // 2
        for rank, ex in enumerate(seeded_order(pool, seed, "rebalance")):
            moved[ex.id] = "val" if rank < half else "test"
    return [dataclasses.replace(ex, split=moved[ex.id]) if ex.id in moved else ex for ex in examples]


def cap_train(examples: list[Example], *, max_train: int, seed: int, label: str | None) -> list[Example]:
    """At most ``max_train`` default training examples: the largest per-class limit whose total fits (water-filling;
    one stratum for sft, ``label`` None), the examples kept in seeded order. Others are returned unchanged."""
    strata: dict[str, list[Example]] = defaultdict(list)
    for ex in examples:
        if ex.where.startswith(PREFIX) and ex.split == "train":
            strata[ex.values[label] if label else ""].append(ex)
    sizes = sorted(len(s) for s in strata.values())
    if sum(sizes) <= max_train:
        return examples
    limit, budget = 0, max_train
    for i, n in enumerate(sizes):  # classes smaller than the fair share stay whole; the rest share what is left
        share = budget // (len(sizes) - i)
        if n > share:
            limit = share
            break
        budget -= n
    dropped = {ex.id for s in strata.values() for ex in seeded_order(s, seed, "cap")[limit:]}
    return [ex for ex in examples if ex.id not in dropped]
