"""Splits made when the data give none: deterministic for a seed, stratified by label for classification.

Each stratum (a class, or the whole task for sft) is ordered by BLAKE2b of (seed, example id), so the split of an
example depends on the seed and its own content, not on reading order; the first ``round(n * test)`` go to test,
the next ``round(n * val)`` to val, the rest to train. A stratum of 3 or more examples gets at least one val and one
test example and keeps at least one for training; smaller ones go to train whole.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter, defaultdict
from collections.abc import Sequence

from tasks.finetune.errors import TooFewExamplesError
from tasks.finetune.items import Example


def split_sizes(n: int, val: float, test: float) -> tuple[int, int]:
    """(val, test) sizes of a stratum of ``n`` examples."""
    n_val, n_test = round(n * val), round(n * test)
    if n >= 3:
        n_val, n_test = max(1, n_val), max(1, n_test)
        while n_val + n_test > n - 1:  # keep one for training: take from the larger share first
            if n_val >= n_test:
                n_val -= 1
            else:
                n_test -= 1
    else:
        n_val = n_test = 0
    return n_val, n_test


def seeded_order(examples: Sequence[Example], seed: int, salt: str = "split") -> list[Example]:
    """``examples`` in the order of BLAKE2b(salt, seed, id): a shuffle that depends on nothing else."""
    def key(ex: Example) -> bytes:
        return hashlib.blake2b(f"{salt}\0{seed}\0{ex.id}".encode(), digest_size=8).digest()

    return sorted(examples, key=key)


def make_splits(examples: list[Example], *, stratify: bool, val: float, test: float, seed: int) -> list[Example]:
    """Give every example without a split one; examples that have a split keep it. Input order is kept.

    Args:
        examples: checked examples, some with a split from the data, some without (None).
        stratify: split each label apart (classification).
        val: share of val.
        test: share of test.
        seed: seed of the order.
    """
    strata: dict[str, list[Example]] = defaultdict(list)
    for ex in examples:
        if ex.split is None:
            strata[ex.values["label"] if stratify else ""].append(ex)
    chosen: dict[str, str] = {}
    for stratum in strata.values():
        n_val, n_test = split_sizes(len(stratum), val, test)
        for rank, ex in enumerate(seeded_order(stratum, seed)):
            chosen[ex.id] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return [ex if ex.split is not None else dataclasses.replace(ex, split=chosen[ex.id]) for ex in examples]


def check_min_per_class(task: str, examples: list[Example], labels: Sequence[str], min_per_class: int) -> None:
    """Every class needs ``min_per_class`` training examples (a head cannot learn a class it never sees).

    Raises:
        TooFewExamplesError: naming the task, the classes and their counts.
    """
    counts = Counter(ex.values["label"] for ex in examples if ex.split == "train")
    short = {label: counts[label] for label in labels if counts[label] < min_per_class}
    if short:
        listed = ", ".join(f"{label!r} ({n})" for label, n in short.items())
        raise TooFewExamplesError(f"task {task!r}: class(es) {listed} have fewer than min_per_class={min_per_class} "
                                  "training examples; add examples, lower min_per_class, or drop the class from "
                                  "`labels`")
