"""What a saved model is, read from its files: the parameters torch counts, for float and int8 weights alike; which
of a task's models exist; clear errors for a directory that holds no model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.evaluate.models import ModelFilesError, model_facts, task_models


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama with a tied head, saved as the pipeline saves its models."""
    import torch

    from tasks.modeling.llama import build_llama

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("facts") / "lm"
    build_llama(vocab_size=288, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=64,
                max_position_embeddings=96).save_pretrained(str(out))
    return out


def test_facts_are_what_the_loaded_model_says(lm_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(lm_dir))
    facts = model_facts(lm_dir)
    assert facts.parameters == sum(p.numel() for p in model.parameters()) == model.num_parameters()
    assert (facts.architecture, facts.model_type, facts.quantization) == ("LlamaForCausalLM", "llama", None)
    assert (facts.layers, facts.hidden_size, facts.attention_heads, facts.vocab_size, facts.context) == (
        model.config.num_hidden_layers, model.config.hidden_size, model.config.num_attention_heads,
        model.config.vocab_size, model.config.max_position_embeddings)
    assert facts.weight_bytes == (lm_dir / "model.safetensors").stat().st_size
    assert model.config.tie_word_embeddings  # the head shares the embedding: counted once, as torch counts it


def test_int8_weights_count_their_values_not_their_scales(lm_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    from tasks.modeling.quantize import load_int8, quantize_int8, save_int8

    model = AutoModelForCausalLM.from_pretrained(str(lm_dir))
    save_int8(quantize_int8(model), tmp_path / "int8")
    facts = model_facts(tmp_path / "int8")
    # int8 values plus a scale and zero point per row; the quantized head no longer shares the embedding's table, so
    # the int8 model holds the head's values too: the count is that of the model as it loads, not the float one's
    loaded = load_int8(tmp_path / "int8")
    assert facts.quantization == "torchao" and facts.parameters == loaded.num_parameters()
    assert facts.parameters == model.num_parameters() + model.lm_head.weight.numel()
    assert facts.weight_bytes < model_facts(lm_dir).weight_bytes


def test_task_models_lists_what_was_exported_in_order(tmp_path: Path) -> None:
    for d in ("finetuned/qa", "student/variants/int8/qa", "student/qa", "student/variants/magnitude/topic"):
        (tmp_path / d).mkdir(parents=True)
        (tmp_path / d / "config.json").write_text("{}")
    (tmp_path / "student/variants/structured/qa").mkdir(parents=True)  # no config.json: not exported
    found = task_models(finetuned_dir=tmp_path / "finetuned", student_dir=tmp_path / "student", task="qa")
    assert list(found) == ["finetuned", "student", "int8"]
    assert found["int8"] == tmp_path / "student/variants/int8/qa"


def test_a_directory_without_a_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelFilesError, match="no readable config.json"):
        model_facts(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(ModelFilesError, match="no \\*.safetensors"):
        model_facts(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x01")
    with pytest.raises(ModelFilesError, match="cannot read the safetensors header"):
        model_facts(tmp_path)
