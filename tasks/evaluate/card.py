"""The model card: a Hugging Face ``README.md`` in a model directory, written from plain dicts.

The YAML front matter is what the Hub (and ``huggingface_hub.ModelCard``) reads: license, library, tags, pipeline
tag and a ``model-index`` with the evaluation results. The body says where the data came from (sources, how many
documents each step kept, the dedup settings and counts, the DVC digests of the inputs), how the model was trained,
how it scored, and what it is and is not for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from tasks.atomic import atomic_write_text

CARD_FILE = "README.md"
PIPELINE_TAGS = {"classification": "text-classification", "sft": "text-generation", "student": "text-generation",
                 "causal_lm": "text-generation"}
"""Hub pipeline tag per lmforge task kind."""
LINEAGE_KEYS = ("sources", "funnel", "dedup", "digests")


class CardError(Exception):
    """A model card cannot be written from what was given. Exit code 2."""

    exit_code = 2


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return f"{value:,}" if isinstance(value, int) else f"{value:.4g}"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_number(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _front_matter(*, name: str, task: str, kind: str, evaluation: Mapping[str, Mapping[str, float]],
                  license_id: str, language: str, tags: Sequence[str]) -> dict[str, Any]:
    pipeline_tag = PIPELINE_TAGS[kind]
    results = [{"task": {"type": pipeline_tag},
                "dataset": {"name": task, "type": f"lmforge/{task}", "split": split},
                "metrics": [{"type": metric, "name": metric, "value": float(value)}
                            for metric, value in metrics.items()]}
               for split, metrics in evaluation.items() if metrics]
    return {"license": license_id, "language": [language], "library_name": "transformers",
            "pipeline_tag": pipeline_tag, "tags": ["lmforge", "llama", kind, *tags],
            "model-index": [{"name": name, "results": results}]}


def _lineage(lineage: Mapping[str, Any]) -> list[str]:
    out = ["## Data lineage"]
    if sources := lineage.get("sources"):
        out += ["", "Sources:", ""]
        out += [f"- {', '.join(f'{k}: {_number(v)}' for k, v in s.items()) if isinstance(s, Mapping) else s}"
                for s in sources]
    if funnel := lineage.get("funnel"):
        first = next(iter(funnel.values())) or 1
        out += ["", "What each step kept (documents or examples):", "",
                _table(["step", "count", "share of the first"],
                       [(step, n, f"{n / first:.1%}") for step, n in funnel.items()])]
    if dedup := lineage.get("dedup"):
        out += ["", "Deduplication:", "", _table(["setting or counter", "value"], list(dedup.items()))]
    if digests := lineage.get("digests"):
        out += ["", "Inputs, by DVC content hash (the md5 that `dvc.lock` records):", "",
                _table(["path", "md5"], [(f"`{p}`", f"`{d}`") for p, d in digests.items()])]
    return out


def _evaluation(evaluation: Mapping[str, Mapping[str, float]],
                intervals: Mapping[str, Mapping[str, Sequence[float]]]) -> list[str]:
    rows = []
    for split, metrics in evaluation.items():
        for metric, value in metrics.items():
            ci = intervals.get(split, {}).get(metric)
            rows.append((split, metric, value, f"[{ci[0]:.4g}, {ci[1]:.4g}]" if ci else "-"))
    return ["## Evaluation", "", _table(["split", "metric", "value", "95% confidence interval"], rows)]


def render_card(*, name: str, task: str, kind: str, lineage: Mapping[str, Any], training: Mapping[str, Any],
                evaluation: Mapping[str, Mapping[str, float]], intended_use: str, limitations: Sequence[str],
                intervals: Mapping[str, Mapping[str, Sequence[float]]] | None = None, license_id: str = "apache-2.0",
                language: str = "en", tags: Sequence[str] = ()) -> str:
    """The card's text (front matter and Markdown body); see :func:`write_model_card` for the arguments.

    Raises:
        CardError: an unknown task kind, an unknown lineage key, or no evaluation result.
    """
    if kind not in PIPELINE_TAGS:
        raise CardError(f"no Hub pipeline tag for task kind {kind!r}: use one of {', '.join(sorted(PIPELINE_TAGS))}")
    if unknown := sorted(set(lineage) - set(LINEAGE_KEYS)):
        raise CardError(f"unknown lineage key(s) {', '.join(unknown)}: use {', '.join(LINEAGE_KEYS)}")
    if not any(evaluation.values()):
        raise CardError(f"no evaluation results for {name}: a card without results would claim nothing measured")
    front = _front_matter(name=name, task=task, kind=kind, evaluation=evaluation, license_id=license_id,
                          language=language, tags=tags)
    auto = "AutoModelForSequenceClassification" if kind == "classification" else "AutoModelForCausalLM"
    body = [f"# {name}", "",
            f"A small Llama fine-tuned by lmforge for the `{task}` task ({kind}).", "",
            "## Intended use", "", intended_use.strip(), "",
            "## Limitations", "", *[f"- {item}" for item in limitations], "",
            *_lineage(lineage), "",
            "## Training", "", _table(["setting", "value"], list(training.items())), "",
            *_evaluation(evaluation, intervals or {}), "",
            "## How to use", "", "```python",
            f"from transformers import AutoTokenizer, {auto}", "",
            f'model = {auto}.from_pretrained("path/to/{task}")',
            f'tokenizer = AutoTokenizer.from_pretrained("path/to/{task}")',
            "```", "",
            f"From the MLflow model registry: `mlflow.pyfunc.load_model(\"models:/{name}@champion\")`.", ""]
    return f"---\n{yaml.safe_dump(front, sort_keys=False, allow_unicode=True)}---\n\n" + "\n".join(body)


def write_model_card(model_dir: Path, *, name: str, task: str, kind: str, lineage: Mapping[str, Any],
                     training: Mapping[str, Any], evaluation: Mapping[str, Mapping[str, float]], intended_use: str,
                     limitations: Sequence[str], intervals: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
                     license_id: str = "apache-2.0", language: str = "en", tags: Sequence[str] = ()) -> Path:
    """Write ``model_dir/README.md``, a Hugging Face model card; returns its path.

    Args:
        model_dir: the model directory (Hugging Face format); must exist.
        name: the model's name (its registered name, ``lmforge-doc_section``).
        task: the task it was fine-tuned for; names the model-index dataset ``lmforge/TASK``.
        kind: ``classification``, ``sft``, ``student`` or ``causal_lm``: sets the pipeline tag.
        lineage: any of ``sources`` (strings or dicts, one per source), ``funnel`` (step -> count, in order),
            ``dedup`` (setting or counter -> value) and ``digests`` (path -> DVC md5).
        training: setting -> value (steps, learning rate, precision, parameters...).
        evaluation: split -> metric -> value; goes into the model-index and the evaluation table.
        intended_use: a paragraph.
        limitations: one sentence each.
        intervals: split -> metric -> (low, high), 95% confidence intervals of ``evaluation``'s values.
        license_id: SPDX-like license id of the Hub's list.
        language: ISO 639-1 code of the training text.
        tags: extra Hub tags.

    Raises:
        CardError: the directory does not exist, or see :func:`render_card`.
    """
    if not model_dir.is_dir():
        raise CardError(f"no model directory {model_dir}: write the card after the model is saved")
    text = render_card(name=name, task=task, kind=kind, lineage=lineage, training=training, evaluation=evaluation,
                       intended_use=intended_use, limitations=limitations, intervals=intervals,
                       license_id=license_id, language=language, tags=tags)
    path = model_dir / CARD_FILE
    atomic_write_text(path, text)
    return path
