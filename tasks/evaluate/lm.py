"""Language-model quality on held-out text: perplexity, bits per byte, nats per character.

A document is scored as lm-evaluation-harness's ``loglikelihood_rolling`` does: the tokenizer's BOS (EOS when it has
none) is prepended so the first token has something to condition on, and every token is predicted exactly once.
Long documents are cut into windows of at most ``window`` input tokens; each window after the first predicts
``stride`` new tokens and sees the ``window - stride`` tokens before them as context. ``stride == window`` is the
harness's disjoint windows (same numbers); a smaller stride gives every prediction more context (lower perplexity,
more compute), like the sliding-window perplexity of the transformers documentation.

Per-token perplexity depends on the tokenizer; bits per byte (and nats per character) divide the same total
negative log-likelihood by the text's UTF-8 bytes (characters), so models with different tokenizers compare on one
scale.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any


class LMEvalError(Exception):
    """The held-out text or the model cannot be evaluated; the message says what to fix. Exit code 2."""

    exit_code = 2


def load_texts(records_dir: Path, *, limit: int | None = None) -> list[str]:
    """The non-empty ``text`` of a records directory's shards (a dedup split such as ``data/dedup/test``), in order.

    Args:
        records_dir: directory of ``part-*.parquet`` shards.
        limit: keep only the first ``limit`` documents (None: all).

    Raises:
        LMEvalError: no shard in ``records_dir``.
    """
    return [r["text"] for r in load_records(records_dir, limit=limit)]


def load_records(records_dir: Path, *, limit: int | None = None) -> list[dict[str, str]]:
    """``{"id", "text"}`` of a records directory's non-empty documents, in :func:`load_texts`' order.

    Raises:
        LMEvalError: no shard in ``records_dir``.
    """
    import pyarrow.parquet as pq

    from tasks.records import iter_shards

    shards = iter_shards(Path(records_dir))
    if not shards:
        raise LMEvalError(f"no part-*.parquet in {records_dir}: run the dedup stage first")
    rows: list[dict[str, str]] = []
    for shard in shards:
        rows += [r for r in pq.read_table(shard, columns=["id", "text"]).to_pylist() if r["text"]]
        if limit is not None and len(rows) >= limit:
            break
    return rows[:limit]


def texts_from_tokens(tokens_dir: Path, split: str, *, tokenizer_dir: Path, limit: int | None = None) -> list[str]:
    """The documents of a packed-token split (``data/tokens``), decoded back to text.

    Packed splits join documents with EOS; decoding them gives text whose bytes the per-byte figures need.

    Args:
        tokens_dir: the tokenizer stage's output directory.
        split: ``train``, ``val`` or ``test``.
        tokenizer_dir: the tokenizer that packed them.
        limit: keep only the first ``limit`` documents.
    """
    import numpy as np
    from transformers import AutoTokenizer

    from tasks.tokens import load_tokens, read_manifest

    eos = read_manifest(Path(tokens_dir)).get("eos_id")
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    eos = tokenizer.eos_token_id if eos is None else int(eos)
    ids = np.asarray(load_tokens(Path(tokens_dir), split))
    cuts = np.flatnonzero(ids == eos)
    texts, start = [], 0
    for end in [*cuts.tolist(), len(ids)]:
        if end > start:
            texts.append(tokenizer.decode(ids[start:end].tolist()))
        start = end + 1
        if limit is not None and len(texts) >= limit:
            break
    return texts


def rolling_windows(n_tokens: int, *, window: int, stride: int) -> list[tuple[int, int, int]]:
    """The windows that score ``n_tokens`` tokens once each, over the sequence ``[prefix] + tokens``.

    Returns:
        ``(input_start, target_start, target_end)`` per window, positions in the prefixed sequence: the model
        reads ``seq[input_start:target_end - 1]`` (at most ``window`` tokens) and is scored on
        ``seq[target_start:target_end]``.
    """
    if not 1 <= stride <= window:
        raise LMEvalError(f"stride {stride} must lie in 1..window ({window})")
    out, target_start = [], 1
    while target_start <= n_tokens:
        # the first window predicts as much as fits; later ones `stride` new tokens each
        target_end = min(n_tokens + 1, target_start + (window if target_start == 1 else stride))
        out.append((max(0, target_end - 1 - window), target_start, target_end))
        target_start = target_end
    return out


def document_nlls(model: Any, docs: Sequence[Sequence[int]], *, prefix_id: int, window: int, stride: int,
                  batch_size: int = 8) -> list[float]:
    """Total negative log-likelihood (nats) of each token sequence under a causal LM, by rolling windows.

    Args:
        model: a causal LM returning ``.logits`` (in eval mode).
        docs: token ids per document (no BOS: ``prefix_id`` is prepended).
        prefix_id: the token the first one is conditioned on.
        window: the most tokens a forward pass reads (the model's context or less).
        stride: new tokens scored per window after the first.
        batch_size: windows per forward pass (right-padded: causal attention never sees the padding).
    """
    import torch

    jobs = []  # (doc index, input ids, how many of the last positions are scored, target ids)
    for d, ids in enumerate(docs):
        seq = [prefix_id, *ids]
        for start, t0, t1 in rolling_windows(len(ids), window=window, stride=stride):
            jobs.append((d, seq[start:t1 - 1], seq[t0:t1]))
    # longest first: batches of similar length waste little padding
    jobs.sort(key=lambda j: -len(j[1]))
    totals = [0.0] * len(docs)
    with torch.no_grad():
        for i in range(0, len(jobs), batch_size):
            batch = jobs[i:i + batch_size]
            width = len(batch[0][1])
            x = torch.zeros((len(batch), width), dtype=torch.long)
            mask = torch.zeros_like(x)
            for row, (_, inp, _) in enumerate(batch):
                x[row, :len(inp)] = torch.tensor(inp)
                mask[row, :len(inp)] = 1
            logp = torch.log_softmax(model(input_ids=x, attention_mask=mask).logits.double(), dim=-1)
            for row, (d, inp, targets) in enumerate(batch):
                positions = torch.arange(len(inp) - len(targets), len(inp))
                totals[d] -= float(logp[row, positions, torch.tensor(targets)].sum())
    return totals


def lm_metrics(*, model_dir: Path, texts: Sequence[str], window: int | None = None, stride: int | None = None,
               batch_size: int = 8, threads: int | None = None) -> dict[str, Any]:
    """Perplexity, bits per byte and nats per character of a causal LM (a transformers directory) on ``texts``.

    Args:
        model_dir: a ``LlamaForCausalLM`` (or any causal LM) saved with its tokenizer.
        texts: held-out documents, each scored on its own (empty ones are skipped).
        window: tokens per forward pass; None: the model's ``max_position_embeddings``.
        stride: new tokens per window; None: ``window`` (disjoint windows, as lm-evaluation-harness).
        batch_size: windows per forward pass.
        threads: torch CPU threads (None: leave as is).

    Returns:
        ``documents``, ``tokens``, ``bytes``, ``chars``, ``words``, ``nll`` (total nats), ``perplexity`` (per token),
        ``bits_per_byte``, ``nats_per_char``, ``byte_perplexity``, ``word_perplexity``, ``window``, ``stride``.

    Raises:
        LMEvalError: no text, or a model without a usable prefix token.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if threads:
        torch.set_num_threads(threads)
    texts = [t for t in texts if t]
    if not texts:
        raise LMEvalError("no held-out text to evaluate: check the test split is not empty")
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if prefix is None:
        raise LMEvalError(f"the tokenizer in {model_dir} has neither BOS nor EOS to condition the first token on")
    window = int(window or model.config.max_position_embeddings)
    stride = int(stride or window)
    docs = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
    nll = sum(document_nlls(model, docs, prefix_id=prefix, window=window, stride=stride, batch_size=batch_size))
    return scale_metrics(nll=nll, texts=texts, tokens=sum(len(d) for d in docs)) | {"window": window,
                                                                                 "stride": stride}


def scale_metrics(*, nll: float, texts: Sequence[str], tokens: int) -> dict[str, Any]:
    """A total negative log-likelihood (nats) of ``texts`` expressed per token, byte, character and word.

    Words are whitespace-separated pieces, as lm-evaluation-harness's wikitext task counts them.
    """
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    chars = sum(len(t) for t in texts)
    words = sum(len(re.split(r"\s+", t)) for t in texts)
    # exp capped at e^50: a diverged model still gives a finite, comparable number
    return {"documents": len(texts), "tokens": tokens, "bytes": n_bytes, "chars": chars, "words": words, "nll": nll,
            "perplexity": math.exp(min(nll / max(tokens, 1), 50.0)),
            "bits_per_byte": nll / max(n_bytes, 1) / math.log(2), "nats_per_char": nll / max(chars, 1),
            "byte_perplexity": math.exp(min(nll / max(n_bytes, 1), 50.0)),
            "word_perplexity": math.exp(min(nll / max(words, 1), 50.0))}

