"""The MLflow model registry: log a model into the caller's run, register it, and move ``champion`` through a gate.

One registered model per fine-tuning task (``lmforge-doc_section``). A version carries tags that make it
self-describing: the DVC digests of the data and tokenizer it came from, the git commit, the pipeline run id, its
key metrics (and their confidence intervals), and why it was or was not promoted. Lineage needs nothing else: the
version's source run is the evaluate stage run, whose parent is the pipeline run, whose other children are the
stage runs with their input datasets and digests.

Only MLflow here (no flows, no tasks); no run is started: :func:`log_and_register` logs into the active run.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.config import TrackingParams
from pipelines.config.registry import GateRule, RegistryParams

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

SERVING_MODEL = Path(__file__).with_name("serving_model.py")
"""The pyfunc logged as "models from code" (see that module)."""
PROMOTION_TAG, METRIC_TAG, DIGEST_TAG = "lmforge.promotion", "lmforge.metric.", "lmforge.digest."
TASK_TAG, KIND_TAG, PIPELINE_TAG = "lmforge.task", "lmforge.kind", "lmforge.pipeline_run_id"
MODEL_TAG, BASE_TAG = "lmforge.model", "lmforge.base"
"""What a version is (``finetuned``, ``student``, ``magnitude``, ``structured``, ``int8``: the task kind is
``lmforge.kind``) and what it was made from (``models/base``, ``finetuned v3``)."""
MODEL_KINDS = {"finetuned": "fine-tuned", "student": "student", "magnitude": "magnitude-pruned student",
               "structured": "structured-pruned student", "int8": "int8-quantized student"}
"""How each model kind reads in a version's description."""
COMMIT_TAG = "mlflow.source.git.commit"
MODEL_DIGEST_TAG = "lmforge.model_sha256"
"""The sha256 of the model directory's files (names, sizes, bytes): a re-run that rebuilt the same bytes is not a new
version."""


log = logging.getLogger("pipelines.registry")


class RegistryError(Exception):
    """The registry cannot do what was asked (no store, unknown model or version, no run to log into). Exit code 2."""

    exit_code = 2


@dataclass(frozen=True)
class Decision:
    """What the gate (or a manual promote) did to the alias."""

    model: str
    version: str
    promoted: bool
    reason: str
    champion_before: str | None
    champion_after: str | None


def model_name(params: RegistryParams, task: str) -> str:
    """The registered model of ``task``: prefix + task name."""
    return f"{params.model_prefix}{task}"


def _requirements() -> list[str]:
    # given, not inferred: MLflow's inference loads the model in a subprocess to watch its imports (seconds)
    return [f"{dist}=={md.version(dist)}" for dist in ("mlflow", "torch", "transformers", "tokenizers", "pandas",
                                                       "safetensors")]


def _signature(kind: str) -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    if kind == "extractive_qa":  # the answer's character offsets and score are null for "no answer"
        return ModelSignature(Schema([ColSpec("string", "question"), ColSpec("string", "context")]),
                              Schema([ColSpec("string", "answer"), ColSpec("long", "start", required=False),
                                      ColSpec("long", "end", required=False),
                                      ColSpec("double", "score", required=False)]))
    inputs = Schema([ColSpec("string", "text")])
    if kind == "chat":  # a conversation in: [{"role", "content"}] turns, the next assistant turn out
        from mlflow.types.schema import Array, Object, Property

        turn = Object([Property("role", "string"), Property("content", "string")])
        inputs = Schema([ColSpec(Array(turn), "messages")])
    if kind == "classification":
        return ModelSignature(inputs, Schema([ColSpec("string", "label"), ColSpec("double", "score")]))
    if kind == "token_classification":  # each text's entities as character spans
        from mlflow.types.schema import Array, Object, Property

        entity = Object([Property("entity", "string"), Property("start", "long"), Property("end", "long"),
                         Property("text", "string"), Property("score", "double")])
        return ModelSignature(inputs, Schema([ColSpec(Array(entity), "entities")]))
    return ModelSignature(inputs, Schema([ColSpec("string", "text")]),
                          ParamSchema([ParamSpec("max_new_tokens", "long", 32)]))


def _example(kind: str, text: str) -> Any:
    import pandas as pd

    if kind == "extractive_qa":  # the example text is the context a question is asked about
        return pd.DataFrame({"question": ["what is it about?"], "context": [text]})
    frame = pd.DataFrame({"messages": [[{"role": "user", "content": text}]]} if kind == "chat" else {"text": [text]})
    # MLflow runs the example through the model while logging: a causal LM generates 2 tokens, not the default 32
    return frame if kind in ("classification", "token_classification") else (frame, {"max_new_tokens": 2})


def log_and_register(model_dir: Path, *, task: str, kind: str, params: RegistryParams, metrics: Mapping[str, float],
                     intervals: Mapping[str, tuple[float, float]] | None = None, digests: Mapping[str, str],
                     example: str = "the cat sat on the mat.", model: str = "", base: str = "") -> str:
    """Log ``model_dir`` (Hugging Face format, tokenizer inside) as a pyfunc in the active run and register it as a
    new version of ``lmforge-TASK``; returns the version.

    Args:
        model_dir: the model directory (``models/finetuned/doc_section``).
        task: the task name; names the registered model.
        kind: the task kind (``classification``, ``sft``...): picks the signature and, later, the gate rule.
        params: the ``registry`` section.
        metrics: key metrics as flat keys (``test.macro_f1``); tagged on the version, the gate reads them there.
        intervals: ``{metric: (low, high)}`` confidence intervals of those metrics, if any.
        digests: ``{path: DVC md5}`` of the data and tokenizer the model came from.
        example: the input example logged with the model (MLflow runs it once through the model as a check).
        model: what the model is (``finetuned``, ``student``, a variant's name); tagged and described.
        base: what it was made from (``models/base``, ``finetuned v3``); tagged and described.

    Raises:
        RegistryError: no active run to log into.
    """
    import mlflow

    run = mlflow.active_run()
    if run is None:
        raise RegistryError("no active MLflow run to log the model into: call inside tracking.stage_run")
    name = model_name(params, task)
    info = mlflow.pyfunc.log_model(
        name=task, python_model=str(SERVING_MODEL), artifacts={"model": str(model_dir)},
        signature=_signature(kind), input_example=_example(kind, example), pip_requirements=_requirements(),
        registered_model_name=name, await_registration_for=0)
    version = str(info.registered_model_version)
    tags = {TASK_TAG: task, KIND_TAG: kind, MODEL_DIGEST_TAG: model_digest(model_dir), MODEL_TAG: model, BASE_TAG: base,
            PIPELINE_TAG: run.data.tags.get("mlflow.parentRunId", ""),
            COMMIT_TAG: run.data.tags.get(COMMIT_TAG, ""),
            **{f"{DIGEST_TAG}{path}": md5 for path, md5 in digests.items()},
            **{f"{METRIC_TAG}{key}": repr(float(value)) for key, value in metrics.items()},
            **{f"{METRIC_TAG}{key}.ci": f"{float(lo)!r} {float(hi)!r}" for key, (lo, hi) in (intervals or {}).items()}}
    client = mlflow.MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    client.update_model_version(name, version, description=describe(task=task, kind=kind, model=model, base=base,
                                                                    metrics=metrics, intervals=intervals or {}))
    return version


def describe(*, task: str, kind: str, model: str, base: str, metrics: Mapping[str, float],
             intervals: Mapping[str, tuple[float, float]]) -> str:
    """A version's description in the registry (what the MLflow UI shows first): what the model is, for which task,
    made from what, and its key metrics with their intervals."""
    what = MODEL_KINDS.get(model, model or "model")
    numbers = "; ".join(f"{k} {float(v):.4g}" + (f" [{intervals[k][0]:.4g}, {intervals[k][1]:.4g}]" if k in intervals
                                                 else "") for k, v in metrics.items())
    return f"{what} model of task {task} ({kind})" + (f", from {base}" if base else "") + (
        f". {numbers}" if numbers else "")


def model_digest(model_dir: Path) -> str:
    """sha256 over every file of ``model_dir`` in path order: its relative name, size and bytes."""
    h = hashlib.sha256()
    for path in sorted(p for p in Path(model_dir).rglob("*") if p.is_file()):
        h.update(f"{path.relative_to(model_dir).as_posix()}\0{path.stat().st_size}\0".encode())
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def registered_copy(name: str, model_dir: Path) -> str | None:
    """The newest version of ``name`` whose model files are byte for byte those of ``model_dir`` (a forced re-run
    or a re-evaluation rebuilt the same model), or None."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        versions = MlflowClient().search_model_versions(f"name = '{name}'")
    except MlflowException:
        return None
    wanted = model_digest(model_dir)
    same = [int(mv.version) for mv in versions if mv.tags.get(MODEL_DIGEST_TAG) == wanted]
    return str(max(same)) if same else None


def unchanged(name: str, version: str, *, params: RegistryParams) -> Decision:
    """The decision for a model that is already registered as ``version``: nothing moves, the version's tags (its
    metrics, what the gate said when it was registered) stay."""
    from mlflow import MlflowClient

    champ = _champion(MlflowClient(), name, params.alias)
    before = str(champ.version) if champ else None
    where = f", the {params.alias}" if before == version else ""
    return Decision(name, version, False, f"the same model bytes as v{version}{where}: not registered again", before,
                    before)


@dataclass(frozen=True)
class Candidate:
    """A model offered to the registry: its directory, its task kind and the metrics (``test.METRIC``) the gate
    reads, with their confidence intervals."""

    model_dir: Path
    kind: str
    metrics: Mapping[str, float]
    intervals: Mapping[str, tuple[float, float]]
    base: str = ""
    """What it was made from: a path or source (``models/base``), or the name of another candidate of the same task
    registered before it (``finetuned``), which becomes that one's version (``finetuned v3``)."""


def register(name: str, candidate: Candidate, *, task: str, params: RegistryParams, digests: Mapping[str, str],
             model: str = "", base: str = "") -> Decision:
    """:func:`log_and_register` then :func:`gate`; a model whose bytes a version of ``name`` already holds (a re-run
    rebuilt it) is not registered again and moves nothing (:func:`unchanged`)."""
    if (same := registered_copy(name, candidate.model_dir)) is not None:
        return unchanged(name, same, params=params)
    version = log_and_register(candidate.model_dir, task=task, kind=candidate.kind, params=params,
                               metrics=candidate.metrics, intervals=candidate.intervals, digests=digests,
                               model=model, base=base)
    return gate(name, version, params=params)


def register_all(candidates: Mapping[tuple[str, str], Candidate], *, params: RegistryParams,
                 digests: Mapping[str, str]) -> tuple[dict[tuple[str, str], Decision], dict[str, float]]:
    """Register and gate every ``(model, task)`` in order (a task's first version becomes its champion).

    Args:
        candidates: by ``(model, task)``, e.g. ``("student", "topic")``.
        params: the ``registry`` section.
        digests: ``{path: DVC md5}`` of the data and models the candidates came from, tagged on each version.

    Returns:
        the decisions, and their flat metrics: ``MODEL.TASK.promoted``, ``MODEL.TASK.registry_version``,
        ``TASK.champion_version`` and ``TASK.champion.METRIC`` (the gate metric of the champion after the run, maybe
        an older version).
    """
    from mlflow import MlflowClient

    decisions: dict[tuple[str, str], Decision] = {}
    stats: dict[str, float] = {}
    for (model, task), candidate in candidates.items():
        made_from = decisions.get((candidate.base, task))
        base = f"{candidate.base} v{made_from.version}" if made_from else candidate.base
        d = decisions[model, task] = register(model_name(params, task), candidate, task=task, params=params,
                                              digests=digests, model=model, base=base)
        log.info("%s v%s (%s): %s", d.model, d.version, model, d.reason)
        stats |= {f"{model}.{task}.promoted": int(d.promoted), f"{model}.{task}.registry_version": int(d.version),
                  f"{task}.champion_version": int(d.champion_after or 0)}
    last = {task: (decisions[model, task], c.kind) for (model, task), c in candidates.items()}  # after the task's run
    for task, (d, kind) in last.items():
        if (rule := params.gates.get(kind)) is not None and d.champion_after is not None:
            raw = MlflowClient().get_model_version(d.model, d.champion_after).tags.get(f"{METRIC_TAG}{rule.metric}")
            if raw is not None:
                stats[f"{task}.champion.{rule.metric}"] = round(float(raw), 6)
    return decisions, stats


# ------------------------------------------------------------------------------------------------------------ gate
def _champion(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _version(client: MlflowClient, name: str, version: str) -> ModelVersion:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        known = ", ".join(m.name for m in client.search_registered_models()) or "none yet"
        raise RegistryError(f"no registered model {name!r} (registered: {known}); see `lmforge models`") from None
    try:
        return client.get_model_version(name, version)
    except MlflowException:
        raise RegistryError(f"{name} has no version {version!r}; see `lmforge models`") from None


def version_metric(mv: ModelVersion, metric: str) -> float | None:
    """The value of ``metric`` tagged on a version, or None."""
    raw = mv.tags.get(f"{METRIC_TAG}{metric}")
    return float(raw) if raw is not None else None


def version_interval(mv: ModelVersion, metric: str) -> tuple[float, float] | None:
    """The confidence interval of ``metric`` tagged on a version, or None."""
    raw = mv.tags.get(f"{METRIC_TAG}{metric}.ci")
    return (float(raw.split()[0]), float(raw.split()[1])) if raw else None


def judge(rule: GateRule, candidate: float | None, interval: tuple[float, float] | None,
          champion: float | None, champion_version: str) -> tuple[bool, str]:
    """Whether a candidate beats the champion under ``rule``; returns (verdict, reason)."""
    m = rule.metric
    if candidate is None:
        return False, f"the candidate has no {m} (log it with the model)"
    if champion is None:
        return False, f"champion v{champion_version} has no {m}: compare by hand, then `lmforge promote`"
    higher = rule.direction == "higher"
    bar = champion + rule.margin if higher else champion - rule.margin
    cmp = ">" if higher else "<"
    if not (candidate > bar if higher else candidate < bar):
        return False, (f"{m} {candidate:.4g} is not {cmp} {bar:.4g} (champion v{champion_version} {champion:.4g} "
                       f"{'+' if higher else '-'} margin {rule.margin:g})")
    if rule.require_ci:
        if interval is None:
            return False, f"{m} {candidate:.4g} beats {bar:.4g} but no confidence interval was logged (require_ci)"
        bound = interval[0] if higher else interval[1]
        if not (bound > bar if higher else bound < bar):
            return False, (f"{m} {candidate:.4g} beats {bar:.4g} but its confidence interval [{interval[0]:.4g}, "
                           f"{interval[1]:.4g}] does not (not significantly better than champion v{champion_version})")
    return True, (f"{m} {candidate:.4g} {cmp} {bar:.4g} (champion v{champion_version} {champion:.4g} "
                  f"{'+' if higher else '-'} margin {rule.margin:g})" + (", confidence interval too" if
                                                                         rule.require_ci else ""))


def gate(name: str, version: str, *, params: RegistryParams) -> Decision:
    """Move the alias to ``name`` ``version`` if it beats the champion on its kind's metric (see
    :class:`~pipelines.config.registry.GateRule`); the first version is promoted. Either way the version gets a
    ``lmforge.promotion`` tag saying what happened and why.

    Raises:
        RegistryError: unknown model or version, or no gate rule for the version's task kind.
    """
    from mlflow import MlflowClient

    client = MlflowClient()
    mv = _version(client, name, version)
    kind = mv.tags.get(KIND_TAG, "")
    if kind not in params.gates:
        raise RegistryError(f"no gate for task kind {kind!r} of {name} v{version}: add registry.gates.{kind} to "
                            f"params.yaml (gates: {', '.join(sorted(params.gates))})")
    rule, champ = params.gates[kind], _champion(client, name, params.alias)
    before, version = (str(champ.version) if champ else None), str(mv.version)
    if champ is None:
        ok, reason = True, f"first version: no {params.alias} yet"
    elif before == version:
        ok, reason = False, f"already {params.alias}"
    else:
        ok, reason = judge(rule, version_metric(mv, rule.metric), version_interval(mv, rule.metric),
                           version_metric(champ, rule.metric), str(champ.version))
    if ok:
        client.set_registered_model_alias(name, params.alias, version)
    client.set_model_version_tag(name, version, PROMOTION_TAG, f"{'promoted' if ok else 'refused'}: {reason}")
    return Decision(name, version, ok, reason, before, version if ok else before)


def promote(name: str, version: str, *, reason: str, params: RegistryParams) -> Decision:
    """Move the alias to ``name`` ``version`` by hand (also a rollback: promote an older version), tagging why.

    Raises:
        RegistryError: unknown model or version, or an empty reason.
    """
    from mlflow import MlflowClient

    if not reason.strip():
        raise RegistryError("a manual promotion needs a reason: --reason TEXT")
    client = MlflowClient()
    mv = _version(client, name, version)
    champ, version = _champion(client, name, params.alias), str(mv.version)
    before = str(champ.version) if champ else None
    client.set_registered_model_alias(name, params.alias, version)
    note = f"manual: {reason.strip()} ({params.alias} was {f'v{before}' if before else 'none'})"
    client.set_model_version_tag(name, version, PROMOTION_TAG, note)
    return Decision(name, version, True, note, before, version)


# ---------------------------------------------------------------------------------------------------- the store
def open_store(tracking: TrackingParams, root: Path) -> None:
    """Point MLflow's tracking and registry at the store in params, without creating one.

    Raises:
        RegistryError: the embedded sqlite store does not exist yet, or the server does not answer.
    """
    import mlflow

    from pipelines.tracking import resolve_uri

    uri = resolve_uri(tracking.uri, root)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise RegistryError(f"no MLflow store at {uri.removeprefix('sqlite:///')}: run the pipeline first "
                            "(`lmforge run`), or set tracking.uri in params.yaml")
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        mlflow.MlflowClient().search_registered_models(max_results=1)
    except Exception as err:  # a server that is down fails with requests' or MLflow's errors, after retries
        raise RegistryError(f"the MLflow store at {uri} does not answer ({type(err).__name__}): start it, or fix "
                            "tracking.uri in params.yaml") from None
