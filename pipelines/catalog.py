"""``lmforge models``: what is registered, for a person choosing a model: per version its aliases, what it is (the
model kind), what it was made from, its key metric with its interval, and what the gate said.

Everything shown is read back from the version's tags (``pipelines.registry`` writes them), so a version registered
by another checkout or by CI reads the same. Versions registered before the kind and base tags existed show ``-``.
"""

from __future__ import annotations

from pipelines.config.registry import RegistryParams
from pipelines.registry import BASE_TAG, KIND_TAG, MODEL_TAG, PROMOTION_TAG, version_interval, version_metric

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
