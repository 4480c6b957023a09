"""Conversations for chat fine-tuning: ``messages`` lists checked, rendered through a chat template, tokenized with
a loss mask over the assistant turns, and cut at a turn boundary when they do not fit.

A conversation is the common jsonl shape ``[{"role": "system" | "user" | "assistant", "content": str}, ...]``; a
single-turn sft row (``prompt``, ``response``) is the one-exchange conversation :func:`from_prompt_response`.

The template is the tokenizer's own (a checkpoint that ships one) or :data:`LMFORGE_CHAT_TEMPLATE` (lmforge's own
models, checkpoints without one). Tokens come from the template in one of two ways, both giving the loss mask over
each assistant turn's content and its end token(s):

- the template marks assistant text with ``{% generation %}``: transformers' ``return_assistant_tokens_mask`` over
  the whole rendered text (the template author's own statement of what the model says);
- otherwise prefix by prefix: the text before each assistant turn is the conversation so far rendered with
  ``add_generation_prompt=True``, the turn is what rendering it adds; each piece is tokenized on its own, exactly as
  generation tokenizes a prompt and then emits the reply. A single-turn conversation under lmforge's template gives
  the very ids and targets of ``tasks.modeling.encoding.encode`` (kind ``sft``), so existing sft models keep their
  bytes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from tasks.modeling.tasktypes.base import Reject

IGNORE = -100
"""Target of positions that carry no loss (everything but the assistant turns)."""
ROLES: tuple[str, ...] = ("system", "user", "assistant")
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
"""ShareGPT's turns (``{"from": "human" | "gpt" | "system", "value": ...}``, the other common jsonl shape, as axolotl
and FastChat read it): their speakers as roles."""
LMFORGE_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}### System:\n{{ message['content'] }}\n"
    "{% elif message['role'] == 'user' %}### Prompt:\n{{ message['content'] }}\n### Response:\n"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] }}{{ eos_token }}{% endif %}"
    "{% endfor %}"
)
"""lmforge's chat template: :data:`tasks.examples.CHAT_TEMPLATE` (the single-turn sft layout, unchanged) plus a
system turn and any number of exchanges. Roles must alternate under it (two user turns in a row would repeat the
response cue)."""
SINGLE_TURN_TEMPLATE = LMFORGE_CHAT_TEMPLATE.replace(
    "{% if message['role'] == 'system' %}### System:\n{{ message['content'] }}\n{% elif message['role'] == 'user' %}",
    "{% if message['role'] == 'user' %}")
"""The template lmforge's sft models were exported with before chat (``tasks.examples.CHAT_TEMPLATE``, which this
module does not import: the task types' registry is below ``tasks.examples``); :func:`template_of` treats a
tokenizer carrying it as lmforge's."""
_GENERATION = re.compile(r"{%-?\s*generation\s*-?%}")


def from_prompt_response(prompt: str, response: str) -> list[dict[str, str]]:
    """The one-exchange conversation of a single-turn sft row."""
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]


def conversation_of(row: dict[str, Any]) -> list[dict[str, str]]:
    """The conversation of a task-data row: its ``messages`` (a chat row), or its ``prompt`` and ``response`` (a
    single-turn sft row)."""
    if "messages" in row:
        return [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
    return from_prompt_response(row["prompt"], row["response"])


def check_messages(value: Any) -> list[dict[str, str]] | Reject:
    """A record's ``messages`` normalised to ``[{"role", "content"}]`` (other keys dropped, trailing turns after the
    last assistant turn dropped: they carry no loss; ShareGPT's ``{"from", "value"}`` turns read as their roles), or
    why the record is quarantined.

    Reasons: ``messages_not_a_list``, ``message_not_an_object``, ``unknown_role``, ``content_not_text``,
    ``empty_content``, ``misplaced_system`` (a system turn after the first message), ``no_user_turn`` (an assistant
    turn before any user turn), ``no_assistant_turn``.
    """
    if not isinstance(value, list) or not value:
        return Reject("messages_not_a_list", f"messages must be a non-empty list of turns, got {_short(value)}")
    out: list[dict[str, str]] = []
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            return Reject("message_not_an_object", f"turn {i} is {_short(message)}, not a {{role, content}} object")
        role, content = message.get("role"), message.get("content")
        if "role" not in message and "from" in message:  # a ShareGPT turn
            role, content = SHAREGPT_ROLES.get(message["from"], message["from"]), message.get("value")
        if role not in ROLES:
            return Reject("unknown_role", f"turn {i} has role {role!r}; use one of {ROLES} (ShareGPT turns: from "
                          f"{sorted(SHAREGPT_ROLES)})")
        if not isinstance(content, str):
            return Reject("content_not_text", f"turn {i} ({role}) has content {_short(content)}, not a string")
        if not content.strip():
            return Reject("empty_content", f"turn {i} ({role}) has empty content")
        if role == "system" and i > 0:
            return Reject("misplaced_system", f"turn {i} is a system turn; only the first turn may be one")
        if role == "assistant" and not any(m["role"] == "user" for m in out):
            return Reject("no_user_turn", f"turn {i} is an assistant turn before any user turn")
        out.append({"role": role, "content": content})
    last = max((i for i, m in enumerate(out) if m["role"] == "assistant"), default=None)
    if last is None:
        return Reject("no_assistant_turn", "the conversation has no assistant turn: nothing to learn from")
    return out[:last + 1]


def template_of(tokenizer: Any) -> str:
    """The chat template a conversation is rendered with: the tokenizer's own, else :data:`LMFORGE_CHAT_TEMPLATE`
    (also for a tokenizer carrying the older single-turn :data:`SINGLE_TURN_TEMPLATE`, which it extends)."""
    own = getattr(tokenizer, "chat_template", None)
    return own if isinstance(own, str) and own and own != SINGLE_TURN_TEMPLATE else LMFORGE_CHAT_TEMPLATE


def template_problem(messages: Sequence[dict[str, str]], *, tokenizer: Any) -> Reject | None:
    """Why ``messages`` (checked by :func:`check_messages`) cannot be rendered by the tokenizer's template, or None:
    ``special_token_in_content`` (a turn spells a special token such as ``<|eos|>``), ``roles_not_alternating``
    under lmforge's template, ``template_error`` where the checkpoint's own template refuses it (its
    ``raise_exception``, e.g. roles that must alternate)."""
    specials = [t for t in getattr(tokenizer, "all_special_tokens", []) if t]
    for i, message in enumerate(messages):
        # the rendered text is tokenized with its special tokens parsed (the template writes them as text): a turn
        # spelling one would inject a control token (an EOS mid-reply)
        if spelled := [t for t in specials if t in message["content"]]:
            return Reject("special_token_in_content", f"turn {i} ({message['role']}) contains the tokenizer's "
                                                      f"special token {spelled[0]!r} as text")
    template = template_of(tokenizer)
    if template == LMFORGE_CHAT_TEMPLATE:
        for i in range(1, len(messages)):
            if messages[i]["role"] == messages[i - 1]["role"]:
                return Reject("roles_not_alternating", f"turns {i - 1} and {i} are both {messages[i]['role']} "
                                                       "turns; lmforge's chat template needs alternating turns")
        return None
    try:
        tokenizer.apply_chat_template(list(messages), tokenize=False, chat_template=template)
    except Exception as e:  # jinja's TemplateError or whatever the template raises: the record is at fault
        return Reject("template_error", f"the tokenizer's chat template refuses the conversation: {e}")
    return None


def _render(messages: Sequence[dict[str, str]], tokenizer: Any, template: str, *, prompt: bool) -> str:
    text: str = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=prompt,
                                              chat_template=template)
    return text


def _ids(text: str, tokenizer: Any, *, first: bool) -> list[int]:
    # the first piece gets the tokenizer's own prefix (a Llama BOS) unless the template writes it itself
    bos = getattr(tokenizer, "bos_token", None)
    special = first and not (bos and text.startswith(bos))
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def encode_conversation(messages: Sequence[dict[str, str]], *, tokenizer: Any) -> dict[str, Any]:
    """Token ids and targets of a checked conversation (targets: the id on assistant tokens, -100 elsewhere).

    Returns:
        ``{"ids": [int], "targets": [int], "ends": [int]}``; ``ends[k]`` is the number of tokens up to the end of the
        k-th assistant turn (where the conversation may be cut).

    Raises:
        ValueError: the template is not incremental (rendering a longer prefix changes the text of a shorter one)
            or marks no assistant token; :func:`fit_conversation` turns it into a ``template_error`` quarantine.
    """
    template = template_of(tokenizer)
    if _GENERATION.search(template):
        out = tokenizer.apply_chat_template(list(messages), tokenize=True, return_dict=True, chat_template=template,
                                            return_assistant_tokens_mask=True)
        ids, mask = list(out["input_ids"]), list(out["assistant_masks"])
        if not any(mask):
            raise ValueError("the chat template's {% generation %} blocks mark no token of the conversation")
        ends = [i + 1 for i in range(len(mask)) if mask[i] and (i + 1 == len(mask) or not mask[i + 1])]
        return {"ids": ids, "targets": [t if m else IGNORE for t, m in zip(ids, mask, strict=True)], "ends": ends}
    return _by_prefix(messages, tokenizer, template)


def _by_prefix(messages: Sequence[dict[str, str]], tokenizer: Any, template: str) -> dict[str, Any]:
    ids: list[int] = []
    targets: list[int] = []
    ends: list[int] = []
    done = ""
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render(messages[:i], tokenizer, template, prompt=True)
        after = _render(messages[:i + 1], tokenizer, template, prompt=False)
        if not before.startswith(done) or not after.startswith(before):
            raise ValueError(f"the chat template is not incremental at turn {i}: rendering more turns rewrites the "
                             "text of earlier ones, so the assistant tokens cannot be found prefix by prefix")
        context = _ids(before[len(done):], tokenizer, first=not ids)
        reply = _ids(after[len(before):], tokenizer, first=False)
        ids += context + reply
        targets += [IGNORE] * len(context) + reply
        ends.append(len(ids))
        done = after
    return {"ids": ids, "targets": targets, "ends": ends, "text": done}


def fit_conversation(messages: list[dict[str, str]], *, tokenizer: Any,
                     max_length: int) -> tuple[list[dict[str, str]], int] | Reject:
    """The conversation within ``max_length`` tokens: whole, or cut after its last complete assistant turn that fits
    (never inside a turn), with how many turns were cut; ``too_long`` when not even the first exchange fits."""
    if problem := template_problem(messages, tokenizer=tokenizer):
        return problem
    try:
        encoded = encode_conversation(messages, tokenizer=tokenizer)
    except ValueError as e:
        return Reject("template_error", str(e))
    if len(encoded["ids"]) <= max_length:
        return messages, 0
    assistants = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    for k in range(len(assistants) - 1, -1, -1):
        if encoded["ends"][k] > max_length:
            continue
        cut = messages[:assistants[k] + 1]
        # re-encoded: a template may add text after the last turn (a newline) that the end offset does not count
        if len(encode_conversation(cut, tokenizer=tokenizer)["ids"]) <= max_length:
            return cut, len(messages) - len(cut)
    first = len(encode_conversation(messages[:assistants[0] + 1], tokenizer=tokenizer)["ids"])
    return Reject("too_long", f"the first exchange alone is {first} tokens, over max_length {max_length}: raise "
                              "max_length or shorten the conversation")


def prompt_ids(messages: Sequence[dict[str, str]], *, tokenizer: Any) -> list[int]:
    """The ids a model generates the next assistant turn from: the conversation so far (ending with a user turn)
    rendered with ``add_generation_prompt``, tokenized exactly as training tokenized the text before a reply.

    Raises:
        ValueError: the template is not incremental (see :func:`encode_conversation`).
    """
    template = template_of(tokenizer)
    if _GENERATION.search(template):
        return list(tokenizer.apply_chat_template(list(messages), tokenize=True, return_dict=True,
                                                  add_generation_prompt=True, chat_template=template)["input_ids"])
    past = _by_prefix(messages, tokenizer, template)
    text = _render(messages, tokenizer, template, prompt=True)
    if not text.startswith(past["text"]):
        raise ValueError("the chat template is not incremental: the prompt rewrites the earlier turns' text")
    return list(past["ids"]) + _ids(text[len(past["text"]):], tokenizer, first=not past["ids"])


def last_exchange(messages: Sequence[dict[str, str]]) -> tuple[list[dict[str, str]], str]:
    """``(context, reference)``: the turns before the last assistant turn and that turn's content (what evaluation
    asks the model to reply to, and the reply it is scored against)."""
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return list(messages[:last]), messages[last]["content"]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
