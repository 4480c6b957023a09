"""lm-evaluation-harness on local tasks, through its Python API, with no hub access.

Two task kinds are written as a YAML config beside a JSON-lines data file (and, for the rolling kind, the small
Python file its ``process_results`` names):

- ``rolling``: wikitext-style perplexity of held-out documents (``loglikelihood_rolling``): word perplexity, byte
  perplexity and bits per byte, figures :mod:`tasks.evaluate.lm` reproduces;
- ``choice``: a multiple-choice task built from a classification split (the label whose name the model finds most
  likely after the text): zero-shot accuracy of a causal LM, ``acc`` and length-normalised ``acc_norm``.

The model is an exported directory loaded by the harness's ``HFLM`` (``pretrained=<dir>``); the hub is switched off
(``HF_HUB_OFFLINE``, ``HF_DATASETS_OFFLINE``) while the harness runs.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tasks.atomic import atomic_write_text

KINDS = ("rolling", "choice")
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}

_ROLLING_RESULTS = '''"""process_results of lmforge's rolling task (tasks.evaluate.harness writes it), as wikitext's."""

import re


def process_results(doc, results):
    (loglikelihood,) = results
    words = len(re.split(r"\\s+", doc["text"]))
    n_bytes = len(doc["text"].encode("utf-8"))
    return {"word_perplexity": (loglikelihood, words), "byte_perplexity": (loglikelihood, n_bytes),
            "bits_per_byte": (loglikelihood, n_bytes)}
'''


class HarnessError(Exception):
    """lm-evaluation-harness could not run the task; the message says what to fix. Exit code 2."""

    exit_code = 2


def write_task(*, task_dir: Path, name: str, kind: str, rows: Sequence[dict[str, Any]],
               labels: Sequence[str] | None = None) -> Path:
    """Write a local lm-eval task: ``task_dir/NAME.yaml`` and ``task_dir/NAME.jsonl`` (plus the rolling kind's
    ``NAME_results.py``).

    Args:
        task_dir: the directory handed to the harness's task manager (``include_path``).
        name: the task name (letters, digits, underscores).
        kind: ``rolling`` (rows ``{"text"}``) or ``choice`` (rows ``{"text", "label"}``).
        rows: the documents or examples.
        labels: ``choice``: every label name, the answer options in this order.

    Returns:
        the YAML file.

    Raises:
        HarnessError: an unknown kind, a bad name, no rows, or a choice task without labels.
    """
    if kind not in KINDS:
        raise HarnessError(f"task kind {kind!r}: use one of {KINDS}")
    if not name.isidentifier() or not rows:
        raise HarnessError(f"task {name!r}: needs an identifier-like name and at least one row")
    task_dir = Path(task_dir)
    data = task_dir / f"{name}.jsonl"
    if kind == "rolling":
        lines = [json.dumps({"text": r["text"]}, ensure_ascii=False) for r in rows if r["text"]]
        atomic_write_text(task_dir / f"{name}_results.py", _ROLLING_RESULTS)
        body = ["output_type: loglikelihood_rolling", 'doc_to_text: ""', 'doc_to_target: "{{text}}"',
                f"process_results: !function {name}_results.process_results", "metric_list:",
                "  - metric: word_perplexity", "  - metric: byte_perplexity", "  - metric: bits_per_byte"]
    else:
        if not labels:
            raise HarnessError(f"choice task {name!r} needs its labels")
        options = list(labels)
        lines = [json.dumps({"text": r["text"], "label": options.index(r["label"])}, ensure_ascii=False)
                 for r in rows]
        body = ["output_type: multiple_choice", 'doc_to_text: "{{text}}\\nAnswer:"', "doc_to_target: label",
                f"doc_to_choice: {json.dumps(options)}", 'target_delimiter: " "', "metric_list:",
                "  - metric: acc", "    aggregation: mean", "    higher_is_better: true",
                "  - metric: acc_norm", "    aggregation: mean", "    higher_is_better: true"]
    atomic_write_text(data, "".join(line + "\n" for line in lines))
    head = [f"task: {name}", "dataset_path: json", "dataset_kwargs:", "  data_files:",
            f"    test: {json.dumps(str(data.resolve()))}", "test_split: test"]
    yaml = task_dir / f"{name}.yaml"
    atomic_write_text(yaml, "\n".join([*head, *body, "metadata:", "  version: 1.0"]) + "\n")
    return yaml


@contextmanager
def offline() -> Iterator[None]:
    """The hub switched off for the duration (the variables are restored afterwards)."""
    old = {k: os.environ.get(k) for k in OFFLINE}
    os.environ.update(OFFLINE)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_harness(*, model_dir: Path, task_dir: Path, tasks: Sequence[str], batch_size: int = 8,
                max_length: int | None = None, limit: int | None = None, threads: int | None = None
                ) -> dict[str, Any]:
    """Run lm-evaluation-harness's ``simple_evaluate`` on local tasks against an exported model directory.

    Args:
        model_dir: a transformers causal LM saved with its tokenizer.
        task_dir: where :func:`write_task` wrote the tasks.
        tasks: the task names to run.
        batch_size: requests per forward pass.
        max_length: the harness's context (None: the model's ``max_position_embeddings``).
        limit: evaluate only the first ``limit`` documents per task (None: all).
        threads: torch CPU threads (None: leave as is).

    Returns:
        ``{"tasks": {task: {metric: number}}, "samples": {task: n}, "seconds": wall time of the harness run,
        "lm_eval_version": str}``: the harness's results trimmed to the numbers (stderr included where it computed
        one; "N/A" dropped).

    Raises:
        HarnessError: the harness failed (the message carries its error).
    """
    import torch

    if threads:
        torch.set_num_threads(threads)
    with offline():
        from lm_eval import __version__, simple_evaluate
        from lm_eval.tasks import TaskManager

        args = {"pretrained": str(model_dir), "dtype": "float32"}
        if max_length:
            args["max_length"] = int(max_length)
        start = time.perf_counter()
        try:
            out = simple_evaluate(model="hf", model_args=args, tasks=list(tasks), batch_size=batch_size,
                                  device="cpu", limit=limit, log_samples=False, bootstrap_iters=0,
                                  task_manager=TaskManager(include_path=str(task_dir), include_defaults=False))
        except Exception as e:  # the harness raises many kinds; the caller needs one
            raise HarnessError(f"lm-evaluation-harness failed on {list(tasks)} with {model_dir}: {e!r}") from e
        seconds = time.perf_counter() - start
    trimmed = {task: {k.replace(",none", ""): float(v) for k, v in res.items()
                      if isinstance(v, int | float) and not isinstance(v, bool)}
               for task, res in out["results"].items()}
    samples = {task: int(n.get("effective", n.get("original", 0))) if isinstance(n, dict) else int(n)
               for task, n in out.get("n-samples", {}).items()}
    return {"tasks": trimmed, "samples": samples, "seconds": seconds, "lm_eval_version": __version__}


def rolling_scores(*, model_dir: Path, texts: Sequence[str], batch_size: int = 8,
                   name: str = "lmforge_dedup_test") -> dict[str, Any]:
    """The harness's rolling log-likelihood of a causal LM on ``texts``, as a local task ``name`` written to a
    temporary directory: :func:`run_harness`'s result, whose ``samples`` is the number of documents scored."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="lmforge-harness-") as tmp:
        write_task(task_dir=Path(tmp), name=name, kind="rolling", rows=[{"text": t} for t in texts])
        return run_harness(model_dir=model_dir, task_dir=Path(tmp), tasks=[name], batch_size=batch_size)
