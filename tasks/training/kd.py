"""Knowledge distillation components: the KD loss (full and top-k) and the teacher's logits (live or cached on disk);
the student and its initialisation from the teacher are ``tasks.training.student``.

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
    ``targets[t + 1]`` is not -100 (as the sft type's loss counts them), row-major; and that mask."""
    mask = targets[:, 1:] != IGNORE
    return student_logits[:, :-1][mask], mask


def teacher_forward(teacher: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                    logits: Any = None, *, position_ids: torch.Tensor | None = None) -> torch.Tensor:
    """The teacher's logits in eval mode without gradients: (batch, classes) for a sequence classifier, (batch,
    time, vocab) for a causal LM; ``logits``: how to read them from the output (a task type's ``logits``).
    ``position_ids`` instead of a mask: a packed batch (``tasks.modeling.packing``), each example attending to
    itself only, as the student sees it."""
    import torch

    with torch.no_grad():
        if position_ids is not None:
            out = teacher(input_ids=input_ids, position_ids=position_ids, use_cache=False)
        else:
            out = teacher(input_ids=input_ids, attention_mask=attention_mask)
        return (out.logits if logits is None else logits(out)).float()


def file_digest(model_dir: Path) -> str:
    """sha256 over the teacher directory's weight files: a cache made from other weights is never reused."""
    h = hashlib.sha256()
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


CACHED = ("classification", "sft", "lm")
"""Task types whose teacher logits are cached (the others run the teacher live)."""


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
