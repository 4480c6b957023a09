"""The distilled student, for a teacher of any architecture transformers knows: its config (the teacher's, with fewer
layers), its fresh backbone, and its initialisation from a subset of the teacher's layers (DistilBERT's recipe).

The student is the teacher's architecture: a ``LlamaForCausalLM`` for a Llama, a ``GPT2LMHeadModel`` for a GPT-2, a
bare ``BertModel`` for a BERT classifier, so its task models export as the same Auto classes as the teacher's. Its
config is a copy of the teacher's with ``num_hidden_layers`` set (attribute maps make that GPT-2's ``n_layer``), the
MLP width optionally cut (``intermediate_size``, GPT-2's ``n_inner``: the student then starts from the teacher
layer's strongest neurons), and, for Llama only, its own width and head counts (rotary attention with an explicit
``head_dim``; nothing of another width can be copied, so ``init: scratch`` pays there).

Every function takes keyword arguments, never a recipe's config; torch is imported inside them.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from tasks.modeling.errors import ConfigError

if TYPE_CHECKING:
    import torch

RESHAPEABLE = ("llama",)
"""Architectures whose student may differ from the teacher in width and head counts (``student.hidden_size``,
``num_heads``, ``num_kv_heads``); every architecture takes ``num_layers`` and (with a known MLP) ``intermediate_size``.
"""


def layer_map(*, teacher_layers: int, student_layers: int, layers: list[int] | None = None) -> list[int]:
    """The teacher layer copied into each student layer: ``layers`` if given, else every other one (0, 2, 4...;
    DistilBERT), spread evenly when the student is deeper than half the teacher."""
    if layers is not None:
        return list(layers)
    if student_layers * 2 <= teacher_layers:
        return [2 * i for i in range(student_layers)]
    return [round(i * (teacher_layers - 1) / max(student_layers - 1, 1)) for i in range(student_layers)]


def student_layers(teacher_layers: int, *, num_layers: int | None, layers: list[int] | None = None) -> int:
    """How many layers the student has: ``num_layers``, else as many as ``layers`` names, else half the teacher's (at
    least 1; DistilBERT's every other layer)."""
    if num_layers is not None:
        return num_layers
    return len(layers) if layers else max(1, teacher_layers // 2)


def student_config(teacher: Any, *, num_layers: int | None, hidden_size: int | None = None,
                   num_heads: int | None = None, num_kv_heads: int | None = None,
                   intermediate_size: int | None = None, mlp_fraction: float | None = None,
                   layers: list[int] | None = None, pad_token_id: int | None = None, dropout: float = 0.0,
                   setting: str = "student") -> Any:
    """The student's config: a copy of the teacher's (``transformers.PretrainedConfig``) with fewer layers.

    Args:
        teacher: the teacher's config (``AutoConfig.from_pretrained``).
        num_layers: the student's layers (None: :func:`student_layers`).
        hidden_size, num_heads: Llama only (None: the teacher's).
        num_kv_heads: Llama only; None: the teacher's when ``num_heads`` is the teacher's, else ``num_heads``.
        intermediate_size: the MLP width (None: the teacher's, or ``mlp_fraction`` of it).
        mlp_fraction: the MLP width as a fraction of the teacher's, rounded.
        layers: the teacher layers the student copies (their count is the default ``num_layers``).
        pad_token_id: the padding id the classifiers pool by.
        dropout: the attention dropout, on architectures whose config has one (Llama, Qwen2...).
        setting: the params key, for messages.

    Raises:
        ConfigError: a width or head count set for an architecture outside :data:`RESHAPEABLE` that differs from the
            teacher's, or an MLP width for a config without one.
    """
    from tasks.modeling.layout import mlp_width, width_key

    config = copy.deepcopy(teacher)
    config.num_hidden_layers = student_layers(int(teacher.num_hidden_layers), num_layers=num_layers, layers=layers)
    config.architectures, config.pad_token_id = None, pad_token_id
    if hasattr(config, "attention_dropout"):
        config.attention_dropout = dropout
    heads = int(teacher.num_attention_heads)
    if teacher.model_type in RESHAPEABLE:
        hidden, query = hidden_size or int(teacher.hidden_size), num_heads or heads
        if num_kv_heads is None:
            num_kv_heads = int(getattr(teacher, "num_key_value_heads", None) or heads) if query == heads else query
        if hidden % query or query % num_kv_heads:
            raise ConfigError(f"{setting}: num_heads {query} must divide hidden_size {hidden} and num_kv_heads "
                              f"{num_kv_heads} must divide num_heads")
        config.hidden_size, config.num_attention_heads, config.num_key_value_heads = hidden, query, num_kv_heads
        config.head_dim = hidden // query
    else:
        asked = {"hidden_size": (hidden_size, int(teacher.hidden_size)), "num_heads": (num_heads, heads),
                 "num_kv_heads": (num_kv_heads, int(getattr(teacher, "num_key_value_heads", None) or heads))}
        for key, (value, theirs) in asked.items():
            if value is not None and value != theirs:
                raise ConfigError(f"{setting}.{key} {value} differs from the {teacher.model_type} teacher's {theirs}: "
                                  f"only {', '.join(RESHAPEABLE)} students change width or heads; set it to null "
                                  "(the teacher's)")
    if mlp_fraction is not None and (width := mlp_width(teacher)) is not None:
        intermediate_size = max(1, round(mlp_fraction * width))
    elif mlp_fraction is not None:
        raise ConfigError(f"{setting}.mlp_fraction: the {teacher.model_type} config has no MLP width to cut; set it to "
                          "null")
    if intermediate_size is not None and intermediate_size != mlp_width(teacher):
        if (width_name := width_key(config)) is None:
            raise ConfigError(f"{setting}.intermediate_size: the {teacher.model_type} config has no MLP width to set; "
                              "set it to null (the teacher's)")
        setattr(config, width_name, intermediate_size)
    return config


def new_backbone(config: Any, *, causal: bool) -> Any:
    """A freshly initialised backbone for ``config`` (seed torch first), float32, in training mode: the causal LM
    (``AutoModelForCausalLM``) or the bare encoder (``AutoModel``), as ``tasks.modeling.heads.load_backbone`` loads
    them."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    model = (AutoModelForCausalLM if causal else AutoModel).from_config(config, dtype=torch.float32)
    model.config.use_cache = False  # after building: the generation config keeps the teacher's (the export's)
    return model.train()


def top_neurons(mlp: Any, *, keep: int) -> torch.Tensor:
    """The ``keep`` neurons of a teacher layer's MLP (``tasks.modeling.layout.MLP``) with the largest product of
    weight norms over the projections that make and read them (Llama: ``|gate_j| |up_j| |down_j|``), in their original
    order: what a narrower student layer starts from."""
    score = None
    for weight, axis in mlp.unit_weights():
        norm = weight.norm(dim=1 - axis)
        score = norm if score is None else score * norm
    assert score is not None  # an MLP has at least its output projection
    return score.topk(keep).indices.sort().values


def _in_layer(name: str, layers: list[int]) -> tuple[str, int | None]:
    """A student parameter's name in the teacher (its layer index mapped) and the teacher layer, if any."""
    from tasks.modeling.layout import LAYER

    hit = LAYER.search(name)
    if hit is None:
        return name, None
    j = layers[int(hit.group(1))]
    return f"{name[:hit.start(1)]}{j}{name[hit.end(1):]}", j


def init_from_teacher(student: Any, teacher: Any, *, layers: list[int]) -> dict[str, list[str]]:
    """Copy the teacher's weights into the student wherever the shapes allow (DistilBERT's initialisation).

    Every tensor of the body outside the layers (embeddings, final norm, BERT's pooler), and for student layer ``i``
    every tensor of teacher layer ``layers[i]``; a narrower student MLP takes the teacher layer's
    :func:`top_neurons` (its share of each projection, GPT-2's Conv1D transposed); an untied LM head the teacher's
    (a tied one is the embedding); any other tensor whose shape differs keeps its fresh initialisation.

    Args:
        student: a causal LM or bare encoder (:func:`new_backbone`).
        teacher: a causal LM or sequence classifier of the same architecture (its body is read).
        layers: teacher layer index per student layer (:func:`layer_map`).

    Returns:
        ``{"copied": [student parameter names], "neurons": [those copied as a neuron subset], "kept": [names left
        as initialised]}``.
    """
    import torch

    from tasks.modeling.heads import body_of
    from tasks.modeling.layout import layers as layer_list
    from tasks.modeling.layout import neuron_axis
    from tasks.modeling.source import gathered

    mine, theirs = body_of(student), body_of(teacher)
    prefix = "" if mine is student else f"{student.base_model_prefix}."
    source = dict(theirs.named_parameters(remove_duplicate=False))
    t_layers = layer_list(theirs)
    in_layers = {id(p) for layer in t_layers for p in layer.parameters()}
    # student parameters by the teacher layer they read (None: outside the layers)
    reads: dict[int | None, list[tuple[str, Any]]] = {}
    for name, param in mine.named_parameters():
        reads.setdefault(_in_layer(name, layers)[1], []).append((name, param))
    copied, neurons, kept = [], [], []
    with torch.no_grad():
        # a teacher partitioned by ZeRO-3 is gathered one part at a time (outside the layers, then each layer read),
        # never whole in one process; for a whole teacher the gathers are no-ops
        for j in sorted(reads, key=lambda j: -1 if j is None else j):
            part = [p for p in theirs.parameters() if id(p) not in in_layers] if j is None \
                else list(t_layers[j].parameters())
            with gathered(part):
                subsets = _neuron_subsets(mine, theirs, layers=layers, teacher_layer=j)
                for name, param in reads[j]:
                    origin = source.get(_in_layer(name, layers)[0])
                    if id(param) in subsets:
                        module, tensor, makes, index = subsets[id(param)]
                        origin = getattr(module, tensor).detach()
                        if tensor == "weight":
                            origin = origin.index_select(neuron_axis(module, makes=makes), index)
                        elif makes:
                            origin = origin[index]
                        neurons.append(prefix + name)
                    if origin is not None and origin.shape == param.shape:
                        param.copy_(origin.to(param.dtype))
                        copied.append(prefix + name)
                    else:
                        kept.append(prefix + name)
        head, teacher_head = student.get_output_embeddings(), teacher.get_output_embeddings()
        tied = head is not None and head.weight is student.get_input_embeddings().weight
        if head is not None and not tied:  # untied: the teacher's LM head, if it has one of this shape
            name = next(n for n, m in student.named_modules() if m is head) + ".weight"
            with gathered([teacher_head.weight] if teacher_head is not None else []):
                if teacher_head is not None and teacher_head.weight.shape == head.weight.shape:
                    head.weight.copy_(teacher_head.weight.to(head.weight.dtype))
                    copied.append(name)
                else:
                    kept.append(name)
    return {"copied": copied, "neurons": [n for n in neurons if n in copied], "kept": kept}


def _neuron_subsets(mine: Any, theirs: Any, *, layers: list[int], teacher_layer: int | None) -> dict[int, Any]:
    """id(student parameter) -> (teacher module, tensor name, whether it makes the neurons, kept neuron index) for each
    narrower student MLP started from teacher layer ``teacher_layer``'s :func:`top_neurons`."""
    from tasks.modeling.layout import layers as layer_list
    from tasks.modeling.layout import mlp_of

    subsets: dict[int, tuple[Any, str, bool, Any]] = {}
    t_layers = layer_list(theirs)
    for s_layer, j in zip(layer_list(mine), layers, strict=True):
        if j != teacher_layer:
            continue
        s_mlp, t_mlp = mlp_of(s_layer), mlp_of(t_layers[j])
        if s_mlp is None or t_mlp is None or not 0 < s_mlp.width < t_mlp.width:
            continue
        index = top_neurons(t_mlp, keep=s_mlp.width)
        pairs = [(s, t, True) for s, t in zip(s_mlp.inputs, t_mlp.inputs, strict=True)]
        for s, t, makes in [*pairs, (s_mlp.output, t_mlp.output, False)]:
            for tensor in ("weight", "bias"):
                if getattr(s, tensor, None) is not None:
                    subsets[id(getattr(s, tensor))] = (t, tensor, makes, index)
    return subsets


def copy_heads(heads: Any, teachers: dict[str, Any]) -> list[str]:
    """Start each classification head (``heads[task]``, the multi-task module's) from its task teacher's (the
    classifier's modules outside its body: Llama's and GPT-2's ``score``, BERT's ``classifier``) where every tensor's
    shape matches; returns the tasks whose head was copied."""
    import torch

    from tasks.modeling.heads import head_modules
    from tasks.modeling.source import gathered

    done = []
    with torch.no_grad():
        for task, teacher in sorted(teachers.items()):
            if task not in heads:
                continue
            modules = head_modules(teacher)
            with gathered(p for m in modules.values() for p in m.parameters()):  # a ZeRO-3 teacher's head
                theirs = {f"{n}.{k}": v for n, m in modules.items() for k, v in m.state_dict().items()}
                mine = heads[task].state_dict()
                if mine.keys() == theirs.keys() and all(mine[k].shape == theirs[k].shape for k in mine):
                    heads[task].load_state_dict({k: v.to(mine[k].dtype) for k, v in theirs.items()}, strict=True)
                    done.append(task)
    return done
