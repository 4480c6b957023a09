"""``lmforge predict``: answer texts with a registered model (the champion by default), from the command line.

The model is loaded the way any other program loads it, ``mlflow.pyfunc.load_model("models:/NAME@ALIAS")``, from the
MLflow store in params.yaml (``tracking.uri``), so what this prints is what a served model answers. A pyfunc wants a
DataFrame with a ``text`` column; this module builds it. Only MLflow and pandas here (no flows, no tasks).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pipelines.config.registry import RegistryParams
from pipelines.registry import KIND_TAG, RegistryError, model_name


@dataclass(frozen=True)
class Answers:
    """What a registered model answered: which model and version it was, and one row per text."""

    model: str
    version: str
    task_kind: str
    alias: str | None
    rows: list[dict[str, Any]]


def _resolve(name: str, version: str | None, alias: str) -> tuple[str, str]:
    """The ``models:/`` URI and the version number of ``name`` at ``version`` (or at ``alias``)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    try:
        client.get_registered_model(name)
    except MlflowException:
        known = ", ".join(sorted(m.name for m in client.search_registered_models())) or "none yet"
        raise RegistryError(f"no registered model {name!r} (registered: {known}): the evaluate stage registers one per "
                            "fine-tuning task (`lmforge run`); see `lmforge models`") from None
    try:
        mv = client.get_model_version(name, version) if version else client.get_model_version_by_alias(name, alias)
    except MlflowException:
        what = f"no version {version!r}" if version else f"no {alias!r} alias"
        raise RegistryError(f"{name} has {what}; see `lmforge models`") from None
    return f"models:/{name}/{mv.version}", str(mv.version)


def predict(task: str, texts: list[str], *, params: RegistryParams, version: str | None = None,
            max_new_tokens: int | None = None) -> Answers:
    """Load ``lmforge-TASK`` (the alias in params, or ``version``) and answer ``texts``.

    Args:
        task: the fine-tuning task, or a registered model's full name.
        texts: one input text each.
        params: the ``registry`` section (model name prefix, alias).
        version: a version number instead of the alias.
        max_new_tokens: for a generating (sft) model, how many tokens to generate (the model's default: 32).

    Raises:
        RegistryError: no such registered model, version or alias.
    """
    import mlflow
    import pandas as pd

    name = task if task.startswith(params.model_prefix) and params.model_prefix else model_name(params, task)
    uri, number = _resolve(name, version, params.alias)
    kind = mlflow.MlflowClient().get_model_version(name, number).tags.get(KIND_TAG, "")
    model = mlflow.pyfunc.load_model(uri)
    extra = {"max_new_tokens": max_new_tokens} if max_new_tokens is not None and kind != "classification" else None
    frame = model.predict(pd.DataFrame({"text": texts}), params=extra)
    rows = [{str(k): v for k, v in row.items()} for row in frame.to_dict(orient="records")]
    return Answers(name, number, kind, None if version else params.alias, rows)


def render(answers: Answers, texts: list[str], *, as_json: bool) -> str:
    """The console form: a header naming the model, then per text its label and score (or generated text); or one
    JSON object per text (``text`` and the model's columns)."""
    if as_json:
        return "\n".join(json.dumps({"text": t, **row}, ensure_ascii=False) for t, row in zip(texts, answers.rows,
                                                                                              strict=True))
    lines = [f"{answers.model} v{answers.version}" + (f" ({answers.alias})" if answers.alias else "")]
    for text, row in zip(texts, answers.rows, strict=True):
        shown = text if len(text) <= 60 else text[:57] + "..."
        if "label" in row:
            lines.append(f"{row['label']}\t{float(row['score']):.3f}\t{shown}")
        else:
            lines.append(f"{shown}\n  -> {row.get('text', '')!r}")
    return "\n".join(lines)
