"""Training: stand-alone recipes launched by ``deepspeed``/``torchrun`` (never inside the Prefect process) and the
training-only components they share; the model-facing components live in the model layer, ``tasks.modeling``.

Recipes (``python -m tasks.training.<name> --config run.json``; one JSON file written by the flow holds every
setting): ``pretrain``, ``finetune``, ``distill`` (KD) and ``compress`` (pruning with recovery, int8, every variant
measured; the distill stage runs it after KD). Components take keyword arguments, never a recipe's config object
(except the shared start in ``engine`` and the loop): ``blocks`` (the shared settings blocks, each field defined
once, and the run-config loader), ``config`` (each recipe's settings, composed from the blocks and shared with the
params schema), ``loop`` (the task recipes' loop: resume, steps, logging, evaluations, checkpoints), ``teachers``
(distillation's config, checks, data, teachers and KD loss), ``kd`` (KD losses, student initialisation, the teacher
cache), ``prune``, ``freezing`` (frozen parts, gradual unfreezing, LoRA), ``shift`` (the distribution-shift report),
``data`` and ``losses`` (pretraining windows and loss), ``engine`` (DeepSpeed config and init, the recipes' command
line), ``schedule`` and ``telemetry`` (MLflow sink, MFU, RSS, launch-to-first-step). Importing any of them imports
nothing heavy (torch and deepspeed are imported inside functions).
"""
