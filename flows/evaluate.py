"""The evaluate stage: every model the pipeline made scored on held-out data beside baselines, then registered.

Models: the base LM, ``models/finetuned/<task>``, ``models/student/<task>`` and the compressed variants
``models/student/variants/{magnitude,structured,int8}/<task>`` (whichever exist). The language models get perplexity
and bits per byte on data/dedup's test split beside a unigram baseline; classifiers get accuracy and macro-F1 with
bootstrap intervals beside TF-IDF + logistic regression; sft models get their test perplexity (response tokens, as
finetune measures it) and ROUGE / BLEU / chrF of greedy completions beside the lead baseline. Cost (batch-1 latency,
tokens/s, parameters, size) is not measured again: it is the distill stage's, read from ``metrics/distill.json``
(its ``teacher`` is the fine-tuned model). Every evaluation set is checked for 13-gram overlap with the training data
first; lm-evaluation-harness scores the base model on a local task. Each task model is then logged to the MLflow
registry and passed through the promotion gate; model cards go to ``reports/evaluate/cards``, never into other stages'
outputs. Everything lands in ``metrics/evaluate.json`` (flat ``MODEL.TASK.METRIC``) and ``reports/evaluate/index.html``.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect import flow

from pipelines import artifacts, registry, tracking
from pipelines.config import Params
from pipelines.config.evaluate import INPUTS, EvaluateParams
from pipelines.versioning import digest
from tasks.evaluate import baselines, classification, contamination, generation, harness, lm
from tasks.evaluate.card import write_model_card
from tasks.evaluate.report import write_report
from tasks.examples import load_split, read_manifest
from tasks.modeling.encoding import encode
from tasks.modeling.evaluation import exported_test_metrics
from tasks.modeling.quantize import load_int8
from tasks.records import iter_shards

STAGE = "evaluate"
VARIANTS = ("magnitude", "structured", "int8")
COST_KEYS = ("latency_p50_ms", "tokens_per_second", "params", "size_bytes")
"""Read from metrics/distill.json per model and task (distill measured them; this stage does not time again)."""
# in the report, perplexity is a task model's test perplexity (sft: response tokens); lm_perplexity and bits_per_byte
# are per token and per byte of data/dedup's test documents
COLUMNS = ("task", "accuracy", "macro_f1", "macro_f1_ci", "perplexity", "lm_perplexity", "bits_per_byte", "rougeL",
           "bleu", "chrf", *COST_KEYS, "promoted")
log = logging.getLogger("flows.evaluate")


@contextmanager
def timed(section: str) -> Iterator[None]:
    """Log a section's wall time (the stage has a budget; timings vary by machine, so they are not metrics)."""
    start = time.perf_counter()
    yield
    log.info("%s: %.1f s", section, time.perf_counter() - start)


class EvaluateInputsMissingError(Exception):
    """What the stage scores is not there: the stages before it have not run. Exit code 2."""

    exit_code = 2


def task_models(root: Path, task: str) -> dict[str, Path]:
    """The exported models of ``task`` that exist, by name: finetuned, student, then each variant."""
    dirs = {"finetuned": root / artifacts.FINETUNED_DIR / task, "student": root / artifacts.STUDENT_DIR / task,
            **{v: root / artifacts.STUDENT_DIR / "variants" / v / task for v in VARIANTS}}
    return {name: d for name, d in dirs.items() if (d / "config.json").is_file()}


def read_records(records_dir: Path, *, limit: int | None = None) -> list[dict[str, str]]:
    """``{"id", "text"}`` of a records directory's shards, in order (the first ``limit``)."""
    import pyarrow.parquet as pq

    rows: list[dict[str, str]] = []
    for shard in iter_shards(records_dir):
        rows += [r for r in pq.read_table(shard, columns=["id", "text"]).to_pylist() if r["text"]]
        if limit is not None and len(rows) >= limit:
            break
    return rows[:limit]


def check_contamination(root: Path, tasks: dict[str, Any], cfg: EvaluateParams) -> dict[str, dict[str, Any]]:
    """13-gram overlap of every evaluation set with the training data; raises ContaminationError over the limit."""
    train = [r["text"] for r in read_records(root / artifacts.DEDUP_DIR / "train")]
    train += [contamination.example_text(r) for t in tasks for r in load_split(root / artifacts.EXAMPLES_DIR, t,
                                                                               "train")]
    grams = contamination.training_ngrams(train, n=cfg.contamination.n)
    sets = {"dedup/test": read_records(root / artifacts.DEDUP_DIR / "test"),
            **{f"{t}/test": load_split(root / artifacts.EXAMPLES_DIR, t, "test") for t in tasks}}
    report = contamination.overlap(train=grams, eval_sets=sets, n=cfg.contamination.n)
    contamination.check_contamination(report, max_share=cfg.contamination.max_share)
    return report


def lm_section(root: Path, tasks: dict[str, Any], cfg: EvaluateParams) -> dict[str, dict[str, Any]]:
    """Perplexity and bits per byte of the base model and every sft model on the dedup test split, with the unigram
    baselines (token and byte) fitted on the dedup train split."""
    texts = lm.load_texts(root / artifacts.DEDUP_DIR / "test", limit=cfg.lm.max_docs)
    models = {"base": root / artifacts.BASE_MODEL_DIR}
    models |= {f"{name}/{t}": d for t, info in tasks.items() if info["type"] == "sft"
               for name, d in task_models(root, t).items() if name in ("finetuned", "student")}
    out = {name: lm.lm_metrics(model_dir=d, texts=texts, batch_size=cfg.lm.batch_size) for name, d in models.items()}
    train = lm.load_texts(root / artifacts.DEDUP_DIR / "train", limit=cfg.lm.max_train_docs)
    out["unigram"] = baselines.unigram_metrics(train_texts=train, texts=texts, tokenizer_dir=root /
                                               artifacts.TOKENIZER_DIR)
    out["unigram_byte"] = baselines.unigram_metrics(train_texts=train, texts=texts, unit="byte")
    return out


def classification_section(root: Path, task: str, labels: list[str], cfg: EvaluateParams) -> dict[str, Any]:
    """Every classifier of ``task`` and the TF-IDF + LR baseline on its test split."""
    c = cfg.classification
    split = {s: load_split(root / artifacts.EXAMPLES_DIR, task, s) for s in ("train", "val", "test")}
    refs, texts = [r["label"] for r in split["test"]], [r["text"] for r in split["test"]]
    predictions = {}
    for name, d in task_models(root, task).items():
        # int8 weights are torchao tensors: loaded by the loader distill saved them for
        predictions[name] = classification.predict_labels(model_dir=d, texts=texts, batch_size=c.batch_size,
                                                          model=load_int8(d) if name == "int8" else None)
    tfidf = baselines.tfidf_logreg(train_texts=[r["text"] for r in split["train"]],
                                   train_labels=[r["label"] for r in split["train"]],
                                   val_texts=[r["text"] for r in split["val"]],
                                   val_labels=[r["label"] for r in split["val"]], test_texts=texts, labels=labels,
                                   c_grid=tuple(c.tfidf_c), seed=cfg.seed)
    predictions["tfidf_logreg"] = tfidf["predictions"]
    return {name: classification.classification_metrics(references=refs, predictions=p, labels=labels,
                                                        bootstrap=c.bootstrap, level=c.level, seed=cfg.seed)
            for name, p in predictions.items()}


def sft_section(root: Path, task: str, cfg: EvaluateParams) -> tuple[dict[str, Any], dict[str, list[dict]]]:
    """Test perplexity of every sft model of ``task``, generation metrics of finetuned and student (first prompts),
    and the lead baseline; returns (metrics by model, generations by model)."""
    from transformers import AutoTokenizer

    g = cfg.generation
    rows = load_split(root / artifacts.EXAMPLES_DIR, task, "test")
    tokenizer = AutoTokenizer.from_pretrained(str(root / artifacts.TOKENIZER_DIR))
    out: dict[str, Any] = {}
    gens: dict[str, list[dict]] = {}
    for name, d in task_models(root, task).items():
        limit = json.loads((d / "config.json").read_text())["max_position_embeddings"]
        data = encode(rows, kind="sft", tokenizer=tokenizer, max_length=limit, eos_id=tokenizer.eos_token_id)
        test = exported_test_metrics(d, data, kind="sft", labels=None, batch_size=g.sft_batch_size, samples=0,
                                     max_new_tokens=1)
        out[name] = {"perplexity": test["perplexity"], "loss": test["loss"], "examples": test["examples"]}
        if name in ("finetuned", "student"):
            metrics, gens[name] = generation.evaluate_generation(model_dir=d, rows=rows[:g.max_examples],
                                                                 max_new_tokens=g.max_new_tokens)
            out[name] |= metrics
    lead = baselines.lead_baseline([r["prompt"] for r in rows[:g.max_examples]])
    out["lead"] = generation.generation_metrics(references=[r["response"] for r in rows[:g.max_examples]],
                                                hypotheses=lead)
    return out, gens


def harness_section(root: Path, cfg: EvaluateParams) -> dict[str, Any]:
    """lm-evaluation-harness's rolling perplexity of the base model on the first dedup test documents."""
    rows = [{"text": t} for t in lm.load_texts(root / artifacts.DEDUP_DIR / "test", limit=cfg.harness.limit)]
    with tempfile.TemporaryDirectory(prefix="lmforge-harness-") as tmp:
        harness.write_task(task_dir=Path(tmp), name="lmforge_dedup_test", kind="rolling", rows=rows)
        return harness.run_harness(model_dir=root / artifacts.BASE_MODEL_DIR, task_dir=Path(tmp),
                                   tasks=["lmforge_dedup_test"], batch_size=cfg.harness.batch_size,
                                   limit=cfg.harness.limit)


def gate_metrics(kind: str, m: dict[str, Any]) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """The version tags the gate reads (flat ``test.METRIC``) and their intervals."""
    keys = ("accuracy", "macro_f1") if kind == "classification" else ("perplexity", "loss", "rougeL", "bleu")
    values = {f"test.{k}": float(m[k]) for k in keys if k in m}
    return values, {f"test.{k}": tuple(m["ci"][k]) for k in keys if k in m.get("ci", {})}


@flow(name=STAGE, validate_parameters=False)
def evaluate(params: Params, root: Path) -> dict[str, Any]:
    """Score, compare, report and register every model; returns the flat metrics of metrics/evaluate.json.

    Args:
        params: the whole validated params.yaml (this stage reads its ``evaluate`` and ``registry`` sections).
        root: the repository.
    """
    import torch

    cfg = params.evaluate
    if missing := [p for p in INPUTS if not (root / p).exists()]:
        raise EvaluateInputsMissingError(f"evaluate needs {missing}: run the stages before it (`lmforge run`)")
    torch.set_num_threads(cfg.threads)
    tasks = read_manifest(root / artifacts.EXAMPLES_DIR)["tasks"]
    out_dir = root / artifacts.REPORTS_DIR / STAGE
    with tracking.stage_run(STAGE, cfg, root=root, tracking=params.tracking) as run:
        stats: dict[str, Any] = {}
        with timed("contamination"):
            contam = check_contamination(root, tasks, cfg)
        stats |= {f"contamination.{name}.share": round(r["share"], 6) for name, r in contam.items()}
        with timed("language models"):
            lm_results = lm_section(root, tasks, cfg)
        for name, m in lm_results.items():
            stats |= {f"{name.replace('/', '.')}.lm.{k}": round(m[k], 6) for k in ("perplexity", "bits_per_byte")}
        results: dict[str, dict[str, Any]] = {}
        for task, info in tasks.items():
            if info["type"] == "classification":
                with timed(f"{task} (classification)"):
                    results[task] = classification_section(root, task, list(info["labels"]), cfg)
            else:
                with timed(f"{task} (sft)"):
                    results[task], gens = sft_section(root, task, cfg)
                for name, rows in gens.items():
                    path = out_dir / "generations" / f"{name}.{task}.jsonl"
                    artifacts.atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
        distill = _read_json(artifacts.metrics_path(root, "distill"))
        for task, per_model in results.items():
            for name, m in per_model.items():
                stats |= {f"{name}.{task}.test.{k}": round(v, 6) if isinstance(v, float) else v for k, v in m.items()
                          if isinstance(v, int | float) and not isinstance(v, bool)}
                stats |= {f"{name}.{task}.test.{k}_ci_low": round(v[0], 6) for k, v in m.get("ci", {}).items()
                          if isinstance(v, list)}
                stats |= {f"{name}.{task}.test.{k}_ci_high": round(v[1], 6) for k, v in m.get("ci", {}).items()
                          if isinstance(v, list)}
                source = "teacher" if name == "finetuned" else name
                stats |= {f"{name}.{task}.{k}": distill[f"{source}.{task}.{k}"] for k in COST_KEYS
                          if f"{source}.{task}.{k}" in distill}
        with timed("lm-evaluation-harness"):
            harness_out = harness_section(root, cfg) if cfg.harness.enabled else None
        if harness_out:
            stats |= {f"harness.{t}.{k}": round(v, 6) for t, res in harness_out["tasks"].items()
                      for k, v in res.items()}
        with timed("registry"):
            decisions = _register(root, params, tasks, results, stats, out_dir, run) if cfg.register_models else {}
        run.log_stats(stats)
        experiment = _experiment_id(run.run_id)
        base_url = params.tracking.uri if params.tracking.uri.startswith(("http://", "https://")) else cfg.mlflow_ui_url
        links = {"evaluate run": f"{base_url.rstrip('/')}/#/experiments/{experiment}/runs/{run.run_id}"}
        write_report(out_dir=out_dir, models=_rows(results, stats, decisions), columns=COLUMNS, quality="macro_f1",
                     latency="latency_p50_ms", bar_metrics=("macro_f1", "perplexity", "rougeL"),
                     confusion=_confusion(results), funnel=_funnel(root), shift=_shift(root), contamination=contam,
                     mlflow_runs=links, learning_curves=sorted((root / "reports/plots/finetune").glob("*.png")))
        run.log_artifact(out_dir, "report")
        run.log_artifact(artifacts.write_metrics(root, STAGE, stats))
    return stats


def _register(root: Path, params: Params, tasks: dict[str, Any], results: dict[str, dict[str, Any]],
              stats: dict[str, Any], out_dir: Path, run: tracking.StageRun) -> dict[str, registry.Decision]:
    """Log, register and gate every task model (finetuned first: the first version becomes champion); write and
    log its model card. Adds ``MODEL.TASK.promoted`` / ``.registry_version`` and ``TASK.champion_version`` to
    ``stats``; returns the decisions by ``MODEL/TASK``."""
    digests = {p: digest(root / p, root) for p in ("data/finetune", "models/tokenizer", str(artifacts.FINETUNED_DIR),
                                                    str(artifacts.STUDENT_DIR))}
    lineage = {"funnel": {r["name"]: r["docs"] for r in _funnel(root)}, "digests": digests}
    decisions = {}
    for task, info in tasks.items():
        kind, name = info["type"], registry.model_name(params.registry, task)
        metric = params.registry.gates[kind].metric if kind in params.registry.gates else None
        for model, model_dir in task_models(root, task).items():
            values, intervals = gate_metrics(kind, results[task][model])
            if (same := registry.registered_copy(name, model_dir)) is not None:  # a re-run rebuilt the same bytes
                version, decision = same, registry.unchanged(name, same, params=params.registry)
            else:
                version = registry.log_and_register(model_dir, task=task, kind=kind, params=params.registry,
                                                    metrics=values, intervals=intervals, digests=digests)
                decision = registry.gate(name, version, params=params.registry)
            log.info("%s v%s (%s): %s", name, version, model, decision.reason)
            decisions[f"{model}/{task}"] = decision
            stats[f"{model}.{task}.promoted"] = int(decision.promoted)
            stats[f"{model}.{task}.registry_version"] = int(version)
            stats[f"{task}.champion_version"] = int(decision.champion_after or 0)
            card_dir = out_dir / "cards" / model / task
            card_dir.mkdir(parents=True, exist_ok=True)
            card = write_model_card(
                card_dir, name=f"{name} v{version} ({model})", task=task, kind=kind, lineage=lineage,
                training={"model": model, "source": str(model_dir.relative_to(root)),
                          **{k: stats[f"{model}.{task}.{k}"] for k in COST_KEYS if f"{model}.{task}.{k}" in stats}},
                evaluation={"test": {k.removeprefix("test."): v for k, v in values.items()}},
                intervals={"test": {k.removeprefix("test."): v for k, v in intervals.items()}},
                intended_use=f"A demonstration model of lmforge's pipeline for the {task} task; not for production.",
                limitations=["About a million parameters, trained on a few hundred documents of Python's docs.",
                             "English only; scores hold for this corpus's test split, not for other text."])
            run.log_artifact(card, f"cards/{model}/{task}")
        if metric and (champion := _champion_value(name, decisions, task, metric)) is not None:
            stats[f"{task}.champion.{metric}"] = champion
    return decisions


def _champion_value(name: str, decisions: dict[str, registry.Decision], task: str, metric: str) -> float | None:
    """The gate metric of the task's champion after this run, from its version tag (it may be an older version)."""
    from mlflow import MlflowClient

    last = [d for key, d in decisions.items() if key.endswith(f"/{task}")][-1]
    if last.champion_after is None:
        return None
    raw = MlflowClient().get_model_version(name, last.champion_after).tags.get(f"{registry.METRIC_TAG}{metric}")
    return round(float(raw), 6) if raw is not None else None


def _rows(results: dict[str, dict[str, Any]], stats: dict[str, Any],
          decisions: dict[str, registry.Decision]) -> list[dict[str, Any]]:
    """The report's model table: one row per model and task, baselines flagged."""
    rows = []
    for name in ("base", "unigram", "unigram_byte"):
        rows.append({"name": name, "task": "lm", "baseline": name != "base",
                     "lm_perplexity": stats.get(f"{name}.lm.perplexity"),
                     "bits_per_byte": stats.get(f"{name}.lm.bits_per_byte")})
    for task, per_model in results.items():
        for model, m in per_model.items():
            decision = decisions.get(f"{model}/{task}")
            rows.append({"name": f"{model}/{task}", "task": task, "baseline": model in ("tfidf_logreg", "lead"),
                         **{k: m.get(k) for k in ("accuracy", "macro_f1", "perplexity", "rougeL", "bleu", "chrf")},
                         "macro_f1_ci": m.get("ci", {}).get("macro_f1"),
                         "lm_perplexity": stats.get(f"{model}.{task}.lm.perplexity"),
                         "bits_per_byte": stats.get(f"{model}.{task}.lm.bits_per_byte"),
                         **{k: stats.get(f"{model}.{task}.{k}") for k in COST_KEYS},
                         "promoted": None if decision is None else decision.promoted})
    return rows


def _confusion(results: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    for task, per_model in results.items():
        if "confusion" in per_model.get("finetuned", {}):
            m = per_model["finetuned"]
            return {"labels": m["labels"], "matrix": m["confusion"], "title": f"finetuned/{task} (test)"}
    return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _funnel(root: Path) -> list[dict[str, Any]]:
    """The clean stage's funnel, widest step first (metrics/clean.json keeps keys sorted, not in step order)."""
    clean = _read_json(artifacts.metrics_path(root, "clean"))
    steps = {k.split(".")[1] for k in clean if k.startswith("funnel.")}
    rows = [{"name": s, "docs": clean.get(f"funnel.{s}.docs"), "chars": clean.get(f"funnel.{s}.chars")} for s in steps]
    return sorted(rows, key=lambda r: (-(r["docs"] or 0), -(r["chars"] or 0)))


def _shift(root: Path) -> list[dict[str, Any]]:
    """The finetune stage's train/test shift figures, one row per task."""
    rows: dict[str, dict[str, Any]] = {}
    for key, value in _read_json(artifacts.metrics_path(root, "finetune")).items():
        task, _, rest = key.partition(".shift.")
        if rest:
            rows.setdefault(task, {"name": task})[rest] = value
    return list(rows.values())


def _experiment_id(run_id: str) -> str:
    import mlflow

    return mlflow.get_run(run_id).info.experiment_id


if __name__ == "__main__":
    from pipelines.runner import stage_main

    raise SystemExit(stage_main(STAGE, evaluate))
