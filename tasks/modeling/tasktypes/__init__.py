"""Fine-tuning task types, one component each (:class:`tasks.modeling.tasktypes.base.TaskType`): the data step, the
recipes, distill, evaluate and the registry ask :func:`task_type` instead of branching on the type.

To add a type: a module here with a class implementing the protocol (``classification`` is the worked example), an
instance in :data:`TASK_TYPES`, and the type's name in ``pipelines.config.finetune.TaskParams.type``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tasks.modeling.errors import ConfigError
from tasks.modeling.tasktypes.base import Reject, TaskType
from tasks.modeling.tasktypes.chat import Chat
from tasks.modeling.tasktypes.classification import Classification
from tasks.modeling.tasktypes.sft import Sft
from tasks.modeling.tasktypes.token_classification import TokenClassification

TASK_TYPES: dict[str, TaskType] = {t.name: t for t in (Classification(), Sft(), Chat(), TokenClassification())}
"""Every task type by name."""


def task_type(name: str) -> TaskType:
    """The component of task type ``name``.

    Raises:
        ConfigError: no such type (the message lists the known ones).
    """
    try:
        return TASK_TYPES[name]
    except KeyError:
        raise ConfigError(f"task type {name!r} is not one of {sorted(TASK_TYPES)}") from None


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


__all__ = ["TASK_TYPES", "ConfigError", "chat_templates", "Reject", "TaskType", "task_type"]
