"""The Llama builder and its shape checks."""

from __future__ import annotations

import pytest

from tasks.modeling.llama import ModelConfigError, build_llama, check_model_shape, count_params, resolve_shape

SHAPE = {"vocab_size": 300, "hidden_size": 64, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2,
         "intermediate_size": 128, "max_position_embeddings": 64}
SETTING = {**SHAPE, "vocab_size": None, "max_position_embeddings": None, "num_kv_heads": None, "rope_theta": 1e4,
           "tie_word_embeddings": True}
MANIFEST = {"vocab_size": 288, "bos_id": 0, "eos_id": 1, "pad_id": 2}


def test_model_shape_checks() -> None:
    model = build_llama(**SHAPE, tie_word_embeddings=True)
    untied = build_llama(**SHAPE, tie_word_embeddings=False)
    assert count_params(untied) - count_params(model) == 300 * 64
    with pytest.raises(ModelConfigError, match="outside the vocabulary"):
        check_model_shape(**{**SHAPE, "vocab_size": 2}, pad_token_id=2)
    with pytest.raises(ModelConfigError, match="odd"):
        check_model_shape(**{**SHAPE, "hidden_size": 12, "num_heads": 4, "num_kv_heads": 4})
    assert ModelConfigError.exit_code == 2 and issubclass(ModelConfigError, ValueError)


def test_resolve_shape_fills_unset_values_from_the_data() -> None:
    kwargs = resolve_shape(context=32, manifest=MANIFEST, **SETTING)
    assert kwargs["vocab_size"] == 288 and kwargs["max_position_embeddings"] == 32 and kwargs["num_kv_heads"] == 4
    assert (kwargs["bos_token_id"], kwargs["eos_token_id"], kwargs["pad_token_id"]) == (0, 1, 2)
    build_llama(**kwargs)  # what it returns builds


@pytest.mark.parametrize(("over", "message"), [
    ({"max_position_embeddings": 16}, "context 32 exceeds model.max_position_embeddings 16"),
    ({"vocab_size": 100}, "model.vocab_size 100 is below the tokens' vocabulary of 288"),
])
def test_resolve_shape_rejects_what_the_data_cannot_use(over: dict[str, int], message: str) -> None:
    with pytest.raises(ModelConfigError, match=message):
        resolve_shape(context=32, manifest=MANIFEST, **{**SETTING, **over})
