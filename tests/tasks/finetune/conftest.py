"""Fixtures of the finetune data-step tests: a tiny byte-level BPE trained here, and a runner of the entry point."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

WORDS = ("the cat sat on a mat and the dog ran to the park while birds sang in tall green trees over quiet "
         "water near old stone walls").split()


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A byte-level BPE of 300 tokens with the tokenizer stage's special tokens, trained on a few sentences."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|bos|>", "<|eos|>", "<|pad|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))], trainer)
    out = tmp_path_factory.mktemp("tokenizer")
    tok.save(str(out / "tokenizer.json"))
    return out


def task(name: str = "t", type: str = "classification", data: list[dict[str, Any]] | None = None,
         **overrides: Any) -> dict[str, Any]:
    """A task dict as the flow hands it over: validated by the params schema, then ``model_dump()``."""
    from pipelines.config.finetune import TaskParams

    data = data if data is not None else [{"kind": "files", "paths": ["data.jsonl"]}]
    return TaskParams(name=name, type=type, data=data, **overrides).model_dump()


def run(tmp_path: Path, tasks: list[dict[str, Any]], tokenizer_dir: Path, **kwargs: Any) -> dict[str, Any]:
    """``prepare_tasks`` with ``tmp_path`` as the repository and ``tmp_path/out`` as the output."""
    from tasks.finetune.prepare import prepare_tasks

    kwargs.setdefault("max_length", 256)
    kwargs.setdefault("dedup_dir", tmp_path / "dedup")
    return prepare_tasks(tasks=tasks, tokenizer_dir=tokenizer_dir, base_dir=tmp_path, out_dir=tmp_path / "out",
                         **kwargs)


def rows(tmp_path: Path, task_name: str, split: str) -> list[dict[str, Any]]:
    """The rows written for one task's split (or quarantine)."""
    path = tmp_path / "out" / task_name / f"{split}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def labelled(n_per_class: dict[str, int]) -> list[dict[str, Any]]:
    """Distinct classification records: n per label, texts made of words so the tokenizer measures them."""
    return [{"text": f"{label} example {i} " + " ".join(WORDS[i % 7: i % 7 + 5]), "label": label}
            for label, n in n_per_class.items() for i in range(n)]


def write_jsonl(path: Path, records: list[Any]) -> Path:
    """JSON lines written with the json module (one object per line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path
