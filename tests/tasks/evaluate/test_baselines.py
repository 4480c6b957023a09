"""Baselines: unigram LM by hand, TF-IDF + logistic regression on a separable task, the lead baseline."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest

from tasks.evaluate.baselines import lead_baseline, tfidf_logreg, unigram_metrics
from tasks.evaluate.lm import LMEvalError


def test_byte_unigram_equals_the_add_one_formula() -> None:
    m = unigram_metrics(train_texts=["aab"], texts=["ab", ""], unit="byte")
    # counts a=2, b=1 of 3 bytes, add-one over 256 values: p(a) = 3/259, p(b) = 2/259
    nll = -math.log(3 / 259) - math.log(2 / 259)
    assert m["nll"] == pytest.approx(nll) and m["bytes"] == 2 and m["documents"] == 1
    assert m["bits_per_byte"] == pytest.approx(nll / 2 / math.log(2))
    assert m["perplexity"] == pytest.approx(math.exp(nll / 2)) and m["vocabulary"] == 256


def test_token_unigram_counts_the_tokenizers_tokens(lm_inputs: dict[str, Path]) -> None:
    from transformers import AutoTokenizer

    from tasks.evaluate.lm import load_texts

    train, test = load_texts(lm_inputs["train"], limit=50), load_texts(lm_inputs["test"], limit=3)
    m = unigram_metrics(train_texts=train, texts=test, unit="token", tokenizer_dir=lm_inputs["tokenizer"])
    tok = AutoTokenizer.from_pretrained(str(lm_inputs["tokenizer"]))
    counts = Counter(i for t in train for i in tok.encode(t, add_special_tokens=False))
    total, vocab = sum(counts.values()), len(tok)
    test_ids = [i for t in test for i in tok.encode(t, add_special_tokens=False)]
    expected = -sum(math.log((counts[i] + 1) / (total + vocab)) for i in test_ids)
    assert m["nll"] == pytest.approx(expected) and m["tokens"] == len(test_ids) and m["vocabulary"] == vocab
    # the corpus is repetitive: far better than uniform over the vocabulary
    assert m["perplexity"] < vocab / 3
    with pytest.raises(LMEvalError, match="tokenizer_dir"):
        unigram_metrics(train_texts=train, texts=test)
    with pytest.raises(LMEvalError, match="unit"):
        unigram_metrics(train_texts=train, texts=test, unit="word")


def test_tfidf_logreg_separates_a_separable_task() -> None:
    from tests.tasks.training.finetune_fixtures import CLASSES, classification_rows

    train, val, test = (classification_rows(n, s) for n, s in ((40, 1), (16, 2), (16, 3)))
    out = tfidf_logreg(train_texts=[r["text"] for r in train], train_labels=[r["label"] for r in train],
                       val_texts=[r["text"] for r in val], val_labels=[r["label"] for r in val],
                       test_texts=[r["text"] for r in test], labels=sorted(CLASSES))
    assert out["predictions"] == [r["label"] for r in test]
    assert out["C"] in (0.1, 1.0, 10.0, 100.0) and out["val_macro_f1_by_C"][str(out["C"])] == 1.0


def test_lead_baseline_takes_the_first_words_or_the_whole_prompt() -> None:
    prompts = ["  def f(x):\n    return x  ", "one"]
    assert lead_baseline(prompts, words=2) == ["def f(x):", "one"]
    assert lead_baseline(prompts) == ["def f(x):\n    return x", "one"]
