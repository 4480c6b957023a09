"""Perplexity and bits per byte by rolling windows, checked against lm-evaluation-harness on the same text."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tasks.evaluate.lm import LMEvalError, document_nlls, lm_metrics, load_texts, rolling_windows


@pytest.mark.parametrize(("n", "window", "stride"), [(1, 4, 4), (10, 4, 4), (10, 4, 1), (23, 8, 3), (8, 8, 8)])
def test_rolling_windows_score_every_token_once_within_the_window(n: int, window: int, stride: int) -> None:
    windows = rolling_windows(n, window=window, stride=stride)
    scored = [p for _, t0, t1 in windows for p in range(t0, t1)]
    assert scored == list(range(1, n + 1))
    for start, t0, t1 in windows:
        assert 0 <= start < t0 and t1 - 1 - start <= window  # inputs fit, and the first target has context
    assert all(t1 - t0 <= stride for _, t0, t1 in windows[1:])
    with pytest.raises(LMEvalError, match="stride"):
        rolling_windows(n, window=4, stride=5)


def test_disjoint_windows_match_lm_evaluation_harness_rolling_loglikelihood(lm_inputs: dict[str, Path]) -> None:
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    texts = load_texts(lm_inputs["test"])[:6]
    window = 16  # far shorter than the documents: several windows each
    ours = lm_metrics(model_dir=lm_inputs["sft"], texts=texts, window=window, batch_size=3)
    harness = HFLM(pretrained=str(lm_inputs["sft"]), max_length=window, batch_size=4, device="cpu")
    requests = [Instance(request_type="loglikelihood_rolling", doc={}, arguments=(t,), idx=i)
                for i, t in enumerate(texts)]
    theirs = -sum(harness.loglikelihood_rolling(requests, disable_tqdm=True))
    assert ours["tokens"] > 3 * window * len(texts) / 2
    assert ours["nll"] == pytest.approx(theirs, rel=5e-3)
    assert ours["bits_per_byte"] == pytest.approx(theirs / ours["bytes"] / math.log(2), rel=5e-3)


def test_more_context_and_training_lower_perplexity(lm_inputs: dict[str, Path]) -> None:
    texts = load_texts(lm_inputs["test"], limit=4)
    trained_disjoint = lm_metrics(model_dir=lm_inputs["lm"], texts=texts, window=12)
    trained_sliding = lm_metrics(model_dir=lm_inputs["lm"], texts=texts, window=12, stride=4)
    random_model = lm_metrics(model_dir=lm_inputs["base"], texts=texts, window=12)
    assert trained_sliding["nll"] < trained_disjoint["nll"] < random_model["nll"]
    # a random model over V tokens is close to uniform: about ln V nats per token
    vocab = 300
    assert random_model["nll"] / random_model["tokens"] == pytest.approx(math.log(vocab), rel=0.1)
    m = trained_disjoint
    assert m["bytes"] == sum(len(t.encode()) for t in texts) and m["chars"] == sum(map(len, texts))
    assert m["perplexity"] == pytest.approx(math.exp(m["nll"] / m["tokens"]))
    assert m["nats_per_char"] * m["chars"] == pytest.approx(m["bits_per_byte"] * m["bytes"] * math.log(2))


def test_batching_and_padding_do_not_change_the_numbers(lm_inputs: dict[str, Path]) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(lm_inputs["sft"]))
    model = AutoModelForCausalLM.from_pretrained(str(lm_inputs["sft"]), dtype=torch.float32).eval()
    docs = [tok.encode(t, add_special_tokens=False) for t in load_texts(lm_inputs["test"], limit=5)]
    one = document_nlls(model, docs, prefix_id=tok.bos_token_id, window=10, stride=7, batch_size=1)
    many = document_nlls(model, docs, prefix_id=tok.bos_token_id, window=10, stride=7, batch_size=16)
    assert many == pytest.approx(one, rel=1e-6)
    with pytest.raises(LMEvalError, match="no held-out text"):
        lm_metrics(model_dir=lm_inputs["sft"], texts=["", ""])


def test_packed_token_documents_decode_back_to_the_split(lm_inputs: dict[str, Path], tmp_path: Path) -> None:
    from tasks.evaluate.lm import texts_from_tokens
    from tasks.tokenizer.packing import pack_splits

    pack_splits(split_dirs={"test": lm_inputs["test"]}, tokenizer_dir=lm_inputs["tokenizer"], out_dir=tmp_path)
    texts = load_texts(lm_inputs["test"])
    assert texts_from_tokens(tmp_path, "test", tokenizer_dir=lm_inputs["tokenizer"]) == texts
    assert texts_from_tokens(tmp_path, "test", tokenizer_dir=lm_inputs["tokenizer"], limit=2) == texts[:2]
