"""Fine-tuning data for the training recipes: the task manifest checked without torch, examples tokenized, and
seeded multi-task batches.

Each optimizer step trains one task: :class:`TaskBatches` draws it from the task weights with
``numpy.random.default_rng([seed, step])`` and the step's examples from ``default_rng([seed, step, micro])``, so a
batch is a pure function of (seed, step) and a resumed run sees the batches an uninterrupted one saw. Every rank draws
the same global batch and keeps its slice.

How an example becomes token ids and targets is its task type's (``tasks.modeling.tasktypes``): a classification
example is ``tokenizer(text)``, an sft example ``tokenizer(render_prompt(prompt)) + tokenizer(response) + [eos]`` with
the prompt labelled -100... Examples longer than ``max_length`` are dropped and counted (the data step quarantines or
cuts them already, as the type says).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.examples import SPLITS, ExamplesError, load_split, read_manifest, split_file
from tasks.modeling.errors import ConfigError
from tasks.modeling.tasktypes import task_settings, task_type
from tasks.modeling.tasktypes.batching import IGNORE

if TYPE_CHECKING:
    import torch

__all__ = ["IGNORE", "TaskBatches", "TaskSet", "batches", "check_tasks", "class_weights", "collate", "encode",
           "special_ids"]


def check_tasks(examples_dir: Path) -> dict[str, dict[str, Any]]:
    """The manifest's tasks, checked against their files without torch: every split present and non-empty, every
    labelled task with at least two labels, every row what its task type's check accepts.

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
        kind = task_type(task["type"], task_settings(task))
        labels = task.get("labels") or []
        if kind.labelled and len(labels) < 2:
            raise ExamplesError(f"task {name!r}: {kind.name} needs at least two labels, the manifest has {labels}: add "
                                "examples of another label")
        roles = {role: role for role in kind.roles}
        for split in SPLITS:
            rows = load_split(examples_dir, name, split)
            if not rows:
                raise ExamplesError(f"{split_file(examples_dir, name, split)} is empty: every task needs train, val "
                                    "and test examples; give the task more data")
            for i, row in enumerate(rows, 1):
                missing = [role for role in kind.roles if role not in row]
                checked = kind.check(row, labels=labels if kind.labelled else None, names=roles) if not missing \
                    else None
                if checked is None or not isinstance(checked, dict):
                    why = f"a {kind.name} row needs {missing}" if missing else \
                        f"{checked.detail} ({checked.reason})"  # type: ignore[union-attr]
                    raise ExamplesError(f"{split_file(examples_dir, name, split)}:{i}: {why}: re-run the finetune "
                                        "stage's data step")
    return tasks


def encode(rows: list[dict[str, Any]], *, kind: str, tokenizer: Any, max_length: int, labels: list[str] | None = None,
           eos_id: int | None = None, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Tokenize one split of a task: its type's :meth:`~tasks.modeling.tasktypes.base.TaskType.encode`.

    Args:
        rows: the split's rows (:func:`tasks.examples.load_split`).
        kind: the task type.
        tokenizer: a Hugging Face tokenizer.
        max_length: longest feature kept.
        labels: the label names of a labelled type (a target is a label's index).
        eos_id: the end-of-sequence id.
        settings: the task's options (the manifest's ``settings``; extractive_qa: ``doc_stride``...).

    Returns:
        ``{"ids": [[int]], "targets": [...], "dropped": n, "rows": the kept rows}`` and what the type adds.
    """
    return task_type(kind, settings).encode(rows, tokenizer=tokenizer, max_length=max_length, labels=labels,
                                  eos_id=-1 if eos_id is None else eos_id)


def collate(ids: list[list[int]], targets: list[Any], *, pad_id: int,
            kind: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ``(input_ids, attention_mask, targets)`` of a task type
    (:meth:`~tasks.modeling.tasktypes.base.TaskType.collate`)."""
    return task_type(kind).collate(ids, targets, pad_id=pad_id)


@dataclass
class TaskSet:
    """Every split of every task, encoded the same way on every rank: what a task recipe trains and evaluates on.

    Attributes:
        kinds: ``{task: task type}``.
        labels: ``{labelled task: label names}`` in head order.
        weights: ``{task: sampling weight}``.
        data: ``{split: {task: encode() result}}`` for train, val and test.
        eos_id, pad_id: the tokenizer's end-of-sequence and padding ids.
        settings: ``{task: its type's options}`` (the manifest's ``settings``; {} for a type without any).
        max_length: the tokens of a feature at most (what the data was encoded with).
    """

    kinds: dict[str, str]
    labels: dict[str, list[str]]
    weights: dict[str, float]
    data: dict[str, dict[str, dict[str, Any]]]
    eos_id: int
    pad_id: int
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    max_length: int = 0

    @property
    def class_tasks(self) -> list[str]:
        """Tasks with one class per example (classification): class weights and balanced sampling apply to them."""
        return [t for t in self.names if t in self.labels and one_class_each(self.data["train"][t]["targets"])]

    @property
    def head_sizes(self) -> dict[str, int]:
        """``{task: outputs}`` of the tasks with a head of their own (every type but the generative ones)."""
        return {t: task_type(k).num_outputs(self.labels.get(t)) for t, k in self.kinds.items()
                if task_type(k).head_class is not None}

    def config_extras(self) -> dict[str, dict[str, Any]]:
        """``{task: config attributes its exported model carries}`` for the types that have some (extractive QA:
        its decoding settings, in ``task_specific_params``)."""
        out = {}
        for t, k in self.kinds.items():
            extra = getattr(task_type(k, self.settings.get(t)), "export_config", None)
            if extra is not None:
                out[t] = dict(extra(max_length=self.max_length))
        return out

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
        labels = {t: list(tasks[t]["labels"]) for t in kinds if task_type(kinds[t]).labelled}
        settings = {t: task_settings(tasks[t]) for t in kinds}
        data = {split: {t: encode(load_split(examples_dir, t, split), kind=kinds[t], tokenizer=tokenizer,
                                  max_length=max_length, labels=labels.get(t), eos_id=eos_id, settings=settings[t])
                        for t in kinds}
                for split in ("train", "val", "test")}
        out = cls(kinds=kinds, labels=labels, weights={t: float(tasks[t].get("weight", 1.0)) for t in kinds},
                  data=data, eos_id=eos_id, pad_id=pad_id, settings=settings, max_length=max_length)
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


def one_class_each(targets: list[Any]) -> bool:
    """Whether a task's targets are one class index per example (classification), not per token or a span."""
    return all(isinstance(t, int) for t in targets)


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
        kinds: ``{task: task type}``.
        weights: ``{task: weight}``: a step's task is drawn with these relative probabilities.
        batch_size: examples per micro-batch per rank.
        seed: the data seed.
        pad_id: padding id.
        balanced: tasks with one class per example (classification): draw the class uniformly first, then an
            example of it.
        rank: this process's rank.
        world_size: processes sharing each global batch.
        packing: a micro-batch of a type that packs (``packed``: chat) is ``(input_ids, position_ids, targets)`` in
            packed rows (:func:`tasks.modeling.packing.collate_packed`; the model takes the position ids and no
            attention mask), not padded: the same examples and per-token losses, 1.6-1.9x the tokens/s measured.
    """

    def __init__(self, train: dict[str, dict[str, Any]], *, kinds: dict[str, str], weights: dict[str, float],
                 batch_size: int, seed: int, pad_id: int, balanced: bool = False, rank: int = 0,
                 world_size: int = 1, packing: bool = False) -> None:
        self.train, self.kinds, self.names = train, kinds, sorted(train)
        total = sum(weights[n] for n in self.names)
        self.probs = [weights[n] / total for n in self.names]
        self.batch_size, self.seed, self.pad_id = batch_size, seed, pad_id
        self.balanced, self.rank, self.world_size = balanced, rank, world_size
        self.packed = {n for n in self.names if packing and task_type(kinds[n]).packed}
        self.by_class: dict[str, dict[int, list[int]]] = {n: {} for n in self.names}
        for n in self.names:
            if task_type(kinds[n]).labelled and one_class_each(train[n]["targets"]):
                for i, t in enumerate(train[n]["targets"]):
                    self.by_class[n].setdefault(t, []).append(i)

    def task(self, step: int) -> str:
        """The task trained at 0-based ``step`` (the same on every rank and after a resume)."""
        import numpy as np

        return self.names[int(np.random.default_rng([self.seed, step]).choice(len(self.names), p=self.probs))]

    def batch(self, step: int, micro: int = 0) -> tuple[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """``(task, (input_ids, attention_mask, targets))`` of micro-batch ``micro`` of ``step``, this rank's slice
        (``(input_ids, position_ids, targets)`` for a task in :attr:`packed`)."""
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
        if name in self.packed:  # the same examples and loss, fewer padded positions (tasks.modeling.packing)
            from tasks.modeling.packing import collate_packed

            return name, collate_packed([data["ids"][i] for i in mine], [data["targets"][i] for i in mine],
                                        pad_id=self.pad_id)
        return name, collate([data["ids"][i] for i in mine], [data["targets"][i] for i in mine], pad_id=self.pad_id,
                             kind=self.kinds[name])
