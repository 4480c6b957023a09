"""Pruning for the compress recipe: magnitude pruning and structured head/neuron pruning, for any architecture whose
layers ``tasks.modeling.layout`` knows (Llama, BERT, GPT-2...).

Every function takes a transformers model (causal LM, encoder or sequence classifier) or the multi-task module around
one (``tasks.modeling.heads``), and touches only the transformer layers' projections (Llama's q, k, v, o, gate, up,
down; BERT's query, key, value and dense layers; GPT-2's Conv1D c_attn, c_proj, c_fc): the embeddings (tied to the LM
head) and the classification heads are small here and every token goes through them.

- :func:`magnitude_prune` zeroes weights in place (plain tensors, no ``torch.nn.utils.prune`` hooks), so the zeros
  are in whatever ``save_pretrained`` writes; :func:`apply_masks` re-zeroes them after each recovery step.
- :func:`structured_prune` shrinks the matrices and the config, so plain ``from_pretrained`` loads the result. MLP
  neurons go for every architecture with a known MLP layout; attention heads for the Llama layout only (q/k/v/o
  projections, ``num_key_value_heads``): BERT and GPT-2 derive the head size from ``hidden_size / heads``, and
  transformers 5 dropped ``prune_heads``, so a config with fewer heads cannot describe them (:func:`structured_skips`
  says so and the compress recipe records it). transformers 5.x refuses a Llama config whose ``hidden_size`` is not a
  multiple of ``num_attention_heads`` (even with an explicit ``head_dim``): 4 heads of a 128-wide model can become 2
  or 1, never 3. Under grouped-query attention a key/value head goes with its query heads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tasks.modeling.quantize import CompressionError, prunable_weights

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    import torch

__all__ = ["CompressionError", "apply_masks", "importance_scores", "magnitude_importance", "magnitude_prune",
           "prunable_weights", "sparsity", "structured_prune", "structured_skips"]


def magnitude_prune(model: Any, *, sparsity: float) -> dict[str, torch.Tensor]:
    """Global unstructured magnitude pruning: zero the ``sparsity`` fraction of smallest-magnitude weights over all
    transformer-layer projections together (so layers end up with different sparsities).

    Returns:
        ``{parameter name: bool mask}`` (True = kept), for :func:`apply_masks`.
    """
    import torch

    if not 0.0 <= sparsity < 1.0:
        raise CompressionError(f"sparsity {sparsity} must be in [0, 1): the fraction of weights set to zero")
    weights = prunable_weights(model)
    with torch.no_grad():
        scores = torch.cat([w.detach().abs().flatten().float() for w in weights.values()])
        drop = round(sparsity * scores.numel())
        keep = torch.ones_like(scores, dtype=torch.bool)
        if drop:  # exactly `drop` zeros: topk breaks ties by position, a threshold would take every tie
            keep[torch.topk(scores, drop, largest=False).indices] = False
        masks, start = {}, 0
        for name, w in weights.items():
            masks[name] = keep[start:start + w.numel()].view_as(w).clone()
            start += w.numel()
    apply_masks(model, masks)
    return masks


def apply_masks(model: Any, masks: dict[str, torch.Tensor]) -> None:
    """Zero the masked-out weights again (call after each optimizer step of a recovery fine-tune)."""
    import torch

    params = dict(model.named_parameters(remove_duplicate=False))
    with torch.no_grad():
        for name, mask in masks.items():
            params[name].mul_(mask.to(params[name].device))


def sparsity(model: Any) -> float:
    """Fraction of the transformer-layer projection weights that are exactly zero."""
    weights = prunable_weights(model).values()
    return sum(int((w == 0).sum()) for w in weights) / sum(int(w.numel()) for w in weights)


def _llama_layers(model: Any) -> list[Any]:
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    layers = [m for m in model.modules() if isinstance(m, LlamaDecoderLayer)]
    if not layers:
        raise CompressionError(f"{type(model).__name__} has no Llama decoder layers: Taylor importance needs a "
                               "transformers Llama or the multi-task module around one")
    return layers


def _heads_prunable(layer: Any) -> bool:
    """The Llama attention layout: q/k/v/o projections and a config with key/value heads."""
    att = getattr(layer, "self_attn", None)
    return att is not None and all(hasattr(att, p) for p in ("q_proj", "k_proj", "v_proj", "o_proj")) and \
        hasattr(getattr(att, "config", None), "num_key_value_heads")


def _mlps(model: Any) -> tuple[list[Any], list[Any]]:
    """The layers and their MLPs; CompressionError when a layer's MLP layout is not known."""
    from tasks.modeling.layout import layers, mlp_of

    found = layers(model)
    mlps = [mlp_of(layer) for layer in found]
    if not found or any(m is None for m in mlps):
        raise CompressionError(f"{type(model).__name__}: no transformer layers with a known MLP layout "
                               "(tasks.modeling.layout.MLP_LAYOUTS): structured pruning cannot find its neurons")
    return found, mlps


def structured_skips(model: Any, *, heads_fraction: float) -> dict[str, str]:
    """What :func:`structured_prune` cannot do for this model and why: ``{"variant": reason}`` when no MLP is found
    (nothing to prune), ``{"heads": reason}`` when heads are asked for but the attention is not the Llama layout
    (neurons are still pruned); empty when everything asked for can be done."""
    try:
        found, _ = _mlps(model)
    except CompressionError as err:
        return {"variant": str(err)}
    if heads_fraction and not all(_heads_prunable(layer) for layer in found):
        kind = getattr(getattr(model, "config", None), "model_type", None) or type(found[0]).__name__
        return {"heads": f"{kind} attention derives its head size from hidden_size / num_attention_heads and "
                         "transformers 5 has no prune_heads: a config with fewer heads cannot describe it; only MLP "
                         "neurons were pruned"}
    return {}


def importance_scores(model: Any, batches: Iterable[Any],
                      loss_fn: Callable[[Any, Any], torch.Tensor]) -> dict[str, Any]:
    """First-order Taylor importance of every attention head and MLP neuron (Michel et al. 2019).

    Gating a head's output by ``xi`` gives ``dL/dxi = sum(W_o[:, head] * grad W_o[:, head])`` (and likewise a
    neuron's ``down_proj`` column), so the gate gradient comes from the ordinary weight gradients; its absolute
    value is summed over the batches. Dropout is off while scoring; the model's ``.grad`` are cleared afterwards.

    Args:
        model: the model to score (its weights are not changed).
        batches: a few batches, each handed to ``loss_fn``.
        loss_fn: ``loss_fn(model, batch)`` -> scalar loss tensor.

    Returns:
        ``{"heads": [per layer: (num_attention_heads,) scores], "neurons": [per layer: (intermediate,) scores]}``.
    """
    import torch

    layers, was_training = _llama_layers(model), model.training
    params = [p for layer in layers for p in (layer.self_attn.o_proj.weight, layer.mlp.down_proj.weight)]
    grad_flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    heads = [torch.zeros(layer.self_attn.config.num_attention_heads) for layer in layers]
    neurons = [torch.zeros(layer.mlp.down_proj.in_features) for layer in layers]
    model.eval()
    try:
        for batch in batches:
            model.zero_grad(set_to_none=True)
            loss_fn(model, batch).backward()
            with torch.no_grad():
                for i, layer in enumerate(layers):
                    o = layer.self_attn.o_proj.weight
                    gate = (o.float() * o.grad.float()).sum(0).view(len(heads[i]), -1).sum(-1)
                    heads[i] += gate.abs().cpu()
                    d = layer.mlp.down_proj.weight
                    neurons[i] += (d.float() * d.grad.float()).sum(0).abs().cpu()
    finally:
        model.zero_grad(set_to_none=True)
        for p, flag in zip(params, grad_flags, strict=True):
            p.requires_grad_(flag)
        model.train(was_training)
    return {"heads": heads, "neurons": neurons}


def magnitude_importance(model: Any) -> dict[str, Any]:
    """Weight-magnitude importance in :func:`importance_scores`' format: a neuron's summed ``|w|`` over the weights
    that make it and the one that reads it (Llama: its gate and up rows and down column); a head's over its q, k, v
    rows and o columns (k, v shared by the group), for the Llama attention layout only (None per layer elsewhere)."""
    import torch

    heads, neurons = [], []
    found, mlps = _mlps(model)
    with torch.no_grad():
        for layer, mlp in zip(found, mlps, strict=True):
            if _heads_prunable(layer):
                att = layer.self_attn
                h, g, d = att.config.num_attention_heads, att.num_key_value_groups, att.head_dim
                q = att.q_proj.weight.abs().float().view(h, d, -1).sum((1, 2))
                o = att.o_proj.weight.abs().float().view(-1, h, d).sum((0, 2))
                kv = sum(p.weight.abs().float().view(h // g, d, -1).sum((1, 2)) for p in (att.k_proj, att.v_proj))
                heads.append(q + o + kv.repeat_interleave(g))
            else:
                heads.append(None)
            parts = [w.abs().float().sum(1 - axis) for w, axis in mlp.unit_weights()]
            neurons.append(sum(parts[1:], parts[0]))
    return {"heads": heads, "neurons": neurons}


def _span(units: torch.Tensor, size: int) -> torch.Tensor:
    """The rows of ``units`` blocks of ``size`` rows each (heads to their rows, groups to their heads)."""
    import torch

    return (units[:, None] * size + torch.arange(size, device=units.device)).flatten()


def structured_prune(model: Any, *, heads_fraction: float, neurons_fraction: float,
                     importance: dict[str, Any] | None = None) -> Any:
    """Remove the least important attention heads and MLP neurons of every layer, shrinking the matrices and the
    config, in place. Every layer loses the same number (transformers configs hold one head count and one MLP width).

    Args:
        model: a transformers model or the multi-task module around one; build its optimizer afterwards (the pruned
            weights are new parameters).
        heads_fraction: fraction of the key/value groups (the heads, without grouped-query attention) removed per
            layer; the kept head count must divide ``hidden_size`` (the error lists the fractions that do). Llama
            attention layout only: 0 elsewhere (:func:`structured_skips`).
        neurons_fraction: fraction of the MLP neurons removed per layer.
        importance: :func:`importance_scores`' result; None scores by weight magnitude
            (:func:`magnitude_importance`).

    Returns:
        ``model``, pruned, with the MLP width (``intermediate_size``, GPT-2's ``n_inner``) and, when heads go,
        ``num_attention_heads``, ``num_key_value_heads`` and ``head_dim`` updated in its config.

    Raises:
        CompressionError: a fraction out of range, a head count transformers cannot load, heads asked of an
            attention that is not the Llama layout, or no known MLP.
    """
    import torch

    from tasks.modeling.layout import shrink, width_key

    for name, frac in (("heads_fraction", heads_fraction), ("neurons_fraction", neurons_fraction)):
        if not 0.0 <= frac < 1.0:
            raise CompressionError(f"{name} {frac} must be in [0, 1): the fraction removed from each layer")
    found, mlps = _mlps(model)
    if heads_fraction and (reason := structured_skips(model, heads_fraction=heads_fraction).get("heads")):
        raise CompressionError(f"heads_fraction {heads_fraction}: {reason}; set it to 0")
    prune_heads = all(_heads_prunable(layer) for layer in found)
    if prune_heads:
        config = found[0].self_attn.config
        heads, kv_heads, hidden = config.num_attention_heads, config.num_key_value_heads, config.hidden_size
        group, head_dim = heads // kv_heads, found[0].self_attn.head_dim
        # few heads: a fraction that is not a whole feasible number of groups is refused, never silently rounded
        allowed = {round(1 - k / kv_heads, 4): k for k in range(kv_heads, 0, -1) if hidden % (k * group) == 0}
        near = [f for f in allowed if abs(f - heads_fraction) < 1e-3]
        if not near:
            raise CompressionError(f"heads_fraction {heads_fraction} is not a whole number of the {kv_heads} "
                                   f"key/value groups ({heads} heads) leaving a head count that divides hidden_size "
                                   f"{hidden}, as transformers needs: use one of {sorted(allowed)}")
        kept_groups = allowed[near[0]]
    width = mlps[0].width
    kept_neurons = width - round(neurons_fraction * width)
    if kept_neurons < 1:
        raise CompressionError(f"neurons_fraction {neurons_fraction} removes every MLP neuron: lower it")
    scores = importance or magnitude_importance(model)
    with torch.no_grad():
        for i, (layer, mlp) in enumerate(zip(found, mlps, strict=True)):
            if prune_heads:
                att = layer.self_attn
                by_group = scores["heads"][i].float().view(kv_heads, group).sum(-1)
                groups = torch.topk(by_group, kept_groups).indices.sort().values.to(att.q_proj.weight.device)
                kv_rows, q_rows = _span(groups, head_dim), _span(_span(groups, group), head_dim)
                for proj, index, makes in ((att.q_proj, q_rows, True), (att.k_proj, kv_rows, True),
                                           (att.v_proj, kv_rows, True), (att.o_proj, q_rows, False)):
                    shrink(proj, index, makes=makes)
            keep = torch.topk(scores["neurons"][i].float(), kept_neurons).indices.sort().values
            for proj in mlp.inputs:
                shrink(proj, keep, makes=True)
            shrink(mlp.output, keep, makes=False)
            owner: Any = getattr(layer, "mlp", None)
            if hasattr(owner, "intermediate_size"):  # Llama's MLP keeps its own
                owner.intermediate_size = kept_neurons
    # the layers share the model's config object; set it on every config in case a wrapper holds a copy
    configs: dict[int, Any] = {id(c): c for c in (getattr(m, "config", None) for m in model.modules())
                               if hasattr(c, "model_type")}
    for cfg in configs.values():
        if (key := width_key(cfg)) is not None:
            setattr(cfg, key, kept_neurons)
        if prune_heads:
            cfg.head_dim = head_dim  # explicit: no longer hidden_size // num_attention_heads
            cfg.num_attention_heads, cfg.num_key_value_heads = kept_groups * group, kept_groups
    return model
