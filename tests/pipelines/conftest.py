"""Fixtures of the pipelines tests: a real tiny registered-model directory (the registry and serving tests)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real LlamaForSequenceClassification of a few thousand parameters, with a real BPE tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaForSequenceClassification

    from tasks.examples import CHAT_TEMPLATE
    from tasks.modeling.llama import build_llama
    from tasks.tokenizer.bpe import train_tokenizer
    from tests.tasks.training.corpus import documents, write_split

    root = tmp_path_factory.mktemp("registry-model")
    tok_dir = root / "tokenizer"
    train_tokenizer(train_dir=write_split(root / "docs", documents(60, 0)), out_dir=tok_dir, vocab_size=300,
                    min_frequency=2)
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    torch.manual_seed(0)
    lm = build_llama(vocab_size=len(tok), hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1,
                     intermediate_size=32, max_position_embeddings=64, bos_token_id=tok.bos_token_id,
                     eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    config = lm.config
    config.num_labels, config.id2label, config.label2id = 2, {0: "pets", 1: "sky"}, {"pets": 0, "sky": 1}
    config.architectures = ["LlamaForSequenceClassification"]
    lm.save_pretrained(str(root / "lm"))
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(str(root / "lm"))
    tok.chat_template = None
    model = LlamaForSequenceClassification(config)
    assert sum(p.numel() for p in model.parameters()) < 10_000
    out = root / "model"
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out
