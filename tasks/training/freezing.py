"""Which parameters train: frozen embeddings and first layers, ULMFiT's gradual unfreezing, LoRA's frozen backbone.

A frozen parameter has ``requires_grad = False``: it gets no gradient, so the torch AdamW skips it (no moment, no
decay) and DeepSpeed does not reduce it; its bytes are exactly the base model's after training. Gradual unfreezing
turns parameters on during the run, which needs ZeRO stage 0 (ZeRO 1-3 fix their flat buffers at the start).

Parts of a Llama parameter name: ``embed`` (``embed_tokens``, and the LM head when tied), ``layer.<i>``, ``norm``
(the final norm), ``lm_head`` (untied), ``head`` (a new classification head).
"""

from __future__ import annotations

import re
from typing import Any

from tasks.training.multitask import HEAD_PREFIX

_LAYER = re.compile(r"\blayers\.(\d+)\.")


def part_of(name: str) -> str:
    """The part of the model a parameter name belongs to (see the module docstring)."""
    if name.startswith(HEAD_PREFIX):
        return "head"
    if "lora_" in name:
        return "adapter"
    if (m := _LAYER.search(name)) is not None:
        return f"layer.{int(m.group(1))}"
    if "embed_tokens" in name:
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


def unfreeze_steps(*, num_layers: int, unfreeze_every: int | None) -> list[int]:
    """The steps at which the trainable set changes under gradual unfreezing (empty when off)."""
    if unfreeze_every is None:
        return []
    return [k * unfreeze_every for k in range(1, num_layers + 2)]
