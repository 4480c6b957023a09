"""The finetune recipe end to end: real runs of ``python -m tasks.training.finetune`` in subprocesses on a tiny Llama
saved as models/base and tiny task data (a separable classification task and an sft task). It learns, exports loadable
per-task models, stops early and exports the best evaluation, keeps frozen weights bit-identical, trains LoRA adapters
only, resumes after SIGKILL to the same result, exports the same bytes twice, refuses bad configs with exit 2."""

from __future__ import annotations

import hashlib
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
from tests.tasks.training.finetune_fixtures import env, finetune, run_config, save_base_model, write_examples


@pytest.fixture(scope="module")
def inputs(data: dict[str, Path]) -> dict[str, Path]:
    root = data["root"] / "ft"
    return {"base": save_base_model(data["tokenizer"], root / "base"), "examples": write_examples(root / "examples"),
            "tokenizer": data["tokenizer"], "tokens": data["tokens"], "runs": root / "runs"}


def summary(config: Path) -> dict[str, Any]:
    return json.loads((config.parent / "model" / "finetune_summary.json").read_text())


def weights(model_dir: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def trained_state(config: Path) -> dict[str, Any]:
    """The multi-task module's weights at the end of training (the last DeepSpeed checkpoint), whatever the best
    evaluation was; backbone keys without their ``backbone.`` prefix."""
    import torch

    ckpt = config.parent / "ckpt"
    tag = (ckpt / "latest").read_text().strip()
    state = torch.load(ckpt / tag / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)["module"]
    return {k.removeprefix("backbone."): v for k, v in state.items()}


def digests(model_dir: Path) -> dict[str, str]:
    return {str(p.relative_to(model_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(model_dir.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def reference(inputs: dict[str, Path]) -> Path:
    """One uninterrupted full fine-tuning run of both tasks: the baseline of the learning, export and resume checks."""
    config = run_config(inputs, inputs["runs"] / "reference")
    res = finetune(config)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return config


@pytest.mark.slow  # real training runs in subprocesses
def test_classification_learns_and_every_evaluation_reports_the_gap(reference: Path) -> None:
    s = summary(reference)
    assert s["steps_run"] == 24 and not s["stopped_early"] and s["best_step"] == 24
    assert [h["step"] for h in s["history"]] == [0, 8, 16, 24]
    topic = s["tasks"]["topic"]
    assert topic["test"]["accuracy"] >= 0.8 and topic["test"]["macro_f1"] >= 0.8, topic  # chance is 0.5
    assert set(topic["test"]["per_class_f1"]) == {"pets", "sky"}
    complete = s["tasks"]["complete"]
    assert complete["final_val"]["loss"] < s["history"][0]["tasks"]["complete"]["loss"] - 0.5
    assert complete["test"]["perplexity"] > 1 and len(complete["test"]["samples"]) == 3
    for h in s["history"][1:]:
        assert h["tasks"]["topic"]["gap"] is not None and "train_accuracy" in h["tasks"]["topic"]
        assert h["tasks"]["complete"]["gap"] == pytest.approx(h["tasks"]["complete"]["loss"]
                                                              - h["tasks"]["complete"]["train_loss"])
    assert s["trainable_params"] == s["params"] and {"baseline", "tasks", "warnings"} <= set(s["shift"])
    assert set(s["shift"]["tasks"]) == {"topic", "complete"} and "label_shares" in s["shift"]["tasks"]["topic"]
    assert (reference.parent / "plots" / "learning_curves.png").read_bytes()[:4] == b"\x89PNG"
    stats = json.loads((reference.parent / "ckpt" / "run_stats.json").read_text())
    assert stats["tokens_per_second"] > 0 and stats["resumed_from_step"] is None and "train_seconds" not in s


@pytest.mark.slow  # real training runs in subprocesses
def test_exported_models_load_predict_and_generate(reference: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from tasks.examples import render_prompt

    out = reference.parent / "model"
    assert sorted(p.name for p in out.iterdir()) == ["complete", "finetune_summary.json", "topic"]
    classifier = AutoModelForSequenceClassification.from_pretrained(str(out / "topic")).eval()
    tok = AutoTokenizer.from_pretrained(str(out / "topic"))
    with torch.no_grad():
        logits = classifier(**tok(["the dog sat on the mat.", "the bird flew on the log."], return_tensors="pt",
                                  padding=True)).logits
    assert [classifier.config.id2label[int(i)] for i in logits.argmax(-1)] == ["pets", "sky"]
    lm = AutoModelForCausalLM.from_pretrained(str(out / "complete")).eval()
    tok = AutoTokenizer.from_pretrained(str(out / "complete"))
    text = tok.apply_chat_template([{"role": "user", "content": "the cat"}], tokenize=False,
                                   add_generation_prompt=True)
    assert text == render_prompt("the cat")
    ids = tok(text, return_tensors="pt").input_ids
    with torch.no_grad():
        gen = lm.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    assert gen.shape[1] > ids.shape[1]
    # every task model shares the fine-tuned backbone
    assert torch.equal(weights(out / "topic")["model.layers.1.mlp.up_proj.weight"],
                       weights(out / "complete")["model.layers.1.mlp.up_proj.weight"])


@pytest.mark.slow  # real training runs in subprocesses
def test_sigkilled_run_resumes_to_the_uninterrupted_result(inputs: dict[str, Path], reference: Path) -> None:
    config = run_config(inputs, inputs["runs"] / "killed")
    ckpt = config.parent / "ckpt"
    proc = subprocess.Popen([sys.executable, "-m", "tasks.training.finetune", "--config", str(config)], cwd=REPO,
                            env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 180
    while not (ckpt / "latest").is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed mid-training"
    # `latest` may be caught half-rewritten (empty): the resume then takes the newest complete step directory
    killed_at = int(latest_tag(ckpt)[4:])
    assert 8 <= killed_at < 24 and not (config.parent / "model").exists()
    res = finetune(config)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "resumed from" in res.stdout and f"at step {killed_at}" in res.stdout
    mine, theirs = summary(config), summary(reference)
    assert [h["step"] for h in mine["history"]] == [h["step"] for h in theirs["history"]]
    assert mine["best_step"] == theirs["best_step"]
    for a, b in zip(mine["history"], theirs["history"], strict=True):
        assert a["val_score"] == pytest.approx(b["val_score"], abs=1e-5)
    for task in ("topic", "complete"):
        w1, w2 = weights(config.parent / "model" / task), weights(reference.parent / "model" / task)
        assert w1.keys() == w2.keys() and all((w1[k] - w2[k]).abs().max() < 1e-5 for k in w1), task
    stats = json.loads((ckpt / "run_stats.json").read_text())
    assert stats["resumed_from_step"] == killed_at and stats["steps_this_run"] == 24 - killed_at


@pytest.mark.slow  # real training runs in subprocesses
def test_same_config_and_data_export_the_same_bytes(inputs: dict[str, Path], reference: Path) -> None:
    config = run_config(inputs, inputs["runs"] / "same")
    res = finetune(config)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    mine, theirs = digests(config.parent / "model"), digests(reference.parent / "model")
    assert {"topic/model.safetensors", "complete/model.safetensors", "finetune_summary.json"} <= mine.keys()
    assert mine == theirs


@pytest.mark.slow  # real training runs in subprocesses
def test_early_stopping_stops_at_the_expected_evaluation_and_exports_the_best(inputs: dict[str, Path]) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{inputs['runs'].parent / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    run_id = client.create_run(client.create_experiment("finetune")).info.run_id
    # no later evaluation can beat the first by min_delta 10: the first (step 0, the base model) stays the best
    config = run_config(inputs, inputs["runs"] / "early", steps=40, eval_every=4, checkpoint_every=40,
                        early_stopping={"enabled": True, "patience": 2, "min_delta": 10.0},
                        mlflow={"tracking_uri": uri, "run_id": run_id})
    res = finetune(config)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    s = summary(config)
    assert s["stopped_early"] and s["best_step"] == 0 and s["steps_run"] == 8, {k: s[k] for k in ("best_step",
                                                                                                  "steps_run")}
    assert [h["step"] for h in s["history"]] == [0, 4, 8] and "early stop at step 8" in res.stdout
    assert s["tasks"]["topic"]["best_val"] == s["history"][0]["tasks"]["topic"]
    # the exported backbone is the best evaluation's: the untouched base model
    base, exported = weights(inputs["base"]), weights(config.parent / "model" / "complete")
    assert all((base[k] == exported[k]).all() for k in base if k in exported)
    assert (config.parent / "ckpt" / "step8").is_dir()  # the stopped run is checkpointed: a rerun does not train on
    metrics = client.get_run(run_id).data.metrics
    assert {"val_score", "lr", "tokens_per_second", "train_loss_topic", "val_macro_f1_topic", "gap_complete",
            "best_step", "test_accuracy_topic"} <= set(metrics)
    assert [m.step for m in client.get_metric_history(run_id, "val_score")] == [0, 4, 8]


@pytest.mark.slow  # real training runs in subprocesses
def test_frozen_embeddings_and_layers_stay_bit_identical(inputs: dict[str, Path]) -> None:
    config = run_config(inputs, inputs["runs"] / "frozen", steps=8, eval_every=8, freeze_embeddings=True,
                        freeze_layers=1, weight_decay=0.1)
    res = finetune(config)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    base, tuned = weights(inputs["base"]), trained_state(config)
    frozen = [k for k in base if "embed_tokens" in k or ".layers.0." in k]
    trained = [k for k in base if ".layers.1." in k and k.endswith("proj.weight")]
    assert frozen and trained
    assert all(torch_equal(base[k], tuned[k]) for k in frozen)
    assert all(not torch_equal(base[k], tuned[k]) for k in trained)
    assert summary(config)["trainable_params"] < summary(config)["params"]


@pytest.mark.slow  # real training runs in subprocesses
def test_gradual_unfreezing_trains_the_top_layer_first(inputs: dict[str, Path]) -> None:
    # 2 layers, unfreeze_every 5, 8 steps: layer 1 trains from step 5, layer 0 and the embeddings never
    config = run_config(inputs, inputs["runs"] / "unfreeze", steps=8, eval_every=8, unfreeze_every=5,
                        precision="auto")
    res = finetune(config)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    base, tuned = weights(inputs["base"]), trained_state(config)
    assert all(torch_equal(base[k], tuned[k]) for k in base if "embed_tokens" in k or ".layers.0." in k)
    assert not torch_equal(base["model.layers.1.mlp.up_proj.weight"], tuned["model.layers.1.mlp.up_proj.weight"])
    assert not torch_equal(base["model.norm.weight"], tuned["model.norm.weight"])


@pytest.mark.slow  # real training runs in subprocesses
def test_lora_trains_adapters_and_heads_only_and_exports_adapter_and_merged_model(inputs: dict[str, Path]) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    # ZeRO-2: DeepSpeed's stage 1/2 optimizer refuses a parameter group with nothing trainable (the frozen base's)
    config = run_config(inputs, inputs["runs"] / "lora", strategy="lora", steps=8, eval_every=8, lr=1e-2, zero_stage=2,
                        lora={"rank": 4, "alpha": 8.0, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]})
    res = finetune(config)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = config.parent / "model"
    assert (out / "adapter" / "adapter_config.json").is_file()
    # after training: the base weights are bit-identical, the adapters (B starts at zero) and heads moved
    base, tuned = weights(inputs["base"]), trained_state(config)
    inner = {k.removeprefix("base_model.model.").replace(".base_layer.", "."): v for k, v in tuned.items()}
    assert all(torch_equal(base[k], inner[k]) for k in base if "lm_head" not in k)
    assert all(tuned[k].abs().max() > 0 for k in tuned if "lora_B" in k)
    s = summary(config)
    # per layer q_proj (32 -> 32) and v_proj (32 -> 16, 2 kv heads of 8): A 4x32 + B 32x4, A 4x32 + B 16x4; the head
    assert s["trainable_params"] == 2 * (4 * 32 + 32 * 4 + 4 * 32 + 16 * 4) + 2 * 32
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(inputs["base"])),
                                        str(out / "adapter")).eval()
    lm = AutoModelForCausalLM.from_pretrained(str(out / "complete")).eval()
    x = torch.tensor([[0, 5, 9, 17, 23, 40]])
    with torch.no_grad():
        torch.testing.assert_close(adapted(input_ids=x).logits, lm(input_ids=x).logits, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("name", "over", "message"), [
    ("max_length", {"max_length": 128}, "max_length 128 exceeds the base model's max_position_embeddings 96"),
    ("no_base", {"base_model_dir": "/nonexistent"}, "/nonexistent is not a Hugging Face checkpoint (no config.json)"),
    ("lora_target", {"strategy": "lora", "lora": {"target_modules": ["qkv"]}}, "do not fit this llama model"),
    ("unfreeze_zero", {"unfreeze_every": 5, "zero_stage": 2}, "unfreeze_every needs zero_stage 0"),
    ("no_manifest", {"examples_dir": "/nonexistent"}, "run the finetune stage's data step first"),
])
def test_bad_configs_exit_2_before_training(inputs: dict[str, Path], name: str, over: dict[str, Any],
                                           message: str) -> None:
    config = run_config(inputs, inputs["runs"] / f"bad-{name}", **over)
    start = time.monotonic()
    res = finetune(config, timeout=60)
    assert res.returncode == 2, res.stdout + res.stderr
    assert message in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert time.monotonic() - start < 20 and not (config.parent / "ckpt").exists()


def torch_equal(a: Any, b: Any) -> bool:
    import torch

    return bool(torch.equal(a, b))


@pytest.mark.slow  # needs the reference run's checkpoints
def test_resuming_under_other_settings_is_refused(inputs: dict[str, Path], reference: Path) -> None:
    ckpt = str(reference.parent / "ckpt")
    config = run_config(inputs, inputs["runs"] / "changed", checkpoint_dir=ckpt, head_lr=2e-2, freeze_layers=1)
    res = finetune(config, timeout=60)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert (f"checkpoint_dir {ckpt} holds a run with other settings (freeze_layers: 0 -> 1, head_lr: 0.01 -> 0.02)"
            in res.stderr)
    assert not (config.parent / "model").exists()
