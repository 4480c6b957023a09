"""A chat task through the README's `lmforge run`, on a tiny Llama checkpoint lmforge did not train: a messages jsonl
checked and cut in the data step, fine-tuned in packed batches, distilled, evaluated (assistant-token perplexity,
replies beside the lead baseline), registered, and served by `mlflow.pyfunc.load_model` answering a conversation.

On a copy of the session's shared finished run (tests/e2e/conftest.py), so only finetune, distill and evaluate run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.assets.checkpoints import save_checkpoint
from tests.conftest import run_cli
from tests.e2e.conftest import FinishedRun
from tests.e2e.task_checks import check_chat
from tests.e2e.task_types import CHAT, check_ran, conversations, write_chat

pytestmark = pytest.mark.slow


@pytest.mark.timeout(2400)
def test_a_chat_task_on_a_llama_checkpoint_runs_through_every_stage(finished_run: FinishedRun) -> None:
    repo: Path = finished_run.repo
    env = {"PREFECT_API_URL": ""}
    texts = [json.loads(line)["text"] for f in sorted((repo / "data/dedup/train").glob("*.jsonl"))
             for line in f.read_text().splitlines()][:400]
    chats = conversations(60, 0)
    texts += [m["content"] for r in chats if isinstance(r["messages"], list) for m in r["messages"]]
    save_checkpoint("llama", repo / "hf" / "llama", texts=texts, positions=256)
    write_chat(repo, chats)
    data = yaml.safe_load((repo / "params.yaml").read_text())
    data["finetune"].update(checkpoint={"path": "hf/llama"}, steps=30, eval_every=15, checkpoint_every=15,
                            lr=0.003, max_length=128, tasks=[CHAT])
    data["distill"]["student"] = {}  # the default, relative to the teacher (the shared run sets a Llama shape)
    (repo / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    res = run_cli(repo, "run", timeout=1800, **env)
    check_ran(res)
    check_chat(repo, rows=60, architecture="Llama")
