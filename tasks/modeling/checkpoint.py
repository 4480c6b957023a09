"""Checkpoints: DeepSpeed save and resume, the run identity a resumed run must share, RNG states, run stats.

A checkpoint directory holds DeepSpeed's ``step<N>`` tags and ``latest``, plus two small JSON files written
atomically by rank 0: ``run_identity.json`` (the settings of the run that started the directory; resuming under other
ones is refused) and ``run_stats.json`` (this run's timings, kept out of the exported model so that stays the same
bytes for the same config and data).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

from tasks.atomic import atomic_write_text
from tasks.modeling.errors import ConfigError

RUN_IDENTITY_FILE = "run_identity.json"
RUN_STATS_FILE = "run_stats.json"
TAG_PREFIX = "step"


class ResumeError(RuntimeError):
    """DeepSpeed could not load the checkpoint that ``latest`` names. Exit code 1."""

    exit_code = 1


def identity(cfg: Any, keys: tuple[str, ...]) -> dict[str, Any]:
    """The settings (``keys`` of the run config ``cfg``) a resumed run must share with the one that started its
    checkpoint directory, plus ``steps`` and the number of processes."""
    import os

    return {**cfg.model_dump(mode="json", include=set(keys)), "steps": cfg.steps,
            "world_size": int(os.environ.get("WORLD_SIZE", "1"))}


def check_resume(*, checkpoint_dir: Path, identity: dict[str, Any], name: str = "pretrain") -> None:
    """Refuse to resume a checkpoint written under other settings; warn when only ``steps`` changed.

    Args:
        checkpoint_dir: the run's checkpoint directory (nothing to check without ``latest`` in it).
        identity: what the weights, optimizer state and data order depend on, plus ``steps``.
        name: the recipe, for the warning line.

    Raises:
        ConfigError: a setting other than ``steps`` differs from the one recorded when the run started.
    """
    path = Path(checkpoint_dir) / RUN_IDENTITY_FILE
    if not (Path(checkpoint_dir) / "latest").is_file() or not path.is_file():
        return
    before = json.loads(path.read_text(encoding="utf-8"))
    changed = sorted(k for k in identity if k != "steps" and before.get(k) != identity[k])
    if changed:
        detail = ", ".join(f"{k}: {before.get(k)!r} -> {identity[k]!r}" for k in changed)
        raise ConfigError(f"checkpoint_dir {checkpoint_dir} holds a run with other settings ({detail}); "
                          "resuming it would not continue that run: restore them, or use another checkpoint_dir "
                          "(or delete this one) to start over")
    if before.get("steps") != identity.get("steps"):
        print(f"{name}: warning: steps changed from {before.get('steps')} to {identity.get('steps')} since this run "
              "started; the learning-rate schedule follows the new value from here on", file=sys.stderr, flush=True)


def record_identity(*, checkpoint_dir: Path, identity: dict[str, Any]) -> None:
    """Keep the settings a run in ``checkpoint_dir`` goes on with (rank 0), for :func:`check_resume`."""
    atomic_write_text(Path(checkpoint_dir) / RUN_IDENTITY_FILE, json.dumps(identity, indent=2, sort_keys=True) + "\n")


def write_run_stats(*, checkpoint_dir: Path, stats: dict[str, Any]) -> None:
    """Write this run's timings and resumption beside its checkpoints (rank 0), atomically."""
    atomic_write_text(Path(checkpoint_dir) / RUN_STATS_FILE, json.dumps(stats, indent=2) + "\n")


def rng_state() -> dict[str, Any]:
    """The torch, numpy, Python (and CUDA) generator states, for a resume that continues the same random stream."""
    import random

    import numpy as np
    import torch

    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    import random

    import numpy as np
    import torch

    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def prune(checkpoint_dir: Path, *, keep: int) -> None:
    """Delete all but the newest ``keep`` ``step<N>`` tags."""
    tags = sorted((p for p in Path(checkpoint_dir).glob(f"{TAG_PREFIX}*") if p.is_dir() and p.name[4:].isdigit()),
                  key=lambda p: int(p.name[4:]))
    for old in tags[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def save(engine: Any, *, checkpoint_dir: Path, step: int, client_state: dict[str, Any], keep: int,
         is_main: bool) -> None:
    """Save a DeepSpeed checkpoint tagged ``step<step>`` (every rank must call it), with the RNG states in its
    client state, then keep only the newest ``keep`` tags."""
    import torch.distributed as dist

    engine.save_checkpoint(str(checkpoint_dir), tag=f"{TAG_PREFIX}{step}",
                           client_state={**client_state, "rng": rng_state()})
    dist.barrier()
    if is_main:
        prune(checkpoint_dir, keep=keep)


def latest_tag(checkpoint_dir: Path) -> str | None:
    """The tag to resume: the one ``latest`` names, or, when a kill caught DeepSpeed rewriting ``latest`` (it
    truncates the file, then writes the new tag, after the new tag's directory is complete), the newest ``step<N>``
    directory. None when there is none."""
    ckpt = Path(checkpoint_dir)
    try:
        named = (ckpt / "latest").read_text(encoding="utf-8").strip()
    except OSError:
        named = ""
    if named and (ckpt / named).is_dir():
        return named
    tags = sorted((p for p in ckpt.glob(f"{TAG_PREFIX}*") if p.is_dir() and p.name[len(TAG_PREFIX):].isdigit()),
                  key=lambda p: int(p.name[len(TAG_PREFIX):]))
    return tags[-1].name if tags else None


def load(engine: Any, *, checkpoint_dir: Path) -> tuple[str, dict[str, Any]] | None:
    """Resume from ``checkpoint_dir/latest`` if present: weights, optimizer and the RNG states (restored here).

    Returns:
        (the loaded path, the client state) or None when there is nothing to resume.

    Raises:
        ResumeError: ``latest`` names a checkpoint DeepSpeed cannot load.
    """
    ckpt = Path(checkpoint_dir)
    if not (ckpt / "latest").is_file():
        return None
    path, client = engine.load_checkpoint(str(ckpt), tag=latest_tag(ckpt))
    if path is None:
        raise ResumeError(f"could not load the checkpoint named by {ckpt / 'latest'}: delete {ckpt} to start over")
    set_rng_state(client["rng"])
    return str(path), client
