"""The multi-task model: one pretrained Llama backbone, a classification head per classification task, the LM head
for sft tasks; and their losses.

A classification head computes exactly what ``transformers.LlamaForSequenceClassification`` does: ``score``, a Linear
without bias, over the final hidden state of the last non-pad token. So the exported classifier (the backbone's
weights plus ``score.weight``) loads with ``AutoModelForSequenceClassification`` and gives the same logits. Dropout
on the pooled features (active in training only) regularises the head.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from transformers import LlamaForCausalLM

HEAD_PREFIX = "heads."
"""Parameter names of the new classification heads start with this (they get ``head_lr``)."""


def load_backbone(base_model_dir: Path, *, attention_dropout: float = 0.0, dtype: str = "float32") -> LlamaForCausalLM:
    """The pretrained Llama of ``base_model_dir`` (Hugging Face format), in training mode, with attention dropout."""
    import torch
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(str(base_model_dir), dtype=getattr(torch, dtype),
                                             attention_dropout=attention_dropout)
    model.config.use_cache = False
    model.train()
    return model


def last_token_index(input_ids: torch.Tensor, pad_token_id: int | None) -> torch.Tensor:
    """Index of each row's last non-pad token, as ``LlamaForSequenceClassification`` finds it (the last position
    when there is no pad id)."""
    import torch

    if pad_token_id is None:
        return torch.full((input_ids.shape[0],), input_ids.shape[1] - 1, dtype=torch.long, device=input_ids.device)
    non_pad = (input_ids != pad_token_id).int()
    positions = torch.arange(input_ids.shape[-1], device=input_ids.device, dtype=torch.int32)
    return (positions * non_pad).argmax(-1)


def build_multitask(backbone: Any, *, heads: dict[str, int], dropout: float, pad_token_id: int | None) -> Any:
    """A :class:`torch.nn.Module` around ``backbone`` (a LlamaForCausalLM, or a peft model around one) with a new
    ``score`` head of ``heads[task]`` classes per classification task (seed torch's RNG first: the heads start
    random). ``forward(input_ids, attention_mask, task)`` returns classification logits (batch, classes) for a task
    with a head, LM logits (batch, time, vocab) otherwise."""
    import torch
    from torch import nn

    # torch is not analysed by mypy (pyproject's [tool.mypy]): nn.Module is Any there
    class MultiTask(nn.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.backbone = backbone
            llama = self.llama()
            hidden = llama.config.hidden_size
            self.heads = nn.ModuleDict({name: nn.Linear(hidden, n, bias=False) for name, n in sorted(heads.items())})
            for head in self.heads.values():  # as LlamaPreTrainedModel initialises score
                nn.init.normal_(head.weight, std=llama.config.initializer_range)
            self.pooled_dropout = nn.Dropout(dropout)
            self.pad_token_id = pad_token_id

        def llama(self) -> Any:
            """The LlamaForCausalLM (inside peft when LoRA wraps it; its layers carry the adapters in place)."""
            return self.backbone.get_base_model() if hasattr(self.backbone, "get_base_model") else self.backbone

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, task: str) -> torch.Tensor:
            llama = self.llama()
            if task not in self.heads:
                return llama(input_ids=input_ids, attention_mask=attention_mask).logits
            hidden = llama.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            rows = torch.arange(hidden.shape[0], device=hidden.device)
            pooled = hidden[rows, last_token_index(input_ids, self.pad_token_id)]
            return self.heads[task](self.pooled_dropout(pooled))

    return MultiTask()


def classification_loss(logits: torch.Tensor, targets: torch.Tensor, *, weight: torch.Tensor | None = None,
                        reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of (batch, classes) logits in fp32, optionally class-weighted."""
    import torch.nn.functional as F

    return F.cross_entropy(logits.float(), targets, weight=weight, reduction=reduction)


def response_loss(logits: torch.Tensor, targets: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    """Next-token cross-entropy over the positions whose target is not -100 (an sft example's response and EOS):
    position t predicts ``targets[t + 1]``."""
    import torch.nn.functional as F

    return F.cross_entropy(logits[:, :-1].float().flatten(0, 1), targets[:, 1:].flatten(), ignore_index=-100,
                           reduction=reduction)


def param_groups(model: Any, *, lr: float, head_lr: float, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: backbone (or adapters) at ``lr``, new heads at ``head_lr``; matrices decayed, norms and biases
    not. Every parameter is in a group, trainable or not (gradual unfreezing turns them on later; the torch
    optimizer skips a parameter without a gradient: no moment, no decay). Each group keeps its ``peak_lr``."""
    groups: dict[tuple[bool, bool], list[Any]] = {}
    for name, p in model.named_parameters(remove_duplicate=True):
        groups.setdefault((name.startswith(HEAD_PREFIX), p.dim() >= 2), []).append(p)
    out = []
    for (head, decay), params in sorted(groups.items()):
        rate = head_lr if head else lr
        out.append({"params": params, "lr": rate, "peak_lr": rate, "weight_decay": weight_decay if decay else 0.0})
    return out


def load_exported(module: Any, task_dirs: dict[str, Path], *, heads_only: bool = False) -> Any:
    """Load task models exported by :func:`tasks.modeling.export.save_task_models` (a directory per task, one shared
    backbone) into a multi-task ``module`` of the same shape: the backbone from them (the LM head from a causal LM's
    files, or the tied embeddings), each classification head from its task's ``score``. ``heads_only``: the heads
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
    heads = {f"{task}.weight": files[task]["score.weight"] for task in module.heads}
    if heads_only:
        module.heads.load_state_dict(heads, strict=True)
        return module
    state = module.state_dict()
    loaded: dict[str, Any] = {}
    llama = module.llama()
    for key in state:
        if key.startswith(HEAD_PREFIX):
            loaded[key] = heads[key[len(HEAD_PREFIX):]]
            continue
        inner = key.split(".", 1)[1]  # backbone.model.layers.0... -> model.layers.0...
        found = next((f[inner] for f in files.values() if inner in f), None)
        if found is None and inner == "lm_head.weight":
            # tied: the embeddings; untied with classification tasks only: no task uses the LM head, keep it
            found = next(f["model.embed_tokens.weight"] for f in files.values()) if llama.config.tie_word_embeddings \
                else state[key]
        if found is None:
            raise ValueError(f"{inner} is in none of {sorted(str(d) for d in task_dirs.values())}: export the task "
                             "models of one run together (save_task_models)")
        loaded[key] = found
    module.load_state_dict(loaded, strict=True)
    return module
