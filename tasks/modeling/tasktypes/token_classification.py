"""``token_classification``: a sentence's words -> a tag per word (named-entity recognition). The head is the
architecture's own ``AutoModelForTokenClassification`` (``LlamaForTokenClassification``, ``BertForTokenClassification``:
a linear layer over every token's hidden state), the loss per-token cross-entropy over each word's first token (the
other sub-words, the special tokens and padding are -100), the validation number entity-level F1.

A row is ``{"id", "tokens", "tags", "scheme"}``: the words, their tags as the data gave them, and the task's tag
scheme (IOB1, IOB2 or BIOES: :mod:`tasks.modeling.tagging`, checked over the whole task by :meth:`review`).
Training uses IOB2 labels whatever the data's scheme (the reading is lossless); the task's ``labels`` are the head's
IOB2 tags in id order, and the exported model's ``id2label``. Sentences are encoded by :mod:`tasks.modeling.alignment`:
the words as running text, one feature per window of whole words for a sentence over ``max_length`` tokens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from tasks.modeling.tasktypes.base import Reject
from tasks.modeling.tasktypes.batching import collate_per_token


class TokenClassification:
    """The token classification task type (:class:`tasks.modeling.tasktypes.base.TaskType`)."""

    name: ClassVar[str] = "token_classification"
    roles: ClassVar[tuple[str, ...]] = ("tokens", "tags")
    labelled: ClassVar[bool] = True
    generative: ClassVar[bool] = False
    packed: ClassVar[bool] = False
    templated: ClassVar[bool] = False
    head_class: ClassVar[str | None] = "AutoModelForTokenClassification"
    pipeline_tag: ClassVar[str] = "token-classification"
    compared: ClassVar[tuple[str, ...]] = ("entity_f1", "entity_precision", "entity_recall", "token_accuracy")

    def check(self, values: Mapping[str, Any], *, labels: list[str] | None,
              names: Mapping[str, str]) -> dict[str, Any] | Reject:
        from tasks.modeling.tagging import check_sentence

        got = check_sentence(values["tokens"], values["tags"], labels=labels, scheme=None)
        if isinstance(got[0], str):
            reason, detail = got
            return Reject(str(reason), f"{names['tokens']!r} / {names['tags']!r}: {detail}")
        return {"tokens": got[0], "tags": got[1]}

    def review(self, examples: Sequence[dict[str, Any]], *,
               options: Mapping[str, Any]) -> list[dict[str, Any] | Reject]:
        """The task's tag scheme (``options["scheme"]``, or the one its sentences break least when ``auto``), kept in
        every example's values (``scheme``); an example that breaks it is quarantined (``invalid_tag_sequence``,
        e.g. an ``I-`` that follows nothing in IOB2)."""
        from tasks.modeling.tagging import detect_scheme, violations

        declared = options.get("scheme", "auto")
        chosen = detect_scheme([v["tags"] for v in examples]).scheme if declared == "auto" else declared
        out: list[dict[str, Any] | Reject] = []
        for values in examples:
            broken = violations(values["tags"], chosen)
            if broken:
                i, why = broken[0]
                more = f" (and {len(broken) - 1} more)" if len(broken) > 1 else ""
                out.append(Reject("invalid_tag_sequence", f"tag {i} ({values['tokens'][i]!r}): {why}{more}; the "
                                  f"task's scheme is {chosen}: fix the tags, or set the task's scheme"))
            else:
                out.append({**values, "scheme": chosen})
        return out

    def label_names(self, labels: list[str]) -> list[str]:
        from tasks.modeling.tagging import head_labels

        return head_labels(labels)

    def dedup_key(self, values: Mapping[str, Any]) -> str:
        return "\0".join(values["tokens"])  # one sentence cannot have two taggings

    def chars(self, values: Mapping[str, Any]) -> int:
        return sum(len(t) + 1 for t in values["tokens"]) - 1

    def labels_of(self, values: Mapping[str, Any]) -> list[str]:
        from tasks.modeling.tagging import TRAINING_SCHEME, convert

        return convert(values["tags"], TRAINING_SCHEME)  # the head's labels: IOB2 whatever the data's scheme

    def stratum(self, values: Mapping[str, Any]) -> str | None:
        return None

    def group(self, values: Mapping[str, Any]) -> str | None:
        return None

    def fit(self, values: dict[str, Any], *, tokenizer: Any, max_length: int) -> dict[str, Any] | Reject:
        from tasks.modeling.alignment import unfit_word

        if (found := unfit_word(tokenizer, values["tokens"], max_length)) is not None:
            i, n = found
            return Reject("too_long_tokens", f"word {i} ({values['tokens'][i][:50]!r}) alone takes {n} tokens > "
                          f"max_length {max_length}: a long sentence is split into windows, a word cannot be")
        return values

    def row(self, example_id: str, values: Mapping[str, Any]) -> dict[str, Any]:
        return {"id": example_id, "tokens": list(values["tokens"]), "tags": list(values["tags"]),
                "scheme": values.get("scheme", "IOB2")}

    def num_outputs(self, labels: list[str] | None) -> int:
        return len(labels or [])

    def encode(self, rows: list[dict[str, Any]], *, tokenizer: Any, max_length: int, labels: list[str] | None,
               eos_id: int) -> dict[str, Any]:
        from tasks.modeling.alignment import encode_sentences
        from tasks.modeling.errors import ConfigError
        from tasks.modeling.tagging import TRAINING_SCHEME, convert

        index = {tag: i for i, tag in enumerate(labels or [])}
        tag_ids = []
        for row in rows:
            tags = convert(row["tags"], TRAINING_SCHEME)
            if missing := sorted(set(tags) - set(index)):
                raise ConfigError(f"tags {missing} of row {row['id']} are not among the task's labels {labels}: "
                                  "re-run the finetune stage's data step")
            tag_ids.append([index[t] for t in tags])
        windows, dropped = encode_sentences([r["tokens"] for r in rows], tag_ids, tokenizer=tokenizer,
                                            max_length=max_length)
        out: dict[str, Any] = {"ids": [], "targets": [], "rows": [], "feature_row": [], "first": [],
                               "positions": [], "windows": []}
        for r, row in enumerate(rows):
            if r in dropped:
                continue
            for window in windows[r]:
                out["ids"].append(window.ids)
                out["targets"].append(window.targets)
                out["feature_row"].append(len(out["rows"]))
                out["first"].append(window.first)
                out["positions"].append(window.positions)
                out["windows"].append(len(windows[r]))
            out["rows"].append(row)
        out["dropped"] = len(dropped)
        return out

    def collate(self, ids: list[list[int]], targets: list[Any], *, pad_id: int) -> tuple[Any, Any, Any]:
        return collate_per_token(ids, targets, pad_id=pad_id)

    def logits(self, output: Any) -> Any:
        return output.logits

    def outputs(self, logits: Any, attention_mask: Any) -> list[Any]:
        best = logits.argmax(-1).tolist()
        return [row[:n] for row, n in zip(best, attention_mask.sum(-1).tolist(), strict=True)]

    def loss(self, logits: Any, targets: Any, *, weight: Any = None, reduction: str = "mean") -> Any:
        import torch.nn.functional as F

        from tasks.modeling.tasktypes.batching import IGNORE

        return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), weight=weight, ignore_index=IGNORE,
                               reduction=reduction)

    def kd_rows(self, logits: Any, targets: Any, attention_mask: Any) -> Any:
        from tasks.modeling.tasktypes.batching import IGNORE

        return logits.float()[targets != IGNORE]  # the labelled tokens, one row per word

    def count(self, targets: Any) -> int:
        from tasks.modeling.tasktypes.batching import IGNORE

        return int((targets != IGNORE).sum())

    def metrics(self, *, loss: float, outputs: list[Any], data: dict[str, Any],
                labels: list[str] | None) -> dict[str, Any]:
        from tasks.modeling.entity_metrics import entity_scores
        from tasks.modeling.tagging import TRAINING_SCHEME, convert

        refs, preds = word_tags(outputs, data, labels or [])
        scores = entity_scores([convert(r, TRAINING_SCHEME) for r in refs], preds)
        return {"loss": loss, **scores}

    def score(self, metrics: Mapping[str, Any]) -> float:
        return float(metrics["entity_f1"])


def word_tags(outputs: Sequence[Sequence[int]], data: Mapping[str, Any],
              labels: Sequence[str]) -> tuple[list[list[str]], list[list[str]]]:
    """(reference tags, predicted IOB2 tags) of every row all of whose windows are among ``outputs`` (the per-token
    label ids of the features in ``data``'s order; a capped split may end inside a row's windows)."""
    from tasks.modeling.alignment import Window, word_predictions

    by_row: dict[int, list[tuple[Window, Sequence[int]]]] = {}
    expected: dict[int, int] = {}
    for f, predicted in enumerate(outputs):
        r = data["feature_row"][f]
        by_row.setdefault(r, []).append((Window([], [], data["first"][f], data["positions"][f]), predicted))
        expected[r] = data["windows"][f]
    outside = labels.index("O") if "O" in labels else 0
    refs, preds = [], []
    for r, parts in sorted(by_row.items()):
        if len(parts) != expected[r]:
            continue
        row = data["rows"][r]
        ids = word_predictions([w for w, _ in parts], [p for _, p in parts], len(row["tokens"]), fallback=outside)
        refs.append(list(row["tags"]))
        preds.append([labels[i] for i in ids])
    return refs, preds
