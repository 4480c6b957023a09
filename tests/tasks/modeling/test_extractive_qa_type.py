"""The extractive QA task type end to end on tiny models: records checked and fitted, windows encoded, the loss
(against transformers' own QA loss), and a few optimizer steps that make the decoded answers right, for an encoder
(BERT, CLS null position) and a decoder (GPT-2, no CLS)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tasks.modeling.tasktypes.base import Reject
from tasks.modeling.tasktypes.extractive_qa import ExtractiveQA
from tests.assets.checkpoints import save_checkpoint

CONTEXT = "the cat sat on the mat . the dog ran to the log . a bird flew over the tree ."
ROWS = [
    {"question": "who sat on the mat ?", "context": CONTEXT, "answers": {"text": ["the cat"], "answer_start": [0]}},
    {"question": "where did the dog run ?", "context": CONTEXT,
     "answers": {"text": ["to the log"], "answer_start": [CONTEXT.index("to the log")]}},
    {"question": "what flew over the tree ?", "context": CONTEXT,
     "answers": {"text": ["a bird"], "answer_start": [CONTEXT.index("a bird")]}},
    {"question": "what is the tree ?", "context": "the cat sat .", "answers": {"text": [], "answer_start": []}},
]


@pytest.fixture(scope="module", params=["bert", "gpt2"])
def model_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_checkpoint(request.param, tmp_path_factory.mktemp(request.param))


def load(model_dir: Path) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from tasks.modeling.encoding import special_ids

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    special_ids(tokenizer)  # GPT-2 has no pad token: as training, pad with EOS
    torch.manual_seed(0)
    model = AutoModelForQuestionAnswering.from_pretrained(str(model_dir), dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    return tokenizer, model


def test_data_step_members() -> None:
    qa = ExtractiveQA(unanswerable=False)
    record = {"context": CONTEXT, "question": "who?", "answers": [{"text": "the cat", "answer_start": 0}]}
    values = qa.check(record, labels=None)
    assert values == {"context": CONTEXT, "question": "who?", "answers": {"text": ["the cat"], "answer_start": [0]}}
    assert isinstance(values, dict)
    assert qa.chars(values) == len(CONTEXT) + 4 and qa.labels_of(values) == [] and qa.stratum(values) is None
    assert qa.dedup_key(values) != qa.dedup_key({**values, "question": "who ?"})
    assert qa.row("abc", values) == {"id": "abc", **values}
    rejected = qa.check({**record, "answers": []}, labels=None)
    assert isinstance(rejected, Reject) and rejected.reason == "unanswerable"
    assert ExtractiveQA(unanswerable=True).check({**record, "answers": []}, labels=None) != rejected


def test_fit_keeps_long_contexts_and_rejects_questions_that_leave_no_room(tmp_path: Path) -> None:
    from tasks.finetune.checks import load_tokenizer

    tokenizer = load_tokenizer(save_checkpoint("bert", tmp_path / "bert"))  # as the data step loads it
    qa = ExtractiveQA(doc_stride=8)
    long_context = {"context": CONTEXT * 20, "question": "who ?", "answers": {"text": [], "answer_start": []}}
    assert qa.fit(dict(long_context), tokenizer=tokenizer, max_length=32) == long_context
    long_question = {**long_context, "question": "the cat sat on the mat " * 4}  # 24 tokens > 32 - 3 - 8 - 1
    rejected = qa.fit(long_question, tokenizer=tokenizer, max_length=32)
    assert isinstance(rejected, Reject) and rejected.reason == "too_long_tokens"
    assert rejected.detail.startswith("question of 24 tokens > 20")


def test_the_loss_is_transformers_qa_loss_and_ignores_padding(model_dir: Path) -> None:
    import torch

    tokenizer, model = load(model_dir)
    model.eval()
    qa = ExtractiveQA(unanswerable=True, doc_stride=4)
    data = qa.encode(ROWS, tokenizer=tokenizer, max_length=24, labels=None, eos_id=0)
    assert len(data["ids"]) > len(ROWS) and data["rows"] == ROWS and data["dropped"] == 0
    assert data["unreachable"] == ([1] if "gpt2" in str(model_dir) else [])  # "to the log": 7 tiny-BPE tokens
    assert data["windows"] == [data["example"].count(i) for i in range(4)] and sum(data["windows"]) == len(data["ids"])
    singles = []
    with torch.no_grad():
        for ids, target in zip(data["ids"], data["targets"], strict=True):
            x, mask, y = qa.collate([ids], [target], pad_id=tokenizer.pad_token_id)
            out = model(input_ids=x, attention_mask=mask, start_positions=y[:, 0], end_positions=y[:, 1])
            ours = qa.loss(qa.logits(out), y)
            assert float(ours) == pytest.approx(float(out.loss), rel=1e-5)
            singles.append(float(ours))
        x, mask, y = qa.collate(data["ids"], data["targets"], pad_id=tokenizer.pad_token_id)
        logits = qa.logits(model(input_ids=x, attention_mask=mask))
        assert logits.shape == (len(data["ids"]), x.shape[1], 2)
        assert float(qa.loss(logits, y)) == pytest.approx(sum(singles) / len(singles), rel=1e-4)
        assert float(qa.loss(logits, y, reduction="sum")) == pytest.approx(sum(singles), rel=1e-4)
        assert qa.count(y) == len(singles)
        outputs = qa.outputs(logits, mask)
    assert [len(o) for o in outputs] == [len(ids) for ids in data["ids"]]


def test_a_few_steps_learn_to_answer(model_dir: Path) -> None:
    import torch

    tokenizer, model = load(model_dir)
    qa = ExtractiveQA(unanswerable=True, doc_stride=8)
    data = qa.encode(ROWS, tokenizer=tokenizer, max_length=40, labels=None, eos_id=0)
    assert data["unreachable"] == []
    x, mask, y = qa.collate(data["ids"], data["targets"], pad_id=tokenizer.pad_token_id)

    def evaluate() -> dict[str, Any]:
        model.eval()
        with torch.no_grad():
            logits = qa.logits(model(input_ids=x, attention_mask=mask))
        model.train()
        return qa.metrics(loss=float(qa.loss(logits, y)), outputs=qa.outputs(logits, mask), data=data, labels=None)

    before = evaluate()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(80):
        optimizer.zero_grad()
        qa.loss(qa.logits(model(input_ids=x, attention_mask=mask)), y).backward()
        optimizer.step()
    after = evaluate()
    assert after["loss"] < before["loss"] / 4
    assert after["f1"] == 1.0 and after["exact_match"] == 1.0 and before["f1"] < 1.0
    assert qa.score(after) == 1.0
    model.eval()
    with torch.no_grad():
        outputs = qa.outputs(qa.logits(model(input_ids=x, attention_mask=mask)), mask)
    answers = qa.predictions(outputs, data)
    assert [a["text"] for a in answers] == ["the cat", "to the log", "a bird", ""]
    assert (answers[1]["start"], answers[1]["end"]) == (CONTEXT.index("to the log"), CONTEXT.index(" . a bird"))


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_kd_rows_are_start_and_end_distributions_over_each_window_alone(temperature: float) -> None:
    import torch

    from tasks.training.kd import kd_loss

    qa = ExtractiveQA()
    torch.manual_seed(0)
    lengths = [7, 4, 9]
    student, teacher = torch.randn(3, 9, 2), torch.randn(3, 9, 2) * 3
    mask = torch.tensor([[1] * n + [0] * (9 - n) for n in lengths])
    rows = qa.kd_rows(student, None, mask)
    assert rows.shape == (6, 9)
    assert torch.equal(rows[1, :4], student[1, :4, 0]) and torch.equal(rows[4, :4], student[1, :4, 1])
    batch = kd_loss(rows, qa.kd_rows(teacher, None, mask), temperature=temperature)
    alone = [kd_loss(qa.kd_rows(student[i:i + 1, :n], None, mask[i:i + 1, :n]),
                     qa.kd_rows(teacher[i:i + 1, :n], None, mask[i:i + 1, :n]), temperature=temperature)
             for i, n in enumerate(lengths)]
    assert torch.isfinite(batch) and float(batch) == pytest.approx(float(sum(alone)) / 3, rel=1e-5)
    assert float(kd_loss(rows, rows.clone(), temperature=temperature)) == pytest.approx(0.0, abs=1e-6)


def test_a_split_cut_to_its_first_windows_scores_whole_questions_only(tmp_path: Path) -> None:
    import numpy as np
    from transformers import AutoTokenizer

    from tasks.modeling.tasktypes import task_settings, task_type

    qa = task_type("extractive_qa", {"unanswerable": True, "doc_stride": 4, "max_answer_length": 3})
    assert isinstance(qa, ExtractiveQA) and (qa.unanswerable, qa.doc_stride, qa.max_answer_length) == (True, 4, 3)
    assert task_type("extractive_qa") is task_type("extractive_qa", {})  # the defaults: the registered one
    assert task_settings({"type": "extractive_qa", "extractive_qa": {"doc_stride": 4}}) == {"doc_stride": 4}
    assert task_settings({"type": "extractive_qa", "settings": {"doc_stride": 5}}) == {"doc_stride": 5}
    tokenizer = AutoTokenizer.from_pretrained(str(save_checkpoint("bert", tmp_path / "bert")))
    data = qa.encode(ROWS, tokenizer=tokenizer, max_length=24, labels=None, eos_id=0)
    assert data["answering"] == {"max_answer_length": 3, "allow_null": True}
    cut = data["windows"][0] + 1  # the first question whole, the second's first window only
    capped = {k: v[:cut] if isinstance(v, list) else v for k, v in data.items()}  # as the Evaluator caps val
    outputs = [np.zeros((len(ids), 2), dtype=np.float32) for ids in capped["ids"]]
    assert qa.metrics(loss=1.0, outputs=outputs, data=capped, labels=None)["questions"] == 1
    whole = qa.metrics(loss=1.0, outputs=[np.zeros((len(i), 2)) for i in data["ids"]], data=data, labels=None)
    assert whole["questions"] == 4 and 0.0 <= whole["f1"] <= 1.0
    assert ExtractiveQA(doc_stride=4).export_config(max_length=24) == {"task_specific_params": {
        "question-answering": {"doc_stride": 4, "max_answer_length": 30, "max_seq_len": 24,
                               "handle_impossible_answer": False}}}


@pytest.mark.parametrize("tasks", [("qa",), ("qa", "topic")])
def test_exported_qa_models_load_back_into_the_multitask_module(tmp_path: Path, tasks: tuple[str, ...]) -> None:
    """LlamaForQuestionAnswering names its body ``transformer``, the causal LM and the classifier ``model``: the
    task models of one run still load back, a QA task alone too (as distill's variants load the exported student)."""
    import torch
    from transformers import AutoTokenizer

    from tasks.modeling.export import save_task_models
    from tasks.modeling.heads import build_multitask, load_backbone, load_exported

    base = save_checkpoint("llama", tmp_path / "llama")
    tokenizer = AutoTokenizer.from_pretrained(str(base))

    def module() -> Any:
        return build_multitask(load_backbone(base), heads={"qa": 2, "topic": 3} if "topic" in tasks else {"qa": 2},
                               dropout=0.0, pad_token_id=0, types={"qa": "extractive_qa", "topic": "classification"})

    torch.manual_seed(0)
    trained = module()
    labels = {"qa": None, "topic": ["a", "b", "c"]}
    save_task_models(tmp_path / "out", module=trained, labels={t: labels[t] for t in tasks}, sft_tasks=[],
                     tokenizer=tokenizer, dtype="float32", chat_template="", extras={"qa": {"doc_stride": 3}})
    from safetensors.torch import load_file

    assert "transformer.embed_tokens.weight" in load_file(str(tmp_path / "out/qa/model.safetensors"))
    assert json.loads((tmp_path / "out/qa/config.json").read_text())["doc_stride"] == 3
    torch.manual_seed(1)
    again = load_exported(module(), {t: tmp_path / "out" / t for t in tasks})
    for (name, a), b in zip(trained.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
