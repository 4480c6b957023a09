"""Where stage outputs live, and how they get there: atomically, or not at all.

A stage writes into a hidden staging directory beside its output and renames it into place only when
everything (including validation) succeeded. A stage killed at any point, even with SIGKILL, leaves the
previous output or none, never a half; the next run sweeps the abandoned staging directory away.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from tasks.atomic import atomic_write_text, fsync_tree, replace_dir, sweep

__all__ = ["atomic_write_text", "staged_output", "staged_outputs", "finish_publication", "write_metrics",
           "metrics_path", "report_dir"]

RAW_DIR = Path("data/raw")
CLEAN_DIR = Path("data/clean")
DEDUP_DIR = Path("data/dedup")
TOKENS_DIR = Path("data/tokens")
TOKENIZER_DIR = Path("models/tokenizer")
BASE_MODEL_DIR = Path("models/base")
EXAMPLES_DIR = Path("data/finetune")
FINETUNED_DIR = Path("models/finetuned")
STUDENT_DIR = Path("models/student")
CHECKPOINTS_DIR = Path("checkpoints")
METRICS_DIR = Path("metrics")
REPORTS_DIR = Path("reports")
CACHE_DIR = Path("cache")
"""The data stages' incremental caches (``tasks.incremental``): outside DVC and git, never required (docs/stages)."""
REUSE_FILE = "last_run.json"

_STAGING = ".{name}.staging-"


@contextmanager
def staged_output(final: Path, resume_key: str | None = None) -> Iterator[Path]:
    """Yield a staging directory; on success it replaces ``final`` (``tasks.atomic.replace_dir``).

    Without ``resume_key`` the staging directory is new and empty, and deleted on an exception. With one
    (a hash of everything that defines the output, e.g. the DVC stage hash) the staging directory is named
    after it and kept when the body fails or the process dies, so a re-run with the same key finds the
    work already done in it (resumable stages skip finished shards); staging directories of other keys are
    swept. Either way ``final`` is untouched until success.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    suffix = f"k{resume_key}" if resume_key else str(os.getpid())
    staging = final.parent / f"{_STAGING.format(name=final.name)}{suffix}"
    sweep(final, (_STAGING,), keep=staging if resume_key else None)
    sweep(final)  # what a killed publish left (tasks.atomic's temporary and old siblings)
    staging.mkdir(exist_ok=bool(resume_key))
    try:
        yield staging
    except BaseException:
        if not resume_key:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    replace_dir(staging, final)


_TOGETHER = ".{name}.staging-together"
PUBLISH_JOURNAL = Path(".lmforge/publish.json")
"""The renames of a publication of several outputs under way (:func:`staged_outputs`): left behind by a process
killed between them, finished by the next command (:func:`finish_publication`)."""


@contextmanager
def staged_outputs(root: Path, *finals: Path) -> Iterator[tuple[Path, ...]]:
    """Yield one new, empty staging directory per output in ``finals``; when the body succeeds they are published
    together, when it fails (or the process dies) none is, and the outputs stay as they were.

    For a stage with several outputs that belong together (finetune's task data and the models trained on it): a
    kill at any point leaves the previous outputs, never new data beside an old model. The staging names are fixed
    per output (``.NAME.staging-together``, one writer per checkout holds the workspace lock), so a process the body
    starts (a training run, resumed after a kill) is handed the same paths each time. Publishing is a few renames:
    a journal written first lets :func:`finish_publication` complete them if the process dies between two.
    """
    finish_publication(root)
    stagings = tuple(Path(f).parent / _TOGETHER.format(name=Path(f).name) for f in finals)
    for staging in stagings:
        shutil.rmtree(staging, ignore_errors=True)  # a killed run's partial output: made again from the inputs
        staging.mkdir(parents=True)
    try:
        yield stagings
    except BaseException:
        for staging in stagings:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    for staging in stagings:
        fsync_tree(staging)  # complete on disk before the journal promises them
    pairs = [(str(s), str(f)) for s, f in zip(stagings, finals, strict=True)]
    journal = root / PUBLISH_JOURNAL
    journal.parent.mkdir(exist_ok=True)
    atomic_write_text(journal, json.dumps(pairs))
    _publish(journal, pairs)


def _publish(journal: Path, pairs: list[tuple[str, str]]) -> list[Path]:
    done = []
    for staging, final in pairs:
        if Path(staging).is_dir():  # not yet renamed
            replace_dir(Path(staging), Path(final))
            done.append(Path(final))
    journal.unlink(missing_ok=True)
    return done


def finish_publication(root: Path) -> list[Path]:
    """Complete the publication a process killed between its renames left (its journal); returns the outputs it
    published. The staged outputs were complete before the journal was written, so finishing is always right."""
    journal = root / PUBLISH_JOURNAL
    if not journal.is_file():
        return []
    try:
        pairs = [(str(s), str(f)) for s, f in json.loads(journal.read_text(encoding="utf-8"))]
    except (OSError, ValueError, TypeError):  # a journal cut short: written atomically, so never; but never a crash
        journal.unlink(missing_ok=True)
        return []
    return _publish(journal, pairs)


TRAINED_THIS_RUN = "trained_this_run"
"""Key of a training stage's returned counters: False when a run only re-exported a finished checkpoint."""
HEADLINES: dict[str, tuple[str, ...]] = {
    "collect": ("docs_in", "kept", "quarantined"),
    "clean": ("kept",),
    "dedup": ("kept", "dropped_exact", "dropped_minhash"),
    "tokenizer": ("vocab_size", "tokens.train", "val.bytes_per_token"),
    "pretrain": ("final_val_perplexity", "unigram_val_perplexity"),
    "finetune": (".test.accuracy", ".test.macro_f1", ".test.perplexity"),
    "distill": ("student.*.params_ratio", "student.*.speedup_p50", "student.*.retention.*",
                "int8.*.size_ratio_vs_student"),
    "evaluate": ("*.champion.test.*", "*.champion_version", "base.lm.bits_per_byte", "unigram.lm.bits_per_byte",
                 "base.lm.documents", "tfidf_logreg.*.test.macro_f1", "contamination.*.share"),
}
"""Per stage, the metrics a person looks at first (a key, a suffix starting with a dot, or an fnmatch pattern with
``*``): the end-of-run table and the pipeline run's metrics."""


def headline(root: Path, stage: str) -> dict[str, float]:
    """The headline numbers of ``metrics/STAGE.json`` (empty when the stage has none or never ran)."""
    try:
        values = json.loads(metrics_path(root, stage).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    wanted = HEADLINES.get(stage, ())
    return {k: v for k, v in values.items() if isinstance(v, int | float) and not isinstance(v, bool)
            and any(k == w or (w.startswith(".") and k.endswith(w)) or ("*" in w and fnmatchcase(k, w))
                    for w in wanted)}


def metrics_path(root: Path, stage: str) -> Path:
    """``metrics/STAGE.json`` of the checkout at ``root``."""
    return root / METRICS_DIR / f"{stage}.json"


def write_metrics(root: Path, stage: str, stats: Mapping[str, Any]) -> Path:
    """Write the stage's counters as DVC metrics (sorted keys, so the file is byte-stable)."""
    path = metrics_path(root, stage)
    atomic_write_text(path, json.dumps(dict(stats), indent=2, sort_keys=True) + "\n")
    return path


def cache_dir(root: Path, stage: str) -> Path:
    """``cache/STAGE``: the stage's incremental cache; deleting it makes the next run compute everything (the same
    output, more slowly)."""
    return root / CACHE_DIR / stage


def report_dir(root: Path, stage: str, kind: str) -> Path:
    """``reports/KIND/STAGE``: human-readable reports (GX Data Docs, plots); outside DVC."""
    return root / REPORTS_DIR / kind / stage
