"""Distribution shift between the pretraining data and each fine-tuning task, measured before any training.

Per task: the share of single-byte tokens (byte-level BPE's fallback for text its merges do not cover: the OOV rate of
a byte tokenizer) against the same share on the pretraining val tokens; the base model's perplexity on the task's
text against its perplexity on its own val split; the Jensen-Shannon divergence (base 2, in [0, 1]) between the
task's token unigram distribution and the pretraining train tokens'; the label balance. A large shift prints a
warning line: the thresholds are the constants below.
"""

from __future__ import annotations

import math
from typing import Any

PPL_RATIO_WARN = 2.0
"""Warn when the base model's perplexity on a task's text exceeds this multiple of its val perplexity."""
JS_WARN = 0.3
"""Warn when the unigram Jensen-Shannon divergence (bits) from the pretraining tokens exceeds this."""
BYTE_RATE_WARN = 2.0
"""Warn when a task's single-byte-token share exceeds this multiple of the pretraining val share (and 1%)."""
WINDOWS = 8
"""Windows of text per perplexity measurement (evenly spaced, the same every run)."""
MAX_TRAIN_TOKENS = 10_000_000
"""Pretraining train tokens counted for the unigram distribution at most (the first ones)."""


def byte_token_ids(tokenizer: Any) -> set[int]:
    """Ids of the vocabulary's single-byte tokens (one character of the byte-level alphabet; specials excluded)."""
    special = set(tokenizer.all_special_ids)
    return {i for tok, i in tokenizer.get_vocab().items() if len(tok) == 1 and i not in special}


def js_divergence(p_counts: Any, q_counts: Any) -> float:
    """Jensen-Shannon divergence in bits between two count vectors over the same ids."""
    import numpy as np

    p = np.asarray(p_counts, dtype=np.float64)
    q = np.asarray(q_counts, dtype=np.float64)
    p, q = p / max(p.sum(), 1.0), q / max(q.sum(), 1.0)
    m = 0.5 * (p + q)

    def kl(a: Any) -> float:
        mask = a > 0
        return float(np.sum(a[mask] * np.log2(a[mask] / m[mask])))

    return 0.5 * kl(p) + 0.5 * kl(q)


def window_perplexity(model: Any, tokens: Any, *, width: int, windows: int = WINDOWS) -> float | None:
    """Perplexity of ``model`` on ``windows`` evenly spaced windows of ``width + 1`` tokens (None if too short)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    tokens = np.asarray(tokens, dtype=np.int64)
    width = min(width, len(tokens) - 1)
    if width < 2:
        return None
    starts = np.linspace(0, len(tokens) - width - 1, num=windows).astype(np.int64)
    block = torch.from_numpy(np.stack([tokens[s:s + width + 1] for s in starts.tolist()]))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=block[:, :-1]).logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), block[:, 1:].flatten())
    model.train(was_training)
    return math.exp(min(float(loss), 50.0))


def shift_report(*, model: Any, tokenizer: Any, task_tokens: dict[str, list[int]], label_counts: dict[str, Any],
                 train_tokens: Any, val_tokens: Any, width: int) -> dict[str, Any]:
    """The shift of each task from the pretraining data.

    Args:
        model: the base LlamaForCausalLM (before any fine-tuning).
        tokenizer: its tokenizer.
        task_tokens: ``{task: the task's training text as one token stream}`` (examples joined by EOS).
        label_counts: ``{task: {label: count} or None}`` of the training split.
        train_tokens: pretraining train token ids (``tasks.tokens.load_tokens``).
        val_tokens: pretraining val token ids.
        width: tokens per perplexity window (at most the model's positions).

    Returns:
        ``{"baseline": {...}, "tasks": {task: {...}}, "warnings": [str]}``, deterministic for its inputs.
    """
    import numpy as np

    vocab = len(tokenizer)
    byte_ids = np.array(sorted(byte_token_ids(tokenizer)), dtype=np.int64)
    val = np.asarray(val_tokens, dtype=np.int64)
    base_byte = float(np.isin(val, byte_ids).mean()) if len(val) else 0.0
    base_ppl = window_perplexity(model, val, width=width)
    train_counts = np.bincount(np.asarray(train_tokens[:MAX_TRAIN_TOKENS], dtype=np.int64), minlength=vocab)
    report: dict[str, Any] = {"baseline": {"byte_token_rate": round(base_byte, 6),
                                           "perplexity": None if base_ppl is None else round(base_ppl, 4)},
                              "tasks": {}, "warnings": [],
                              "thresholds": {"ppl_ratio": PPL_RATIO_WARN, "js": JS_WARN, "byte_rate": BYTE_RATE_WARN}}
    for name in sorted(task_tokens):
        stream = np.asarray(task_tokens[name], dtype=np.int64)
        byte_rate = float(np.isin(stream, byte_ids).mean()) if len(stream) else 0.0
        ppl = window_perplexity(model, stream, width=width)
        ratio = ppl / base_ppl if ppl is not None and base_ppl else None
        js = js_divergence(np.bincount(stream, minlength=vocab), train_counts)
        entry: dict[str, Any] = {"tokens": int(len(stream)), "byte_token_rate": round(byte_rate, 6),
                                 "perplexity": None if ppl is None else round(ppl, 4),
                                 "perplexity_ratio": None if ratio is None else round(ratio, 4),
                                 "js_divergence": round(js, 6)}
        counts = label_counts.get(name)
        if counts:
            total = sum(counts.values())
            entry["label_shares"] = {k: round(v / total, 6) for k, v in sorted(counts.items())}
            entry["imbalance_ratio"] = round(max(counts.values()) / max(min(counts.values()), 1), 4)
        report["tasks"][name] = entry
        reasons = []
        if ratio is not None and ratio > PPL_RATIO_WARN:
            reasons.append(f"base perplexity {ratio:.2f}x its val perplexity (> {PPL_RATIO_WARN})")
        if js > JS_WARN:
            reasons.append(f"unigram JS divergence {js:.3f} (> {JS_WARN})")
        if byte_rate > max(0.01, BYTE_RATE_WARN * base_byte):
            reasons.append(f"single-byte tokens {byte_rate:.1%} vs {base_byte:.1%} in pretraining")
        if reasons:
            report["warnings"].append(f"task {name!r} is far from the pretraining data: " + "; ".join(reasons))
    return report
