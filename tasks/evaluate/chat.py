"""Chat quality of an exported causal LM on a task's test conversations: perplexity over the assistant tokens, and
ROUGE / BLEU / chrF of its greedy reply to each conversation's last user turn, beside the lead baseline (the last
user turn copied), with percentile bootstrap intervals (the test conversations resampled with replacement, seeded).

Single-turn sft rows (``prompt``, ``response``) are one-exchange conversations, so the same scoring serves both. The
tokens are those training used (``tasks.modeling.chat``: the model's chat template, the loss mask over assistant
turns, a conversation longer than the model's positions cut at a turn boundary, one whose first exchange does not fit
left out and counted); perplexity batches are packed (``tasks.modeling.packing``), which gives each token the loss it
has alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tasks.evaluate.generation import GENERATING, generation_metrics

INTERVALS = ("rougeL", "chrf")
"""Generation metrics that get a bootstrap interval (beside perplexity)."""


class ChatEvalError(Exception):
    """Conversations cannot be scored; the message says what to fix. Exit code 2."""

    exit_code = 2


def _quantiles(values: list[float], level: float) -> list[float]:
    import numpy as np

    return [float(np.quantile(values, (1 - level) / 2)), float(np.quantile(values, (1 + level) / 2))]


def assistant_losses(model_dir: Path, rows: Sequence[dict[str, Any]], *, batch_size: int = 8) -> dict[str, Any]:
    """Summed next-token loss and token count over the assistant tokens of each conversation (model's tokenizer).

    Returns:
        ``{"sums": [float], "counts": [int], "left_out": n}`` (one entry per conversation that fits).
    """
    import torch
    import torch.nn.functional as F
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from tasks.modeling.chat import IGNORE, conversation_of, encode_conversation, fit_conversation
    from tasks.modeling.packing import collate_packed, pack, packed_forward

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    limit = int(AutoConfig.from_pretrained(str(model_dir)).max_position_embeddings)  # GPT-2: n_positions
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    encoded, left_out = [], 0
    for row in rows:
        fitted = fit_conversation(conversation_of(row), tokenizer=tokenizer, max_length=limit)
        if not isinstance(fitted, tuple):
            left_out += 1
            continue
        encoded.append(encode_conversation(fitted[0], tokenizer=tokenizer))
    sums: list[float] = []
    counts: list[int] = []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for at in range(0, len(encoded), batch_size):
        chunk = encoded[at:at + batch_size]
        x, pos, y = collate_packed([e["ids"] for e in chunk], [e["targets"] for e in chunk], pad_id=int(pad or 0),
                                   capacity=limit)
        with torch.no_grad():
            logits = packed_forward(model, x, pos)
        loss = F.cross_entropy(logits[:, :-1].float().flatten(0, 1), y[:, 1:].flatten(), ignore_index=IGNORE,
                               reduction="none").view(y.shape[0], -1)
        # collate_packed lays out exactly these rows (the packer is deterministic): each example's positions in turn
        for r, members in enumerate(pack([len(e["ids"]) for e in chunk], capacity=limit)):
            start = 0
            for i in members:
                n = len(chunk[i]["ids"])
                sums.append(float(loss[r, start:start + n - 1].sum()))
                counts.append(sum(t != IGNORE for t in chunk[i]["targets"][1:]))
                start += n
    return {"sums": sums, "counts": counts, "left_out": left_out}


def perplexity_metrics(sums: Sequence[float], counts: Sequence[int], *, bootstrap: int = 1000, level: float = 0.95,
                       seed: int = 0) -> dict[str, Any]:
    """Token-weighted ``loss`` and ``perplexity`` over the conversations, with a bootstrap interval of perplexity."""
    import numpy as np

    if not counts or not sum(counts):
        raise ChatEvalError("no assistant token to score: the test conversations are empty or none fits the model")
    s, c = np.asarray(sums), np.asarray(counts)
    loss = float(s.sum() / c.sum())
    out: dict[str, Any] = {"loss": loss, "perplexity": math.exp(loss), "examples": len(c), "tokens": int(c.sum())}
    if bootstrap:
        rng = np.random.default_rng(seed)
        draws = [math.exp(float(s[i].sum() / max(1, c[i].sum()))) for i in
                 (rng.integers(0, len(c), len(c)) for _ in range(bootstrap))]
        out["ci"] = {"perplexity": _quantiles(draws, level), "bootstrap": bootstrap, "level": level}
    return out


def replies(model_dir: Path, rows: Sequence[dict[str, Any]], *, max_new_tokens: int = 64) -> list[dict[str, Any]]:
    """Greedy replies to each conversation's last user turn (the turns before its last assistant turn).

    Returns:
        ``{"id", "context", "reference", "completion"}`` per row, in order.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tasks.modeling.chat import conversation_of, last_exchange, prompt_ids

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    limit = int(model.config.max_position_embeddings)
    out = []
    for row in rows:
        context, reference = last_exchange(conversation_of(row))
        # keep the prompt's end (the template's reply cue) when it does not fit beside the reply
        ids = torch.tensor([prompt_ids(context, tokenizer=tokenizer)])[:, -max(1, limit - max_new_tokens):]
        with torch.no_grad():
            gen = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
                                 eos_token_id=tokenizer.eos_token_id)
        out.append({"id": row.get("id"), "context": context, "reference": reference,
                    "completion": tokenizer.decode(gen[0, ids.shape[1]:], skip_special_tokens=True).strip()})
    return out


def reply_metrics(*, references: Sequence[str], hypotheses: Sequence[str], bootstrap: int = 1000,
                  level: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """:func:`tasks.evaluate.generation.generation_metrics` with bootstrap intervals of :data:`INTERVALS`."""
    import numpy as np

    out = generation_metrics(references=references, hypotheses=hypotheses)
    if bootstrap:
        rng = np.random.default_rng(seed)
        draws: dict[str, list[float]] = {k: [] for k in INTERVALS}
        for _ in range(bootstrap):
            index = rng.integers(0, len(references), len(references)).tolist()
            again = generation_metrics(references=[references[i] for i in index],
                                       hypotheses=[hypotheses[i] for i in index])
            for k in INTERVALS:
                draws[k].append(again[k])
        out["ci"] = {k: _quantiles(v, level) for k, v in draws.items()} | {"bootstrap": bootstrap, "level": level}
    return out


def score_chat(*, models: Mapping[str, Path], rows: Sequence[dict[str, Any]], batch_size: int = 8,
               max_examples: int = 16, max_new_tokens: int = 24, bootstrap: int = 200, level: float = 0.95,
               seed: int = 0) -> tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """Every chat model of a task on its test conversations, and the lead baseline.

    Returns:
        ``({name: metrics}, {name: replies})``: each model's assistant-token ``perplexity``/``loss`` (whole split,
        ``examples``, ``tokens``, ``left_out``), plus reply metrics for :data:`GENERATING` and ``lead`` on the first
        ``max_examples`` conversations (``generated`` counts them); ``ci`` holds the intervals.
    """
    from tasks.evaluate.baselines import lead_baseline
    from tasks.modeling.chat import conversation_of, last_exchange

    first = list(rows[:max_examples])
    out: dict[str, dict[str, Any]] = {}
    gens: dict[str, list[dict[str, Any]]] = {}
    for name, model_dir in models.items():
        losses = assistant_losses(model_dir, rows, batch_size=batch_size)
        out[name] = perplexity_metrics(losses["sums"], losses["counts"], bootstrap=bootstrap, level=level,
                                       seed=seed) | {"left_out": losses["left_out"]}
        if name in GENERATING:
            gens[name] = replies(model_dir, first, max_new_tokens=max_new_tokens)
            metrics = reply_metrics(references=[g["reference"] for g in gens[name]],
                                    hypotheses=[g["completion"] for g in gens[name]], bootstrap=bootstrap,
                                    level=level, seed=seed)
            ci = out[name].get("ci", {}) | metrics.pop("ci", {})
            out[name] |= {k: v for k, v in metrics.items() if k != "examples"} | {"generated": metrics["examples"]}
            if ci:
                out[name]["ci"] = ci
    exchanges = [last_exchange(conversation_of(r)) for r in first]
    lead = reply_metrics(references=[ref for _, ref in exchanges], bootstrap=bootstrap, level=level, seed=seed,
                         hypotheses=lead_baseline([context[-1]["content"] for context, _ in exchanges]))
    out["lead"] = {k: v for k, v in lead.items() if k != "examples"} | {"generated": lead["examples"]}
    return out, gens
