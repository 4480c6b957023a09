"""The chat task type as the data step and the recipes use it: checks, fit (cuts), rows, encoding of chat and
single-turn rows, packed training batches through the multi-task module (the padded batch's loss), the exported
template."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tasks.modeling.tasktypes import Reject, task_type

CONV = [{"role": "user", "content": "the cat"}, {"role": "assistant", "content": "sat on the mat."},
        {"role": "user", "content": "and the dog"}, {"role": "assistant", "content": "ran home."}]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tests.assets.checkpoints import save_checkpoint

    root = tmp_path_factory.mktemp("chat-type")
    return {a: save_checkpoint(a, root / a) for a in ("gpt2", "llama")}


def tok_of(path: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def test_check_rows_and_keys() -> None:
    chat = task_type("chat")
    names = {"messages": "conversation"}
    values = chat.check({"messages": CONV + [{"role": "user", "content": "bye"}]}, labels=None, names=names)
    assert values == {"messages": CONV}  # the unanswered last turn is dropped
    bad = chat.check({"messages": [{"role": "user", "content": "x"}]}, labels=None, names=names)
    assert isinstance(bad, Reject) and bad.reason == "no_assistant_turn" and "'conversation'" in bad.detail
    assert chat.row("e1", {"messages": CONV}) == {"id": "e1", "messages": CONV, "cut_turns": 0}
    assert chat.dedup_key({"messages": CONV}) != chat.dedup_key({"messages": CONV[:2]})
    assert chat.chars({"messages": CONV}) == sum(len(m["content"]) for m in CONV)
    assert (chat.labels_of({"messages": CONV}), chat.stratum({"messages": CONV}), chat.num_outputs(None)) == ([], None,
                                                                                                              0)


def test_fit_cuts_at_a_turn_boundary_and_wants_a_transformers_tokenizer(checkpoints: dict[str, Path]) -> None:
    chat, tok = task_type("chat"), tok_of(checkpoints["llama"])
    from tasks.modeling.chat import encode_conversation

    ends = encode_conversation(CONV, tokenizer=tok)["ends"]
    assert chat.fit({"messages": CONV}, tokenizer=tok, max_length=ends[1]) == {"messages": CONV}
    assert chat.fit({"messages": CONV}, tokenizer=tok, max_length=ends[1] - 1) == {"messages": CONV[:2],
                                                                                   "cut_turns": 2}
    too_long = chat.fit({"messages": CONV}, tokenizer=tok, max_length=ends[0] - 1)
    assert isinstance(too_long, Reject) and too_long.reason == "too_long"
    with pytest.raises(TypeError, match="transformers tokenizer"):
        chat.fit({"messages": CONV}, tokenizer=tok.backend_tokenizer, max_length=99)


def test_encode_takes_chat_and_single_turn_rows(checkpoints: dict[str, Path]) -> None:
    chat, sft, tok = task_type("chat"), task_type("sft"), tok_of(checkpoints["gpt2"])
    rows = [{"id": "a", "messages": CONV, "cut_turns": 0}, {"id": "b", "prompt": "the dog", "response": "ran."},
            {"id": "c", "messages": CONV * 8, "cut_turns": 0}]
    enc = chat.encode(rows, tokenizer=tok, max_length=100, labels=None, eos_id=tok.eos_token_id)
    assert [r["id"] for r in enc["rows"]] == ["a", "b", "c"] and enc["dropped"] == 0
    single = sft.encode(rows[1:2], tokenizer=tok, max_length=100, labels=None, eos_id=tok.eos_token_id)
    assert (enc["ids"][1], enc["targets"][1]) == (single["ids"][0], single["targets"][0])
    assert len(enc["ids"][2]) <= 100 and enc["ids"][2] == enc["ids"][0] * (len(enc["ids"][2]) // len(enc["ids"][0]))
    assert chat.encode(rows[:1], tokenizer=tok, max_length=5, labels=None, eos_id=0)["dropped"] == 1


@pytest.mark.parametrize("source", ["lmforge", "gpt2"])
def test_a_packed_training_batch_gives_the_padded_batchs_loss(checkpoints: dict[str, Path], tmp_path: Path,
                                                              source: str) -> None:
    import torch

    from tasks.modeling.encoding import TaskBatches, collate, special_ids
    from tasks.modeling.heads import build_multitask, load_backbone
    from tasks.modeling.llama import build_llama

    tok = tok_of(checkpoints["llama" if source == "lmforge" else "gpt2"])
    eos, pad = special_ids(tok)
    if source == "lmforge":
        torch.manual_seed(0)
        build_llama(vocab_size=len(tok), hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                    intermediate_size=64, max_position_embeddings=128).save_pretrained(str(tmp_path / "m"))
        backbone = load_backbone(tmp_path / "m", causal=True)
    else:
        backbone = load_backbone(checkpoints["gpt2"])
    module = build_multitask(backbone, heads={}, dropout=0.0, pad_token_id=pad).eval()
    chat = task_type("chat")
    rows = [{"id": str(i), "messages": CONV[:2 + 2 * (i % 2)], "cut_turns": 0} for i in range(6)]
    rows += [{"id": "p", "prompt": "the bird", "response": "flew over the tree and then home."}]
    train = {"talk": chat.encode(rows, tokenizer=tok, max_length=128, labels=None, eos_id=eos)}
    packed = TaskBatches(train, kinds={"talk": "chat"}, weights={"talk": 1.0}, batch_size=6, seed=0, pad_id=pad,
                         packing=True)
    padded = TaskBatches(train, kinds={"talk": "chat"}, weights={"talk": 1.0}, batch_size=6, seed=0, pad_id=pad)
    assert packed.packed == {"talk"} and padded.packed == set()
    fewer = []
    for step in range(4):
        _, (x, pos, y) = packed.batch(step)
        _, (xp, mask, yp) = padded.batch(step)
        fewer.append(x.shape[0] < xp.shape[0] and int((pos == 0).sum()) > x.shape[0])  # rows hold several examples
        with torch.no_grad():
            a = chat.loss(module(input_ids=x, attention_mask=None, task="talk", position_ids=pos), y)
            b = chat.loss(module(input_ids=xp, attention_mask=mask, task="talk"), yp)
        assert chat.count(y) == chat.count(yp) and float(a) == pytest.approx(float(b), abs=1e-5)
    assert any(fewer)
    x, mask, y = collate(train["talk"]["ids"][:2], train["talk"]["targets"][:2], pad_id=pad, kind="chat")
    assert x.shape == mask.shape == y.shape  # evaluation's batches stay padded


def test_the_exported_template_is_the_one_training_rendered_with(checkpoints: dict[str, Path]) -> None:
    from tasks.examples import CHAT_TEMPLATE
    from tasks.modeling.chat import LMFORGE_CHAT_TEMPLATE
    from tasks.modeling.tasktypes import chat_templates

    tok = tok_of(checkpoints["gpt2"])
    kinds = {"talk": "chat", "qa": "sft", "topic": "classification"}
    assert chat_templates(kinds, tokenizer=tok, default=CHAT_TEMPLATE) == {"talk": LMFORGE_CHAT_TEMPLATE,
                                                                           "qa": CHAT_TEMPLATE}
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"  # a checkpoint's own: kept
    assert chat_templates(kinds, tokenizer=tok, default=CHAT_TEMPLATE)["talk"] == tok.chat_template
