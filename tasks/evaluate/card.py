"""The model card: a Hugging Face ``README.md`` in a model directory, written from plain dicts.

The YAML front matter is what the Hub (and ``huggingface_hub.ModelCard``) reads: license, library, tags, pipeline
tag and a ``model-index`` with the evaluation results. The body says what the model is (architecture and parameters,
as :func:`tasks.evaluate.models.model_facts` read them from its files), where the data came from (sources, how many
documents each step kept, the dedup settings and counts, the DVC digests of the inputs), how the model was trained,
how it scored and on how many documents or examples, and what it is and is not for. :func:`limitations` writes the
limits from those facts: a card states what was measured, never a size or a corpus it assumes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from tasks.atomic import atomic_write_text
from tasks.modeling.tasktypes import TASK_TYPES

CARD_FILE = "README.md"
PIPELINE_TAGS = {**{name: kind.pipeline_tag for name, kind in TASK_TYPES.items()}, "student": "text-generation",
                 "causal_lm": "text-generation"}
"""Hub pipeline tag per lmforge task kind: every task type's own, and the language models'."""
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


def _dataset(task: str, split: str) -> tuple[str, str]:
    """An evaluation key's dataset and split: ``test`` is the task's, ``dedup/test`` the corpus's test split."""
    dataset, _, part = split.rpartition("/")
    return dataset or task, part


def _front_matter(*, name: str, task: str, kind: str, model_type: str | None,
                  evaluation: Mapping[str, Mapping[str, float]], license_id: str, language: str,
                  tags: Sequence[str]) -> dict[str, Any]:
    pipeline_tag = PIPELINE_TAGS[kind]
    results = [{"task": {"type": pipeline_tag},
                "dataset": {"name": _dataset(task, split)[0], "type": f"lmforge/{_dataset(task, split)[0]}",
                            "split": _dataset(task, split)[1]},
                "metrics": [{"type": metric, "name": metric, "value": float(value)}
                            for metric, value in metrics.items()]}
               for split, metrics in evaluation.items() if metrics]
    return {"license": license_id, "language": [language], "library_name": "transformers",
            "pipeline_tag": pipeline_tag, "tags": ["lmforge", *([model_type] if model_type else []), kind, *tags],
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
                intervals: Mapping[str, Mapping[str, Sequence[float]]],
                counts: Mapping[str, Mapping[str, int]]) -> list[str]:
    rows = []
    for split, metrics in evaluation.items():
        for metric, value in metrics.items():
            ci = intervals.get(split, {}).get(metric)
            rows.append((split, counts.get(split, {}).get(metric, "-"), metric, value,
                         f"[{ci[0]:.4g}, {ci[1]:.4g}]" if ci else "-"))
    return ["## Evaluation", "", _table(["split", "documents or examples", "metric", "value",
                                         "95% confidence interval"], rows)]


def _model(model: Mapping[str, Any]) -> str:
    """One sentence of what the model is, from :class:`~tasks.evaluate.models.ModelFacts`' fields."""
    shape = ", ".join(f"{label} {_number(model[key])}" for key, label in
                      (("layers", "layers"), ("hidden_size", "hidden size"), ("attention_heads", "attention heads"),
                       ("vocab_size", "vocabulary"), ("context", "context")) if model.get(key) is not None)
    weights = f", {model['quantization']}-quantized weights" if model.get("quantization") else ""
    return f"A `{model['architecture']}` of {_number(model['parameters'])} parameters ({shape}{weights})"


def limitations(*, model: Mapping[str, Any], task: str, data: Mapping[str, Mapping[str, int]],
                distilled: bool = False) -> list[str]:
    """The card's limitations, each a fact: the model's size and context, the data it saw, what its scores cover.

    Args:
        model: :meth:`tasks.evaluate.models.ModelFacts.as_dict`.
        task: the task name.
        data: ``{"pretraining": {"documents", "bytes"}, "train": {"examples"}, "test": {"examples"}}`` (any of them):
            the corpus the base model was trained on, and the task's train and test splits.
        distilled: the model is the student (or one of its variants), trained on the fine-tuned model's outputs.
    """
    out = [f"{_number(model['parameters'])} parameters"
           + (f", a context of {_number(model['context'])} tokens: longer inputs are cut" if model.get("context")
              else "") + "."]
    pre, train = data.get("pretraining"), data.get("train")
    corpus = f"{_number(pre['documents'])} documents ({pre['bytes'] / 1e6:.2f} MB) of the corpus' train split" if pre \
        else ""
    examples = f"{_number(train['examples'])} `{task}` training examples" if train else ""
    if distilled and examples:
        out.append(f"Distilled from the fine-tuned model on its {examples}"
                   + (f"; that model was pretrained on {corpus}" if corpus else "") + ". It has seen nothing else.")
    elif corpus or examples:
        out.append(f"It learned from {' and '.join(x for x in (corpus and corpus + ' (pretraining)', examples) if x)}"
                   ", nothing else: text unlike them is outside what it knows.")
    if test := data.get("test"):
        out.append(f"Its scores hold for the {_number(test['examples'])} examples of the `{task}` test split, not "
                   "for other text.")
    return out


def render_card(*, name: str, task: str, kind: str, model: Mapping[str, Any], lineage: Mapping[str, Any],
                training: Mapping[str, Any], evaluation: Mapping[str, Mapping[str, float]], intended_use: str,
                limitations: Sequence[str], intervals: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
                counts: Mapping[str, Mapping[str, int]] | None = None, title: str | None = None,
                license_id: str = "apache-2.0", language: str = "en", tags: Sequence[str] = ()) -> str:
    """The card's text (front matter and Markdown body); see :func:`write_model_card` for the arguments.

    Raises:
        CardError: an unknown task kind, an unknown lineage key, no evaluation result, or a model without its
            architecture and parameter count.
    """
    if missing := [k for k in ("architecture", "parameters") if model.get(k) is None]:
        raise CardError(f"the model's {', '.join(missing)} unknown: describe it with tasks.evaluate.models.model_facts")
    if kind not in PIPELINE_TAGS:
        raise CardError(f"no Hub pipeline tag for task kind {kind!r}: use one of {', '.join(sorted(PIPELINE_TAGS))}")
    if unknown := sorted(set(lineage) - set(LINEAGE_KEYS)):
        raise CardError(f"unknown lineage key(s) {', '.join(unknown)}: use {', '.join(LINEAGE_KEYS)}")
    if not any(evaluation.values()):
        raise CardError(f"no evaluation results for {name}: a card without results would claim nothing measured")
    front = _front_matter(name=name, task=task, kind=kind, model_type=model.get("model_type"), evaluation=evaluation,
                          license_id=license_id, language=language, tags=tags)
    auto = (TASK_TYPES[kind].head_class if kind in TASK_TYPES else None) or "AutoModelForCausalLM"
    body = [f"# {title or name}", "",
            f"{_model(model)}, made by lmforge for the `{task}` task ({kind}).", "",
            "## Intended use", "", intended_use.strip(), "",
            "## Limitations", "", *[f"- {item}" for item in limitations], "",
            *_lineage(lineage), "",
            "## Training", "", _table(["setting", "value"], list(training.items())), "",
            *_evaluation(evaluation, intervals or {}, counts or {}), "",
            "## How to use", "", "```python",
            f"from transformers import AutoTokenizer, {auto}", "",
            f'model = {auto}.from_pretrained("path/to/{task}")',
            f'tokenizer = AutoTokenizer.from_pretrained("path/to/{task}")',
            "```", "",
            f"From the MLflow model registry: `mlflow.pyfunc.load_model(\"models:/{name}@champion\")`.", ""]
    return f"---\n{yaml.safe_dump(front, sort_keys=False, allow_unicode=True)}---\n\n" + "\n".join(body)


def write_model_card(model_dir: Path, *, name: str, task: str, kind: str, model: Mapping[str, Any],
                     lineage: Mapping[str, Any], training: Mapping[str, Any],
                     evaluation: Mapping[str, Mapping[str, float]], intended_use: str, limitations: Sequence[str],
                     intervals: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
                     counts: Mapping[str, Mapping[str, int]] | None = None, title: str | None = None,
                     license_id: str = "apache-2.0", language: str = "en", tags: Sequence[str] = ()) -> Path:
    """Write ``model_dir/README.md``, a Hugging Face model card; returns its path.

    Args:
        model_dir: the model directory (Hugging Face format); must exist.
        name: the model's name (its registered name, ``lmforge-doc_section``).
        task: the task it was fine-tuned for; names the model-index dataset ``lmforge/TASK``.
        kind: ``classification``, ``sft``, ``student`` or ``causal_lm``: sets the pipeline tag.
        model: what the model is (:meth:`tasks.evaluate.models.ModelFacts.as_dict`: ``architecture``,
            ``parameters``, and the shape fields it has).
        lineage: any of ``sources`` (strings or dicts, one per source), ``funnel`` (step -> count, in order),
            ``dedup`` (setting or counter -> value) and ``digests`` (path -> DVC md5).
        training: setting -> value (steps, learning rate, precision, parameters...).
        evaluation: split -> metric -> value; goes into the model-index and the evaluation table. ``test`` is the
            task's split; ``DATASET/SPLIT`` another dataset's (``dedup/test``: the corpus' test split).
        intended_use: a paragraph.
        limitations: one sentence each.
        intervals: split -> metric -> (low, high), 95% confidence intervals of ``evaluation``'s values.
        counts: split -> metric -> the documents or examples that figure was measured on.
        title: the card's heading (default ``name``), e.g. ``lmforge-doc_section v3 (student)``.
        license_id: SPDX-like license id of the Hub's list.
        language: ISO 639-1 code of the training text.
        tags: extra Hub tags.

    Raises:
        CardError: the directory does not exist, or see :func:`render_card`.
    """
    if not model_dir.is_dir():
        raise CardError(f"no model directory {model_dir}: write the card after the model is saved")
    text = render_card(name=name, task=task, kind=kind, model=model, lineage=lineage, training=training,
                       evaluation=evaluation, intended_use=intended_use, limitations=limitations, intervals=intervals,
                       counts=counts, title=title, license_id=license_id, language=language, tags=tags)
    path = model_dir / CARD_FILE
    atomic_write_text(path, text)
    return path


def write_task_card(card_dir: Path, *, name: str, version: str, model: str, model_dir: Path, task: str, kind: str,
                    metrics: Mapping[str, Any], lm: Mapping[str, Any] | None, training: Mapping[str, Any],
                    lineage: Mapping[str, Any], splits: Mapping[str, Sequence[Any]],
                    pretraining: Mapping[str, int]) -> Path:
    """The card of one evaluated task model, every statement computed: what the model is (read from
    ``model_dir``), its scores with what they were measured on, and :func:`limitations`; returns its path.

    Args:
        card_dir: where ``README.md`` goes (created).
        name: the registered model's name (``lmforge-topic``); version: its registry version.
        model: which of the task's models (``finetuned``, ``student``, a variant).
        model_dir: the exported model the card describes.
        task: the task; kind: its kind (``classification``, ``sft``).
        metrics: the model's scores on the task's test split (``examples`` and, for completions, ``generated``).
        lm: its language-model figures on the corpus' test split (``documents``), or None.
        training: setting -> value (where it came from, costs).
        lineage: see :func:`write_model_card`.
        splits: the task's splits (``train``, ``test``: the examples it learned from and was scored on).
        pretraining: ``{"documents", "bytes"}`` of the corpus the base model was trained on.
    """
    from tasks.evaluate.models import model_facts
    from tasks.evaluate.summary import card_evaluation

    facts = model_facts(model_dir).as_dict()
    data = {"pretraining": pretraining, **{s: {"examples": len(splits[s])} for s in ("train", "test") if s in splits}}
    evaluation, intervals, counts = card_evaluation(kind, metrics, lm)
    Path(card_dir).mkdir(parents=True, exist_ok=True)
    return write_model_card(Path(card_dir), name=name, title=f"{name} v{version} ({model})", task=task, kind=kind,
                            model=facts, lineage=lineage,
                            training={"model": model, **training}, evaluation=evaluation, intervals=intervals,
                            counts=counts, limitations=limitations(model=facts, task=task, data=data,
                                                                  distilled=model != "finetuned"),
                            intended_use=f"A demonstration model of lmforge's pipeline for the {task} task; not for "
                            "production.")
