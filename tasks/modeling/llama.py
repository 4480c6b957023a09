"""The language model: a Llama (``transformers.LlamaForCausalLM``) built from explicit shape arguments, its checks.

Components never see a config object (torchtune's rule): the training entry points pass keyword arguments, so the
same builder serves pretraining, fine-tuning and distillation. :func:`check_model_shape` runs before any heavy import,
so a bad shape fails in milliseconds with a message that says which setting to change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from transformers import LlamaForCausalLM


class ModelConfigError(ValueError):
    """The model's shape settings are inconsistent; the message names the setting to change."""

    exit_code = 2


def check_model_shape(*, vocab_size: int, hidden_size: int, num_layers: int, num_heads: int, num_kv_heads: int,
                      intermediate_size: int, max_position_embeddings: int, bos_token_id: int | None = None,
                      eos_token_id: int | None = None, pad_token_id: int | None = None) -> None:
    """Raise :class:`ModelConfigError` unless the shape describes a buildable Llama.

    Args:
        vocab_size: embedding rows; must exceed every special id.
        hidden_size: model width; a multiple of ``num_heads``.
        num_layers: decoder layers, at least 1.
        num_heads: query heads; a multiple of ``num_kv_heads``; the head size must be even (RoPE rotates pairs).
        num_kv_heads: key/value heads (grouped-query attention when fewer than ``num_heads``).
        intermediate_size: MLP width.
        max_position_embeddings: the longest sequence the model is built for.
        bos_token_id: BOS id, checked against ``vocab_size`` when given.
        eos_token_id: EOS id, likewise.
        pad_token_id: padding id, likewise.
    """
    positive = {"vocab_size": vocab_size, "hidden_size": hidden_size, "num_layers": num_layers,
                "num_heads": num_heads, "num_kv_heads": num_kv_heads, "intermediate_size": intermediate_size,
                "max_position_embeddings": max_position_embeddings}
    for name, value in positive.items():
        if not isinstance(value, int) or value < 1:
            raise ModelConfigError(f"model.{name} must be a positive integer, got {value!r}")
    if hidden_size % num_heads:
        raise ModelConfigError(f"model.hidden_size {hidden_size} is not divisible by model.num_heads {num_heads}: "
                               "pick a head count that divides the width (e.g. hidden_size // 64 heads)")
    if num_heads % num_kv_heads:
        raise ModelConfigError(f"model.num_heads {num_heads} is not divisible by model.num_kv_heads {num_kv_heads}: "
                               "each key/value head must serve a whole group of query heads")
    if (hidden_size // num_heads) % 2:
        raise ModelConfigError(f"head size hidden_size/num_heads = {hidden_size // num_heads} is odd: rotary "
                               "embeddings need an even head size; change model.hidden_size or model.num_heads")
    for name, token_id in (("bos_token_id", bos_token_id), ("eos_token_id", eos_token_id),
                           ("pad_token_id", pad_token_id)):
        if token_id is not None and not 0 <= token_id < vocab_size:
            raise ModelConfigError(f"{name} {token_id} is outside the vocabulary of {vocab_size} tokens: "
                                   "model.vocab_size must cover the tokenizer")


def build_llama(*, vocab_size: int, hidden_size: int, num_layers: int, num_heads: int, num_kv_heads: int,
                intermediate_size: int, max_position_embeddings: int, rope_theta: float = 10000.0,
                tie_word_embeddings: bool = True, bos_token_id: int | None = 0, eos_token_id: int | None = 1,
                pad_token_id: int | None = 2, dtype: str | torch.dtype | None = None) -> LlamaForCausalLM:
    """A randomly initialised Llama with the given shape (seed torch's RNG first for a reproducible init).

    Args:
        vocab_size: embedding rows (the tokenizer's vocabulary size).
        hidden_size: model width.
        num_layers: decoder layers.
        num_heads: query heads.
        num_kv_heads: key/value heads.
        intermediate_size: MLP width.
        max_position_embeddings: the longest sequence.
        rope_theta: rotary embedding base.
        tie_word_embeddings: share the input embedding with the output projection (fewer parameters, which
            matters at small sizes where the embedding is a large share of the model).
        bos_token_id: BOS id recorded in the config (``generate`` reads it).
        eos_token_id: EOS id; ``generate`` stops on it.
        pad_token_id: padding id.
        dtype: parameter dtype (``"float32"``, ``"bfloat16"`` or a torch dtype); None keeps torch's default.

    Returns:
        The model, in training mode.

    Raises:
        ModelConfigError: the shape is inconsistent (see :func:`check_model_shape`).
    """
    check_model_shape(vocab_size=vocab_size, hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads,
                      num_kv_heads=num_kv_heads, intermediate_size=intermediate_size,
                      max_position_embeddings=max_position_embeddings, bos_token_id=bos_token_id,
                      eos_token_id=eos_token_id, pad_token_id=pad_token_id)
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
                         num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
                         intermediate_size=intermediate_size, max_position_embeddings=max_position_embeddings,
                         rope_theta=rope_theta, tie_word_embeddings=tie_word_embeddings, bos_token_id=bos_token_id,
                         eos_token_id=eos_token_id, pad_token_id=pad_token_id)
    model = LlamaForCausalLM(config)
    if torch_dtype is not None:
        model = model.to(torch_dtype)
        model.config.dtype = torch_dtype
    model.train()
    return model


def count_params(model: Any, *, trainable_only: bool = False) -> int:
    """Distinct parameters of ``model`` (a tied embedding counts once); only trainable ones if asked.

    Under ZeRO-3 a parameter's local tensor is a placeholder, so its ``ds_numel`` (the full size) is used.
    """
    seen: set[int] = set()
    total = 0
    for param in model.parameters():
        if id(param) in seen or (trainable_only and not param.requires_grad):
            continue
        seen.add(id(param))
        total += int(getattr(param, "ds_numel", param.numel()))
    return total


def resolve_shape(*, context: int, manifest: dict[str, Any], vocab_size: int | None, hidden_size: int,
                  num_layers: int, num_heads: int, num_kv_heads: int | None, intermediate_size: int,
                  max_position_embeddings: int | None, rope_theta: float,
                  tie_word_embeddings: bool) -> dict[str, Any]:
    """The :func:`build_llama` keyword arguments for a shape setting and the token manifest, checked.

    Unset values take the data's: ``vocab_size`` the manifest's, ``max_position_embeddings`` the context,
    ``num_kv_heads`` ``num_heads``; the special token ids come from the manifest.

    Args:
        context: tokens per training window.
        manifest: the token files' manifest (``tasks.tokens.read_manifest``).
        vocab_size, hidden_size, num_layers, num_heads, num_kv_heads, intermediate_size, max_position_embeddings,
        rope_theta, tie_word_embeddings: the model shape settings (``tasks.training.config.ModelShape``).

    Raises:
        ModelConfigError: the shape is not buildable, too short for ``context`` or too small for the vocabulary.
    """
    max_pos = max_position_embeddings or context
    if context > max_pos:
        raise ModelConfigError(f"context {context} exceeds model.max_position_embeddings {max_pos}: "
                               "lower context or raise max_position_embeddings")
    kwargs: dict[str, Any] = {"vocab_size": vocab_size or int(manifest["vocab_size"]), "hidden_size": hidden_size,
              "num_layers": num_layers, "num_heads": num_heads, "num_kv_heads": num_kv_heads or num_heads,
              "intermediate_size": intermediate_size, "max_position_embeddings": max_pos, "rope_theta": rope_theta,
              "tie_word_embeddings": tie_word_embeddings, "bos_token_id": manifest.get("bos_id"),
              "eos_token_id": manifest.get("eos_id"), "pad_token_id": manifest.get("pad_id")}
    check_model_shape(**{k: v for k, v in kwargs.items() if k not in ("rope_theta", "tie_word_embeddings")})
    if kwargs["vocab_size"] < int(manifest["vocab_size"]):
        raise ModelConfigError(f"model.vocab_size {kwargs['vocab_size']} is below the tokens' vocabulary of "
                               f"{manifest['vocab_size']}: leave it unset to take the manifest's")
    return kwargs
