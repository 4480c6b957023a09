"""``chat``: multi-turn conversations, trained on the causal LM's own head with the loss on the assistant turns only
(``tasks.modeling.chat``), in packed batches (``tasks.modeling.packing``).

A row is ``{"id", "messages": [{"role", "content"}], "cut_turns": n}`` (``cut_turns``: turns the data step cut to
fit ``max_length``); a single-turn sft row (``prompt``, ``response``) encodes as a one-exchange conversation. The
template is the tokenizer's own or lmforge's (:func:`tasks.modeling.chat.template_of`), and the exported tokenizer
carries the one training used. The validation number is minus the loss per assistant token.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

from tasks.modeling.tasktypes.base import Reject
from tasks.modeling.tasktypes.batching import collate_per_token
from tasks.modeling.tasktypes.sft import Sft


class Chat:
    """The chat task type (:class:`tasks.modeling.tasktypes.base.TaskType`)."""

    name: ClassVar[str] = "chat"
    roles: ClassVar[tuple[str, ...]] = ("messages",)
    labelled: ClassVar[bool] = False
    generative: ClassVar[bool] = True
    packed: ClassVar[bool] = True
    """Training batches are packed (``tasks.modeling.encoding.TaskBatches``); evaluation's are padded."""
    templated: ClassVar[bool] = True
    """:meth:`fit` gets the transformers tokenizer (the data step's ``tokenizers.Tokenizer`` has no chat template)."""
    head_class: ClassVar[str | None] = None
    pipeline_tag: ClassVar[str] = "text-generation"
    compared: ClassVar[tuple[str, ...]] = ("perplexity", "rougeL", "chrf")

    def check(self, values: Mapping[str, Any], *, labels: list[str] | None,
              names: Mapping[str, str]) -> dict[str, Any] | Reject:
        from tasks.modeling.chat import check_messages

        messages = check_messages(values["messages"])
        if isinstance(messages, Reject):
            return Reject(messages.reason, f"messages field {names['messages']!r}: {messages.detail}")
        return {"messages": messages}

    def dedup_key(self, values: Mapping[str, Any]) -> str:
        return json.dumps([[m["role"], m["content"]] for m in values["messages"]], ensure_ascii=False)

    def chars(self, values: Mapping[str, Any]) -> int:
        return sum(len(m["content"]) for m in values["messages"])

    # unlabelled, each record judged on its own, no strata or groups: as sft
    review = Sft.review
    label_names = Sft.label_names
    labels_of = Sft.labels_of
    stratum = Sft.stratum
    group = Sft.group

    def fit(self, values: dict[str, Any], *, tokenizer: Any, max_length: int) -> dict[str, Any] | Reject:
        """``tokenizer``: a transformers tokenizer (the chat template needs one; a ``tokenizers.Tokenizer`` is
        refused with a message)."""
        from tasks.modeling.chat import fit_conversation

        if not hasattr(tokenizer, "apply_chat_template"):
            raise TypeError("the chat task type fits conversations with a transformers tokenizer (its chat template), "
                            f"not {type(tokenizer).__name__}")
        fitted = fit_conversation(values["messages"], tokenizer=tokenizer, max_length=max_length)
        if isinstance(fitted, Reject):
            return fitted
        messages, cut = fitted
        return values if not cut else {**values, "messages": messages, "cut_turns": cut}

    def row(self, example_id: str, values: Mapping[str, Any]) -> dict[str, Any]:
        return {"id": example_id, "messages": values["messages"], "cut_turns": int(values.get("cut_turns", 0))}

    def num_outputs(self, labels: list[str] | None) -> int:
        return 0

    def encode(self, rows: list[dict[str, Any]], *, tokenizer: Any, max_length: int, labels: list[str] | None,
               eos_id: int) -> dict[str, Any]:
        from tasks.modeling.chat import conversation_of, encode_conversation, fit_conversation

        ids, targets, kept, dropped = [], [], [], 0
        for row in rows:
            # the data step cut with the same template; a run with another tokenizer (distill's teacher) cuts again
            fitted = fit_conversation(conversation_of(row), tokenizer=tokenizer, max_length=max_length)
            if isinstance(fitted, Reject):
                dropped += 1
                continue
            enc = encode_conversation(fitted[0], tokenizer=tokenizer)
            ids.append(enc["ids"])
            targets.append(enc["targets"])
            kept.append(row)
        # every other key is per feature (evaluation slices them): the data step already counted the cuts
        return {"ids": ids, "targets": targets, "dropped": dropped, "rows": kept}

    def collate(self, ids: list[list[int]], targets: list[Any], *, pad_id: int) -> tuple[Any, Any, Any]:
        # evaluation's batches; training's are packed (tasks.modeling.packing)
        return collate_per_token(ids, targets, pad_id=pad_id)

    # the causal LM's training half is sft's: next-token loss over the positions with a target (here the assistant
    # turns), its KD rows, its counts and metrics
    logits = Sft.logits
    outputs = Sft.outputs
    loss = Sft.loss
    kd_rows = Sft.kd_rows
    count = Sft.count
    metrics = Sft.metrics
    score = Sft.score

    def chat_template(self, tokenizer: Any) -> str:
        """The chat template the exported tokenizer carries: the one training rendered with."""
        from tasks.modeling.chat import template_of

        return template_of(tokenizer)
