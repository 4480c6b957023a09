"""Where a model starts from: a Hugging Face checkpoint lmforge did not train, as a local directory or a hub id pinned
by revision; resolved to a local directory, checked, and described (content digest, architecture, license).

A stage resolves its checkpoint before any work (:func:`resolve`): a hub id is downloaded through ``huggingface_hub``
(``snapshot_download``, weights, config and tokenizer files only) with the caller's retries; a local directory is used
where it is. :func:`describe` then reads what the model card and the registry name: the content digest (sha256 over
every file's name and bytes, so a changed checkpoint is a different input), the architecture, the license where the
checkpoint states one (``config.json``, a README's front matter). :func:`check` says whether it can do a task type,
before torch: a bad directory, a missing tokenizer or an encoder asked for generation is one :class:`CheckpointError`
naming the setting.

Initialising from a checkpoint takes its weights only; resuming a killed run (weights, optimizer, data position) is
the recipes' ``checkpoint_dir`` and never reads from here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tasks.modeling.errors import ConfigError

WEIGHT_FILES = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "merges.txt",
                   "tokenizer.model", "spiece.model", "special_tokens_map.json", "added_tokens.json")
DOWNLOAD_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "README.md", "LICENSE*"]
"""What a hub download fetches: config, weights (safetensors only: pickled ``.bin`` weights run code when loaded),
tokenizer and license files; no other framework's weights."""
PROVENANCE_FILE = "base_checkpoint.json"
"""Beside a model (or a tokenizer) made from a checkpoint: :meth:`Checkpoint.provenance`, so that later stages, the
model card and the registry can name the base checkpoint, its revision, digest and license."""


class CheckpointError(ConfigError):
    """A checkpoint that cannot be used as configured (exit code 2): the message names the setting and the fix."""


@dataclass(frozen=True)
class Checkpoint:
    """A resolved checkpoint: where its files are and what it is.

    Attributes:
        source: what params named (a local path or a hub id).
        revision: the hub revision asked for (None: a local directory, or an unpinned hub id).
        commit: the hub commit the download resolved to (None for a local directory).
        dir: the local directory holding its files.
        digest: ``sha256:`` of every file's relative name and bytes, in name order.
        model_type: ``config.json``'s ``model_type`` (llama, gpt2, bert, ...).
        architectures: ``config.json``'s ``architectures``.
        decoder: whether it can generate (a causal LM); encoders classify only.
        license: the license the checkpoint states, or None.
        files: how many files the digest covers.
    """

    source: str
    revision: str | None
    commit: str | None
    dir: Path
    digest: str
    model_type: str
    architectures: list[str]
    decoder: bool
    license: str | None
    files: int

    def record(self) -> dict[str, Any]:
        """A JSON-ready description (the model card's and the registry's "base checkpoint")."""
        return {**asdict(self), "dir": str(self.dir)}

    def provenance(self) -> dict[str, Any]:
        """:meth:`record` without the local directory (a machine's path, no part of what the checkpoint is): what
        :data:`PROVENANCE_FILE` holds."""
        return {k: v for k, v in self.record().items() if k != "dir"}


def write_provenance(directory: Path, provenance: dict[str, Any]) -> Path:
    """Write ``provenance`` (:meth:`Checkpoint.provenance`) to ``directory/base_checkpoint.json`` (sorted keys: the
    same checkpoint gives the same bytes); returns the file."""
    path = Path(directory) / PROVENANCE_FILE
    path.write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def read_provenance(directory: Path) -> dict[str, Any] | None:
    """The base checkpoint a model or tokenizer directory was made from (:data:`PROVENANCE_FILE`), or None (lmforge's
    own model, trained from scratch)."""
    path = Path(directory) / PROVENANCE_FILE
    if not path.is_file():
        return None
    return dict(json.loads(path.read_text(encoding="utf-8")))


def is_local(path: str, root: Path) -> bool:
    """Whether ``path`` names a local directory (an existing path, or one written like a path) rather than a hub id
    (the rule ``pipelines.config.sources.hf_local`` applies to DVC deps)."""
    candidate = root / os.path.expanduser(path)
    return candidate.exists() or path.startswith(("./", "../", "/", "~", ".\\")) or path in (".", "..")


def local_dir(path: str, root: Path) -> Path:
    """The directory a local ``path`` names, relative paths under ``root``."""
    return (root / os.path.expanduser(path)).resolve()


def resolve(path: str, *, revision: str | None, root: Path, setting: str,
            retry: Callable[..., Any] | None = None) -> Path:
    """The local directory of a checkpoint: ``path`` itself when local, else a hub snapshot at ``revision``.

    Args:
        path: a local directory or a hub id (``org/name``).
        revision: hub revision (commit, tag or branch); must be None for a local directory.
        root: the repository (relative paths are under it).
        setting: the params key, for messages (``finetune.checkpoint``).
        retry: ``retry(fn, *args, **kwargs)`` retrying what fails for a moment (``pipelines.operations.retrying``).

    Raises:
        CheckpointError: the directory is missing, or the hub cannot give the checkpoint (unreachable after the
            retries, unknown id or revision, offline without a cached copy).
    """
    if is_local(path, root):
        directory = local_dir(path, root)
        if revision is not None:
            raise CheckpointError(f"{setting}.revision is set but {setting}.path {path!r} is a local directory: "
                                  "a revision pins a hub id only; remove it")
        if not directory.is_dir():
            raise CheckpointError(f"{setting}.path {path!r}: no such directory ({directory}); give a Hugging Face "
                                  "checkpoint directory (config.json, weights, tokenizer) or a hub id")
        return directory
    from huggingface_hub import snapshot_download

    try:
        return Path((retry or (lambda fn, *a, **k: fn(*a, **k)))(
            snapshot_download, repo_id=path, revision=revision, allow_patterns=DOWNLOAD_PATTERNS))
    except Exception as err:  # the hub's errors are many classes (HTTP, offline, not found): all are the user's to fix
        raise CheckpointError(f"{setting}.path {path!r}{f' at revision {revision!r}' if revision else ''} could not "
                              f"be fetched from the Hugging Face hub ({type(err).__name__}: {str(err)[:300]}): check "
                              "the id and revision and the network (HF_ENDPOINT, HF_HUB_OFFLINE), or give a local "
                              "directory") from err


def content_digest(directory: Path) -> tuple[str, int]:
    """``("sha256:<hex>", files)`` over every regular file under ``directory`` (relative name and bytes, sorted by
    name; hidden entries such as ``.cache`` skipped), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    files = sorted(p for p in Path(directory).rglob("*")
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(directory).parts))
    for path in files:
        digest.update(path.relative_to(directory).as_posix().encode() + b"\0")
        with path.open("rb") as fh:
            while block := fh.read(1 << 20):
                digest.update(block)
        digest.update(b"\0")
    return f"sha256:{digest.hexdigest()}", len(files)


def read_license(directory: Path, config: dict[str, Any]) -> str | None:
    """The license a checkpoint states: ``config.json``'s ``license``, else the ``license:`` line of its README's
    YAML front matter (the hub's model card), else the first line of a LICENSE file; None when it states none."""
    if isinstance(config.get("license"), str):
        return str(config["license"])
    readme = directory / "README.md"
    if readme.is_file():
        text = readme.read_text(encoding="utf-8", errors="replace")
        if text.startswith("---"):
            front = text.split("---", 2)[1] if text.count("---") >= 2 else ""
            if m := re.search(r"^license:\s*['\"]?([^'\"\n]+)", front, re.MULTILINE):
                return m.group(1).strip()
    for path in sorted(directory.glob("LICENSE*")):
        if path.is_file() and (first := path.read_text(encoding="utf-8", errors="replace").strip().splitlines()):
            return first[0].strip()[:200]
    return None


def is_decoder(config: dict[str, Any]) -> bool:
    """Whether a ``config.json`` describes a causal LM (Llama, GPT-2, Qwen2, ...) rather than an encoder (BERT
    family): an architecture with a masked-LM model is an encoder unless its config says ``is_decoder``."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    model_type = str(config.get("model_type", ""))
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return False
    return bool(config.get("is_decoder")) or model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


HEAD_MAPPINGS: dict[str | None, str] = {
    "AutoModelForSequenceClassification": "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
    "AutoModelForTokenClassification": "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES",
    "AutoModelForQuestionAnswering": "MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES",
    None: "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES"}
"""transformers' architecture table (``transformers.models.auto.modeling_auto``) of each task type's auto class
(None: the causal LM)."""


def check(directory: Path, *, setting: str, needs_decoder: bool = False, classification: bool = False,
          heads: tuple[str, ...] = ()) -> dict[str, Any]:
    """Check that ``directory`` is a usable checkpoint before any work; returns its ``config.json``.

    Args:
        directory: the resolved checkpoint.
        setting: the params key, for messages.
        needs_decoder: a task generates (sft, continued pretraining, an LM student): the model must be a causal LM.
        classification: a classification head is put on it: transformers must know its sequence-classification
            model.
        heads: the auto classes of the task heads put on it (``AutoModelForTokenClassification``...): transformers
            must know the architecture's model of each.

    Raises:
        CheckpointError: no ``config.json``, an unknown architecture, no weights, no tokenizer, or a model that cannot
            do what is asked.
    """
    from transformers.models.auto import modeling_auto

    config_path = directory / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{setting}: {directory} is not a Hugging Face checkpoint (no config.json): give the "
                              "directory `save_pretrained` wrote")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{setting}: {config_path} cannot be read as JSON ({err})") from err
    model_type = config.get("model_type")
    from transformers import CONFIG_MAPPING

    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        raise CheckpointError(f"{setting}: {config_path} has model_type {model_type!r}, which this transformers does "
                              "not know (models that need trust_remote_code are not supported)")
    if not any(any(directory.glob(pattern)) for pattern in WEIGHT_FILES):
        raise CheckpointError(f"{setting}: {directory} has no weights (*.safetensors or *.bin)")
    if not any((directory / name).is_file() for name in TOKENIZER_FILES):
        raise CheckpointError(f"{setting}: {directory} has no tokenizer (tokenizer.json, vocab.txt, vocab.json + "
                              "merges.txt or tokenizer.model): save the tokenizer with the model "
                              "(tokenizer.save_pretrained(dir))")
    check_vocabulary(directory, config, setting=setting)
    if needs_decoder and not is_decoder(config):
        raise CheckpointError(f"{setting}: {directory} is a {model_type} encoder, which cannot generate: sft tasks, "
                              "continued pretraining and LM students need a causal LM checkpoint (Llama, GPT-2, Qwen2, "
                              "...); fine-tune encoders on classification tasks")
    if classification and model_type not in modeling_auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES:
        raise CheckpointError(f"{setting}: transformers has no sequence-classification model for {model_type}: "
                              "classification tasks cannot use this checkpoint")
    for auto_class in sorted(set(heads)):
        if model_type not in getattr(modeling_auto, HEAD_MAPPINGS[auto_class]):
            raise CheckpointError(f"{setting}: transformers has no {auto_class.removeprefix('AutoModelFor')} model "
                                  f"for {model_type}: tasks of that type cannot use this checkpoint")
    return dict(config)


def check_vocabulary(directory: Path, config: dict[str, Any], *, setting: str) -> None:
    """CheckpointError when the tokenizer cannot be loaded or has ids the model has no embedding for (a tokenizer
    saved from another model: every such id would be an index error in the middle of training)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory))
    except Exception as err:  # any of the tokenizer formats' own errors: the directory is the user's to fix
        raise CheckpointError(f"{setting}: the tokenizer in {directory} cannot be loaded ({type(err).__name__}: "
                              f"{str(err)[:300]})") from err
    vocab = config.get("vocab_size")
    if isinstance(vocab, int) and len(tokenizer) > vocab:
        raise CheckpointError(f"{setting}: the tokenizer in {directory} has {len(tokenizer)} tokens but the model's "
                              f"vocab_size is {vocab}: the tokenizer belongs to another model; save the model's own "
                              "tokenizer with it")


def describe(directory: Path, *, source: str, revision: str | None, config: dict[str, Any]) -> Checkpoint:
    """What a resolved, checked checkpoint is (digest, architecture, license, hub commit)."""
    digest, files = content_digest(directory)
    # a hub snapshot lives in .../snapshots/<commit>/
    commit = directory.name if directory.parent.name == "snapshots" and re.fullmatch(r"[0-9a-f]{40}", directory.name) \
        else None
    return Checkpoint(source=source, revision=revision, commit=commit, dir=directory, digest=digest,
                      model_type=str(config.get("model_type")), architectures=list(config.get("architectures") or []),
                      decoder=is_decoder(config), license=read_license(directory, config), files=files)
