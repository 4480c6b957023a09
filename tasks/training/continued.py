"""Continued (domain-adaptive) pretraining: the pretrain recipe started from a Hugging Face causal-LM checkpoint of
any architecture (Llama, GPT-2, Qwen2, ...) instead of a fresh Llama.

Initialising takes the checkpoint's weights only (:func:`load_model`): the optimizer, the data order and the step
count start fresh. Resuming a killed run (``checkpoint_dir/latest``: weights, optimizer, data position) is separate
and works the same for such a run. :func:`check` runs before torch: the checkpoint must be a causal LM whose positions
cover the context and whose embedding covers the packed tokens, and the tokens must have been packed with its own
tokenizer (the tokenizer stage records which checkpoint in ``models/tokenizer/base_checkpoint.json``).
:func:`export_model` writes the trained weights in the checkpoint's own architecture (``save_pretrained``), with the
tokenizer, samples, the summary and ``base_checkpoint.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tasks.atomic import atomic_dir
from tasks.modeling.errors import ConfigError
from tasks.modeling.source import CheckpointError, read_provenance, write_provenance
from tasks.modeling.source import check as check_checkpoint

SETTING = "pretrain.checkpoint"
POSITION_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "seq_length", "max_seq_len")
"""Where a ``config.json`` states the longest sequence (Llama/Qwen2/BERT, GPT-2, older GPT-2, ChatGLM, MPT)."""


def max_positions(config: dict[str, Any]) -> tuple[str, int] | None:
    """``(key, value)`` of the longest sequence a checkpoint's ``config.json`` states, or None when it states none."""
    for key in POSITION_KEYS:
        if isinstance(config.get(key), int) and config[key] > 0:
            return key, int(config[key])
    return None


def check_context(config: dict[str, Any], *, context: int) -> None:
    """ConfigError naming ``pretrain.context`` when it exceeds the checkpoint's maximum positions."""
    limit = max_positions(config)
    if limit is not None and context > limit[1]:
        raise ConfigError(f"pretrain.context {context} exceeds the {limit[1]} positions of {SETTING} "
                          f"({limit[0]} in its config.json): lower pretrain.context to at most {limit[1]}")


def check(*, directory: Path, digest: str, context: int, manifest: dict[str, Any],
          tokenizer_dir: Path) -> dict[str, Any]:
    """Check, before torch, that the run can start from the checkpoint in ``directory``; returns what the loop needs
    of its shape (``num_layers``, ``hidden_size``) and what it is (``model_type``, ``vocab_size``).

    Args:
        directory: the checkpoint (config.json, weights).
        digest: its content digest (``tasks.modeling.source.Checkpoint.digest``).
        context: tokens per training window.
        manifest: the packed tokens' manifest.
        tokenizer_dir: the tokenizer the tokens were packed with (the tokenizer stage's models/tokenizer).

    Raises:
        CheckpointError: not a causal LM checkpoint, an embedding smaller than the tokens' vocabulary, or tokens
            packed with another tokenizer than the checkpoint's. ConfigError: ``context`` beyond its positions.
    """
    config = check_checkpoint(Path(directory), setting=SETTING, needs_decoder=True)
    check_context(config, context=context)
    made_from = read_provenance(Path(tokenizer_dir))
    if made_from is None or made_from.get("digest") != digest:
        what = "lmforge's own BPE" if made_from is None else f"checkpoint {made_from.get('source')!r}"
        raise CheckpointError(f"{SETTING}: {tokenizer_dir} and the packed tokens come from {what}, not from this "
                              f"checkpoint ({digest[:19]}...): run the tokenizer stage again (lmforge run tokenizer), "
                              "which packs the corpus with the checkpoint's own tokenizer")
    rows = config.get("vocab_size")
    if isinstance(rows, int) and int(manifest["vocab_size"]) > rows:
        raise CheckpointError(f"{SETTING}: the packed tokens have a {manifest['vocab_size']}-token vocabulary but "
                              f"the model has {rows} embedding rows: the tokenizer does not match the model")
    from transformers import AutoConfig

    shape = AutoConfig.from_pretrained(str(directory))  # attribute maps: GPT-2's n_layer is num_hidden_layers
    return {"num_layers": int(shape.num_hidden_layers), "hidden_size": int(shape.hidden_size),
            "model_type": str(config["model_type"]), "vocab_size": rows}


def load_model(directory: Path, *, precision: str, ds_config: dict[str, Any] | None = None) -> Any:
    """The checkpoint's causal LM (``AutoModelForCausalLM``, its own architecture and config) in the run's precision
    (bf16 weights when the run is bf16: half the memory of loading fp32 and casting), in training mode.

    Under ZeRO-3 (``ds_config``'s stage 3) the weights are loaded partitioned (``tasks.modeling.source.partitioned``:
    each process keeps its shard), so a model larger than one process's memory can start a run; every process must
    call this then.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from tasks.modeling.source import partitioned

    with partitioned(ds_config):
        model = AutoModelForCausalLM.from_pretrained(str(directory),
                                                     dtype=torch.bfloat16 if precision == "bf16" else torch.float32)
    model.config.use_cache = False
    model.train()
    return model


def export_model(state: dict[str, Any], *, config: Any, out_dir: Path, tokenizer_dir: Path, dtype: str,
                 summary: dict[str, Any], provenance: dict[str, Any], sample_prompts: list[str],
                 sample_max_new_tokens: int) -> None:
    """Write the trained model atomically in the checkpoint's architecture: weights (``save_pretrained``), tokenizer,
    ``samples.json``, ``train_summary.json`` and ``base_checkpoint.json`` (``provenance``).

    Args:
        state: the full state dict (``tasks.modeling.export.gather_state`` on rank 0).
        config: the trained model's ``PretrainedConfig`` (the checkpoint's).
        out_dir: the model directory, replaced as a whole.
        tokenizer_dir: the tokenizer the tokens were packed with (the checkpoint's own).
        dtype: ``bfloat16`` or ``float32``, the saved weights' type.
        summary: what the model is (steps, tokens, val history...), a function of config and data only.
        provenance: the base checkpoint (``tasks.modeling.source.Checkpoint.provenance``).
        sample_prompts: prompts completed greedily by the exported files.
        sample_max_new_tokens: tokens generated per prompt.
    """
    import copy

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tasks.modeling.export import SAMPLES_FILE, SUMMARY_FILE, sample

    config = copy.deepcopy(config)
    config.use_cache = True
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    model.load_state_dict(state)
    with atomic_dir(Path(out_dir)) as tmp:
        model.save_pretrained(str(tmp))
        AutoTokenizer.from_pretrained(str(tokenizer_dir)).save_pretrained(str(tmp))
        write_provenance(tmp, provenance)
        # samples come from the exported files, so they also prove the export loads
        samples = sample(tmp, tokenizer_dir=tokenizer_dir, prompts=sample_prompts, max_new_tokens=sample_max_new_tokens)
        (tmp / SAMPLES_FILE).write_text(json.dumps(samples, indent=2) + "\n", encoding="utf-8")
        (tmp / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
