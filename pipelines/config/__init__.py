"""Typed, validated params: the schema of ``params.yaml``, the single source of configuration.

Every section is a pydantic model with a description per field; unknown keys are rejected. A bad file is
one :class:`ParamsError` whose message names every offending key path (``collect.sources[0].max_docs``),
raised before any stage does work. Each stage's section lives in its own module, ``pipelines/config/STAGE.py``,
which is a DVC dep of that stage: the defaults it fills in shape the stage's output. :class:`Params` declares one
typed field per stage (``params.dedup`` is a :class:`~pipelines.config.dedup.DedupParams`); the stages themselves
are those of ``dvc.yaml``, the one list of them, and :func:`load_params` refuses a checkout whose dvc.yaml names a
stage that :class:`Params` has no section for. This module also knows where the repository is and sets the process
environment every lmforge process shares (telemetry off, Prefect home and API under the repo).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from pipelines.config.base import Section
from pipelines.config.clean import CleanParams
from pipelines.config.collect import CollectParams
from pipelines.config.dedup import DedupParams
from pipelines.config.distill import DistillParams
from pipelines.config.evaluate import EvaluateParams
from pipelines.config.finetune import FinetuneParams
from pipelines.config.pretrain import PretrainParams
from pipelines.config.registry import RegistryParams
from pipelines.config.tokenizer import TokenizerParams
from pipelines.stage_graph import stage_names

PARAMS_FILE = "params.yaml"
CODE_ROOT = Path(__file__).resolve().parents[2]
"""The checkout this code lives in (flows, tasks and pipelines run only from their repository)."""

# Environment shared by every lmforge process (CLI, stage subprocesses, dvc repro, tests). Telemetry of every
# tool is off so nothing reaches for the network; the same switches also live in each tool's own config file
# (prefect.toml, .dvc/config) for the tools' own command lines.
TELEMETRY_OFF: dict[str, str] = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
    "DISABLE_MLFLOW_INTEGRATION": "TRUE",
}


class ParamsError(Exception):
    """params.yaml is missing, unreadable or does not match the schema. Exit code 2."""

    exit_code = 2


class TrackingParams(Section):
    """Where MLflow records runs and models."""

    uri: str = Field(
        "sqlite:///mlruns.db",
        description="MLflow tracking URI. A relative sqlite path is under the repository; "
        "use http://host:5000 for a tracking server.",
    )
    artifact_root: str = Field(
        "mlartifacts", description="Artifact location of a new experiment (relative paths are under the repo)."
    )
    experiment: str = Field("lmforge", min_length=1, description="MLflow experiment name.")


class OrchestrationParams(Section):
    """Where Prefect runs flows."""

    prefect_api_url: str | None = Field(
        None, description="Prefect API URL (http://host:4200/api); null starts an ephemeral API in-process."
    )


class RetryParams(Section):
    """Retries with exponential back-off for calls that can fail for a moment (a hub download, a tracking or Prefect
    server): network errors, timeouts, HTTP 429 and 5xx. A 404 or a bad setting fails at once."""

    attempts: int = Field(3, ge=1, le=10, description="Tries in all, the first included (1: no retry).")
    backoff_seconds: float = Field(1.0, ge=0, le=600, description="Wait before the first retry; doubled for each "
                                   "further one (with a little jitter).")
    max_backoff_seconds: float = Field(30.0, ge=0, le=3600, description="Longest wait between two tries.")


class NotifyParams(Section):
    """What a finished pipeline run reports beyond its log: a failure always logs one line naming the stage, the error,
    the MLflow run and the log file; a webhook receives the same as JSON."""

    webhook_url: str | None = Field(
        None, pattern=r"^https?://\S+$",
        description="URL that receives a JSON POST when a pipeline run fails (status, failed stage, error, MLflow run "
        "id, git commit, host, start and end); null: the log line only. A webhook that is down or slow is a warning, "
        "never the run's error.")
    timeout_seconds: float = Field(10.0, gt=0, le=300, description="Longest wait for the webhook to answer.")
    on_success: bool = Field(False, description="Also POST when a run succeeds (status ``succeeded``).")


class OperationsParams(Section):
    """How runs behave around failures: retries of transient errors and the failure notification."""

    retries: RetryParams = Field(default_factory=RetryParams, description="Retries of transient network errors.")
    notify: NotifyParams = Field(default_factory=NotifyParams, description="Failure (and success) notification.")


class SharedParams(Section):
    """The sections of params.yaml that are no stage's: tracking, orchestration, the registry, operations."""

    tracking: TrackingParams = Field(default_factory=TrackingParams, description="MLflow settings.")
    orchestration: OrchestrationParams = Field(default_factory=OrchestrationParams, description="Prefect settings.")
    registry: RegistryParams = Field(default_factory=RegistryParams, description="Model registry and promotion gate.")
    operations: OperationsParams = Field(default_factory=OperationsParams,
                                         description="Retries and failure notifications.")


def stage_section(schema: type[Section], stage: str) -> Any:
    """The field of a stage's section in :class:`Params`: a section left out of params.yaml takes its schema's
    defaults, unless the schema has a required field (then the section is required too).

    Returns ``Any``, as :func:`pydantic.Field` does, so that the field keeps its declared type for a type checker.
    """
    if any(f.is_required() for f in schema.model_fields.values()):
        return Field(description=f"{stage} stage.")
    return Field(default_factory=schema, description=f"{stage} stage.")


class Params(SharedParams):
    """The whole of params.yaml: the shared sections, and one section per stage of dvc.yaml, in its order."""

    collect: CollectParams = stage_section(CollectParams, "collect")
    clean: CleanParams = stage_section(CleanParams, "clean")
    dedup: DedupParams = stage_section(DedupParams, "dedup")
    tokenizer: TokenizerParams = stage_section(TokenizerParams, "tokenizer")
    pretrain: PretrainParams = stage_section(PretrainParams, "pretrain")
    finetune: FinetuneParams = stage_section(FinetuneParams, "finetune")
    distill: DistillParams = stage_section(DistillParams, "distill")
    evaluate: EvaluateParams = stage_section(EvaluateParams, "evaluate")

    def stage_data_deps(self, name: str, root: Path) -> list[str] | None:
        """A stage's data deps in dvc.yaml from its section (``data_deps``), None for a stage without params-named
        inputs; evaluate also reads the untouched checkpoints ``pretrain.checkpoint`` and ``finetune.checkpoint``
        name (it scores them beside what was made from them), so a local one is its dep too."""
        wanted = getattr(getattr(self, name, None), "data_deps", None)
        if wanted is None:
            return None
        deps = list(wanted(root))
        if name == "evaluate":
            for spec in (self.pretrain.checkpoint, self.finetune.checkpoint):
                if spec is not None:
                    deps += [d for d in spec.data_deps(root, name) if d not in deps]
        return deps

    @model_validator(mode="after")
    def _share_the_checkpoint(self) -> Params:
        # the tokenizer stage packs with pretrain.checkpoint's tokenizer: its DVC deps and status name it too
        self.tokenizer.use_checkpoint(self.pretrain.checkpoint)
        return self


STAGE_SECTIONS: tuple[str, ...] = tuple(name for name in Params.model_fields if name not in SharedParams.model_fields)
"""The stages :class:`Params` has a section for: those of this repository's dvc.yaml, in its order (a test keeps
them in step). A checkout cut down to some of them (a test's) still validates every section."""


def check_stage_sections(stages: Sequence[str]) -> None:
    """Check that :class:`Params` has a section for each stage of dvc.yaml.

    Raises:
        ParamsError: naming each stage of dvc.yaml that has none.
    """
    if missing := [s for s in stages if s not in STAGE_SECTIONS]:
        raise ParamsError("; ".join(f"dvc.yaml names stage {s!r} but pipelines.config.Params has no section for it "
                                    f"(a schema in pipelines/config/{s}.py and a field of Params)" for s in missing))


# ----------------------------------------------------------------------------------------------------- loading
def find_root(start: Path | None = None) -> Path:
    """The lmforge checkout containing ``start`` (default: the working directory).

    Raises:
        ParamsError: no directory on the way up holds both params.yaml and dvc.yaml.
    """
    here = (start or Path.cwd()).resolve()
    for cand in (here, *here.parents):
        if (cand / PARAMS_FILE).is_file() and (cand / "dvc.yaml").is_file():
            return cand
    raise ParamsError(f"no lmforge checkout here: no params.yaml and dvc.yaml in {here} or above; cd into the repo")


def _key_path(loc: tuple[int | str, ...], data: Any) -> str:
    out, node = "", data
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(node, dict) and part not in node and node.get("kind") == part:
            continue  # pydantic puts a tagged union's tag into the path; the user never wrote it as a key
        else:
            out += f".{part}" if out else str(part)
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            node = None
    return out or "(top level)"


def format_validation_error(err: ValidationError, data: Any = None, filename: str = PARAMS_FILE) -> str:
    """One line per problem, each naming the key path, e.g. ``collect.sources[0].max_docs: ...``."""
    lines = [f"{filename}: {err.error_count()} problem(s):"]
    for e in err.errors():
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (not in the schema; check the spelling)"
        elif e["type"] in ("union_tag_invalid", "union_tag_not_found"):
            ctx = e.get("ctx") or {}
            given = e["input"].get("kind") if isinstance(e.get("input"), dict) else e.get("input")
            expected = str(ctx.get("expected_tags", "")).replace("'", "")
            msg = f"unknown source kind {given!r}; expected one of {expected}"
        lines.append(f"  {_key_path(e['loc'], data)}: {msg}")
    return "\n".join(lines)


def parse_params(data: Any, filename: str = PARAMS_FILE) -> Params:
    """Validate an already-loaded mapping.

    Args:
        data: the loaded YAML.
        filename: named in error messages.

    Raises:
        ParamsError: the mapping does not match the schema.
    """
    if not isinstance(data, dict):
        raise ParamsError(f"{filename}: expected a mapping of sections at the top level, got {type(data).__name__}")
    try:
        # strict, as JSON: a quoted number ("1000") or a quoted boolean is an error naming its key, not a value
        # coerced here that DVC (which compares the YAML text) would then report as a change on every status
        return Params.model_validate_json(json.dumps(data, default=str), strict=True)
    except ValidationError as err:
        raise ParamsError(format_validation_error(err, data, filename)) from None


def load_params(root: Path | None = None) -> Params:
    """Read and validate ``params.yaml`` of the checkout at ``root``.

    Raises:
        ParamsError: the file is missing, is not YAML, or does not match the schema; or the checkout's dvc.yaml
            names a stage that :class:`Params` has no section for.
    """
    root = root or find_root()
    path = root / PARAMS_FILE
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ParamsError(f"{path} not found") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ParamsError(f"{PARAMS_FILE} is not valid YAML: {err}") from None
    check_stage_sections(stage_names(root))
    return parse_params(data, PARAMS_FILE)


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": [1]}}`` -> ``{"a.b.0": 1}``: flat key paths, as MLflow params and change reports use."""
    if isinstance(obj, dict):
        items: Any = obj.items()
    elif isinstance(obj, list | tuple):
        items = enumerate(obj)
    else:
        return {prefix: obj}
    out: dict[str, Any] = {}
    for k, v in items:
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def apply_environment(root: Path) -> None:
    """Set the environment every lmforge process shares; values the user already set win."""
    for key, value in TELEMETRY_OFF.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("PREFECT_HOME", str(root / ".prefect"))
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


def apply_orchestration(params: OrchestrationParams) -> None:
    """Point Prefect at a server when params name one (before prefect is imported)."""
    if params.prefect_api_url:
        os.environ["PREFECT_API_URL"] = params.prefect_api_url
