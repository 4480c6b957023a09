"""Tiny distillation inputs: fine-tuned-style teachers (one Hugging Face directory per task, written by
``export.save_task_models`` from the finetune fixtures' tiny Llama or a tiny BERT/GPT-2 checkpoint), the run configs
of the distill (KD) and compress recipes, and the two recipes run one after the other as the distill stage runs
them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import REPO
from tests.tasks.training.finetune_fixtures import CLASSES, env


def save_teachers(base_dir: Path, *, tokenizer_dir: Path, out: Path, seed: int = 0, sft: bool = True) -> Path:
    """``out/topic`` (the base's architecture's sequence classifier over CLASSES) and, with ``sft``, ``out/complete``
    (its causal LM), as the finetune stage exports them (``build_multitask`` + ``save_task_models``), from a tiny base
    model of any architecture (a decoder's causal LM, an encoder's bare model)."""
    import torch
    from transformers import AutoTokenizer

    from tasks.examples import CHAT_TEMPLATE
    from tasks.modeling.encoding import special_ids
    from tasks.modeling.export import save_task_models
    from tasks.modeling.heads import build_multitask, load_backbone

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    _, pad_id = special_ids(tokenizer)
    backbone = load_backbone(base_dir)
    backbone.config.pad_token_id = pad_id
    torch.manual_seed(seed)
    head = torch.randn(len(CLASSES), backbone.config.hidden_size) * 0.5
    module = build_multitask(backbone, heads={"topic": len(CLASSES)}, dropout=0.0, pad_token_id=pad_id)
    final = [m for m in module.heads["topic"].modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():  # a confident head, so the KD term has something to teach
        final.weight.copy_(head)
    save_task_models(out, module=module, labels={"topic": sorted(CLASSES)}, sft_tasks=["complete"] if sft else [],
                     tokenizer=tokenizer, dtype="float32", chat_template=CHAT_TEMPLATE)
    return out


def run_config(inputs: dict[str, Path], run: Path, **over: Any) -> Path:
    """A distill run config over the fixtures' inputs (a 1-layer student of the 2-layer teacher), its student
    exported to ``run/student``, and beside it ``compress.json`` (the same settings, ``run/student`` compressed into
    ``run/model``) as the distill stage writes them; returns the KD config's path."""
    cfg = {"examples_dir": str(inputs["examples"]), "teacher_dir": str(inputs["teachers"]),
           "tokenizer_dir": str(inputs["tokenizer"]), "tokens_dir": str(inputs["tokens"]),
           "out_dir": str(run / "student"), "checkpoint_dir": str(run / "ckpt"), "plots_dir": str(run / "plots"),
           "student": {"num_layers": 1, "hidden_size": 32, "num_heads": 4, "intermediate_size": 64},
           "seed": 1, "steps": 16, "batch_size": 8, "max_length": 64, "lr": 3e-3, "head_lr": 1e-2,
           "warmup_steps": 2, "precision": "fp32", "threads": 1, "log_every": 4, "eval_every": 8,
           "checkpoint_every": 8, "early_stopping": {"enabled": False}, "latency_examples": 4, "latency_warmup": 1,
           "variants": {"magnitude": {"recovery_steps": 2}, "structured": {"recovery_steps": 2}}}
    cfg.update(over)
    run.mkdir(parents=True, exist_ok=True)
    (run / "run.json").write_text(json.dumps(cfg))
    (run / "compress.json").write_text(json.dumps({**cfg, "out_dir": str(run / "model"),
                                                   "student_dir": str(run / "student")}))
    return run / "run.json"


def recipe(name: str, config: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python -m tasks.training.NAME --config CONFIG`` in a subprocess."""
    return subprocess.run([sys.executable, "-m", f"tasks.training.{name}", "--config", str(config)], cwd=REPO,
                          env=env(), capture_output=True, text=True, timeout=timeout)


def distill(config: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """The distill stage's two recipes: KD (``config``), then, if it succeeded, compress (``compress.json`` beside
    it); their outputs joined, the exit code the first failure's (or 0)."""
    kd = recipe("distill", config, timeout)
    if kd.returncode != 0:
        return kd
    comp = recipe("compress", config.parent / "compress.json", timeout)
    return subprocess.CompletedProcess(comp.args, comp.returncode, kd.stdout + comp.stdout, kd.stderr + comp.stderr)
