"""What a fine-tuning task type is: one component the data step, the recipes, distill, evaluate, the registry and
serving ask, instead of each branching on the type (DESIGN: "Task type = one component").

A task type is a class implementing :class:`TaskType` (a Protocol: no base class to inherit, every member written
out where a reader looks for it) and registered in :data:`tasks.modeling.tasktypes.TASK_TYPES`. Members, in the
order the pipeline meets them:

- **data step** (``tasks/finetune``): :meth:`TaskType.check` turns one raw record's fields into the type's values or
  a quarantine reason; :meth:`~TaskType.dedup_key`, :meth:`~TaskType.chars`, :meth:`~TaskType.labels_of`,
  :meth:`~TaskType.stratum` and :meth:`~TaskType.fit` (cut or reject what does not fit ``max_length`` tokens) do the
  rest; :meth:`~TaskType.row` is the ``data/finetune/<task>/<split>.jsonl`` row.
- **training** (``tasks/training``, through ``tasks.modeling``): :attr:`~TaskType.head_class` (the transformers auto
  class of the exported model; None: the causal LM's own head), :meth:`~TaskType.num_outputs`,
  :meth:`~TaskType.encode` (rows -> token ids and targets, windows for long inputs), :meth:`~TaskType.collate`,
  :meth:`~TaskType.loss`, :meth:`~TaskType.metrics` (val metrics from a split's outputs) and :meth:`~TaskType.score`
  (the higher-is-better number early stopping follows).
- **evaluate and registry**: :attr:`~TaskType.compared` (the report's decision metrics, the registry's version tags),
  :attr:`~TaskType.pipeline_tag` (model card). The registry's gate per type is a param
  (``pipelines.config.registry.DEFAULT_GATES``).

Heavy imports (torch, transformers) happen inside the methods.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol


@dataclass(frozen=True)
class Reject:
    """Why a record is quarantined: a short ``reason`` (counted) and a ``detail`` for the person fixing the data."""

    reason: str
    detail: str


class TaskType(Protocol):
    """One fine-tuning task type (see the module docstring for who asks which member)."""

    name: ClassVar[str]
    """The ``type`` of a task in params.yaml and in the task manifest."""
    roles: ClassVar[tuple[str, ...]]
    """Record fields the data step reads (names of ``finetune.tasks[].data[].fields`` entries), in order."""
    labelled: ClassVar[bool]
    """Whether the task has a label set (``labels`` in params, ``label_counts`` in the manifest)."""
    generative: ClassVar[bool]
    """Whether the task trains the causal LM's own head (needs a decoder)."""
    packed: ClassVar[bool]
    """Whether training packs several examples per row (``finetune.packing``; evaluation pads)."""
    templated: ClassVar[bool]
    """Whether :meth:`fit` needs the transformers tokenizer (a chat template) rather than ``tokenizers.Tokenizer``."""
    head_class: ClassVar[str | None]
    """The transformers auto class of the exported model (``AutoModelForSequenceClassification``...); None: the
    causal LM (``AutoModelForCausalLM``)."""
    pipeline_tag: ClassVar[str]
    """The Hugging Face pipeline tag of the exported model (model cards)."""
    compared: ClassVar[tuple[str, ...]]
    """Test metrics the report's decision section compares (headline first)."""

    def check(self, values: Mapping[str, Any], *, labels: list[str] | None,
              names: Mapping[str, str]) -> dict[str, Any] | Reject:
        """One record's fields (``{role: value}`` for every role; the data step quarantines a record missing one)
        normalised into the type's values, or why it is quarantined (mistyped or empty fields, an unknown label...);
        ``names`` maps each role to its field name in the user's data, for the message."""
        ...

    def review(self, examples: Sequence[dict[str, Any]], *,
               options: Mapping[str, Any]) -> list[dict[str, Any] | Reject]:
        """Every checked example of a task at once, before dedup and the splits, for what one record cannot tell
        (token_classification's tag scheme belongs to the whole task): per example, its values as kept (with what
        was found of the task) or why it is quarantined. ``options``: the task's params (``scheme``...)."""
        ...

    def label_names(self, labels: list[str]) -> list[str]:
        """The head's label names for the ``labels`` a task's params give (a tagger's IOB2 tags for its entity
        types); the data step checks records against them and the manifest lists them."""
        ...

    def dedup_key(self, values: Mapping[str, Any]) -> str:
        """What makes two examples of a task the same (the later one is quarantined as a duplicate)."""
        ...

    def chars(self, values: Mapping[str, Any]) -> int:
        """Characters of the inputs (``max_chars`` quarantines longer examples before tokenizing)."""
        ...

    def labels_of(self, values: Mapping[str, Any]) -> list[str]:
        """The labels an example carries (its class; a sentence's tags); [] for an unlabelled type."""
        ...

    def stratum(self, values: Mapping[str, Any]) -> str | None:
        """The key splits are stratified by (a classification example's label), or None."""
        ...

    def group(self, values: Mapping[str, Any]) -> str | None:
        """Examples with the same key get the same split when the data step makes splits (an extractive_qa
        question's context: a passage is never in train and test both), or None: each example on its own."""
        ...

    def fit(self, values: dict[str, Any], *, tokenizer: Any, max_length: int) -> dict[str, Any] | Reject:
        """The example as training will see it within ``max_length`` tokens (``tokenizer``: a ``tokenizers.Tokenizer``):
        unchanged, cut where the type allows it (a conversation at a turn boundary, counted in the values), or
        rejected (never cut silently). Types that window long inputs return it unchanged."""
        ...

    def row(self, example_id: str, values: Mapping[str, Any]) -> dict[str, Any]:
        """The JSON row of ``data/finetune/<task>/<split>.jsonl``."""
        ...

    def num_outputs(self, labels: list[str] | None) -> int:
        """Outputs of the task's head (classes; 2 for start/end; 0 for the causal LM's head)."""
        ...

    def encode(self, rows: list[dict[str, Any]], *, tokenizer: Any, max_length: int, labels: list[str] | None,
               eos_id: int) -> dict[str, Any]:
        """One split tokenized (``tokenizer``: a transformers tokenizer): ``{"ids": [[int]], "targets": [...],
        "rows": rows kept, "dropped": n}`` plus what :meth:`metrics` needs (a window's example, offsets...). A
        feature is one model input: a long example may give several (windows)."""
        ...

    def collate(self, ids: list[list[int]], targets: list[Any], *, pad_id: int) -> tuple[Any, Any, Any]:
        """A right-padded batch ``(input_ids, attention_mask, targets)`` of features."""
        ...

    def logits(self, output: Any) -> Any:
        """The tensor the loss and :meth:`outputs` read from the head's model output (``output.logits``; extractive
        QA stacks ``start_logits`` and ``end_logits``)."""
        ...

    def outputs(self, logits: Any, attention_mask: Any) -> list[Any]:
        """What evaluation keeps of a batch's logits, one item per feature (a class, a tag per token, span scores)."""
        ...

    def loss(self, logits: Any, targets: Any, *, weight: Any = None, reduction: str = "mean") -> Any:
        """The training loss of a batch's head outputs (fp32); ``reduction="sum"`` sums over :meth:`count` units."""
        ...

    def kd_rows(self, logits: Any, targets: Any, attention_mask: Any) -> Any:
        """The rows (n, classes) of the distributions knowledge distillation matches, student against teacher: a
        classifier's logits; the next-token rows of the target positions; a tagger's rows of the labelled tokens; a
        span head's start and end distributions over the window."""
        ...

    def count(self, targets: Any) -> int:
        """How many units (examples, target tokens) a batch's summed loss is over."""
        ...

    def metrics(self, *, loss: float, outputs: list[Any], data: dict[str, Any],
                labels: list[str] | None) -> dict[str, Any]:
        """Validation metrics of a split from its mean ``loss`` and the model's per-feature ``outputs`` (what the
        type keeps of the logits, in ``data``'s order)."""
        ...

    def score(self, metrics: Mapping[str, Any]) -> float:
        """The higher-is-better validation number (early stopping, best checkpoint, reduce-on-plateau)."""
        ...
