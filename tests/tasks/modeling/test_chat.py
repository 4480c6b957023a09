"""Conversations: checks, rendering through lmforge's template and a checkpoint's own, the assistant-only loss mask,
cuts at turn boundaries. On lmforge's own tokenizer (trained by the tokenizer stage's task) and tiny GPT-2 and Llama
tokenizers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tasks.modeling.chat import (
    IGNORE,
    LMFORGE_CHAT_TEMPLATE,
    check_messages,
    encode_conversation,
    fit_conversation,
    from_prompt_response,
    last_exchange,
    prompt_ids,
    template_problem,
)
from tasks.modeling.tasktypes.base import Reject

TOKENIZERS = ("lmforge", "gpt2", "llama")
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
          "{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] }}<|im_end|>\n{% endgeneration %}"
          "{% else %}{{ m['content'] }}<|im_end|>\n{% endif %}{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
"""A ChatML template of a checkpoint's own, marking the assistant text with {% generation %} as TRL's do."""
ALTERNATING = ("{% for m in messages %}{% if loop.index0 > 0 and m['role'] == messages[loop.index0 - 1]['role'] %}"
               "{{ raise_exception('Conversation roles must alternate') }}{% endif %}"
               "[{{ m['role'] }}] {{ m['content'] }}{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}\n"
               "{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}")
"""A checkpoint template (no generation marks) that refuses consecutive turns of one role, as Llama 2's does."""
CONVERSATION = [{"role": "system", "content": "answer in short sentences"},
                {"role": "user", "content": "where is the cat"}, {"role": "assistant", "content": "on the mat."},
                {"role": "user", "content": "and the dog"}, {"role": "assistant", "content": "it ran home."}]


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tasks.tokenizer.bpe import train_tokenizer
    from tests.assets.checkpoints import save_checkpoint
    from tests.tasks.training.corpus import documents, write_split

    root = tmp_path_factory.mktemp("chat")
    train_tokenizer(train_dir=write_split(root / "docs", documents(200, 0)), out_dir=root / "lmforge",
                    vocab_size=300, min_frequency=2)
    return {"lmforge": root / "lmforge", **{a: save_checkpoint(a, root / a) for a in ("gpt2", "llama")}}


def load(tokenizers: dict[str, Path], name: str, template: str | None = None) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizers[name]))
    if template:
        tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
        tok.chat_template = template
    return tok


def assistant_text(tok: Any, encoded: dict[str, Any]) -> str:
    return str(tok.decode([t for t in encoded["targets"] if t != IGNORE]))


def test_lmforges_template_extends_the_single_turn_one() -> None:
    from tasks.examples import CHAT_TEMPLATE
    from tasks.modeling.chat import SINGLE_TURN_TEMPLATE

    assert SINGLE_TURN_TEMPLATE == CHAT_TEMPLATE != LMFORGE_CHAT_TEMPLATE


@pytest.mark.parametrize("name", TOKENIZERS)
def test_a_single_turn_conversation_is_todays_sft_example_to_the_token(tokenizers: dict[str, Path],
                                                                       name: str) -> None:
    from tasks.examples import CHAT_TEMPLATE
    from tasks.modeling.encoding import encode

    tok = load(tokenizers, name)
    rows = [{"id": "a", "prompt": "the cat", "response": "sat on the mat."},
            {"id": "b", "prompt": "where did the bird fly?", "response": " over the tree, then home."}]
    old = encode(rows, kind="sft", tokenizer=tok, max_length=200, eos_id=tok.eos_token_id)
    for row, ids, targets in zip(rows, old["ids"], old["targets"], strict=True):
        new = encode_conversation(from_prompt_response(row["prompt"], row["response"]), tokenizer=tok)
        assert (new["ids"], new["targets"], new["ends"]) == (ids, targets, [len(ids)])
        user = [{"role": "user", "content": row["prompt"]}]
        for prompt in (True, False):  # the extended template renders what the single-turn one did
            assert (tok.apply_chat_template(user, tokenize=False, add_generation_prompt=prompt,
                                            chat_template=LMFORGE_CHAT_TEMPLATE)
                    == tok.apply_chat_template(user, tokenize=False, add_generation_prompt=prompt,
                                               chat_template=CHAT_TEMPLATE))


@pytest.mark.parametrize("name", TOKENIZERS)
def test_the_loss_covers_the_assistant_turns_and_their_end_token_only(tokenizers: dict[str, Path],
                                                                      name: str) -> None:
    tok = load(tokenizers, name)
    enc = encode_conversation(CONVERSATION, tokenizer=tok)
    eos = tok.eos_token
    assert assistant_text(tok, enc) == f"on the mat.{eos}it ran home.{eos}"
    assert tok.decode(enc["ids"]) == ("### System:\nanswer in short sentences\n### Prompt:\nwhere is the cat\n"
                                      f"### Response:\non the mat.{eos}### Prompt:\nand the dog\n### Response:\n"
                                      f"it ran home.{eos}")
    first = enc["ends"][0]
    assert enc["ids"][first - 1] == tok.eos_token_id and enc["targets"][first] == IGNORE  # the next prompt: no loss
    assert enc["ends"][-1] == len(enc["ids"])
    # generation starts from exactly the ids training put before the reply
    context, reference = last_exchange(CONVERSATION)
    ids = prompt_ids(context, tokenizer=tok)
    assert reference == "it ran home." and ids == enc["ids"][:len(ids)]
    assert all(t == IGNORE for t in enc["targets"][:len(ids)][first:])


def test_a_template_of_its_own_with_generation_marks_masks_what_it_marks(tokenizers: dict[str, Path]) -> None:
    """The ChatML template's {% generation %} mask (transformers over the whole text) and the prefix-by-prefix
    method on the same template without the marks find the same tokens."""
    marked = load(tokenizers, "gpt2", CHATML)
    unmarked = load(tokenizers, "gpt2", CHATML.replace("{% generation %}", "").replace("{% endgeneration %}", ""))
    a = encode_conversation(CONVERSATION, tokenizer=marked)
    b = encode_conversation(CONVERSATION, tokenizer=unmarked)
    assert assistant_text(marked, a) == "on the mat.<|im_end|>\nit ran home.<|im_end|>\n"
    assert (a["ids"], a["targets"], a["ends"]) == (b["ids"], b["targets"], b["ends"])
    assert marked.decode(a["ids"]).startswith("<|im_start|>system\nanswer in short sentences<|im_end|>\n")
    context, _ = last_exchange(CONVERSATION)
    for tok in (marked, unmarked):
        ids = prompt_ids(context, tokenizer=tok)
        assert ids == a["ids"][:len(ids)] and tok.decode(ids).endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize(("messages", "reason"), [
    ("hello", "messages_not_a_list"),
    ([], "messages_not_a_list"),
    (["hello"], "message_not_an_object"),
    ([{"role": "tool", "content": "x"}, {"role": "assistant", "content": "y"}], "unknown_role"),
    ([{"role": "user", "content": [{"type": "text", "text": "x"}]}], "content_not_text"),
    ([{"role": "user", "content": "x"}, {"role": "assistant", "content": "  "}], "empty_content"),
    ([{"role": "user", "content": "x"}, {"role": "system", "content": "y"}], "misplaced_system"),
    ([{"role": "system", "content": "x"}, {"role": "assistant", "content": "y"}], "no_user_turn"),
    ([{"role": "system", "content": "x"}, {"role": "user", "content": "y"}], "no_assistant_turn"),
])
def test_bad_conversations_are_quarantined_with_a_reason(messages: Any, reason: str) -> None:
    result = check_messages(messages)
    assert isinstance(result, Reject) and result.reason == reason and result.detail


def test_check_keeps_role_and_content_and_drops_turns_after_the_last_reply() -> None:
    messages = [{"role": "user", "content": "a", "name": "x"}, {"role": "assistant", "content": "b"},
                {"role": "user", "content": "c"}]
    assert check_messages(messages) == [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]


def test_sharegpt_turns_are_read_as_their_roles() -> None:
    """ShareGPT's shape (axolotl's and FastChat's `conversations`): from human/gpt/system, value."""
    turns = [{"from": "system", "value": "be brief"}, {"from": "human", "value": "hi"}, {"from": "gpt", "value": "hey"}]
    assert check_messages(turns) == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                                     {"role": "assistant", "content": "hey"}]
    bad = check_messages([{"from": "bing", "value": "x"}, {"from": "gpt", "value": "y"}])
    assert isinstance(bad, Reject) and bad.reason == "unknown_role" and "'human'" in bad.detail
    empty = check_messages([{"from": "human", "value": "x"}, {"from": "gpt"}])
    assert isinstance(empty, Reject) and empty.reason == "content_not_text"


def test_roles_must_alternate_where_the_template_says_so(tokenizers: dict[str, Path]) -> None:
    twice = [{"role": "user", "content": "the cat"}, {"role": "user", "content": "the dog"},
             {"role": "assistant", "content": "sat."}]
    ours = template_problem(twice, tokenizer=load(tokenizers, "llama"))
    assert isinstance(ours, Reject) and ours.reason == "roles_not_alternating"
    theirs = load(tokenizers, "llama")
    theirs.chat_template = ALTERNATING
    refused = fit_conversation(twice, tokenizer=theirs, max_length=100)
    assert isinstance(refused, Reject) and refused.reason == "template_error" and "alternate" in refused.detail
    assert template_problem(CONVERSATION, tokenizer=theirs) is None
    enc = encode_conversation(CONVERSATION, tokenizer=theirs)
    assert assistant_text(theirs, enc) == "on the mat.</s>it ran home.</s>"  # jinja's trim_blocks ate "\n"


@pytest.mark.parametrize("name", TOKENIZERS)
def test_a_turn_spelling_a_special_token_is_quarantined(tokenizers: dict[str, Path], name: str) -> None:
    tok = load(tokenizers, name)
    sneaky = [{"role": "user", "content": "the cat"}, {"role": "assistant", "content": f"sat{tok.eos_token} on"}]
    refused = fit_conversation(sneaky, tokenizer=tok, max_length=100)
    assert isinstance(refused, Reject) and refused.reason == "special_token_in_content"
    assert tok.eos_token in refused.detail and "turn 1 (assistant)" in refused.detail


def test_a_template_that_rewrites_earlier_turns_is_refused(tokenizers: dict[str, Path]) -> None:
    tok = load(tokenizers, "gpt2")
    tok.chat_template = "{{ messages | length }}{% for m in messages %} {{ m['content'] }}{% endfor %}"
    refused = fit_conversation(CONVERSATION, tokenizer=tok, max_length=100)
    assert isinstance(refused, Reject) and refused.reason == "template_error" and "incremental" in refused.detail


@pytest.mark.parametrize("name", TOKENIZERS)
def test_a_long_conversation_is_cut_after_a_whole_assistant_turn(tokenizers: dict[str, Path], name: str) -> None:
    tok = load(tokenizers, name)
    ends = encode_conversation(CONVERSATION, tokenizer=tok)["ends"]
    assert fit_conversation(CONVERSATION, tokenizer=tok, max_length=ends[-1]) == (CONVERSATION, 0)
    for limit in (ends[-1] - 1, ends[0]):
        cut, dropped = fit_conversation(CONVERSATION, tokenizer=tok, max_length=limit)  # type: ignore[misc]
        assert cut == CONVERSATION[:3] and dropped == 2
        assert encode_conversation(cut, tokenizer=tok)["ids"] == encode_conversation(
            CONVERSATION, tokenizer=tok)["ids"][:ends[0]]  # a prefix of the whole: no turn is cut inside
    too_long = fit_conversation(CONVERSATION, tokenizer=tok, max_length=ends[0] - 1)
    assert isinstance(too_long, Reject) and too_long.reason == "too_long" and str(ends[0]) in too_long.detail


def test_a_cut_under_a_generation_template_keeps_its_trailing_text_within_the_limit(
        tokenizers: dict[str, Path]) -> None:
    newline_after = CHATML.replace("<|im_end|>\n{% endgeneration %}", "<|im_end|>{% endgeneration %}{{ '\\n' }}")
    tok = load(tokenizers, "gpt2", newline_after)
    enc = encode_conversation(CONVERSATION, tokenizer=tok)
    # the generation block ends before the newline the template writes after it: a cut needs that token too
    assert len(enc["ids"]) == enc["ends"][-1] + 1
    refused = fit_conversation(CONVERSATION[:3], tokenizer=tok, max_length=enc["ends"][0])
    assert isinstance(refused, Reject) and refused.reason == "too_long"
    cut, dropped = fit_conversation(CONVERSATION, tokenizer=tok, max_length=enc["ends"][0] + 1)  # type: ignore[misc]
    assert (cut, dropped) == (CONVERSATION[:3], 2)
