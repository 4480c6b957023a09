"""Extractive question answering (SQuAD): a question and a context in, the answer's start and end tokens out.

- **Data**: records with ``context``, ``question`` and ``answers`` in any of the layouts
  :mod:`tasks.modeling.tasktypes.qa_records` accepts (SQuAD json files are flattened by :mod:`tasks.readers.squad`);
  an answer not at its ``answer_start`` is quarantined, an unanswerable question (no answer) too unless the task
  allows them.
  Long contexts are never cut: they become windows at training time; only a question too long to leave a window
  room for context is quarantined (``too_long_tokens``).
- **Head**: ``AutoModelForQuestionAnswering`` of the backbone's architecture (``qa_outputs``: a linear layer giving
  each token a start and an end logit; ``BertForQuestionAnswering``, ``LlamaForQuestionAnswering``...).
- **Features**: each (question, context) in windows of ``max_length`` tokens sharing ``doc_stride`` tokens
  (:func:`tasks.modeling.tasktypes.spans.windows`); a window's target is the first gold answer's first and last
  token, or the null position (CLS, else position 0) when the window lacks it.
- **Loss**: the mean of the start and end cross-entropies over each window's own tokens (padding masked out).
- **Metrics**: SQuAD exact match and F1 (:mod:`tasks.modeling.tasktypes.squad_metrics`) of the best span per question
  over its windows (:func:`tasks.modeling.tasktypes.spans.best_answers`); F1 is the validation score and the
  registry's gate (``pipelines.config.registry.DEFAULT_GATES``: test.f1, higher by 0.01).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from tasks.modeling.tasktypes.base import Reject
from tasks.modeling.tasktypes.qa_records import ROLES, check_qa

DOC_STRIDE = 64
"""Default tokens shared by consecutive windows of a context."""
MAX_ANSWER_LENGTH = 30
"""Default longest answer, in tokens (transformers' run_qa default)."""


class ExtractiveQA:
    """The extractive QA task type (see the module docstring).

    Args:
        unanswerable: keep questions without an answer (SQuAD 2.0); the model may then answer nothing.
        doc_stride: tokens shared by consecutive windows of a long context.
        max_answer_length: the longest answer predicted, in tokens.
    """

    name: ClassVar[str] = "extractive_qa"
    roles: ClassVar[tuple[str, ...]] = ROLES
    labelled: ClassVar[bool] = False
    generative: ClassVar[bool] = False
    packed: ClassVar[bool] = False
    templated: ClassVar[bool] = False
    head_class: ClassVar[str | None] = "AutoModelForQuestionAnswering"
    pipeline_tag: ClassVar[str] = "question-answering"
    compared: ClassVar[tuple[str, ...]] = ("f1", "exact_match")

    def __init__(self, *, unanswerable: bool = False, doc_stride: int = DOC_STRIDE,
                 max_answer_length: int = MAX_ANSWER_LENGTH) -> None:
        self.unanswerable, self.doc_stride, self.max_answer_length = unanswerable, doc_stride, max_answer_length

    # --- data step ---------------------------------------------------------------------------------------------
    def check(self, values: Mapping[str, Any], *, labels: list[str] | None,
              names: Mapping[str, str] | None = None) -> dict[str, Any] | Reject:
        """Context, question and answers normalised (:func:`~tasks.modeling.tasktypes.qa_records.check_qa`), or why
        not."""
        return check_qa(values, unanswerable=self.unanswerable, names=names)

    def review(self, examples: Sequence[dict[str, Any]], *,
               options: Mapping[str, Any]) -> list[dict[str, Any] | Reject]:
        return list(examples)  # each record is judged on its own (check)

    def label_names(self, labels: list[str]) -> list[str]:
        return list(labels)

    def dedup_key(self, values: Mapping[str, Any]) -> str:
        """One question about one context is one example (its answers cannot differ)."""
        return f"{values['question']}\0{values['context']}"

    def chars(self, values: Mapping[str, Any]) -> int:
        """Characters of the question and the context."""
        return len(values["question"]) + len(values["context"])

    def labels_of(self, values: Mapping[str, Any]) -> list[str]:
        """No label set."""
        return []

    def stratum(self, values: Mapping[str, Any]) -> str | None:
        """None: the data step stratifies (and rebalances, and caps) by class, which a question has none of."""
        return None

    def group(self, values: Mapping[str, Any]) -> str | None:
        """The context: SQuAD's questions come several to a passage, and one asked in training would let test
        questions on the same passage be answered from memory."""
        return str(values["context"])

    def fit(self, values: dict[str, Any], *, tokenizer: Any, max_length: int) -> dict[str, Any] | Reject:
        """The example unchanged (long contexts become windows), unless its question leaves a window no room for
        context beyond ``doc_stride`` tokens (``tokenizer``: a ``tokenizers.Tokenizer``)."""
        processor = tokenizer.post_processor
        specials = int(processor.num_special_tokens_to_add(True)) if processor is not None else 0
        room = max_length - specials - self.doc_stride - 1
        n = len(tokenizer.encode(values["question"], add_special_tokens=False).ids)
        if n > room:
            return Reject("too_long_tokens", f"question of {n} tokens > {room}: a window of max_length {max_length} "
                          f"keeps {specials} special tokens and more than doc_stride {self.doc_stride} context tokens")
        return values

    def row(self, example_id: str, values: Mapping[str, Any]) -> dict[str, Any]:
        """``{"id", "context", "question", "answers": {"text": [...], "answer_start": [...]}}``."""
        return {"id": example_id, "context": values["context"], "question": values["question"],
                "answers": values["answers"]}

    # --- training --------------------------------------------------------------------------------------------
    def num_outputs(self, labels: list[str] | None) -> int:
        """Two outputs per token: start and end."""
        return 2

    def encode(self, rows: list[dict[str, Any]], *, tokenizer: Any, max_length: int, labels: list[str] | None,
               eos_id: int) -> dict[str, Any]:
        """Windows of every row (:func:`tasks.modeling.tasktypes.spans.windows`): ``ids``, ``targets`` ([start, end] per
        window), ``rows`` (kept), ``dropped`` (questions too long), and for :meth:`metrics`: ``example``,
        ``offsets``, ``null`` (per window), ``windows`` (per row: how many), ``unreachable`` (rows whose answer no
        window holds whole) and ``answering`` (the decoding settings)."""
        from tasks.modeling.tasktypes.spans import answer_chars, windows

        data = windows([r["question"] for r in rows], [r["context"] for r in rows], tokenizer=tokenizer,
                       max_length=max_length, stride=self.doc_stride,
                       answers=[answer_chars(r["answers"]) for r in rows])
        position = {row: i for i, row in enumerate(data["kept"])}  # windows name rows by their index in `rows`
        example = [position[e] for e in data["example"]]
        found = {e for e, target, null in zip(example, data["targets"], data["null"], strict=True)
                 if target != [null, null]}
        kept = [rows[i] for i in data["kept"]]
        # an answer longer than a window's share of context lies in no window whole: such a question teaches "no
        # answer" (as in transformers' run_qa); counted, so that a too small max_length or doc_stride shows
        unreachable = [i for i, r in enumerate(kept) if r["answers"]["text"] and i not in found]
        return {"ids": data["ids"], "targets": data["targets"], "rows": kept, "dropped": len(data["dropped"]),
                "unreachable": unreachable, "example": example, "offsets": data["offsets"], "null": data["null"],
                "windows": [example.count(i) for i in range(len(kept))],
                "answering": {"max_answer_length": self.max_answer_length, "allow_null": self.unanswerable}}

    def collate(self, ids: list[list[int]], targets: list[Any], *, pad_id: int) -> tuple[Any, Any, Any]:
        """Right-padded ids and mask; targets ``(batch, 3)``: start, end and the window's length (the loss masks
        what lies beyond it)."""
        import torch

        width = max(len(s) for s in ids)
        x = torch.full((len(ids), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for i, seq in enumerate(ids):
            x[i, :len(seq)] = torch.tensor(seq)
            mask[i, :len(seq)] = 1
        y = torch.tensor([[int(s), int(e), len(seq)] for (s, e), seq in zip(targets, ids, strict=True)],
                         dtype=torch.long)
        return x, mask, y

    def logits(self, output: Any) -> Any:
        """``(batch, tokens, 2)``: start and end logits stacked."""
        import torch

        return torch.stack([output.start_logits, output.end_logits], dim=-1)

    def outputs(self, logits: Any, attention_mask: Any) -> list[Any]:
        """Each window's start/end logits over its own tokens, as a float32 numpy array ``(tokens, 2)``."""
        lengths = attention_mask.sum(-1).tolist()
        values = logits.detach().float().cpu().numpy()
        return [values[i, :n] for i, n in enumerate(lengths)]

    def loss(self, logits: Any, targets: Any, *, weight: Any = None, reduction: str = "mean") -> Any:
        """``(CE(start) + CE(end)) / 2`` per window in fp32, over its own tokens; ``reduction`` over windows."""
        import torch
        import torch.nn.functional as F

        scores = logits.float()
        beyond = torch.arange(scores.shape[1], device=scores.device)[None, :] >= targets[:, 2:3]
        scores = scores.masked_fill(beyond[..., None], torch.finfo(scores.dtype).min)
        start = F.cross_entropy(scores[..., 0], targets[:, 0], reduction=reduction)
        end = F.cross_entropy(scores[..., 1], targets[:, 1], reduction=reduction)
        return (start + end) / 2

    def kd_rows(self, logits: Any, targets: Any, attention_mask: Any) -> Any:
        """``(2 x windows, tokens)``: each window's start distribution's logits, then its end one's; padding at
        -1e9 (student and teacher alike, so it carries no probability; finite, so no temperature makes it NaN)."""
        scores = logits.float().masked_fill(~attention_mask.bool()[..., None], -1e9)
        return scores.permute(2, 0, 1).reshape(-1, scores.shape[1])

    def count(self, targets: Any) -> int:
        """Windows in the batch."""
        return int(targets.shape[0])

    def predictions(self, outputs: list[Any], data: dict[str, Any]) -> list[dict[str, Any]]:
        """The best answer of each of ``data``'s rows from its windows' outputs (text, offsets, score), decoded with
        the settings ``data`` was encoded with."""
        from tasks.modeling.tasktypes.spans import best_answers

        answering = data.get("answering") or {"max_answer_length": self.max_answer_length,
                                              "allow_null": self.unanswerable}
        return best_answers(outputs, data, [r["context"] for r in data["rows"]], **answering)

    def metrics(self, *, loss: float, outputs: list[Any], data: dict[str, Any],
                labels: list[str] | None) -> dict[str, Any]:
        """``loss`` (per window), ``exact_match`` and ``f1`` of the questions (SQuAD rules) whose windows are all in
        ``data`` (a split cut to its first windows leaves its last question's windows short: that one is left out),
        and ``questions`` (how many)."""
        from tasks.modeling.tasktypes.squad_metrics import squad_scores

        present = [0] * len(data["rows"])
        for e in data["example"]:
            present[e] += 1
        whole = [i for i, n in enumerate(present) if n and n == data["windows"][i]]
        if not whole:  # a split cut shorter than its first question's windows
            return {"loss": loss, "exact_match": 0.0, "f1": 0.0, "questions": 0}
        predicted = self.predictions(outputs, data)
        scores = squad_scores([data["rows"][i]["answers"]["text"] for i in whole],
                              [predicted[i]["text"] for i in whole])
        return {"loss": loss, "exact_match": scores["exact_match"], "f1": scores["f1"], "questions": len(whole)}

    def export_config(self, *, max_length: int) -> dict[str, Any]:
        """What the exported model's config carries so that it answers as training decoded (the evaluate stage and
        the registry's pyfunc read it), under the Hugging Face question-answering pipeline's parameter names."""
        return {"task_specific_params": {"question-answering": {
            "doc_stride": self.doc_stride, "max_answer_length": self.max_answer_length, "max_seq_len": max_length,
            "handle_impossible_answer": self.unanswerable}}}

    def score(self, metrics: Mapping[str, Any]) -> float:
        """SQuAD F1 on val."""
        return float(metrics["f1"])
