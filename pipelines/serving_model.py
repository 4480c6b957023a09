"""The MLflow pyfunc of a registered lmforge model: a Hugging Face model directory answering text in, text out.

MLflow runs this file as "models from code" (``pipelines.registry`` hands its path to ``mlflow.pyfunc.log_model``
and MLflow copies it into the logged model), so a registered model loads with ``mlflow.pyfunc.load_model`` without
lmforge installed. It is never imported by lmforge itself: running it registers the model with MLflow, the one side
effect a models-from-code file must have.

A classification model (``LlamaForSequenceClassification``) answers each text with its label and that label's
probability; a causal LM (the sft model, or a student) answers each prompt with its greedy continuation, through
the tokenizer's chat template when it has one.
"""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class HFTextModel(PythonModel):
    """Text in (a ``text`` column), label and score out for a classifier, generated text out for a causal LM."""

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
        """One answer per row of ``model_input`` (a DataFrame with a ``text`` column)."""
        import torch

        texts = list(model_input["text"])
        rows = []
        with torch.inference_mode():
            # one text at a time: no padding side to get wrong, and these models answer in milliseconds
            for text in texts:
                rows.append(self._classify(text) if self.classifier else self._generate(text, params or {}))
        return pd.DataFrame(rows)

    def _classify(self, text: str) -> dict[str, Any]:
        enc = self.tokenizer(text, return_tensors="pt", truncation=True,
                             max_length=self.model.config.max_position_embeddings)
        probs = self.model(**enc).logits[0].float().softmax(-1)
        best = int(probs.argmax())
        return {"label": self.model.config.id2label[best], "score": float(probs[best])}

    def _generate(self, text: str, params: dict[str, Any]) -> dict[str, Any]:
        if self.tokenizer.chat_template:
            text = self.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                      add_generation_prompt=True)
        enc = self.tokenizer(text, return_tensors="pt", add_special_tokens=not self.tokenizer.chat_template)
        out = self.model.generate(**enc, max_new_tokens=int(params.get("max_new_tokens", 32)), do_sample=False,
                                  pad_token_id=self.tokenizer.pad_token_id)
        return {"text": self.tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)}


mlflow.models.set_model(HFTextModel())
