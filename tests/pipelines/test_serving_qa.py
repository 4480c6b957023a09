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


@pytest.fixture(scope="module")
def qa_models(tmp_path_factory: pytest.TempPathFactory) -> dict[bool, Path]:
    """A tiny BERT QA model (random head, seeded) with the task's settings in its config, as an export has them: one
    that may answer nothing (SQuAD 2.0 style) and one that always answers, by whether unanswerable is allowed."""
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from tests.assets.checkpoints import save_checkpoint

    out = save_checkpoint("bert", tmp_path_factory.mktemp("bert"))
    torch.manual_seed(1)
    model = AutoModelForQuestionAnswering.from_pretrained(str(out))
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    for unanswerable in (False, True):
        model.config.task_specific_params = {"question-answering": {**SETTINGS,
                                                                    "handle_impossible_answer": unanswerable}}
        model.save_pretrained(str(out / f"qa_{unanswerable}"))
        tokenizer.save_pretrained(str(out / f"qa_{unanswerable}"))
    return {u: out / f"qa_{u}" for u in (False, True)}


@pytest.mark.parametrize("unanswerable", [False, True], ids=["squad1", "squad2"])
def test_the_pyfunc_answers_as_the_evaluate_stage_decodes(qa_models: dict[bool, Path], unanswerable: bool,
                                                          tmp_path: Path) -> None:
    import mlflow
    import pandas as pd

    from tasks.evaluate.extractive_qa import predict_answers

    model_dir = qa_models[unanswerable]
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


def test_registered_and_gated_on_squad_f1_then_served_from_the_champion(qa_models: dict[bool, Path],
                                                                          tmp_path: Path) -> None:
    import subprocess

    import mlflow
    import pandas as pd

    from pipelines import registry, tracking
    from pipelines.config import TrackingParams
    from pipelines.config.base import Section
    from pipelines.config.registry import GateRule, RegistryParams

    class NoParams(Section):
        """A stage without params."""

    model_dir = qa_models[False]
    store = TrackingParams(uri="sqlite:///mlruns.db", artifact_root="mlartifacts", experiment="lmforge")
    (tmp_path / "dvc.yaml").write_text("stages:\n  finetune: {cmd: finetune, outs: [models/finetuned]}\n")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    params = RegistryParams(gates={"extractive_qa": GateRule(metric="test.f1", direction="higher", margin=0.01)})
    try:
        with tracking.pipeline_run(store, tmp_path, ["finetune"]):
            with tracking.stage_run("finetune", NoParams(), root=tmp_path, tracking=store):
                decisions = []
                for f1 in (0.5, 0.505, 0.7):  # the second wins by less than the margin
                    version = registry.log_and_register(model_dir, task="squad", kind="extractive_qa",
                                                        params=params, metrics={"test.f1": f1}, digests={},
                                                        example=CONTEXT)
                    decisions.append(registry.gate("lmforge-squad", version, params=params))
        assert [d.promoted for d in decisions] == [True, False, True]
        loaded = mlflow.pyfunc.load_model("models:/lmforge-squad@champion")
        assert [c.name for c in loaded.metadata.get_input_schema().inputs] == ["question", "context"]
        out = loaded.predict(pd.DataFrame({"question": QUESTIONS[:1], "context": [CONTEXT]}))
        assert list(out.columns) == ["answer", "start", "end", "score"] and out["answer"][0] in CONTEXT
    finally:
        while mlflow.active_run():
            mlflow.end_run()
