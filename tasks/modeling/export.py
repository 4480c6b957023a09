"""Export: the trained weights in Hugging Face format (safetensors) with the tokenizer, sample completions and the
run's summary, published atomically (``tasks.atomic.atomic_dir``: flushed, renamed into place, leftovers of a killed
writer swept).

Nothing time-dependent goes in: the same config and data export the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tasks.atomic import atomic_dir

SUMMARY_FILE = "train_summary.json"  # steps, tokens, val history (no timings: the export is reproducible)
SAMPLES_FILE = "samples.json"


def gather_state(engine: Any, *, zero3: bool, is_main: bool) -> dict[str, Any] | None:
    """A full copy of the engine's weights on rank 0 (None elsewhere). Every rank must call it: under ZeRO-3 the
    parameters are gathered collectively first."""
    import deepspeed

    module = engine.module
    # ZeRO-3 keeps only a shard of each parameter here; gathering is a no-op for the other stages
    with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None, enabled=zero3):
        return {k: v.detach().clone() for k, v in module.state_dict().items()} if is_main else None


def sample(model_dir: Path, *, tokenizer_dir: Path, prompts: list[str], max_new_tokens: int) -> list[dict[str, str]]:
    """Greedy completions of ``prompts`` by the model saved in ``model_dir`` (proving it loads)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    samples = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        samples.append({"prompt": prompt, "completion": tokenizer.decode(out[0, ids.shape[1]:])})
        print(f"sample: {prompt!r} -> {samples[-1]['completion']!r}", flush=True)
    return samples


def export_model(state: dict[str, Any], *, out_dir: Path, tokenizer_dir: Path, model_kwargs: dict[str, Any],
                 dtype: str, summary: dict[str, Any], sample_prompts: list[str], sample_max_new_tokens: int) -> None:
    """Write a model directory atomically: weights, tokenizer, ``samples.json``, ``train_summary.json``.

    Args:
        state: the full state dict (:func:`gather_state` on rank 0).
        out_dir: the model directory, replaced as a whole.
        tokenizer_dir: the Hugging Face tokenizer to copy in.
        model_kwargs: the shape :func:`tasks.modeling.llama.build_llama` takes.
        dtype: ``bfloat16`` or ``float32``, the saved weights' type.
        summary: what the model is (steps, tokens, val history...), a function of config and data only.
        sample_prompts: prompts completed greedily by the exported files.
        sample_max_new_tokens: tokens generated per prompt.
    """
    from transformers import AutoTokenizer

    from tasks.modeling.llama import build_llama

    model = build_llama(**model_kwargs, dtype=dtype)
    model.load_state_dict(state)
    model.config.use_cache = True
    with atomic_dir(Path(out_dir)) as tmp:
        model.save_pretrained(str(tmp))
        AutoTokenizer.from_pretrained(str(tokenizer_dir)).save_pretrained(str(tmp))
        # samples come from the exported files, so they also prove the export loads
        samples = sample(tmp, tokenizer_dir=tokenizer_dir, prompts=sample_prompts, max_new_tokens=sample_max_new_tokens)
        (tmp / SAMPLES_FILE).write_text(json.dumps(samples, indent=2) + "\n", encoding="utf-8")
        (tmp / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


def save_task_models(out: Path, *, module: Any, labels: dict[str, list[str] | None], sft_tasks: list[str],
                     tokenizer: Any, dtype: str, chat_template: str | Mapping[str, str],
                     extras: dict[str, dict[str, Any]] | None = None) -> None:
    """One Hugging Face model directory per task under ``out``: the task's model (``AutoModelForSequenceClassification``
    and the other head types: the shared backbone and the task's head, ``id2label``/``label2id`` from ``labels``) per
    task with a head, the causal LM with a chat template in its tokenizer per generative task; each with the tokenizer.

    Args:
        out: the directory to write into (the inside of an ``atomic_dir``).
        module: the trained multi-task module (:func:`tasks.modeling.heads.build_multitask`; LoRA already merged),
            on the CPU.
        labels: ``{task with a head: label names in head order, or None for an unlabelled head}``.
        sft_tasks: the generative tasks' names.
        tokenizer: the tokenizer training used (its pad token set), saved into every directory.
        dtype: ``bfloat16`` or ``float32``, the saved weights' type.
        chat_template: the generative tasks' tokenizers' ``chat_template`` (``tasks.examples.CHAT_TEMPLATE``), or one
            per task (:func:`tasks.modeling.tasktypes.chat_templates`).
        extras: ``{task: config attributes}`` a task's model carries besides (``TaskSet.config_extras``).
    """
    import copy

    import torch

    torch_dtype = getattr(torch, dtype)
    module = module.to(torch_dtype).eval()
    lm = module.lm()
    lm.config.use_cache = True
    if hasattr(lm.config, "attention_dropout"):
        lm.config.attention_dropout = 0.0
    for task in sorted(labels):
        classifier = module.classifier(task)
        config = classifier.config
        config.use_cache = True
        if hasattr(config, "attention_dropout"):
            config.attention_dropout = 0.0
        config.architectures = [type(classifier).__name__]
        names = labels[task]
        if names is not None:  # a labelled type (a span head's two outputs have no names)
            config.num_labels = len(names)
            config.id2label = dict(enumerate(names))
            config.label2id = {label: i for i, label in enumerate(names)}
        config.pad_token_id = tokenizer.pad_token_id
        config.dtype = torch_dtype
        for key, value in (extras or {}).get(task, {}).items():
            setattr(config, key, value)
        classifier.save_pretrained(str(out / task))
        tokenizer.save_pretrained(str(out / task))
    lm.config.architectures = [type(lm).__name__]
    lm.config.dtype = torch_dtype
    for task in sorted(sft_tasks):
        lm.save_pretrained(str(out / task))
        with_template = copy.deepcopy(tokenizer)
        with_template.chat_template = chat_template if isinstance(chat_template, str) else chat_template[task]
        with_template.save_pretrained(str(out / task))
