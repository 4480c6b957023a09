"""Continued pretraining from a Hugging Face checkpoint (``pretrain.checkpoint``) through the tokenizer and pretrain
stages: tiny GPT-2 and Llama checkpoints of their own (tests/assets/checkpoints.py) with their own tokenizers; an
encoder and an unreachable hub are exit code 2 before anything is written."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.config import load_params
from tests.assets.checkpoints import save_checkpoint
from tests.conftest import run_cli, subprocess_env
from tests.flows.test_pretrain import TINY
from tests.tasks.training.corpus import documents, write_split

pytestmark = pytest.mark.slow

CONTINUED = {**TINY, "steps": 20, "warmup_steps": 2, "lr": 0.002, "min_lr": 0.0002, "eval_every": 10,
             "checkpoint_every": 10}
"""Few steps on the tiny corpus; ``model`` stays in (TINY's): it is ignored with a checkpoint."""


def _prepare(repo: Path, checkpoint: dict[str, Any], **sections: dict[str, Any]) -> None:
    for split, (n, seed) in {"train": (300, 0), "val": (40, 1), "test": (20, 2)}.items():
        write_split(repo / "data/dedup" / split, documents(n, seed))
    data = yaml.safe_load((repo / "params.yaml").read_text())
    data["tokenizer"]["vocab_size"] = 300
    data["pretrain"] = {**CONTINUED, "checkpoint": checkpoint}
    for name, values in sections.items():
        data[name] = {**data[name], **values}
    (repo / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def _checkpoint_val_loss(model_dir: Path, tokens_dir: Path, *, context: int, batch_size: int, batches: int) -> float:
    """The untouched checkpoint's mean loss on the val windows the recipe evaluates, with plain transformers."""
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM

    from tasks.tokens import load_tokens
    from tasks.training.data import val_windows

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    losses = []
    with torch.no_grad():
        for x, y in val_windows(load_tokens(tokens_dir, "val"), context, batch_size, batches, 0, 1):
            logits = model(input_ids=x).logits
            losses.append(F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1)).item())
    return sum(losses) / len(losses)


def _runs(repo: Path) -> dict[str, Any]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlruns.db'}")
    experiment = client.get_experiment_by_name("lmforge").experiment_id
    return {r.info.run_name: r for r in client.search_runs([experiment])}


@pytest.mark.parametrize(("architecture", "model_class"), [("gpt2", "GPT2LMHeadModel"),
                                                            ("llama", "LlamaForCausalLM")])
def test_continued_pretraining_from_a_checkpoint(architecture: str, model_class: str, repo_copy: Path,
                                                 prefect_api: str) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from flows.pretrain import pretrain
    from flows.tokenizer import tokenizer
    from tasks.modeling.source import content_digest
    from tasks.tokens import load_tokens, read_manifest

    ckpt = save_checkpoint(architecture, repo_copy / "base-checkpoints" / architecture)
    digest, _ = content_digest(ckpt)
    _prepare(repo_copy, {"path": f"base-checkpoints/{architecture}"})
    params = load_params(repo_copy)
    assert params.tokenizer.data_deps(repo_copy) == ["data/dedup", f"base-checkpoints/{architecture}"]
    assert params.pretrain.data_deps(repo_copy) == ["data/tokens", "models/tokenizer",
                                                    f"base-checkpoints/{architecture}"]

    tok_stats = tokenizer(params=params, root=repo_copy)
    own = AutoTokenizer.from_pretrained(str(ckpt))
    published = AutoTokenizer.from_pretrained(str(repo_copy / "models/tokenizer"))
    assert len(published) == len(own) == tok_stats["vocab_size"] and published.get_vocab() == own.get_vocab()
    assert published.pad_token == (own.eos_token if own.pad_token is None else own.pad_token)
    # the corpus is packed with the checkpoint's ids: every val document, then EOS
    manifest = read_manifest(repo_copy / "data/tokens")
    expected = [i for text in documents(40, 1) for i in [*own(text, add_special_tokens=False).input_ids,
                                                          own.eos_token_id]]
    assert load_tokens(repo_copy / "data/tokens", "val").tolist() == expected
    assert manifest["vocab_size"] == len(own) and manifest["eos_id"] == own.eos_token_id
    metrics = json.loads((repo_copy / "metrics/tokenizer.json").read_text())
    # both tokenizers measured on val: the checkpoint's (published) and lmforge's BPE trained in passing
    assert metrics["val.tokens"] == len(expected) - 40 and 0 < metrics["bpe.vocab_size"] <= 300
    assert metrics["val.bytes_per_token"] > 0 and metrics["bpe.val.bytes_per_token"] > 0
    assert metrics["val.tokens_vs_bpe"] == round(metrics["val.tokens"] / metrics["bpe.val.tokens"], 4)
    assert json.loads((repo_copy / "models/tokenizer/base_checkpoint.json").read_text())["digest"] == digest

    stats = pretrain(params=params, root=repo_copy)
    base = repo_copy / "models/base"
    config = json.loads((base / "config.json").read_text())
    assert config["model_type"] == architecture and config["architectures"] == [model_class]
    assert stats["steps"] == 20 and stats["params"] == sum(
        p.numel() for p in {id(p): p for p in AutoModelForCausalLM.from_pretrained(str(ckpt)).parameters()}.values())
    provenance = json.loads((base / "base_checkpoint.json").read_text())
    assert provenance["digest"] == digest and provenance["source"] == f"base-checkpoints/{architecture}"
    assert provenance["model_type"] == architecture and "dir" not in provenance
    # the step-0 evaluation is the checkpoint's own val loss on the same tokens; training lowered it
    summary = json.loads((base / "train_summary.json").read_text())
    untouched = _checkpoint_val_loss(ckpt, repo_copy / "data/tokens", context=CONTINUED["context"],
                                     batch_size=CONTINUED["batch_size"], batches=CONTINUED["eval_batches"])
    assert summary["val_history"][0]["step"] == 0
    assert summary["val_history"][0]["val_loss"] == pytest.approx(untouched, abs=1e-4)
    assert stats["final_val_loss"] < untouched - 0.5, summary["val_history"]
    model = AutoModelForCausalLM.from_pretrained(str(base))
    tok = AutoTokenizer.from_pretrained(str(base))
    out = model.generate(**tok("the cat", return_tensors="pt"), max_new_tokens=4, do_sample=False,
                         pad_token_id=tok.pad_token_id)
    assert out.shape[1] > len(tok("the cat").input_ids)
    # the checkpoint is an input of both stage runs, by its content digest
    runs = _runs(repo_copy)
    for stage in ("tokenizer", "pretrain"):
        run = runs[stage]
        assert run.data.tags["lmforge.base_checkpoint.digest"] == digest
        inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
        assert f"checkpoint:base-checkpoints/{architecture}" in inputs


def _stage(repo: Path, stage: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m flows.STAGE`` in ``repo``, as dvc.yaml runs it (no Prefect API: the plain function)."""
    return subprocess.run([sys.executable, "-m", f"flows.{stage}"], cwd=repo, capture_output=True, text=True,
                          timeout=300, env=subprocess_env(PREFECT_API_URL="", **env))


def _nothing_written(repo: Path) -> None:
    for out in ("models/tokenizer", "data/tokens", "models/base", "metrics/tokenizer.json", "metrics/pretrain.json",
                "checkpoints"):
        assert not (repo / out).exists(), out
    if (repo / "mlruns.db").exists():  # no run left RUNNING (none started at all)
        with sqlite3.connect(repo / "mlruns.db") as db:
            assert db.execute("select count(*) from runs where status = 'RUNNING'").fetchone() == (0,)


@pytest.mark.parametrize("stage", ["tokenizer", "pretrain"])
def test_an_encoder_checkpoint_is_exit_2_before_anything_is_written(stage: str, repo_copy: Path) -> None:
    save_checkpoint("bert", repo_copy / "base-checkpoints" / "bert")
    _prepare(repo_copy, {"path": "base-checkpoints/bert"})
    res = _stage(repo_copy, stage)
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    assert "pretrain.checkpoint:" in res.stderr and "bert encoder, which cannot generate" in res.stderr
    assert "Traceback" not in res.stderr
    _nothing_written(repo_copy)


@pytest.mark.parametrize("stage", ["tokenizer", "pretrain", "lmforge run"])
def test_an_unreachable_hub_is_exit_2_before_anything_is_written(stage: str, repo_copy: Path, tmp_path: Path) -> None:
    _prepare(repo_copy, {"path": "lmforge-tests/tiny-gpt2", "revision": "main"},
             operations={"retries": {"attempts": 1}})
    hub = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf")}
    # `lmforge run pretrain`: every planned stage's preflight runs before the pipeline's MLflow run opens
    res = run_cli(repo_copy, "run", "pretrain", PREFECT_API_URL="", **hub) if stage == "lmforge run" else \
        _stage(repo_copy, stage, **hub)
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    assert ("pretrain.checkpoint.path 'lmforge-tests/tiny-gpt2' at revision 'main' could not be fetched from the "
            "Hugging Face hub") in res.stderr and "Traceback" not in res.stderr
    _nothing_written(repo_copy)
