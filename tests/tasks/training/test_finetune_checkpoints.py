"""The finetune recipe on checkpoints lmforge did not train: tiny BERT, GPT-2 and Llama checkpoints saved with their
own tokenizers (tests/assets/checkpoints.py), each fine-tuned in full and with LoRA through
``python -m tasks.training.finetune``. Every run learns (its best validation loss beats the start), exports the
architecture's own ``AutoModelForSequenceClassification`` (and a causal LM for sft on the decoders) that predicts
what the summary's test metrics say; an encoder asked for an sft task is exit 2 before any work."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.assets.checkpoints import ARCHITECTURES, save_checkpoint
from tests.tasks.training.finetune_fixtures import finetune, run_config, write_examples


@pytest.fixture(scope="module")
def roots(data: dict[str, Path]) -> dict[str, Path]:
    root = data["root"] / "ft-checkpoints"
    return {"root": root, "both": write_examples(root / "both"),
            "classification": write_examples(root / "classification", tasks=("topic",))}


def config_for(roots: dict[str, Path], architecture: str, strategy: str, tmp: Path, **over: Any) -> Path:
    base = save_checkpoint(architecture, roots["root"] / "checkpoints" / architecture) \
        if not (roots["root"] / "checkpoints" / architecture / "config.json").is_file() \
        else roots["root"] / "checkpoints" / architecture
    # the sft task on the Llama (GPT-2's sft export is checked by the e2e and distill tests): with both tasks a random
    # tiny model gets half the steps for each, and these runs must stay short
    examples = roots["both"] if architecture == "llama" else roots["classification"]
    inputs = {"examples": examples, "base": base, "tokenizer": base, "tokens": None}
    lora = {"strategy": "lora", "lora": {"rank": 4, "alpha": 8.0, "dropout": 0.0}} if strategy == "lora" else {}
    config = run_config(inputs, tmp / f"{architecture}-{strategy}", **{"steps": 24, "eval_every": 8, **lora, **over})
    cfg = json.loads(config.read_text())
    cfg["tokens_dir"] = None  # a checkpoint's own tokenizer: no lmforge tokens to compare with
    config.write_text(json.dumps(cfg))
    return config


@pytest.mark.slow  # real training runs in subprocesses
@pytest.mark.parametrize("strategy", ["full", "lora"])
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_a_checkpoint_of_each_architecture_fine_tunes_and_exports_its_own_auto_classes(
        roots: dict[str, Path], tmp_path: Path, architecture: str, strategy: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from tasks.examples import load_split
    from tasks.modeling.encoding import collate, encode

    config = config_for(roots, architecture, strategy, tmp_path, lr=1e-2, steps=32)
    res = finetune(config)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = config.parent / "model"
    summary = json.loads((out / "finetune_summary.json").read_text())
    test = summary["tasks"]["topic"]["test"]
    if strategy == "full":  # it learned: an evaluation beats the untrained start (random tiny models vary in speed)
        start = summary["history"][0]["tasks"]["topic"]
        assert min(h["tasks"]["topic"]["loss"] for h in summary["history"][1:]) < start["loss"], summary["history"]
    else:  # the adapters trained (B starts at zero; the last checkpoint: the best evaluation may be the first)
        assert (out / "adapter" / "adapter_config.json").is_file()
        ckpt = config.parent / "ckpt"
        state = torch.load(ckpt / (ckpt / "latest").read_text().strip() / "mp_rank_00_model_states.pt",
                           map_location="cpu", weights_only=False)["module"]
        b = [v for k, v in state.items() if "lora_B" in k]
        assert b and all(float(v.abs().max()) > 0 for v in b)
        assert summary["trainable_params"] < summary["params"] / 2
    # the exported classifier is transformers' own class for the architecture; it predicts what the summary says
    model = AutoModelForSequenceClassification.from_pretrained(str(out / "topic")).eval()
    assert model.config.model_type == architecture and type(model).__name__.endswith("ForSequenceClassification")
    tokenizer = AutoTokenizer.from_pretrained(str(out / "topic"))
    rows = load_split(Path(json.loads(config.read_text())["examples_dir"]), "topic", "test")
    enc = encode(rows, kind="classification", tokenizer=tokenizer, max_length=64, labels=["pets", "sky"])
    x, mask, y = collate(enc["ids"], enc["targets"], pad_id=tokenizer.pad_token_id, kind="classification")
    with torch.no_grad():
        predicted = model(input_ids=x, attention_mask=mask).logits.argmax(-1)
    assert float((predicted == y).float().mean()) == pytest.approx(test["accuracy"], abs=1e-9)
    if architecture == "llama":  # the decoder also learned the sft task and exports a causal LM
        lm = AutoModelForCausalLM.from_pretrained(str(out / "complete"))
        assert lm.config.model_type == architecture
        assert summary["tasks"]["complete"]["test"]["perplexity"] < summary["history"][0]["tasks"]["complete"][
            "perplexity"]


def test_an_encoder_with_an_sft_task_is_exit_2_before_any_work(roots: dict[str, Path], tmp_path: Path) -> None:
    config = config_for(roots, "bert", "full", tmp_path)
    cfg = json.loads(config.read_text())
    cfg["examples_dir"] = str(roots["both"])  # classification and sft
    config.write_text(json.dumps(cfg))
    res = finetune(config, timeout=60)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "bert encoder, which cannot generate" in res.stderr and "Traceback" not in res.stderr
    assert not (config.parent / "ckpt").exists() and not (config.parent / "model").exists()
