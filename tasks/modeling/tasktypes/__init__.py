"""Fine-tuning task types, one component each (:class:`tasks.modeling.tasktypes.base.TaskType`): the data step, the
recipes, distill, evaluate and the registry ask :func:`task_type` instead of branching on the type.

To add a type: a module here with a class implementing the protocol (``classification`` is the worked example), an
instance in :data:`TASK_TYPES`, and the type's name in ``pipelines.config.finetune.TaskParams.type``. A type with
options of its own (``extractive_qa``: unanswerable questions, ``doc_stride``...) takes them as keyword arguments; a
task's options are its params section named after its type, recorded as ``settings`` in the task manifest, and
:func:`task_type` builds the component with them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tasks.modeling.errors import ConfigError
from tasks.modeling.tasktypes.base import Reject, TaskType
from tasks.modeling.tasktypes.chat import Chat
from tasks.modeling.tasktypes.classification import Classification
from tasks.modeling.tasktypes.extractive_qa import ExtractiveQA
from tasks.modeling.tasktypes.sft import Sft
from tasks.modeling.tasktypes.token_classification import TokenClassification

TASK_TYPES: dict[str, TaskType] = {t.name: t for t in (Classification(), Sft(), Chat(), TokenClassification(),
                                                       ExtractiveQA())}
"""Every task type by name (with its default options)."""


def task_type(name: str, settings: Mapping[str, Any] | None = None) -> TaskType:
    """The component of task type ``name``, with the task's ``settings`` (its type's options; None or empty: the
    defaults).

    Raises:
        ConfigError: no such type (the message lists the known ones).
    """
    try:
        kind = TASK_TYPES[name]
    except KeyError:
        raise ConfigError(f"task type {name!r} is not one of {sorted(TASK_TYPES)}") from None
    return type(kind)(**settings) if settings else kind


def chat_templates(kinds: Mapping[str, str], *, tokenizer: Any, default: str) -> dict[str, str]:
    """The chat template each generative task's exported tokenizer carries: the one its type rendered training
    examples with where the type says (``chat_template``: a chat task, the tokenizer's own or lmforge's), else
    ``default`` (sft's layout)."""
    out = {}
    for task, kind in kinds.items():
        if task_type(kind).generative:
            own = getattr(task_type(kind), "chat_template", None)
            out[task] = own(tokenizer) if own is not None else default
    return out


def task_settings(task: Mapping[str, Any]) -> dict[str, Any]:
    """A task's options (a ``TaskParams.model_dump()`` or a manifest entry): its section named after its type, or
    the manifest's ``settings``; {} when it has none."""
    return dict(task.get("settings") or task.get(task["type"]) or {})


__all__ = ["TASK_TYPES", "ConfigError", "Reject", "TaskType", "chat_templates", "task_settings",
           "task_type"]
