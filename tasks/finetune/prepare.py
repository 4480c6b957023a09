"""The data step's entry points: :func:`check_tasks` (preflight, writes nothing) and :func:`prepare_tasks` (reads
every task's data, checks, splits, augments and writes them in the ``tasks.examples`` format).

The flow calls them with plain values (``task.model_dump()`` per task), never with params objects.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tasks.examples import QUARANTINE_FILE, SPLITS, split_file, write_manifest, write_rows
from tasks.finetune.augment import augment
from tasks.finetune.checks import check_record, drop_duplicates, drop_too_long, jsonable, load_tokenizer
from tasks.finetune.default_corpus import (
    cap_train,
    check_dedup,
    iter_default_classification,
    iter_default_sft,
    rebalance_eval,
)
from tasks.finetune.errors import NoExamplesError
from tasks.finetune.files import expand_globs, file_format, iter_files
from tasks.finetune.folders import class_sources, iter_folders
from tasks.finetune.hub import check_hf, iter_hf
from tasks.finetune.items import Bad, Example, Raw
from tasks.finetune.splits import check_min_per_class, make_splits
from tasks.modeling.tasktypes import Reject, task_settings
from tasks.modeling.tasktypes import task_type as type_of


def check_tasks(*, tasks: list[dict[str, Any]], base_dir: Path, dedup_dir: Path | None = None) -> None:
    """Resolve every local path and glob of every task without reading records or writing anything.

    Args:
        tasks: the tasks, as ``TaskParams.model_dump()`` dicts.
        base_dir: the repository (relative paths start there).
        dedup_dir: data/dedup; given, a task of data kind default checks that it holds shards (leave it None when
            the dedup stage has not run yet, as in a preflight before the whole pipeline).

    Raises:
        TaskPathError: a path or glob names nothing; the message names the task and the key.
        TaskFormatError: a file's format cannot be told.
        DefaultCorpusError: ``dedup_dir`` was given and holds no shards.
    """
    for task in tasks:
        for index, data in enumerate(task["data"]):
            what = f"task {task['name']!r} data[{index}]"
            if data["kind"] == "files":
                for path, _ in expand_globs(data["paths"], Path(base_dir), f"{what}.paths"):
                    file_format(path, data["format"])
            elif data["kind"] == "folders":
                class_sources(data["path"], Path(base_dir), f"{what}.path")
            elif data["kind"] == "hf":
                check_hf(path=data["path"], data_files=data["data_files"], base_dir=Path(base_dir), what=what)
            elif data["kind"] == "default" and dedup_dir is not None:
                check_dedup(Path(dedup_dir))


def prepare_tasks(*, tasks: list[dict[str, Any]], dedup_dir: Path, tokenizer_dir: Path, max_length: int,
                  base_dir: Path, out_dir: Path, default_max_train: int = 1500,
                  default_min_eval: int = 10, retry: Callable[..., Any] | None = None) -> dict[str, int]:
    """Write ``out_dir/<task>/{train,val,test}.jsonl``, ``out_dir/<task>/quarantine.jsonl`` and
    ``out_dir/manifest.json`` (format: ``tasks.examples``); the same inputs give the same bytes.

    Args:
        tasks: the tasks, as ``TaskParams.model_dump()`` dicts.
        dedup_dir: data/dedup, the input of data kind default.
        tokenizer_dir: the directory holding ``tokenizer.json`` (examples are measured in its tokens).
        max_length: tokens per example at most (EOS included); longer ones are quarantined.
        base_dir: the repository (relative paths start there).
        out_dir: where to write.
        default_max_train: training examples of a data kind default at most (a seeded, class-balanced choice).
        default_min_eval: data kind default: a class with fewer val or test examples has its val and test
            examples pooled and split half and half.
        retry: how a hub dataset is opened: ``retry(load_dataset, ...)`` retries what fails for a moment (see
            ``tasks.finetune.hub.iter_hf``); None: one try.

    Returns:
        Flat counters per task: ``<task>.examples_in``, ``.kept``, ``.capped``, ``.train``/``.val``/``.test``
        (rows written, augmented copies included), ``.augmented``, ``.quarantined``, ``.quarantined.<reason>``,
        and for labelled types ``.labels.<label>.<split>``.

    Raises:
        TaskDataError: a subclass naming the task, the file or the class (see ``tasks.finetune.errors``).
    """
    check_tasks(tasks=tasks, base_dir=base_dir, dedup_dir=dedup_dir)  # every path error before any work
    tokenizer = load_tokenizer(tokenizer_dir)
    if any(type_of(t["type"]).templated for t in tasks):  # chat: fit renders the chat template
        from transformers import AutoTokenizer

        templated = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    # every task is made before the first file is written: a failing task leaves no half-written output
    made = [_task_examples(task, templated if type_of(task["type"]).templated else tokenizer,
                           max_length=max_length, dedup_dir=Path(dedup_dir), base_dir=Path(base_dir),
                           max_train=default_max_train, min_eval=default_min_eval, retry=retry) for task in tasks]
    counters: dict[str, int] = {}
    manifest: dict[str, dict[str, Any]] = {}
    for task, (rows, bad, stats) in zip(tasks, made, strict=True):
        name, kind = task["name"], task["type"]
        for split in SPLITS:
            write_rows(split_file(out_dir, name, split), rows[split])
        write_rows(Path(out_dir) / name / QUARANTINE_FILE, [b.row() for b in bad])
        reasons = Counter(b.reason for b in bad)
        labels = stats.pop("labels")
        label_counts = None
        if type_of(kind).labelled:
            label_counts = {s: {lab: sum(type_of(kind).labels_of(r).count(lab) for r in rows[s]) for lab in labels}
                            for s in SPLITS}
            counters.update({f"{name}.labels.{lab}.{s}": n for s, c in label_counts.items() for lab, n in c.items()})
        counters.update({f"{name}.{key}": value for key, value in stats.items()})
        counters.update({f"{name}.{s}": len(rows[s]) for s in SPLITS})
        counters[f"{name}.quarantined"] = len(bad)
        counters.update({f"{name}.quarantined.{reason}": n for reason, n in sorted(reasons.items())})
        manifest[name] = {"type": kind, "weight": task["weight"], "labels": labels, "settings": task_settings(task),
                          "splits": {s: len(rows[s]) for s in SPLITS}, "label_counts": label_counts,
                          "quarantined": dict(sorted(reasons.items())), "augmented": stats["augmented"]}
    write_manifest(Path(out_dir), manifest)
    return counters


def _read(task: dict[str, Any], dedup_dir: Path, base_dir: Path,
          retry: Callable[..., Any] | None = None) -> Iterator[Raw | Bad]:
    """Every record of every data entry of the task, entry by entry."""
    for index, data in enumerate(task["data"]):
        what = f"task {task['name']!r} data[{index}]"
        if data["kind"] == "files":
            yield from iter_files(paths=data["paths"], base_dir=base_dir, fmt=data["format"], fields=data["fields"],
                                  what=f"{what}.paths", split=data.get("split"))
        elif data["kind"] == "folders":
            yield from iter_folders(path=data["path"], unit=data["unit"], base_dir=base_dir, what=f"{what}.path")
        elif data["kind"] == "hf":
            yield from iter_hf(path=data["path"], config=data["config"], splits=data["splits"],
                               data_files=data["data_files"], revision=data["revision"], fields=data["fields"],
                               base_dir=base_dir, what=what, retry=retry)
        elif task["type"] == "classification":
            yield from iter_default_classification(dedup_dir)
        else:
            yield from iter_default_sft(dedup_dir)


def _reviewed(examples: list[Example], review: Callable[..., Any],
              task: dict[str, Any]) -> tuple[list[Example], list[Bad]]:
    """The examples a task type's ``review`` keeps (with what it found of the task, such as the tag scheme, in their
    values) and those it quarantines."""
    verdicts = review([ex.values for ex in examples], options=task)
    kept, bad = [], []
    for ex, verdict in zip(examples, verdicts, strict=True):
        if isinstance(verdict, Reject):
            bad.append(Bad(ex.where, verdict.reason, verdict.detail, jsonable(ex.values)))
        else:
            kept.append(Example(ex.id, verdict, ex.where, ex.split))
    return kept, bad


def _task_examples(task: dict[str, Any], tokenizer: Any, *, max_length: int, dedup_dir: Path, base_dir: Path,
                   max_train: int, min_eval: int, retry: Callable[..., Any] | None = None,
                   ) -> tuple[dict[str, list[dict[str, Any]]], list[Bad], dict[str, Any]]:
    """(rows per split, quarantined records, counters and the label list) of one task."""
    name, kind, labels, settings = task["name"], task["type"], task["labels"], task_settings(task)
    kind_ = type_of(kind, settings)
    labels = kind_.label_names(labels) if labels is not None else None  # the head's labels (NER: its IOB2 tags)
    examples: list[Example] = []
    bad: list[Bad] = []
    read = 0
    for item in _read(task, dedup_dir, base_dir, retry):
        read += 1
        checked = item if isinstance(item, Bad) else check_record(item, task_type=kind, labels=labels,
                                                                   max_chars=task["max_chars"], settings=settings)
        (bad if isinstance(checked, Bad) else examples).append(checked)
    examples, unfit = _reviewed(examples, kind_.review, task)  # the task as a whole (token_classification's scheme)
    bad += unfit
    examples, duplicates = drop_duplicates(kind, examples)
    examples, too_long = drop_too_long(tokenizer, kind, examples, max_length, settings)
    bad += duplicates + too_long
    if not examples:
        reasons = dict(Counter(b.reason for b in bad))
        raise NoExamplesError(f"task {name!r}: no valid example among {read} records (quarantined: {reasons}); see "
                              "its quarantine reasons, fix the data or the fields")
    split = task["splits"]
    # one class per example (classification): splits, eval rebalancing and the training cap keep the class shares
    stratified = kind_.stratum(examples[0].values) is not None
    examples = make_splits(examples, stratify=stratified, val=split["val"], test=split["test"],
                           seed=split["seed"], group=kind_.group)
    if stratified:
        examples = rebalance_eval(examples, min_eval=min_eval, seed=split["seed"])
    before = len(examples)
    examples = cap_train(examples, max_train=max_train, seed=split["seed"],
                         label="label" if stratified else None)
    if not any(ex.split == "train" for ex in examples):
        raise NoExamplesError(f"task {name!r}: no training example ({len(examples)} examples, all in val/test); "
                              "add examples or check the split field")
    if kind_.labelled:
        found = {lab for ex in examples for lab in kind_.labels_of(ex.values)}
        labels = labels if labels is not None else sorted(found)
    if stratified:
        check_min_per_class(name, examples, labels, task["min_per_class"])
    rows: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    copies: dict[str, list[dict[str, Any]]] = {}
    aug = task["augment"]
    if aug["enabled"]:  # classification only (the params say so)
        pairs = list(augment(examples, copies=aug["copies"], p_delete=aug["p_delete"], p_swap=aug["p_swap"],
                             p_insert=aug["p_insert"], seed=aug["seed"]))
        fitting, _ = drop_too_long(tokenizer, kind, [copy for _, copy in pairs], max_length)
        fit_ids = {c.id for c in fitting}
        for original, copy in pairs:
            if copy.id in fit_ids:
                copies.setdefault(original.id, []).append({**kind_.row(copy.id, copy.values), "augmented": True})
    for ex in examples:
        rows[ex.split].append(kind_.row(ex.id, ex.values))
        rows[ex.split] += copies.get(ex.id, [])
    augmented = sum(len(c) for c in copies.values())
    stats = {"examples_in": read, "kept": len(examples), "capped": before - len(examples), "augmented": augmented,
             "labels": labels if kind_.labelled else None}
    return rows, bad, stats
