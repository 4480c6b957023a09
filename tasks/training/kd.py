"""Knowledge distillation components: the KD loss (full and top-k), the student's shape and its initialisation from
the teacher, the teacher's logits (live or cached on disk).

The loss of a batch is ``alpha * T^2 * KL(p_T || q_T) + (1 - alpha) * hard`` (Hinton et al. 2015): ``p_T`` the
teacher's softmax at temperature ``T``, ``q_T`` the student's, ``hard`` the usual cross-entropy against the labels.
The ``T^2`` keeps the soft term's gradients the same size whatever ``T`` is. For a classification task the KL runs
over the labels of each example; for sft (and plain LM) over the vocabulary at every position that carries a target
(``targets != -100``: an sft example's response and EOS), mean over those positions.

Every function takes keyword arguments, never a recipe's config; torch is imported inside them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

IGNORE = -100


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, mean over rows, in fp32.

    Args:
        student_logits: (rows, classes) logits (a row: an example, or a token position).
        teacher_logits: the same shape, from the teacher.
        temperature: T > 0.
    """
    import torch.nn.functional as F

    if student_logits.shape[0] == 0:
        return student_logits.float().sum() * 0.0
    log_q = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean() * temperature**2


def topk_kd_loss(student_logits: torch.Tensor, values: torch.Tensor, indices: torch.Tensor, *,
                 temperature: float) -> torch.Tensor:
    """The KD term against a teacher kept only as its top-k logits per row.

    The teacher distribution is the softmax of its ``k`` kept logits at temperature T (renormalised over those k
    classes; the rest get probability 0); the student's log-probabilities stay normalised over all classes and are
    read at the same k indices: ``T^2 * mean_rows sum_j p_j (log p_j - log q_T[indices_j])``. With k = all classes
    the kept logits are a permutation of the full row, so this equals :func:`kd_loss` exactly.

    Args:
        student_logits: (rows, classes) logits.
        values: (rows, k) the teacher's largest logits per row.
        indices: (rows, k) their class indices.
        temperature: T > 0.
    """
    import torch.nn.functional as F

    if student_logits.shape[0] == 0:
        return student_logits.float().sum() * 0.0
    log_q = F.log_softmax(student_logits.float() / temperature, dim=-1).gather(-1, indices.long())
    log_p = F.log_softmax(values.float() / temperature, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean() * temperature**2


def target_positions(student_logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """sft/LM: the rows the KD term runs over: (positions, vocab) logits of every position ``t`` whose next target
    ``targets[t + 1]`` is not -100 (as ``multitask.response_loss`` counts them), row-major; and that mask."""
    mask = targets[:, 1:] != IGNORE
    return student_logits[:, :-1][mask], mask


def student_kwargs(teacher_config: dict[str, Any], *, num_layers: int, hidden_size: int, num_heads: int,
                   num_kv_heads: int | None, intermediate_size: int) -> dict[str, Any]:
    """The :func:`tasks.modeling.llama.build_llama` arguments of the student: its own shape, the teacher's
    vocabulary, positions, rotary base, tying and special ids.

    Args:
        teacher_config: the teacher's ``config.json`` as a dict.
        num_layers, hidden_size, num_heads, intermediate_size: the student's shape.
        num_kv_heads: None: the teacher's when ``num_heads`` is the teacher's, else ``num_heads``.
    """
    if num_kv_heads is None:
        same = num_heads == int(teacher_config["num_attention_heads"])
        num_kv_heads = int(teacher_config.get("num_key_value_heads") or num_heads) if same else num_heads
    return {"vocab_size": int(teacher_config["vocab_size"]), "hidden_size": hidden_size, "num_layers": num_layers,
            "num_heads": num_heads, "num_kv_heads": num_kv_heads, "intermediate_size": intermediate_size,
            "max_position_embeddings": int(teacher_config["max_position_embeddings"]),
            "rope_theta": float(teacher_config.get("rope_theta") or
                                (teacher_config.get("rope_parameters") or {}).get("rope_theta", 10000.0)),
            "tie_word_embeddings": bool(teacher_config.get("tie_word_embeddings", True)),
            "bos_token_id": teacher_config.get("bos_token_id"), "eos_token_id": teacher_config.get("eos_token_id"),
            "pad_token_id": teacher_config.get("pad_token_id")}


def layer_map(*, teacher_layers: int, student_layers: int, layers: list[int] | None = None) -> list[int]:
    """The teacher layer copied into each student layer: ``layers`` if given, else every other one (0, 2, 4...;
    DistilBERT), spread evenly when the student is deeper than half the teacher."""
    if layers is not None:
        return list(layers)
    if student_layers * 2 <= teacher_layers:
        return [2 * i for i in range(student_layers)]
    return [round(i * (teacher_layers - 1) / max(student_layers - 1, 1)) for i in range(student_layers)]


def top_neurons(mlp: Any, *, keep: int) -> Any:
    """The ``keep`` MLP neurons of a teacher layer with the largest weight norms (``|gate_j| |up_j| |down_j|``), in
    their original order: what a narrower student layer starts from."""
    score = (mlp.gate_proj.weight.norm(dim=1) * mlp.up_proj.weight.norm(dim=1) * mlp.down_proj.weight.norm(dim=0))
    return score.topk(keep).indices.sort().values


def init_from_teacher(student: Any, teacher: Any, *, layers: list[int]) -> dict[str, list[str]]:
    """Copy the teacher's weights into the student wherever the shapes allow (DistilBERT's initialisation).

    The embeddings, the final norm, and for student layer ``i`` every tensor of teacher layer ``layers[i]``; a
    narrower student MLP (same width, fewer neurons) takes the teacher layer's :func:`top_neurons` (rows of gate and
    up, columns of down); any other tensor whose shape differs keeps its fresh initialisation. With tied embeddings
    the LM head follows the embedding.

    Args:
        student: a LlamaForCausalLM (or anything with a ``.model`` LlamaModel).
        teacher: a LlamaForCausalLM or LlamaForSequenceClassification (its ``.model`` is read).
        layers: teacher layer index per student layer (:func:`layer_map`).

    Returns:
        ``{"copied": [student parameter names], "neurons": [those copied as a neuron subset], "kept": [names left
        as initialised]}``.
    """
    import torch

    source = teacher.model.state_dict()
    copied, neurons, kept = [], [], []
    with torch.no_grad():
        for name, param in student.model.named_parameters():
            parts = name.split(".")
            if parts[0] == "layers":
                parts[1] = str(layers[int(parts[1])])
            origin = source.get(".".join(parts))
            if origin is not None and origin.shape != param.shape and parts[2:3] == ["mlp"] and origin.dim() == 2:
                down = parts[3] == "down_proj"
                width, other = (param.shape[1], param.shape[0]) if down else param.shape
                if other == origin.shape[0 if down else 1] and width < origin.shape[1 if down else 0]:
                    index = top_neurons(teacher.model.layers[int(parts[1])].mlp, keep=width)
                    origin = origin[:, index] if down else origin[index]
                    neurons.append(f"model.{name}")
            if origin is not None and origin.shape == param.shape:
                param.copy_(origin.to(param.dtype))
                copied.append(f"model.{name}")
            else:
                kept.append(f"model.{name}")
    return {"copied": copied, "neurons": neurons, "kept": kept}


def copy_heads(heads: Any, scores: dict[str, torch.Tensor]) -> list[str]:
    """Start each classification head from the teacher's ``score`` weight of its task where the widths match;
    returns the tasks whose head was copied."""
    import torch

    done = []
    with torch.no_grad():
        for task, weight in sorted(scores.items()):
            if task in heads and heads[task].weight.shape == weight.shape:
                heads[task].weight.copy_(weight.to(heads[task].weight.dtype))
                done.append(task)
    return done


def teacher_forward(teacher: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The teacher's logits in eval mode without gradients: (batch, classes) for a sequence classifier, (batch,
    time, vocab) for a causal LM."""
    import torch

    with torch.no_grad():
        return teacher(input_ids=input_ids, attention_mask=attention_mask).logits.float()


def file_digest(model_dir: Path) -> str:
    """sha256 over the teacher directory's weight files: a cache made from other weights is never reused."""
    h = hashlib.sha256()
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


class TeacherCache:
    """The teacher's logits over one task's training examples, computed once and kept in a file.

    Classification: every logit of every example. sft/LM: per target position (as :func:`target_positions` orders
    them) the ``top_k`` largest logits and their indices (:func:`topk_kd_loss`). Entries are keyed by the example's
    token ids, so a batch finds its rows however it was drawn (identical ids give identical teacher logits).

    Args:
        kind: ``classification``, ``sft`` or ``lm``.
        top_k: sft/LM logits kept per position (capped at the vocabulary).
    """

    def __init__(self, *, kind: str, top_k: int) -> None:
        self.kind, self.top_k = kind, top_k
        self.keys: dict[tuple[int, ...], int] = {}
        self.logits: Any = None  # classification (n, classes)
        self.values: Any = None  # sft/LM (positions, k)
        self.indices: Any = None
        self.offsets: list[int] = [0]

    def build(self, teacher: Any, data: dict[str, Any], *, batch_size: int, pad_id: int, device: Any) -> None:
        """Run the teacher once over ``data`` (a :func:`tasks.modeling.encoding.encode` result)."""
        import torch

        from tasks.modeling.encoding import collate

        unique: dict[tuple[int, ...], Any] = {}
        for seq, target in zip(data["ids"], data["targets"], strict=True):
            unique.setdefault(tuple(seq), target)
        items = list(unique.items())
        rows, values, indices = [], [], []
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            x, mask, y = collate([list(k) for k, _ in chunk], [t for _, t in chunk], pad_id=pad_id,
                                 kind="classification" if self.kind == "classification" else "sft")
            logits = teacher_forward(teacher, x.to(device), mask.to(device)).cpu()
            for i, (key, _) in enumerate(chunk):
                self.keys[key] = len(self.keys)
                if self.kind == "classification":
                    rows.append(logits[i])
                    continue
                kept = logits[i, :-1][y[i, 1:] != IGNORE]
                top = kept.topk(min(self.top_k, kept.shape[-1]), dim=-1)
                values.append(top.values)
                indices.append(top.indices.to(torch.int32))
                self.offsets.append(self.offsets[-1] + kept.shape[0])
        if self.kind == "classification":
            self.logits = torch.stack(rows)
        else:
            self.values, self.indices = torch.cat(values), torch.cat(indices)

    def lookup(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        """A batch's cached teacher rows: classification logits (batch, classes); sft/LM ``(values, indices)``,
        (positions, k) each, in :func:`target_positions` order. Raises KeyError for an example not cached."""
        import torch

        rows = [self.keys[tuple(ids[m.bool()].tolist())] for ids, m in zip(input_ids.cpu(), attention_mask.cpu(),
                                                                           strict=True)]
        if self.kind == "classification":
            return self.logits[rows]
        spans = [torch.arange(self.offsets[r], self.offsets[r + 1]) for r in rows]
        at = torch.cat(spans) if spans else torch.zeros(0, dtype=torch.long)
        return self.values[at], self.indices[at]

    def nbytes(self) -> int:
        """Bytes of the cached tensors."""
        tensors = [self.logits] if self.kind == "classification" else [self.values, self.indices]
        return sum(t.numel() * t.element_size() for t in tensors)

    def save(self, path: Path, *, digest: str) -> None:
        """Write the cache (atomically) with the teacher's weights digest."""
        import torch

        from tasks.atomic import atomic_path

        state = {"kind": self.kind, "top_k": self.top_k, "digest": digest, "keys": list(self.keys),
                 "logits": self.logits, "values": self.values, "indices": self.indices, "offsets": self.offsets}
        with atomic_path(Path(path)) as tmp:
            torch.save(state, tmp)

    @classmethod
    def load(cls, path: Path, *, kind: str, top_k: int, digest: str) -> TeacherCache | None:
        """The cache in ``path`` if it was made for this kind, ``top_k`` and teacher; else None."""
        import torch

        if not Path(path).is_file():
            return None
        state = torch.load(path, map_location="cpu", weights_only=False)
        if (state["kind"], state["top_k"], state["digest"]) != (kind, top_k, digest):
            return None
        cache = cls(kind=kind, top_k=top_k)
        cache.keys = {tuple(k): i for i, k in enumerate(state["keys"])}
        cache.logits, cache.values, cache.indices = state["logits"], state["values"], state["indices"]
        cache.offsets = list(state["offsets"])
        return cache
