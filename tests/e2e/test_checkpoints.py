"""A checkpoint lmforge did not train, through the README's `lmforge run`: a BERT-family encoder (tiny, saved with
`save_pretrained` and a WordPiece vocabulary the tokenizers library learned) fine-tuned on the default classification
task, distilled, evaluated beside a linear probe of the untouched checkpoint, registered and served by
`mlflow.pyfunc.load_model`, then fine-tuned again with LoRA (`lmforge run finetune -S finetune.strategy=lora`); a GPT-2
pretrained further, fine-tuned with LoRA, then fine-tuned in full the same way; each re-run's exported models load with
plain `AutoModelFor...` and predict as its summary says; and a hub id with the hub unreachable, which is exit 2 with
nothing written.

On a copy of the session's shared finished run (tests/e2e/conftest.py), so only finetune, distill and evaluate run.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.assets.checkpoints import save_checkpoint
from tests.conftest import _free_port, run_cli
from tests.e2e.conftest import FinishedRun

pytestmark = pytest.mark.slow


def _finetune(repo: Path, **values: object) -> None:
    data = yaml.safe_load((repo / "params.yaml").read_text())
    data["finetune"].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def _refinetune(repo: Path, strategy: str) -> dict[str, Any]:
    """``lmforge run finetune -S finetune.strategy=STRATEGY`` (a short run: finetune alone re-runs); its exported
    classifier and causal LM load with plain transformers and predict what the summary says. Returns the summary."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from tasks.examples import load_split
    from tasks.modeling.encoding import collate, encode, special_ids

    # as short as a run can be (it is the export being checked, not the learning): 10 steps, two small evaluations
    settings = {"strategy": strategy, "steps": 10, "eval_every": 10, "checkpoint_every": 10, "warmup_steps": 2,
                "eval_max_examples": 64}
    res = run_cli(repo, "run", "finetune", *(a for k, v in settings.items() for a in ("-S", f"finetune.{k}={v}")),
                  timeout=900, PREFECT_API_URL="")
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    assert "finetune: ran" in res.stdout and "distill: ran" not in res.stdout, res.stdout
    out = repo / "models/finetuned"
    summary: dict[str, Any] = json.loads((out / "finetune_summary.json").read_text())
    assert summary["strategy"] == strategy and summary["steps_run"] <= 10
    assert (out / "adapter/adapter_config.json").is_file() == (strategy == "lora")
    assert (summary["trainable_params"] < summary["params"] / 2) == (strategy == "lora"), summary["params"]
    params = yaml.safe_load((repo / "params.yaml").read_text())["finetune"]
    for task, entry in summary["tasks"].items():
        tokenizer = AutoTokenizer.from_pretrained(str(out / task))
        rows = load_split(repo / "data/finetune", task, "test")
        if entry["type"] == "classification":
            model = AutoModelForSequenceClassification.from_pretrained(str(out / task)).eval()
            eos_id, pad_id = special_ids(tokenizer)
            enc = encode(rows, kind="classification", tokenizer=tokenizer, max_length=params["max_length"],
                         labels=entry["labels"], eos_id=eos_id)
            x, mask, _ = collate(enc["ids"], enc["targets"], pad_id=pad_id, kind="classification")
            with torch.no_grad():
                predicted = model(input_ids=x, attention_mask=mask).logits.argmax(-1).tolist()
            accuracy = sum(p == t for p, t in zip(predicted, enc["targets"], strict=True)) / len(predicted)
            assert accuracy == pytest.approx(entry["test"]["accuracy"], abs=1e-9), (task, accuracy, entry["test"])
            continue
        model = AutoModelForCausalLM.from_pretrained(str(out / task)).eval()  # sft: the summary's first sample
        sample = entry["test"]["samples"][0]
        text = tokenizer.apply_chat_template([{"role": "user", "content": sample["prompt"]}], tokenize=False,
                                             add_generation_prompt=True)
        ids = tokenizer(text, return_tensors="pt").input_ids
        with torch.no_grad():
            gen = model.generate(ids, max_new_tokens=params["sample_max_new_tokens"], do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        assert tokenizer.decode(gen[0, ids.shape[1]:], skip_special_tokens=True) == sample["completion"], sample
    return summary


def _running_runs(repo: Path) -> int:
    with sqlite3.connect(repo / "mlruns.db") as db:
        return int(db.execute("select count(*) from runs where status = 'RUNNING'").fetchone()[0])


@pytest.mark.timeout(2400)
def test_a_bert_checkpoint_is_fine_tuned_distilled_evaluated_registered_and_served(
        finished_run: FinishedRun) -> None:
    from tasks.modeling.source import content_digest

    repo = finished_run.repo
    env = {"PREFECT_API_URL": ""}
    lock_before = (repo / "dvc.lock").read_text()

    # a hub id while the hub cannot be reached: one clear error naming the setting, nothing written or left running
    _finetune(repo, checkpoint={"path": "someone/tiny-bert", "revision": "v1"},
              tasks=[{"name": "doc_section", "type": "classification", "data": [{"kind": "default"}]}])
    port = _free_port()
    res = run_cli(repo, "run", timeout=600, HF_ENDPOINT=f"http://127.0.0.1:{port}", HF_HUB_OFFLINE="0",
                  HF_HUB_ETAG_TIMEOUT="2", HF_HUB_DOWNLOAD_TIMEOUT="2", HF_HOME=str(repo.parent / "hf-home"), **env)
    assert res.returncode == 2, res.stdout[-3000:] + res.stderr[-3000:]
    assert "finetune.checkpoint.path 'someone/tiny-bert' at revision 'v1' could not be fetched" in res.stderr
    assert "Traceback" not in res.stderr and (repo / "dvc.lock").read_text() == lock_before
    assert _running_runs(repo) == 0

    # a local checkpoint directory: a DVC dep of finetune (and evaluate, which probes it untouched)
    texts = [json.loads(line)["text"] for f in sorted((repo / "data/dedup/train").glob("*.jsonl"))
             for line in f.read_text().splitlines()][:400]
    save_checkpoint("bert", repo / "hf" / "bert", texts=texts, positions=512)
    # 30 steps: the loading, export, evaluation and serving of a checkpoint are checked here, not how well it learns
    _finetune(repo, checkpoint={"path": "hf/bert"}, max_length=512, steps=30, eval_every=15, checkpoint_every=15)
    data = yaml.safe_load((repo / "params.yaml").read_text())
    data["distill"]["student"] = {}  # the default, relative to the teacher (the shared run sets a Llama shape)
    (repo / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    status = run_cli(repo, "status", **env)
    assert "finetune.checkpoint: local checkpoint hf/bert" in status.stdout, status.stdout
    res = run_cli(repo, "run", timeout=1800, **env)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    for stage in ("finetune", "distill", "evaluate"):
        assert f"{stage}: ran" in res.stdout, res.stdout
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    assert "hf/bert" in stages["finetune"]["deps"] and "hf/bert" in stages["evaluate"]["deps"]
    assert "models/base" not in stages["finetune"]["deps"]

    # the fine-tuned classifier and its student are BERTs that plain transformers loads
    tuned = json.loads((repo / "models/finetuned/doc_section/config.json").read_text())
    assert tuned["architectures"] == ["BertForSequenceClassification"] and tuned["num_hidden_layers"] == 2
    student = json.loads((repo / "models/student/doc_section/config.json").read_text())
    assert student["model_type"] == "bert" and student["num_hidden_layers"] == 1
    summary = json.loads((repo / "models/finetuned/finetune_summary.json").read_text())
    assert summary["base_checkpoint"]["digest"] == content_digest(repo / "hf" / "bert")[0]

    # evaluate: the untouched checkpoint's linear probe beside the fine-tuned model, with intervals
    metrics = json.loads((repo / "metrics/evaluate.json").read_text())
    probe = {k: v for k, v in metrics.items() if "checkpoint_probe" in k and "macro_f1" in k}
    assert probe, sorted(metrics)[:50]
    card = (repo / "reports/evaluate/cards/finetuned/doc_section/README.md").read_text()
    assert "hf/bert" in card and content_digest(repo / "hf" / "bert")[0] in card

    # the registered version names its base checkpoint and serves as the README says
    import mlflow

    store = f"sqlite:///{repo / 'mlruns.db'}"  # the run's own store (registry too: the test process may name another)
    mlflow.set_tracking_uri(store)
    mlflow.set_registry_uri(store)
    # this run's fine-tuned version (the gate may keep the shared run's champion: it decides on the scores)
    client = mlflow.MlflowClient(tracking_uri=store, registry_uri=store)
    version = max((v for v in client.search_model_versions("name='lmforge-doc_section'")
                   if v.tags.get("lmforge.model") == "finetuned"), key=lambda v: int(v.version))
    assert content_digest(repo / "hf" / "bert")[0] in version.tags.get("lmforge.digest.base_checkpoint", "")
    model = mlflow.pyfunc.load_model(f"models:/lmforge-doc_section/{version.version}")
    import pandas as pd

    out = model.predict(pd.DataFrame({"text": ["The for statement iterates over the items of any sequence."]}))
    labels = set(json.loads((repo / "data/finetune/manifest.json").read_text())["tasks"]["doc_section"]["labels"])
    assert len(out) == 1 and str(out.iloc[0]["label"] if hasattr(out, "iloc") else out[0]["label"]) in labels

    # LoRA on the encoder through the CLI: finetune alone re-runs; the merged classifier is a plain BERT again
    _refinetune(repo, "lora")
    assert json.loads((repo / "models/finetuned/doc_section/config.json").read_text())["architectures"] == [
        "BertForSequenceClassification"]


@pytest.mark.timeout(2400)
def test_a_gpt2_checkpoint_is_pretrained_further_then_fine_tuned_with_lora_on_both_task_types(
        finished_run: FinishedRun) -> None:
    """Continued pretraining from a causal LM (its own tokenizer packs the corpus), then LoRA on a classification and
    an sft task on the result, distilled and evaluated beside the untouched checkpoint's LM figures."""
    repo = finished_run.repo
    env = {"PREFECT_API_URL": ""}
    texts = [json.loads(line)["text"] for f in sorted((repo / "data/dedup/train").glob("*.jsonl"))
             for line in f.read_text().splitlines()][:400]
    save_checkpoint("gpt2", repo / "hf" / "gpt2", texts=texts, positions=256)
    data = yaml.safe_load((repo / "params.yaml").read_text())
    data["pretrain"].update(checkpoint={"path": "hf/gpt2"}, steps=40, eval_every=20, checkpoint_every=20,
                            warmup_steps=5)
    data["finetune"].update(strategy="lora", steps=40, eval_every=20, checkpoint_every=20, lr=0.003)
    data["distill"]["student"] = {}  # the default: half the teacher's layers, half its MLP
    (repo / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    res = run_cli(repo, "run", timeout=1800, **env)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    for stage in ("tokenizer", "pretrain", "finetune", "distill", "evaluate"):
        assert f"{stage}: ran" in res.stdout, res.stdout

    base = json.loads((repo / "models/base/config.json").read_text())
    assert base["model_type"] == "gpt2" and (repo / "models/base/base_checkpoint.json").is_file()
    assert json.loads((repo / "models/finetuned/doc_section/config.json").read_text())["architectures"] == [
        "GPT2ForSequenceClassification"]
    assert json.loads((repo / "models/finetuned/docstring/config.json").read_text())["architectures"] == [
        "GPT2LMHeadModel"]
    assert (repo / "models/finetuned/adapter/adapter_config.json").is_file()
    tokenizer = json.loads((repo / "metrics/tokenizer.json").read_text())
    assert tokenizer["bpe.val.bytes_per_token"] > 0 and tokenizer["val.tokens_vs_bpe"] > 0
    metrics = json.loads((repo / "metrics/evaluate.json").read_text())
    # the untouched checkpoint beside the model pretrained further from it, on the same test documents
    assert metrics["checkpoint.lm.documents"] == metrics["base.lm.documents"] > 0
    assert metrics["base.lm.bits_per_byte"] < metrics["checkpoint.lm.bits_per_byte"]

    import mlflow

    store = f"sqlite:///{repo / 'mlruns.db'}"
    mlflow.set_tracking_uri(store)
    mlflow.set_registry_uri(store)
    client = mlflow.MlflowClient(tracking_uri=store, registry_uri=store)  # this run's version, champion or not
    version = max((v for v in client.search_model_versions("name='lmforge-docstring'")
                   if v.tags.get("lmforge.model") == "finetuned"), key=lambda v: int(v.version))
    model = mlflow.pyfunc.load_model(f"models:/lmforge-docstring/{version.version}")
    import pandas as pd

    out = model.predict(pd.DataFrame({"text": ["def sorted(iterable, key=None):"]}))
    assert len(out) == 1

    # full fine-tuning of the decoder through the CLI: both task types, every weight trained
    summary = _refinetune(repo, "full")
    assert sorted(e["type"] for e in summary["tasks"].values()) == ["classification", "sft"]
    assert summary["trainable_params"] == summary["params"]
