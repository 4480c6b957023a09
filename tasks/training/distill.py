"""Distill the fine-tuned (or pretrained) teacher into a smaller student with DeepSpeed: ``python -m
tasks.training.distill --config run.json``. The distill stage then runs ``tasks.training.compress`` on the student.

Launch it like finetune (``torchrun`` or ``deepspeed`` for several processes; plain ``python`` runs one). It is
finetune's recipe with a teacher: the same model layer (``tasks.modeling``) and loop (``tasks.training.loop``), the
teachers and the KD loss from ``tasks.training.teachers``. In the order a reader meets it:

1. read and check the config, the task manifest and rows (or the packed tokens), the teachers' configs (no torch
   yet: a bad config or bad data exits 2 in a second, before any training);
2. load the teacher's tokenizer (``tokenizer_dir``) and tokenize every task (``teacher: base``: ``max_length``-token
   windows of the packed tokens);
3. load the teachers and build the student (``tasks.training.student``): the teacher's architecture (Llama, GPT-2,
   BERT...) with fewer layers, started from the teacher's embeddings, final norm and every other layer (``init:
   teacher_layers``, DistilBERT) or from scratch, the architecture's classification head per classification task (the
   teacher's when shapes match), the LM head for sft; hand it with a two-rate AdamW to ``deepspeed.initialize``;
4. optionally run each teacher once over its training split and keep its logits on disk (``cache_teacher``), and
   time a few steps' teacher work live against the cache;
5. resume from ``checkpoint_dir/latest`` if present, then the loop with the KD loss ``alpha * T^2 *
   KL(teacher_T || student_T) + (1 - alpha) * hard``; evaluations are appended to ``evaluations.jsonl``;
6. export the best student atomically: ``out_dir/<task>/`` and ``distill_summary.json`` (the KD part: history,
   initialisation, cache); timings to ``checkpoint_dir/run_stats.json`` and MLflow, the learning curves to
   ``plots_dir/learning_curves.png``.

Exit codes: 0 done, 2 bad config or data (one message, no traceback), 1 any other failure.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tasks.training.teachers import CACHE_DIR, RUN_IDENTITY, DistillConfig, preflight

NAME = "distill"
SUMMARY_FILE = "distill_summary.json"
CURVES_FILE = "learning_curves.png"
VAL_SCORE = "mean over tasks of: classification val macro-F1; sft/lm -(val loss per target token), of the student"
CACHE_TIMINGS = ("build_seconds", "live_teacher_seconds", "cached_teacher_seconds", "saving_seconds_per_step",
                 "break_even_steps")
"""The teacher cache's timings: they go to run_stats.json, never into the exported summary."""


def train(cfg: DistillConfig, info: dict[str, Any]) -> dict[str, Any]:
    """Run (or resume) the distillation described by ``cfg`` and export the best student; returns the summary."""
    import torch
    from transformers import AutoTokenizer

    from tasks.atomic import atomic_dir, atomic_path
    from tasks.examples import CHAT_TEMPLATE
    from tasks.modeling import checkpoint, export
    from tasks.modeling.encoding import TaskBatches
    from tasks.modeling.heads import build_multitask, param_groups
    from tasks.modeling.llama import count_params
    from tasks.modeling.metrics import learning_curves
    from tasks.modeling.tasktypes import chat_templates, task_type
    from tasks.training import engine as ds
    from tasks.training.loop import fit, new_evaluator, resume
    from tasks.training.student import copy_heads, init_from_teacher, layer_map
    from tasks.training.teachers import Teachers, new_student, source_task, task_set, teacher_dirs
    from tasks.training.telemetry import log_outcome

    ds_config, rank, world_size = ds.setup(cfg)
    is_main = rank == 0
    say = ds.printer(is_main)
    tokenizer = AutoTokenizer.from_pretrained(str(cfg.tokenizer_dir))
    ts = task_set(cfg, info, tokenizer=tokenizer)
    names, labels = ts.names, ts.labels

    # the teachers and the student started from them
    teachers = Teachers(teacher_dirs(cfg, names), kinds=ts.kinds, labels=labels, alpha=cfg.alpha,
                        temperature=cfg.temperature, ds_config=ds_config)  # partitioned under ZeRO-3
    source = source_task(info)
    torch.manual_seed(cfg.seed)
    backbone = new_student(cfg, info, pad_id=ts.pad_id)
    init_report: dict[str, Any] = {"init": cfg.student.init}
    if cfg.student.init == "teacher_layers":
        mapping = layer_map(teacher_layers=int(info["configs"][source].num_hidden_layers),
                            student_layers=int(backbone.config.num_hidden_layers), layers=cfg.student.layers)
        copied = init_from_teacher(backbone, teachers.models[source], layers=mapping)
        init_report.update(layers=mapping, copied=len(copied["copied"]), neuron_subsets=len(copied["neurons"]),
                           kept=copied["kept"])
    model = build_multitask(backbone, heads=ts.head_sizes, types=ts.kinds, dropout=cfg.dropout,
                            pad_token_id=ts.pad_id)
    if cfg.student.init == "teacher_layers":
        init_report["heads_from_teacher"] = copy_heads(model.heads, {t: teachers.models[t] for t in ts.head_sizes})
    n_params = count_params(model)
    groups = param_groups(model, lr=cfg.lr, head_lr=cfg.head_lr, weight_decay=cfg.weight_decay)
    engine, optimizer = ds.build_engine(model, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay,
                                        ds_config=ds_config, groups=groups)
    teachers.to(engine.device)
    say(f"{NAME}: student {n_params / 1e6:.3f}M params (teacher {count_params(teachers.models[source]) / 1e6:.3f}M), "
        f"tasks {ts.kinds}, teacher {cfg.teacher}, init {init_report}, T {cfg.temperature}, alpha {cfg.alpha}, "
        f"world_size {world_size}, ZeRO-{cfg.zero_stage}, {cfg.precision}, up to {cfg.steps} steps x "
        f"{cfg.batch_size * cfg.grad_accum} examples per rank")
    # packed rows (sft, chat) go to the teacher as they are; a cached teacher's rows are keyed by whole examples
    cached = cfg.cache_teacher and cfg.alpha > 0
    batches = TaskBatches(ts.data["train"], kinds=ts.kinds, weights=ts.weights, batch_size=cfg.batch_size,
                          seed=cfg.seed, pad_id=ts.pad_id, rank=rank, world_size=world_size,
                          packing=cfg.packing and not cached)
    teachers.packed = batches.packed
    ckpt_dir = Path(cfg.checkpoint_dir)

    # the teacher cache: each teacher once over its training split, kept beside the checkpoints
    cache_info: dict[str, Any] = {"enabled": False}
    if cached:
        cache_info = teachers.build_cache(ts.data["train"], batches=batches, top_k=cfg.cache_top_k,
                                          batch_size=cfg.batch_size, pad_id=ts.pad_id, cache_dir=ckpt_dir / CACHE_DIR,
                                          probe_steps=cfg.cache_probe_steps, is_main=is_main)
        say(f"{NAME}: teacher cache {'reused' if len(cache_info['reused']) == len(names) else 'built'} in "
            f"{cache_info['build_seconds']:.2f} s, {sum(cache_info['bytes'].values()) / 2**20:.1f} MiB; teacher work "
            f"of {cfg.cache_probe_steps} steps: live {cache_info['live_teacher_seconds']:.3f} s, cached "
            f"{cache_info['cached_teacher_seconds']:.3f} s")

    # resume, then the loop
    evaluator = new_evaluator(cfg, ts, is_main=is_main, checkpoint_dir=ckpt_dir)
    sink = evaluator.sink
    progress = resume(engine, evaluator, checkpoint_dir=ckpt_dir, name=NAME, say=say)
    if is_main:
        checkpoint.record_identity(checkpoint_dir=ckpt_dir, identity=checkpoint.identity(cfg, RUN_IDENTITY))
    progress = fit(engine, optimizer, cfg=cfg, progress=progress, batches=batches, evaluator=evaluator,
                   loss_fn=teachers.loss, parts=("train_loss", "hard_loss", "kd_loss"), checkpoint_dir=ckpt_dir,
                   say=say, name=NAME, world_size=world_size, is_main=is_main)

    # export the best evaluation's student
    stopper = evaluator.stopper
    summary = {"teacher": cfg.teacher, "temperature": cfg.temperature, "alpha": cfg.alpha, "val_score": VAL_SCORE,
               "best_step": stopper.best_step, "best_val_score": stopper.best, "steps_run": progress.step,
               "stopped_early": progress.stopped_early, "student_init": init_report, "history": evaluator.history,
               "world_size": world_size, "precision": cfg.precision,
               "cache": {k: v for k, v in cache_info.items() if k not in CACHE_TIMINGS}}
    run_stats = {**progress.stats, "cache": {k: v for k, v in cache_info.items() if k in CACHE_TIMINGS}}
    if is_main:
        best = build_multitask(new_student(cfg, info, pad_id=ts.pad_id), heads=ts.head_sizes,
                               types=ts.kinds, dropout=cfg.dropout, pad_token_id=ts.pad_id)
        best.load_state_dict(evaluator.best_state, strict=True)
        best = best.cpu().float()
        with atomic_dir(Path(cfg.out_dir)) as tmp:
            export.save_task_models(tmp, module=best, labels={t: labels.get(t) for t in ts.head_sizes},
                                    sft_tasks=[t for t in names if task_type(ts.kinds[t]).generative],
                                    tokenizer=tokenizer, dtype="bfloat16" if cfg.precision == "bf16" else "float32",
                                    chat_template=chat_templates(ts.kinds, tokenizer=tokenizer,
                                                                 default=CHAT_TEMPLATE), extras=ts.config_extras())
            (tmp / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        with atomic_path(Path(cfg.plots_dir) / CURVES_FILE) as png:
            learning_curves(evaluator.history, kinds=ts.kinds, path=png)
        checkpoint.write_run_stats(checkpoint_dir=ckpt_dir, stats=run_stats)
        log_outcome(sink, summary, progress)
        say(f"{NAME}: exported best step {stopper.best_step} (val_score {stopper.best:.4f}) to {cfg.out_dir}"
            + (" after an early stop" if progress.stopped_early else ""))
    torch.distributed.barrier()
    return {**summary, **run_stats}


def main(argv: list[str] | None = None) -> int:
    """Command line: ``--config run.json``; returns the exit code."""
    from tasks.examples import ExamplesError
    from tasks.tokens import TokenFileError
    from tasks.training.engine import recipe_main

    return recipe_main(NAME, __doc__, DistillConfig, preflight, train, argv,
                       user_errors=(ExamplesError, TokenFileError))


if __name__ == "__main__":
    sys.exit(main())
