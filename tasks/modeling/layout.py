"""Where a transformer architecture keeps what the distill stage touches: its numbered layers, the projections in
them, each layer's MLP and the config key of the MLP's width.

Architectures name these differently: Llama ``model.layers.<i>.mlp.{gate,up,down}_proj``, BERT
``encoder.layer.<i>.{intermediate,output}.dense``, GPT-2 ``transformer.h.<i>.mlp.{c_fc,c_proj}``. GPT-2's projections
are transformers' ``Conv1D``, not ``nn.Linear``: the same affine map with the weight stored transposed (in, out), so
a neuron is a column of ``c_fc`` and a row of ``c_proj``. The functions here hide both differences from the student's
initialisation (``tasks.training.student``), pruning (``tasks.training.prune``) and int8 (``tasks.modeling.quantize``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

LAYER = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)(?=\.|$)")
"""A numbered transformer layer in a module or parameter name (the names ``tasks.training.freezing`` knows)."""
MLP_LAYOUTS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("mlp.gate_proj", "mlp.up_proj"), "mlp.down_proj"),  # Llama, Mistral, Qwen2
    (("intermediate.dense",), "output.dense"),  # BERT family
    (("mlp.c_fc",), "mlp.c_proj"),  # GPT-2 (Conv1D)
)
"""A layer's MLP: the projections that make its neurons, the one that reads them (paths inside the layer)."""


def is_projection(module: Any) -> bool:
    """An ``nn.Linear`` or transformers' ``Conv1D`` (GPT-2)."""
    from torch import nn
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, nn.Linear | Conv1D)


def is_conv1d(module: Any) -> bool:
    """transformers' ``Conv1D``: weight (in, out), ``x @ weight + bias``."""
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, Conv1D)


def layer_projections(model: Any) -> dict[str, Any]:
    """``{module name: projection}`` of every Linear/Conv1D inside a numbered layer (not the embeddings, the LM head,
    a pooler or a classification head)."""
    return {name: m for name, m in model.named_modules() if is_projection(m) and LAYER.search(name)}


def layers(model: Any) -> list[Any]:
    """The numbered transformer layers of ``model`` (a causal LM, an encoder, a sequence classifier or the multi-task
    module around one), in order; empty when none is recognised."""
    found = [m for name, m in model.named_modules() if (hit := LAYER.search(name)) and hit.end() == len(name)
             and not is_projection(m)]
    return list({id(m): m for m in found}.values())


@dataclass
class MLP:
    """One layer's MLP: ``inputs`` make the neurons (each neuron an output unit of every one of them), ``output``
    reads them (each neuron an input unit)."""

    inputs: list[Any]
    output: Any

    @property
    def width(self) -> int:
        """Neurons."""
        return int(self.output.weight.shape[neuron_axis(self.output, makes=False)])

    def unit_weights(self) -> list[tuple[torch.Tensor, int]]:
        """``(weight, neuron axis)`` of every projection, inputs first."""
        return [(m.weight, neuron_axis(m, makes=True)) for m in self.inputs] + \
            [(self.output.weight, neuron_axis(self.output, makes=False))]


def neuron_axis(module: Any, *, makes: bool) -> int:
    """The weight's axis of the MLP's neurons: its output units (``makes``) or input units. ``nn.Linear`` stores
    (out, in), ``Conv1D`` (in, out)."""
    out_axis = 1 if is_conv1d(module) else 0
    return out_axis if makes else 1 - out_axis


def mlp_of(layer: Any) -> MLP | None:
    """The layer's MLP (:data:`MLP_LAYOUTS`), or None for a layout not known here."""
    for inputs, output in MLP_LAYOUTS:
        try:
            modules = [layer.get_submodule(p) for p in (*inputs, output)]
        except AttributeError:
            continue
        if all(is_projection(m) for m in modules):
            return MLP(inputs=modules[:-1], output=modules[-1])
    return None


def width_key(config: Any) -> str | None:
    """The config key of the MLP width: GPT-2's ``n_inner`` (None there means 4 x width), else ``intermediate_size``
    where the config has one."""
    if hasattr(config, "n_inner"):
        return "n_inner"
    return "intermediate_size" if hasattr(config, "intermediate_size") else None


def mlp_width(config: Any) -> int | None:
    """The MLP width a config describes (GPT-2's unset ``n_inner``: 4 x ``hidden_size``)."""
    key = width_key(config)
    if key is None:
        return None
    value = getattr(config, key)
    return int(value) if value is not None else 4 * int(config.hidden_size)


def shrink(module: Any, index: torch.Tensor, *, makes: bool) -> None:
    """Keep only the neurons ``index`` of a projection in place: its output units (``makes``: weight rows of a
    Linear, columns of a Conv1D, and the bias) or its input units."""
    from torch import nn

    axis = neuron_axis(module, makes=makes)
    index = index.to(module.weight.device)
    module.weight = nn.Parameter(module.weight.detach().index_select(axis, index).clone(),
                                 requires_grad=module.weight.requires_grad)
    if makes and module.bias is not None:
        module.bias = nn.Parameter(module.bias.detach()[index].clone(), requires_grad=module.bias.requires_grad)
    if is_conv1d(module):
        module.nx, module.nf = module.weight.shape
    else:
        module.out_features, module.in_features = module.weight.shape
