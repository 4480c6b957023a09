"""A chat task (a messages jsonl) through finetune, distill and evaluate over lmforge's own tiny pretrained model:
conversations checked and cut at turn boundaries in the data step, packed training batches, the exported chat model
with its template, assistant-token perplexity and replies beside the lead baseline, a registered champion whose pyfunc
answers a conversation."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

from pipelines.config import load_params
from tests.flows.test_distill import STUDENT
from tests.flows.test_evaluate import SMALL, _fresh_test_split
from tests.flows.test_finetune import TUNE
from tests.flows.test_pretrain import TINY
from tests.tasks.training.corpus import documents, write_split

pytestmark = pytest.mark.slow

ANIMALS = ("cat", "dog", "bird")
PLACES = {"cat": "sat on the mat.", "dog": "ran under the log.", "bird": "flew over the tree."}


def conversations(n: int, seed: int) -> list[dict[str, object]]:
    """1-3 exchanges each (the longest do not fit max_length and are cut), plus three bad records."""
    rng = random.Random(seed)
    rows: list[dict[str, object]] = []
    for i in range(n):
        turns = [{"role": "system", "content": "answer short"}] if i % 4 == 0 else []
        for _ in range(rng.randint(1, 3)):
            animal = rng.choice(ANIMALS)
            turns += [{"role": "user", "content": f"the {animal} {i}"},
                      {"role": "assistant", "content": f"the {animal} {PLACES[animal]}"}]
        rows.append({"messages": turns})
    rows += [{"messages": [{"role": "user", "content": "the cat"}]},  # no_assistant_turn
             {"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]},
             {"messages": "the cat sat"}]
    return rows


def prepare(repo: Path, **finetune: object) -> None:
    for split, (n, seed) in {"train": (400, 0), "val": (40, 1), "test": (40, 2)}.items():
        write_split(repo / "data/dedup" / split, documents(n, seed))
    (repo / "taskdata").mkdir()
    (repo / "taskdata/chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in conversations(90, 0)))
    data = yaml.safe_load((repo / "params.yaml").read_text())
    data["tokenizer"]["vocab_size"] = 300
    data["pretrain"] = {**TINY, "context": 128, "steps": 20}
    data["finetune"] = {**TUNE, "steps": 30, "max_length": 128,
                        "tasks": [{"name": "chat", "type": "chat", "data": [
                            {"kind": "files", "paths": ["taskdata/chat.jsonl"]}]}], **finetune}
    data["distill"] = {**STUDENT, "variants": {}}
    data["evaluate"] = SMALL
    (repo / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def test_a_chat_task_is_fine_tuned_packed_distilled_evaluated_and_served(repo_copy: Path, prefect_api: str) -> None:
    from flows.distill import distill
    from flows.evaluate import evaluate
    from flows.finetune import finetune
    from tests.flows.test_finetune import _base

    prepare(repo_copy)
    _fresh_test_split(repo_copy)
    _base(repo_copy)
    stats = finetune(params=load_params(repo_copy), root=repo_copy)
    manifest = json.loads((repo_copy / "data/finetune/manifest.json").read_text())["tasks"]["chat"]
    assert manifest["type"] == "chat" and manifest["quarantined"] == {
        "no_assistant_turn": 1, "unknown_role": 1, "messages_not_a_list": 1}
    rows = [json.loads(line) for s in ("train", "val", "test")
            for line in (repo_copy / f"data/finetune/chat/{s}.jsonl").read_text().splitlines()]
    assert len(rows) == 90 and any(r["cut_turns"] for r in rows)  # long ones cut after a whole reply
    assert all(r["messages"][-1]["role"] == "assistant" for r in rows)
    assert stats["chat.test.perplexity"] > 1

    from transformers import AutoTokenizer

    from tasks.modeling.chat import LMFORGE_CHAT_TEMPLATE

    assert AutoTokenizer.from_pretrained(repo_copy / "models/finetuned/chat").chat_template == LMFORGE_CHAT_TEMPLATE
    distill(params=load_params(repo_copy), root=repo_copy)
    (repo_copy / "metrics/clean.json").write_text(json.dumps({"funnel.collected.docs": 500, "funnel.kept.docs": 446}))
    metrics = evaluate(params=load_params(repo_copy), root=repo_copy)
    for model in ("finetuned", "student"):
        assert metrics[f"{model}.chat.test.perplexity"] > 1 and 0 <= metrics[f"{model}.chat.test.rougeL"] <= 1
    assert any(k.startswith("lead.chat") for k in metrics), sorted(metrics)
    assert (repo_copy / "reports/evaluate/generations/finetuned.chat.jsonl").is_file()

    import mlflow
    import pandas as pd

    store = f"sqlite:///{repo_copy / 'mlruns.db'}"
    mlflow.set_tracking_uri(store)
    mlflow.set_registry_uri(store)
    model = mlflow.pyfunc.load_model("models:/lmforge-chat@champion")
    out = model.predict(pd.DataFrame({"messages": [[{"role": "user", "content": "the cat 1"}]]}),
                        params={"max_new_tokens": 4})
    assert len(out) == 1 and isinstance(out["text"][0], str)
