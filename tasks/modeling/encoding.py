"""Fine-tuning data for the training recipes: the task manifest checked without torch, examples tokenized, and
seeded multi-task batches.

Each optimizer step trains one task: :class:`TaskBatches` draws it from the task weights with
``numpy.random.default_rng([seed, step])`` and the step's examples from ``default_rng([seed, step, micro])``, so a
batch is a pure function of (seed, step) and a resumed run sees the batches an uninterrupted one saw. Every rank draws
the same global batch and keeps its slice.

A classification example is ``tokenizer(text)``; an sft example is ``tokenizer(render_prompt(prompt)) +
tokenizer(response, no special tokens) + [eos]`` with the prompt's positions labelled -100 (no loss). Examples longer
than ``max_length`` are dropped and counted (the data step quarantines them already; none are ever cut).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.examples import SPLITS, ExamplesError, load_split, read_manifest, render_prompt, split_file
from tasks.modeling.errors import ConfigError

if TYPE_CHECKING:
    import torch

IGNORE = -100
"""Label of positions that carry no loss (the prompt of an sft example, padding)."""


def check_tasks(examples_dir: Path) -> dict[str, dict[str, Any]]:
    """The manifest's tasks, checked against their files without torch: every split present and non-empty, every
    classification task with at least two labels and rows only of those labels, sft rows with prompt and response.

    Returns:
        ``{task: manifest entry}`` in the manifest's (sorted) order.

    Raises:
        ExamplesError: what is wrong, naming the file and the fix.
    """
    manifest = read_manifest(examples_dir)
    tasks = manifest.get("tasks") or {}
    if not tasks:
        raise ExamplesError(f"{Path(examples_dir) / 'manifest.json'} lists no task: configure finetune.tasks")
    for name, task in tasks.items():
        if not task.get("weight", 1.0) > 0:
            raise ExamplesError(f"task {name!r}: weight {task.get('weight')} must be positive")
        labels = task.get("labels") or []
        if task["type"] == "classification" and len(labels) < 2:
            raise ExamplesError(f"task {name!r}: classification needs at least two labels, the manifest has "
                                f"{labels}: add examples of another class or make it an sft task")
        for split in SPLITS:
            rows = load_split(examples_dir, name, split)
            if not rows:
                raise ExamplesError(f"{split_file(examples_dir, name, split)} is empty: every task needs train, val "
                                    "and test examples; give the task more data")
            for i, row in enumerate(rows, 1):
                if task["type"] == "classification":
                    if row.get("label") not in labels or not isinstance(row.get("text"), str):
                        raise ExamplesError(f"{split_file(examples_dir, name, split)}:{i}: label "
                                            f"{row.get('label')!r} is not one of {labels} (or text is missing): "
                                            "re-run the finetune stage's data step")
                elif not isinstance(row.get("prompt"), str) or not isinstance(row.get("response"), str):
                    raise ExamplesError(f"{split_file(examples_dir, name, split)}:{i}: an sft row needs string "
                                        "prompt and response: re-run the finetune stage's data step")
    return tasks


def encode(rows: list[dict[str, Any]], *, kind: str, tokenizer: Any, max_length: int, labels: list[str] | None = None,
           eos_id: int | None = None) -> dict[str, Any]:
    """Tokenize one split of a task.

    Args:
        rows: the split's rows (:func:`tasks.examples.load_split`).
        kind: ``classification`` or ``sft``.
        tokenizer: a Hugging Face tokenizer.
        max_length: longest example kept.
        labels: classification: the label names (a row's target is its label's index).
        eos_id: sft: appended after the response.

    Returns:
        ``{"ids": [[int]], "targets": [int] (classification) or [[int]] (sft: -100 on the prompt), "dropped": n,
        "rows": the kept rows}``.
    """
    ids, targets, kept, dropped = [], [], [], 0
    for row in rows:
        if kind == "classification":
            seq = list(tokenizer(row["text"])["input_ids"])
            target: Any = labels.index(row["label"])  # type: ignore[union-attr]
        else:
            prompt = list(tokenizer(render_prompt(row["prompt"]))["input_ids"])
            response = list(tokenizer(row["response"], add_special_tokens=False)["input_ids"]) + [eos_id]
            seq, target = prompt + response, [IGNORE] * len(prompt) + response
        if len(seq) > max_length or not seq:
            dropped += 1
            continue
        ids.append(seq)
        targets.append(target)
        kept.append(row)
    return {"ids": ids, "targets": targets, "dropped": dropped, "rows": kept}


def collate(ids: list[list[int]], targets: list[Any], *, pad_id: int,
            kind: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ``(input_ids, attention_mask, targets)``; sft targets are padded with -100."""
    import torch

    width = max(len(s) for s in ids)
    x = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    y = torch.full((len(ids), width), IGNORE, dtype=torch.long) if kind == "sft" else torch.tensor(targets)
    for i, seq in enumerate(ids):
        x[i, :len(seq)] = torch.tensor(seq)
        mask[i, :len(seq)] = 1
        if kind == "sft":
            y[i, :len(seq)] = torch.tensor(targets[i])
    return x, mask, y


@dataclass
class TaskSet:
    """Every split of every task, encoded the same way on every rank: what a task recipe trains and evaluates on.

    Attributes:
        kinds: ``{task: "classification" | "sft"}``.
        labels: ``{classification task: label names}`` in head order.
        weights: ``{task: sampling weight}``.
        data: ``{split: {task: encode() result}}`` for train, val and test.
        eos_id, pad_id: the tokenizer's end-of-sequence and padding ids.
    """

    kinds: dict[str, str]
    labels: dict[str, list[str]]
    weights: dict[str, float]
    data: dict[str, dict[str, dict[str, Any]]]
    eos_id: int
    pad_id: int

    @property
    def names(self) -> list[str]:
        """The tasks, sorted (the order of heads, batches and evaluations)."""
        return sorted(self.kinds)

    @classmethod
    def from_examples(cls, examples_dir: Path, tasks: dict[str, dict[str, Any]], *, tokenizer: Any,
                      max_length: int) -> TaskSet:
        """Encode the task data under ``examples_dir`` (the manifest's ``tasks``, :func:`check_tasks`).

        Raises:
            ConfigError: the tokenizer lacks EOS or padding, or no example of a split fits ``max_length``.
        """
        eos_id, pad_id = special_ids(tokenizer)
        kinds = {t: tasks[t]["type"] for t in sorted(tasks)}
        labels = {t: list(tasks[t]["labels"]) for t in kinds if kinds[t] == "classification"}
        data = {split: {t: encode(load_split(examples_dir, t, split), kind=kinds[t], tokenizer=tokenizer,
                                  max_length=max_length, labels=labels.get(t), eos_id=eos_id) for t in kinds}
                for split in ("train", "val", "test")}
        out = cls(kinds=kinds, labels=labels, weights={t: float(tasks[t].get("weight", 1.0)) for t in kinds},
                  data=data, eos_id=eos_id, pad_id=pad_id)
        out.check_fits(max_length)
        return out

    def check_fits(self, max_length: int) -> None:
        """ConfigError when a task's split kept no example (every one longer than ``max_length``)."""
        if empty := [f"{t}/{s}" for s in self.data for t in self.names if not self.data[s][t]["ids"]]:
            raise ConfigError(f"no example of {empty} fits max_length {max_length}: raise max_length")


def special_ids(tokenizer: Any) -> tuple[int, int]:
    """``(eos_id, pad_id)`` of a tokenizer. A tokenizer without a pad token (GPT-2's, Llama's) pads with its EOS, as
    is usual (the tokenizer is changed, so that the export carries it); an encoder's (BERT's) end of sequence is its
    separator. ConfigError when it has neither an end-of-sequence token nor a separator."""
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else getattr(tokenizer, "sep_token_id", None)
    if eos is None:
        raise ConfigError(f"the tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no EOS (or separator) "
                          "token: use the tokenizer stage's, or save the checkpoint's tokenizer with one")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(int(eos))
    return int(eos), int(tokenizer.pad_token_id)


def class_weights(targets: list[int], num_labels: int) -> list[float]:
    """scikit-learn's ``balanced`` weights: ``n / (classes x count)`` per class (1.0 for an absent class)."""
    counts = [targets.count(k) for k in range(num_labels)]
    return [len(targets) / (num_labels * c) if c else 1.0 for c in counts]


def batches(data: dict[str, Any], *, kind: str, batch_size: int, pad_id: int) -> list[tuple[Any, Any, Any]]:
    """Fixed evaluation batches over every example in order (``collate``'d)."""
    n = len(data["ids"])
    return [collate(data["ids"][i:i + batch_size], data["targets"][i:i + batch_size], pad_id=pad_id, kind=kind)
            for i in range(0, n, batch_size)]


class TaskBatches:
    """Seeded multi-task training batches: :meth:`task` of a step, :meth:`batch` of a step's micro-batch.

    Args:
        train: ``{task: encode() result}`` of the training splits.
        kinds: ``{task: "classification" | "sft"}``.
        weights: ``{task: weight}``: a step's task is drawn with these relative probabilities.
        batch_size: examples per micro-batch per rank.
        seed: the data seed.
        pad_id: padding id.
        balanced: classification: draw the label uniformly first, then an example of it.
        rank: this process's rank.
        world_size: processes sharing each global batch.
    """

    def __init__(self, train: dict[str, dict[str, Any]], *, kinds: dict[str, str], weights: dict[str, float],
                 batch_size: int, seed: int, pad_id: int, balanced: bool = False, rank: int = 0,
                 world_size: int = 1) -> None:
        self.train, self.kinds, self.names = train, kinds, sorted(train)
        total = sum(weights[n] for n in self.names)
        self.probs = [weights[n] / total for n in self.names]
        self.batch_size, self.seed, self.pad_id = batch_size, seed, pad_id
        self.balanced, self.rank, self.world_size = balanced, rank, world_size
        self.by_class: dict[str, dict[int, list[int]]] = {n: {} for n in self.names}
        for n in self.names:
            if kinds[n] == "classification":
                for i, t in enumerate(train[n]["targets"]):
                    self.by_class[n].setdefault(t, []).append(i)

    def task(self, step: int) -> str:
        """The task trained at 0-based ``step`` (the same on every rank and after a resume)."""
        import numpy as np

        return self.names[int(np.random.default_rng([self.seed, step]).choice(len(self.names), p=self.probs))]

    def batch(self, step: int, micro: int = 0) -> tuple[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """``(task, (input_ids, attention_mask, targets))`` of micro-batch ``micro`` of ``step``, this rank's slice."""
        import numpy as np

        name = self.task(step)
        rng = np.random.default_rng([self.seed, step, micro, 1])
        n, size = len(self.train[name]["ids"]), self.batch_size * self.world_size
        if self.balanced and self.by_class[name]:
            classes = sorted(self.by_class[name])
            picked = rng.choice(len(classes), size=size)
            index = [self.by_class[name][classes[c]][int(rng.integers(len(self.by_class[name][classes[c]])))]
                     for c in picked.tolist()]
        else:
            index = rng.integers(0, n, size=size).tolist()
        mine = index[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]
        data = self.train[name]
        return name, collate([data["ids"][i] for i in mine], [data["targets"][i] for i in mine], pad_id=self.pad_id,
                             kind=self.kinds[name])
