"""Fixtures of the evaluate tests: a tokenizer trained by the tokenizer stage's task, a random tiny Llama, the
same Llama trained for a few seconds on the corpus, and on sft pairs (so that it answers them): model directories."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tasks.training.corpus import documents, write_split
from tests.tasks.training.finetune_fixtures import SFT_PAIRS, save_base_model


def fit(model_dir: Path, out: Path, texts: list[str], *, steps: int, max_tokens: int = 64, seed: int = 0) -> Path:
    """Fit the model of ``model_dir`` to ``texts`` (each + EOS, cut at ``max_tokens``; plain AdamW, full batch) and
    save it with a tokenizer that carries the chat template."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tasks.examples import CHAT_TEMPLATE

    torch.manual_seed(seed)
    torch.set_num_threads(1)  # tiny matrices: more threads only contend with the other tests
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    rows = [(tokenizer.encode(t, add_special_tokens=False) + [tokenizer.eos_token_id])[:max_tokens] for t in texts]
    width = max(map(len, rows))
    x = torch.full((len(rows), width), tokenizer.pad_token_id)
    for i, r in enumerate(rows):
        x[i, :len(r)] = torch.tensor(r)
    labels = x.masked_fill(x == tokenizer.pad_token_id, -100)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=x, attention_mask=(labels != -100).long(), labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    tokenizer.chat_template = CHAT_TEMPLATE
    model.eval().save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


@pytest.fixture(scope="session")
def lm_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``tokenizer``, ``base`` (random tiny Llama, context 96), ``lm`` (trained briefly on the corpus), ``sft``
    (fitted to the sft pairs), ``train`` and ``test`` (dedup-style parquet splits)."""
    from tasks.examples import render_prompt
    from tasks.tokenizer.bpe import train_tokenizer

    root = tmp_path_factory.mktemp("evaluate")
    train = write_split(root / "dedup" / "train", documents(300, 0))
    test = write_split(root / "dedup" / "test", documents(12, 5))
    tok = root / "tokenizer"
    train_tokenizer(train_dir=train, out_dir=tok, vocab_size=300, min_frequency=2)
    base = save_base_model(tok, root / "base")
    lm = fit(base, root / "lm", documents(24, 0), steps=30, max_tokens=48)
    sft = fit(base, root / "sft", [render_prompt(p) + r for p, r in SFT_PAIRS], steps=80)
    return {"root": root, "tokenizer": tok, "base": base, "lm": lm, "sft": sft, "train": train, "test": test}
