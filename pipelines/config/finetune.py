"""Params of the finetune stage: the tasks and their data, the training settings (defined once, in
``tasks.training.config``), the hyperparameter search and the process launch."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from pipelines.config.base import Section
from pipelines.config.checkpoint import CheckpointParams
from pipelines.config.launch import LaunchParams, launch_files
from pipelines.config.sources import HF_BUILDERS, Written, glob_deps, hf_local, hub_pin, repo_dep

# the one definition of the training settings (DESIGN: each setting defined once); pure pydantic, no torch
from tasks.training.config import FinetuneSettings


class Fields(Section):
    """Which field (column) of a record holds what."""

    text: str = Field("text", min_length=1, description="classification: the input text.")
    label: str = Field("label", min_length=1, description="classification: the label (string or integer).")
    prompt: str = Field("prompt", min_length=1, description="sft: the request.")
    response: str = Field("response", min_length=1, description="sft: the answer trained on.")
    tokens: str = Field("tokens", min_length=1, description="token_classification: the sentence's words (a list of "
                        "strings).")
    tags: str = Field("tags", min_length=1, description="token_classification: a tag per word (a list: O, B-PER, "
                      "I-PER... in IOB1, IOB2 or BIOES; integers index labels).")
    messages: str = Field("messages", min_length=1, description="chat: the conversation, a list of turns: "
                          "{role: system|user|assistant, content} or ShareGPT's {from: system|human|gpt, value} "
                          "(e.g. conversations).")
    context: str = Field("context", min_length=1, description="extractive_qa: the passage answers are spans of.")
    question: str = Field("question", min_length=1, description="extractive_qa: the question.")
    answers: str = Field("answers", min_length=1, description="extractive_qa: the answers, a list of {text, "
                         "answer_start} or {text: [...], answer_start: [...]}; empty: unanswerable.")
    split: str | None = Field(None, description="A field naming each record's split (train/val/test, also "
                              "validation/dev); null: splits are made (stratified by label for classification).")


class DefaultData(Section):
    """The offline default task, derived by code from the default corpus in data/dedup (labels from the data
    itself): classification: which part of the documentation a passage comes from; sft: a function's signature as
    the prompt, the first paragraph of its docstring as the response. Splits follow data/dedup's documents."""

    kind: Literal["default"] = Field(description="Data kind.")


class FilesData(Section):
    """Local files: jsonl / json / csv / tsv / parquet / conll (plain or .gz/.zst for the text formats)."""

    kind: Literal["files"] = Field(description="Data kind.")
    paths: list[str] = Field(min_length=1, description="Glob patterns (** allowed), relative to the repository.")
    format: Literal["auto", "jsonl", "json", "csv", "tsv", "parquet", "conll", "squad"] = Field(
        "auto", description="File format; auto: from the suffix. conll (suffix .conll): one token per line with its "
        "tag in the last column, a blank line between sentences (token_classification); squad: SQuAD 1.1/2.0 json "
        "(articles of paragraphs of questions), a record per question (extractive_qa).")
    fields: Fields = Field(default_factory=Fields, description="Field names.")
    split: Literal["train", "val", "test"] | None = Field(
        None, description="The split of every record of these files, for data released as one file per split "
        "(SQuAD's train-v2.0.json and dev-v2.0.json, CoNLL-2003's eng.train / eng.testa / eng.testb); a record's "
        "split field still wins. null: the split field, or splits made.")


class FoldersData(Section):
    """Classification only: one folder (or file) per class, the label taken from its name (scikit-learn's
    ``load_files`` layout): ``path/LABEL/*.txt`` or ``path/LABEL.txt``."""

    kind: Literal["folders"] = Field(description="Data kind.")
    path: str = Field(min_length=1, description="The directory holding one folder or file per class.")
    unit: Literal["file", "line"] = Field("file", description="One example per file or per non-empty line.")


class HFData(Section):
    """A Hugging Face dataset: hub id or local directory (saved with save_to_disk, or data files)."""

    kind: Literal["hf"] = Field(description="Data kind.")
    path: str = Field(min_length=1, description="Hub id, local dataset directory, or builder name (json, csv...).")
    config: str | None = Field(None, description="Dataset configuration name.")
    splits: list[str] = Field(["train"], min_length=1, description="Splits to read; their names become the "
                              "examples' splits when they are train/val/test (validation, dev count as val).")
    data_files: list[str] | None = Field(None, description="Data files for a builder name.")
    revision: str | None = Field(None, description="Hub revision to pin.")
    fields: Fields = Field(default_factory=Fields, description="Field names.")


TaskData = Annotated[DefaultData | FilesData | FoldersData | HFData, Field(discriminator="kind")]


class SplitParams(Section):
    """Splits made when the data give none: deterministic for the seed, stratified by label for classification."""

    val: float = Field(0.1, gt=0, lt=0.5, description="Share of examples for validation.")
    test: float = Field(0.1, gt=0, lt=0.5, description="Share of examples for test.")
    seed: int = Field(0, ge=0, description="Seed of the split.")


class AugmentParams(Section):
    """EDA-style augmentation of classification training examples (Wei & Zou 2019), seeded: random deletion, swap
    and insertion of words taken from the same example."""

    enabled: bool = Field(False, description="Add augmented copies to the training split.")
    copies: int = Field(1, ge=1, le=16, description="Augmented copies per training example.")
    p_delete: float = Field(0.1, ge=0, le=1, description="Probability of deleting each word.")
    p_swap: float = Field(0.1, ge=0, le=1, description="Swaps per word (rounded) of two random words.")
    p_insert: float = Field(0.1, ge=0, le=1, description="Insertions per word (rounded) of a word of the example at "
                            "a random position.")
    seed: int = Field(0, ge=0, description="Seed of the augmentation.")


class ExtractiveQAParams(Section):
    """Options of an extractive_qa task (``tasks.modeling.tasktypes.extractive_qa``)."""

    unanswerable: bool = Field(False, description="Keep questions without an answer (SQuAD 2.0); the model may then "
                               "answer nothing. false: such questions are quarantined (unanswerable).")
    doc_stride: int = Field(64, ge=0, description="Tokens shared by consecutive windows of a context longer than "
                            "max_length; below max_length minus the question and special tokens.")
    max_answer_length: int = Field(30, ge=1, description="The longest answer predicted, in tokens.")


LABELLED_TYPES = ("classification", "token_classification")
"""The task types with a label set (``labels``): the components' ``labelled`` (a test checks they agree)."""
DEFAULT_DATA_TYPES = ("classification", "sft")
"""The task types data kind ``default`` derives from the default corpus."""


class TaskParams(Section):
    """One fine-tuning task: its type, data, labels, share of the batches."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_-]+$", description="Task name: directory under "
                      "data/finetune and models/finetuned, prefix of its metrics.")
    type: Literal["classification", "sft", "chat", "token_classification", "extractive_qa"] = Field(
        description="classification (text -> label), sft (prompt -> response, loss on the response only), chat "
        "(messages: multi-turn, loss on the assistant turns), token_classification (a sentence's words -> a tag per "
        "word: named-entity recognition) or extractive_qa (question and context -> the answer's span, SQuAD).")
    data: list[TaskData] = Field(min_length=1, description="Where the examples come from, any mix.")
    weight: float = Field(1.0, gt=0, description="Share of the training batches, relative to the other tasks.")
    labels: list[str] | None = Field(None, description="classification: the label set (records with another label "
                                     "are quarantined); token_classification: the entity types (PER, LOC...) or the "
                                     "IOB2 tags in id order (integer tags index them), made the head's IOB2 tags; "
                                     "null: the labels found in the data.")
    scheme: Literal["auto", "IOB1", "IOB2", "BIOES"] = Field(
        "auto", description="token_classification: the tag scheme of the data; sentences that break it are "
        "quarantined (invalid_tag_sequence: an I- that follows nothing in IOB2...). auto: the scheme the task's "
        "sentences break least (BIOES when any tag is E-/S-).")
    min_per_class: int = Field(2, ge=1, description="classification: fewest training examples per class; fewer is "
                               "an error naming the class.")
    max_chars: int = Field(20_000, ge=1, description="Examples with more characters are quarantined (too_long) "
                           "before tokenizing.")
    splits: SplitParams = Field(default_factory=SplitParams, description="Split making.")
    augment: AugmentParams = Field(default_factory=AugmentParams, description="Augmentation (classification).")
    extractive_qa: ExtractiveQAParams | None = Field(None, description="extractive_qa: its options (null: the "
                                                     "defaults).")

    @model_validator(mode="after")
    def _consistent(self) -> TaskParams:
        if self.type != "classification":
            if any(d.kind == "folders" for d in self.data):
                raise ValueError("data kind folders gives labels: it serves classification tasks only")
            if self.augment.enabled:
                raise ValueError("augment applies to classification tasks only")
        if self.labels is not None and self.type not in LABELLED_TYPES:
            raise ValueError(f"labels apply to labelled task types, not {self.type}")
        if self.type not in DEFAULT_DATA_TYPES and any(d.kind == "default" for d in self.data):
            raise ValueError(f"data kind default derives {' and '.join(DEFAULT_DATA_TYPES)} tasks from the default "
                             f"corpus, not {self.type}: give files or a hub dataset")
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            raise ValueError("labels repeat a label")
        if self.scheme != "auto" and self.type != "token_classification":
            raise ValueError("scheme applies to token_classification tasks only")
        if self.extractive_qa is not None and self.type != "extractive_qa":
            raise ValueError(f"extractive_qa options apply to extractive_qa tasks, not {self.type}")
        return self



class Range(Section):
    """A search range: low and high (log scale for learning rates and decay)."""

    low: float = Field(description="Lowest value.")
    high: float = Field(description="Highest value.")

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.high < self.low:
            raise ValueError(f"high ({self.high}) is below low ({self.low})")
        return self


class SearchParams(Section):
    """Hyperparameter search with Optuna (TPE sampler, median pruning of poor trials); each trial is a nested MLflow
    run; the best trial's model is exported."""

    enabled: bool = Field(False, description="Search before exporting (off: one run with the settings above).")
    trials: int = Field(8, ge=1, description="Trials in all.")
    seed: int = Field(0, ge=0, description="Sampler seed.")
    lr: Range | None = Field(None, description="Learning-rate range (log scale).")
    weight_decay: Range | None = Field(None, description="Weight-decay range (log scale).")
    lora_rank: list[int] | None = Field(None, description="LoRA ranks to choose from (strategy lora).")
    freeze_layers: list[int] | None = Field(None, description="Frozen-layer counts to choose from.")

    @model_validator(mode="after")
    def _something(self) -> SearchParams:
        if self.enabled and not any((self.lr, self.weight_decay, self.lora_rank, self.freeze_layers)):
            raise ValueError("search is enabled but names no range: give lr, weight_decay, lora_rank or "
                             "freeze_layers")
        return self


DEFAULT_TASKS: tuple[TaskParams, ...] = (
    TaskParams(name="doc_section", type="classification", data=[DefaultData(kind="default")]),
    TaskParams(name="docstring", type="sft", data=[DefaultData(kind="default")]),
)
"""The offline default tasks, derived from the default corpus (see :class:`DefaultData`)."""


class FinetuneParams(FinetuneSettings, Section):
    """The finetune stage: task data from data/dedup and local/hub files, then the base model fine-tuned for every
    task at once. The training settings are :class:`tasks.training.config.FinetuneSettings`, the very class of the
    entry point's run config (defined once); this section adds the tasks, the search and the process launch."""

    checkpoint: CheckpointParams | None = Field(None, description="Start from this Hugging Face checkpoint (its "
                                                "weights and tokenizer) instead of models/base, lmforge's own "
                                                "pretrained model (null). Encoders (BERT family) take classification "
                                                "tasks; causal LMs (Llama, GPT-2, Qwen2, ...) take every task type.")
    tasks: list[TaskParams] = Field(default_factory=lambda: list(DEFAULT_TASKS), min_length=1,
                                    description="Tasks trained together (multi-task: one backbone, a head per "
                                    "classification task, the LM head for sft tasks).")
    search: SearchParams = Field(default_factory=SearchParams, description="Hyperparameter search.")
    deepspeed_config: str | None = Field(None, description="A DeepSpeed JSON merged over the generated one; "
                                         "relative to the repo.")
    launch: LaunchParams = Field(default_factory=LaunchParams, description="Process launch.")

    @model_validator(mode="after")
    def _tasks(self) -> FinetuneParams:
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"task names repeat: {names}")
        if self.search.lora_rank and self.strategy != "lora":
            raise ValueError("search.lora_rank needs strategy lora")
        for t in self.tasks:  # a window must hold more than doc_stride context tokens beside the question
            stride = (t.extractive_qa or ExtractiveQAParams()).doc_stride
            if t.type == "extractive_qa" and stride >= self.max_length // 2:
                raise ValueError(f"task {t.name!r}: extractive_qa.doc_stride {stride} must be below half of "
                                 f"max_length {self.max_length}")
        return self


    def data_deps(self, root: Path) -> list[str]:
        """The stage's data deps in dvc.yaml: its pipeline inputs, then the local data its tasks read (so new or
        edited task files make the stage stale; hub datasets are pinned by their revision instead), then the
        DeepSpeed JSON and hostfile when set.

        Raises:
            OutputOverlapError: task data reach into what finetune or a stage after it writes (upstream outputs,
                such as data/dedup, are fine).
        """
        written = Written.after(root, "finetune")
        local: set[str] = set()
        for task in self.tasks:
            for data in task.data:
                if isinstance(data, FilesData):
                    for pattern in data.paths:
                        local.update(glob_deps(pattern, root, written=written))
                elif isinstance(data, FoldersData):
                    written.check_tree(data.path, root / os.path.expanduser(data.path))
                    local.add(repo_dep(Path(data.path), root))
                elif isinstance(data, HFData):
                    if (path := hf_local(data.path, root)) is not None:
                        written.check_tree(data.path, path)
                        local.add(repo_dep(path, root))
                    elif data.path in HF_BUILDERS:
                        for pattern in data.data_files or []:
                            local.update(glob_deps(pattern, root, written=written))
        outer = sorted(d for d in local if not any(o != d and Path(d).is_relative_to(o) for o in local))
        # from a checkpoint: its directory replaces lmforge's own model, tokenizer and packed tokens
        inputs = [*PIPELINE_INPUTS] if self.checkpoint is None else \
            ["data/dedup", *self.checkpoint.data_deps(root, "finetune")]
        deps = [*inputs, *(d for d in outer if d not in inputs)]
        return deps + [f for f in launch_files(self.launch, self.deepspeed_config) if f not in deps]

    def status_notes(self, root: Path) -> list[str]:
        """Lines for `lmforge status`: the checkpoint and how each hub dataset of a task is pinned."""
        lines = [] if self.checkpoint is None else [self.checkpoint.status_note("finetune.checkpoint", root)]
        for task in self.tasks:
            for data in task.data:
                if isinstance(data, HFData) and hf_local(data.path, root) is None and data.path not in HF_BUILDERS:
                    lines.append(hub_pin(f"task '{task.name}'", data.path, data.revision))
        return lines


PIPELINE_INPUTS: tuple[str, ...] = ("data/dedup", "data/tokens", "models/tokenizer", "models/base")
"""What the stage reads from the stages before it (the default tasks, the shift report's baseline, the model)."""
