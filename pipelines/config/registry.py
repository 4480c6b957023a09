"""Params of the model registry: which metric decides a promotion to ``champion`` per task kind, by what margin,
whether the candidate's confidence interval must support the gain, and how registered models are named."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pipelines.config.base import Section


class GateRule(Section):
    """When a candidate of one task kind replaces the champion."""

    metric: str = Field(min_length=1, description="Evaluation metric that decides, as a flat key of the evaluate "
                        "stage's metrics (``test.macro_f1``).")
    direction: Literal["higher", "lower"] = Field(
        "higher", description="Which way is better: ``higher`` (accuracy, F1) or ``lower`` (perplexity, loss).")
    margin: float = Field(0.0, ge=0, description="Least gain over the champion, in the metric's own units: a "
                          "candidate must be better than champion + margin (or - margin when lower is better).")
    require_ci: bool = Field(False, description="Also require the candidate's confidence interval to clear the bar: "
                             "its lower bound above champion + margin (its upper bound below champion - margin when "
                             "lower is better). A candidate without an interval is then refused.")


DEFAULT_GATES: dict[str, GateRule] = {
    "classification": GateRule(metric="test.macro_f1", direction="higher", margin=0.01),
    "sft": GateRule(metric="test.perplexity", direction="lower", margin=0.5),
    "chat": GateRule(metric="test.perplexity", direction="lower", margin=0.5),
    "token_classification": GateRule(metric="test.entity_f1", direction="higher", margin=0.01),
    "extractive_qa": GateRule(metric="test.f1", direction="higher", margin=0.01),
}
"""The gate of each task type that params.yaml does not name (one per registered task type: a test checks)."""


class RegistryParams(Section):
    """The MLflow model registry: one registered model per fine-tuning task, a ``champion`` alias moved by a gate."""

    model_prefix: str = Field(
        "lmforge-", pattern=r"^[A-Za-z0-9_.\-]*$",
        description="Registered model name = prefix + task name (``lmforge-doc_section``).")
    gates: dict[str, GateRule] = Field(
        default_factory=dict,
        description="Gate per task kind (``classification``, ``sft``, ``student``...): the metric, its direction, "
        "the margin and whether the confidence interval must support the gain. A task type not given here gets its "
        "default rule (classification: test.macro_f1 higher by 0.01; sft: test.perplexity lower by 0.5...).")
    alias: str = Field("champion", pattern=r"^[A-Za-z][A-Za-z0-9_\-]*$",
                       description="The alias the gate moves (what serving and rollback refer to).")

    @model_validator(mode="after")
    def _every_type_gated(self) -> RegistryParams:
        for name, rule in DEFAULT_GATES.items():
            self.gates.setdefault(name, rule.model_copy())
        return self
