"""Fine-tune the pretrained Llama on every task at once with DeepSpeed: ``python -m tasks.training.finetune --config
run.json``.

Launch it like pretrain (``torchrun`` or ``deepspeed`` for several processes; plain ``python`` runs one). The
components (``tasks.training.{task_data, multitask, freezing, lora, schedule, metrics, shift, engine, checkpoint,
telemetry, export}``) take keyword arguments. In the order a reader meets it:

1. read and check the config, the task manifest and rows, the base model's config (no torch yet: a bad config or bad
   data exits 2 in a second, before any training);
2. load the base model and tokenizer, tokenize every task, write the shift report (rank 0, before any training);
3. build the multi-task module (a ``score`` head per classification task, the LM head for sft), choose what trains
   (full, frozen embeddings/layers, gradual unfreezing, LoRA), hand it with a two-rate AdamW (backbone ``lr``, heads
   ``head_lr``) to ``deepspeed.initialize``;
4. resume from ``checkpoint_dir/latest`` if present: weights, optimizer, step, history, best weights, early-stopping
   and plateau states, RNG; a step's task and batch are a function of (seed, step), so a resumed run sees the same
   data;
5. per step: the trainable set (gradual unfreezing), the learning rate (warmup, then cosine/linear or plateau), one
   task's ``grad_accum`` micro-batches, one optimizer step; every ``eval_every`` steps (and at the end) val metrics
   per task, the train/val gap, ``val_score`` (mean over tasks of classification macro-F1 and sft -val loss), early
   stopping; every ``checkpoint_every`` steps a DeepSpeed checkpoint;
6. export the best evaluation's weights (not the last) atomically: ``out_dir/<task>/`` per task (plus
   ``out_dir/adapter/`` with LoRA), test metrics of the exported files and ``finetune_summary.json``; timings go to
   ``checkpoint_dir/run_stats.json`` and MLflow; the learning curves to ``plots_dir/learning_curves.png``.

Exit codes: 0 done, 2 bad config or data (one message, no traceback), 1 any other failure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import Field

from tasks.examples import ExamplesError
from tasks.tokens import TokenFileError, read_manifest
from tasks.training import checkpoint
from tasks.training.config import ConfigError, FinetuneSettings, MlflowTarget, load_config
from tasks.training.task_data import check_tasks

NAME = "finetune"
SUMMARY_FILE = "finetune_summary.json"
CURVES_FILE = "learning_curves.png"
TRAIN_EVAL_EXAMPLES = 256
"""Training examples per classification task (the first ones) whose accuracy is compared with val's at each eval."""
SAMPLE_PROMPTS = 3
"""SFT: test prompts completed greedily by the exported model, into the summary."""
VAL_SCORE = "mean over tasks of: classification val macro-F1; sft -(val loss per response token)"
"""What early stopping, the best checkpoint and reduce-on-plateau follow (higher is better)."""
METRIC_NAMES = {"loss": "val_loss", "accuracy": "val_accuracy", "macro_f1": "val_macro_f1",
                "perplexity": "val_perplexity", "train_loss": "window_train_loss", "gap": "gap",
                "train_accuracy": "train_accuracy", "accuracy_gap": "accuracy_gap"}
"""MLflow names of an evaluation's per-task numbers (suffixed ``_<task>``)."""
LLAMA_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class FinetuneConfig(FinetuneSettings):
    """Every setting of one fine-tuning run: the shared settings plus the paths the flow fills in."""

    examples_dir: Path = Field(description="Task data: manifest.json and <task>/{train,val,test}.jsonl "
                               "(tasks.examples).")
    base_model_dir: Path = Field(description="The pretrained LlamaForCausalLM in Hugging Face format.")
    tokenizer_dir: Path = Field(description="The Hugging Face tokenizer, copied into every exported model.")
    tokens_dir: Path = Field(description="Packed pretraining tokens (tasks.tokens): the shift report's baseline.")
    out_dir: Path = Field(description="Exported models, one directory per task; replaced atomically at the end.")
    checkpoint_dir: Path = Field(description="DeepSpeed checkpoints; a run resumes from its `latest`.")
    plots_dir: Path = Field(description="Where learning_curves.png is written.")
    mlflow: MlflowTarget | None = Field(None, description="MLflow run for metrics; None: MLFLOW_RUN_ID if set, "
                                        "else no MLflow at all.")
    deepspeed_config: Path | None = Field(None, description="A DeepSpeed JSON merged over the generated config.")


# what the weights, optimizer state, data order and stopping depend on; logging, checkpoint cadence and paths may
# change freely between a run and its resumption
RUN_IDENTITY = ("strategy", "freeze_embeddings", "freeze_layers", "unfreeze_every", "lora", "seed", "batch_size",
                "grad_accum", "max_length", "lr", "head_lr", "min_lr_ratio", "schedule", "warmup_steps",
                "plateau_factor", "plateau_patience", "weight_decay", "betas", "grad_clip", "dropout",
                "class_weights", "sampling", "early_stopping", "eval_every", "eval_max_examples", "zero_stage",
                "precision")


def identity(cfg: FinetuneConfig) -> dict[str, Any]:
    """The settings a resumed run must share with the one that started ``checkpoint_dir`` (plus ``steps``)."""
    return {**cfg.model_dump(mode="json", include=set(RUN_IDENTITY)), "steps": cfg.steps,
            "world_size": int(os.environ.get("WORLD_SIZE", "1"))}


def preflight(cfg: FinetuneConfig) -> dict[str, Any]:
    """Check what can be checked without torch: tasks and their rows, base model config, tokenizer, tokens, resume.

    Returns:
        ``{"tasks": manifest tasks, "base": the base model's config.json}``.

    Raises:
        ConfigError, ExamplesError, TokenFileError.
    """
    tasks = check_tasks(cfg.examples_dir)
    config_path = Path(cfg.base_model_dir) / "config.json"
    if not config_path.is_file():
        raise ConfigError(f"no config.json in base_model_dir {cfg.base_model_dir}: run the pretrain stage first")
    base = json.loads(config_path.read_text(encoding="utf-8"))
    positions, layers = int(base.get("max_position_embeddings", 0)), int(base.get("num_hidden_layers", 0))
    if cfg.max_length > positions:
        raise ConfigError(f"max_length {cfg.max_length} exceeds the base model's max_position_embeddings "
                          f"{positions}: lower max_length (and the data step's limit)")
    if cfg.freeze_layers > layers:
        raise ConfigError(f"freeze_layers {cfg.freeze_layers} exceeds the base model's {layers} layers")
    if cfg.strategy == "lora" and (bad := sorted(set(cfg.lora.target_modules) - set(LLAMA_LINEARS))):
        raise ConfigError(f"lora.target_modules {bad} are not Llama linear layers; choose from {list(LLAMA_LINEARS)}")
    if cfg.unfreeze_every is not None and cfg.precision == "bf16":
        raise ConfigError("unfreeze_every needs precision fp32: DeepSpeed's bf16 optimizer fixes the trainable "
                          "parameters at the start; set precision: fp32 (or auto, which picks fp32 for it)")
    if not (Path(cfg.tokenizer_dir) / "tokenizer.json").is_file():
        raise ConfigError(f"no tokenizer.json in tokenizer_dir {cfg.tokenizer_dir}: run the tokenizer stage first")
    manifest = read_manifest(cfg.tokens_dir)
    if not {"train", "val"} <= set(manifest["splits"]):
        raise TokenFileError(f"{cfg.tokens_dir} lacks a train or val split: re-run the tokenizer stage")
    if cfg.deepspeed_config is not None and not Path(cfg.deepspeed_config).is_file():
        raise ConfigError(f"deepspeed_config {cfg.deepspeed_config} does not exist: fix the path or remove it")
    checkpoint.check_resume(checkpoint_dir=cfg.checkpoint_dir, identity=identity(cfg), name=NAME)
    return {"tasks": tasks, "base": base}


def train(cfg: FinetuneConfig, info: dict[str, Any]) -> dict[str, Any]:
    """Run (or resume) the fine-tuning described by ``cfg`` and export the best weights; returns the summary."""
    import logging

    import torch
    import transformers
    from transformers import AutoTokenizer

    from tasks.atomic import atomic_dir, atomic_path
    from tasks.examples import CHAT_TEMPLATE, load_split
    from tasks.tokens import load_tokens
    from tasks.training import engine as ds
    from tasks.training import export, telemetry
    from tasks.training.freezing import add_lora, apply_trainable, backbone_state, merged_llama, trainable_parts
    from tasks.training.metrics import EarlyStopper, learning_curves, val_score
    from tasks.training.model import count_params
    from tasks.training.multitask import (
        build_multitask,
        classification_loss,
        load_backbone,
        param_groups,
        response_loss,
    )
    from tasks.training.schedule import Plateau, due, lr_factor, set_scaled_lr
    from tasks.training.shift import shift_report
    from tasks.training.task_data import TaskBatches, class_weights, encode
    from tasks.training.task_eval import evaluate_split, exported_test_metrics

    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    transformers.utils.logging.disable_progress_bar()  # a bar per model load would drown the log
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ds_config = ds.deepspeed_config(batch_size=cfg.batch_size, grad_accum=cfg.grad_accum, grad_clip=cfg.grad_clip,
                                    zero_stage=cfg.zero_stage, precision=cfg.precision,
                                    override=cfg.deepspeed_config)
    rank, world_size = ds.init_distributed(tensor_parallel="tensor_parallel" in ds_config)
    is_main = rank == 0

    def say(msg: str) -> None:
        if is_main:
            print(msg, flush=True)

    # the data: every split of every task tokenized the same way on every rank
    tokenizer = AutoTokenizer.from_pretrained(str(cfg.tokenizer_dir))
    tasks = info["tasks"]
    names = sorted(tasks)
    kinds = {t: tasks[t]["type"] for t in names}
    labels = {t: list(tasks[t]["labels"]) for t in names if kinds[t] == "classification"}
    eos_id, pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    if eos_id is None or pad_id is None:
        raise ConfigError(f"the tokenizer in {cfg.tokenizer_dir} has no EOS or pad token: use the tokenizer stage's")
    data = {split: {t: encode(load_split(cfg.examples_dir, t, split), kind=kinds[t], tokenizer=tokenizer,
                              max_length=cfg.max_length, labels=labels.get(t), eos_id=eos_id) for t in names}
            for split in ("train", "val", "test")}
    if empty := [f"{t}/{s}" for s in data for t in names if not data[s][t]["ids"]]:
        raise ConfigError(f"no example of {empty} fits max_length {cfg.max_length}: raise max_length")

    # the base model, and how far each task's text is from what it was pretrained on (before any training)
    torch.manual_seed(cfg.seed)
    llama = load_backbone(cfg.base_model_dir, attention_dropout=cfg.dropout)
    llama.config.pad_token_id = pad_id  # pooling finds the last non-pad token by it, in training and in the export
    shift: dict[str, Any] = {}
    if is_main:
        streams = {t: [i for seq in data["train"][t]["ids"] for i in seq + [eos_id]] for t in names}
        counts = {t: {label: data["train"][t]["targets"].count(k) for k, label in enumerate(labels[t])}
                  if t in labels else None for t in names}
        shift = shift_report(model=llama, tokenizer=tokenizer, task_tokens=streams, label_counts=counts,
                             train_tokens=load_tokens(cfg.tokens_dir, "train"),
                             val_tokens=load_tokens(cfg.tokens_dir, "val"),
                             width=min(cfg.max_length, llama.config.max_position_embeddings))
        for warning in shift["warnings"]:
            print(f"{NAME}: warning: {warning}", flush=True)

    # the model and what trains
    if cfg.strategy == "lora":
        llama = add_lora(llama, rank=cfg.lora.rank, alpha=cfg.lora.alpha, dropout=cfg.lora.dropout,
                         target_modules=cfg.lora.target_modules)
    model = build_multitask(llama, heads={t: len(labels[t]) for t in labels}, dropout=cfg.dropout,
                            pad_token_id=pad_id)
    num_layers = int(info["base"]["num_hidden_layers"])

    def parts_at(step: int) -> set[str]:
        return trainable_parts(step, num_layers=num_layers, strategy=cfg.strategy,
                               freeze_embeddings=cfg.freeze_embeddings, freeze_layers=cfg.freeze_layers,
                               unfreeze_every=cfg.unfreeze_every)

    apply_trainable(model, parts_at(0))
    n_params = count_params(model)
    groups = param_groups(model, lr=cfg.lr, head_lr=cfg.head_lr, weight_decay=cfg.weight_decay)
    engine, optimizer = ds.build_engine(model, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay,
                                        ds_config=ds_config, groups=groups)
    device = engine.device
    weights = {t: torch.tensor(class_weights(data["train"][t]["targets"], len(labels[t])), device=device)
               for t in labels} if cfg.class_weights == "balanced" else {}
    say(f"{NAME}: {n_params / 1e6:.2f}M params, tasks {kinds}, strategy {cfg.strategy}, world_size {world_size}, "
        f"ZeRO-{cfg.zero_stage}, {cfg.precision}, up to {cfg.steps} steps x {cfg.batch_size * cfg.grad_accum} "
        "examples per rank")

    # resume: weights, optimizer, step, history, best weights, stopping and plateau states, RNG
    stopper = EarlyStopper(patience=cfg.early_stopping.patience, min_delta=cfg.early_stopping.min_delta,
                           enabled=cfg.early_stopping.enabled)
    plateau = Plateau(factor=cfg.plateau_factor, patience=cfg.plateau_patience, min_delta=cfg.early_stopping.min_delta)
    step, history, best_state, resumed_from, stopped_early = 0, [], None, None, False
    window = torch.zeros(len(names), 2, dtype=torch.float64)  # per task: summed train loss, micro-batches
    ckpt_dir = Path(cfg.checkpoint_dir)
    if (loaded := checkpoint.load(engine, checkpoint_dir=ckpt_dir)) is not None:
        path, client = loaded
        step, history, resumed_from = int(client["step"]), list(client["history"]), int(client["step"])
        stopper.load_state_dict(client["stopper"])
        plateau.load_state_dict(client["plateau"])
        best_state, stopped_early = client.get("best_state"), bool(client["stopped_early"])
        window = torch.tensor(client["window"], dtype=torch.float64)
        say(f"{NAME}: resumed from {path} at step {step}")
    if is_main:
        checkpoint.record_identity(checkpoint_dir=ckpt_dir, identity=identity(cfg))
    batches = TaskBatches(data["train"], kinds=kinds, weights={t: float(tasks[t].get("weight", 1.0)) for t in names},
                          batch_size=cfg.batch_size, seed=cfg.seed, pad_id=pad_id, balanced=cfg.sampling == "balanced",
                          rank=rank, world_size=world_size)
    sink = telemetry.MlflowSink(run_id=cfg.mlflow.run_id if cfg.mlflow else None,
                                tracking_uri=cfg.mlflow.tracking_uri if cfg.mlflow else None, enabled=is_main)
    if is_main and resumed_from is None:
        sink.log({f"shift_{k}_{t}": v for t, e in shift["tasks"].items() for k, v in e.items()
                  if k in ("byte_token_rate", "perplexity_ratio", "js_divergence") and v is not None}, 0)
    limit = cfg.eval_max_examples
    val_sets = {t: {k: v[:limit] for k, v in data["val"][t].items() if k != "dropped"} for t in names}
    train_probe = {t: {k: v[:limit or TRAIN_EVAL_EXAMPLES] for k, v in data["train"][t].items() if k != "dropped"}
                   for t in labels}

    def evaluate() -> bool:
        """Val metrics and the train/val gap per task, val_score, early stopping; returns whether to stop."""
        nonlocal best_state, window
        totals = window.clone().to(device)
        if torch.distributed.is_initialized():
            torch.distributed.all_reduce(totals)
        per_task = {}
        for i, t in enumerate(names):
            m = evaluate_split(engine, val_sets[t], task=t, kind=kinds[t], labels=labels.get(t),
                               batch_size=cfg.batch_size, pad_id=pad_id)
            train_loss = float(totals[i, 0] / totals[i, 1]) if totals[i, 1] else None
            m["train_loss"] = train_loss
            m["gap"] = None if train_loss is None else m["loss"] - train_loss
            if t in train_probe:
                probe = evaluate_split(engine, train_probe[t], task=t, kind=kinds[t], labels=labels[t],
                                       batch_size=cfg.batch_size, pad_id=pad_id)
                m["train_accuracy"], m["accuracy_gap"] = probe["accuracy"], probe["accuracy"] - m["accuracy"]
            per_task[t] = m
        score = val_score(kinds, per_task)
        improved = stopper.update(score, step)
        scale = plateau.update(score) if cfg.schedule == "plateau" else 1.0
        history.append({"step": step, "val_score": score, "lr_scale": scale, "tasks": per_task})
        window = torch.zeros(len(names), 2, dtype=torch.float64)
        if improved:  # keep the best weights (every rank joins the gather under ZeRO-3)
            best_state = export.gather_state(engine, zero3=cfg.zero_stage == 3, is_main=is_main)
            best_state = {k: v.cpu() for k, v in best_state.items()} if best_state is not None else None
        say(f"step {step:>6} | val_score {score:.4f}{' (best)' if improved else ''} | "
            + " | ".join(f"{t}: val_loss {m['loss']:.4f}" + (f" acc {m['accuracy']:.3f} f1 {m['macro_f1']:.3f}"
                                                             if t in labels else f" ppl {m['perplexity']:.2f}")
                         + ("" if m["gap"] is None else f" gap {m['gap']:+.4f}") for t, m in per_task.items()))
        flat = {"val_score": score, "lr_scale": scale}
        for t, m in per_task.items():  # val_loss_T, val_accuracy_T, gap_T (val - train loss), train_accuracy_T...
            flat.update({f"{METRIC_NAMES[k]}_{t}": v for k, v in m.items() if isinstance(v, float)})
        sink.log(flat, step)
        return stopper.stop

    if step == 0:
        evaluate()  # the starting point: the base model with fresh heads
    launch_to_first_step = telemetry.seconds_since_launch()
    say(f"{NAME}: first step {launch_to_first_step:.1f} s after launch")
    sink.log({"launch_to_first_step_seconds": launch_to_first_step}, step)
    # DeepSpeed fills a missing gradient of a trainable parameter with zeros, so AdamW would keep moving an idle
    # head along its old moments; with the plain torch optimizer (ZeRO 0, fp32) the idle heads are switched off
    idle_heads_rest = cfg.zero_stage == 0 and cfg.precision == "fp32"
    start_step, train_seconds, log_tokens, log_seconds, run_tokens = step, 0.0, 0, 0.0, 0
    log_loss = torch.zeros(len(names), 2, dtype=torch.float64)
    while step < cfg.steps and not stopped_early:
        t0 = time.perf_counter()
        if cfg.unfreeze_every is not None:
            apply_trainable(engine.module, parts_at(step))
        factor = lr_factor(step, warmup_steps=cfg.warmup_steps, steps=cfg.steps, decay=cfg.schedule,
                           min_ratio=cfg.min_lr_ratio) * plateau.scale
        set_scaled_lr(optimizer, factor)
        if idle_heads_rest:  # the heads of the tasks not drawn now get no gradient: no moment, no decay
            for t, head in engine.module.heads.items():
                head.weight.requires_grad_(t == batches.task(step))
        for micro in range(cfg.grad_accum):
            task, (x, mask, y) = batches.batch(step, micro)
            x, mask, y = x.to(device), mask.to(device), y.to(device)
            out = engine(input_ids=x, attention_mask=mask, task=task)
            loss = classification_loss(out, y, weight=weights.get(task)) if task in labels else response_loss(out, y)
            engine.backward(loss)
            engine.step()
            i = names.index(task)
            value = float(loss.detach()) / cfg.grad_accum
            for acc in (window, log_loss):
                acc[i, 0] += value * cfg.grad_accum
                acc[i, 1] += 1
            log_tokens += int(mask.sum()) * world_size
        step += 1
        elapsed = time.perf_counter() - t0
        train_seconds, log_seconds = train_seconds + elapsed, log_seconds + elapsed
        if due(step, every=cfg.log_every, last=cfg.steps):
            metrics = {"lr": cfg.lr * factor, "head_lr": cfg.head_lr * factor,
                       "tokens_per_second": log_tokens / log_seconds}
            metrics.update({f"train_loss_{t}": float(log_loss[i, 0] / log_loss[i, 1])
                            for i, t in enumerate(names) if log_loss[i, 1]})
            say(f"step {step:>6} | " + " | ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
            sink.log(metrics, step)
            run_tokens += log_tokens
            log_tokens, log_seconds, log_loss = 0, 0.0, torch.zeros(len(names), 2, dtype=torch.float64)
        if due(step, every=cfg.eval_every, last=cfg.steps) and evaluate():
            stopped_early = step < cfg.steps
            say(f"{NAME}: early stop at step {step}: no val_score gain above {cfg.early_stopping.min_delta} in "
                f"{cfg.early_stopping.patience} evaluations; best step {stopper.best_step}")
        if due(step, every=cfg.checkpoint_every, last=cfg.steps) or stopped_early:
            checkpoint.save(engine, checkpoint_dir=ckpt_dir, step=step, keep=cfg.keep_checkpoints, is_main=is_main,
                            client_state={"step": step, "history": history, "stopper": stopper.state_dict(),
                                          "plateau": plateau.state_dict(), "best_state": best_state,
                                          "stopped_early": stopped_early, "window": window.tolist()})
    run_tokens += log_tokens
    apply_trainable(engine.module, parts_at(step))  # every head trainable again (for the count below)
    if not history or history[-1]["step"] != step:
        evaluate()

    # export the best evaluation's weights, with test metrics of the exported files
    best = next(h for h in history if h["step"] == stopper.best_step)
    summary = {"val_score": VAL_SCORE, "best_step": stopper.best_step, "best_val_score": stopper.best,
               "steps_run": step, "stopped_early": stopped_early, "params": n_params,
               "trainable_params": count_params(engine.module, trainable_only=True), "strategy": cfg.strategy,
               "world_size": world_size, "precision": cfg.precision, "tasks": {}, "history": history, "shift": shift}
    run_stats = {"resumed_from_step": resumed_from, "steps_this_run": step - start_step,
                 "tokens_per_second": round(run_tokens / train_seconds, 1) if train_seconds else None,
                 "train_seconds": round(train_seconds, 3), "launch_to_first_step_seconds": launch_to_first_step}
    if is_main:
        dtype = "bfloat16" if cfg.precision == "bf16" else "float32"
        with atomic_dir(Path(cfg.out_dir)) as tmp:
            if cfg.strategy == "lora":
                merged = merged_llama(base_model_dir=cfg.base_model_dir, state=best_state, rank=cfg.lora.rank,
                                      alpha=cfg.lora.alpha, dropout=cfg.lora.dropout,
                                      target_modules=cfg.lora.target_modules, dtype="float32",
                                      adapter_dir=tmp / "adapter")
            else:
                merged = load_backbone(cfg.base_model_dir)
                merged.load_state_dict(backbone_state(best_state), strict=True)
            export.save_task_models(tmp, llama=merged, heads={t: best_state[f"heads.{t}.weight"] for t in labels},
                                    labels=labels, sft_tasks=[t for t in names if t not in labels],
                                    tokenizer_dir=cfg.tokenizer_dir, dtype=dtype, chat_template=CHAT_TEMPLATE)
            for t in names:
                test = exported_test_metrics(tmp / t, data["test"][t], kind=kinds[t], labels=labels.get(t),
                                     batch_size=cfg.batch_size, samples=SAMPLE_PROMPTS,
                                     max_new_tokens=cfg.sample_max_new_tokens)
                summary["tasks"][t] = {"type": kinds[t], "labels": labels.get(t), "best_val": best["tasks"][t],
                                       "final_val": history[-1]["tasks"][t], "test": test,
                                       "dropped_too_long": {s: data[s][t]["dropped"] for s in data}}
            (tmp / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        with atomic_path(Path(cfg.plots_dir) / CURVES_FILE) as png:
            learning_curves(history, kinds=kinds, path=png)
        checkpoint.write_run_stats(checkpoint_dir=ckpt_dir, stats=run_stats)
        final = {"best_val_score": stopper.best, "best_step": stopper.best_step, "steps_run": step,
                 "stopped_early": float(stopped_early)}
        for t, e in summary["tasks"].items():
            final.update({f"test_{k}_{t}": v for k, v in e["test"].items() if isinstance(v, float)})
        sink.log({**final, "train_seconds": run_stats["train_seconds"],
                  **({"tokens_per_second_run": run_stats["tokens_per_second"]} if train_seconds else {})}, step)
        say(f"{NAME}: exported best step {stopper.best_step} (val_score {stopper.best:.4f}) to {cfg.out_dir}"
            + (" after an early stop" if stopped_early else ""))
    torch.distributed.barrier()
    return {**summary, **run_stats}


def main(argv: list[str] | None = None) -> int:
    """Command line: ``--config run.json``; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m tasks.training.finetune", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, type=Path, help="the run's JSON config")
    parser.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # the deepspeed launcher
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, FinetuneConfig)
        if cfg.precision == "auto":  # the only check that needs torch; gradual unfreezing needs fp32
            from tasks.training.engine import resolve_precision

            precision = "fp32" if cfg.unfreeze_every is not None else resolve_precision(cfg.precision)
            cfg = cfg.model_copy(update={"precision": precision})
        info = preflight(cfg)
    except (ConfigError, ExamplesError, TokenFileError) as e:
        print(f"{NAME}: error: {e}", file=sys.stderr)
        return 2  # bad config or data, whatever the error family's own code
    from tasks.training.engine import run_entry

    return run_entry(NAME, lambda: train(cfg, info), user_errors=(ConfigError,))


if __name__ == "__main__":
    sys.exit(main())
