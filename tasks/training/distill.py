"""Distill the fine-tuned (or pretrained) teacher into a smaller student with DeepSpeed, then compress the student:
``python -m tasks.training.distill --config run.json``.

Launch it like finetune (``torchrun`` or ``deepspeed`` for several processes; plain ``python`` runs one). The
components (``tasks.training.{kd, task_data, multitask, schedule, metrics, engine, checkpoint, telemetry, export,
task_eval, compress, measure}``) take keyword arguments. In the order a reader meets it:

1. read and check the config, the task manifest and rows (or the packed tokens), the teachers' configs (no torch
   yet: a bad config or bad data exits 2 in a second, before any training);
2. load the tokenizer and tokenize every task; ``teacher: base`` turns the packed tokens into one LM task ``lm`` whose
   examples are ``max_length``-token windows, every position a target;
3. load the teachers (one per task, eval mode, no gradients) and build the student: a smaller Llama from
   ``student``, started from the teacher's embeddings, final norm and every other layer (``init: teacher_layers``,
   DistilBERT) or from scratch, a ``score`` head per classification task (the teacher's when widths match), the LM
   head for sft; hand it with a two-rate AdamW to ``deepspeed.initialize``;
4. optionally run each teacher once over its training split and keep its logits on disk (``cache_teacher``), and
   time a few steps' teacher work live against the cache;
5. resume from ``checkpoint_dir/latest`` if present (weights, optimizer, step, history, best weights, early
   stopping, RNG; a step's batch is a function of (seed, step));
6. per step: the learning rate, one task's micro-batches, the loss ``alpha * T^2 * KL(teacher_T || student_T) +
   (1 - alpha) * hard`` (``tasks.training.kd``), one optimizer step; every ``eval_every`` steps the student's val
   metrics, ``val_score`` and early stopping (lines exactly as finetune's); every ``checkpoint_every`` steps a
   DeepSpeed checkpoint;
7. from the best student: the compressed variants (magnitude pruning and structured pruning, each with
   ``recovery_steps`` of the same KD steps; dynamic int8), every model measured on the test split (size, latency at
   batch 1, quality, retention of the teacher's quality), all exported atomically: ``out_dir/<task>/``,
   ``out_dir/variants/<variant>/<task>/`` and ``distill_summary.json``; timings to ``checkpoint_dir/run_stats.json``
   and MLflow, the learning curves to ``plots_dir/learning_curves.png``.

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
from tasks.training.config import ConfigError, DistillSettings, MlflowTarget, load_config
from tasks.training.task_data import check_tasks

NAME = "distill"
SUMMARY_FILE = "distill_summary.json"
CURVES_FILE = "learning_curves.png"
CACHE_DIR = "teacher_cache"
LM_TASK = "lm"
"""``teacher: base``: the one task, plain causal-LM distillation over windows of the packed tokens."""
TRAIN_EVAL_EXAMPLES = 256
"""Training examples per classification task (the first ones) whose accuracy is compared with val's at each eval."""
VAL_SCORE = "mean over tasks of: classification val macro-F1; sft/lm -(val loss per target token), of the student"
METRIC_NAMES = {"loss": "val_loss", "accuracy": "val_accuracy", "macro_f1": "val_macro_f1",
                "perplexity": "val_perplexity", "train_loss": "window_train_loss", "gap": "gap",
                "train_accuracy": "train_accuracy", "accuracy_gap": "accuracy_gap"}
"""MLflow names of an evaluation's per-task numbers (suffixed ``_<task>``)."""
QUALITY = ("accuracy", "macro_f1", "loss", "perplexity")
QUALITY_FIELDS = (*QUALITY, "per_class_f1", "scored_tokens", "examples")
"""measure.measure_model's quality numbers: they go under an entry's ``test``."""
TIMINGS = ("latency_p50_ms", "latency_p95_ms", "tokens_per_second", "speedup_p50")
"""What changes from run to run on the same inputs: kept out of the exported summary (the stage's output must be the
same bytes for the same inputs) and written to ``run_stats.json`` under :data:`MEASUREMENTS_KEY`."""
MEASUREMENTS_KEY = "measurements"
CACHE_TIMINGS = ("build_seconds", "live_teacher_seconds", "cached_teacher_seconds", "saving_seconds_per_step",
                 "break_even_steps")
RECOVERY_LR_SCALE = 0.3
"""The pruned variants' recovery starts at this fraction of ``lr`` (the weights are already trained)."""


class DistillConfig(DistillSettings):
    """Every setting of one distillation run: the shared settings plus the paths the flow fills in."""

    examples_dir: Path | None = Field(None, description="teacher finetuned: task data, manifest.json and "
                                      "<task>/{train,val,test}.jsonl (tasks.examples).")
    teacher_dir: Path = Field(description="finetuned: one Hugging Face model directory per task (models/finetuned); "
                              "base: the pretrained LlamaForCausalLM (models/base).")
    tokenizer_dir: Path = Field(description="The Hugging Face tokenizer, copied into every exported model.")
    tokens_dir: Path | None = Field(None, description="teacher base: the packed tokens (tasks.tokens).")
    out_dir: Path = Field(description="Exported student, variants and summary; replaced atomically at the end.")
    checkpoint_dir: Path = Field(description="DeepSpeed checkpoints and the teacher cache; a run resumes from its "
                                 "`latest`.")
    plots_dir: Path = Field(description="Where learning_curves.png is written.")
    mlflow: MlflowTarget | None = Field(None, description="MLflow run for metrics; None: MLFLOW_RUN_ID if set, "
                                        "else no MLflow at all.")
    deepspeed_config: Path | None = Field(None, description="A DeepSpeed JSON merged over the generated config.")


# what the weights, optimizer state, data order and stopping depend on; logging, checkpoint cadence, variants and
# paths may change freely between a run and its resumption
RUN_IDENTITY = ("teacher", "student", "temperature", "alpha", "cache_teacher", "cache_top_k", "seed", "batch_size",
                "grad_accum", "max_length", "lr", "head_lr", "min_lr_ratio", "schedule", "warmup_steps",
                "weight_decay", "betas", "grad_clip", "dropout", "early_stopping", "eval_every", "eval_max_examples",
                "zero_stage", "precision")


def identity(cfg: DistillConfig) -> dict[str, Any]:
    """The settings a resumed run must share with the one that started ``checkpoint_dir`` (plus ``steps``)."""
    return {**cfg.model_dump(mode="json", include=set(RUN_IDENTITY)), "steps": cfg.steps,
            "world_size": int(os.environ.get("WORLD_SIZE", "1"))}


def read_model_config(model_dir: Path, *, what: str) -> dict[str, Any]:
    """A teacher's ``config.json``; ConfigError naming the stage to run when it is missing."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise ConfigError(f"no config.json in {model_dir}: {what}")
    return json.loads(path.read_text(encoding="utf-8"))


def preflight(cfg: DistillConfig) -> dict[str, Any]:
    """Check what can be checked without torch: tasks and rows (or tokens), teacher configs, student shape,
    tokenizer, resume.

    Returns:
        ``{"tasks": {task: manifest entry}, "teachers": {task: the teacher's config.json}}``.

    Raises:
        ConfigError, ExamplesError, TokenFileError.
    """
    if cfg.teacher == "finetuned":
        if cfg.examples_dir is None:
            raise ConfigError("teacher finetuned needs examples_dir (the finetune stage's task data)")
        tasks = check_tasks(cfg.examples_dir)
        teachers = {}
        for name, task in tasks.items():
            conf = read_model_config(Path(cfg.teacher_dir) / name, what=f"run the finetune stage (task {name!r})")
            arch = (conf.get("architectures") or ["?"])[0]
            want = "LlamaForSequenceClassification" if task["type"] == "classification" else "LlamaForCausalLM"
            if arch != want:
                raise ConfigError(f"teacher {Path(cfg.teacher_dir) / name} is a {arch}, task {name!r} ({task['type']}) "
                                  f"needs a {want}: re-run the finetune stage on the same task data")
            if task["type"] == "classification":
                id2label = [conf.get("id2label", {}).get(str(i)) for i in range(len(task["labels"]))]
                if id2label != list(task["labels"]):
                    raise ConfigError(f"teacher {name!r} has labels {id2label}, the task data {task['labels']}: "
                                      "re-run the finetune stage on the same task data")
            teachers[name] = conf
    else:
        conf = read_model_config(cfg.teacher_dir, what="run the pretrain stage (teacher: base)")
        if cfg.tokens_dir is None:
            raise ConfigError("teacher base needs tokens_dir (the tokenizer stage's packed tokens)")
        manifest = read_manifest(cfg.tokens_dir)
        if not {"train", "val"} <= set(manifest["splits"]):
            raise TokenFileError(f"{cfg.tokens_dir} lacks a train or val split: re-run the tokenizer stage")
        for split in ("train", "val"):
            if int(manifest["splits"][split]["tokens"]) < cfg.max_length:
                raise TokenFileError(f"{cfg.tokens_dir} split {split} holds fewer than max_length {cfg.max_length} "
                                     "tokens: lower max_length or give the tokenizer stage more text")
        tasks = {LM_TASK: {"type": "sft", "labels": None, "weight": 1.0}}
        teachers = {LM_TASK: conf}
    for name, conf in teachers.items():
        if cfg.max_length > int(conf.get("max_position_embeddings", 0)):
            raise ConfigError(f"max_length {cfg.max_length} exceeds teacher {name!r}'s max_position_embeddings "
                              f"{conf.get('max_position_embeddings')}: lower max_length")
        depth = int(conf["num_hidden_layers"])
        if cfg.student.layers is not None and max(cfg.student.layers) >= depth:
            raise ConfigError(f"student.layers {cfg.student.layers} names a layer the teacher lacks (it has {depth})")
    if (cfg.student.hidden_size // cfg.student.num_heads) % 2:
        raise ConfigError("student head size hidden_size/num_heads is odd: rotary embeddings need an even one; "
                          "change student.hidden_size or student.num_heads")
    if not (Path(cfg.tokenizer_dir) / "tokenizer.json").is_file():
        raise ConfigError(f"no tokenizer.json in tokenizer_dir {cfg.tokenizer_dir}: run the tokenizer stage first")
    if cfg.deepspeed_config is not None and not Path(cfg.deepspeed_config).is_file():
        raise ConfigError(f"deepspeed_config {cfg.deepspeed_config} does not exist: fix the path or remove it")
    recovering = [v for v in ("magnitude", "structured") if getattr(cfg.variants, v).enabled
                  and getattr(cfg.variants, v).recovery_steps]
    if cfg.zero_stage == 3 and recovering:
        raise ConfigError(f"variants {recovering} train in place, which ZeRO-3's partitioned weights do not allow: "
                          "use zero_stage 0-2 or set their recovery_steps to 0")
    checkpoint.check_resume(checkpoint_dir=cfg.checkpoint_dir, identity=identity(cfg), name=NAME)
    return {"tasks": tasks, "teachers": teachers}


def lm_windows(tokens_dir: Path, split: str, *, width: int) -> dict[str, Any]:
    """``teacher: base``: a split of the packed tokens as consecutive ``width``-token examples in the task-data
    format, every position a target (``multitask.response_loss`` then is the next-token loss)."""
    from tasks.tokens import load_tokens

    tokens = load_tokens(tokens_dir, split)
    ids = [tokens[i:i + width].astype("int64").tolist() for i in range(0, len(tokens) - width + 1, width)]
    return {"ids": ids, "targets": ids, "dropped": 0, "rows": []}


def train(cfg: DistillConfig, info: dict[str, Any]) -> dict[str, Any]:
    """Run (or resume) the distillation described by ``cfg``, make and measure the variants, export; returns the
    summary."""
    import logging

    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from tasks.atomic import atomic_dir, atomic_path
    from tasks.examples import CHAT_TEMPLATE, load_split
    from tasks.training import engine as ds
    from tasks.training import export, kd, telemetry
    from tasks.training.metrics import EarlyStopper, learning_curves, val_score
    from tasks.training.model import build_llama, count_params
    from tasks.training.multitask import build_multitask, classification_loss, param_groups, response_loss
    from tasks.training.schedule import due, lr_factor, set_scaled_lr
    from tasks.training.task_data import TaskBatches, encode
    from tasks.training.task_eval import evaluate_split

    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    transformers.utils.logging.disable_progress_bar()
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
    if cfg.teacher == "base":
        splits = read_manifest(cfg.tokens_dir)["splits"]
        data = {split: {LM_TASK: lm_windows(cfg.tokens_dir, split if split in splits else "val",
                                            width=cfg.max_length)} for split in ("train", "val", "test")}
    else:
        data = {split: {t: encode(load_split(cfg.examples_dir, t, split), kind=kinds[t], tokenizer=tokenizer,
                                  max_length=cfg.max_length, labels=labels.get(t), eos_id=eos_id) for t in names}
                for split in ("train", "val", "test")}
    if empty := [f"{t}/{s}" for s in data for t in names if not data[s][t]["ids"]]:
        raise ConfigError(f"no example of {empty} fits max_length {cfg.max_length}: raise max_length")

    # the teachers (eval mode, no gradients, never trained) and the student started from them
    teacher_dirs = {t: Path(cfg.teacher_dir) / t if cfg.teacher == "finetuned" else Path(cfg.teacher_dir)
                    for t in names}
    teachers = {}
    for t in names:
        auto = AutoModelForSequenceClassification if t in labels else AutoModelForCausalLM
        teachers[t] = auto.from_pretrained(str(teacher_dirs[t]), dtype=torch.float32).eval().requires_grad_(False)
    source = next((t for t in names if t not in labels), names[0])  # a causal LM's backbone when there is one
    teacher_params = {t: count_params(m) for t, m in teachers.items()}
    torch.manual_seed(cfg.seed)
    shape = kd.student_kwargs(info["teachers"][source], num_layers=cfg.student.num_layers,
                              hidden_size=cfg.student.hidden_size, num_heads=cfg.student.num_heads,
                              num_kv_heads=cfg.student.num_kv_heads, intermediate_size=cfg.student.intermediate_size)
    shape["pad_token_id"] = pad_id  # pooling finds the last non-pad token by it, in training and in the export

    def new_student() -> Any:
        llama = build_llama(**shape, dtype="float32")
        llama.config.use_cache, llama.config.attention_dropout = False, cfg.dropout
        return llama

    llama = new_student()
    init_report: dict[str, Any] = {"init": cfg.student.init}
    if cfg.student.init == "teacher_layers":
        mapping = kd.layer_map(teacher_layers=int(info["teachers"][source]["num_hidden_layers"]),
                               student_layers=cfg.student.num_layers, layers=cfg.student.layers)
        copied = kd.init_from_teacher(llama, teachers[source], layers=mapping)
        init_report.update(layers=mapping, copied=len(copied["copied"]), neuron_subsets=len(copied["neurons"]),
                           kept=copied["kept"])
    model = build_multitask(llama, heads={t: len(labels[t]) for t in labels}, dropout=cfg.dropout,
                            pad_token_id=pad_id)
    if cfg.student.init == "teacher_layers":
        init_report["heads_from_teacher"] = kd.copy_heads(model.heads, {t: teachers[t].score.weight for t in labels})
    n_params = count_params(model)
    groups = param_groups(model, lr=cfg.lr, head_lr=cfg.head_lr, weight_decay=cfg.weight_decay)
    engine, optimizer = ds.build_engine(model, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay,
                                        ds_config=ds_config, groups=groups)
    device = engine.device
    for m in teachers.values():
        m.to(device)
    say(f"{NAME}: student {n_params / 1e6:.3f}M params (teacher {teacher_params[source] / 1e6:.3f}M), tasks {kinds}, "
        f"teacher {cfg.teacher}, init {init_report}, T {cfg.temperature}, alpha {cfg.alpha}, world_size "
        f"{world_size}, ZeRO-{cfg.zero_stage}, {cfg.precision}, up to {cfg.steps} steps x "
        f"{cfg.batch_size * cfg.grad_accum} examples per rank")

    batches = TaskBatches(data["train"], kinds=kinds, weights={t: float(tasks[t].get("weight", 1.0)) for t in names},
                          batch_size=cfg.batch_size, seed=cfg.seed, pad_id=pad_id, rank=rank, world_size=world_size)
    ckpt_dir = Path(cfg.checkpoint_dir)

    # the teacher cache: each teacher once over its training split, kept beside the checkpoints
    caches: dict[str, kd.TeacherCache] = {}
    cache_info: dict[str, Any] = {"enabled": cfg.cache_teacher and cfg.alpha > 0}
    if cache_info["enabled"]:
        t0 = time.perf_counter()
        reused = []
        for t in names:
            kind = "classification" if t in labels else "sft"
            path, digest = ckpt_dir / CACHE_DIR / f"{t}.pt", kd.file_digest(teacher_dirs[t])
            cache = kd.TeacherCache.load(path, kind=kind, top_k=cfg.cache_top_k, digest=digest)
            if cache is None:
                cache = kd.TeacherCache(kind=kind, top_k=cfg.cache_top_k)
                cache.build(teachers[t], data["train"][t], batch_size=cfg.batch_size, pad_id=pad_id, device=device)
                if is_main:
                    cache.save(path, digest=digest)
            else:
                reused.append(t)
            caches[t] = cache
        build_seconds = time.perf_counter() - t0
        # the saving: the same steps' teacher work live and from the cache
        live = cached = 0.0
        for s in range(cfg.cache_probe_steps):
            task, (x, mask, _) = batches.batch(s, 0)
            t0 = time.perf_counter()
            kd.teacher_forward(teachers[task], x.to(device), mask.to(device))
            t1 = time.perf_counter()
            caches[task].lookup(x, mask)
            live, cached = live + t1 - t0, cached + time.perf_counter() - t1
        cache_info.update(top_k=cfg.cache_top_k, reused=reused, build_seconds=round(build_seconds, 3),
                          bytes={t: c.nbytes() for t, c in caches.items()}, probe_steps=cfg.cache_probe_steps,
                          live_teacher_seconds=round(live, 4), cached_teacher_seconds=round(cached, 4),
                          saving_seconds_per_step=round((live - cached) / cfg.cache_probe_steps, 5),
                          break_even_steps=(round(build_seconds / ((live - cached) / cfg.cache_probe_steps))
                                            if live > cached else None))
        say(f"{NAME}: teacher cache {'reused' if len(reused) == len(names) else 'built'} in {build_seconds:.2f} s, "
            f"{sum(cache_info['bytes'].values()) / 2**20:.1f} MiB; teacher work of {cfg.cache_probe_steps} steps: "
            f"live {live:.3f} s, cached {cached:.3f} s")

    def step_loss(module: Any, task: str, x: Any, mask: Any, y: Any) -> tuple[Any, float, float]:
        """The KD loss of one micro-batch; returns (loss, hard part, soft part) (soft 0.0 with alpha 0)."""
        out = module(input_ids=x, attention_mask=mask, task=task)
        hard = classification_loss(out, y) if task in labels else response_loss(out, y)
        if cfg.alpha == 0:
            return hard, float(hard.detach()), 0.0
        if task in labels:
            target = caches[task].lookup(x, mask).to(device) if task in caches else \
                kd.teacher_forward(teachers[task], x, mask)
            soft = kd.kd_loss(out, target, temperature=cfg.temperature)
        else:
            rows, positions = kd.target_positions(out, y)
            if task in caches:
                values, indices = caches[task].lookup(x, mask)
                soft = kd.topk_kd_loss(rows, values.to(device), indices.to(device), temperature=cfg.temperature)
            else:
                teacher_rows = kd.teacher_forward(teachers[task], x, mask)[:, :-1][positions]
                soft = kd.kd_loss(rows, teacher_rows, temperature=cfg.temperature)
        return cfg.alpha * soft + (1 - cfg.alpha) * hard, float(hard.detach()), float(soft.detach())

    def run_step(eng: Any, step: int, masks: Any = None, prune_target: Any = None) -> tuple[str, list[float]]:
        """One optimizer step over ``grad_accum`` micro-batches of data step ``step``; returns (task, [loss, hard,
        soft] summed over micro-batches / grad_accum, tokens seen)."""
        sums = [0.0, 0.0, 0.0, 0.0]
        task = batches.task(step)
        for micro in range(cfg.grad_accum):
            task, (x, mask, y) = batches.batch(step, micro)
            x, mask, y = x.to(device), mask.to(device), y.to(device)
            loss, hard, soft = step_loss(eng, task, x, mask, y)
            eng.backward(loss)
            eng.step()
            for i, v in enumerate((float(loss.detach()), hard, soft)):
                sums[i] += v / cfg.grad_accum
            sums[3] += int(mask.sum()) * world_size
        if masks is not None:  # pruned weights stay zero whatever AdamW's moments say
            from tasks.training import compress

            compress.apply_masks(prune_target, masks)
        return task, sums

    # resume: weights, optimizer, step, history, best weights, stopping state, RNG
    stopper = EarlyStopper(patience=cfg.early_stopping.patience, min_delta=cfg.early_stopping.min_delta,
                           enabled=cfg.early_stopping.enabled)
    step, history, best_state, resumed_from, stopped_early = 0, [], None, None, False
    window = torch.zeros(len(names), 2, dtype=torch.float64)  # per task: summed train loss, micro-batches
    if (loaded := checkpoint.load(engine, checkpoint_dir=ckpt_dir)) is not None:
        path, client = loaded
        step, history, resumed_from = int(client["step"]), list(client["history"]), int(client["step"])
        stopper.load_state_dict(client["stopper"])
        best_state, stopped_early = client.get("best_state"), bool(client["stopped_early"])
        window = torch.tensor(client["window"], dtype=torch.float64)
        say(f"{NAME}: resumed from {path} at step {step}")
    if is_main:
        checkpoint.record_identity(checkpoint_dir=ckpt_dir, identity=identity(cfg))
    sink = telemetry.MlflowSink(run_id=cfg.mlflow.run_id if cfg.mlflow else None,
                                tracking_uri=cfg.mlflow.tracking_uri if cfg.mlflow else None, enabled=is_main)
    limit = cfg.eval_max_examples
    val_sets = {t: {k: v[:limit] for k, v in data["val"][t].items() if k != "dropped"} for t in names}
    train_probe = {t: {k: v[:limit or TRAIN_EVAL_EXAMPLES] for k, v in data["train"][t].items() if k != "dropped"}
                   for t in labels}

    def evaluate() -> bool:
        """The student's val metrics and train/val gap per task, val_score, early stopping; returns whether to stop
        (the line is finetune's, so the same tools read both logs)."""
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
        history.append({"step": step, "val_score": score, "tasks": per_task})
        window = torch.zeros(len(names), 2, dtype=torch.float64)
        if improved:  # keep the best weights (every rank joins the gather under ZeRO-3)
            best_state = export.gather_state(engine, zero3=cfg.zero_stage == 3, is_main=is_main)
            best_state = {k: v.cpu() for k, v in best_state.items()} if best_state is not None else None
        say(f"step {step:>6} | val_score {score:.4f}{' (best)' if improved else ''} | "
            + " | ".join(f"{t}: val_loss {m['loss']:.4f}" + (f" acc {m['accuracy']:.3f} f1 {m['macro_f1']:.3f}"
                                                             if t in labels else f" ppl {m['perplexity']:.2f}")
                         + ("" if m["gap"] is None else f" gap {m['gap']:+.4f}") for t, m in per_task.items()))
        flat = {"val_score": score}
        for t, m in per_task.items():
            flat.update({f"{METRIC_NAMES[k]}_{t}": v for k, v in m.items() if isinstance(v, float)})
        sink.log(flat, step)
        return stopper.stop

    if step == 0:
        evaluate()  # the starting point: the student as initialised
    launch_to_first_step = telemetry.seconds_since_launch()
    say(f"{NAME}: first step {launch_to_first_step:.1f} s after launch")
    sink.log({"launch_to_first_step_seconds": launch_to_first_step}, step)
    start_step, train_seconds, log_tokens, log_seconds, run_tokens = step, 0.0, 0, 0.0, 0
    log_loss = torch.zeros(len(names), 4, dtype=torch.float64)  # per task: loss, hard, soft, steps
    while step < cfg.steps and not stopped_early:
        t0 = time.perf_counter()
        factor = lr_factor(step, warmup_steps=cfg.warmup_steps, steps=cfg.steps, decay=cfg.schedule,
                           min_ratio=cfg.min_lr_ratio)
        set_scaled_lr(optimizer, factor)
        task, (loss, hard, soft, tokens) = run_step(engine, step)
        i = names.index(task)
        window[i] += torch.tensor([loss * cfg.grad_accum, cfg.grad_accum], dtype=torch.float64)
        log_loss[i] += torch.tensor([loss, hard, soft, 1.0], dtype=torch.float64)
        log_tokens += int(tokens)
        step += 1
        elapsed = time.perf_counter() - t0
        train_seconds, log_seconds = train_seconds + elapsed, log_seconds + elapsed
        if due(step, every=cfg.log_every, last=cfg.steps):
            metrics = {"lr": cfg.lr * factor, "tokens_per_second": log_tokens / log_seconds}
            for j, t in enumerate(names):
                if log_loss[j, 3]:
                    metrics.update({f"{k}_{t}": float(log_loss[j, c] / log_loss[j, 3])
                                    for c, k in enumerate(("train_loss", "hard_loss", "kd_loss"))})
            say(f"step {step:>6} | " + " | ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
            sink.log(metrics, step)
            run_tokens += log_tokens
            log_tokens, log_seconds, log_loss = 0, 0.0, torch.zeros(len(names), 4, dtype=torch.float64)
        if due(step, every=cfg.eval_every, last=cfg.steps) and evaluate():
            stopped_early = step < cfg.steps
            say(f"{NAME}: early stop at step {step}: no val_score gain above {cfg.early_stopping.min_delta} in "
                f"{cfg.early_stopping.patience} evaluations; best step {stopper.best_step}")
        if due(step, every=cfg.checkpoint_every, last=cfg.steps) or stopped_early:
            checkpoint.save(engine, checkpoint_dir=ckpt_dir, step=step, keep=cfg.keep_checkpoints, is_main=is_main,
                            client_state={"step": step, "history": history, "stopper": stopper.state_dict(),
                                          "best_state": best_state, "stopped_early": stopped_early,
                                          "window": window.tolist()})
    run_tokens += log_tokens
    if not history or history[-1]["step"] != step:
        evaluate()

    # the best student, then its compressed variants: every rank trains the recoveries, rank 0 exports
    from tasks.training import compress, measure

    if torch.distributed.is_initialized() and world_size > 1:  # the best weights were gathered on rank 0 only
        box = [best_state]
        torch.distributed.broadcast_object_list(box, src=0)
        best_state = box[0]

    def from_best(llama: Any = None) -> Any:
        """A multi-task module with the best evaluation's weights (around ``llama`` when given: a pruned one)."""
        module = build_multitask(llama if llama is not None else new_student(),
                                 heads={t: len(labels[t]) for t in labels}, dropout=cfg.dropout, pad_token_id=pad_id)
        if llama is None:
            module.load_state_dict(best_state, strict=True)
        else:
            module.heads.load_state_dict({k[len("heads."):]: v for k, v in best_state.items()
                                          if k.startswith("heads.")})
        return module

    def recover(module: Any, steps: int, masks: Any = None) -> tuple[Any, float]:
        """``steps`` more KD steps of the same loop for a pruned module, with its own engine and AdamW (a cosine
        from ``lr * RECOVERY_LR_SCALE``, data steps after the student's); returns the module and the seconds."""
        if not steps:
            return module, 0.0
        eng, opt = ds.build_engine(module, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay,
                                   ds_config=ds_config, groups=param_groups(module, lr=cfg.lr, head_lr=cfg.head_lr,
                                                                            weight_decay=cfg.weight_decay))
        t0 = time.perf_counter()
        for s in range(steps):
            set_scaled_lr(opt, RECOVERY_LR_SCALE * lr_factor(s, warmup_steps=0, steps=steps, decay=cfg.schedule,
                                                             min_ratio=cfg.min_lr_ratio))
            run_step(eng, cfg.steps + s, masks=masks, prune_target=eng.module.llama())
        return eng.module.eval(), time.perf_counter() - t0

    pruned: dict[str, Any] = {}
    variant_info: dict[str, Any] = {}
    if cfg.variants.magnitude.enabled:
        module = from_best()
        masks = compress.magnitude_prune(module.llama(), sparsity=cfg.variants.magnitude.sparsity)
        pruned["magnitude"], seconds = recover(module, cfg.variants.magnitude.recovery_steps, masks)
        variant_info["magnitude"] = {"sparsity": cfg.variants.magnitude.sparsity, "recovery_seconds": round(seconds, 3),
                                     "recovery_steps": cfg.variants.magnitude.recovery_steps}
    if cfg.variants.structured.enabled:
        base = from_best()
        shrunk = compress.structured_prune(base.llama(), heads_fraction=cfg.variants.structured.heads_fraction,
                                           neurons_fraction=cfg.variants.structured.neurons_fraction)
        pruned["structured"], seconds = recover(from_best(shrunk), cfg.variants.structured.recovery_steps)
        variant_info["structured"] = {"heads_fraction": cfg.variants.structured.heads_fraction,
                                      "neurons_fraction": cfg.variants.structured.neurons_fraction,
                                      "recovery_seconds": round(seconds, 3),
                                      "recovery_steps": cfg.variants.structured.recovery_steps}

    summary = {"teacher": cfg.teacher, "temperature": cfg.temperature, "alpha": cfg.alpha, "val_score": VAL_SCORE,
               "best_step": stopper.best_step, "best_val_score": stopper.best, "steps_run": step,
               "stopped_early": stopped_early, "student_init": init_report, "history": history, "cache": cache_info,
               "world_size": world_size, "precision": cfg.precision, "variants": {},
               "recovery": {k: {n: v for n, v in info.items() if n != "recovery_seconds"}
                            for k, info in variant_info.items()}}
    summary["cache"] = {k: v for k, v in cache_info.items() if k not in CACHE_TIMINGS}
    run_stats = {"resumed_from_step": resumed_from, "steps_this_run": step - start_step,
                 "tokens_per_second": round(run_tokens / train_seconds, 1) if train_seconds else None,
                 "train_seconds": round(train_seconds, 3), "launch_to_first_step_seconds": launch_to_first_step,
                 "recovery_seconds": {k: v["recovery_seconds"] for k, v in variant_info.items()},
                 "cache": {k: v for k, v in cache_info.items() if k in CACHE_TIMINGS}}
    if is_main:
        dtype = "bfloat16" if cfg.precision == "bf16" else "float32"

        def save(out: Path, module: Any) -> None:
            module = module.cpu().float()
            export.save_task_models(out, llama=module.llama(), labels=labels, dtype=dtype,
                                    heads={t: module.heads[t].weight.detach() for t in labels},
                                    sft_tasks=[t for t in names if t not in labels], tokenizer_dir=cfg.tokenizer_dir,
                                    chat_template=CHAT_TEMPLATE)

        measure_kind = {t: "lm" if cfg.teacher == "base" else kinds[t] for t in names}

        def load(model_dir: Path, task: str) -> Any:
            """A task model as a user loads it, in float32: every model is timed in the same precision (a bf16
            teacher on a CPU without bf16 kernels would look slow for the wrong reason)."""
            auto = AutoModelForSequenceClassification if task in labels else AutoModelForCausalLM
            return auto.from_pretrained(str(model_dir), dtype=torch.float32).eval()

        with atomic_dir(Path(cfg.out_dir)) as tmp:
            save(tmp, from_best())
            dirs: dict[str, dict[str, Path]] = {"teacher": teacher_dirs, "student": {t: tmp / t for t in names}}
            for variant, module in pruned.items():
                save(tmp / "variants" / variant, module)
                dirs[variant] = {t: tmp / "variants" / variant / t for t in names}
            if cfg.variants.int8.enabled:
                dirs["int8"] = {t: tmp / "variants" / "int8" / t for t in names}
                for t in names:
                    compress.save_int8(compress.quantize_int8(load(tmp / t, t)), dirs["int8"][t],
                                       tokenizer_dir=cfg.tokenizer_dir)
            say(f"{NAME}: measuring {sorted(dirs)} on the test split")
            measured: dict[str, dict[str, Any]] = {}
            for variant, per_task in dirs.items():
                measured[variant] = {}
                for t, model_dir in per_task.items():
                    model = compress.load_int8(model_dir) if variant == "int8" else load(model_dir, t)
                    measured[variant][t] = measure.measure_model(
                        model, model_dir=model_dir, kind=measure_kind[t], data=data["test"][t], labels=labels.get(t),
                        pad_id=pad_id, batch_size=cfg.batch_size, latency_examples=cfg.latency_examples,
                        warmup=cfg.latency_warmup)
            entries = {variant: {t: compared(m, measured["teacher"][t], kind=measure_kind[t])
                                 for t, m in per_task.items()} for variant, per_task in measured.items()}
            summary["variants"] = {variant: {t: {k: v for k, v in e.items() if k not in TIMINGS}
                                             for t, e in per_task.items()} for variant, per_task in entries.items()}
            run_stats[MEASUREMENTS_KEY] = {variant: {t: {k: e[k] for k in TIMINGS} for t, e in per_task.items()}
                                           for variant, per_task in entries.items()}
            (tmp / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        with atomic_path(Path(cfg.plots_dir) / CURVES_FILE) as png:
            learning_curves(history, kinds=kinds, path=png)
        checkpoint.write_run_stats(checkpoint_dir=ckpt_dir, stats=run_stats)
        final = {"best_val_score": stopper.best, "best_step": stopper.best_step, "steps_run": step,
                 "stopped_early": float(stopped_early), "train_seconds": run_stats["train_seconds"]}
        sink.log(final, step)  # every model's numbers reach MLflow from the flow (metrics/distill.json's names)
        for variant, per_task in entries.items():
            say(f"{NAME}: {variant:<10} | " + " | ".join(
                f"{t}: params {m['params']} nonzero {m['nonzero_params']} p50 {m['latency_p50_ms']:.2f} ms "
                + " ".join(f"{k} {v:.3f}" for k, v in m["test"].items() if k in QUALITY and v is not None)
                + " | retention " + " ".join(f"{k} {v:.3f}" for k, v in m["retention"].items() if v is not None)
                for t, m in per_task.items()))
        say(f"{NAME}: exported best step {stopper.best_step} (val_score {stopper.best:.4f}) to {cfg.out_dir}"
            + (" after an early stop" if stopped_early else ""))
    torch.distributed.barrier()
    return {**summary, **run_stats}


def compared(metrics: dict[str, Any], teacher: dict[str, Any], *, kind: str) -> dict[str, Any]:
    """One model's summary entry: size and speed as measured, the quality numbers under ``test``, their
    ``retention`` of the teacher's (:func:`tasks.training.measure.retention`: 1.0 = as good as the teacher), the
    parameter ratio and the batch-1 speed-up over the teacher (p50 latencies)."""
    from tasks.training import measure

    entry = {k: v for k, v in metrics.items() if k not in QUALITY_FIELDS}
    entry["test"] = {k: v for k, v in metrics.items() if k in QUALITY_FIELDS}
    entry["retention"] = measure.retention(metrics, teacher, kind=kind)
    entry["params_ratio"] = metrics["params"] / teacher["params"]
    entry["speedup_p50"] = teacher["latency_p50_ms"] / metrics["latency_p50_ms"]
    return entry


def main(argv: list[str] | None = None) -> int:
    """Command line: ``--config run.json``; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m tasks.training.distill", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, type=Path, help="the run's JSON config")
    parser.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # the deepspeed launcher
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, DistillConfig)
        if cfg.precision == "auto":  # the only check that needs torch
            from tasks.training.engine import resolve_precision

            cfg = cfg.model_copy(update={"precision": resolve_precision(cfg.precision)})
        info = preflight(cfg)
    except (ConfigError, ExamplesError, TokenFileError) as e:
        print(f"{NAME}: error: {e}", file=sys.stderr)
        return 2  # bad config or data, whatever the error family's own code
    from tasks.training.engine import run_entry

    return run_entry(NAME, lambda: train(cfg, info), user_errors=(ConfigError,))


if __name__ == "__main__":
    sys.exit(main())
