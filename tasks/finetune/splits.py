"""Splits made when the data give none: deterministic for a seed, stratified by label for classification.

Each stratum (a class, or the whole task for sft) is ordered by BLAKE2b of (seed, example id), so the split of an
example depends on the seed and its own content, not on reading order; the first ``round(n * test)`` go to test,
the next ``round(n * val)`` to val, the rest to train. A stratum of 3 or more examples gets at least one val and one
test example and keeps at least one for training; smaller ones go to train whole.

A task type may group examples that must share a split (an extractive_qa question's context: a model tested on a
passage it was trained on, through another question about it, is scored on what it memorised). Then whole groups
are ordered by BLAKE2b of (seed, group key) and the shares count groups, as scikit-learn's ``GroupShuffleSplit``
counts them.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tasks.finetune.errors import TooFewExamplesError
from tasks.finetune.items import Example


def split_sizes(n: int, val: float, test: float) -> tuple[int, int]:
    """(val, test) sizes of a stratum of ``n`` examples (a share of 0 makes none)."""
    n_val, n_test = round(n * val), round(n * test)
    if n >= 3:
        n_val, n_test = max(val > 0, n_val), max(test > 0, n_test)
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
    return sorted(examples, key=lambda ex: _order_key(ex.id, seed, salt))


def make_splits(examples: list[Example], *, stratify: bool, val: float, test: float, seed: int,
                group: Callable[[Mapping[str, Any]], str | None] | None = None) -> list[Example]:
    """Give every example without a split one; examples that have a split keep it. Input order is kept. A val or
    test split the data give is not added to: the examples without a split then go to the other splits only (a
    dataset's official test set stays what it is, and none of its training examples is tested on). A split the data
    do not give is made from the examples without one and, while val or test is missing, from those the data put in
    train (a Hugging Face dataset with a train split alone, or train and test: its val comes out of its train, as
    transformers' examples' ``validation_split_percentage`` takes it); with val and test given, train stays whole.

    Args:
        examples: checked examples, some with a split from the data, some without (None).
        stratify: split each label apart (classification).
        val: share of val.
        test: share of test.
        seed: seed of the order.
        group: an example's group (examples of one group share a split), or None for one of its own.
    """
    given = {ex.split for ex in examples if ex.split is not None}
    val, test = (0.0 if "val" in given else val), (0.0 if "test" in given else test)
    open_splits = {None} if {"val", "test"} <= given else {None, "train"}
    strata: dict[str, dict[str, list[Example]]] = defaultdict(dict)
    for ex in examples:
        if ex.split in open_splits:
            key = group(ex.values) if group is not None else None
            unit = ex.id if key is None else _group_unit(key)
            strata[ex.values["label"] if stratify else ""].setdefault(unit, []).append(ex)
    chosen: dict[str, str] = {}
    for units in strata.values():
        n_val, n_test = split_sizes(len(units), val, test)
        for rank, unit in enumerate(sorted(units, key=lambda u: _order_key(u, seed, "split"))):
            for ex in units[unit]:
                chosen[ex.id] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return [dataclasses.replace(ex, split=chosen[ex.id]) if ex.id in chosen else ex for ex in examples]


def _group_unit(key: str) -> str:
    return "group:" + hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def _order_key(unit: str, seed: int, salt: str) -> bytes:
    return hashlib.blake2b(f"{salt}\0{seed}\0{unit}".encode(), digest_size=8).digest()


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
