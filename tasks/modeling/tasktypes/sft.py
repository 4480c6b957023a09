"""``sft``: a prompt -> a response, trained on the causal LM's own head with the loss on the response (and EOS) only.

A row is ``{"id", "prompt", "response"}``; training sees ``tokenizer(render_prompt(prompt)) + tokenizer(response, no
special tokens) + [eos]`` with the prompt's positions labelled -100; the validation number is minus the loss per
response token.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from tasks.modeling.tasktypes.base import Reject
from tasks.modeling.tasktypes.batching import IGNORE, collate_per_token
from tasks.modeling.tasktypes.fields import text_fields, token_count

PROMPT_TEMPLATE = "### Prompt:\n{prompt}\n### Response:\n"
"""How an sft example is laid out: the rendered prompt, then the response and EOS (the loss covers only those)."""
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}### Prompt:\n{{ message['content'] }}\n### Response:\n"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] }}{{ eos_token }}{% endif %}"
    "{% endfor %}"
)
"""The same layout as a Jinja chat template, stored in the exported tokenizer: ``apply_chat_template([{"role":
"user", "content": p}], add_generation_prompt=True)`` renders exactly :func:`render_prompt` (p)."""


def render_prompt(prompt: str) -> str:
    """The text the model sees before the response of an sft example."""
    return PROMPT_TEMPLATE.format(prompt=prompt)


class Sft:
    """The sft task type (:class:`tasks.modeling.tasktypes.base.TaskType`)."""

    name: ClassVar[str] = "sft"
    roles: ClassVar[tuple[str, ...]] = ("prompt", "response")
    labelled: ClassVar[bool] = False
    generative: ClassVar[bool] = True
    packed: ClassVar[bool] = True
    templated: ClassVar[bool] = False
    head_class: ClassVar[str | None] = None
    pipeline_tag: ClassVar[str] = "text-generation"
    compared: ClassVar[tuple[str, ...]] = ("perplexity", "rougeL")

    def check(self, values: Mapping[str, Any], *, labels: list[str] | None,
              names: Mapping[str, str]) -> dict[str, Any] | Reject:
        return text_fields(values, self.roles, names)

    def review(self, examples: Sequence[dict[str, Any]], *,
               options: Mapping[str, Any]) -> list[dict[str, Any] | Reject]:
        return list(examples)  # each record is judged on its own (check)

    def label_names(self, labels: list[str]) -> list[str]:
        return list(labels)

    def dedup_key(self, values: Mapping[str, Any]) -> str:
        return f"{values['prompt']}\0{values['response']}"

    def chars(self, values: Mapping[str, Any]) -> int:
        return len(values["prompt"]) + len(values["response"])

    def labels_of(self, values: Mapping[str, Any]) -> list[str]:
        return []

    def stratum(self, values: Mapping[str, Any]) -> str | None:
        return None

    def group(self, values: Mapping[str, Any]) -> str | None:
        return None

    def fit(self, values: dict[str, Any], *, tokenizer: Any, max_length: int) -> dict[str, Any] | Reject:
        # never cut: a cut response teaches cut text
        n = token_count(tokenizer, render_prompt(values["prompt"])) + token_count(tokenizer, values["response"]) + 1
        return values if n <= max_length else Reject("too_long_tokens", f"{n} tokens > max_length {max_length}")

    def row(self, example_id: str, values: Mapping[str, Any]) -> dict[str, Any]:
        return {"id": example_id, "prompt": values["prompt"], "response": values["response"]}

    def num_outputs(self, labels: list[str] | None) -> int:
        return 0

    def encode(self, rows: list[dict[str, Any]], *, tokenizer: Any, max_length: int, labels: list[str] | None,
               eos_id: int) -> dict[str, Any]:
        ids, targets, kept, dropped = [], [], [], 0
        for row in rows:
            prompt = list(tokenizer(render_prompt(row["prompt"]))["input_ids"])
            response = list(tokenizer(row["response"], add_special_tokens=False)["input_ids"]) + [eos_id]
            seq = prompt + response
            if len(seq) > max_length:
                dropped += 1
                continue
            ids.append(seq)
            targets.append([IGNORE] * len(prompt) + response)
            kept.append(row)
        return {"ids": ids, "targets": targets, "dropped": dropped, "rows": kept}

    def collate(self, ids: list[list[int]], targets: list[Any], *, pad_id: int) -> tuple[Any, Any, Any]:
        return collate_per_token(ids, targets, pad_id=pad_id)

    def logits(self, output: Any) -> Any:
        return output.logits

    def outputs(self, logits: Any, attention_mask: Any) -> list[Any]:
        return [None] * len(logits)  # the metrics come from the loss alone

    def loss(self, logits: Any, targets: Any, *, weight: Any = None, reduction: str = "mean") -> Any:
        import torch.nn.functional as F

        # position t predicts targets[t + 1]; only the response and EOS carry a target
        return F.cross_entropy(logits[:, :-1].float().flatten(0, 1), targets[:, 1:].flatten(), ignore_index=IGNORE,
                               reduction=reduction)

    def kd_rows(self, logits: Any, targets: Any, attention_mask: Any) -> Any:
        return logits[:, :-1][targets[:, 1:] != IGNORE].float()  # row-major, as the loss counts them

    def count(self, targets: Any) -> int:
        return int((targets[:, 1:] != IGNORE).sum())

    def metrics(self, *, loss: float, outputs: list[Any], data: dict[str, Any],
                labels: list[str] | None) -> dict[str, Any]:
        from tasks.modeling.metrics import perplexity

        return {"loss": loss, "perplexity": perplexity(loss)}

    def score(self, metrics: Mapping[str, Any]) -> float:
        return -float(metrics["loss"])
