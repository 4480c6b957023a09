"""A tiny learnable corpus for the training tests: repetitive sentences written as a dedup-stage parquet split."""

from __future__ import annotations

import random
from pathlib import Path

WORDS = ("the cat dog bird sat ran flew on under over a mat log tree and then quietly quickly home away").split()


def documents(n: int, seed: int) -> list[str]:
    """Repetitive, structured sentences: easy to learn, so a few dozen steps lower the loss clearly."""
    rng = random.Random(seed)
    subjects, verbs, places = WORDS[1:4], WORDS[4:7], WORDS[10:13]
    docs = []
    for _ in range(n):
        sentences = [f"the {rng.choice(subjects)} {rng.choice(verbs)} on the {rng.choice(places)}."
                     for _ in range(rng.randint(2, 6))]
        docs.append(" ".join(sentences))
    return docs


def write_split(split_dir: Path, texts: list[str]) -> Path:
    """One parquet part of (id, text) rows, as the dedup stage writes a split."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    split_dir.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": [str(i) for i in range(len(texts))], "text": texts}),
                   split_dir / "part-00000.parquet")
    return split_dir
