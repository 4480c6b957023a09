"""The distill stage's recipes end to end: real runs of ``python -m tasks.training.distill`` (KD) and then
``python -m tasks.training.compress`` in subprocesses on tiny teachers (a classifier and a causal LM exported as the
finetune stage does) and tiny task data. They export a smaller student and its variants that load with plain
transformers, measure them against the teacher, resume after SIGKILL to the uninterrupted result, distil the base LM
over packed tokens from a teacher cache, refuse bad configs with exit 2."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tasks.modeling.checkpoint import latest_tag
from tests.conftest import REPO
from tests.tasks.training.distill_fixtures import distill, recipe, run_config, save_teachers
from tests.tasks.training.finetune_fixtures import env, save_base_model, write_examples


@pytest.fixture(scope="module")
def inputs(data: dict[str, Path]) -> dict[str, Path]:
    root = data["root"] / "distill"
    base = save_base_model(data["tokenizer"], root / "base")
    return {"base": base, "examples": write_examples(root / "examples"), "tokenizer": data["tokenizer"],
            "teachers": save_teachers(base, tokenizer_dir=data["tokenizer"], out=root / "teachers"),
            "tokens": data["tokens"], "runs": root / "runs"}


def summary(config: Path) -> dict[str, Any]:
    return json.loads((config.parent / "model" / "distill_summary.json").read_text())


def weights(model_dir: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


@pytest.fixture(scope="module")
def reference(inputs: dict[str, Path]) -> Path:
    """One uninterrupted distillation of both tasks with every variant."""
    config = run_config(inputs, inputs["runs"] / "reference")
    res = distill(config)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    (config.parent / "stdout.txt").write_text(res.stdout)
    return config


@pytest.mark.slow  # real training runs in subprocesses
def test_exports_a_smaller_student_and_variants_that_load_with_plain_transformers(reference: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    out, s = reference.parent / "model", summary(reference)
    assert s["steps_run"] == 16 and [h["step"] for h in s["history"]] == [0, 8, 16]
    assert s["teacher"] == "finetuned" and s["temperature"] == 2.0 and s["alpha"] == 0.5
    assert s["student_init"]["layers"] == [0] and s["student_init"]["heads_from_teacher"] == ["topic"]
    stdout = (reference.parent / "stdout.txt").read_text()
    assert "step      8 | val_score " in stdout and "| topic: val_loss " in stdout  # finetune's eval line
    assert set(s["variants"]) == {"teacher", "student", "magnitude", "structured", "int8"}
    for task in ("topic", "complete"):
        teacher, student = s["variants"]["teacher"][task], s["variants"]["student"][task]
        assert student["params"] < 0.75 * teacher["params"] and set(student["retention"])
        magnitude = s["variants"]["magnitude"][task]
        assert magnitude["nonzero_params"] < 0.85 * magnitude["params"]
        assert s["variants"]["structured"][task]["params"] < student["params"]
    classifier = AutoModelForSequenceClassification.from_pretrained(str(out / "topic"))
    assert classifier.config.num_hidden_layers == 1 and classifier.config.id2label == {0: "pets", 1: "sky"}
    lm = AutoModelForCausalLM.from_pretrained(str(out / "complete"))
    assert lm.config.num_hidden_layers == 1
    shrunk = AutoModelForSequenceClassification.from_pretrained(str(out / "variants" / "structured" / "topic"))
    assert shrunk.config.num_attention_heads == 2 and shrunk.config.intermediate_size == 48
    pruned = weights(out / "variants" / "magnitude" / "complete")
    q = pruned["model.layers.0.self_attn.q_proj.weight"]
    assert 0.2 < float((q == 0).float().mean()) < 0.9  # global sparsity 0.5 over the layers' projections
    x = torch.tensor([[5, 6, 7, 8]])
    assert classifier(input_ids=x).logits.shape == (1, 2) and lm(input_ids=x).logits.shape[-1] == lm.config.vocab_size
    assert (reference.parent / "plots" / "learning_curves.png").stat().st_size > 1000
    stats = json.loads((reference.parent / "ckpt" / "run_stats.json").read_text())
    assert stats["steps_this_run"] == 16 and stats["resumed_from_step"] is None
    assert set(stats["measurements"]) == set(s["variants"]) and set(stats["recovery_seconds"]) == {"magnitude",
                                                                                                 "structured"}
    # every evaluation reached the flow as data, the same numbers as the summary's history
    evaluations = [json.loads(line) for line in (reference.parent / "ckpt" / "evaluations.jsonl").read_text()
                   .splitlines()]
    assert [(e["step"], e["val_score"]) for e in evaluations] == [(h["step"], h["val_score"]) for h in s["history"]]
    assert [e["step"] for e in evaluations if e["best"]][-1] == s["best_step"]


def test_compress_without_a_distilled_student_exits_2(inputs: dict[str, Path]) -> None:
    config = run_config(inputs, inputs["runs"] / "no-student")
    res = recipe("compress", config.parent / "compress.json", timeout=60)
    assert res.returncode == 2 and res.stderr.strip().startswith("compress: error: no distilled student"), res.stderr


@pytest.mark.slow  # real training runs in subprocesses
def test_sigkilled_run_resumes_to_the_uninterrupted_result(inputs: dict[str, Path], reference: Path) -> None:
    config = run_config(inputs, inputs["runs"] / "killed", checkpoint_every=4)
    ckpt = config.parent / "ckpt"
    proc = subprocess.Popen([sys.executable, "-m", "tasks.training.distill", "--config", str(config)], cwd=REPO,
                            env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 180
    while not (ckpt / "latest").is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed mid-training"
    killed_at = int(latest_tag(ckpt)[4:])
    assert 4 <= killed_at < 16 and not (config.parent / "model").exists()
    res = distill(config)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "resumed from" in res.stdout and f"at step {killed_at}" in res.stdout
    mine, theirs = summary(config), summary(reference)
    assert mine["best_step"] == theirs["best_step"]
    for a, b in zip(mine["history"], theirs["history"], strict=True):
        assert a["step"] == b["step"] and a["val_score"] == pytest.approx(b["val_score"], abs=1e-5)
    for task in ("topic", "complete"):
        w1, w2 = weights(config.parent / "model" / task), weights(reference.parent / "model" / task)
        assert w1.keys() == w2.keys() and all((w1[k] - w2[k]).abs().max() < 1e-5 for k in w1), task
    stats = json.loads((ckpt / "run_stats.json").read_text())
    assert stats["resumed_from_step"] == killed_at and stats["steps_this_run"] == 16 - killed_at


@pytest.mark.slow  # a real training run in a subprocess
def test_base_teacher_distils_the_lm_from_a_cache_of_its_logits(inputs: dict[str, Path], data: dict[str, Path]) -> None:
    from transformers import AutoModelForCausalLM

    config = run_config(inputs, inputs["runs"] / "base", teacher="base", teacher_dir=str(inputs["base"]),
                        examples_dir=None, cache_teacher=True, cache_top_k=16, max_length=32, steps=12,
                        eval_every=6, checkpoint_every=6, variants={"magnitude": {"enabled": False},
                                                                   "structured": {"enabled": False},
                                                                   "int8": {"enabled": False}})
    res = distill(config)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    s = summary(config)
    assert set(s["variants"]) == {"teacher", "student"} and set(s["variants"]["student"]) == {"lm"}
    assert s["history"][-1]["tasks"]["lm"]["loss"] < s["history"][0]["tasks"]["lm"]["loss"]
    cache = s["cache"]
    assert cache["enabled"] and cache["top_k"] == 16 and cache["probe_steps"] == 5 and cache["bytes"]["lm"] > 0
    timed = json.loads((config.parent / "ckpt" / "run_stats.json").read_text())["cache"]  # timings stay out of the
    assert timed["live_teacher_seconds"] > 0 and timed["cached_teacher_seconds"] >= 0  # exported summary
    assert not set(cache) & set(timed)
    assert (config.parent / "ckpt" / "teacher_cache" / "lm.pt").is_file()
    lm = AutoModelForCausalLM.from_pretrained(str(config.parent / "model" / "lm"))
    assert lm.config.num_hidden_layers == 1
    # a second run over the same checkpoint_dir (nothing left to train) reuses the cache
    again = distill(config)
    assert again.returncode == 0 and summary(config)["cache"]["reused"] == ["lm"], again.stderr[-2000:]


@pytest.mark.parametrize(("over", "message"), [
    ({"student": {"num_layers": 2, "layers": [0, 5]}}, "names a layer the teacher lacks"),
    ({"alpha": 1.5}, "alpha"),
    ({"variants": {"structured": {"heads_fraction": 0.5, "bogus": 1}}}, "variants.structured.bogus"),
    ({"teacher_dir": "/nonexistent"}, "run the finetune stage"),
])
def test_a_bad_config_exits_2_with_one_line(inputs: dict[str, Path], over: dict[str, Any], message: str) -> None:
    config = run_config(inputs, inputs["runs"] / "bad", **over)
    res = distill(config, timeout=60)
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("distill: error: ") and message in lines[0], res.stderr
