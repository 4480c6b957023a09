"""The evaluate stage: every model the pipeline made scored on held-out data beside baselines, then registered.

The scoring, the summaries and the model cards are ``tasks/evaluate``'s; this flow reads the stage's inputs (its DVC
deps, ``pipelines.config.evaluate``'s INPUTS and REPORTED), calls them, registers each task model through
``pipelines.registry``'s gate and writes ``metrics/evaluate.json``, ``reports/evaluate/index.html`` and the model
cards (``reports/evaluate/cards``, never into other stages' outputs).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect import flow

from pipelines import artifacts, catalog, operations, registry, tracking
from pipelines.config import Params
from pipelines.config.evaluate import INPUTS, REPORTED
from pipelines.versioning import digest
from tasks.evaluate import (
    baselines,
    card,
    contamination,
    decision,
    generation,
    harness,
    lm,
    scoring,
    summary,
)
from tasks.evaluate.models import made_from, task_models
from tasks.evaluate.report import write_report
from tasks.examples import load_split, read_manifest
from tasks.modeling import source

STAGE = "evaluate"
log = logging.getLogger("flows.evaluate")


@contextmanager
def timed(section: str) -> Iterator[None]:
    """Log a section's wall time (timings vary by machine, so they are not metrics)."""
    start = time.perf_counter()
    yield
    log.info("%s: %.1f s", section, time.perf_counter() - start)


class EvaluateInputsMissingError(Exception):
    """What the stage scores is not there: the stages before it have not run. Exit code 2."""

    exit_code = 2


@flow(name=STAGE, validate_parameters=False)
def evaluate(params: Params, root: Path) -> dict[str, Any]:
    """Score, compare, report and register every model; returns the flat metrics of metrics/evaluate.json.

    Args:
        params: the whole validated params.yaml (this stage reads its ``evaluate`` and ``registry`` sections).
        root: the repository.
    """
    import torch

    cfg, examples, dedup = params.evaluate, root / artifacts.EXAMPLES_DIR, root / artifacts.DEDUP_DIR
    if missing := [p for p in INPUTS if not (root / p).exists()]:
        raise EvaluateInputsMissingError(f"evaluate needs {missing}: run the stages before it (`lmforge run`)")
    torch.set_num_threads(cfg.threads)
    tasks = read_manifest(examples)["tasks"]
    splits = {t: {s: load_split(examples, t, s) for s in ("train", "val", "test")} for t in tasks}
    models = {t: task_models(finetuned_dir=root / artifacts.FINETUNED_DIR, student_dir=root / artifacts.STUDENT_DIR,
                             task=t) for t in tasks}
    train, test = lm.load_texts(dedup / "train"), lm.load_records(dedup / "test")
    texts = [r["text"] for r in test][:cfg.lm.max_docs]
    reported = {p: json.loads((root / p).read_text()) for p in REPORTED if p.endswith(".json") and (root / p).exists()}
    untouched = untouched_checkpoints(params, root)
    out_dir = root / artifacts.REPORTS_DIR / STAGE
    with tracking.stage_run(STAGE, cfg, root=root, tracking=params.tracking) as run:
        with timed("contamination"):
            contam = contamination.check_sets(
                train_texts=train + [contamination.example_text(r) for t in tasks for r in splits[t]["train"]],
                eval_sets={"dedup/test": test, **{f"{t}/test": splits[t]["test"] for t in tasks}},
                n=cfg.contamination.n, max_share=cfg.contamination.max_share)
        with timed("language models"):
            lms = {"base": root / artifacts.BASE_MODEL_DIR} | {
                f"{name}/{t}": d for t, info in tasks.items() if info["type"] in ("sft", "chat")
                for name, d in models[t].items() if name in generation.GENERATING} | {
                name: d for name, (d, decoder) in untouched.items() if decoder}  # beside what was made from them
            lm_results = baselines.score_language_models(
                models=lms, texts=texts, train_texts=train[:cfg.lm.max_train_docs],
                tokenizer_dir=root / artifacts.TOKENIZER_DIR, batch_size=cfg.lm.batch_size)
        results: dict[str, dict[str, Any]] = {}
        settings = cfg.model_dump()
        probe = untouched["finetune_checkpoint"][0] if "finetune_checkpoint" in untouched else None
        for task, info in tasks.items():
            with timed(f"{task} ({info['type']})"):
                results[task] = scoring.score_task(info["type"], scoring.TaskJob(
                    task=task, labels=info["labels"], models=models[task], splits=splits[task], settings=settings,
                    out_dir=out_dir, probe=probe))
        with timed("lm-evaluation-harness"):
            harness_out = harness.rolling_scores(model_dir=root / artifacts.BASE_MODEL_DIR, texts=texts[
                :cfg.harness.limit], batch_size=cfg.harness.batch_size) if cfg.harness.enabled else None
        stats = summary.flat_metrics(contamination=contam, lm=lm_results, tasks=results, harness=harness_out,
                                     costs=json.loads(artifacts.metrics_path(root, "distill").read_text()))
        digests = {p: digest(root / p, root) for p in ("data/finetune", "models/tokenizer",
                                                        str(artifacts.FINETUNED_DIR), str(artifacts.STUDENT_DIR))}
        if based_on := summary.base_checkpoint(root / artifacts.FINETUNED_DIR):  # a checkpoint lmforge did not train
            digests["base_checkpoint"] = based_on
        with timed("registry"):  # finetuned first: a task's first version becomes its champion
            candidates = {(m, t): registry.Candidate(d, tasks[t]["type"], *summary.gate_metrics(tasks[t]["type"],
                                                                                               results[t][m]),
                                                     base=made_from(m) or based_on or str(artifacts.BASE_MODEL_DIR))
                          for t in tasks for m, d in models[t].items()} if cfg.register_models else {}
            decisions, registered = registry.register_all(candidates, params=params.registry, digests=digests)
        stats |= registered
        kinds = {t: info["type"] for t, info in tasks.items()}  # the decision per task: registry facts beside scores
        verdicts = decision.decide(catalog.decision_facts(decisions, params.registry, kinds), results, kinds,
                                   {t: [m for m in results[t] if m not in models[t]] for t in tasks})
        for line in decision.lines(verdicts):
            log.info(line)
        funnel = summary.funnel(reported.get("metrics/clean.json", {}))
        lineage = {"funnel": {r["name"]: r["docs"] for r in funnel}, "digests": digests}
        for (model, task), made in decisions.items():
            path = card.write_task_card(
                out_dir / "cards" / model / task, name=made.model, version=made.version, model=model,
                model_dir=models[task][model], task=task, kind=tasks[task]["type"], metrics=results[task][model],
                lm=lm_results.get(f"{model}/{task}"), lineage=lineage, splits=splits[task],
                pretraining=summary.texts_size(train), training={"source": str(models[task][model].relative_to(
                    root)), **({"base checkpoint": based_on} if based_on else {}),
                    **summary.costs(stats, model=model, task=task)})
            run.log_artifact(path, f"cards/{model}/{task}")
        run.log_stats(stats)
        base_url = params.tracking.uri if params.tracking.uri.startswith(("http://", "https://")) else cfg.mlflow_ui_url
        write_report(out_dir=out_dir, tables=summary.TABLES, decisions=verdicts, quality="macro_f1",
                     latency="latency_p50_ms",
                     models=summary.report_rows(results, stats, {f"{m}/{t}": d.promoted for (m, t), d in
                                                                 decisions.items()}),
                     bar_metrics=("macro_f1", "entity_f1", "f1", "perplexity", "rougeL"),
                     confusion=summary.confusion(results),
                     funnel=funnel, shift=summary.shift(reported.get("metrics/finetune.json", {})),
                     learning_curves=[root / p for p in REPORTED if p.endswith(".png") and (root / p).is_file()],
                     contamination=contam, mlflow_runs={"evaluate run": run.ui_url(base_url)})
        run.log_artifact(out_dir, "report")
        run.log_artifact(artifacts.write_metrics(root, STAGE, stats))
    return stats


def untouched_checkpoints(params: Params, root: Path) -> dict[str, tuple[Path, bool]]:
    """The checkpoints the pipeline started from, untouched, scored beside what was made from them: ``checkpoint``
    (``pretrain.checkpoint``, next to the continued-pretrained models/base) and ``finetune_checkpoint`` (a linear
    probe next to the fine-tuned classifiers; its perplexity when it is a causal LM) -> ``(directory, decoder)``."""
    out: dict[str, tuple[Path, bool]] = {}
    for name, spec, setting in (("checkpoint", params.pretrain.checkpoint, "pretrain.checkpoint"),
                                ("finetune_checkpoint", params.finetune.checkpoint, "finetune.checkpoint")):
        if spec is not None:
            directory = source.resolve(spec.path, revision=spec.revision, root=root, setting=setting,
                                       retry=operations.retrying(params.operations.retries, "downloading a checkpoint"))
            config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
            out[name] = (directory, source.is_decoder(config))
    return out


if __name__ == "__main__":
    from pipelines.runner import stage_main

    raise SystemExit(stage_main(STAGE, evaluate))
