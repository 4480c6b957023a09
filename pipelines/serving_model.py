"""The MLflow pyfunc of a registered lmforge model: a Hugging Face model directory answering text in, text out.

MLflow runs this file as "models from code" (``pipelines.registry`` hands its path to ``mlflow.pyfunc.log_model``
and MLflow copies it into the logged model), so a registered model loads with ``mlflow.pyfunc.load_model`` without
lmforge installed. It is never imported by lmforge itself: running it registers the model with MLflow, the one side
effect a models-from-code file must have.

A classification model (``LlamaForSequenceClassification``) answers each text with its label and that label's
probability; a causal LM (the sft model, or a student) answers each prompt with its greedy continuation, through
the tokenizer's chat template when it has one. A chat model also takes conversations (a ``messages`` column of
``[{"role", "content"}]`` lists) and answers each with the next assistant turn, its prompt tokenized as training
tokenized the text before a reply (``tasks.modeling.chat.prompt_ids``, which this file must not import: the same
steps, checked against it by ``tests/pipelines/test_serving_chat.py``).
"""

from __future__ import annotations

import re
from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class HFTextModel(PythonModel):
    """Text in (a ``text`` column), label and score out for a classifier, generated text out for a causal LM;
    conversations in (a ``messages`` column) for a chat model."""

    def load_context(self, context: Any) -> None:
        """Load the model directory logged as the ``model`` artifact."""
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

        path = context.artifacts["model"]
        config = AutoConfig.from_pretrained(path)
        self.classifier = any(a.endswith("ForSequenceClassification") for a in config.architectures or [])
        auto = AutoModelForSequenceClassification if self.classifier else AutoModelForCausalLM
        self.model = auto.from_pretrained(path).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(path)

    # a DataFrame hint, not a list one: MLflow then validates input against the signature given at logging instead
    # of deriving (and warning about) a schema from the hints
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """One answer per row of ``model_input`` (a DataFrame with a ``text`` or a ``messages`` column)."""
        import torch

        items = list(model_input["messages" if "messages" in model_input.columns else "text"])
        rows = []
        with torch.inference_mode():
            # one text at a time: no padding side to get wrong, and these models answer in milliseconds
            for item in items:
                rows.append(self._classify(item) if self.classifier else self._generate(item, params or {}))
        return pd.DataFrame(rows)

    def _classify(self, text: str) -> dict[str, Any]:
        enc = self.tokenizer(text, return_tensors="pt", truncation=True,
                             max_length=self.model.config.max_position_embeddings)
        probs = self.model(**enc).logits[0].float().softmax(-1)
        best = int(probs.argmax())
        return {"label": self.model.config.id2label[best], "score": float(probs[best])}

    def _generate(self, item: str | list[dict[str, str]], params: dict[str, Any]) -> dict[str, Any]:
        import torch

        if isinstance(item, str) and not self.tokenizer.chat_template:
            ids = self.tokenizer(item)["input_ids"]  # a plain LM continues the text
        else:
            messages = [{"role": "user", "content": item}] if isinstance(item, str) else [
                {"role": str(m["role"]), "content": str(m["content"])} for m in item]
            ids = self.prompt_ids(messages)
        x = torch.tensor([ids])
        out = self.model.generate(x, attention_mask=torch.ones_like(x), do_sample=False,
                                  max_new_tokens=int(params.get("max_new_tokens", 32)),
                                  pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id)
        return {"text": self.tokenizer.decode(out[0, x.shape[1]:], skip_special_tokens=True)}

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """The conversation so far rendered with the generation prompt and tokenized piece by piece as training did:
        the text before each assistant turn and each turn on their own (all at once where the template marks the
        assistant text with ``{% generation %}``); the first piece gets the tokenizer's own prefix unless the
        template writes the BOS itself."""
        tok = self.tokenizer
        template = tok.chat_template or ""
        if re.search(r"{%-?\s*generation\s*-?%}", template):
            return list(tok.apply_chat_template(messages, tokenize=True, return_dict=True,
                                                add_generation_prompt=True)["input_ids"])

        def render(turns: list[dict[str, str]], prompt: bool) -> str:
            return str(tok.apply_chat_template(turns, tokenize=False, add_generation_prompt=prompt))

        def encode(text: str, first: bool) -> list[int]:
            bos = tok.bos_token
            return list(tok(text, add_special_tokens=first and not (bos and text.startswith(bos)))["input_ids"])

        ids: list[int] = []
        done = ""
        for i, message in enumerate(messages):
            if message["role"] == "assistant":
                before, after = render(messages[:i], True), render(messages[:i + 1], False)
                ids += encode(before[len(done):], not ids) + encode(after[len(before):], False)
                done = after
        return ids + encode(render(messages, True)[len(done):], not ids)


mlflow.models.set_model(HFTextModel())
