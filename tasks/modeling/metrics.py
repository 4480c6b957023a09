"""Fine-tuning metrics: classification scores, perplexity, early stopping, learning curves.

Early stopping and reduce-on-plateau follow the validation score (``tasks.modeling.evaluation.val_score``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def classification_scores(targets: list[int], predictions: list[int], labels: list[str]) -> dict[str, Any]:
    """Accuracy, macro-F1 over all ``labels`` (absent classes count as 0 F1) and per-class F1."""
    from sklearn.metrics import accuracy_score, f1_score

    every = list(range(len(labels)))
    per_class = f1_score(targets, predictions, labels=every, average=None, zero_division=0)
    return {"accuracy": float(accuracy_score(targets, predictions)),
            "macro_f1": float(f1_score(targets, predictions, labels=every, average="macro", zero_division=0)),
            "per_class_f1": {label: float(f) for label, f in zip(labels, per_class, strict=True)}}


def perplexity(loss: float) -> float:
    """``exp(loss)``, capped so that a diverged run still gives a finite number."""
    return math.exp(min(loss, 50.0))


class EarlyStopper:
    """Track the best validation score; say when ``patience`` evaluations in a row failed to beat it by more than
    ``min_delta``. Its state is a small dict saved in checkpoints.

    Args:
        patience: evaluations without improvement before stopping.
        min_delta: smallest score gain that counts as an improvement.
        enabled: False: never stop (the best is still tracked).
    """

    def __init__(self, *, patience: int, min_delta: float, enabled: bool = True) -> None:
        self.patience, self.min_delta, self.enabled = patience, min_delta, enabled
        self.best, self.bad = -math.inf, 0
        self.best_step: int | None = None

    def update(self, score: float, step: int) -> bool:
        """Record an evaluation; returns whether it is the new best."""
        if score > self.best + self.min_delta or self.best_step is None:
            self.best, self.best_step, self.bad = score, step, 0
            return True
        self.bad += 1
        return False

    @property
    def stop(self) -> bool:
        """Whether training should stop now."""
        return self.enabled and self.bad >= self.patience

    def state_dict(self) -> dict[str, Any]:
        """Best score and step, evaluations without improvement."""
        return {"best": self.best, "best_step": self.best_step, "bad": self.bad}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`."""
        self.best, self.best_step, self.bad = float(state["best"]), state["best_step"], int(state["bad"])


def learning_curves(history: list[dict[str, Any]], *, kinds: dict[str, str], path: Path) -> Path:
    """Train vs validation loss per task over the evaluations (one panel per task; classification panels also show
    train and val accuracy on a second axis), as a PNG.

    Args:
        history: the evaluations, each ``{"step", "tasks": {task: {"train_loss", "loss", ...}}}``.
        kinds: ``{task: kind}``.
        path: the PNG to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(kinds)
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.6), dpi=100, squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        steps = [h["step"] for h in history]
        val = [h["tasks"][name]["loss"] for h in history]
        train = [(h["step"], h["tasks"][name]["train_loss"]) for h in history
                 if h["tasks"][name].get("train_loss") is not None]
        ax.plot(steps, val, "o-", label="val loss")
        if train:
            ax.plot([s for s, _ in train], [v for _, v in train], "s--", label="train loss")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title(f"{name} ({kinds[name]})")
        if kinds[name] == "classification":
            acc = ax.twinx()
            acc.plot(steps, [h["tasks"][name]["accuracy"] for h in history], "^:", color="tab:green",
                     label="val acc")
            acc.plot(steps, [h["tasks"][name]["train_accuracy"] for h in history], "v:", color="tab:olive",
                     label="train acc")
            acc.set_ylim(0, 1.05)
            acc.set_ylabel("accuracy")
            acc.legend(loc="upper right", fontsize=7)
        ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", metadata={"Software": None})
    plt.close(fig)
    return Path(path)
