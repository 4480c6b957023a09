"""Fine-tuning task types, one component each (:class:`tasks.modeling.tasktypes.base.TaskType`): the data step, the
recipes, distill, evaluate and the registry ask :func:`task_type` instead of branching on the type.

To add a type: a module here with a class implementing the protocol (``classification`` is the worked example), an
instance in :data:`TASK_TYPES`, and the type's name in ``pipelines.config.finetune.TaskParams.type``.
"""

from __future__ import annotations

from tasks.modeling.errors import ConfigError
from tasks.modeling.tasktypes.base import Gate, Reject, TaskType
from tasks.modeling.tasktypes.classification import Classification
from tasks.modeling.tasktypes.sft import Sft

TASK_TYPES: dict[str, TaskType] = {t.name: t for t in (Classification(), Sft())}
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


__all__ = ["TASK_TYPES", "ConfigError", "Gate", "Reject", "TaskType", "task_type"]
