"""The Great Expectations gate on the fine-tuning task data (``tasks.examples`` layout), before it is published."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.examples import SPLITS, read_manifest, read_rows, split_file
from tasks.validation import ValidationReport, run_suite


def examples_frame(examples_dir: Path) -> Any:
    """A pandas frame of every example: task, split, key (task/id), characters of the text (classification) or
    response (sft), characters of the prompt, ``task:label`` and ``task:split`` for the set expectations."""
    import pandas as pd

    rows = []
    for task, meta in read_manifest(examples_dir)["tasks"].items():
        for split in SPLITS:
            for row in read_rows(split_file(examples_dir, task, split)):
                prompt = row.get("prompt")
                rows.append({"task": task, "split": split, "key": f"{task}/{row.get('id')}",
                             "chars": _chars(meta["type"], row),
                             "prompt_chars": len(prompt.strip()) if isinstance(prompt, str) else None,
                             "task_label": f"{task}:{row['label']}" if "label" in row else None,
                             "task_split": f"{task}:{split}"})
    return pd.DataFrame(rows, columns=["task", "split", "key", "chars", "prompt_chars", "task_label", "task_split"])


def _chars(kind: str, row: dict[str, Any]) -> int | None:
    """The characters of a row's inputs as its task type counts them (None: a row the type cannot read)."""
    from tasks.modeling.tasktypes import task_type

    try:
        return task_type(kind).chars(row)
    except (KeyError, TypeError, AttributeError):
        return None


def validate_examples(examples_dir: Path, *, report_dir: Path) -> ValidationReport:
    """The gate: unique example ids per task, non-empty inputs (as the task type counts them), every label in its
    task's label set, every task with examples in train, val and test.

    Args:
        examples_dir: the staged ``data/finetune``.
        report_dir: where the Data Docs site is written.
    """
    import great_expectations.expectations as gxe

    tasks = read_manifest(examples_dir)["tasks"]
    labels = [f"{t}:{label}" for t, meta in tasks.items() for label in (meta.get("labels") or [])]
    expectations = [
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        gxe.ExpectColumnValuesToBeUnique(column="key"),
        gxe.ExpectColumnValuesToNotBeNull(column="chars"),
        gxe.ExpectColumnValuesToBeBetween(column="chars", min_value=1),
        gxe.ExpectColumnValuesToBeBetween(column="prompt_chars", min_value=1),
        gxe.ExpectColumnDistinctValuesToContainSet(column="task_split",
                                                   value_set=[f"{t}:{s}" for t in tasks for s in SPLITS]),
    ]
    if labels:
        expectations.append(gxe.ExpectColumnValuesToBeInSet(column="task_label", value_set=labels))
    return run_suite(examples_frame(examples_dir), "finetune", expectations, report_dir)
