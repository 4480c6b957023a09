"""The task types' data and checks for the `lmforge run` tests (tests/e2e/test_task_types*.py, test_chat_run.py): a
CoNLL-2003-style NER file, a chat jsonl, the SQuAD task (data from tests/assets/squad.py), and what a finished run of
each type must show, whatever model or task mix it ran with: the data step's counts, the exported model of the
architecture, the student, the evaluation's scores beside the type's baseline, and the registered model's pyfunc.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import yaml

PEOPLE = ["Anna Berg", "Tom", "Maria Lopez", "Ken", "Lina Holm", "Omar"]
PLACES = ["Paris", "New York", "Oslo", "Cairo", "Lima"]
ORGS = ["Acme", "Globex Bank", "Initech"]
TEMPLATES = ["{PER} visited {LOC} .", "yesterday {PER} met {PER} in {LOC} .", "{ORG} opened an office in {LOC} .",
             "the cat of {PER} sat on the mat .", "{PER} works for {ORG} in {LOC} ."]
ANIMALS = ("cat", "dog", "bird")
ANIMAL_PLACES = {"cat": "sat on the mat.", "dog": "ran under the log.", "bird": "flew over the tree."}

NER = {"name": "ner", "type": "token_classification", "data": [{"kind": "files", "paths": ["taskdata/ner.conll"]}]}
QA = {"name": "squad", "type": "extractive_qa", "data": [{"kind": "files", "paths": ["qa/*.json"], "format": "squad"}],
      "extractive_qa": {"unanswerable": True, "doc_stride": 32, "max_answer_length": 8}}
CHAT = {"name": "chat", "type": "chat", "data": [{"kind": "files", "paths": ["taskdata/chat.jsonl"]}]}


def conll(n: int, seed: int) -> tuple[str, list[str]]:
    """``n`` sentences as CoNLL-2003 writes them (``word POS chunk NER``, IOB1: an entity opens with ``I-``, ``B-``
    only right after an entity of the same type), between ``-DOCSTART-`` lines; and their texts."""
    rng = random.Random(seed)
    lines, texts = ["-DOCSTART- -X- -X- O", ""], []
    for i in range(n):
        words, tags = [], []
        for part in rng.choice(TEMPLATES).split():
            kind = part.strip("{}") if part.startswith("{") else None
            name = rng.choice({"PER": PEOPLE, "LOC": PLACES, "ORG": ORGS}[kind]).split() if kind else [part]
            first = "B" if kind and tags and tags[-1].endswith(f"-{kind}") else "I"
            words += name
            tags += [f"{first}-{kind}"] + [f"I-{kind}"] * (len(name) - 1) if kind else ["O"]
        lines += [f"{w} NN I-NP {t}" for w, t in zip(words, tags, strict=True)] + [""]
        texts.append(" ".join(words))
        if i % 40 == 39:
            lines += ["-DOCSTART- -X- -X- O", ""]
    return "\n".join(lines) + "\n", texts


def write_ner(repo: Path, n: int = 300) -> list[str]:
    """taskdata/ner.conll: :func:`conll` plus a tagless line and a bad tag to quarantine; returns the sentences."""
    text, sentences = conll(n, 0)
    (repo / "taskdata").mkdir(exist_ok=True)
    (repo / "taskdata/ner.conll").write_text(text + "lonely_token\n\nodd NN I-NP PERSON\n", encoding="utf-8")
    return sentences


def conversations(n: int, seed: int, *, long: int = 0) -> list[dict[str, object]]:
    """1-3 exchanges each, ``long`` more of 30 exchanges (over 300 tokens, beyond the tests' max_length: cut at a turn
    boundary), plus three bad records."""
    rng = random.Random(seed)
    rows: list[dict[str, object]] = []
    for i in range(n + long):
        turns = [{"role": "system", "content": "answer short"}] if i % 4 == 0 else []
        for _ in range(rng.randint(1, 3) if i < n else 30):
            animal = rng.choice(ANIMALS)
            turns += [{"role": "user", "content": f"the {animal} {i}"},
                      {"role": "assistant", "content": f"the {animal} {ANIMAL_PLACES[animal]}"}]
        rows.append({"messages": turns})
    rows += [{"messages": [{"role": "user", "content": "the cat"}]},  # no_assistant_turn
             {"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]},
             {"messages": "the cat sat"}]
    return rows


def write_chat(repo: Path, rows: list[dict[str, object]]) -> None:
    """taskdata/chat.jsonl."""
    (repo / "taskdata").mkdir(exist_ok=True)
    (repo / "taskdata/chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def set_params(repo: Path, finetune: dict[str, Any], distill: dict[str, Any] | None = None) -> None:
    """Update params.yaml's finetune (and distill) sections."""
    data = yaml.safe_load((repo / "params.yaml").read_text())
    data["finetune"].update(finetune)
    data["distill"].update(distill or {})
    (repo / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def check_ran(res: Any) -> None:
    """`lmforge run` succeeded and ran the stages a task change re-runs."""
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    for stage in ("finetune", "distill", "evaluate"):
        assert f"{stage}: ran" in res.stdout, res.stdout


def use_store(repo: Path) -> Any:
    """Point mlflow at the run's store (tracking and registry); returns a client of it."""
    import mlflow

    store = f"sqlite:///{repo / 'mlruns.db'}"
    mlflow.set_tracking_uri(store)
    mlflow.set_registry_uri(store)
    return mlflow.MlflowClient(tracking_uri=store, registry_uri=store)


def latest_finetuned(repo: Path, name: str) -> Any:
    """This run's fine-tuned version of registered model ``name`` (champion or not) and its pyfunc model."""
    import mlflow

    version = max((v for v in use_store(repo).search_model_versions(f"name='{name}'")
                   if v.tags.get("lmforge.model") == "finetuned"), key=lambda v: int(v.version))
    return version, mlflow.pyfunc.load_model(f"models:/{name}/{version.version}")
