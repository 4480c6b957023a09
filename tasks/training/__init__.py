"""Training: stand-alone recipes launched by ``deepspeed``/``torchrun`` (never inside the Prefect process) and the
components they share.

Recipes (``python -m tasks.training.<name> --config run.json``; one JSON file written by the flow holds every
setting): ``pretrain``, ``finetune`` (``distill`` comes next). Each holds its config, its preflight and its loop.
Components take keyword arguments, never a recipe's config: ``config`` (the settings, defined once, shared with the
params schema), ``model``, ``data``, ``engine`` (DeepSpeed config and init), ``schedule``, ``losses``, ``checkpoint``
(save, resume identity, RNG), ``telemetry`` (MLflow sink, MFU, RSS, launch-to-first-step), ``export``; for
fine-tuning also ``task_data`` (task rows, multi-task batches), ``multitask`` (backbone and heads, losses, parameter
groups), ``freezing`` (frozen parts, gradual unfreezing, LoRA), ``metrics`` (F1, val_score, early stopping, learning
curves), ``task_eval`` (val and test metrics) and ``shift`` (the distribution-shift report). Importing any of them
imports nothing heavy (torch and deepspeed are imported inside functions).
"""
