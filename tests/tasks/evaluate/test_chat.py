"""Chat evaluation: perplexity over assistant tokens (checked against the sft scoring on single-turn rows), greedy
replies to the last user turn of a model fitted on conversations with packed batches, the lead baseline, intervals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tasks.evaluate.chat import ChatEvalError, perplexity_metrics, replies, reply_metrics, score_chat
from tests.tasks.training.finetune_fixtures import SFT_PAIRS

CHATS = [
    [{"role": "system", "content": "the cat"}, {"role": "user", "content": "the cat"},
     {"role": "assistant", "content": "sat on the mat."}, {"role": "user", "content": "then"},
     {"role": "assistant", "content": "ran home."}],
    [{"role": "user", "content": "the dog"}, {"role": "assistant", "content": "ran under the log."},
     {"role": "user", "content": "then"}, {"role": "assistant", "content": "sat on the mat."}],
    [{"role": "user", "content": "the bird"}, {"role": "assistant", "content": "flew over the tree."},
     {"role": "user", "content": "then"}, {"role": "assistant", "content": "flew away."}],
]


def fit_chats(model_dir: Path, out: Path, conversations: list[list[dict[str, str]]], *, steps: int) -> Path:
    """Fit the model to the conversations through lmforge's chat encoding and packed batches (loss on assistant
    tokens only); saved with the chat template."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tasks.modeling.chat import LMFORGE_CHAT_TEMPLATE, encode_conversation
    from tasks.modeling.packing import collate_packed, packed_forward
    from tasks.modeling.tasktypes import task_type

    torch.manual_seed(0)
    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).train()
    encoded = [encode_conversation(c, tokenizer=tokenizer) for c in conversations]
    x, pos, y = collate_packed([e["ids"] for e in encoded], [e["targets"] for e in encoded],
                               pad_id=tokenizer.pad_token_id, capacity=192)
    assert x.shape[0] < len(conversations)  # several conversations share a row
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = task_type("chat").loss(packed_forward(model, x, pos), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    tokenizer.chat_template = LMFORGE_CHAT_TEMPLATE
    model.eval().save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def chat_model(lm_inputs: dict[str, Path]) -> Path:
    return fit_chats(lm_inputs["base"], lm_inputs["root"] / "chat", CHATS, steps=100)


def test_assistant_perplexity_of_single_turn_rows_is_the_sft_test_perplexity(lm_inputs: dict[str, Path]) -> None:
    from tasks.evaluate.chat import assistant_losses
    from tasks.evaluate.generation import sft_test_metrics

    rows = [{"id": f"s{i}", "prompt": p, "response": r} for i, (p, r) in enumerate(SFT_PAIRS * 3)]
    rows[4] = {"id": "long", "prompt": "the cat sat on the mat. " * 4, "response": "and the dog ran home."}
    for model in ("sft", "lm"):
        losses = assistant_losses(lm_inputs[model], rows, batch_size=4)
        mine = perplexity_metrics(losses["sums"], losses["counts"], bootstrap=0)
        theirs = sft_test_metrics(lm_inputs[model], rows=rows, batch_size=4)
        assert mine["examples"] == theirs["examples"] == len(rows) and losses["left_out"] == 0
        assert mine["perplexity"] == pytest.approx(theirs["perplexity"], rel=1e-5)


def test_a_model_fitted_on_conversations_replies_to_the_last_user_turn(lm_inputs: dict[str, Path],
                                                                       chat_model: Path) -> None:
    rows: list[dict[str, Any]] = [{"id": f"c{i}", "messages": m} for i, m in enumerate(CHATS)]
    gens = replies(chat_model, rows, max_new_tokens=16)
    assert [g["completion"] for g in gens] == ["ran home.", "sat on the mat.", "flew away."]
    assert gens[0]["context"] == CHATS[0][:4]  # the reply follows the whole conversation before it
    results, generations = score_chat(models={"finetuned": chat_model, "base": lm_inputs["base"]}, rows=rows,
                                      max_new_tokens=16, bootstrap=50)
    fitted, lead = results["finetuned"], results["lead"]
    assert fitted["exact_match"] == 1.0 and fitted["perplexity"] < 1.5 < results["base"]["perplexity"]
    assert fitted["tokens"] == results["base"]["tokens"] > 0 and fitted["generated"] == 3
    assert lead["exact_match"] == 0.0 and lead["rougeL"] < fitted["rougeL"]  # "then" copied back
    low, high = fitted["ci"]["perplexity"]
    assert low <= fitted["perplexity"] <= high and fitted["ci"]["rougeL"] == [1.0, 1.0]
    assert set(generations) == {"finetuned"} and "generated" not in results["base"]


def test_reply_intervals_bracket_the_score_and_bad_input_is_refused() -> None:
    refs = ["the cat sat on the mat.", "the dog ran home.", "a bird flew.", "the log."]
    hyps = ["the cat sat.", "the dog ran home.", "flew away.", "a tree."]
    m = reply_metrics(references=refs, hypotheses=hyps, bootstrap=200)
    for k in ("rougeL", "chrf"):
        assert m["ci"][k][0] <= m[k] <= m["ci"][k][1] and m["ci"][k][0] < m["ci"][k][1]
    with pytest.raises(ChatEvalError, match="no assistant token"):
        perplexity_metrics([], [])
