"""Training: stand-alone recipes launched by ``deepspeed``/``torchrun`` (never inside the Prefect process) and the
components they share.

Recipes (``python -m tasks.training.<name> --config run.json``; one JSON file written by the flow holds every
setting): ``pretrain`` (``finetune`` and ``distill`` come next). Each holds its config, its preflight and its loop.
Components take keyword arguments, never a recipe's config: ``config`` (the settings, defined once, shared with the
params schema), ``model``, ``data``, ``engine`` (DeepSpeed config and init), ``schedule``, ``losses``, ``checkpoint``
(save, resume identity, RNG), ``telemetry`` (MLflow sink, MFU, RSS, launch-to-first-step), ``export``. Importing any
of them imports nothing heavy (torch and deepspeed are imported inside functions).
"""
