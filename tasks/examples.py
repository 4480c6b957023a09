"""The fine-tuning task-data format, shared by the finetune stage's data step (which writes it) and the training
recipes (which read it).

``data/finetune/`` holds one directory per task with ``{train,val,test}.jsonl`` and ``quarantine.jsonl``, and
``manifest.json`` describing every task. A row is a JSON object with sorted keys, one per line:

- classification: ``{"id": str, "text": str, "label": str}`` (plus ``"augmented": true`` on augmented copies);
- sft: ``{"id": str, "prompt": str, "response": str}``;
- other task types: their component's ``row`` (``tasks.modeling.tasktypes``).

A quarantine row: ``{"where": "file:line or hub id/split#index", "reason": str, "detail": str, "record": ...}``.
The manifest: ``{"format": "lmforge-examples/1", "tasks": {name: {"type": "classification" | "sft",
"weight": float, "labels": [str] | null, "splits": {"train": n, "val": n, "test": n}, "label_counts": {split:
{label: n}} | null, "quarantined": {reason: n}, "augmented": n}}}``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tasks.atomic import atomic_write_text
from tasks.modeling.tasktypes.sft import CHAT_TEMPLATE, PROMPT_TEMPLATE, render_prompt  # the sft layout, re-exported

__all__ = ["CHAT_TEMPLATE", "MANIFEST_FILE", "MANIFEST_FORMAT", "PROMPT_TEMPLATE", "QUARANTINE_FILE", "SPLITS",
           "ExamplesError", "dumps", "load_split", "read_manifest", "read_rows", "render_prompt", "split_file",
           "write_manifest", "write_rows"]

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "lmforge-examples/1"
SPLITS: tuple[str, ...] = ("train", "val", "test")
QUARANTINE_FILE = "quarantine.jsonl"


class ExamplesError(Exception):
    """Task data are missing or inconsistent; the message says which file and what to redo. Exit code 2."""

    exit_code = 2


def split_file(root: Path, task: str, split: str) -> Path:
    """``root/TASK/SPLIT.jsonl``."""
    return Path(root) / task / f"{split}.jsonl"


def dumps(row: dict[str, Any]) -> str:
    """One row as a line: sorted keys, UTF-8 kept as is, so the same rows give the same bytes."""
    return json.dumps(row, ensure_ascii=False, sort_keys=True)


def write_rows(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write ``rows`` as JSON lines atomically; returns how many."""
    lines = [dumps(r) for r in rows]
    atomic_write_text(Path(path), "".join(line + "\n" for line in lines))
    return len(lines)


def read_rows(path: Path) -> Iterator[dict[str, Any]]:
    """The rows of a JSON-lines file written by :func:`write_rows`."""
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    raise ExamplesError(f"{path}:{number}: not JSON ({e}); re-run the finetune stage") from None


def write_manifest(root: Path, tasks: dict[str, dict[str, Any]]) -> Path:
    """Write ``root/manifest.json`` (sorted keys) for ``tasks``."""
    path = Path(root) / MANIFEST_FILE
    atomic_write_text(path, json.dumps({"format": MANIFEST_FORMAT, "tasks": tasks}, indent=2, sort_keys=True) + "\n")
    return path


def read_manifest(root: Path) -> dict[str, Any]:
    """The manifest of a task-data directory, checked for its format and task types.

    Raises:
        ExamplesError: missing, unreadable or of another format.
    """
    path = Path(root) / MANIFEST_FILE
    try:
        manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ExamplesError(f"{path} not found: run the finetune stage's data step first") from None
    except (OSError, json.JSONDecodeError) as e:
        raise ExamplesError(f"{path} is unreadable ({e}): re-run the finetune stage") from None
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ExamplesError(f"{path}: format {manifest.get('format')!r}, expected {MANIFEST_FORMAT!r}")
    from tasks.modeling.tasktypes import TASK_TYPES

    for name, task in manifest.get("tasks", {}).items():
        if task.get("type") not in TASK_TYPES:
            raise ExamplesError(f"{path}: task {name!r} has type {task.get('type')!r}, expected one of "
                                f"{sorted(TASK_TYPES)}")
    return manifest


def load_split(root: Path, task: str, split: str) -> list[dict[str, Any]]:
    """Every row of one task's split.

    Raises:
        ExamplesError: the file is missing or not JSON lines.
    """
    path = split_file(root, task, split)
    if not path.is_file():
        raise ExamplesError(f"{path} not found: re-run the finetune stage's data step")
    return list(read_rows(path))
