"""Export: a loadable Hugging Face model directory, published atomically, the same bytes for the same weights."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tasks.modeling.export import SAMPLES_FILE, SUMMARY_FILE, export_model

SHAPE = {"vocab_size": 300, "hidden_size": 32, "num_layers": 1, "num_heads": 2, "num_kv_heads": 2,
         "intermediate_size": 64, "max_position_embeddings": 32, "bos_token_id": 0, "eos_token_id": 1,
         "pad_token_id": 2}


def _export(data: dict[str, Path], out: Path, dtype: str = "float32") -> dict[str, str]:
    import torch

    from tasks.modeling.llama import build_llama

    torch.manual_seed(0)
    state = build_llama(**SHAPE).state_dict()
    export_model(state, out_dir=out, tokenizer_dir=data["tokenizer"], model_kwargs=SHAPE, dtype=dtype,
                 summary={"steps": 0}, sample_prompts=["the cat"], sample_max_new_tokens=4)
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir())}


def test_export_loads_generates_and_repeats_byte_for_byte(data: dict[str, Path], tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    out = tmp_path / "model"
    first = _export(data, out)
    assert {"model.safetensors", "config.json", "tokenizer.json", SAMPLES_FILE, SUMMARY_FILE} <= first.keys()
    assert json.loads((out / SUMMARY_FILE).read_text()) == {"steps": 0}
    assert json.loads((out / SAMPLES_FILE).read_text())[0]["prompt"] == "the cat"
    assert AutoModelForCausalLM.from_pretrained(out).dtype.__str__() == "torch.float32"
    # leftovers of a writer killed mid-export are swept; the new export replaces the old one whole
    (tmp_path / ".model.tmp-99999").mkdir()
    (tmp_path / ".model.old-99999").mkdir()
    assert _export(data, out) == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_failed_export_keeps_the_previous_model(data: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "model"
    before = _export(data, out)
    from tasks.modeling.llama import build_llama

    # the weights are written, then the tokenizer cannot be read: nothing half-written is published
    with pytest.raises(OSError):
        export_model(build_llama(**SHAPE).state_dict(), out_dir=out, tokenizer_dir=tmp_path / "no-tokenizer",
                     model_kwargs=SHAPE, dtype="float32", summary={}, sample_prompts=[], sample_max_new_tokens=1)
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir())} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
