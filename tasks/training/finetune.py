"""Fine-tune a pretrained model (lmforge's own Llama or any Hugging Face checkpoint) on every task at once with
DeepSpeed: ``python -m tasks.training.finetune --config run.json``.

Launch it like pretrain (``torchrun`` or ``deepspeed`` for several processes; plain ``python`` runs one). The model
layer (``tasks.modeling``: task data, heads, evaluation, checkpoints, export) and the shared loop
(``tasks.training.loop``) do the common work; this recipe holds what is fine-tuning's own. In the order a reader
meets it:

1. read and check the config, the task manifest and rows, the base model's config (no torch yet: a bad config or bad
   data exits 2 in a second, before any training);
2. load the base model and tokenizer, tokenize every task, write the shift report (rank 0, before any training);
3. build the multi-task module (a head per task whose type has one, the LM head for generative tasks), choose what
   trains (full, frozen embeddings/layers, gradual unfreezing, LoRA), hand it with a two-rate AdamW (backbone ``lr``,
   heads ``head_lr``) to ``deepspeed.initialize``;
4. resume from ``checkpoint_dir/latest`` if present (weights, optimizer, step, history, best weights, early-stopping
   and plateau states, RNG);
5. the loop (:func:`tasks.training.loop.fit`) with fine-tuning's loss (class-weighted cross-entropy on a head, or the
   response tokens' next-token loss) and its per-step hook (gradual unfreezing, idle heads); every evaluation is
   appended to ``evaluations.jsonl`` in the checkpoint directory;
6. export the best evaluation's weights (not the last) atomically: ``out_dir/<task>/`` per task (plus
   ``out_dir/adapter/`` with LoRA), test metrics of the exported files and ``finetune_summary.json``; timings go to
   ``checkpoint_dir/run_stats.json`` and MLflow; the learning curves to ``plots_dir/learning_curves.png``.

Exit codes: 0 done, 2 bad config or data (one message, no traceback), 1 any other failure.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import Field

from tasks.modeling import checkpoint, source
from tasks.modeling.encoding import check_tasks
from tasks.modeling.errors import ConfigError
from tasks.modeling.tasktypes import chat_templates, task_type
from tasks.tokens import TokenFileError, read_manifest
from tasks.training.blocks import TaskPaths
from tasks.training.config import FinetuneSettings

NAME = "finetune"
SUMMARY_FILE = "finetune_summary.json"
CURVES_FILE = "learning_curves.png"
SAMPLE_PROMPTS = 3
"""SFT: test prompts completed greedily by the exported model, into the summary."""
VAL_SCORE = "mean over tasks of the type's val score (classification macro-F1; sft -(val loss per response token)...)"
"""What early stopping, the best checkpoint and reduce-on-plateau follow (higher is better)."""
# what the weights, optimizer state, data order and stopping depend on; logging, checkpoint cadence and paths may
# change freely between a run and its resumption
RUN_IDENTITY = ("strategy", "freeze_embeddings", "freeze_layers", "unfreeze_every", "lora", "seed", "batch_size",
                "grad_accum", "max_length", "lr", "head_lr", "min_lr_ratio", "schedule", "warmup_steps",
                "plateau_factor", "plateau_patience", "weight_decay", "betas", "grad_clip", "dropout",
                "class_weights", "sampling", "early_stopping", "eval_every", "eval_max_examples", "zero_stage",
                "precision", "base_checkpoint")


class FinetuneConfig(FinetuneSettings, TaskPaths):
    """Every setting of one fine-tuning run: the shared settings plus the paths the flow fills in."""

    examples_dir: Path = Field(description="Task data: manifest.json and <task>/{train,val,test}.jsonl "
                               "(tasks.examples).")
    base_model_dir: Path = Field(description="The pretrained model in Hugging Face format: models/base or any "
                                 "checkpoint (a causal LM, or an encoder for classification tasks).")
    base_checkpoint: dict[str, Any] | None = Field(None, description="What base_model_dir is when it is a checkpoint "
                                                   "lmforge did not train (source, revision, commit, digest, "
                                                   "license): written into the summary for the model cards and the "
                                                   "registry; part of the run's identity.")
    tokens_dir: Path | None = Field(None, description="Packed pretraining tokens of this model's tokenizer "
                                    "(tasks.tokens): the shift report's baseline; null (a checkpoint's own "
                                    "tokenizer): no corpus baseline.")


def preflight(cfg: FinetuneConfig) -> dict[str, Any]:
    """Check what can be checked without torch: tasks and their rows, base model config, tokenizer, tokens, resume.

    Returns:
        ``{"tasks": manifest tasks, "base": the base model's config.json}``.

    Raises:
        ConfigError, ExamplesError, TokenFileError.
    """
    tasks = check_tasks(cfg.examples_dir)
    kinds = [task_type(entry["type"]) for entry in tasks.values()]
    base = source.check(Path(cfg.base_model_dir), setting="base_model_dir",
                        needs_decoder=any(k.generative for k in kinds),
                        heads=tuple(sorted({k.head_class for k in kinds if k.head_class})))
    from transformers import AutoConfig

    shape = AutoConfig.from_pretrained(str(cfg.base_model_dir))  # maps GPT-2's n_positions, n_layer...
    positions, layers = int(getattr(shape, "max_position_embeddings", 0) or 0), int(shape.num_hidden_layers)
    if positions and cfg.max_length > positions:
        raise ConfigError(f"max_length {cfg.max_length} exceeds the base model's max_position_embeddings "
                          f"{positions}: lower max_length (and the data step's limit)")
    if cfg.freeze_layers > layers:
        raise ConfigError(f"freeze_layers {cfg.freeze_layers} exceeds the base model's {layers} layers")
    if cfg.unfreeze_every is not None and cfg.precision == "bf16":
        raise ConfigError("unfreeze_every needs precision fp32: DeepSpeed's bf16 optimizer fixes the trainable "
                          "parameters at the start; set precision: fp32 (or auto, which picks fp32 for it)")
    cfg.check_paths()
    if cfg.tokens_dir is not None:
        manifest = read_manifest(cfg.tokens_dir)
        if not {"train", "val"} <= set(manifest["splits"]):
            raise TokenFileError(f"{cfg.tokens_dir} lacks a train or val split: re-run the tokenizer stage")
    checkpoint.check_resume(checkpoint_dir=cfg.checkpoint_dir, identity=checkpoint.identity(cfg, RUN_IDENTITY),
                            name=NAME)
    return {"tasks": tasks, "base": base, "layers": layers, "decoder": source.is_decoder(base)}


def train(cfg: FinetuneConfig, info: dict[str, Any]) -> dict[str, Any]:
    """Run (or resume) the fine-tuning described by ``cfg`` and export the best weights; returns the summary."""
    import torch
    from transformers import AutoTokenizer

    from tasks.atomic import atomic_dir, atomic_path
    from tasks.examples import CHAT_TEMPLATE
    from tasks.modeling import export
    from tasks.modeling.encoding import TaskBatches, TaskSet, class_weights
    from tasks.modeling.evaluation import exported_test_metrics
    from tasks.modeling.heads import build_multitask, load_backbone, param_groups
    from tasks.modeling.llama import count_params
    from tasks.modeling.metrics import learning_curves
    from tasks.tokens import load_tokens
    from tasks.training import engine as ds
    from tasks.training.freezing import (
        add_lora,
        apply_trainable,
        backbone_state,
        layer_count,
        merged_backbone,
        trainable_parts,
    )
    from tasks.training.loop import fit, new_evaluator, resume
    from tasks.training.shift import shift_report
    from tasks.training.telemetry import log_outcome

    ds_config, rank, world_size = ds.setup(cfg)
    is_main = rank == 0
    say = ds.printer(is_main)

    # the data: every split of every task tokenized the same way on every rank
    tokenizer = AutoTokenizer.from_pretrained(str(cfg.tokenizer_dir))
    ts = TaskSet.from_examples(cfg.examples_dir, info["tasks"], tokenizer=tokenizer, max_length=cfg.max_length)
    names, labels, classes = ts.names, ts.labels, ts.class_tasks

    # the base model, and how far each task's text is from what it was pretrained on (before any training)
    torch.manual_seed(cfg.seed)
    causal = bool(info["decoder"])
    # loaded straight in the run's precision: a bf16 run never holds an fp32 copy of a large checkpoint's weights
    # partitioned under ZeRO-3, except when the shift report below runs the whole model on rank 0 (a corpus baseline)
    backbone = load_backbone(cfg.base_model_dir, attention_dropout=cfg.dropout, causal=causal,
                             dtype="bfloat16" if cfg.precision == "bf16" else "float32",
                             ds_config=None if causal and cfg.tokens_dir is not None else ds_config)
    backbone.config.pad_token_id = ts.pad_id  # pooling finds the last non-pad token by it, in training and export
    num_layers = int(info["layers"])
    if (cfg.freeze_layers or cfg.unfreeze_every is not None) and layer_count(backbone) != num_layers:
        raise ConfigError(f"freeze_layers / unfreeze_every: the {backbone.config.model_type} model's parameter names "
                          f"show {layer_count(backbone)} numbered layers, not its {num_layers}: freeze by layer is "
                          "not supported for this architecture")
    shift: dict[str, Any] = {}
    if is_main and causal and cfg.tokens_dir is not None:
        train_data = ts.data["train"]
        streams = {t: [i for seq in train_data[t]["ids"] for i in seq + [ts.eos_id]] for t in names}
        counts = {t: {label: train_data[t]["targets"].count(k) for k, label in enumerate(labels[t])}
                  if t in classes else None for t in names}
        shift = shift_report(model=backbone, tokenizer=tokenizer, task_tokens=streams, label_counts=counts,
                             train_tokens=load_tokens(cfg.tokens_dir, "train"),
                             val_tokens=load_tokens(cfg.tokens_dir, "val"),
                             width=min(cfg.max_length, backbone.config.max_position_embeddings))
        for warning in shift["warnings"]:
            print(f"{NAME}: warning: {warning}", flush=True)

    # the model and what trains
    if cfg.strategy == "lora":
        backbone = add_lora(backbone, rank=cfg.lora.rank, alpha=cfg.lora.alpha, dropout=cfg.lora.dropout,
                            target_modules=cfg.lora.target_modules)
    model = build_multitask(backbone, heads=ts.head_sizes, types=ts.kinds, dropout=cfg.dropout, pad_token_id=ts.pad_id)

    def parts_at(step: int) -> set[str]:
        return trainable_parts(step, num_layers=num_layers, strategy=cfg.strategy,
                               freeze_embeddings=cfg.freeze_embeddings, freeze_layers=cfg.freeze_layers,
                               unfreeze_every=cfg.unfreeze_every)

    apply_trainable(model, parts_at(0))
    n_params = count_params(model)
    groups = param_groups(model, lr=cfg.lr, head_lr=cfg.head_lr, weight_decay=cfg.weight_decay)
    if cfg.strategy == "lora":  # the trainable set never changes; ZeRO-1/2 refuse a group with nothing to train
        groups = [g for g in groups if any(p.requires_grad for p in g["params"])]
    engine, optimizer = ds.build_engine(model, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay,
                                        ds_config=ds_config, groups=groups)
    weights = {t: torch.tensor(class_weights(ts.data["train"][t]["targets"], len(labels[t])), device=engine.device)
               for t in classes} if cfg.class_weights == "balanced" else {}
    say(f"{NAME}: {n_params / 1e6:.2f}M params, tasks {ts.kinds}, strategy {cfg.strategy}, world_size {world_size}, "
        f"ZeRO-{cfg.zero_stage}, {cfg.precision}, up to {cfg.steps} steps x {cfg.batch_size * cfg.grad_accum} "
        "examples per rank")

    def loss_fn(module: Any, task: str, x: Any, mask: Any, y: Any) -> tuple[Any, tuple[float, ...]]:
        # a packed batch's second tensor is its position ids (TaskBatches.packed)
        out = module(input_ids=x, attention_mask=mask, task=task) if task not in batches.packed else \
            module(input_ids=x, attention_mask=None, task=task, position_ids=mask)
        return task_type(ts.kinds[task]).loss(out, y, weight=weights.get(task)), ()

    # DeepSpeed fills a missing gradient of a trainable parameter with zeros, so AdamW would keep moving an idle
    # head along its old moments; with the plain torch optimizer (ZeRO 0, fp32) the idle heads are switched off
    idle_heads_rest = cfg.zero_stage == 0 and cfg.precision == "fp32"

    def before_step(step: int) -> None:
        if cfg.unfreeze_every is not None:
            apply_trainable(engine.module, parts_at(step))
        if idle_heads_rest:  # the heads of the tasks not drawn now get no gradient: no moment, no decay
            for t, head in engine.module.heads.items():
                head.requires_grad_(t == batches.task(step))

    # resume, then the loop
    ckpt_dir = Path(cfg.checkpoint_dir)
    evaluator = new_evaluator(cfg, ts, is_main=is_main, checkpoint_dir=ckpt_dir, record_lr_scale=True)
    sink = evaluator.sink
    progress = resume(engine, evaluator, checkpoint_dir=ckpt_dir, name=NAME, say=say)
    if is_main:
        checkpoint.record_identity(checkpoint_dir=ckpt_dir, identity=checkpoint.identity(cfg, RUN_IDENTITY))
    batches = TaskBatches(ts.data["train"], kinds=ts.kinds, weights=ts.weights, batch_size=cfg.batch_size,
                          seed=cfg.seed, pad_id=ts.pad_id, balanced=cfg.sampling == "balanced", rank=rank,
                          world_size=world_size, packing=cfg.packing)
    if is_main and progress.resumed_from is None and shift:
        sink.log({f"shift_{k}_{t}": v for t, e in shift["tasks"].items() for k, v in e.items()
                  if k in ("byte_token_rate", "perplexity_ratio", "js_divergence") and v is not None}, 0)
    progress = fit(engine, optimizer, cfg=cfg, progress=progress, batches=batches, evaluator=evaluator,
                   loss_fn=loss_fn, parts=("train_loss",), checkpoint_dir=ckpt_dir, say=say, name=NAME,
                   world_size=world_size, is_main=is_main, before_step=before_step)
    apply_trainable(engine.module, parts_at(progress.step))  # every head trainable again (for the count below)

    # export the best evaluation's weights, with test metrics of the exported files
    stopper, history, best_state = evaluator.stopper, evaluator.history, evaluator.best_state
    summary = {"val_score": VAL_SCORE, "best_step": stopper.best_step, "best_val_score": stopper.best,
               "steps_run": progress.step, "stopped_early": progress.stopped_early, "params": n_params,
               "trainable_params": count_params(engine.module, trainable_only=True), "strategy": cfg.strategy,
               "world_size": world_size, "precision": cfg.precision, "tasks": {}, "history": history, "shift": shift,
               "base_checkpoint": cfg.base_checkpoint}
    if is_main:
        dtype = "bfloat16" if cfg.precision == "bf16" else "float32"
        with atomic_dir(Path(cfg.out_dir)) as tmp:
            if cfg.strategy == "lora":
                merged = merged_backbone(base_model_dir=cfg.base_model_dir, state=best_state, rank=cfg.lora.rank,
                                         alpha=cfg.lora.alpha, dropout=cfg.lora.dropout, causal=causal,
                                         target_modules=cfg.lora.target_modules, dtype="float32",
                                         adapter_dir=tmp / "adapter")
            else:
                merged = load_backbone(cfg.base_model_dir, causal=causal)
                merged.load_state_dict(backbone_state(best_state), strict=True)
            merged.config.pad_token_id = ts.pad_id
            final = build_multitask(merged, heads=ts.head_sizes, types=ts.kinds, dropout=0.0, pad_token_id=ts.pad_id)
            final.heads.load_state_dict({k[len("heads."):]: v for k, v in best_state.items()
                                         if k.startswith("heads.")}, strict=True)
            export.save_task_models(tmp, module=final, labels={t: labels.get(t) for t in ts.head_sizes},
                                    sft_tasks=[t for t in names if task_type(ts.kinds[t]).generative],
                                    tokenizer=tokenizer, dtype=dtype, extras=ts.config_extras(),
                                    chat_template=chat_templates(ts.kinds, tokenizer=tokenizer,
                                                                 default=CHAT_TEMPLATE))
            for t in names:
                test = exported_test_metrics(tmp / t, ts.data["test"][t], kind=ts.kinds[t], labels=labels.get(t),
                                             batch_size=cfg.batch_size, samples=SAMPLE_PROMPTS,
                                             max_new_tokens=cfg.sample_max_new_tokens)
                summary["tasks"][t] = {"type": ts.kinds[t], "labels": labels.get(t),
                                       "best_val": evaluator.best["tasks"][t], "final_val": history[-1]["tasks"][t],
                                       "test": test, "dropped_too_long": {s: ts.data[s][t]["dropped"]
                                                                          for s in ts.data}}
            (tmp / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        with atomic_path(Path(cfg.plots_dir) / CURVES_FILE) as png:
            learning_curves(history, kinds=ts.kinds, path=png)
        checkpoint.write_run_stats(checkpoint_dir=ckpt_dir, stats=progress.stats)
        log_outcome(sink, summary, progress, tests={t: e["test"] for t, e in summary["tasks"].items()})
        say(f"{NAME}: exported best step {stopper.best_step} (val_score {stopper.best:.4f}) to {cfg.out_dir}"
            + (" after an early stop" if progress.stopped_early else ""))
    torch.distributed.barrier()
    return {**summary, **progress.stats}


def main(argv: list[str] | None = None) -> int:
    """Command line: ``--config run.json``; returns the exit code."""
    from tasks.examples import ExamplesError
    from tasks.training.engine import recipe_main

    # gradual unfreezing needs fp32 (DeepSpeed's bf16 optimizer fixes the trainable set): auto picks fp32 for it
    return recipe_main(NAME, __doc__, FinetuneConfig, preflight, train, argv,
                       user_errors=(ExamplesError, TokenFileError),
                       fp32_when=lambda cfg: cfg.unfreeze_every is not None)


if __name__ == "__main__":
    sys.exit(main())
