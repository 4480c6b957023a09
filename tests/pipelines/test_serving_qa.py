"""The pyfunc of an extractive QA model (``pipelines/serving_model.py``, saved and loaded by MLflow as models from
code): question and context in, the answer's text, offsets and score out, the same answers as the evaluate stage's
decoding of the exported model, with the task's settings read from the model's config."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REPO

CONTEXT = "the cat sat on the mat . the dog ran to the log . a bird flew over the tree . " * 2
QUESTIONS = ["who sat on the mat ?", "what flew ?", "where did the dog run ?"]
SETTINGS = {"doc_stride": 6, "max_answer_length": 5, "max_seq_len": 24}


@pytest.fixture(scope="module", params=[False, True], ids=["squad1", "squad2"])
def qa_model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bool]:
    """A tiny BERT QA model (random head, seeded) with the task's settings in its config, as an export has them."""
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from tests.assets.checkpoints import save_checkpoint

    out = save_checkpoint("bert", tmp_path_factory.mktemp("bert"))
    torch.manual_seed(1)
    model = AutoModelForQuestionAnswering.from_pretrained(str(out))
    model.config.task_specific_params = {"question-answering": {**SETTINGS,
                                                                "handle_impossible_answer": request.param}}
    model.save_pretrained(str(out / "qa"))
    AutoTokenizer.from_pretrained(str(out)).save_pretrained(str(out / "qa"))
    return out / "qa", request.param


def test_the_pyfunc_answers_as_the_evaluate_stage_decodes(qa_model: tuple[Path, bool], tmp_path: Path) -> None:
    import mlflow
    import pandas as pd

    from tasks.evaluate.extractive_qa import predict_answers

    model_dir, unanswerable = qa_model
    mlflow.pyfunc.save_model(str(tmp_path / "pyfunc"), python_model=str(REPO / "pipelines/serving_model.py"),
                             artifacts={"model": str(model_dir)}, pip_requirements=["mlflow"])  # no inference
    loaded = mlflow.pyfunc.load_model(str(tmp_path / "pyfunc"))
    out = loaded.predict(pd.DataFrame({"question": QUESTIONS, "context": [CONTEXT] * 3}))
    assert list(out.columns) == ["answer", "start", "end", "score"]
    expected = predict_answers(model_dir=model_dir, questions=QUESTIONS, contexts=[CONTEXT] * 3,
                               doc_stride=SETTINGS["doc_stride"], max_answer_length=SETTINGS["max_answer_length"],
                               allow_null=unanswerable, max_length=SETTINGS["max_seq_len"])
    assert list(out["answer"]) == [a["text"] for a in expected]
    assert out["score"].tolist() == pytest.approx([a["score"] for a in expected], abs=1e-4)
    for row, a in zip(out.itertuples(), expected, strict=True):
        if a["start"] is None:
            assert pd.isna(row.start) and row.answer == ""
        else:
            assert (row.start, row.end) == (a["start"], a["end"]) and CONTEXT[row.start:row.end] == row.answer
