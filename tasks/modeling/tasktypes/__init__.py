"""Fine-tuning task types, one component each (:class:`tasks.modeling.tasktypes.base.TaskType`)."""
