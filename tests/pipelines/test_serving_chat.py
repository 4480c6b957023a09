"""The pyfunc of a chat model (``pipelines/serving_model.py``, saved and loaded by MLflow as the registry logs it):
it answers conversations with the reply evaluation gets, from the prompt tokens training put before a reply."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

CONVERSATIONS = [
    [{"role": "user", "content": "the cat"}],
    [{"role": "system", "content": "be short"}, {"role": "user", "content": "the dog"},
     {"role": "assistant", "content": "ran home."}, {"role": "user", "content": "and the bird?"}],
]
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
          "{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] }}<|im_end|>\n{% endgeneration %}"
          "{% else %}{{ m['content'] }}<|im_end|>\n{% endif %}{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def chat_model(root: Path, architecture: str, template: str | None) -> Path:
    """A tiny checkpoint with lmforge's chat template (None) or a template of its own."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tasks.modeling.chat import LMFORGE_CHAT_TEMPLATE
    from tests.assets.checkpoints import save_checkpoint

    out = save_checkpoint(architecture, root / f"{architecture}-{bool(template)}")
    tok = AutoTokenizer.from_pretrained(str(out))
    tok.chat_template = template or LMFORGE_CHAT_TEMPLATE
    if template:  # ChatML's markers, new rows of the embedding
        tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
        model = AutoModelForCausalLM.from_pretrained(str(out))
        model.resize_token_embeddings(len(tok))
        model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


def served(root: Path, model_dir: Path) -> Any:
    """The model saved as the registry logs it (signature, input example run through it) and loaded back."""
    import mlflow

    from pipelines.registry import SERVING_MODEL, _example, _signature

    path = root / f"pyfunc-{model_dir.name}"
    mlflow.pyfunc.save_model(path=str(path), python_model=str(SERVING_MODEL), artifacts={"model": str(model_dir)},
                             signature=_signature("chat"), input_example=_example("chat", "the cat"))
    return mlflow.pyfunc.load_model(str(path))


@pytest.mark.parametrize(("architecture", "template"), [("llama", None), ("gpt2", CHATML)])
def test_the_pyfunc_answers_a_conversation_as_evaluation_does(tmp_path: Path, architecture: str,
                                                              template: str | None) -> None:
    import pandas as pd

    from tasks.evaluate.chat import replies
    from tasks.modeling.chat import prompt_ids

    model_dir = chat_model(tmp_path, architecture, template)
    pyfunc = served(tmp_path, model_dir)
    inner = pyfunc.unwrap_python_model()
    for conversation in CONVERSATIONS:  # the pyfunc's own copy of the prompt steps gives lmforge's ids
        assert inner.prompt_ids(conversation) == prompt_ids(conversation, tokenizer=inner.tokenizer)
    answers = pyfunc.predict(pd.DataFrame({"messages": CONVERSATIONS}), params={"max_new_tokens": 6})
    rows = [{"id": str(i), "messages": c + [{"role": "assistant", "content": "x"}]}
            for i, c in enumerate(CONVERSATIONS)]
    expected = [g["completion"] for g in replies(model_dir, rows, max_new_tokens=6)]
    assert [a.strip() for a in answers["text"]] == expected
