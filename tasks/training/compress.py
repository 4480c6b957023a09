"""Compress the distilled student and measure every model the same way: ``python -m tasks.training.compress --config
run.json``; the distill stage runs it after the KD recipe (``tasks.training.distill``), on the same run config.

Launch it like distill (the recoveries train on every rank; rank 0 exports and measures). In the order a reader
meets it:

1. the distill recipe's checks, plus the student (``student_dir``: the KD recipe's export and its summary);
2. the student as the multi-task module, from its exported files (``tasks.modeling.heads.load_exported``);
3. the variants: magnitude pruning (global, the masks held through recovery) and structured pruning (whole heads
   and MLP neurons removed, the config shrunk), each followed by ``recovery_steps`` of the KD loop's steps
   (``tasks.training.loop.train_step`` with the teachers' loss, a cosine from ``lr * RECOVERY_LR_SCALE``, data steps
   after the student's); int8 weight-only of the student (``tasks.modeling.quantize``). What an architecture does not
   allow is skipped, never a crash: attention heads outside the Llama layout (BERT, GPT-2: MLP neurons only), GPT-2's
   Conv1D layers in int8 (embeddings and LM head only); the reasons go to the summary's ``skipped``;
4. every model (teacher, student, each variant) measured on the test split: size, batch-1 latency, quality and its
   retention of the teacher's (``tasks.modeling.measure``);
5. all exported atomically to ``out_dir``: the student per task, ``variants/<variant>/<task>/`` and
   ``distill_summary.json`` (the KD summary plus the variants' reproducible numbers); the timings (latency, tokens/s,
   speed-ups, recovery seconds) go to ``checkpoint_dir/run_stats.json`` under :data:`MEASUREMENTS_KEY`.

Exit codes: 0 done, 2 bad config or data (one message, no traceback), 1 any other failure.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from tasks.modeling.errors import ConfigError
from tasks.training.distill import SUMMARY_FILE
from tasks.training.teachers import DistillConfig
from tasks.training.teachers import preflight as distill_preflight

NAME = "compress"
RECOVERY_LR_SCALE = 0.3
"""The pruned variants' recovery starts at this fraction of ``lr`` (the weights are already trained)."""
QUALITY = ("accuracy", "macro_f1", "loss", "perplexity")
QUALITY_FIELDS = (*QUALITY, "per_class_f1", "scored_tokens", "examples")
"""measure.measure_model's quality numbers: they go under an entry's ``test``."""
TIMINGS = ("latency_p50_ms", "latency_p95_ms", "tokens_per_second", "speedup_p50")
"""What changes from run to run on the same inputs: kept out of the exported summary (the stage's output must be the
same bytes for the same inputs) and written to ``run_stats.json`` under :data:`MEASUREMENTS_KEY`."""
MEASUREMENTS_KEY = "measurements"


def preflight(cfg: DistillConfig) -> dict[str, Any]:
    """The distill recipe's checks, then the student: its summary and one model directory per task."""
    info = distill_preflight(cfg, resume=False)  # compress resumes nothing: it reads the KD run's export
    if cfg.student_dir is None or not (Path(cfg.student_dir) / SUMMARY_FILE).is_file():
        raise ConfigError(f"no distilled student in student_dir {cfg.student_dir}: run the distill recipe first")
    if missing := [t for t in sorted(info["tasks"]) if not (Path(cfg.student_dir) / t / "config.json").is_file()]:
        raise ConfigError(f"student_dir {cfg.student_dir} lacks the tasks {missing}: re-run the distill recipe")
    return info


def train(cfg: DistillConfig, info: dict[str, Any]) -> dict[str, Any]:
    """Make, measure and export the compressed variants of the student; returns the summary."""
    import shutil

    import torch
    import transformers
    from transformers import AutoTokenizer

    from tasks.atomic import atomic_dir, atomic_write_text
    from tasks.examples import CHAT_TEMPLATE
    from tasks.modeling import checkpoint, export, measure, quantize
    from tasks.modeling.encoding import TaskBatches
    from tasks.modeling.heads import build_multitask, load_exported, param_groups
    from tasks.modeling.tasktypes import task_type
    from tasks.training import engine as ds
    from tasks.training import prune
    from tasks.training.loop import train_step
    from tasks.training.schedule import lr_factor, set_scaled_lr
    from tasks.training.teachers import CACHE_DIR, Teachers, new_student, required, task_set, teacher_dirs

    ds_config, rank, world_size = ds.setup(cfg)
    is_main = rank == 0
    say = ds.printer(is_main)
    tokenizer = AutoTokenizer.from_pretrained(str(cfg.tokenizer_dir))
    ts = task_set(cfg, info, tokenizer=tokenizer)
    names, labels, student_dir = ts.names, ts.labels, required(cfg.student_dir, "student_dir")
    teachers = Teachers(teacher_dirs(cfg, names), kinds=ts.kinds, labels=labels, alpha=cfg.alpha,
                        temperature=cfg.temperature)
    batches = TaskBatches(ts.data["train"], kinds=ts.kinds, weights=ts.weights, batch_size=cfg.batch_size,
                          seed=cfg.seed, pad_id=ts.pad_id, rank=rank, world_size=world_size)
    torch.manual_seed(cfg.seed)

    def student(backbone: Any = None) -> Any:
        """The student as the multi-task module (around ``backbone`` when given: a pruned one, heads loaded only)."""
        module = build_multitask(backbone if backbone is not None else new_student(cfg, info, pad_id=ts.pad_id),
                                 heads=ts.head_sizes, types=ts.kinds, dropout=cfg.dropout, pad_token_id=ts.pad_id)
        return load_exported(module, {t: student_dir / t for t in names}, heads_only=backbone is not None)

    def recover(module: Any, steps: int, masks: Any = None) -> tuple[Any, float]:
        """``steps`` KD steps for a pruned module, with its own engine and AdamW; returns the module and seconds."""
        if not steps:
            return module, 0.0
        eng, opt = ds.build_engine(module, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay,
                                   ds_config=ds_config, groups=param_groups(module, lr=cfg.lr, head_lr=cfg.head_lr,
                                                                            weight_decay=cfg.weight_decay))
        teachers.to(eng.device)
        if cfg.cache_teacher and cfg.alpha > 0 and not teachers.caches:  # the KD run's cache, reused from disk
            teachers.build_cache(ts.data["train"], batches=batches, top_k=cfg.cache_top_k, batch_size=cfg.batch_size,
                                 pad_id=ts.pad_id, cache_dir=Path(cfg.checkpoint_dir) / CACHE_DIR, probe_steps=0,
                                 is_main=is_main)
        t0 = time.perf_counter()
        for s in range(steps):
            set_scaled_lr(opt, RECOVERY_LR_SCALE * lr_factor(s, warmup_steps=0, steps=steps, decay=cfg.schedule,
                                                             min_ratio=cfg.min_lr_ratio))
            train_step(eng, batches, cfg.steps + s, grad_accum=cfg.grad_accum, loss_fn=teachers.loss,
                       world_size=world_size)
            if masks is not None:  # pruned weights stay zero whatever AdamW's moments say
                prune.apply_masks(eng.module.lm(), masks)
        return eng.module.eval(), time.perf_counter() - t0

    pruned: dict[str, Any] = {}
    recovery: dict[str, Any] = {}
    skipped: dict[str, str] = {}  # "<variant>.<part>": why this architecture does not allow it
    if (mag := cfg.variants.magnitude).enabled:
        module = student()
        masks = prune.magnitude_prune(module.lm(), sparsity=mag.sparsity)
        pruned["magnitude"], seconds = recover(module, mag.recovery_steps, masks)
        recovery["magnitude"] = {"sparsity": mag.sparsity, "recovery_steps": mag.recovery_steps,
                                 "recovery_seconds": round(seconds, 3)}
    if (struct := cfg.variants.structured).enabled:
        backbone = student().lm()
        cannot = prune.structured_skips(backbone, heads_fraction=struct.heads_fraction)
        skipped.update({f"structured.{part}": why for part, why in cannot.items()})
        if "variant" not in cannot:
            heads_fraction = 0.0 if "heads" in cannot else struct.heads_fraction
            shrunk = prune.structured_prune(backbone, heads_fraction=heads_fraction,
                                            neurons_fraction=struct.neurons_fraction)
            pruned["structured"], seconds = recover(student(shrunk), struct.recovery_steps)
            recovery["structured"] = {"heads_fraction": heads_fraction, "recovery_steps": struct.recovery_steps,
                                      "neurons_fraction": struct.neurons_fraction,
                                      "recovery_seconds": round(seconds, 3)}
    for what, why in sorted(skipped.items()):
        say(f"{NAME}: skipped {what}: {why}")

    summary = json.loads((student_dir / SUMMARY_FILE).read_text(encoding="utf-8"))
    summary["recovery"] = {k: {n: v for n, v in e.items() if n != "recovery_seconds"} for k, e in recovery.items()}
    run_stats_path = Path(cfg.checkpoint_dir) / checkpoint.RUN_STATS_FILE
    run_stats = json.loads(run_stats_path.read_text(encoding="utf-8")) if run_stats_path.is_file() else {}
    run_stats["recovery_seconds"] = {k: e["recovery_seconds"] for k, e in recovery.items()}
    if is_main:
        dtype = "bfloat16" if cfg.precision == "bf16" else "float32"
        measure_kind = {t: "lm" if cfg.teacher == "base" else ts.kinds[t] for t in names}

        def load(model_dir: Path, task: str) -> Any:
            """A task model as a user loads it, in float32: every model is timed in the same precision (a bf16
            teacher on a CPU without bf16 kernels would look slow for the wrong reason)."""
            auto = getattr(transformers, task_type(ts.kinds[task]).head_class or "AutoModelForCausalLM")
            return auto.from_pretrained(str(model_dir), dtype=torch.float32).eval()

        with atomic_dir(Path(cfg.out_dir)) as tmp:
            for t in names:
                shutil.copytree(student_dir / t, tmp / t)
            dirs: dict[str, dict[str, Path]] = {"teacher": teachers.dirs, "student": {t: tmp / t for t in names}}
            for variant, module in pruned.items():
                module = module.cpu().float()
                export.save_task_models(tmp / "variants" / variant, module=module, dtype=dtype,
                                        labels={t: labels.get(t) for t in ts.head_sizes}, tokenizer=tokenizer,
                                        sft_tasks=[t for t in names if task_type(ts.kinds[t]).generative],
                                        chat_template=CHAT_TEMPLATE, extras=ts.config_extras())
                dirs[variant] = {t: tmp / "variants" / variant / t for t in names}
            if cfg.variants.int8.enabled:
                dirs["int8"] = {t: tmp / "variants" / "int8" / t for t in names}
                for t in names:
                    model = load(tmp / t, t)
                    skipped.update({f"int8.{part}": why for part, why in quantize.int8_skips(model).items()})
                    quantize.save_int8(quantize.quantize_int8(model), dirs["int8"][t], tokenizer_dir=tmp / t)
            say(f"{NAME}: measuring {sorted(dirs)} on the test split")
            measured: dict[str, dict[str, Any]] = {}
            for variant, per_task in dirs.items():
                measured[variant] = {}
                for t, model_dir in per_task.items():
                    model = quantize.load_int8(model_dir) if variant == "int8" else load(model_dir, t)
                    measured[variant][t] = measure.measure_model(
                        model, model_dir=model_dir, kind=measure_kind[t], data=ts.data["test"][t],
                        labels=labels.get(t), pad_id=ts.pad_id, batch_size=cfg.batch_size,
                        latency_examples=cfg.latency_examples, warmup=cfg.latency_warmup)
            entries = {variant: {t: compared(m, measured["teacher"][t], kind=measure_kind[t])
                                 for t, m in per_task.items()} for variant, per_task in measured.items()}
            summary["variants"] = {variant: {t: {k: v for k, v in e.items() if k not in TIMINGS}
                                             for t, e in per_task.items()} for variant, per_task in entries.items()}
            run_stats[MEASUREMENTS_KEY] = {variant: {t: {k: e[k] for k in TIMINGS} for t, e in per_task.items()}
                                           for variant, per_task in entries.items()}
            summary["skipped"] = dict(sorted(skipped.items()))
            (tmp / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        atomic_write_text(run_stats_path, json.dumps(run_stats, indent=2, sort_keys=True) + "\n")
        for variant, by_task in entries.items():
            say(f"{NAME}: {variant:<10} | " + " | ".join(
                f"{t}: params {m['params']} nonzero {m['nonzero_params']} p50 {m['latency_p50_ms']:.2f} ms "
                + " ".join(f"{k} {v:.3f}" for k, v in m["test"].items() if k in QUALITY and v is not None)
                + " | retention " + " ".join(f"{k} {v:.3f}" for k, v in m["retention"].items() if v is not None)
                for t, m in by_task.items()))
    torch.distributed.barrier()
    return {**summary, **run_stats}


def compared(metrics: dict[str, Any], teacher: dict[str, Any], *, kind: str) -> dict[str, Any]:
    """One model's summary entry: size and speed as measured, the quality numbers under ``test``, their
    ``retention`` of the teacher's (:func:`tasks.modeling.measure.retention`: 1.0 = as good as the teacher), the
    parameter ratio and the batch-1 speed-up over the teacher (p50 latencies)."""
    from tasks.modeling import measure

    entry = {k: v for k, v in metrics.items() if k not in QUALITY_FIELDS}
    entry["test"] = {k: v for k, v in metrics.items() if k in QUALITY_FIELDS}
    entry["retention"] = measure.retention(metrics, teacher, kind=kind)
    entry["params_ratio"] = metrics["params"] / teacher["params"]
    entry["speedup_p50"] = teacher["latency_p50_ms"] / metrics["latency_p50_ms"]
    return entry


def main(argv: list[str] | None = None) -> int:
    """Command line: ``--config run.json`` (the distill recipe's, with ``student_dir``); returns the exit code."""
    from tasks.examples import ExamplesError
    from tasks.tokens import TokenFileError
    from tasks.training.engine import recipe_main

    return recipe_main(NAME, __doc__, DistillConfig, preflight, train, argv,
                       user_errors=(ExamplesError, TokenFileError))


if __name__ == "__main__":
    sys.exit(main())
