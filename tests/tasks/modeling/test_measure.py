"""Model measurement of the distill stage on tiny random Llamas and hand-made data: quality numbers checked against
per-example computations done here, latency and size sanity, int8 models, retention ratios."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import pytest

from tasks.modeling import measure

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")
PAD = 0


def classifier(seed: int = 0) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=4, intermediate_size=64, max_position_embeddings=32, num_labels=3,
                         pad_token_id=PAD, tie_word_embeddings=True)
    return LlamaForSequenceClassification(config).eval()


def causal_lm(seed: int = 0) -> Any:
    import torch

    from tasks.modeling.llama import build_llama

    torch.manual_seed(seed)
    return build_llama(vocab_size=64, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=4,
                       intermediate_size=128, max_position_embeddings=32, pad_token_id=PAD).eval()


def sequences(n: int, seed: int = 0) -> list[list[int]]:
    """Token lists of different lengths (so batches are padded), no pad id inside."""
    rng = random.Random(seed)
    return [[rng.randrange(3, 64) for _ in range(rng.randrange(4, 14))] for _ in range(n)]


def test_classification_accuracy_and_f1_on_a_hand_made_dataset(tmp_path: Path) -> None:
    import torch
    from sklearn.metrics import f1_score

    model, ids = classifier(), sequences(12)
    with torch.no_grad():  # each example alone, unpadded: what the model says about it
        predicted = [int(model(input_ids=torch.tensor([s])).logits.argmax(-1)) for s in ids]
    targets = list(predicted)
    for i in (1, 4, 7):  # three wrong on purpose
        targets[i] = (targets[i] + 1) % 3
    data = {"ids": ids, "targets": targets, "dropped": 0, "rows": [{}] * len(ids)}
    model.save_pretrained(str(tmp_path))
    out = measure.measure_model(model, model_dir=tmp_path, kind="classification", data=data, labels=["a", "b", "c"],
                                pad_id=PAD, batch_size=5, latency_examples=8, warmup=2)
    assert out["accuracy"] == pytest.approx(0.75)
    assert out["macro_f1"] == pytest.approx(f1_score(targets, predicted, labels=[0, 1, 2], average="macro",
                                                     zero_division=0))
    assert out["examples"] == 12 and out["latency_examples"] == 8
    assert out["latency_p95_ms"] >= out["latency_p50_ms"] > 0
    assert out["tokens_per_second"] > 0 and out["threads"] >= 1
    files = [p.stat().st_size for p in tmp_path.iterdir()]
    assert out["size_bytes"] == sum(files)
    assert out["weights_bytes"] == (tmp_path / "model.safetensors").stat().st_size < out["size_bytes"]
    assert out["params"] == sum(p.numel() for p in model.parameters())
    assert out["nonzero_params"] == out["params"] - 32  # the pad token's embedding row starts at zero


def test_sft_loss_counts_only_response_tokens() -> None:
    import torch
    import torch.nn.functional as F

    model, ids = causal_lm(), sequences(6, seed=1)
    targets = [[-100] * 3 + s[3:] for s in ids]  # the first three tokens are the prompt
    data = {"ids": ids, "targets": targets, "dropped": 0, "rows": [{}] * len(ids)}
    out = measure.measure_model(model, model_dir=None, kind="sft", data=data, labels=None, pad_id=PAD,
                                batch_size=4, latency_examples=4, warmup=1)
    nll, count = 0.0, 0
    with torch.no_grad():
        for s in ids:  # position t predicts token t + 1; responses start at position 3
            logp = F.log_softmax(model(input_ids=torch.tensor([s])).logits[0], -1)
            nll -= sum(float(logp[t - 1, s[t]]) for t in range(3, len(s)))
            count += len(s) - 3
    assert out["scored_tokens"] == count
    assert out["loss"] == pytest.approx(nll / count, rel=1e-5)
    assert out["perplexity"] == pytest.approx(math.exp(nll / count), rel=1e-5)
    assert out["size_bytes"] is None and out["weights_bytes"] is None
    lm = measure.measure_model(model, model_dir=None, kind="lm", data=data, labels=None, pad_id=PAD,
                               batch_size=4, latency_examples=2, warmup=0)
    assert lm["scored_tokens"] == sum(len(s) - 1 for s in ids)  # every next token
    assert lm["loss"] != pytest.approx(out["loss"])


def test_measures_pruned_and_int8_models(tmp_path: Path) -> None:
    from tasks.modeling import quantize
    from tasks.training import prune

    model, ids = causal_lm(), sequences(8, seed=2)
    data = {"ids": ids, "targets": [[-100] + s[1:] for s in ids], "dropped": 0, "rows": [{}] * len(ids)}
    kwargs = {"kind": "sft", "data": data, "labels": None, "pad_id": PAD, "batch_size": 8, "latency_examples": 4}
    model.save_pretrained(str(tmp_path / "f32"))
    base = measure.measure_model(model, model_dir=tmp_path / "f32", **kwargs)
    prune.magnitude_prune(model, sparsity=0.5)
    zeros = sum(int((w == 0).sum()) for w in prune.prunable_weights(model).values())
    pruned = measure.measure_model(model, model_dir=None, **kwargs)
    assert pruned["params"] == base["params"] and pruned["nonzero_params"] == base["nonzero_params"] - zeros
    quant = quantize.quantize_int8(model)
    quantize.save_int8(quant, tmp_path / "int8")
    q = measure.measure_model(quant, model_dir=tmp_path / "int8", **kwargs)
    table = model.get_input_embeddings().weight.numel()  # the int8 LM stores its tied head as its own int8 copy
    assert q["params"] == base["params"] + table
    assert abs(q["nonzero_params"] - table - pruned["nonzero_params"]) < 0.01 * base["params"]  # zeros stay zeros
    assert q["weights_bytes"] * 2 <= base["weights_bytes"]
    assert q["perplexity"] == pytest.approx(pruned["perplexity"], rel=0.05)
    retained = measure.retention(q, base, kind="sft")
    assert retained["perplexity"] == pytest.approx(base["perplexity"] / q["perplexity"])


def test_retention_ratios_and_bad_input() -> None:
    teacher = {"accuracy": 0.8, "macro_f1": 0.0, "perplexity": 10.0}
    variant = {"accuracy": 0.6, "macro_f1": 0.5, "perplexity": 20.0}
    assert measure.retention(variant, teacher, kind="classification") == {"accuracy": pytest.approx(0.75),
                                                                          "macro_f1": None}
    assert measure.retention(variant, teacher, kind="lm") == {"perplexity": 0.5}
    with pytest.raises(measure.MeasureError, match="not one of"):
        measure.retention(variant, teacher, kind="regression")
    data = {"ids": [[5, 6]], "targets": [0], "dropped": 0, "rows": [{}]}
    with pytest.raises(measure.MeasureError, match="label names"):
        measure.measure_model(classifier(), model_dir=None, kind="classification", data=data, labels=None, pad_id=PAD,
                              batch_size=1)
