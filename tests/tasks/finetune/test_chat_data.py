"""The data step on chat tasks written by other tools: ShareGPT's `conversations` (from/value turns) mapped with
`fields.messages`, beside the messages shape, each bad conversation quarantined with its reason."""

from __future__ import annotations

import json
from pathlib import Path

from tests.tasks.finetune.conftest import WORDS, rows, run, task


def test_sharegpt_conversations_become_messages_rows(tmp_path: Path, tokenizer_dir: Path) -> None:
    records = [{"id": i, "conversations": [{"from": "human", "value": f"{WORDS[i % len(WORDS)]} {i}?"},
                                           {"from": "gpt", "value": f"{WORDS[(i + 1) % len(WORDS)]} {i}."}]}
               for i in range(20)]
    records.append({"id": 99, "conversations": [{"from": "tool", "value": "x"}, {"from": "gpt", "value": "y"}]})
    (tmp_path / "sharegpt.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    chat = task("c", "chat", [{"kind": "files", "paths": ["sharegpt.jsonl"], "fields": {"messages": "conversations"}}])
    counters = run(tmp_path, [chat], tokenizer_dir)
    assert counters["c.kept"] == 20 and counters["c.quarantined.unknown_role"] == 1
    kept = [r for s in ("train", "val", "test") for r in rows(tmp_path, "c", s)]
    assert all([m["role"] for m in r["messages"]] == ["user", "assistant"] for r in kept)
    assert {r["messages"][0]["content"] for r in kept} == {f"{WORDS[i % len(WORDS)]} {i}?" for i in range(20)}
