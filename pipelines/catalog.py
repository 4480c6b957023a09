"""What is registered, for a person choosing a model. ``lmforge models``: per version its aliases, what it is (the
model kind), what it was made from, its key metric with its interval, and what the gate said. The evaluate report's
decision: per task, the champion after the gate, the one before it, and what the gate did with this run's models.

Everything shown is read back from the version's tags (``pipelines.registry`` writes them), so a version registered
by another checkout or by CI reads the same. Versions registered before the kind and base tags existed show ``-``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipelines.config.registry import RegistryParams
from pipelines.registry import (
    BASE_TAG,
    KIND_TAG,
    METRIC_TAG,
    MODEL_TAG,
    PIPELINE_TAG,
    PROMOTION_TAG,
    Decision,
    version_interval,
    version_metric,
)

HEADER = ("MODEL", "VERSION", "ALIASES", "KIND", "BASE", "METRIC", "PROMOTION")


def _kind(model: str) -> str:
    """``fine-tuned``, ``student``, ``magnitude``, ``structured``, ``int8`` (a variant of the student: BASE says which
    version); ``-`` for a version registered before the tag existed."""
    return "fine-tuned" if model == "finetuned" else model or "-"


def models_table(params: RegistryParams) -> str:
    """Every registered model's versions, newest first, one line each (columns :data:`HEADER`, the promotion last
    and unpadded: it is the longest)."""
    from mlflow import MlflowClient

    client = MlflowClient()
    rows = [HEADER]
    for model in sorted(client.search_registered_models(), key=lambda m: m.name):
        versions = client.search_model_versions(f"name = '{model.name}'")
        for mv in sorted(versions, key=lambda v: int(v.version), reverse=True):
            rule = params.gates.get(mv.tags.get(KIND_TAG, ""))
            value = version_metric(mv, rule.metric) if rule else None
            metric = f"{rule.metric} {value:.4g}" if rule and value is not None else "-"
            ci = version_interval(mv, rule.metric) if rule else None
            metric += f" [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else ""
            # the model's alias map, not mv.aliases: versions found by a search come without their aliases
            aliases = ",".join(sorted(a for a, v in model.aliases.items() if str(v) == str(mv.version))) or "-"
            rows.append((model.name, str(mv.version), aliases, _kind(mv.tags.get(MODEL_TAG, "")),
                         mv.tags.get(BASE_TAG) or "-", metric, mv.tags.get(PROMOTION_TAG, "-")))
    if len(rows) == 1:
        return "no registered models yet: the evaluate stage registers them (`lmforge run`)"
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1] for r in rows)


def _facts(client: Any, name: str, version: str | None, this_run: set[str]) -> dict[str, Any] | None:
    """What a version is and scored, as plain data for the report (None for no version)."""
    if version is None:
        return None
    mv = client.get_model_version(name, version)
    metrics = {k.removeprefix(METRIC_TAG): float(v) for k, v in mv.tags.items()
               if k.startswith(METRIC_TAG) and not k.endswith(".ci")}
    return {"version": str(mv.version), "model": mv.tags.get(MODEL_TAG, ""), "base": mv.tags.get(BASE_TAG, ""),
            "run_id": mv.run_id or "", "pipeline_run_id": mv.tags.get(PIPELINE_TAG, ""), "metrics": metrics,
            "intervals": {m: list(ci) for m in metrics if (ci := version_interval(mv, m))},
            "promotion": mv.tags.get(PROMOTION_TAG, ""), "this_run": str(mv.version) in this_run}


def decision_facts(decisions: Mapping[tuple[str, str], Decision], params: RegistryParams,
                   kinds: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Per task, what the registry holds after the evaluate stage's gate, as plain data for the report: the gate
    rule, the champion and the champion before this run (each with its kind, base, source run and tagged metrics
    with intervals), and what the gate did with each of this run's models.

    Args:
        decisions: :func:`pipelines.registry.register_all`'s, by ``(model, task)`` in registration order.
        params: the ``registry`` section.
        kinds: the task kind of each task (``classification``, ``sft``).
    """
    from mlflow import MlflowClient

    client = MlflowClient()
    out: dict[str, dict[str, Any]] = {}
    for (model, task), d in decisions.items():
        entry = out.setdefault(task, {"task_kind": kinds.get(task, ""), "registered_model": d.model,
                                      "gate": params.gates[kinds[task]].model_dump() if kinds.get(task) in
                                      params.gates else None, "candidates": [], "before": d.champion_before})
        entry["candidates"].append({"model": model, "version": d.version, "promoted": d.promoted,
                                    "reason": d.reason})
        entry["after"] = d.champion_after
    for entry in out.values():
        mine = {c["version"] for c in entry["candidates"]}  # a re-run's same bytes are its earlier version
        name, before, after = entry["registered_model"], entry.pop("before"), entry.pop("after")
        entry["champion"] = _facts(client, name, after, mine)
        entry["previous"] = _facts(client, name, before, mine) if before != after else None
    return out
