"""Pictures for stage metrics: the clean funnel."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def funnel_plot(steps: Sequence[tuple[str, int, int]], path: Path, title: str) -> Path:
    """Bar chart of documents and characters remaining after each step.

    Args:
        steps: ``(step, docs, chars)`` in order, the first being the input.
        path: PNG file to write.
        title: chart title.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display; also keeps the plot byte-stable across machines with one
    import matplotlib.pyplot as plt

    names = [s[0] for s in steps]
    docs0, chars0 = max(steps[0][1], 1), max(steps[0][2], 1)
    fig, ax = plt.subplots(figsize=(max(6, len(steps) * 1.3), 4), dpi=100)
    x = range(len(steps))
    ax.bar([i - 0.2 for i in x], [100 * s[1] / docs0 for s in steps], width=0.4, label="documents")
    ax.bar([i + 0.2 for i in x], [100 * s[2] / chars0 for s in steps], width=0.4, label="characters")
    for i, s in enumerate(steps):
        ax.text(i - 0.2, 100 * s[1] / docs0 + 1, f"{s[1]:,}", ha="center", fontsize=7)
    ax.set_xticks(list(x), names, rotation=20, ha="right")
    ax.set_ylabel("% of input remaining")
    ax.set_ylim(0, 110)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
    return path


def search_plot(trials: Sequence[dict], path: Path, title: str = "hyperparameter search") -> Path:
    """Each trial's validation score in trial order; pruned trials (score None) as grey lines.

    Args:
        trials: ``{"number": int, "val_score": float | None, ...}`` per trial.
        path: PNG file to write.
        title: chart title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    done = [t for t in trials if t.get("val_score") is not None]
    ax.plot([t["number"] for t in done], [t["val_score"] for t in done], "o", label="complete")
    for t in trials:
        if t.get("val_score") is None:
            ax.axvline(t["number"], color="grey", alpha=0.4)
    if done:
        best = max(done, key=lambda t: t["val_score"])
        ax.plot([best["number"]], [best["val_score"]], "*", markersize=14, label=f"best (trial {best['number']})")
    ax.set_xlabel("trial")
    ax.set_ylabel("best validation score")
    ax.set_title(f"{title} (grey: pruned)")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
    return path


def variants_plot(stats: dict[str, float], path: Path, title: str) -> Path:
    """Per task, each model's retention of the teacher's quality against its batch-1 latency (p50): where the
    compressed models land between the teacher (1.0) and faster-but-worse.

    Args:
        stats: flat ``MODEL.TASK.KEY`` numbers (the distill stage's metrics): ``latency_p50_ms`` and
            ``retention.<metric>`` (the first retention metric of a task is plotted).
        path: PNG file to write.
        title: chart title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points: dict[str, list[tuple[str, float, float]]] = {}
    for key, latency in sorted(stats.items()):
        model, _, rest = key.partition(".")
        task, _, leaf = rest.rpartition(".")
        if leaf != "latency_p50_ms" or not task:
            continue
        retention = sorted(k for k in stats if k.startswith(f"{model}.{task}.retention."))
        if retention:
            points.setdefault(task, []).append((model, float(latency), float(stats[retention[0]])))
    fig, axes = plt.subplots(1, max(len(points), 1), figsize=(5 * max(len(points), 1), 3.8), dpi=100, squeeze=False)
    for ax, (task, rows) in zip(axes[0], sorted(points.items()), strict=False):
        for model, latency, retention in rows:
            ax.plot([latency], [retention], "o")
            ax.annotate(model, (latency, retention), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.set_xlabel("batch-1 latency p50 (ms)")
        ax.set_ylabel("quality retained (teacher = 1)")
        ax.set_title(task)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
    return path
