"""Generators of tiny, deterministic corpora for stage tests (fixtures are made here, never committed)."""

from __future__ import annotations

import random
from pathlib import Path

SUBJECTS = ("The committee", "A small team", "The new library", "Our reviewer", "The city council", "The author",
            "Every student", "The old bridge", "The museum", "A local farmer", "The research group", "The engineer")
VERBS = ("described", "approved", "questioned", "rebuilt", "studied", "announced", "measured", "improved",
         "documented", "compared", "visited", "explained")
OBJECTS = ("the annual budget of the region", "a plan for the river crossing", "the results of the long survey",
           "the history of the northern valley", "a method to reduce the waste", "the rules of the competition",
           "the causes of the flooding", "an archive of local newspapers", "the design of the public garden",
           "the cost of the repairs", "a map of the walking trails", "the schedule for the spring term")
TAILS = ("before the end of the year.", "with great care and patience.", "in front of a large audience.",
         "after several months of work.", "and the results were shared with the press.",
         "because the old version had failed.", "to the surprise of many residents.", "in a detailed report.")


def prose(rng: random.Random, sentences: int = 12) -> str:
    """English-like prose that passes the C4 and Gopher rules: varied sentences, stop words, punctuation."""
    out = []
    for _ in range(sentences):
        out.append(f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(TAILS)}")
    lines = [" ".join(out[i:i + 3]) for i in range(0, len(out), 3)]
    return "\n".join(lines)


def edit(rng: random.Random, text: str, changes: int = 2) -> str:
    """A near-duplicate: a few words substituted."""
    words = text.split(" ")
    for _ in range(changes):
        words[rng.randrange(len(words))] = rng.choice(("notably", "indeed", "quietly", "finally"))
    return " ".join(words)


def write_raw(root: Path, texts: list[str], shard_size: int) -> Path:
    """Write ``texts`` as collect-stage record shards under ``root/data/raw``."""
    from tasks.collect.items import Document
    from tasks.collect.shards import SourcePlan, write_records

    raw = root / "data" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    docs = [Document(text=t, location=f"gen#L{i + 1}", metadata={}) for i, t in enumerate(texts)]
    write_records([SourcePlan("gen", lambda: iter(docs))], raw, seed=0, shard_max_records=shard_size,
                  shard_max_bytes=10**9, max_doc_bytes=10**7)
    return raw


def dedup_corpus(seed: int = 0, originals: int = 120, copies: int = 30) -> tuple[list[str], list[tuple[int, int]]]:
    """Prose documents plus exact copies (every third) and edited copies of the first ``copies`` of them.

    Returns the shuffled texts and the (original, copy) index pairs: of each pair, dedup must drop one.
    """
    rng = random.Random(seed)
    texts = [prose(rng, 20) for _ in range(originals)]
    pairs = []
    for i in range(copies):
        texts.append(texts[i] if i % 3 == 0 else edit(rng, texts[i], 2))
        pairs.append((i, len(texts) - 1))
    order = list(range(len(texts)))
    rng.shuffle(order)
    where = {old: new for new, old in enumerate(order)}
    return [texts[i] for i in order], [(where[a], where[b]) for a, b in pairs]
