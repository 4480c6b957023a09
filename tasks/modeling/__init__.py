"""The model layer: the model-facing components training recipes and the evaluate stage share (torchtune's
``modules`` + ``training``, LitGPT's ``args``), so each capability is written once.

``llama`` (build a Llama, count parameters, resolve a shape), ``heads`` (the multi-task module: a backbone, a
classification head per task, the LM head for sft; their losses; parameter groups; loading exported task models),
``encoding`` (the task manifest checked, examples tokenized, a run's :class:`~tasks.modeling.encoding.TaskSet`,
seeded multi-task batches), ``metrics`` (F1, val_score, early stopping, learning curves), ``evaluation`` (a split's
metrics, a run's validation passes as :class:`~tasks.modeling.evaluation.Evaluator` with its JSON-lines record,
exported models' test metrics), ``checkpoint`` (resume: DeepSpeed save and load, the run identity, RNG, run stats),
``export`` (Hugging Face directories per task), ``quantize`` (int8 save and the one documented loader),
``measure`` (size, latency, quality and retention of a model) and ``errors``. Importing any of them imports nothing
heavy (torch, transformers and deepspeed are imported inside functions).
"""
