"""EDA-style augmentation of classification training examples (Wei & Zou 2019, "EDA: Easy Data Augmentation"):
random deletion, random swap and random insertion of words taken from the same example (no synonym table, so
nothing is downloaded and no word from outside the example appears).

Each copy has its own generator, seeded by BLAKE2b of (augment seed, example id, copy number): a copy does not
depend on the other examples, on their order or on the process, so the same inputs give the same bytes. Copies are
made of training examples only (val and test must measure real text) and carry ``augmented: true`` and the id
``<id>-aug<k>`` (k = 1, 2, ...).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator

from tasks.finetune.items import Example


def eda(words: list[str], rng: random.Random, *, p_delete: float, p_swap: float, p_insert: float) -> list[str]:
    """One EDA pass over ``words``: delete each word with ``p_delete`` (one word always stays), then
    ``round(p_swap * n)`` swaps of two random positions, then ``round(p_insert * n)`` insertions of a random word of
    the original at a random position."""
    original = list(words)
    out = [w for w in words if rng.random() >= p_delete] or [rng.choice(original)]
    for _ in range(round(p_swap * len(original))):
        if len(out) < 2:
            break
        i, j = rng.sample(range(len(out)), 2)
        out[i], out[j] = out[j], out[i]
    for _ in range(round(p_insert * len(original))):
        out.insert(rng.randrange(len(out) + 1), rng.choice(original))
    return out


def augment(examples: list[Example], *, copies: int, p_delete: float, p_swap: float, p_insert: float,
            seed: int) -> Iterator[tuple[Example, Example]]:
    """(original, copy) for each training example and copy number; a copy whose text equals the original's or an
    earlier copy's (a one-word text, all probabilities 0) is left out, as it would be a duplicate.

    Args:
        examples: checked examples with their splits; only ``train`` ones are augmented.
        copies: copies per training example.
        p_delete: probability of deleting each word.
        p_swap: swaps per word.
        p_insert: insertions per word.
        seed: the augmentation seed.
    """
    for ex in examples:
        if ex.split != "train":
            continue
        words = ex.values["text"].split()
        seen = {ex.values["text"]}
        for k in range(1, copies + 1):
            digest = hashlib.blake2b(f"{seed}\0{ex.id}\0{k}".encode(), digest_size=8).digest()
            rng = random.Random(int.from_bytes(digest, "big"))
            text = " ".join(eda(words, rng, p_delete=p_delete, p_swap=p_swap, p_insert=p_insert))
            if text in seen:
                continue
            seen.add(text)
            yield ex, Example(f"{ex.id}-aug{k}", {**ex.values, "text": text}, f"{ex.where} (augmented {k})", "train")
