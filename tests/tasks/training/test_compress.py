"""Compression components of the distill stage on tiny random Llamas: magnitude pruning and its masks, structured
pruning through a plain transformers save/load, Taylor importance, torchao int8 and its loader."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from tasks.modeling import quantize
from tasks.training import prune

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")


def tiny_llama(*, kv_heads: int = 4, hidden: int = 32, seed: int = 0) -> Any:
    import torch

    from tasks.modeling.llama import build_llama

    torch.manual_seed(seed)
    return build_llama(vocab_size=64, hidden_size=hidden, num_layers=2, num_heads=4, num_kv_heads=kv_heads,
                       intermediate_size=2 * hidden, max_position_embeddings=32).eval()


def tiny_classifier(*, hidden: int = 64, seed: int = 0) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=64, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=4, intermediate_size=2 * hidden, max_position_embeddings=32,
                         num_labels=3, pad_token_id=0, tie_word_embeddings=True)
    return LlamaForSequenceClassification(config).eval()


def tokens(n: int = 4, length: int = 12, seed: int = 1) -> Any:
    import torch

    return torch.randint(3, 64, (n, length), generator=torch.Generator().manual_seed(seed))


def logits(model: Any, x: Any) -> Any:
    import torch

    with torch.no_grad():
        return model(input_ids=x).logits


def lm_loss(model: Any, x: Any) -> Any:
    out = model(input_ids=x).logits
    return out[:, :-1].flatten(0, 1).log_softmax(-1).gather(1, x[:, 1:].reshape(-1, 1)).neg().mean()


def test_magnitude_prune_hits_the_sparsity_and_masks_survive_an_optimizer_step() -> None:
    import torch

    model = tiny_llama().train()
    embed = model.model.embed_tokens.weight.detach().clone()
    weights = prune.prunable_weights(model)
    total = sum(w.numel() for w in weights.values())
    assert len(weights) == 2 * 7
    masks = prune.magnitude_prune(model, sparsity=0.3)
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    assert abs(zeros - 0.3 * total) <= 1
    assert prune.sparsity(model) == pytest.approx(0.3, abs=1 / total)
    kept = torch.cat([w[masks[n]].abs() for n, w in weights.items()])
    dropped = torch.cat([w[~masks[n]].abs() for n, w in weights.items()])
    assert int(dropped.count_nonzero()) == 0 and float(kept.detach().min()) > 0
    assert torch.equal(model.model.embed_tokens.weight, embed)  # embeddings (tied LM head) untouched
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    lm_loss(model, tokens()).backward()
    opt.step()
    assert prune.sparsity(model) < 0.01  # the step revives the pruned weights...
    prune.apply_masks(model, masks)
    for name, w in weights.items():  # ...and the masks put back exactly the same zeros
        assert torch.equal(w == 0, ~masks[name])


def test_magnitude_prune_drops_the_smallest_weights_globally() -> None:
    import torch

    model = tiny_llama()
    with torch.no_grad():
        model.model.layers[0].self_attn.q_proj.weight.mul_(10.0)  # one layer of much larger weights
    before = {n: w.detach().clone() for n, w in prune.prunable_weights(model).items()}
    masks = prune.magnitude_prune(model, sparsity=0.5)
    kept = torch.cat([before[n][m].abs() for n, m in masks.items()])
    dropped = torch.cat([before[n][~m].abs() for n, m in masks.items()])
    assert float(dropped.max()) <= float(kept.min())
    per_layer = {n: float((~m).float().mean()) for n, m in masks.items()}
    assert per_layer.pop("model.layers.0.self_attn.q_proj.weight") < 0.1  # global, not per layer: it keeps most
    assert min(per_layer.values()) > 0.45


def test_pruned_zeros_are_plain_tensors_in_the_export(tmp_path: Path) -> None:
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    model = tiny_llama()
    prune.magnitude_prune(model, sparsity=0.5)
    model.save_pretrained(str(tmp_path))
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert not [k for k in keys if k.endswith(("_orig", "_mask"))]
    loaded = AutoModelForCausalLM.from_pretrained(str(tmp_path))
    assert prune.sparsity(loaded) == pytest.approx(0.5, abs=1e-4)


def test_magnitude_prune_leaves_the_classification_heads_of_the_multitask_module() -> None:
    import torch

    from tasks.modeling.heads import build_multitask

    module = build_multitask(tiny_llama(), heads={"topic": 3}, dropout=0.0, pad_token_id=0)
    head = module.heads["topic"].score.weight.detach().clone()
    prune.magnitude_prune(module, sparsity=0.9)
    assert torch.equal(module.heads["topic"].score.weight, head)
    assert prune.sparsity(module) == pytest.approx(0.9, abs=1e-4)


@pytest.mark.parametrize("kv_heads", [4, 2])
def test_structured_prune_shrinks_and_round_trips_through_plain_transformers(tmp_path: Path, kv_heads: int) -> None:
    from transformers import AutoModelForCausalLM

    model, x = tiny_llama(kv_heads=kv_heads), tokens()
    prune.structured_prune(model, heads_fraction=0.5, neurons_fraction=0.25)
    att, mlp = model.model.layers[1].self_attn, model.model.layers[1].mlp
    assert (model.config.num_attention_heads, model.config.num_key_value_heads) == (2, kv_heads // 2)
    assert (model.config.head_dim, model.config.intermediate_size) == (8, 48)
    assert tuple(att.q_proj.weight.shape) == (16, 32) and tuple(att.o_proj.weight.shape) == (32, 16)
    assert tuple(att.k_proj.weight.shape) == tuple(att.v_proj.weight.shape) == (8 * kv_heads // 2, 32)
    assert tuple(mlp.up_proj.weight.shape) == (48, 32) and tuple(mlp.down_proj.weight.shape) == (32, 48)
    out = logits(model, x)
    model.save_pretrained(str(tmp_path))
    loaded = AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
    assert loaded.model.layers[0].mlp.gate_proj.weight.shape == mlp.gate_proj.weight.shape
    assert float((logits(loaded, x) - out).abs().max()) < 1e-5


def test_structured_prune_of_nothing_changes_nothing() -> None:
    import torch

    model, x = tiny_llama(), tokens()
    before, state = logits(model, x), copy.deepcopy(model.state_dict())
    prune.structured_prune(model, heads_fraction=0.0, neurons_fraction=0.0)
    assert torch.equal(logits(model, x), before)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_structured_prune_refuses_a_head_count_transformers_cannot_load() -> None:
    with pytest.raises(prune.CompressionError, match=r"use one of \[0.0, 0.5, 0.75\]"):
        prune.structured_prune(tiny_llama(), heads_fraction=0.25, neurons_fraction=0.0)  # 3 heads, width 32
    with pytest.raises(prune.CompressionError, match=r"use one of \[0.0, 0.5\]"):
        prune.structured_prune(tiny_llama(kv_heads=2), heads_fraction=0.25, neurons_fraction=0.0)


def test_taylor_importance_finds_dead_heads_and_neurons_and_pruning_them_is_lossless() -> None:
    import torch

    model, x = tiny_llama(), tokens(n=8)
    dead_heads, dead_neurons = {0: [1, 3], 1: [0, 2]}, {0: list(range(0, 64, 4)), 1: list(range(1, 64, 4))}
    with torch.no_grad():
        for i, layer in enumerate(model.model.layers):
            for h in dead_heads[i]:  # the head's output never reaches the residual stream
                layer.self_attn.o_proj.weight[:, h * 8:(h + 1) * 8] = 0
            layer.mlp.down_proj.weight[:, dead_neurons[i]] = 0
    before = logits(model, x)
    scores = prune.importance_scores(model, [x[:4], x[4:]], lm_loss)
    for i in range(2):
        live = [h for h in range(4) if h not in dead_heads[i]]
        assert float(scores["heads"][i][dead_heads[i]].max()) < 1e-3 * float(scores["heads"][i][live].min())
        ranked = scores["neurons"][i].argsort()[:16].tolist()
        assert sorted(ranked) == dead_neurons[i]
    assert all(p.grad is None for p in model.parameters())
    prune.structured_prune(model, heads_fraction=0.5, neurons_fraction=0.25, importance=scores)
    assert float((logits(model, x) - before).abs().max()) < 1e-5


def test_int8_is_close_to_float_and_at_least_twice_smaller(tmp_path: Path) -> None:
    import torch

    model = tiny_classifier()
    x = tokens(n=64, length=16)
    ref = logits(model, x)
    state = copy.deepcopy(model.state_dict())
    quant = quantize.quantize_int8(model)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())  # the float model is kept
    assert quant.model.layers[0].mlp.down_proj.weight.qdata.dtype == torch.int8
    assert not hasattr(quant.score.weight, "qdata")  # the classification head stays float
    out = logits(quant, x)
    assert float((out - ref).abs().max()) < 0.05 * float(ref.abs().max())
    assert float((out.argmax(-1) == ref.argmax(-1)).float().mean()) >= 0.9
    model.save_pretrained(str(tmp_path / "f32"))
    quantize.save_int8(quant, tmp_path / "int8")
    ratio = (tmp_path / "f32/model.safetensors").stat().st_size / (tmp_path / "int8/model.safetensors").stat().st_size
    assert ratio >= 2.0


def test_load_int8_round_trip_gives_identical_outputs(tmp_path: Path, data: dict[str, Path]) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    model = tiny_llama(hidden=64).to(torch.bfloat16)  # like the bf16 exports: quantized from float32
    prune.magnitude_prune(model, sparsity=0.5)
    quant = quantize.quantize_int8(model)
    quantize.save_int8(quant, tmp_path / "int8", tokenizer_dir=data["tokenizer"])
    assert (tmp_path / "int8" / "tokenizer.json").exists()
    loaded = quantize.load_int8(tmp_path / "int8")
    assert type(loaded).__name__ == "LlamaForCausalLM" and not loaded.training
    x = tokens()
    assert torch.equal(logits(loaded, x), logits(quant, x))
    assert torch.equal(logits(AutoModelForCausalLM.from_pretrained(str(tmp_path / "int8")), x), logits(quant, x))
    qdata = loaded.model.layers[0].self_attn.q_proj.weight.qdata
    assert float((qdata == 0).float().mean()) >= 0.4  # pruned zeros stay zeros in int8
    with pytest.raises(prune.CompressionError, match="quantize it first"):
        quantize.save_int8(model, tmp_path / "nope")


def test_int8_export_is_the_same_bytes_in_every_process(tmp_path: Path) -> None:
    import hashlib
    import os
    import subprocess
    import sys

    script = ("import sys; from pathlib import Path; from tasks.modeling import quantize; "
              "from tests.tasks.training.test_compress import tiny_llama; "
              "quantize.save_int8(quantize.quantize_int8(tiny_llama(hidden=64)), Path(sys.argv[1]))")
    digests = set()
    for seed in ("1", "2"):  # torchao's metadata order followed the string hash seed of the process
        out = tmp_path / seed
        subprocess.run([sys.executable, "-c", script, str(out)], check=True, cwd=Path(__file__).parents[3],
                       env={**os.environ, "PYTHONHASHSEED": seed}, capture_output=True)
        digests.add(hashlib.md5((out / "model.safetensors").read_bytes()).hexdigest())
    assert len(digests) == 1


def hf_classifier(arch: str, tmp_path: Path) -> Any:
    """A tiny random BERT or GPT-2 sequence classifier (tests/assets/checkpoints.py), 2 layers, MLP width 64/128."""
    from transformers import AutoModelForSequenceClassification

    from tests.assets.checkpoints import save_checkpoint

    path = save_checkpoint(arch, tmp_path / arch)
    return AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=3, pad_token_id=0).eval()


@pytest.mark.parametrize("arch", ["bert", "gpt2"])
def test_bert_and_gpt2_prune_their_own_projections_and_mlps(arch: str, tmp_path: Path) -> None:
    """Magnitude pruning reaches BERT's Linear and GPT-2's Conv1D layer projections (not the pooler or the head);
    structured pruning cuts their MLPs (BERT intermediate/output, GPT-2 c_fc/c_proj) and the config's width, loads
    back with plain transformers to the same logits, and records that their heads cannot go."""
    import torch
    from transformers import AutoModelForSequenceClassification

    model, x = hf_classifier(arch, tmp_path), tokens(length=10)
    names = sorted(prune.prunable_weights(model))
    per_layer = {"bert": ["attention.output.dense", "attention.self.key", "attention.self.query",
                          "attention.self.value", "intermediate.dense", "output.dense"],
                 "gpt2": ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"]}[arch]
    stem = "bert.encoder.layer" if arch == "bert" else "transformer.h"
    assert names == sorted(f"{stem}.{i}.{p}.weight" for i in range(2) for p in per_layer)
    masked = copy.deepcopy(model)
    prune.magnitude_prune(masked, sparsity=0.5)
    assert prune.sparsity(masked) == pytest.approx(0.5, abs=1e-3)
    head = "classifier" if arch == "bert" else "score"
    assert torch.equal(getattr(masked, head).weight, getattr(model, head).weight)
    skips = prune.structured_skips(model, heads_fraction=0.5)
    assert set(skips) == {"heads"} and "prune_heads" in skips["heads"]
    assert prune.structured_skips(model, heads_fraction=0.0) == {}
    with pytest.raises(prune.CompressionError, match="set it to 0"):
        prune.structured_prune(copy.deepcopy(model), heads_fraction=0.5, neurons_fraction=0.25)
    width = 64 if arch == "bert" else 128
    prune.structured_prune(model, heads_fraction=0.0, neurons_fraction=0.25)
    key = "intermediate_size" if arch == "bert" else "n_inner"
    assert getattr(model.config, key) == width * 3 // 4
    out = logits(model, x)
    model.save_pretrained(str(tmp_path / "shrunk"))
    loaded = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "shrunk")).eval()
    assert getattr(loaded.config, key) == width * 3 // 4
    assert float((logits(loaded, x) - out).abs().max()) < 1e-5


@pytest.mark.parametrize("arch", ["bert", "gpt2"])
def test_int8_of_bert_and_gpt2_loads_with_the_documented_call(arch: str, tmp_path: Path) -> None:
    """BERT's layer projections become int8 (biases float); GPT-2's Conv1D layers stay float, with the reason,
    and its embeddings are int8; both load with load_int8 and predict as the quantized model did."""
    import torch

    model, x = hf_classifier(arch, tmp_path), tokens(n=16, length=10)
    ref = logits(model, x)
    quant = quantize.quantize_int8(model)
    skips = quantize.int8_skips(model)
    if arch == "bert":
        assert skips == {}
        layer = quant.bert.encoder.layer[0]
        assert layer.intermediate.dense.weight.qdata.dtype == torch.int8
        assert not hasattr(layer.intermediate.dense.bias, "qdata") and not hasattr(quant.classifier.weight, "qdata")
        assert hasattr(quant.bert.embeddings.word_embeddings.weight, "qdata")
    else:
        assert set(skips) == {"layers"} and "Conv1D" in skips["layers"]
        assert not hasattr(quant.transformer.h[0].mlp.c_fc.weight, "qdata")
        assert hasattr(quant.transformer.wte.weight, "qdata")
    out = logits(quant, x)
    assert float((out - ref).abs().max()) < 0.05 * float(ref.abs().max()) + 1e-3
    quantize.save_int8(quant, tmp_path / "int8")
    loaded = quantize.load_int8(tmp_path / "int8")
    assert type(loaded).__name__ == type(model).__name__ and not loaded.training
    assert torch.equal(logits(loaded, x), out)
