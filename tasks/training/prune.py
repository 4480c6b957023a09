"""Pruning for the compress recipe: magnitude pruning and structured head/neuron pruning.

Every function takes a transformers Llama (causal LM or sequence classifier) or the multi-task module around one
(``tasks.modeling.heads``), and touches only the decoder layers' projections (q, k, v, o, gate, up, down): the
embeddings (tied to the LM head) and the classification heads are small here and every token goes through them.

- :func:`magnitude_prune` zeroes weights in place (plain tensors, no ``torch.nn.utils.prune`` hooks), so the zeros
  are in whatever ``save_pretrained`` writes; :func:`apply_masks` re-zeroes them after each recovery step.
- :func:`structured_prune` shrinks the matrices and the config, so plain ``from_pretrained`` loads the result.
  transformers 5.x refuses a Llama config whose ``hidden_size`` is not a multiple of ``num_attention_heads`` (even
  with an explicit ``head_dim``): 4 heads of a 128-wide model can become 2 or 1, never 3. Under grouped-query
  attention a key/value head goes with its query heads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tasks.modeling.quantize import CompressionError, prunable_weights

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    import torch

__all__ = ["CompressionError", "apply_masks", "importance_scores", "magnitude_importance", "magnitude_prune",
           "prunable_weights", "sparsity", "structured_prune"]


def magnitude_prune(model: Any, *, sparsity: float) -> dict[str, torch.Tensor]:
    """Global unstructured magnitude pruning: zero the ``sparsity`` fraction of smallest-magnitude weights over all
    decoder-layer projections together (so layers end up with different sparsities).

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
    """Fraction of the decoder-layer projection weights that are exactly zero."""
    weights = prunable_weights(model).values()
    return sum(int((w == 0).sum()) for w in weights) / sum(int(w.numel()) for w in weights)


def _layers(model: Any) -> list[Any]:
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    layers = [m for m in model.modules() if isinstance(m, LlamaDecoderLayer)]
    if not layers:
        raise CompressionError(f"{type(model).__name__} has no Llama decoder layers: structured pruning needs a "
                               "transformers Llama or finetune's multi-task module")
    return layers


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

    layers, was_training = _layers(model), model.training
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
    """Weight-magnitude importance in :func:`importance_scores`' format: a head's summed ``|w|`` over its q, k, v
    rows and o columns (k, v shared by the group), a neuron's over its gate and up rows and down column."""
    import torch

    heads, neurons = [], []
    with torch.no_grad():
        for layer in _layers(model):
            att, mlp = layer.self_attn, layer.mlp
            h, g, d = att.config.num_attention_heads, att.num_key_value_groups, att.head_dim
            q = att.q_proj.weight.abs().float().view(h, d, -1).sum((1, 2))
            o = att.o_proj.weight.abs().float().view(-1, h, d).sum((0, 2))
            kv = sum(p.weight.abs().float().view(h // g, d, -1).sum((1, 2)) for p in (att.k_proj, att.v_proj))
            heads.append(q + o + kv.repeat_interleave(g))
            neurons.append(mlp.gate_proj.weight.abs().float().sum(1) + mlp.up_proj.weight.abs().float().sum(1)
                            + mlp.down_proj.weight.abs().float().sum(0))
    return {"heads": heads, "neurons": neurons}


def _span(units: torch.Tensor, size: int) -> torch.Tensor:
    """The rows of ``units`` blocks of ``size`` rows each (heads to their rows, groups to their heads)."""
    import torch

    return (units[:, None] * size + torch.arange(size, device=units.device)).flatten()


def _shrink(linear: Any, index: torch.Tensor, *, dim: int) -> None:
    """Keep only ``index`` along the weight's ``dim`` (0: output rows, 1: input columns), in place."""
    from torch import nn

    index = index.to(linear.weight.device)
    linear.weight = nn.Parameter(linear.weight.detach().index_select(dim, index).clone(),
                                 requires_grad=linear.weight.requires_grad)
    if dim == 0 and linear.bias is not None:
        linear.bias = nn.Parameter(linear.bias.detach()[index].clone(), requires_grad=linear.bias.requires_grad)
    linear.out_features, linear.in_features = linear.weight.shape


def structured_prune(model: Any, *, heads_fraction: float, neurons_fraction: float,
                     importance: dict[str, Any] | None = None) -> Any:
    """Remove the least important attention heads and MLP neurons of every layer, shrinking the matrices and the
    config, in place. Every layer loses the same number (HF Llama has one head count and one MLP width).

    Args:
        model: a Llama or the multi-task module; build its optimizer afterwards (the pruned weights are new
            parameters).
        heads_fraction: fraction of the key/value groups (the heads, without grouped-query attention) removed per
            layer; the kept head count must divide ``hidden_size`` (the error lists the fractions that do).
        neurons_fraction: fraction of the MLP neurons removed per layer.
        importance: :func:`importance_scores`' result; None scores by weight magnitude
            (:func:`magnitude_importance`).

    Returns:
        ``model``, pruned, with ``num_attention_heads``, ``num_key_value_heads``, ``head_dim`` and
        ``intermediate_size`` updated in its config.
    """
    import torch

    layers = _layers(model)
    config = layers[0].self_attn.config
    heads, kv_heads, hidden = config.num_attention_heads, config.num_key_value_heads, config.hidden_size
    group, head_dim, width = heads // kv_heads, layers[0].self_attn.head_dim, layers[0].mlp.down_proj.in_features
    for name, frac in (("heads_fraction", heads_fraction), ("neurons_fraction", neurons_fraction)):
        if not 0.0 <= frac < 1.0:
            raise CompressionError(f"{name} {frac} must be in [0, 1): the fraction removed from each layer")
    # few heads: a fraction that is not a whole feasible number of groups is refused, never silently rounded
    allowed = {round(1 - k / kv_heads, 4): k for k in range(kv_heads, 0, -1) if hidden % (k * group) == 0}
    near = [f for f in allowed if abs(f - heads_fraction) < 1e-3]
    if not near:
        raise CompressionError(f"heads_fraction {heads_fraction} is not a whole number of the {kv_heads} key/value "
                               f"groups ({heads} heads) leaving a head count that divides hidden_size {hidden}, as "
                               f"transformers needs: use one of {sorted(allowed)}")
    kept_groups = allowed[near[0]]
    kept_neurons = width - round(neurons_fraction * width)
    if kept_neurons < 1:
        raise CompressionError(f"neurons_fraction {neurons_fraction} removes every MLP neuron: lower it")
    scores = importance or magnitude_importance(model)
    with torch.no_grad():
        for i, layer in enumerate(layers):
            att, mlp = layer.self_attn, layer.mlp
            by_group = scores["heads"][i].float().view(kv_heads, group).sum(-1)
            groups = torch.topk(by_group, kept_groups).indices.sort().values.to(att.q_proj.weight.device)
            kv_rows, q_rows = _span(groups, head_dim), _span(_span(groups, group), head_dim)
            for proj, index, dim in ((att.q_proj, q_rows, 0), (att.k_proj, kv_rows, 0), (att.v_proj, kv_rows, 0),
                                     (att.o_proj, q_rows, 1)):
                _shrink(proj, index, dim=dim)
            keep = torch.topk(scores["neurons"][i].float(), kept_neurons).indices.sort().values
            for proj, dim in ((mlp.gate_proj, 0), (mlp.up_proj, 0), (mlp.down_proj, 1)):
                _shrink(proj, keep, dim=dim)
            mlp.intermediate_size = kept_neurons
    # attention modules share the model's config object; set it there too in case a wrapper holds a copy
    for cfg in {id(c): c for c in [config, *(getattr(m, "config", None) for m in model.modules())]
                if c is not None and getattr(c, "model_type", None) == "llama"}.values():
        cfg.head_dim = head_dim  # explicit: no longer hidden_size // num_attention_heads
        cfg.num_attention_heads, cfg.num_key_value_heads = kept_groups * group, kept_groups
        cfg.intermediate_size = kept_neurons
    return model
