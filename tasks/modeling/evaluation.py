"""Evaluation of task models: val metrics of the training module, the validation passes of a run (:class:`Evaluator`:
val_score, early stopping, best weights, evaluations as JSON lines), test metrics of the exported models.

The metrics are the task type's (``tasks.modeling.tasktypes``): classification loss, accuracy, macro-F1 and per-class
F1; sft the loss over response tokens (EOS included) and its perplexity, plus greedy completions of a few test prompts
by the exported model through its chat template. Every rank evaluates the whole (capped) split, so no gathering is
needed and the numbers agree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.modeling.encoding import batches
from tasks.modeling.tasktypes import task_type


def score(forward: Any, data: dict[str, Any], *, kind: str, batch_size: int, pad_id: int,
          device: Any = None) -> tuple[float, int, list[Any]]:
    """The loss of ``forward(input_ids, attention_mask) -> logits`` over every feature of an encoded split, in order
    and without gradients, as the task type ``kind`` computes it (classification: cross-entropy per example; sft:
    next-token loss per target token, an LM's targets being all its tokens...).

    Returns:
        (the mean loss, the units it is the mean over, the type's per-feature outputs: a classification's class...).
    """
    import torch


    kind_ = task_type(kind)
    loss_sum, count, outputs = 0.0, 0, []
    with torch.no_grad():
        for x, mask, y in batches(data, kind=kind, batch_size=batch_size, pad_id=pad_id):
            if device is not None:
                x, mask, y = x.to(device), mask.to(device), y.to(device)
            logits = forward(x, mask)
            loss_sum += float(kind_.loss(logits, y, reduction="sum"))
            count += kind_.count(y)
            outputs += kind_.outputs(logits, mask)
    return loss_sum / max(count, 1), count, outputs


def evaluate_split(module: Any, data: dict[str, Any], *, task: str, kind: str, labels: list[str] | None,
                   batch_size: int, pad_id: int) -> dict[str, Any]:
    """Metrics of the multi-task ``module`` (a DeepSpeed engine or the module) on one task's encoded split (the task
    type's :meth:`~tasks.modeling.tasktypes.base.TaskType.metrics`, without per-label detail).

    Args:
        module: called as ``module(input_ids=, attention_mask=, task=)``; put back in training mode afterwards.
        data: :func:`tasks.modeling.encoding.encode`'s result (possibly capped).
        task: the task's name.
        kind: the task type.
        labels: a labelled type's label names.
        batch_size: examples per forward pass.
        pad_id: padding id.
    """

    module.eval()
    loss, _, outputs = score(lambda x, mask: module(input_ids=x, attention_mask=mask, task=task), data, kind=kind,
                             batch_size=batch_size, pad_id=pad_id, device=next(module.parameters()).device)
    module.train()
    metrics = task_type(kind).metrics(loss=loss, outputs=outputs, data=data, labels=labels)
    return {k: v for k, v in metrics.items() if not isinstance(v, dict)}  # per-label detail: test metrics only


def exported_test_metrics(model_dir: Path, data: dict[str, Any], *, kind: str, labels: list[str] | None,
                          batch_size: int, samples: int, max_new_tokens: int) -> dict[str, Any]:
    """Test metrics of an exported task model, loaded from its files as a user would (with its type's auto class).

    Args:
        model_dir: ``out_dir/<task>`` (a task model or a causal LM, with its tokenizer).
        data: the encoded test split.
        kind: the task type.
        labels: a labelled type's label names (they must match the model's ``id2label``).
        batch_size: examples per forward pass.
        samples: generative types: test prompts completed greedily (the first ones).
        max_new_tokens: generative types: tokens generated per prompt.
    """
    import torch
    import transformers
    from transformers import AutoTokenizer


    kind_ = task_type(kind)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = getattr(transformers, kind_.head_class or "AutoModelForCausalLM").from_pretrained(str(model_dir)).eval()
    loss, _, outputs = score(lambda x, mask: kind_.logits(model(input_ids=x, attention_mask=mask)), data, kind=kind,
                             batch_size=batch_size, pad_id=tokenizer.pad_token_id)
    # examples, not the windows a long one became (NER sentences, QA contexts)
    metrics = {**kind_.metrics(loss=loss, outputs=outputs, data=data, labels=labels), "examples": len(data["rows"])}
    if kind_.labelled and [model.config.id2label[i] for i in range(len(labels or []))] != labels:
        raise RuntimeError(f"exported id2label {model.config.id2label} differs from the labels {labels}")
    if not kind_.generative:
        return metrics
    from tasks.modeling.chat import conversation_of, last_exchange, prompt_ids

    generations = []
    for row in data["rows"][:samples]:
        # an sft row is a one-exchange conversation; a chat row's last reply is the one completed
        context, reference = last_exchange(conversation_of(row))
        ids = torch.tensor([prompt_ids(context, tokenizer=tokenizer)])
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=tokenizer.eos_token_id)
        generations.append({"prompt": context[-1]["content"], "reference": reference,
                            "completion": tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)})
    return {**metrics, "samples": generations}


def task_score(kind: str, metrics: dict[str, Any]) -> float:
    """A task's higher-is-better validation number, as its type says (macro-F1 for classification, -val loss for
    sft...)."""
    return task_type(kind).score(metrics)


def val_score(kinds: dict[str, str], per_task: dict[str, dict[str, Any]]) -> float:
    """The validation score: the mean of :func:`task_score` over tasks."""
    return sum(task_score(kinds[t], per_task[t]) for t in sorted(per_task)) / len(per_task)


METRIC_NAMES = {"loss": "val_loss", "accuracy": "val_accuracy", "macro_f1": "val_macro_f1",
                "perplexity": "val_perplexity", "train_loss": "window_train_loss", "gap": "gap",
                "train_accuracy": "train_accuracy", "accuracy_gap": "accuracy_gap"}
"""MLflow names of an evaluation's per-task numbers (suffixed ``_<task>``); a type's other metrics are
``val_<name>``."""
BRIEF = (("accuracy", "acc", ".3f"), ("macro_f1", "f1", ".3f"), ("f1", "f1", ".3f"), ("exact_match", "em", ".3f"),
         ("perplexity", "ppl", ".2f"))
"""What the console line of an evaluation shows of a task's metrics, where the type has them."""
TRAIN_EVAL_EXAMPLES = 256
"""Training examples per classification task (the first ones) whose accuracy is compared with val's at each eval."""
EVALUATIONS_FILE = "evaluations.jsonl"
"""Where a recipe appends one JSON line per evaluation (``step``, ``val_score``, ``best``, ``tasks``): the flow reads
evaluations from it (a search prunes on them), never from the console."""


class Evaluator:
    """A task recipe's validation passes: per task the val metrics, the mean train loss since the last pass and the
    train/val gap (classification also the train accuracy of a fixed probe), ``val_score`` (:func:`val_score`),
    early stopping, reduce-on-plateau, the best weights, the history, one console line, MLflow metrics and one JSON
    line in ``evaluations_path``. Finetune and distill use it alike; its state goes into their checkpoints.

    Args:
        data: ``{"val": {task: encoded}, "train": {task: encoded}}`` (:func:`tasks.modeling.encoding.encode`).
        kinds: task -> task type.
        labels: labelled task -> label names.
        batch_size, pad_id: as in :func:`evaluate_split`.
        max_examples: val (and train-probe) examples per task and pass at most; None: the whole split (and
            :data:`TRAIN_EVAL_EXAMPLES` for the probe).
        stopper: early stopping (:class:`tasks.modeling.metrics.EarlyStopper`).
        plateau: reduce-on-plateau (``tasks.training.schedule.Plateau``) stepped on each score when ``use_plateau``;
            with one, each history entry records its ``lr_scale``.
        use_plateau: whether the schedule reduces on plateau (else the scale stays 1.0).
        zero3: the engine partitions weights (ZeRO-3): every rank joins the best-weights gather.
        is_main: rank 0 (prints, logs, writes the JSON lines).
        sink: rank 0's MLflow sink (``tasks.training.telemetry.MlflowSink``) or None.
        evaluations_path: the JSON-lines file, or None.
    """

    def __init__(self, *, data: dict[str, dict[str, Any]], kinds: dict[str, str], labels: dict[str, list[str]],
                 batch_size: int, pad_id: int, max_examples: int | None, stopper: Any, plateau: Any = None,
                 use_plateau: bool = False, zero3: bool = False, is_main: bool = True, sink: Any = None,
                 evaluations_path: Path | None = None) -> None:
        import torch

        self.names, self.kinds, self.labels = sorted(kinds), kinds, labels
        self.batch_size, self.pad_id, self.zero3, self.is_main = batch_size, pad_id, zero3, is_main
        self.stopper, self.plateau, self.use_plateau = stopper, plateau, use_plateau
        self.sink, self.evaluations_path = sink, evaluations_path
        cut = max_examples
        # lists are per feature or per row (a type's metrics know how to read a cut split); counts and settings stay
        self.val = {t: {k: v[:cut] if isinstance(v, list) else v for k, v in data["val"][t].items()
                        if k != "dropped"} for t in self.names}
        self.probe = {t: {k: v[:cut or TRAIN_EVAL_EXAMPLES] for k, v in data["train"][t].items() if k != "dropped"}
                      for t in labels}
        self.history: list[dict[str, Any]] = []
        self.best_state: dict[str, Any] | None = None
        self.window = torch.zeros(len(self.names), 2, dtype=torch.float64)  # per task: summed train loss, batches

    def record(self, task: str, loss_sum: float, micro_batches: int) -> None:
        """Count ``micro_batches`` training micro-batches of ``task`` whose losses sum to ``loss_sum``."""
        i = self.names.index(task)
        self.window[i, 0] += loss_sum
        self.window[i, 1] += micro_batches

    def __call__(self, engine: Any, step: int) -> bool:
        """One validation pass of ``engine`` at ``step``; returns whether early stopping says stop."""
        import torch

        from tasks.modeling import export

        totals = self.window.clone().to(engine.device)
        if torch.distributed.is_initialized():
            torch.distributed.all_reduce(totals)
        per_task = {}
        for i, t in enumerate(self.names):
            m = evaluate_split(engine, self.val[t], task=t, kind=self.kinds[t], labels=self.labels.get(t),
                               batch_size=self.batch_size, pad_id=self.pad_id)
            train_loss = float(totals[i, 0] / totals[i, 1]) if totals[i, 1] else None
            m["train_loss"] = train_loss
            m["gap"] = None if train_loss is None else m["loss"] - train_loss
            if t in self.probe:
                probe = evaluate_split(engine, self.probe[t], task=t, kind=self.kinds[t], labels=self.labels[t],
                                       batch_size=self.batch_size, pad_id=self.pad_id)
                if "accuracy" in probe:
                    m["train_accuracy"], m["accuracy_gap"] = probe["accuracy"], probe["accuracy"] - m["accuracy"]
            per_task[t] = m
        score = val_score(self.kinds, per_task)
        improved = self.stopper.update(score, step)
        entry: dict[str, Any] = {"step": step, "val_score": score}
        if self.plateau is not None:
            entry["lr_scale"] = self.plateau.update(score) if self.use_plateau else 1.0
        self.history.append({**entry, "tasks": per_task})
        self.window = torch.zeros(len(self.names), 2, dtype=torch.float64)
        if improved:  # keep the best weights (every rank joins the gather under ZeRO-3)
            state = export.gather_state(engine, zero3=self.zero3, is_main=self.is_main)
            self.best_state = {k: v.cpu() for k, v in state.items()} if state is not None else None
        if self.is_main:
            self._report(entry, per_task, improved)
        return bool(self.stopper.stop)

    def _report(self, entry: dict[str, Any], per_task: dict[str, Any], improved: bool) -> None:
        """The JSON line (for the flow: written before the console line it may be reading for), MLflow metrics and the
        console line (for people)."""
        import json

        flat = {k: v for k, v in entry.items() if k != "step"}
        for t, m in per_task.items():  # val_loss_T, val_accuracy_T, gap_T (val - train loss), train_accuracy_T...
            flat.update({f"{METRIC_NAMES.get(k, 'val_' + k)}_{t}": v for k, v in m.items() if isinstance(v, float)})
        if self.sink is not None:
            self.sink.log(flat, entry["step"])
        if self.evaluations_path is not None:
            line = json.dumps({**entry, "best": improved, "tasks": per_task}, sort_keys=True)
            with Path(self.evaluations_path).open("a", encoding="utf-8") as f:
                f.write(line + "\n")
        print(f"step {entry['step']:>6} | val_score {entry['val_score']:.4f}{' (best)' if improved else ''} | "
              + " | ".join(f"{t}: val_loss {m['loss']:.4f}"
                           + "".join(f" {short} {m[k]:{fmt}}" for k, short, fmt in BRIEF if isinstance(m.get(k), float))
                           + ("" if m["gap"] is None else f" gap {m['gap']:+.4f}") for t, m in per_task.items()),
              flush=True)

    @property
    def best(self) -> dict[str, Any]:
        """The history entry of the best evaluation."""
        return next(h for h in self.history if h["step"] == self.stopper.best_step)

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps (the keys older checkpoints used, so they still resume)."""
        state = {"history": self.history, "stopper": self.stopper.state_dict(), "best_state": self.best_state,
                 "window": self.window.tolist()}
        if self.plateau is not None:
            state["plateau"] = self.plateau.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`."""
        import torch

        self.history, self.best_state = list(state["history"]), state.get("best_state")
        self.stopper.load_state_dict(state["stopper"])
        if self.plateau is not None:
            self.plateau.load_state_dict(state["plateau"])
        self.window = torch.tensor(state["window"], dtype=torch.float64)


def read_evaluations(path: Path, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """The complete JSON lines of an evaluations file from byte ``offset`` on, and the offset after them (a line
    still being written is left for the next call)."""
    import json

    path = Path(path)
    if not path.is_file():
        return [], offset
    with path.open("rb") as f:
        f.seek(offset)
        chunk = f.read()
    complete = chunk[:chunk.rfind(b"\n") + 1]
    return [json.loads(line) for line in complete.decode("utf-8").splitlines() if line.strip()], offset + len(complete)
