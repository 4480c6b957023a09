"""Tiny fine-tuning inputs for the finetune tests: a tiny Llama saved as ``models/base`` with the tests' tokenizer,
and task data written with ``tasks.examples``: a separable two-class task and a short sft task."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import REPO

SHAPE = {"hidden_size": 32, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 64,
         "max_position_embeddings": 96}
CLASSES = {"pets": ("cat", "dog"), "sky": ("bird", "tree")}
SFT_PAIRS = [("the cat", "sat on the mat."), ("the dog", "ran under the log."), ("the bird", "flew over the tree.")]


def save_base_model(tokenizer_dir: Path, out: Path, *, seed: int = 0) -> Path:
    """A random tiny Llama over the tokenizer's vocabulary, saved in Hugging Face format with the tokenizer."""
    import torch
    from transformers import AutoTokenizer

    from tasks.modeling.llama import build_llama

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    torch.manual_seed(seed)
    model = build_llama(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **SHAPE)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


def classification_rows(n: int, seed: int) -> list[dict[str, Any]]:
    """Sentences about pets or the sky: the label follows from the nouns (a separable task)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = rng.choice(sorted(CLASSES))
        noun = rng.choice(CLASSES[label])
        verb, place = rng.choice(("sat", "ran", "flew")), rng.choice(("mat", "log", "home"))
        rows.append({"id": f"c{seed}-{i}", "text": f"the {noun} {verb} on the {place}.", "label": label})
    return rows


def sft_rows(n: int, seed: int) -> list[dict[str, Any]]:
    """Prompt -> response pairs from a fixed small set."""
    rng = random.Random(seed)
    return [{"id": f"s{seed}-{i}", "prompt": p, "response": r} for i, (p, r) in
            enumerate(rng.choice(SFT_PAIRS) for _ in range(n))]


def write_examples(root: Path, *, tasks: tuple[str, ...] = ("topic", "complete"), n_train: int = 48,
                   n_eval: int = 16) -> Path:
    """Task data in the finetune stage's format (``tasks.examples``)."""
    from tasks.examples import write_manifest, write_rows

    manifest = {}
    for name in tasks:
        kind = "classification" if name == "topic" else "sft"
        make = classification_rows if kind == "classification" else sft_rows
        splits = {"train": make(n_train, 1), "val": make(n_eval, 2), "test": make(n_eval, 3)}
        for split, rows in splits.items():
            write_rows(root / name / f"{split}.jsonl", rows)
        entry = {"type": kind, "weight": 1.0, "labels": sorted(CLASSES) if kind == "classification" else None,
                 "splits": {s: len(r) for s, r in splits.items()}, "quarantined": {}, "augmented": 0,
                 "label_counts": ({s: {k: sum(r["label"] == k for r in rows) for k in CLASSES}
                                   for s, rows in splits.items()} if kind == "classification" else None)}
        manifest[name] = entry
    write_manifest(root, manifest)
    return root


def run_config(inputs: dict[str, Path], run: Path, **over: Any) -> Path:
    """A run config over the fixtures' inputs; returns its path."""
    cfg = {"examples_dir": str(inputs["examples"]), "base_model_dir": str(inputs["base"]),
           "tokenizer_dir": str(inputs["tokenizer"]), "tokens_dir": str(inputs["tokens"]),
           "out_dir": str(run / "model"), "checkpoint_dir": str(run / "ckpt"), "plots_dir": str(run / "plots"),
           "seed": 1, "steps": 24, "batch_size": 8, "max_length": 64, "lr": 3e-3, "head_lr": 1e-2,
           "warmup_steps": 2, "precision": "fp32", "threads": 1, "log_every": 4, "eval_every": 8,
           "checkpoint_every": 8, "dropout": 0.0, "sample_max_new_tokens": 6,
           "early_stopping": {"enabled": False}}
    cfg.update(over)
    run.mkdir(parents=True, exist_ok=True)
    (run / "run.json").write_text(json.dumps(cfg))
    return run / "run.json"


def env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT",
                                                            "LMFORGE_LAUNCH_TIME", "MLFLOW_RUN_ID")}
    return {**out, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def finetune(config: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """``python -m tasks.training.finetune --config CONFIG`` in a subprocess."""
    return subprocess.run([sys.executable, "-m", "tasks.training.finetune", "--config", str(config)], cwd=REPO,
                          env=env(), capture_output=True, text=True, timeout=timeout)
