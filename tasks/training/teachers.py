"""What the distill (KD) and compress recipes share: their run config and its checks, the data they train and measure
on, the teachers with the KD loss of a student's micro-batch (live or from a cache), and the student's shape.

``teacher: finetuned`` distils one fine-tuned model per task over the task data; ``teacher: base`` distils the
pretrained LM over the packed tokens, as one LM task ``lm`` whose examples are ``max_length``-token windows with every
position a target.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pydantic import Field

from tasks.modeling import checkpoint
from tasks.modeling.encoding import check_tasks
from tasks.modeling.errors import ConfigError
from tasks.modeling.source import HEAD_MAPPINGS
from tasks.modeling.tasktypes import task_type
from tasks.tokens import TokenFileError, read_manifest
from tasks.training.blocks import TaskPaths
from tasks.training.config import DistillSettings

LM_TASK = "lm"
"""``teacher: base``: the one task, plain causal-LM distillation over windows of the packed tokens."""
CACHE_DIR = "teacher_cache"
# what the weights, optimizer state, data order and stopping depend on; logging, checkpoint cadence, variants and
# paths may change freely between a run and its resumption
RUN_IDENTITY = ("teacher", "student", "temperature", "alpha", "cache_teacher", "cache_top_k", "seed", "batch_size",
                "grad_accum", "max_length", "lr", "head_lr", "min_lr_ratio", "schedule", "warmup_steps",
                "plateau_factor", "plateau_patience", "weight_decay", "betas", "grad_clip", "dropout",
                "early_stopping", "eval_every", "eval_max_examples", "zero_stage", "precision")


class DistillConfig(DistillSettings, TaskPaths):
    """Every setting of one distillation run: the shared settings plus the paths the flow fills in."""

    examples_dir: Path | None = Field(None, description="teacher finetuned: task data, manifest.json and "
                                      "<task>/{train,val,test}.jsonl (tasks.examples).")
    teacher_dir: Path = Field(description="finetuned: one Hugging Face model directory per task (models/finetuned), "
                              "of any architecture the finetune stage trains; base: the pretrained causal LM "
                              "(models/base).")
    tokens_dir: Path | None = Field(None, description="teacher base: the packed tokens (tasks.tokens).")
    student_dir: Path | None = Field(None, description="compress: the distilled student (the KD recipe's out_dir) "
                                     "whose variants are made.")


def read_model_config(model_dir: Path, *, what: str) -> dict[str, Any]:
    """A model's ``config.json``; ConfigError naming the stage to run when it is missing."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise ConfigError(f"no config.json in {model_dir}: {what}")
    config: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return config


def _finetuned_teachers(cfg: DistillConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    from transformers.models.auto import modeling_auto as auto

    if cfg.examples_dir is None:
        raise ConfigError("teacher finetuned needs examples_dir (the finetune stage's task data)")
    tasks, teachers = check_tasks(cfg.examples_dir), {}
    for name, task in tasks.items():
        conf = read_model_config(Path(cfg.teacher_dir) / name, what=f"run the finetune stage (task {name!r})")
        arch, model_type = (conf.get("architectures") or ["?"])[0], str(conf.get("model_type"))
        kind = task_type(task["type"])
        mapping = getattr(auto, HEAD_MAPPINGS[kind.head_class])
        want = mapping.get(model_type, f"a {task['type']} model")
        if arch != want:
            raise ConfigError(f"teacher {Path(cfg.teacher_dir) / name} is a {arch}, task {name!r} ({task['type']}) "
                              f"needs a {want}: re-run the finetune stage on the same task data")
        if kind.labelled:
            id2label = [conf.get("id2label", {}).get(str(i)) for i in range(len(task["labels"]))]
            if id2label != list(task["labels"]):
                raise ConfigError(f"teacher {name!r} has labels {id2label}, the task data {task['labels']}: "
                                  "re-run the finetune stage on the same task data")
        teachers[name] = conf
    # one student backbone serves every task: the teachers must be one architecture over one vocabulary
    kinds = {(c.get("model_type"), c.get("vocab_size")) for c in teachers.values()}
    if len(kinds) > 1:
        raise ConfigError(f"the teachers in {cfg.teacher_dir} are of different architectures or vocabularies "
                          f"({sorted(map(str, kinds))}): re-run the finetune stage (its tasks share one backbone)")
    return tasks, teachers


def _base_teacher(cfg: DistillConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    from tasks.modeling.source import is_decoder

    conf = read_model_config(cfg.teacher_dir, what="run the pretrain stage (teacher: base)")
    if not is_decoder(conf):
        raise ConfigError(f"teacher base: {cfg.teacher_dir} is a {conf.get('model_type')} encoder, which cannot be "
                          "distilled as a language model: give a causal LM (or use teacher: finetuned)")
    if cfg.tokens_dir is None:
        raise ConfigError("teacher base needs tokens_dir (the tokenizer stage's packed tokens)")
    manifest = read_manifest(cfg.tokens_dir)
    if not {"train", "val"} <= set(manifest["splits"]):
        raise TokenFileError(f"{cfg.tokens_dir} lacks a train or val split: re-run the tokenizer stage")
    for split in ("train", "val"):
        if int(manifest["splits"][split]["tokens"]) < cfg.max_length:
            raise TokenFileError(f"{cfg.tokens_dir} split {split} holds fewer than max_length {cfg.max_length} "
                                 "tokens: lower max_length or give the tokenizer stage more text")
    return {LM_TASK: {"type": "sft", "labels": None, "weight": 1.0}}, {LM_TASK: conf}


def preflight(cfg: DistillConfig, *, resume: bool = True) -> dict[str, Any]:
    """Check what can be checked without torch: tasks and rows (or tokens), teacher configs, student shape,
    tokenizer, and (``resume``: the KD recipe) that the checkpoint directory holds a run of the same settings.

    Returns:
        ``{"tasks": {task: manifest entry}, "teachers": {task: the teacher's config.json}, "configs": {task: its
        transformers config}}``.

    Raises:
        ConfigError, ExamplesError, TokenFileError.
    """
    from transformers import AutoConfig

    from tasks.training.student import student_config

    tasks, teachers = _finetuned_teachers(cfg) if cfg.teacher == "finetuned" else _base_teacher(cfg)
    configs = {name: AutoConfig.from_pretrained(str(d)) for name, d in teacher_dirs(cfg, sorted(teachers)).items()}
    for name, conf in configs.items():  # through the config classes: GPT-2's n_positions, n_layer...
        positions = int(getattr(conf, "max_position_embeddings", 0) or 0)
        if positions and cfg.max_length > positions:
            raise ConfigError(f"max_length {cfg.max_length} exceeds teacher {name!r}'s max_position_embeddings "
                              f"{positions}: lower max_length")
        depth = int(conf.num_hidden_layers)
        if cfg.student.layers is not None and max(cfg.student.layers) >= depth:
            raise ConfigError(f"student.layers {cfg.student.layers} names a layer the teacher lacks (it has {depth})")
    student = student_config(configs[source_task({"tasks": tasks})], **shape_of(cfg))
    if student.model_type == "llama" and (student.hidden_size // student.num_attention_heads) % 2:
        raise ConfigError("student head size hidden_size/num_heads is odd: rotary embeddings need an even one; "
                          "change student.hidden_size or student.num_heads")
    cfg.check_paths()
    recovering = [v for v in ("magnitude", "structured") if getattr(cfg.variants, v).enabled
                  and getattr(cfg.variants, v).recovery_steps]
    if cfg.zero_stage == 3 and recovering:
        raise ConfigError(f"variants {recovering} train in place, which ZeRO-3's partitioned weights do not allow: "
                          "use zero_stage 0-2 or set their recovery_steps to 0")
    if resume:
        checkpoint.check_resume(checkpoint_dir=cfg.checkpoint_dir, identity=checkpoint.identity(cfg, RUN_IDENTITY),
                                name="distill")
    return {"tasks": tasks, "teachers": teachers, "configs": configs}


def lm_windows(tokens_dir: Path, split: str, *, width: int) -> dict[str, Any]:
    """``teacher: base``: a split of the packed tokens as consecutive ``width``-token examples in the task-data
    format, every position a target (the sft type's loss then is the next-token loss)."""
    from tasks.tokens import load_tokens

    tokens = load_tokens(tokens_dir, split)
    ids = [tokens[i:i + width].astype("int64").tolist() for i in range(0, len(tokens) - width + 1, width)]
    return {"ids": ids, "targets": ids, "dropped": 0, "rows": []}


def task_set(cfg: DistillConfig, info: dict[str, Any], *, tokenizer: Any) -> Any:
    """Every split the recipes train, evaluate and measure on (a split the tokens lack is served by val)."""
    from tasks.modeling.encoding import TaskSet, special_ids

    if cfg.teacher == "finetuned":
        return TaskSet.from_examples(required(cfg.examples_dir, "examples_dir"), info["tasks"], tokenizer=tokenizer,
                                     max_length=cfg.max_length)
    eos_id, pad_id = special_ids(tokenizer)
    tokens_dir = required(cfg.tokens_dir, "tokens_dir")
    splits = read_manifest(tokens_dir)["splits"]
    data = {split: {LM_TASK: lm_windows(tokens_dir, split if split in splits else "val", width=cfg.max_length)}
            for split in ("train", "val", "test")}
    ts = TaskSet(kinds={LM_TASK: "sft"}, labels={}, weights={LM_TASK: 1.0}, data=data, eos_id=eos_id, pad_id=pad_id)
    ts.check_fits(cfg.max_length)
    return ts


def required(path: Path | None, key: str) -> Path:
    """A path setting the chosen teacher needs (preflight names a missing one first)."""
    if path is None:
        raise ConfigError(f"{key} is not set: the flow sets it for this teacher; set it in the run config")
    return path


def teacher_dirs(cfg: DistillConfig, names: list[str]) -> dict[str, Path]:
    """Each task's teacher directory."""
    return {t: Path(cfg.teacher_dir) / t if cfg.teacher == "finetuned" else Path(cfg.teacher_dir) for t in names}


def new_student(cfg: DistillConfig, info: dict[str, Any], *, pad_id: int) -> Any:
    """A freshly initialised student backbone (seed torch first): the architecture and config of the teacher whose
    backbone it starts from (``tasks.training.student.student_config``) with the layers and shape of
    ``cfg.student``; the causal LM for a decoder, the bare encoder otherwise."""
    from tasks.modeling.source import is_decoder
    from tasks.training.student import new_backbone, student_config

    source = source_task(info)
    config = student_config(info["configs"][source], **shape_of(cfg), dropout=cfg.dropout,
                            pad_token_id=pad_id)  # pooling finds the last non-pad token by it, in training and export
    return new_backbone(config, causal=is_decoder(info["teachers"][source]))


def shape_of(cfg: DistillConfig) -> dict[str, Any]:
    """``cfg.student``'s shape settings, as :func:`tasks.training.student.student_config` takes them."""
    return cfg.student.model_dump(include={"num_layers", "hidden_size", "num_heads", "num_kv_heads",
                                           "intermediate_size", "mlp_fraction", "layers"})


def source_task(info: dict[str, Any]) -> str:
    """The task whose teacher gives the student its backbone: a causal LM's when there is one."""
    tasks: dict[str, dict[str, Any]] = info["tasks"]
    return next((t for t in sorted(tasks) if task_type(tasks[t]["type"]).generative), sorted(tasks)[0])


class Teachers:
    """The teachers (one per task, float32, eval mode, no gradients, never trained) and the KD loss against them:
    ``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * hard`` (``tasks.training.kd``), the teacher's logits
    live or from an on-disk cache of its training-split logits.

    Args:
        dirs: task -> teacher directory.
        kinds: task -> task type (its auto class loads the teacher; generative types: the causal LM).
        labels: labelled task -> label names.
        alpha, temperature: the KD loss's weight and temperature.
        ds_config: the run's; under ZeRO-3 each teacher loads partitioned into DeepSpeed's inference engine (no
            optimizer; a module's shards are gathered for its forward only): every rank runs the same forwards.
    """

    def __init__(self, dirs: dict[str, Path], *, kinds: dict[str, str], labels: dict[str, list[str]], alpha: float,
                 temperature: float, ds_config: dict[str, Any] | None = None) -> None:
        import torch
        import transformers

        from tasks.modeling.source import partitioned

        self.dirs, self.labels, self.alpha, self.temperature = dirs, labels, alpha, temperature
        self.kinds = {t: task_type(kinds[t]) for t in dirs}
        with partitioned(ds_config) as sharded:
            self.models = {t: getattr(transformers, self.kinds[t].head_class or "AutoModelForCausalLM")
                           .from_pretrained(str(d), dtype=torch.float32).eval().requires_grad_(False)
                           for t, d in sorted(dirs.items())}
        if sharded and ds_config is not None:  # kept alive: their hooks on the models fetch the shards
            import deepspeed

            fp32 = {**ds_config, "bf16": {"enabled": False}}  # the teachers stay float32 whatever the student's
            self.engines = [deepspeed.initialize(model=m, config=fp32)[0] for _, m in sorted(self.models.items())]
        self.caches: dict[str, Any] = {}
        self.packed: set[str] = set()  # tasks whose batches come packed: (input_ids, position_ids, targets)

    def to(self, device: Any) -> Teachers:
        """Move every teacher to ``device``."""
        for m in self.models.values():
            m.to(device)
        self.device = device
        return self

    def build_cache(self, data: dict[str, Any], *, batches: Any, top_k: int, batch_size: int, pad_id: int,
                    cache_dir: Path, probe_steps: int, is_main: bool) -> dict[str, Any]:
        """Each teacher once over its training split (``data``: task -> encoded), kept in ``cache_dir`` and reused
        while the teacher's weights are the same; then the teacher work of ``probe_steps`` steps timed live and from
        the cache. Returns what the summary and run stats say of it."""
        from tasks.training import kd

        t0, reused, uncached = time.perf_counter(), [], []
        for t, model in self.models.items():
            kind = "sft" if self.kinds[t].generative else self.kinds[t].name
            if kind not in kd.CACHED:  # per-token and span heads: the teacher runs live
                uncached.append(t)
                continue
            path, digest = Path(cache_dir) / f"{t}.pt", kd.file_digest(self.dirs[t])
            cache = kd.TeacherCache.load(path, kind=kind, top_k=top_k, digest=digest)
            if cache is None:
                cache = kd.TeacherCache(kind=kind, top_k=top_k)
                cache.build(model, data[t], batch_size=batch_size, pad_id=pad_id, device=self.device)
                if is_main:
                    cache.save(path, digest=digest)
            else:
                reused.append(t)
            self.caches[t] = cache
        build_seconds = time.perf_counter() - t0
        info = {"enabled": True, "top_k": top_k, "reused": reused, "live": uncached,
                "build_seconds": round(build_seconds, 3), "bytes": {t: c.nbytes() for t, c in self.caches.items()},
                "probe_steps": probe_steps}
        if not probe_steps:
            return info
        live = cached = 0.0
        for s in range(probe_steps):  # the saving: the same steps' teacher work live and from the cache
            task, (x, mask, _) = batches.batch(s, 0)
            t0 = time.perf_counter()
            kd.teacher_forward(self.models[task], x.to(self.device), mask.to(self.device), self.kinds[task].logits)
            t1 = time.perf_counter()
            if task in self.caches:
                self.caches[task].lookup(x, mask)
            live, cached = live + t1 - t0, cached + time.perf_counter() - t1
        return {**info, "live_teacher_seconds": round(live, 4), "cached_teacher_seconds": round(cached, 4),
                "saving_seconds_per_step": round((live - cached) / probe_steps, 5),
                "break_even_steps": (round(build_seconds / ((live - cached) / probe_steps)) if live > cached
                                     else None)}

    def loss(self, module: Any, task: str, x: Any, mask: Any, y: Any) -> tuple[Any, tuple[float, float]]:
        """The KD loss of one micro-batch of the student ``module``; returns (loss, (hard part, soft part)); the
        soft part is 0.0 with alpha 0 (no teacher work at all)."""
        from tasks.training import kd

        kind = self.kinds[task]
        packed = task in self.packed  # then `mask` holds the position ids, student and teacher run on the same rows
        out = module(input_ids=x, attention_mask=None, task=task, position_ids=mask) if packed else \
            module(input_ids=x, attention_mask=mask, task=task)
        hard = kind.loss(out, y)
        if self.alpha == 0:
            return hard, (float(hard.detach()), 0.0)
        cache, teacher = self.caches.get(task), self.models[task]
        if kind.generative:
            rows, positions = kd.target_positions(out, y)
            if cache:
                values, indices = cache.lookup(x, mask)
                soft = kd.topk_kd_loss(rows, values.to(x.device), indices.to(x.device), temperature=self.temperature)
            else:
                teacher_rows = kd.teacher_forward(teacher, x, None, position_ids=mask)[:, :-1][positions] if packed \
                    else kd.teacher_forward(teacher, x, mask)[:, :-1][positions]
                soft = kd.kd_loss(rows, teacher_rows, temperature=self.temperature)
        else:  # a head: the rows its type matches (a classifier's logits; a tagger's labelled tokens...)
            target = cache.lookup(x, mask).to(x.device) if cache else \
                kind.kd_rows(kd.teacher_forward(teacher, x, mask, kind.logits), y, mask)
            soft = kd.kd_loss(kind.kd_rows(out, y, mask), target, temperature=self.temperature)
        return self.alpha * soft + (1 - self.alpha) * hard, (float(hard.detach()), float(soft.detach()))
