"""NER and extractive QA together on a tiny BERT checkpoint lmforge did not train (its WordPiece learned from the
tasks' sentences), through the README's `lmforge run`: one encoder with a token-classification head and a
span head, fine-tuned, distilled into a one-layer BERT student, evaluated and registered, each type passing the checks
of tests/e2e/task_checks.py. Beside test_task_types.py (lmforge's own model) so xdist runs the two side by side.

On a copy of the session's shared finished run (tests/e2e/conftest.py), so only finetune, distill and evaluate run.
"""

from __future__ import annotations

import json

import pytest

from tests.assets.checkpoints import save_checkpoint
from tests.assets.squad import squad_dataset, write_squad
from tests.conftest import run_cli
from tests.e2e.conftest import FinishedRun
from tests.e2e.task_checks import check_ner, check_qa
from tests.e2e.task_types import NER, QA, check_ran, set_params, write_ner

pytestmark = pytest.mark.slow


@pytest.mark.timeout(2400)
def test_ner_and_extractive_qa_train_in_one_bert_checkpoint(finished_run: FinishedRun) -> None:
    from transformers import AutoModelForQuestionAnswering

    repo = finished_run.repo
    sentences = write_ner(repo)
    write_squad(repo / "qa" / "train.json", 60, unanswerable=True, bad=True)
    paragraphs = [p for a in squad_dataset(60, unanswerable=True)["data"] for p in a["paragraphs"]]
    texts = sentences + [p["context"] for p in paragraphs] + [q["question"] for p in paragraphs for q in p["qas"]]
    save_checkpoint("bert", repo / "hf" / "bert", texts=texts, positions=128)
    # the student's default shape, relative to the teacher (the shared run sets a Llama shape)
    set_params(repo, {"checkpoint": {"path": "hf/bert"}, "max_length": 128, "tasks": [NER, QA]},
               {"student": {}, "max_length": 128})
    res = run_cli(repo, "run", timeout=1800, PREFECT_API_URL="")
    check_ran(res)

    check_ner(repo, architecture="Bert")
    tags = check_qa(repo, architecture="Bert")  # a CLS null position for the unanswerable questions
    assert "lmforge.digest.base_checkpoint" in tags
    student = json.loads((repo / "models/student/squad/config.json").read_text())
    assert student["num_hidden_layers"] == 1
    assert type(AutoModelForQuestionAnswering.from_pretrained(str(repo / "models/finetuned/squad"))).__name__ == \
        "BertForQuestionAnswering"
