"""Model measurement for the distill stage: size, sparsity, CPU latency at batch 1, throughput and task quality, the
same numbers for the teacher and every compressed variant so that they compare, and quality retention vs the teacher.

Latency is what one user request costs: one example, no padding, ``torch.no_grad``, after ``warmup`` untimed calls,
with whatever thread count the caller set (recorded as ``threads``). Quality runs batched over the whole split and
agrees with :func:`tasks.modeling.evaluation.exported_test_metrics` (the same losses and scores).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tasks.modeling.tasktypes import TASK_TYPES, task_type


def kinds() -> tuple[str, ...]:
    """What can be measured: every task type, and ``lm`` (a language model scored on every token)."""
    return (*TASK_TYPES, "lm")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")


class MeasureError(ValueError):
    """What to measure is inconsistent (kind, data, labels); the message says what to pass instead."""

    exit_code = 2


def files_size(model_dir: Path) -> tuple[int, int]:
    """``(all files, weight files)`` bytes under ``model_dir``: weights are ``*.safetensors``/``*.bin``/``*.pt``;
    the rest is the config and the tokenizer, the same for every variant."""
    files = [p for p in Path(model_dir).rglob("*") if p.is_file()]
    if not files:
        raise MeasureError(f"{model_dir} holds no file: save the model there before measuring it")
    return sum(p.stat().st_size for p in files), sum(p.stat().st_size for p in files if p.suffix in WEIGHT_SUFFIXES)


def param_counts(model: Any) -> tuple[int, int]:
    """``(parameters, non-zero parameters)``, a tied weight counted once; an int8 weight counts its int8 values."""
    import torch

    seen: set[int] = set()
    total = nonzero = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        values = getattr(p, "qdata", p)  # torchao's Int8Tensor keeps the int8 values in qdata
        total += values.numel()
        nonzero += int(torch.count_nonzero(values.detach()))
    return total, nonzero


def _targets(data: dict[str, Any], kind: str) -> list[Any]:
    # a plain LM scores every token of the sequence; sft only the response (encode put -100 on the prompt)
    return [list(ids) for ids in data["ids"]] if kind == "lm" else list(data["targets"])


def quality(model: Any, data: dict[str, Any], *, kind: str, labels: list[str] | None, pad_id: int,
            batch_size: int) -> dict[str, Any]:
    """Loss and the task type's metrics (classification accuracy, macro-F1; sft and lm perplexity...) of an HF-style
    model, called as ``model(input_ids=, attention_mask=)``, over every example of ``data`` in order."""
    from tasks.modeling.evaluation import score
    from tasks.modeling.tasktypes import task_type

    kind_ = task_type("sft" if kind == "lm" else kind)
    data = {**data, "targets": _targets(data, kind)}
    loss, count, outputs = score(lambda x, mask: kind_.logits(model(input_ids=x, attention_mask=mask)), data,
                                 kind=kind_.name, batch_size=batch_size, pad_id=pad_id)
    metrics = kind_.metrics(loss=loss, outputs=outputs, data=data, labels=labels)
    return {**metrics, "scored_tokens": count} if kind_.generative else metrics


def latency(model: Any, ids: list[list[int]], *, warmup: int) -> dict[str, Any]:
    """p50/p95 milliseconds of single-example forward passes over ``ids`` (after ``warmup`` untimed ones) and input
    tokens per second over their total time."""
    import numpy as np
    import torch

    times = []
    with torch.no_grad():
        for seq in ids[:warmup]:
            model(input_ids=torch.tensor([seq]))
        for seq in ids:
            x = torch.tensor([seq])
            start = time.perf_counter()
            model(input_ids=x)
            times.append(time.perf_counter() - start)
    ms = np.array(times) * 1000.0
    return {"latency_p50_ms": float(np.percentile(ms, 50)), "latency_p95_ms": float(np.percentile(ms, 95)),
            "tokens_per_second": sum(len(s) for s in ids) / sum(times), "latency_examples": len(ids),
            "threads": torch.get_num_threads()}


def measure_model(model: Any, *, model_dir: Path | None, kind: str, data: dict[str, Any], labels: list[str] | None,
                  pad_id: int, batch_size: int, latency_examples: int = 32, warmup: int = 3) -> dict[str, Any]:
    """Size, sparsity, latency and quality of one model on one task's test split.

    Args:
        model: a transformers model of any architecture (a ``...ForSequenceClassification`` for classification, a
            causal LM for sft/lm), float or int8 (:func:`tasks.modeling.quantize.quantize_int8`); put in eval mode.
        model_dir: its saved directory (``size_bytes`` and ``weights_bytes`` are None without one).
        kind: a task type (``classification``, ``sft``...) or ``lm`` (every token scored).
        data: :func:`tasks.modeling.encoding.encode`'s result for the test split.
        labels: a labelled type's label names, in target order.
        pad_id: padding id (the model's ``pad_token_id``: the classifier pools the last non-pad token).
        batch_size: examples per forward pass for quality.
        latency_examples: the first examples of ``data`` timed one at a time.
        warmup: untimed calls first (allocator, thread pool, lazy init).

    Returns:
        ``params``, ``nonzero_params``, ``size_bytes``, ``weights_bytes``, ``latency_p50_ms``, ``latency_p95_ms``,
        ``tokens_per_second``, ``latency_examples``, ``threads``, ``examples`` and the quality numbers (``loss``;
        ``accuracy``, ``macro_f1``, ``per_class_f1`` or ``perplexity``, ``scored_tokens``).
    """
    if kind not in kinds():
        raise MeasureError(f"kind {kind!r} is not one of {kinds()}")
    if not data["ids"]:
        raise MeasureError("the test split has no example to measure: check the task's test.jsonl")
    if kind != "lm" and task_type(kind).labelled and not labels:
        raise MeasureError(f"{kind} needs the label names (the manifest's labels, in target order)")
    if latency_examples < 1 or warmup < 0:
        raise MeasureError(f"latency_examples {latency_examples} must be >= 1 and warmup {warmup} >= 0")
    model.eval()
    params, nonzero = param_counts(model)
    size, weights = files_size(model_dir) if model_dir is not None else (None, None)
    return {"params": params, "nonzero_params": nonzero, "size_bytes": size, "weights_bytes": weights,
            **latency(model, data["ids"][:latency_examples], warmup=warmup),
            "examples": len(data["rows"]) if "rows" in data else len(data["ids"]),  # not a long one's windows
            **quality(model, data, kind=kind, labels=labels, pad_id=pad_id, batch_size=batch_size)}


def retention(variant: dict[str, Any], teacher: dict[str, Any], *, kind: str) -> dict[str, float | None]:
    """Quality kept by a variant, as ratios to the teacher's :func:`measure_model` numbers (1.0 = as good): the ratio
    of each metric the task type compares (classification accuracy and macro-F1...), ``teacher_ppl / variant_ppl`` for
    generative types and lm. A ratio whose teacher value is 0 is None."""
    if kind not in kinds():
        raise MeasureError(f"kind {kind!r} is not one of {kinds()}")

    def ratio(num: float, den: float) -> float | None:
        return float(num) / float(den) if den else None

    if kind == "lm" or task_type(kind).generative:
        return {"perplexity": ratio(teacher["perplexity"], variant["perplexity"])}
    return {m: ratio(variant[m], teacher[m]) for m in task_type(kind).compared if m in variant and m in teacher}
