"""Which parameters train: frozen embeddings and first layers, ULMFiT's gradual unfreezing, LoRA adapters (peft).

A frozen parameter has ``requires_grad = False``: it gets no gradient, so the torch AdamW skips it (no moment, no
decay) and DeepSpeed does not reduce it; its bytes are exactly the base model's after training. Gradual unfreezing
turns parameters on during the run, which needs ZeRO stage 0 (ZeRO 1-3 fix their flat buffers at the start).

Parts of a parameter name, whatever the architecture calls them: ``embed`` (Llama's ``embed_tokens``, GPT-2's ``wte``
and ``wpe``, BERT's ``embeddings.*``; the LM head when tied), ``layer.<i>`` (Llama's ``layers.<i>``, BERT's
``encoder.layer.<i>``, GPT-2's ``h.<i>``...), ``norm`` (what follows the layers: the final norm, BERT's pooler),
``lm_head`` (untied), ``head`` (a new classification head), ``adapter`` (LoRA's A and B).

LoRA: the update of a target layer is ``(alpha / rank) * B @ A``; B starts at zero, so training starts from the base
model exactly. The base weights stay frozen (bit-identical); the new classification heads train fully (they live
outside the peft model). The export saves the adapter alone and the merged model (``merge_and_unload``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tasks.modeling.heads import HEAD_PREFIX

_LAYER = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)\.")
_EMBED = re.compile(r"embed|(?:^|\.)w[tp]e\.")


def part_of(name: str) -> str:
    """The part of the model a parameter name belongs to (see the module docstring)."""
    if name.startswith(HEAD_PREFIX):
        return "head"
    if "lora_" in name:
        return "adapter"
    if (m := _LAYER.search(name)) is not None:
        return f"layer.{int(m.group(1))}"
    if _EMBED.search(name):
        return "embed"
    if "lm_head" in name:
        return "lm_head"
    return "norm"


def trainable_parts(step: int, *, num_layers: int, strategy: str = "full", freeze_embeddings: bool = False,
                    freeze_layers: int = 0, unfreeze_every: int | None = None) -> set[str]:
    """The parts that train at 0-based ``step``.

    Args:
        step: the optimizer step about to run.
        num_layers: decoder layers of the backbone.
        strategy: ``full`` or ``lora`` (adapters and heads only).
        freeze_embeddings: ``full``: keep the embeddings (and a tied LM head) fixed.
        freeze_layers: ``full``: keep decoder layers ``0 .. N-1`` fixed.
        unfreeze_every: gradual unfreezing: heads, final norm and untied LM head from step 0; after every
            ``unfreeze_every`` steps one more decoder layer from the top (step ``k * unfreeze_every`` unfreezes layer
            ``num_layers - k``); the embeddings once every layer trains. ``freeze_*`` still hold.
    """
    if strategy == "lora":
        return {"head", "adapter"}
    layers = set(range(freeze_layers, num_layers))
    parts = {"head", "norm", "lm_head", "embed"}
    if unfreeze_every is not None:
        open_layers = step // unfreeze_every
        layers &= set(range(num_layers - open_layers, num_layers))
        if open_layers <= num_layers:
            parts.discard("embed")
    if freeze_embeddings:
        parts.discard("embed")
    return parts | {f"layer.{i}" for i in layers}


def apply_trainable(model: Any, parts: set[str]) -> int:
    """Set ``requires_grad`` of every parameter of ``model`` from its part; returns the trainable count.

    A tied LM head is the embedding itself (one parameter), so it follows ``embed``.
    """
    total = 0
    for name, p in model.named_parameters(remove_duplicate=True):
        p.requires_grad_(part_of(name) in parts)
        total += p.numel() if p.requires_grad else 0
    return total


def layer_count(model: Any) -> int:
    """How many numbered transformer layers the parameter names of ``model`` show (0 when none is recognised)."""
    return len({m.group(1) for name, _ in model.named_parameters() if (m := _LAYER.search(name)) is not None})


def unfreeze_steps(*, num_layers: int, unfreeze_every: int | None) -> list[int]:
    """The steps at which the trainable set changes under gradual unfreezing (empty when off)."""
    if unfreeze_every is None:
        return []
    return [k * unfreeze_every for k in range(1, num_layers + 2)]


def add_lora(model: Any, *, rank: int, alpha: float, dropout: float, target_modules: list[str] | None) -> Any:
    """Wrap a causal LM or bare encoder in a peft model with adapters on ``target_modules`` (None: every linear layer
    but the output layer, peft's ``all-linear``, whatever the architecture names them; seed torch's RNG first: A is
    random). Only the adapters train.

    Raises:
        ConfigError: a target module name matches no layer of this architecture.
    """
    from peft import LoraConfig, get_peft_model

    from tasks.modeling.errors import ConfigError

    causal = model.get_output_embeddings() is not None
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout,
                        target_modules="all-linear" if target_modules is None else list(target_modules),
                        bias="none", task_type="CAUSAL_LM" if causal else "FEATURE_EXTRACTION")
    try:
        return get_peft_model(model, config)
    except ValueError as err:  # peft: "Target modules {...} not found in the base model"
        names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if type(m).__name__ in
                        ("Linear", "Conv1D")})
        raise ConfigError(f"lora.target_modules {target_modules} do not fit this {model.config.model_type} model "
                          f"({err}); its linear layers are named {names}, or set null for all of them") from err


def backbone_state(state: dict[str, Any]) -> dict[str, Any]:
    """The backbone's entries of a multi-task state dict, keys without the ``backbone.`` prefix."""
    return {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}


def merged_backbone(*, base_model_dir: Path, state: dict[str, Any], rank: int, alpha: float, dropout: float,
                    target_modules: list[str] | None, dtype: str, causal: bool,
                    adapter_dir: Path | None = None) -> Any:
    """The plain backbone (causal LM or encoder, as trained) with the trained adapters of ``state`` merged into the
    base weights (``merge_and_unload``); the adapter alone is saved to ``adapter_dir`` first when given (loadable
    with ``PeftModel.from_pretrained`` on the base model).

    Args:
        base_model_dir: the base model the adapters were trained on.
        state: the multi-task module's state dict (backbone entries carry the peft names).
        rank, alpha, dropout, target_modules: the LoRA settings of the run.
        dtype: the merged model's parameter dtype.
        causal: the backbone was the causal LM (else the bare encoder).
        adapter_dir: where to save the adapter (``save_pretrained``), or None.
    """
    from tasks.modeling.heads import load_backbone

    model = load_backbone(base_model_dir, dtype=dtype, causal=causal)
    peft_model = add_lora(model, rank=rank, alpha=alpha, dropout=dropout, target_modules=target_modules)
    missing, unexpected = peft_model.load_state_dict(backbone_state(state), strict=False)
    if unexpected or any("lora_" in k for k in missing):
        raise RuntimeError(f"LoRA state does not fit the peft model: missing {missing[:3]}, unexpected "
                           f"{unexpected[:3]}")
    peft_model.eval()
    if adapter_dir is not None:
        peft_model.save_pretrained(str(adapter_dir))
    return peft_model.merge_and_unload()
