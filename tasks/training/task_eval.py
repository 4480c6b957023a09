"""Evaluation of fine-tuning tasks: val metrics of the training module, test metrics of the exported models.

Classification: loss, accuracy, macro-F1 and per-class F1 (``tasks.training.metrics``); sft: the loss over response
tokens (EOS included) and its perplexity, plus greedy completions of a few test prompts by the exported model through
its chat template. Every rank evaluates the whole (capped) split, so no gathering is needed and the numbers agree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.training.metrics import classification_scores, perplexity
from tasks.training.task_data import batches


def evaluate_split(module: Any, data: dict[str, Any], *, task: str, kind: str, labels: list[str] | None,
                   batch_size: int, pad_id: int) -> dict[str, Any]:
    """Metrics of the multi-task ``module`` (a DeepSpeed engine or the module) on one task's encoded split.

    Args:
        module: called as ``module(input_ids=, attention_mask=, task=)``; put back in training mode afterwards.
        data: :func:`tasks.training.task_data.encode`'s result (possibly capped).
        task: the task's name.
        kind: ``classification`` or ``sft``.
        labels: classification: the label names.
        batch_size: examples per forward pass.
        pad_id: padding id.
    """
    import torch

    from tasks.training.multitask import classification_loss, response_loss

    device = next(module.parameters()).device
    module.eval()
    loss_sum, count, predictions = 0.0, 0, []
    with torch.no_grad():
        for x, mask, y in batches(data, kind=kind, batch_size=batch_size, pad_id=pad_id):
            x, mask, y = x.to(device), mask.to(device), y.to(device)
            out = module(input_ids=x, attention_mask=mask, task=task)
            if kind == "classification":
                loss_sum += float(classification_loss(out, y, reduction="sum"))
                count += len(y)
                predictions += out.argmax(-1).tolist()
            else:
                loss_sum += float(response_loss(out, y, reduction="sum"))
                count += int((y[:, 1:] != -100).sum())
    module.train()
    loss = loss_sum / max(count, 1)
    if kind == "classification":
        scores = classification_scores(list(data["targets"]), predictions, labels or [])
        return {"loss": loss, "accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"]}
    return {"loss": loss, "perplexity": perplexity(loss)}


def exported_test_metrics(model_dir: Path, data: dict[str, Any], *, kind: str, labels: list[str] | None,
                          batch_size: int, samples: int, max_new_tokens: int) -> dict[str, Any]:
    """Test metrics of an exported task model, loaded from its files as a user would.

    Args:
        model_dir: ``out_dir/<task>`` (a LlamaForSequenceClassification or LlamaForCausalLM with its tokenizer).
        data: the encoded test split.
        kind: ``classification`` or ``sft``.
        labels: classification: the label names (they must match the model's ``id2label``).
        batch_size: examples per forward pass.
        samples: sft: test prompts completed greedily (the first ones).
        max_new_tokens: sft: tokens generated per prompt.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from tasks.training.multitask import classification_loss, response_loss

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    auto = AutoModelForSequenceClassification if kind == "classification" else AutoModelForCausalLM
    model = auto.from_pretrained(str(model_dir)).eval()
    loss_sum, count, predictions = 0.0, 0, []
    with torch.no_grad():
        for x, mask, y in batches(data, kind=kind, batch_size=batch_size, pad_id=tokenizer.pad_token_id):
            logits = model(input_ids=x, attention_mask=mask).logits
            if kind == "classification":
                loss_sum += float(classification_loss(logits, y, reduction="sum"))
                count += len(y)
                predictions += logits.argmax(-1).tolist()
            else:
                loss_sum += float(response_loss(logits, y, reduction="sum"))
                count += int((y[:, 1:] != -100).sum())
    loss = loss_sum / max(count, 1)
    if kind == "classification":
        if [model.config.id2label[i] for i in range(len(labels or []))] != labels:
            raise RuntimeError(f"exported id2label {model.config.id2label} differs from the labels {labels}")
        return {"loss": loss, **classification_scores(list(data["targets"]), predictions, labels or []),
                "examples": len(predictions)}
    generations = []
    for row in data["rows"][:samples]:
        text = tokenizer.apply_chat_template([{"role": "user", "content": row["prompt"]}], tokenize=False,
                                             add_generation_prompt=True)
        ids = tokenizer(text, return_tensors="pt").input_ids
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        generations.append({"prompt": row["prompt"], "reference": row["response"],
                            "completion": tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)})
    return {"loss": loss, "perplexity": perplexity(loss), "examples": len(data["ids"]), "samples": generations}
