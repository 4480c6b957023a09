"""``classification``: a text -> one of the task's labels. The head is the architecture's own
``AutoModelForSequenceClassification`` (``tasks.modeling.heads``), the loss cross-entropy (class-weighted when asked),
the validation number macro-F1.

A row is ``{"id", "text", "label"}``; training sees ``tokenizer(text)`` and predicts the label's index.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from tasks.modeling.tasktypes.base import Reject
from tasks.modeling.tasktypes.fields import text_fields, token_count


class Classification:
    """The classification task type (:class:`tasks.modeling.tasktypes.base.TaskType`)."""

    name: ClassVar[str] = "classification"
    roles: ClassVar[tuple[str, ...]] = ("text", "label")
    labelled: ClassVar[bool] = True
    generative: ClassVar[bool] = False
    packed: ClassVar[bool] = False
    templated: ClassVar[bool] = False
    head_class: ClassVar[str | None] = "AutoModelForSequenceClassification"
    pipeline_tag: ClassVar[str] = "text-classification"
    compared: ClassVar[tuple[str, ...]] = ("macro_f1", "accuracy")

    def check(self, values: Mapping[str, Any], *, labels: list[str] | None,
              names: Mapping[str, str]) -> dict[str, Any] | Reject:
        out = text_fields(values, self.roles, names, label="label")
        if isinstance(out, dict) and labels is not None and out["label"] not in labels:
            return Reject("unknown_label", f"label {out['label']!r} is not one of {labels}")
        return out

    def review(self, examples: Sequence[dict[str, Any]], *,
               options: Mapping[str, Any]) -> list[dict[str, Any] | Reject]:
        return list(examples)  # each record is judged on its own (check)

    def label_names(self, labels: list[str]) -> list[str]:
        return list(labels)

    def dedup_key(self, values: Mapping[str, Any]) -> str:
        return str(values["text"])  # one text cannot have two labels

    def chars(self, values: Mapping[str, Any]) -> int:
        return len(values["text"])

    def labels_of(self, values: Mapping[str, Any]) -> list[str]:
        return [values["label"]]

    def stratum(self, values: Mapping[str, Any]) -> str | None:
        return str(values["label"])

    def group(self, values: Mapping[str, Any]) -> str | None:
        return None

    def fit(self, values: dict[str, Any], *, tokenizer: Any, max_length: int) -> dict[str, Any] | Reject:
        n = token_count(tokenizer, values["text"]) + 1  # the EOS training appends
        return values if n <= max_length else Reject("too_long_tokens", f"{n} tokens > max_length {max_length}")

    def row(self, example_id: str, values: Mapping[str, Any]) -> dict[str, Any]:
        return {"id": example_id, "text": values["text"], "label": values["label"]}

    def num_outputs(self, labels: list[str] | None) -> int:
        return len(labels or [])

    def encode(self, rows: list[dict[str, Any]], *, tokenizer: Any, max_length: int, labels: list[str] | None,
               eos_id: int) -> dict[str, Any]:
        ids, targets, kept, dropped = [], [], [], 0
        for row in rows:
            seq = list(tokenizer(row["text"])["input_ids"])
            if len(seq) > max_length or not seq:
                dropped += 1
                continue
            ids.append(seq)
            targets.append(labels.index(row["label"]))  # type: ignore[union-attr]
            kept.append(row)
        return {"ids": ids, "targets": targets, "dropped": dropped, "rows": kept}

    def collate(self, ids: list[list[int]], targets: list[Any], *, pad_id: int) -> tuple[Any, Any, Any]:
        import torch

        from tasks.modeling.tasktypes.batching import pad

        x, mask = pad(ids, pad_id=pad_id)
        return x, mask, torch.tensor(targets, dtype=torch.long)

    def logits(self, output: Any) -> Any:
        return output.logits

    def outputs(self, logits: Any, attention_mask: Any) -> list[Any]:
        return list(logits.argmax(-1).tolist())

    def loss(self, logits: Any, targets: Any, *, weight: Any = None, reduction: str = "mean") -> Any:
        import torch.nn.functional as F

        return F.cross_entropy(logits.float(), targets, weight=weight, reduction=reduction)

    def kd_rows(self, logits: Any, targets: Any, attention_mask: Any) -> Any:
        return logits.float()

    def count(self, targets: Any) -> int:
        return len(targets)

    def metrics(self, *, loss: float, outputs: list[Any], data: dict[str, Any],
                labels: list[str] | None) -> dict[str, Any]:
        from tasks.modeling.metrics import classification_scores

        return {"loss": loss, **classification_scores(list(data["targets"]), outputs, labels or [])}

    def score(self, metrics: Mapping[str, Any]) -> float:
        return float(metrics["macro_f1"])
