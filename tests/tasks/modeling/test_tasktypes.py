"""The task-type components: every registered type implements the protocol, params and registry know each type, and
classification / sft behave as the data step and the recipes rely on (checks, fit, rows, encoding, losses)."""

from __future__ import annotations

import inspect
import typing
from pathlib import Path

import pytest

from tasks.modeling.tasktypes import TASK_TYPES, Reject, task_type
from tasks.modeling.tasktypes.base import TaskType


def test_every_registered_type_implements_every_member_of_the_protocol() -> None:
    members = {name for name in vars(TaskType) if not name.startswith("_")} | set(TaskType.__annotations__)
    for name, kind in TASK_TYPES.items():
        assert kind.name == name
        missing = {m for m in members if not hasattr(kind, m)}
        assert not missing, f"{name} lacks {missing}"
        for m in members:
            proto = getattr(TaskType, m, None)
            if inspect.isfunction(proto):  # same keyword arguments as the protocol, so call sites work for every type
                assert inspect.signature(getattr(type(kind), m)).parameters.keys() == \
                    inspect.signature(proto).parameters.keys(), (name, m)
    with pytest.raises(ValueError, match=r"task type 'ner' is not one of \[.*'classification'.*'sft'"):
        task_type("ner")


def test_params_and_registry_know_every_type() -> None:
    from pipelines.config.finetune import LABELLED_TYPES, TaskParams
    from pipelines.config.registry import DEFAULT_GATES, RegistryParams

    literal = typing.get_args(TaskParams.model_fields["type"].annotation)
    assert set(literal) == set(TASK_TYPES) == set(DEFAULT_GATES)
    assert set(LABELLED_TYPES) == {name for name, kind in TASK_TYPES.items() if kind.labelled}
    gates = RegistryParams(gates={"sft": {"metric": "test.loss", "direction": "lower"}}).gates
    assert gates["sft"].metric == "test.loss"  # given: kept; every other type gets its default
    assert {name: g for name, g in gates.items() if name != "sft"} == {
        name: g for name, g in DEFAULT_GATES.items() if name != "sft"}
    for name, gate in DEFAULT_GATES.items():  # a type's gate reads a metric the type's test metrics report
        assert gate.metric.removeprefix("test.") in TASK_TYPES[name].compared


def test_the_evaluate_stage_has_a_scorer_for_every_type() -> None:
    from tasks.evaluate.scoring import SCORERS, TaskJob, score_task

    assert set(SCORERS) == set(TASK_TYPES)
    with pytest.raises(KeyError, match="task 't': no evaluate scorer for task type 'regression'"):
        score_task("regression", TaskJob(task="t", labels=None, models={}, splits={}, settings={}, out_dir=Path(".")))


def test_classification_and_sft_checks_and_rows() -> None:
    cls, sft = task_type("classification"), task_type("sft")
    names = {"text": "body", "label": "y", "prompt": "q", "response": "a"}
    assert cls.check({"text": "a cat", "label": 3}, labels=None, names=names) == {"text": "a cat", "label": "3"}
    assert cls.check({"text": "a cat", "label": "dog"}, labels=["cat"], names=names) == Reject(
        "unknown_label", "label 'dog' is not one of ['cat']")
    assert cls.check({"text": " ", "label": "cat"}, labels=None, names=names) == Reject(
        "empty_field", "text field 'body' is empty")
    assert sft.check({"prompt": "p", "response": ["x"]}, labels=None, names=names) == Reject(
        "non_string_field", "response field 'a' is list, not a string")
    assert cls.dedup_key({"text": "t", "label": "a"}) == cls.dedup_key({"text": "t", "label": "b"})
    assert sft.dedup_key({"prompt": "ab", "response": "c"}) != sft.dedup_key({"prompt": "a", "response": "bc"})
    assert cls.row("i", {"text": "t", "label": "a"}) == {"id": "i", "text": "t", "label": "a"}
    assert (cls.labels_of({"text": "t", "label": "a"}), sft.labels_of({"prompt": "p", "response": "r"})) == (["a"], [])
    assert (cls.stratum({"text": "t", "label": "a"}), sft.stratum({"prompt": "p", "response": "r"})) == ("a", None)


def test_losses_outputs_and_scores_of_classification_and_sft() -> None:
    import torch

    cls, sft = task_type("classification"), task_type("sft")
    x, mask, y = cls.collate([[5, 6, 7], [8]], [1, 0], pad_id=0)
    assert x.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]] and y.tolist() == [1, 0]
    logits = torch.tensor([[0.0, 2.0], [1.0, 0.0]])
    assert cls.outputs(logits, mask) == [1, 0] and cls.count(y) == 2
    expected = -(torch.log_softmax(logits, -1)[0, 1] + torch.log_softmax(logits, -1)[1, 0])
    assert float(cls.loss(logits, y, reduction="sum")) == pytest.approx(float(expected), abs=1e-6)
    m = cls.metrics(loss=0.5, outputs=[1, 0], data={"targets": [1, 1]}, labels=["a", "b"])
    assert (m["accuracy"], cls.score(m)) == (0.5, pytest.approx(m["macro_f1"]))
    _, _, ys = sft.collate([[1, 2, 3, 4], [1, 2]], [[-100, -100, 3, 4], [-100, 2]], pad_id=0)
    assert ys.tolist() == [[-100, -100, 3, 4], [-100, 2, -100, -100]] and sft.count(ys) == 3
    lm_logits = torch.zeros(2, 4, 10)  # uniform: every scored token costs log(10)
    assert float(sft.loss(lm_logits, ys)) == pytest.approx(float(torch.log(torch.tensor(10.0))), abs=1e-6)
    assert sft.kd_rows(lm_logits, ys, None).shape == (3, 10)
    assert sft.score(sft.metrics(loss=2.0, outputs=[], data={}, labels=None)) == -2.0
