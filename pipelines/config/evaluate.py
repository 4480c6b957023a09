"""Params of the evaluate stage: how much of each held-out set is scored, the contamination threshold, the
lm-evaluation-harness run, and whether models go to the registry (whose gate is the ``registry`` section)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from pipelines.config.base import Section

__all__ = ["EvaluateParams", "INPUTS", "REPORTED"]

INPUTS: tuple[str, ...] = ("data/dedup", "data/finetune", "models/base", "models/finetuned", "models/student",
                           "models/tokenizer", "metrics/distill.json")
"""What the stage scores, from the stages before it; it does not run without them. metrics/distill.json holds the
costs (latency, size) the stage reports beside the scores."""
REPORTED: tuple[str, ...] = ("metrics/clean.json", "metrics/finetune.json",
                             "reports/plots/finetune/learning_curves.png")
"""What the report and the model cards show from the stages before it (the funnel, the train/test shift, the
learning curves); left out of them when absent (a stage run on its own, on hand-made inputs)."""


class LMEvalParams(Section):
    """Language-model quality (perplexity, bits per byte) of the base and every sft model on data/dedup's test split."""

    max_docs: int | None = Field(None, ge=1, description="Test documents scored, the first ones (null: the whole "
                                 "split; metrics/evaluate.json says how many as MODEL.lm.documents).")
    max_train_docs: int | None = Field(None, ge=1, description="Training documents the unigram baseline counts "
                                       "(null: all of data/dedup/train).")
    batch_size: int = Field(8, ge=1, description="Windows per forward pass.")


class ClassificationEvalParams(Section):
    """Quality of every task model (finetuned, student, variants) on its task's test split: the intervals of every
    task type, the batch size of the types with a head (classification, token_classification, extractive_qa) and the
    classification baseline."""

    bootstrap: int = Field(1000, ge=0, description="Bootstrap resamples of the confidence intervals of every task "
                           "type (0: none).")
    level: float = Field(0.95, gt=0, lt=1, description="Coverage of the confidence intervals.")
    batch_size: int = Field(32, ge=1, description="Examples per forward pass (classification, token_classification, "
                            "extractive_qa).")
    tfidf_c: list[float] = Field([1.0, 10.0], min_length=1, description="C values tried by the TF-IDF + logistic "
                                 "regression baseline (the one with the best val macro-F1 is kept; why these: "
                                 "docs/measurements.md).")


class GenerationEvalParams(Section):
    """Generation quality (ROUGE, BLEU, chrF) of the sft models: greedy completions of the first test prompts."""

    max_examples: int = Field(16, ge=1, description="Test prompts completed per model (the first ones).")
    max_new_tokens: int = Field(24, ge=1, description="Longest completion, in tokens.")
    sft_batch_size: int = Field(8, ge=1, description="Examples per forward pass of the sft test perplexity.")


class ContaminationParams(Section):
    """Word n-gram overlap of every evaluation set with the training data (dedup train + finetune train splits)."""

    n: int = Field(13, ge=2, description="The n-gram length (13: the GPT-3 paper's and lm-eval's decontamination).")
    max_share: float = Field(0.35, ge=0, le=1, description="Largest share of an evaluation set's documents allowed "
                             "to share an n-gram with training data; above it the stage fails (exit 2) naming the "
                             "ids (the default corpus's figures: docs/measurements.md).")


class HarnessParams(Section):
    """lm-evaluation-harness on a local rolling-perplexity task built from data/dedup's test split, base model."""

    enabled: bool = Field(True, description="Run the harness.")
    limit: int | None = Field(None, ge=1, description="Documents the harness scores, the first ones (null: the whole "
                              "split, as the stage's own figures; harness.TASK.documents says how many).")
    batch_size: int = Field(8, ge=1, description="Requests per forward pass.")


class EvaluateParams(Section):
    """The evaluate stage: every model (base, finetuned, student, compressed variants) scored on held-out data beside
    baselines, contamination checked, an HTML report and model cards written, task models registered in MLflow and
    gated to the ``champion`` alias."""

    lm: LMEvalParams = Field(default_factory=LMEvalParams, description="Language-model quality.")
    classification: ClassificationEvalParams = Field(default_factory=ClassificationEvalParams,
                                                     description="Task-model quality: intervals of every type, "
                                                     "batches of the types with a head, the TF-IDF baseline.")
    generation: GenerationEvalParams = Field(default_factory=GenerationEvalParams,
                                             description="Generation quality of sft models.")
    contamination: ContaminationParams = Field(default_factory=ContaminationParams,
                                               description="Train/test contamination check.")
    harness: HarnessParams = Field(default_factory=HarnessParams, description="lm-evaluation-harness run.")
    register_models: bool = Field(True, description="Log every task model to the MLflow registry and run the gate.")
    threads: int = Field(2, ge=1, description="torch CPU threads.")
    seed: int = Field(0, description="Seeds the bootstrap and the baselines.")
    mlflow_ui_url: str = Field("http://127.0.0.1:5000", description="Base URL of the MLflow UI linked from the report "
                               "when the tracking URI is not itself an http(s) server (`mlflow ui`'s default).")

    def data_deps(self, root: Path) -> list[str]:
        """The stage's data deps in dvc.yaml: every file it reads from the stages before it."""
        return [*INPUTS, *REPORTED]

