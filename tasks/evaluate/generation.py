"""Generation quality of an sft model: greedy completions through its chat template, scored against the references
with ROUGE-1/2/L (rouge-score, stemmed F-measure, averaged over examples) and corpus BLEU and chrF (sacrebleu).

BLEU and chrF are sacrebleu's corpus-level figures on a 0-100 scale; ROUGE is a 0-1 mean of per-example F-measures.
The completions come back as rows (``id``, ``prompt``, ``reference``, ``completion``) for the caller to save as
JSON lines beside the metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


class GenerationEvalError(Exception):
    """Generations cannot be made or scored; the message says what to fix. Exit code 2."""

    exit_code = 2


def generate(*, model_dir: Path, rows: Sequence[dict[str, Any]], max_new_tokens: int = 64,
             threads: int | None = None) -> list[dict[str, Any]]:
    """Greedy completions of the ``prompt`` of each sft row by a causal LM, prompted through its chat template.

    Args:
        model_dir: an sft ``LlamaForCausalLM`` saved with a tokenizer that has a ``chat_template``.
        rows: ``{"id", "prompt", "response"}`` rows (``tasks.examples`` sft format).
        max_new_tokens: the longest completion; generation also stops at EOS.
        threads: torch CPU threads (None: leave as is).

    Returns:
        ``{"id", "prompt", "reference", "completion"}`` per row, in order.

    Raises:
        GenerationEvalError: the tokenizer has no chat template.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if threads:
        torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if not tokenizer.chat_template:
        raise GenerationEvalError(f"the tokenizer in {model_dir} has no chat_template: evaluate a model exported by "
                                  "the finetune stage (its sft task models carry one)")
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    limit = int(model.config.max_position_embeddings)
    out = []
    for row in rows:
        text = tokenizer.apply_chat_template([{"role": "user", "content": row["prompt"]}], tokenize=False,
                                             add_generation_prompt=True)
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids
        # keep the prompt's end (the template's "### Response:" cue) when it does not fit beside the completion
        ids = ids[:, -max(1, limit - max_new_tokens):]
        with torch.no_grad():
            gen = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=tokenizer.eos_token_id)
        out.append({"id": row.get("id"), "prompt": row["prompt"], "reference": row["response"],
                    "completion": tokenizer.decode(gen[0, ids.shape[1]:], skip_special_tokens=True).strip()})
    return out


def generation_metrics(*, references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, Any]:
    """ROUGE-1/2/L F-measure (mean over examples, 0-1), corpus BLEU and chrF (0-100) of ``hypotheses``.

    Args:
        references: one reference per example.
        hypotheses: the generated text per example, same order.

    Returns:
        ``examples``, ``rouge1``, ``rouge2``, ``rougeL``, ``bleu``, ``chrf``, ``exact_match`` (share of hypotheses
        equal to their reference after stripping whitespace), ``mean_words`` (words per hypothesis).

    Raises:
        GenerationEvalError: the lengths differ or there is no example.
    """
    import sacrebleu
    from rouge_score import rouge_scorer

    if len(references) != len(hypotheses) or not references:
        raise GenerationEvalError(f"{len(references)} references and {len(hypotheses)} hypotheses: need the same "
                                  "non-zero number")
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    sums = dict.fromkeys(ROUGE_TYPES, 0.0)
    for ref, hyp in zip(references, hypotheses, strict=True):
        for k, score in scorer.score(ref, hyp).items():
            sums[k] += score.fmeasure
    n = len(references)
    return {"examples": n, **{k: v / n for k, v in sums.items()},
            "bleu": float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score),
            "chrf": float(sacrebleu.corpus_chrf(list(hypotheses), [list(references)]).score),
            "exact_match": sum(h.strip() == r.strip() for r, h in zip(references, hypotheses, strict=True)) / n,
            "mean_words": sum(len(h.split()) for h in hypotheses) / n}


def evaluate_generation(*, model_dir: Path, rows: Sequence[dict[str, Any]], max_new_tokens: int = 64,
                        threads: int | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """:func:`generate` then :func:`generation_metrics`; returns ``(metrics, generations)``."""
    gens = generate(model_dir=model_dir, rows=rows, max_new_tokens=max_new_tokens, threads=threads)
    metrics = generation_metrics(references=[g["reference"] for g in gens], hypotheses=[g["completion"] for g in gens])
    return metrics, gens


GENERATING = ("finetuned", "student")
"""The sft models whose greedy completions are scored (the compressed variants get their test perplexity only)."""


def sft_test_metrics(model_dir: Path, *, rows: Sequence[dict[str, Any]], batch_size: int,
                     tokenizer_dir: Path | None = None) -> dict[str, Any]:
    """An sft model's test loss and perplexity over response tokens (EOS included), exactly as the finetune stage
    measures it: the model layer's encoding and :func:`tasks.modeling.evaluation.exported_test_metrics`, with the
    model's own tokenizer (``tokenizer_dir`` None) or the one given."""
    from transformers import AutoConfig, AutoTokenizer

    from tasks.modeling.encoding import encode, special_ids
    from tasks.modeling.evaluation import exported_test_metrics

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir or model_dir))
    eos, _ = special_ids(tokenizer)
    limit = int(AutoConfig.from_pretrained(str(model_dir)).max_position_embeddings)  # GPT-2: n_positions
    data = encode(list(rows), kind="sft", tokenizer=tokenizer, max_length=limit, eos_id=eos)
    return exported_test_metrics(Path(model_dir), data, kind="sft", labels=None, batch_size=batch_size, samples=0,
                                 max_new_tokens=1)


def score_sft(*, models: Mapping[str, Path], rows: Sequence[dict[str, Any]],
              test_metrics: Callable[[Path], Mapping[str, Any]], max_examples: int = 16,
              max_new_tokens: int = 24) -> tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """Every sft model of a task on its test split, and the lead baseline.

    Args:
        models: ``{name: model directory}``.
        rows: the test split (``prompt``, ``response``).
        test_metrics: ``model directory -> {"perplexity", "loss", "examples"}`` over the whole split (response
            tokens, as the finetune stage measures it).
        max_examples: prompts completed per generating model (the first ones), and by the lead baseline.
        max_new_tokens: the longest completion.

    Returns:
        ``({name: metrics}, {name: generations})``: every model's test perplexity, loss and examples, plus
        :func:`generation_metrics` for :data:`GENERATING` and ``lead``, whose ``generated`` counts the prompts
        completed (``examples`` stays the number of test examples the perplexity covers).
    """
    from tasks.evaluate.baselines import lead_baseline

    first = list(rows[:max_examples])
    out: dict[str, dict[str, Any]] = {}
    gens: dict[str, list[dict[str, Any]]] = {}
    for name, model_dir in models.items():
        test = test_metrics(model_dir)
        out[name] = {"perplexity": test["perplexity"], "loss": test["loss"], "examples": test["examples"]}
        if name in GENERATING:
            metrics, gens[name] = evaluate_generation(model_dir=model_dir, rows=first, max_new_tokens=max_new_tokens)
            # ``examples`` stays the perplexity's count (the whole split); ``generated`` counts the completions
            out[name] |= {k: v for k, v in metrics.items() if k != "examples"} | {"generated": metrics["examples"]}
    lead = generation_metrics(references=[r["response"] for r in first],
                              hypotheses=lead_baseline([r["prompt"] for r in first]))
    out["lead"] = {k: v for k, v in lead.items() if k != "examples"} | {"generated": lead["examples"]}
    return out, gens


def save_generations(out_dir: Path, *, task: str, generations: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
    """Write each model's completions of ``task`` to ``out_dir/MODEL.TASK.jsonl`` (one JSON object a line)."""
    import json

    from tasks.atomic import atomic_write_text

    for name, rows in generations.items():
        atomic_write_text(Path(out_dir) / f"{name}.{task}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
