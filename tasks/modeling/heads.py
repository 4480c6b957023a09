"""The multi-task model: one pretrained backbone of any architecture transformers knows (lmforge's own Llama, a
GPT-2, Qwen2 or Llama checkpoint, a BERT-family encoder), a head per task whose type has one (the task type's
``head_class``: sequence classification, token classification, question answering), the LM head for generative
tasks. The losses are the task types' (``tasks.modeling.tasktypes``).

A classification task's model IS transformers' ``AutoModelForSequenceClassification`` for the backbone's architecture
(``LlamaForSequenceClassification``: ``score`` over the last non-pad token; ``BertForSequenceClassification``: the
pooler, dropout and ``classifier``...), built from the backbone's config with the shared backbone put in place of its
own. So the exported classifier (``save_pretrained`` of that very model) loads with
``AutoModelForSequenceClassification`` and gives the logits training computed. Only the head's own modules are
registered under ``heads.<task>`` (the backbone once, under ``backbone``), so every parameter appears once in the
state dict. The other head types are built the same way from their auto class. Where the architecture's head has no
dropout of its own (the decoders' ``score``), dropout on the pooled features (active in training only) regularises it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

HEAD_PREFIX = "heads."
"""Parameter names of the new classification heads start with this (they get ``head_lr``)."""


def load_backbone(base_model_dir: Path, *, attention_dropout: float = 0.0, dtype: str = "float32",
                  causal: bool | None = None, ds_config: dict[str, Any] | None = None) -> Any:
    """The pretrained model of ``base_model_dir`` (Hugging Face format), in training mode: the causal LM
    (``AutoModelForCausalLM``) for a decoder, the bare encoder (``AutoModel``) otherwise.

    Args:
        base_model_dir: lmforge's models/base or any checkpoint directory.
        attention_dropout: set on architectures whose config has it (Llama, Qwen2...).
        dtype: the parameters' dtype.
        causal: force the causal LM (True) or the bare model (False); None decides from the config
            (``tasks.modeling.source.is_decoder``).
        ds_config: the run's DeepSpeed config: under ZeRO-3 the weights load partitioned, each process keeping its
            shard (``tasks.modeling.source.partitioned``; every process must call this then); None: whole.
    """
    import json

    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    from tasks.modeling.source import is_decoder, partitioned

    config = AutoConfig.from_pretrained(str(base_model_dir))
    if hasattr(config, "attention_dropout"):
        config.attention_dropout = attention_dropout
    if causal is None:
        causal = is_decoder(json.loads((Path(base_model_dir) / "config.json").read_text(encoding="utf-8")))
    auto = AutoModelForCausalLM if causal else AutoModel
    with partitioned(ds_config):
        model = auto.from_pretrained(str(base_model_dir), config=config, dtype=getattr(torch, dtype))
    model.config.use_cache = False
    model.train()
    return model


def body_of(model: Any) -> Any:
    """The transformer body of a causal LM (``LlamaModel``, ``GPT2Model``...) or of a bare encoder (itself), through
    a peft wrapper."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inner.base_model


def classifier_for(body: Any, *, num_labels: int, pad_token_id: int | None,
                   auto_class: str = "AutoModelForSequenceClassification") -> Any:
    """The task model ``auto_class`` (``AutoModelForSequenceClassification``, ``...ForTokenClassification``,
    ``...ForQuestionAnswering``) of the body's architecture with ``num_labels`` outputs and ``body`` itself as its
    transformer (seed torch's RNG first: the head starts random, initialised as the architecture does).
    """
    import copy

    import transformers

    auto = getattr(transformers, auto_class)
    config = copy.deepcopy(body.config)
    config.num_labels, config.pad_token_id, config.architectures = num_labels, pad_token_id, None
    config.id2label = {i: f"LABEL_{i}" for i in range(num_labels)}
    config.label2id = {v: k for k, v in config.id2label.items()}
    model = auto.from_config(config, dtype=next(body.parameters()).dtype)
    setattr(model, model.base_model_prefix, body)  # the shared backbone replaces the model's own (freed here)
    return model


def head_modules(classifier: Any) -> dict[str, Any]:
    """The classifier's own modules (everything but its transformer body), by attribute name."""
    return {name: child for name, child in classifier.named_children() if name != classifier.base_model_prefix}


def build_multitask(backbone: Any, *, heads: dict[str, int], dropout: float, pad_token_id: int | None,
                    types: dict[str, str] | None = None) -> Any:
    """A :class:`torch.nn.Module` around ``backbone`` (a causal LM or bare encoder, or a peft model around one) with
    a task model of ``heads[task]`` outputs per task with a head of its own (seed torch's RNG first): the auto class
    of the task's type (``types[task]``; classification when not given). ``forward(input_ids, attention_mask, task)``
    returns the head's logits as the type reads them (classification (batch, classes)) for a task with a head, LM
    logits (batch, time, vocab) otherwise; :meth:`classifier` gives a task's full task model (what is exported)."""
    import torch.nn.functional as F
    from torch import nn

    from tasks.modeling.tasktypes import task_type

    kinds = {name: task_type((types or {}).get(name, "classification")) for name in heads}

    # torch is not analysed by mypy (pyproject's [tool.mypy]): nn.Module is Any there
    class MultiTask(nn.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.backbone = backbone
            body = body_of(backbone)
            classifiers = {name: classifier_for(body, num_labels=n, pad_token_id=pad_token_id,
                                                auto_class=str(kinds[name].head_class))
                           for name, n in sorted(heads.items())}
            self.heads = nn.ModuleDict({name: nn.ModuleDict(head_modules(c)) for name, c in classifiers.items()})
            # not registered as submodules (the body would appear once per task); they share the registered modules
            self._classifiers = classifiers
            self.pad_token_id = pad_token_id
            for head in self.heads.values():
                linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
                if dropout > 0 and linears and not any(isinstance(m, nn.Dropout) for m in head.modules()):
                    final = linears[-1]
                    final.register_forward_pre_hook(
                        lambda m, args: (F.dropout(args[0], dropout, m.training), *args[1:]))

        def lm(self) -> Any:
            """The causal LM (inside peft when LoRA wraps it; its layers carry the adapters in place)."""
            return self.backbone.get_base_model() if hasattr(self.backbone, "get_base_model") else self.backbone

        llama = lm  # the name recipes and tests used when the backbone was always lmforge's Llama

        def classifier(self, task: str) -> Any:
            """The task's model (``AutoModelForSequenceClassification``...: shared backbone, the task's head)."""
            return self._classifiers[task]

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, task: str,
                    position_ids: torch.Tensor | None = None) -> torch.Tensor:
            if task in self.heads:
                return kinds[task].logits(self._classifiers[task](input_ids=input_ids, attention_mask=attention_mask))
            if position_ids is not None:  # a packed batch (tasks.modeling.packing): no mask, no cache
                return self.lm()(input_ids=input_ids, position_ids=position_ids, use_cache=False).logits
            return self.lm()(input_ids=input_ids, attention_mask=attention_mask).logits

    return MultiTask()


def param_groups(model: Any, *, lr: float, head_lr: float, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: backbone (or adapters) at ``lr``, new heads at ``head_lr``; matrices decayed, norms and biases
    not. Every parameter is in a group, trainable or not (gradual unfreezing turns them on later; the torch
    optimizer skips a parameter without a gradient: no moment, no decay). Each group keeps its ``peak_lr``."""
    groups: dict[tuple[bool, bool], list[Any]] = {}
    for name, p in model.named_parameters(remove_duplicate=True):
        # a parameter partitioned by ZeRO-3 at loading is a flat placeholder here: its full shape decides
        groups.setdefault((name.startswith(HEAD_PREFIX), len(getattr(p, "ds_shape", p.shape)) >= 2), []).append(p)
    out = []
    for (head, decay), params in sorted(groups.items()):
        rate = head_lr if head else lr
        out.append({"params": params, "lr": rate, "peak_lr": rate, "weight_decay": weight_decay if decay else 0.0})
    return out


def load_exported(module: Any, task_dirs: dict[str, Path], *, heads_only: bool = False) -> Any:
    """Load task models exported by :func:`tasks.modeling.export.save_task_models` (a directory per task, one shared
    backbone) into a multi-task ``module`` of the same shape: the backbone from them (the LM head from a causal LM's
    files, or the tied embeddings), each classification head from its task's files. ``heads_only``: the heads
    alone (the backbone was changed since, e.g. pruned). Returns ``module``.

    Raises:
        ValueError: a weight the module needs is in none of the directories.
    """
    from safetensors.torch import load_file

    files: dict[str, dict[str, Any]] = {}
    for task, directory in sorted(task_dirs.items()):
        files[task] = {}
        for path in sorted(Path(directory).glob("*.safetensors")):
            files[task].update(load_file(str(path)))
    heads = {f"{task}.{k}": files[task][k] for task in module.heads for k in module.heads[task].state_dict()}
    if heads_only:
        module.heads.load_state_dict(heads, strict=True)
        return module
    state = module.state_dict()
    loaded: dict[str, Any] = {}
    lm = module.lm()
    # the body's names in a classifier's files carry its base_model_prefix when the backbone is a bare encoder; a
    # task model may name the body otherwise than the causal LM does (LlamaForQuestionAnswering: transformer.*, where
    # LlamaForCausalLM and LlamaForSequenceClassification have model.*)
    prefix = "" if lm.base_model is not lm else f"{lm.base_model_prefix}."
    body = f"{lm.base_model_prefix}."
    renamed = {t: f"{module.classifier(t).base_model_prefix}." for t in module.heads}

    def lookup(name: str) -> Any:
        for task, f in files.items():
            names = [name, prefix + name]
            if task in renamed and name.startswith(body) and renamed[task] != body:
                names.append(renamed[task] + name[len(body):])
            found = next((f[n] for n in names if n in f), None)
            if found is not None:
                return found
        return None

    for key in state:
        if key.startswith(HEAD_PREFIX):
            loaded[key] = heads[key[len(HEAD_PREFIX):]]
            continue
        inner = key.split(".", 1)[1]  # backbone.model.layers.0... -> model.layers.0...
        found = lookup(inner)
        if found is None and inner == _module_name(lm, lm.get_output_embeddings()) + ".weight":
            # tied: the embeddings; untied with classification tasks only: no task uses the LM head, keep it
            embed = _module_name(lm, lm.get_input_embeddings()) + ".weight"
            found = lookup(embed) if lm.config.tie_word_embeddings else state[key]
        if found is None:
            raise ValueError(f"{inner} is in none of {sorted(str(d) for d in task_dirs.values())}: export the task "
                             "models of one run together (save_task_models)")
        loaded[key] = found
    module.load_state_dict(loaded, strict=True)
    return module


def _module_name(model: Any, module: Any) -> str:
    """The dotted name of ``module`` inside ``model`` ("" when it is not there, e.g. None)."""
    return next((name for name, m in model.named_modules() if m is module), "") if module is not None else ""
