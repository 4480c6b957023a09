"""The pretrain recipe started from a checkpoint (continued pretraining): weights only, step 0, the checkpoint's
architecture exported with its provenance; a SIGKILLed run resumes to the uninterrupted result (resuming stays
separate from initialising); bad checkpoints and contexts exit 2 before training. Real runs of ``python -m
tasks.training.pretrain`` on a tiny GPT-2 checkpoint (with dropout: the resumed RNG states matter) and tokens packed
with its own tokenizer by the tokenizer stage's tasks."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.assets.checkpoints import save_checkpoint
from tests.conftest import BIN, REPO
from tests.tasks.training.corpus import documents, write_split
from tests.tasks.training.test_pretrain import config, config_path, env, pretrain, run_stats, summary, weights

SETTING = "pretrain.checkpoint"


@pytest.fixture(scope="module")
def ckpt_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny GPT-2 checkpoint, its tokenizer adopted and the corpus packed with it, as the tokenizer stage does."""
    from tasks.modeling.source import check, describe
    from tasks.tokenizer.packing import pack_splits
    from tasks.tokenizer.pretrained import adopt_tokenizer

    root = tmp_path_factory.mktemp("continued")
    ckpt = save_checkpoint("gpt2", root / "gpt2")
    provenance = describe(ckpt, source="gpt2-tiny", revision=None,
                          config=check(ckpt, setting=SETTING, needs_decoder=True)).provenance()
    adopt_tokenizer(checkpoint_dir=ckpt, out_dir=root / "tokenizer", provenance=provenance, setting=SETTING)
    dirs = {name: write_split(root / "dedup" / name, documents(n, seed))
            for name, (n, seed) in {"train": (400, 0), "val": (40, 1)}.items()}
    pack_splits(split_dirs=dirs, tokenizer_dir=root / "tokenizer", out_dir=root / "tokens")
    return {"root": root, "tokens": root / "tokens", "tokenizer": root / "tokenizer", "ckpt": ckpt,
            "base_checkpoint": {"dir": str(ckpt), "provenance": provenance}}


def continued(data: dict[str, Any], name: str, **over: Any) -> dict[str, Any]:
    return config(data, name, **{"base_checkpoint": data["base_checkpoint"], "steps": 30, **over})


@pytest.fixture(scope="module")
def reference(ckpt_data: dict[str, Any]) -> dict[str, Any]:
    cfg = continued(ckpt_data, "reference")
    res = pretrain(cfg)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return {"cfg": cfg, "stdout": res.stdout}


@pytest.mark.slow  # real training runs in subprocesses
def test_a_checkpoint_run_starts_from_its_weights_at_step_0_and_exports_its_architecture(
        ckpt_data: dict[str, Any], reference: dict[str, Any]) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = Path(reference["cfg"]["out_dir"])
    assert "pretrain: continued pretraining from gpt2-tiny (gpt2, 2 layers, hidden 32)" in reference["stdout"]
    assert "(pretrain.model) are ignored" in reference["stdout"] and "resumed from" not in reference["stdout"]
    s = summary(reference["cfg"])
    # weights only: step 0 is evaluated and is the checkpoint itself; fresh optimizer and schedule from there
    assert s["val_history"][0]["step"] == 0 and s["steps"] == 30 and run_stats(reference["cfg"])["tokens_this_run"] \
        == 30 * 8 * 2 * 64
    assert s["final_val_loss"] < s["val_history"][0]["val_loss"] - 1.0, s["val_history"]
    config_json = json.loads((out / "config.json").read_text())
    assert config_json["model_type"] == "gpt2" and config_json["architectures"] == ["GPT2LMHeadModel"]
    assert config_json["n_layer"] == 2 and config_json["n_embd"] == 32  # the checkpoint's, not pretrain.model's
    assert json.loads((out / "base_checkpoint.json").read_text()) == ckpt_data["base_checkpoint"]["provenance"]
    trained = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    base = AutoModelForCausalLM.from_pretrained(str(ckpt_data["ckpt"])).eval()
    assert trained.state_dict().keys() == base.state_dict().keys()
    assert any((trained.state_dict()[k] - base.state_dict()[k]).abs().max() > 1e-3 for k in base.state_dict())
    tok = AutoTokenizer.from_pretrained(str(out))
    assert tok.pad_token == tok.eos_token == "<|endoftext|>"
    with torch.no_grad():
        gen = trained.generate(**tok("the dog", return_tensors="pt"), max_new_tokens=4, do_sample=False,
                               pad_token_id=tok.pad_token_id)
    assert gen.shape[1] > len(tok("the dog").input_ids)
    assert json.loads((out / "samples.json").read_text())[0]["prompt"] == "the cat"


@pytest.mark.slow  # real training runs in subprocesses
def test_a_sigkilled_checkpoint_run_resumes_to_the_uninterrupted_result(ckpt_data: dict[str, Any],
                                                                        reference: dict[str, Any]) -> None:
    cfg = continued(ckpt_data, "killed")
    ckpt = Path(cfg["checkpoint_dir"])
    proc = subprocess.Popen([sys.executable, "-m", "tasks.training.pretrain", "--config", str(config_path(cfg))],
                            cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 180
    while not (ckpt / "latest").is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed mid-training"
    killed_at = int((ckpt / "latest").read_text().strip()[4:])
    assert 10 <= killed_at < 30 and not Path(cfg["out_dir"]).exists()

    # resuming: the run's own checkpoint (weights, optimizer, step, data position, RNG), not the base checkpoint
    res = pretrain(cfg)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert f"resumed from {ckpt}" in res.stdout and f"at step {killed_at}" in res.stdout
    assert run_stats(cfg)["resumed_from_step"] == killed_at
    s, ref = summary(cfg), summary(reference["cfg"])
    assert s["steps"] == 30 and s["final_val_loss"] == pytest.approx(ref["final_val_loss"], abs=1e-5)
    mine, theirs = weights(cfg["out_dir"]), weights(reference["cfg"]["out_dir"])
    assert mine.keys() == theirs.keys()
    for key in mine:
        assert (mine[key] - theirs[key]).abs().max().item() < 1e-5, key


@pytest.mark.slow  # real training runs in subprocesses
def test_resuming_with_another_base_checkpoint_is_refused(ckpt_data: dict[str, Any],
                                                          reference: dict[str, Any]) -> None:
    from tasks.modeling.checkpoint import check_resume
    from tasks.modeling.errors import ConfigError
    from tasks.training.pretrain import PretrainConfig, run_identity

    digest = ckpt_data["base_checkpoint"]["provenance"]["digest"]
    other = {**ckpt_data["base_checkpoint"], "provenance": {**ckpt_data["base_checkpoint"]["provenance"],
                                                            "digest": "sha256:" + "0" * 64}}
    cfg = PretrainConfig.model_validate({**reference["cfg"], "base_checkpoint": other})
    with pytest.raises(ConfigError, match=f"base_checkpoint: '{digest}' -> 'sha256:0000"):
        check_resume(checkpoint_dir=cfg.checkpoint_dir, identity=run_identity(cfg))
    # through the recipe the tokens (packed with the first checkpoint's tokenizer) are refused even before that
    res = pretrain(config(ckpt_data, "other-base", base_checkpoint=other, steps=30,
                          checkpoint_dir=reference["cfg"]["checkpoint_dir"]), timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert "come from checkpoint 'gpt2-tiny', not from this checkpoint (sha256:0000000000" in res.stderr


@pytest.mark.slow  # real training runs in subprocesses
def test_zero3_loads_each_partition_and_trains_as_zero2_does(ckpt_data: dict[str, Any]) -> None:
    # two processes each loading only its ZeRO-3 shard (deepspeed.zero.Init) must train the same model as ZeRO-2
    # with whole copies; a partitioned parameter is judged by its full shape for weight decay
    outs = {}
    for zero in (3, 2):
        cfg = continued(ckpt_data, f"zero{zero}", zero_stage=zero, steps=10, batch_size=4, grad_accum=1,
                        log_every=5, eval_every=10, checkpoint_every=10)
        res = subprocess.run([str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "-m",
                              "tasks.training.pretrain", "--config", str(config_path(cfg))],
                             cwd=REPO, env=env(), capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        assert ("(ZeRO-3: each process loaded its partition)" in res.stdout) == (zero == 3), res.stdout[-2000:]
        outs[zero] = cfg
    assert summary(outs[3])["world_size"] == 2 and summary(outs[3])["zero_stage"] == 3
    mine, theirs = weights(outs[3]["out_dir"]), weights(outs[2]["out_dir"])
    assert mine.keys() == theirs.keys()
    for key in mine:
        assert (mine[key] - theirs[key]).abs().max().item() < 1e-5, key


@pytest.mark.parametrize(("name", "over", "message"), [
    ("context", {"context": 256}, "pretrain.context 256 exceeds the 128 positions of pretrain.checkpoint "
                                  "(n_positions in its config.json): lower pretrain.context to at most 128"),
    ("bpe_tokens", {"tokens_dir": "BPE", "tokenizer_dir": "BPE"},
     "pretrain.checkpoint: {tokenizer} and the packed tokens come from lmforge's own BPE, not from this checkpoint"),
    ("encoder", {"base_checkpoint": "BERT"}, "is a bert encoder, which cannot generate"),
])
def test_bad_checkpoint_configs_exit_2_before_training(ckpt_data: dict[str, Any], data: dict[str, Path], name: str,
                                                       over: dict[str, Any], message: str) -> None:
    if over.get("tokens_dir") == "BPE":  # the training tests' tokens, packed with a BPE of lmforge's own
        over = {"tokens_dir": str(data["tokens"]), "tokenizer_dir": str(data["tokenizer"])}
        message = message.format(tokenizer=data["tokenizer"])
    if over.get("base_checkpoint") == "BERT":
        bert = save_checkpoint("bert", ckpt_data["root"] / "bert")
        over = {"base_checkpoint": {"dir": str(bert), "provenance": {"digest": "sha256:bert"}}}
    cfg = config(ckpt_data, f"bad-{name}", **{"base_checkpoint": ckpt_data["base_checkpoint"], **over})
    start = time.monotonic()
    res = pretrain(cfg, timeout=60)
    assert res.returncode == 2, res.stdout + res.stderr
    assert message in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert time.monotonic() - start < 30 and not Path(cfg["checkpoint_dir"]).exists()


@pytest.mark.parametrize(("precision", "dtype"), [("bf16", "bfloat16"), ("fp32", "float32")])
def test_weights_load_in_the_precision_of_the_run(ckpt_data: dict[str, Any], precision: str, dtype: str) -> None:
    from tasks.training.continued import load_model

    model = load_model(ckpt_data["ckpt"], precision=precision)
    assert {str(p.dtype) for p in model.parameters()} == {f"torch.{dtype}"}
    assert model.training and model.config.use_cache is False
