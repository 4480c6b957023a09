"""A task's models scored on its test split, by task type: one scorer per type in :data:`SCORERS`, the evaluate
stage asks :func:`score_task` for every task (a new task type adds its scorer here, not a branch in the stage).

Each scorer returns ``{model name: metrics}`` for the task's models (``finetuned``, ``student``, variants, an
untouched checkpoint's probe) and its type's baselines, with bootstrap intervals; generative types also write their
greedy replies next to the report.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from tasks.evaluate import chat, classification, extractive_qa, generation, ner


@dataclass(frozen=True)
class TaskJob:
    """What scoring one task needs.

    Attributes:
        task: the task's name.
        labels: a labelled type's label names (the manifest's, in target order), else None.
        models: ``{name: model directory}``.
        splits: the task's ``train``, ``val`` and ``test`` rows.
        settings: the evaluate section of params.yaml as a dict (``classification``, ``generation``, ``seed``...).
        out_dir: the report's directory (generations are written under it).
        probe: the untouched checkpoint finetune started from, or None (classification scores its linear probe).
    """

    task: str
    labels: list[str] | None
    models: Mapping[str, Path]
    splits: Mapping[str, Sequence[dict[str, Any]]]
    settings: Mapping[str, Any]
    out_dir: Path
    probe: Path | None = None

    @property
    def intervals(self) -> dict[str, Any]:
        """Bootstrap resamples and coverage of every type's intervals (the evaluate section's ``classification``
        settings, which every type with a head shares), and the seed."""
        return {"bootstrap": self.settings["classification"]["bootstrap"],
                "level": self.settings["classification"]["level"], "seed": self.settings["seed"]}


def _classification(job: TaskJob) -> dict[str, dict[str, Any]]:
    return classification.score_classifiers(models=job.models, splits=job.splits, labels=list(job.labels or []),
                                            seed=job.settings["seed"], probe=job.probe,
                                            **job.settings["classification"])


def _token_classification(job: TaskJob) -> dict[str, dict[str, Any]]:
    return ner.score_taggers(models=job.models, splits=job.splits, scheme=job.splits["test"][0]["scheme"],
                             batch_size=job.settings["classification"]["batch_size"], **job.intervals)


def _extractive_qa(job: TaskJob) -> dict[str, dict[str, Any]]:
    # each model decodes with the settings its export carries
    return extractive_qa.score_qa_models(models=job.models, test=job.splits["test"],
                                         batch_size=job.settings["classification"]["batch_size"], **job.intervals)


def _generation_settings(job: TaskJob) -> dict[str, Any]:
    return {k: v for k, v in job.settings["generation"].items() if k != "sft_batch_size"}


def _chat(job: TaskJob) -> dict[str, dict[str, Any]]:
    results, replies = chat.score_chat(models=job.models, rows=job.splits["test"],
                                       batch_size=job.settings["generation"]["sft_batch_size"],
                                       **_generation_settings(job), **job.intervals)
    generation.save_generations(job.out_dir / "generations", task=job.task, generations=replies)
    return results


def _sft(job: TaskJob) -> dict[str, dict[str, Any]]:
    results, replies = generation.score_sft(
        models=job.models, rows=job.splits["test"], **_generation_settings(job),
        test_metrics=partial(generation.sft_test_metrics, rows=job.splits["test"],
                             batch_size=job.settings["generation"]["sft_batch_size"]))
    generation.save_generations(job.out_dir / "generations", task=job.task, generations=replies)
    return results


SCORERS: dict[str, Callable[[TaskJob], dict[str, dict[str, Any]]]] = {
    "classification": _classification,
    "sft": _sft,
    "chat": _chat,
    "token_classification": _token_classification,
    "extractive_qa": _extractive_qa,
}
"""The scorer of each task type (tests/tasks/modeling/test_tasktypes.py checks every registered type has one)."""


def score_task(kind: str, job: TaskJob) -> dict[str, dict[str, Any]]:
    """Every model of ``job``'s task and its type's baselines scored on the task's test split.

    Raises:
        KeyError: ``kind`` has no scorer.
    """
    if kind not in SCORERS:
        raise KeyError(f"task {job.task!r}: no evaluate scorer for task type {kind!r} (known: {sorted(SCORERS)})")
    return SCORERS[kind](job)
