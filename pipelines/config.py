"""Typed, validated params: the schema of ``params.yaml``, the single source of configuration.

Every section is a pydantic model with a description per field; unknown keys are rejected. A bad file is
one :class:`ParamsError` whose message names every offending key path (``collect.sources[0].max_docs``),
raised before any stage does work. This module also knows where the repository is and sets the process
environment every lmforge process shares (telemetry off, Prefect home and API under the repo).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

PARAMS_FILE = "params.yaml"
STAGES: tuple[str, ...] = ("collect", "clean", "dedup", "tokenizer", "pretrain")
"""Stage names in pipeline order; one name everywhere (params key, dvc.yaml stage, flow module, MLflow run)."""

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


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------------------------------------------- collect
class _SourceBase(_Section):
    name: str = Field(
        description="Unique name of the source; recorded in every record's `source` column and in the metrics.",
        min_length=1,
        pattern=r"^[A-Za-z0-9_.-]+$",
    )
    max_docs: int | None = Field(None, ge=1, description="Keep at most this many documents from the source.")
    weight: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="Fraction of the source's documents kept, sampled deterministically from each record's id "
        "and the stage seed (1.0 keeps all).",
    )


class DefaultSource(_SourceBase):
    """The offline corpus: standard-library documentation topics and module docstrings of this Python."""

    kind: Literal["default"] = Field(description="Source kind.")
    include_topics: bool = Field(True, description="Include the pydoc documentation topics.")
    include_docstrings: bool = Field(True, description="Include one document per standard-library module.")


class FilesSource(_SourceBase):
    """Local files: jsonl/json/parquet/txt/md, plain or .gz/.zst compressed."""

    kind: Literal["files"] = Field(description="Source kind.")
    paths: list[str] = Field(min_length=1, description="Glob patterns (** allowed), relative to the repository.")
    format: Literal["auto", "jsonl", "json", "parquet", "txt", "md"] = Field(
        "auto", description="File format; `auto` picks it from the suffix (after a compression suffix)."
    )
    text_field: str = Field("text", min_length=1, description="Field holding the text in jsonl/json/parquet.")
    text_unit: Literal["file", "line"] = Field("file", description="txt/md: one document per file or per line.")


class HFSource(_SourceBase):
    """A Hugging Face dataset: hub id (streamed), local dataset directory, or a builder with data files."""

    kind: Literal["hf"] = Field(description="Source kind.")
    path: str = Field(min_length=1, description="Hub id, local directory, or builder name (json, parquet, text).")
    config: str | None = Field(None, description="Dataset configuration name.")
    split: str = Field("train", description="Split to read.")
    text_field: str = Field("text", min_length=1, description="Column holding the text.")
    streaming: bool = Field(True, description="Stream instead of downloading/preparing the whole dataset.")
    data_files: list[str] | None = Field(None, description="Data files for a builder name or a local directory.")
    revision: str | None = Field(None, description="Hub revision (commit, tag or branch) to pin.")


class WarcSource(_SourceBase):
    """Common Crawl style WARC (HTML responses, main text extracted) or WET files, plain or gzipped."""

    kind: Literal["warc"] = Field(description="Source kind.")
    paths: list[str] = Field(min_length=1, description="Glob patterns of .warc/.warc.gz/.wet/.wet.gz files.")
    min_text_chars: int = Field(1, ge=1, description="Pages whose extracted text is shorter are quarantined.")


Source = Annotated[DefaultSource | FilesSource | HFSource | WarcSource, Field(discriminator="kind")]
SOURCE_KINDS = ("default", "files", "hf", "warc")


class ValidationParams(_Section):
    """Great Expectations gate on a stage's output."""

    min_rows: int = Field(1, ge=0, description="Fewest rows the output may have.")
    max_rows: int | None = Field(None, ge=1, description="Most rows the output may have (null: no limit).")

    @model_validator(mode="after")
    def _range(self) -> ValidationParams:
        if self.max_rows is not None and self.max_rows < self.min_rows:
            raise ValueError(f"max_rows ({self.max_rows}) is below min_rows ({self.min_rows})")
        return self


class CollectParams(_Section):
    """The collect stage: read every source, write Parquet shards of records and a quarantine file."""

    seed: int = Field(1234, ge=0, description="Seed of the deterministic per-source sampling (`weight`).")
    sources: list[Source] = Field(min_length=1, description="Sources, read in this order.")
    shard_max_records: int = Field(10_000, ge=1, description="A shard is closed after this many records.")
    shard_max_bytes: int = Field(
        64_000_000, ge=1_000, description="A shard is closed once its text reaches this many UTF-8 bytes."
    )
    max_doc_bytes: int = Field(
        10_000_000, ge=1, description="Documents larger than this are quarantined as `too_long`."
    )
    validation: ValidationParams = Field(default_factory=ValidationParams, description="Output gate.")

    @field_validator("sources")
    @classmethod
    def _unique_names(cls, sources: list[Any]) -> list[Any]:
        names = [s.name for s in sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"source names must be unique; repeated: {', '.join(dupes)}")
        return sources


# ------------------------------------------------------------------------------------------------------ clean
class ParallelParams(_Section):
    """Shard-parallel execution through Prefect's Dask task runner."""

    workers: int = Field(2, ge=1, le=512, description="Worker processes of the Dask LocalCluster.")
    scheduler_address: str | None = Field(
        None, description="tcp://host:8786 of an existing Dask scheduler; null starts a LocalCluster."
    )


class LanguageParams(_Section):
    """Language identification with py3langid (model shipped in the package, no download)."""

    enabled: bool = Field(True, description="Drop documents not in `languages` (reason `language`).")
    languages: list[str] = Field(["en"], min_length=1, description="ISO 639-1 codes to keep.")
    min_score: float = Field(0.5, ge=0.0, le=1.0, description="Lowest normalised probability of the language.")
    max_chars: int = Field(2000, ge=50, description="Characters of each document the identifier looks at.")


class C4Params(_Section):
    """C4 quality rules (Raffel et al. 2020); null switches a rule off. Published defaults."""

    enabled: bool = Field(True, description="Run this rule family.")
    remove_citations: bool = Field(True, description="Remove [1], [citation needed], [edit] markers.")
    filter_no_terminal_punct: bool = Field(True, description="Drop lines not ending in terminal punctuation.")
    min_words_per_line: int | None = Field(3, ge=1, description="Drop lines with fewer words.")
    max_word_length: int | None = Field(1000, ge=1, description="Drop lines with a longer word.")
    filter_javascript: bool = Field(True, description="Drop lines mentioning javascript.")
    filter_policy: bool = Field(True, description="Drop terms-of-use / privacy / cookie policy lines.")
    filter_lorem_ipsum: bool = Field(True, description="Drop documents containing lorem ipsum.")
    filter_curly_bracket: bool = Field(True, description="Drop documents containing '{'.")
    min_num_sentences: int | None = Field(5, ge=1, description="Drop documents with fewer sentences left.")


class GopherQualityParams(_Section):
    """Gopher quality rules (Rae et al. 2021, appendix A); null switches a rule off. Published defaults."""

    enabled: bool = Field(True, description="Run this rule family.")
    min_doc_words: int | None = Field(50, ge=0, description="Fewest words.")
    max_doc_words: int | None = Field(100_000, ge=1, description="Most words.")
    min_avg_word_length: float | None = Field(3, ge=0, description="Shortest mean word length.")
    max_avg_word_length: float | None = Field(10, ge=0, description="Longest mean word length.")
    max_symbol_word_ratio: float | None = Field(0.1, ge=0, description="Most '#' and ellipsis per word.")
    max_bullet_lines_ratio: float | None = Field(0.9, ge=0, le=1, description="Most lines starting with a bullet.")
    max_ellipsis_lines_ratio: float | None = Field(0.3, ge=0, le=1, description="Most lines ending in an ellipsis.")
    min_alpha_words_ratio: float | None = Field(0.8, ge=0, le=1, description="Fewest words with a letter.")
    min_stop_words: int | None = Field(2, ge=0, description="Fewest English stop words (the, be, to, of, ...).")


class GopherRepetitionParams(_Section):
    """Gopher repetition rules (Rae et al. 2021, table A1); null switches a rule off. Published defaults."""

    enabled: bool = Field(True, description="Run this rule family.")
    dup_line_frac: float | None = Field(0.30, ge=0, le=1, description="Most duplicated lines (fraction of lines).")
    dup_para_frac: float | None = Field(0.30, ge=0, le=1, description="Most duplicated paragraphs.")
    dup_line_char_frac: float | None = Field(0.20, ge=0, le=1, description="Most characters in duplicated lines.")
    dup_para_char_frac: float | None = Field(0.20, ge=0, le=1, description="Most characters in duplicated paras.")
    top_n_grams: dict[int, float] = Field({2: 0.20, 3: 0.18, 4: 0.16},
                                          description="n -> most characters in the most frequent n-gram.")
    dup_n_grams: dict[int, float] = Field({5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10},
                                          description="n -> most characters in duplicated n-grams.")


class PIIParams(_Section):
    """Masking of personal data: e-mail -> <EMAIL>, IP -> <IP_ADDRESS>, phone -> <PHONE>."""

    enabled: bool = Field(False, description="Mask PII in kept documents (counted per kind).")
    emails: bool = Field(True, description="Mask e-mail addresses.")
    ips: bool = Field(True, description="Mask IPv4 and IPv6 addresses.")
    phones: bool = Field(True, description="Mask phone numbers.")


class CleanValidationParams(ValidationParams):
    """Great Expectations gate on the clean output."""

    min_chars: int = Field(1, ge=1, description="Shortest document (characters) allowed in the output.")
    max_chars: int | None = Field(None, ge=1, description="Longest document allowed (null: no limit).")
    min_language_share: float = Field(0.95, ge=0, le=1, description="Least share of rows in a kept language.")


FilterFamily = Literal["gopher_repetition", "gopher_quality", "c4"]


class CleanParams(_Section):
    """The clean stage: Unicode repair, language id, C4 and Gopher rules, PII masking; rejects kept with reason."""

    fix_unicode: bool = Field(True, description="Repair mojibake and NFC-normalise with ftfy.")
    language: LanguageParams = Field(default_factory=LanguageParams, description="Language identification.")
    order: list[FilterFamily] = Field(["gopher_repetition", "gopher_quality", "c4"], min_length=0,
                                      description="Order of the rule families (FineWeb's by default).")
    c4: C4Params = Field(default_factory=C4Params, description="C4 quality rules.")
    gopher_quality: GopherQualityParams = Field(default_factory=GopherQualityParams, description="Gopher quality.")
    gopher_repetition: GopherRepetitionParams = Field(default_factory=GopherRepetitionParams,
                                                      description="Gopher repetition.")
    pii: PIIParams = Field(default_factory=PIIParams, description="PII masking.")
    parallel: ParallelParams = Field(default_factory=ParallelParams, description="Shard parallelism.")
    validation: CleanValidationParams = Field(default_factory=CleanValidationParams, description="Output gate.")

    @field_validator("order")
    @classmethod
    def _unique_order(cls, order: list[str]) -> list[str]:
        if len(set(order)) != len(order):
            raise ValueError(f"each rule family may appear once; got {order}")
        return order


# ------------------------------------------------------------------------------------------------------ dedup
class MinHashParams(_Section):
    """Near-duplicate detection by MinHash LSH (rensa), clusters by union-find."""

    num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations.")
    shingle_size: int = Field(5, ge=1, le=32, description="Words per shingle.")
    threshold: float = Field(0.8, gt=0, lt=1, description="Jaccard similarity from which documents are duplicates.")
    bands: int | None = Field(None, ge=1, description="LSH bands (with rows); null: chosen from threshold.")
    rows: int | None = Field(None, ge=1, description="Signature values per band (with bands).")
    verify: bool = Field(True, description="Check candidate pairs' estimated Jaccard against the threshold.")
    verify_margin: float = Field(
        0.05, ge=0, lt=1, description="Verification accepts pairs estimated down to threshold - margin: a 128-"
        "permutation estimate has a standard error of ~0.035 at 0.8, so true pairs just above the threshold "
        "would otherwise be lost half the time.")
    seed: int = Field(0, ge=0, description="Seed of shingle hashes and permutations.")

    @model_validator(mode="after")
    def _bands_rows(self) -> MinHashParams:
        if (self.bands is None) != (self.rows is None):
            raise ValueError("give both bands and rows, or neither (then threshold chooses them)")
        if self.bands is not None and self.rows is not None and self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands x rows ({self.bands * self.rows}) exceeds num_perm ({self.num_perm})")
        return self


class SplitParams(_Section):
    """Deterministic train/val/test split by id hash."""

    val: float = Field(0.05, ge=0, lt=0.5, description="Fraction of documents in val.")
    test: float = Field(0.05, ge=0, lt=0.5, description="Fraction of documents in test.")
    seed: int = Field(0, ge=0, description="Seed of the id hash.")


class DedupValidationParams(ValidationParams):
    """Great Expectations gate on the dedup output."""

    split_tolerance: float = Field(0.05, ge=0, le=1, description="Largest gap between a split's share and its "
                                   "fraction (absolute), on corpora of 1000+ documents.")


class DedupParams(_Section):
    """The dedup stage: exact and MinHash near-duplicate removal, then the train/val/test split."""

    minhash: MinHashParams = Field(default_factory=MinHashParams, description="Near-duplicate detection.")
    splits: SplitParams = Field(default_factory=SplitParams, description="Split fractions.")
    parallel: ParallelParams = Field(default_factory=ParallelParams, description="Shard parallelism.")
    validation: DedupValidationParams = Field(default_factory=DedupValidationParams, description="Output gate.")


# -------------------------------------------------------------------------------------------------- tokenizer
class TokenizerParams(_Section):
    """The tokenizer stage: byte-level BPE trained on the train split, then every split packed into token files."""

    vocab_size: int = Field(2048, ge=260, le=1_000_000, description="Vocabulary size, special tokens included.")
    min_frequency: int = Field(2, ge=1, description="Fewest occurrences of a pair for a merge.")
    normalization: Literal["none", "nfc", "nfkc"] = Field("none", description="Unicode normalisation before BPE.")
    add_prefix_space: bool = Field(False, description="Treat a document's first word like one after a space.")
    bos_token: str = Field("<|bos|>", min_length=1, description="Beginning-of-sequence token (id 0).")
    eos_token: str = Field("<|eos|>", min_length=1, description="End-of-sequence token (id 1), joins documents.")
    pad_token: str = Field("<|pad|>", min_length=1, description="Padding token (id 2).")
    batch_size: int = Field(1000, ge=1, description="Documents per tokenization batch.")
    workers: int = Field(1, ge=1, le=256, description="Tokenizing processes (1: the library's own threads).")

    @model_validator(mode="after")
    def _distinct_specials(self) -> TokenizerParams:
        if len({self.bos_token, self.eos_token, self.pad_token}) != 3:
            raise ValueError("bos_token, eos_token and pad_token must differ")
        return self


# --------------------------------------------------------------------------------------------------- pretrain
class ModelShapeParams(_Section):
    """A Llama-architecture decoder (transformers LlamaConfig)."""

    vocab_size: int | None = Field(None, ge=1, description="Embedding rows; null takes the tokenizer's vocabulary.")
    hidden_size: int = Field(128, ge=8, description="Model width.")
    num_layers: int = Field(4, ge=1, description="Decoder layers.")
    num_heads: int = Field(4, ge=1, description="Query heads; must divide hidden_size.")
    num_kv_heads: int | None = Field(None, ge=1, description="Key/value heads; must divide num_heads (null: same).")
    intermediate_size: int = Field(344, ge=8, description="MLP width.")
    max_position_embeddings: int | None = Field(None, ge=1, description="Longest sequence (null: context).")
    rope_theta: float = Field(10000.0, gt=0, description="Rotary embedding base.")
    tie_word_embeddings: bool = Field(True, description="Share input embedding and output projection.")

    @model_validator(mode="after")
    def _heads(self) -> ModelShapeParams:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must divide hidden_size ({self.hidden_size})")
        if self.num_kv_heads is not None and self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_kv_heads ({self.num_kv_heads}) must divide num_heads ({self.num_heads})")
        return self


class LaunchParams(_Section):
    """How the training processes are started (the command is printed before it runs)."""

    launcher: Literal["python", "torchrun", "deepspeed"] = Field(
        "python", description="python: one process; torchrun: nproc local processes; deepspeed: its launcher, "
        "with a hostfile for several nodes.")
    nproc: int = Field(1, ge=1, le=1024, description="Processes (torchrun / deepspeed without a hostfile; with a "
                       "hostfile, each host's slots= decide).")
    hostfile: str | None = Field(None, description="DeepSpeed hostfile (e.g. infra/deepspeed/hostfile), lines "
                                 "'HOST slots=N', for multi-node runs; relative to the repo. DeepSpeed reaches the "
                                 "hosts by passwordless ssh, unless node_rank is set.")
    master_addr: str | None = Field(None, description="Address of rank 0 (null: 127.0.0.1 for local runs, else "
                                    "DeepSpeed asks the hostfile's first host over ssh).")
    master_port: int | None = Field(None, ge=1024, le=65535, description="Rendezvous port (null: a free one).")
    node_rank: int | None = Field(None, ge=0, description="deepspeed with a hostfile, without ssh: this node's "
                                  "index in the hostfile; every node runs the stage itself (SLURM, Kubernetes). "
                                  "Needs master_addr and master_port.")

    @model_validator(mode="after")
    def _consistent(self) -> LaunchParams:
        if self.node_rank is not None:
            if self.launcher != "deepspeed" or not self.hostfile:
                raise ValueError("node_rank needs launcher: deepspeed and a hostfile")
            if not self.master_addr or not self.master_port:
                raise ValueError("node_rank needs master_addr and master_port: every node must meet rank 0 there")
        if self.hostfile and self.launcher != "deepspeed":
            raise ValueError(f"hostfile is read by the deepspeed launcher only, not by {self.launcher!r}")
        return self


class PretrainParams(_Section):
    """The pretrain stage: a Llama trained from scratch on data/tokens with DeepSpeed. Field names are those of
    the training entry point's run config (tasks/training/pretrain.py), which the flow writes from them."""

    model: ModelShapeParams = Field(default_factory=ModelShapeParams, description="Model shape.")
    context: int = Field(256, ge=8, description="Tokens per training window.")
    seed: int = Field(0, ge=0, description="Seed of the initial weights and of the data order.")
    steps: int = Field(1000, ge=1, description="Optimizer steps.")
    batch_size: int = Field(8, ge=1, description="Windows per micro-batch per process.")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    lr: float = Field(1e-3, gt=0, description="Peak learning rate after warmup.")
    min_lr: float = Field(1e-4, ge=0, description="Learning rate at the last step (cosine decay).")
    warmup_steps: int = Field(100, ge=0, description="Linear warmup steps.")
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay (matrices only).")
    betas: tuple[float, float] = Field((0.9, 0.95), description="AdamW betas.")
    grad_clip: float = Field(1.0, ge=0, description="Global gradient-norm clip (0: off).")
    zero_stage: Literal[0, 1, 2, 3] = Field(2, description="DeepSpeed ZeRO stage.")
    offload_optimizer: bool = Field(False, description="Optimizer states on the CPU (ZeRO >= 1).")
    offload_params: bool = Field(False, description="Parameters on the CPU (ZeRO 3).")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16 on CPU (measured 1.5x fp32 here) and on GPUs that support it, else fp32.")
    activation_checkpointing: bool = Field(False, description="Recompute activations in backward (less memory).")
    threads: int | None = Field(None, ge=1, description="torch threads per process (null: torch's default).")
    log_every: int = Field(10, ge=1, description="Steps between log lines and MLflow metrics.")
    eval_every: int = Field(250, ge=1, description="Steps between validation passes.")
    eval_batches: int = Field(8, ge=1, description="Validation batches per pass.")
    checkpoint_every: int = Field(250, ge=1, description="Steps between DeepSpeed checkpoints.")
    keep_checkpoints: int = Field(2, ge=1, description="Checkpoints kept.")
    sample_prompts: list[str] = Field(["def ", "The "], description="Prompts completed after training.")
    sample_max_new_tokens: int = Field(32, ge=1, description="Tokens generated per prompt.")
    deepspeed_config: str | None = Field(None, description="A DeepSpeed JSON (e.g. in infra/deepspeed/) merged "
                                         "over the generated one, for anything the params do not cover.")
    launch: LaunchParams = Field(default_factory=LaunchParams, description="Process launch.")

    @model_validator(mode="after")
    def _consistent(self) -> PretrainParams:
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr}) is above lr ({self.lr})")
        if self.warmup_steps >= self.steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be below steps ({self.steps})")
        if self.offload_params and self.zero_stage != 3:
            raise ValueError("offload_params needs zero_stage 3")
        if self.offload_optimizer and self.zero_stage == 0:
            raise ValueError("offload_optimizer needs zero_stage 1, 2 or 3")
        return self


# ---------------------------------------------------------------------------------------------- cross-cutting
class TrackingParams(_Section):
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


class OrchestrationParams(_Section):
    """Where Prefect runs flows."""

    prefect_api_url: str | None = Field(
        None, description="Prefect API URL (http://host:4200/api); null starts an ephemeral API in-process."
    )


class Params(_Section):
    """The whole of params.yaml."""

    tracking: TrackingParams = Field(default_factory=TrackingParams, description="MLflow settings.")
    orchestration: OrchestrationParams = Field(default_factory=OrchestrationParams, description="Prefect settings.")
    collect: CollectParams = Field(description="collect stage.")
    clean: CleanParams = Field(default_factory=CleanParams, description="clean stage.")
    dedup: DedupParams = Field(default_factory=DedupParams, description="dedup stage.")
    tokenizer: TokenizerParams = Field(default_factory=TokenizerParams, description="tokenizer stage.")
    pretrain: PretrainParams = Field(default_factory=PretrainParams, description="pretrain stage.")


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


def _key_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif i > 0 and isinstance(loc[i - 1], int) and part in SOURCE_KINDS:
            continue  # pydantic puts the union tag into the path; the user never wrote it
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def format_validation_error(err: ValidationError, filename: str = PARAMS_FILE) -> str:
    """One line per problem, each naming the key path, e.g. ``collect.sources[0].max_docs: ...``."""
    lines = [f"{filename}: {err.error_count()} problem(s):"]
    for e in err.errors():
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (not in the schema; check the spelling)"
        elif e["type"] in ("union_tag_invalid", "union_tag_not_found"):
            given = e["input"].get("kind") if isinstance(e.get("input"), dict) else e.get("input")
            msg = f"unknown source kind {given!r}; expected one of {', '.join(SOURCE_KINDS)}"
        lines.append(f"  {_key_path(e['loc'])}: {msg}")
    return "\n".join(lines)


def parse_params(data: Any, filename: str = PARAMS_FILE) -> Params:
    """Validate an already-loaded mapping.

    Raises:
        ParamsError: the mapping does not match the schema.
    """
    if not isinstance(data, dict):
        raise ParamsError(f"{filename}: expected a mapping of sections at the top level, got {type(data).__name__}")
    try:
        return Params.model_validate(data)
    except ValidationError as err:
        raise ParamsError(format_validation_error(err, filename)) from None


def load_params(root: Path | None = None) -> Params:
    """Read and validate ``params.yaml`` of the checkout at ``root``.

    Raises:
        ParamsError: the file is missing, is not YAML, or does not match the schema.
    """
    root = root or find_root()
    path = root / PARAMS_FILE
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ParamsError(f"{path} not found") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ParamsError(f"{PARAMS_FILE} is not valid YAML: {err}") from None
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
