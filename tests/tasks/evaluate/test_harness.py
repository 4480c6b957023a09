"""lm-evaluation-harness on local tasks, offline: its rolling figures equal ours, a choice task runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tasks.evaluate.harness import HarnessError, run_harness, write_task
from tasks.evaluate.lm import lm_metrics, load_texts


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_rolling_task_agrees_with_our_perplexity(lm_inputs: dict[str, Path], tmp_path: Path) -> None:
    texts = load_texts(lm_inputs["test"], limit=5)
    write_task(task_dir=tmp_path / "tasks", name="heldout", kind="rolling", rows=[{"text": t} for t in texts])
    out = run_harness(model_dir=lm_inputs["lm"], task_dir=tmp_path / "tasks", tasks=["heldout"], max_length=16,
                      batch_size=4)
    ours = lm_metrics(model_dir=lm_inputs["lm"], texts=texts, window=16)
    got = out["tasks"]["heldout"]
    assert out["samples"]["heldout"] == 5 and out["seconds"] > 0 and out["lm_eval_version"] == "0.4.13"
    assert got["bits_per_byte"] == pytest.approx(ours["bits_per_byte"], rel=5e-3)
    assert got["word_perplexity"] == pytest.approx(ours["word_perplexity"], rel=5e-3)
    assert got["byte_perplexity"] == pytest.approx(ours["byte_perplexity"], rel=5e-3)
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_choice_task_scores_accuracy_of_a_causal_lm(lm_inputs: dict[str, Path], tmp_path: Path) -> None:
    from tests.tasks.training.finetune_fixtures import CLASSES, classification_rows

    rows = classification_rows(12, 3)
    write_task(task_dir=tmp_path / "tasks", name="topic", kind="choice", rows=rows, labels=sorted(CLASSES))
    out = run_harness(model_dir=lm_inputs["lm"], task_dir=tmp_path / "tasks", tasks=["topic"], batch_size=8)
    acc = out["tasks"]["topic"]
    assert out["samples"]["topic"] == 12 and "acc_norm" in acc
    # the same choice made by hand: the label whose tokens are likeliest after "TEXT\nAnswer:"
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(lm_inputs["lm"]))
    model = AutoModelForCausalLM.from_pretrained(str(lm_inputs["lm"])).eval()

    def loglik(context: str, continuation: str) -> float:
        ctx = tok.encode(context, add_special_tokens=False)
        cont = tok.encode(context + continuation, add_special_tokens=False)[len(ctx):]
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([ctx + cont])).logits[0], -1)
        return float(sum(logp[len(ctx) - 1 + i, t] for i, t in enumerate(cont)))

    labels = sorted(CLASSES)
    hits = [max(labels, key=lambda lab: loglik(r["text"] + "\nAnswer:", " " + lab)) == r["label"] for r in rows]
    assert acc["acc"] == pytest.approx(sum(hits) / len(rows))


def test_bad_tasks_are_refused(lm_inputs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match="kind"):
        write_task(task_dir=tmp_path, name="x", kind="generate", rows=[{"text": "a"}])
    with pytest.raises(HarnessError, match="labels"):
        write_task(task_dir=tmp_path, name="x", kind="choice", rows=[{"text": "a", "label": "b"}])
    with pytest.raises(HarnessError, match="failed"):
        run_harness(model_dir=lm_inputs["lm"], task_dir=tmp_path, tasks=["missing_task"])
