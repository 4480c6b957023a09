"""Every task type in one backbone through the README's `lmforge run`: lmforge's own model fine-tuned at once for the
default classification task (doc_section), NER from a CoNLL-2003-style file (IOB1, `-DOCSTART-` lines, bad lines), an
extractive QA task from a SQuAD 2.0 json (answers to quarantine, unanswerable questions) and a chat task from a
messages jsonl (bad records, conversations too long to fit). One run goes through finetune (chat in packed batches,
the default), distill (a student for every task), evaluate (each type's scores with intervals beside its baseline)
and the registry; each type's checks (tests/e2e/task_checks.py) are those a run of it alone must pass, so a type
that disturbs another in the shared backbone fails here.

On a copy of the session's shared finished run (tests/e2e/conftest.py), so only finetune, distill and evaluate run.
The same types on checkpoints of other architectures: test_task_types_bert.py, test_chat_run.py.
"""

from __future__ import annotations

import json

import pytest
import yaml

from tests.assets.squad import write_squad
from tests.conftest import run_cli
from tests.e2e.conftest import FinishedRun
from tests.e2e.task_checks import check_chat, check_ner, check_qa
from tests.e2e.task_types import CHAT, NER, QA, check_ran, conversations, set_params, write_chat, write_ner

pytestmark = pytest.mark.slow


@pytest.mark.timeout(2400)
def test_classification_ner_qa_and_chat_train_in_one_backbone_of_lmforge_own_model(
        finished_run: FinishedRun) -> None:
    from tasks.modeling.chat import LMFORGE_CHAT_TEMPLATE

    repo = finished_run.repo
    write_ner(repo)
    write_squad(repo / "qa" / "train.json", 60, unanswerable=True, bad=True)
    write_chat(repo, conversations(60, 0, long=2))
    tasks = yaml.safe_load((repo / "params.yaml").read_text())["finetune"].get("tasks") or [
        {"name": "doc_section", "type": "classification", "data": [{"kind": "default"}]}]
    classification = [t for t in tasks if t["type"] == "classification"]
    # the shared run's max_length (256: at 128 most doc_section passages would be quarantined as too long) and its
    # 80 steps, now shared by four tasks
    set_params(repo, {"tasks": [*classification, NER, QA, CHAT]})
    res = run_cli(repo, "run", timeout=1800, PREFECT_API_URL="")
    check_ran(res)

    manifest = json.loads((repo / "data/finetune/manifest.json").read_text())["tasks"]
    assert {n: t["type"] for n, t in manifest.items()} == {
        **{t["name"]: "classification" for t in classification}, "ner": "token_classification",
        "squad": "extractive_qa", "chat": "chat"}
    check_ner(repo, architecture="Llama")
    check_qa(repo, architecture="Llama")
    check_chat(repo, rows=62, architecture="Llama", template=LMFORGE_CHAT_TEMPLATE)
    metrics = json.loads((repo / "metrics/evaluate.json").read_text())
    for t in classification:  # the classification task trained beside the new types
        assert 0.0 <= metrics[f"finetuned.{t['name']}.test.macro_f1"] <= 1.0
        assert f"student.{t['name']}.test.macro_f1" in metrics
