"""The MLflow pyfunc of a registered lmforge model: a Hugging Face model directory answering text in, text out.

MLflow runs this file as "models from code" (``pipelines.registry`` hands its path to ``mlflow.pyfunc.log_model``
and MLflow copies it into the logged model), so a registered model loads with ``mlflow.pyfunc.load_model`` without
lmforge installed. It is never imported by lmforge itself: running it registers the model with MLflow, the one side
effect a models-from-code file must have.

A classification model (``LlamaForSequenceClassification``) answers each text with its label and that label's
probability; a causal LM (the sft model, or a student) answers each prompt with its greedy continuation, through
the tokenizer's chat template when it has one; an extractive QA model (``...ForQuestionAnswering``) answers each
question about its context with the answer's text, character offsets and score (start + end logit), decoded as
training's validation decodes it (``tasks.modeling.tasktypes.spans``, restated here: this file imports no lmforge
code), with the task's settings from the model's ``config.task_specific_params["question-answering"]``.
"""

from __future__ import annotations

import math
from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class HFTextModel(PythonModel):
    """Text in (a ``text`` column), label and score out for a classifier, generated text out for a causal LM."""

    def load_context(self, context: Any) -> None:
        """Load the model directory logged as the ``model`` artifact."""
        from transformers import (
            AutoConfig,
            AutoModelForCausalLM,
            AutoModelForQuestionAnswering,
            AutoModelForSequenceClassification,
            AutoTokenizer,
        )

        path = context.artifacts["model"]
        config = AutoConfig.from_pretrained(path)
        self.classifier = any(a.endswith("ForSequenceClassification") for a in config.architectures or [])
        self.reader = any(a.endswith("ForQuestionAnswering") for a in config.architectures or [])
        auto = (AutoModelForSequenceClassification if self.classifier else
                AutoModelForQuestionAnswering if self.reader else AutoModelForCausalLM)
        self.model = auto.from_pretrained(path).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(path)

    # a DataFrame hint, not a list one: MLflow then validates input against the signature given at logging instead
    # of deriving (and warning about) a schema from the hints
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """One answer per row of ``model_input`` (a DataFrame with a ``text`` column; ``question`` and ``context``
        for an extractive QA model)."""
        import torch

        rows = []
        with torch.inference_mode():
            # one input at a time: no padding side to get wrong, and these models answer in milliseconds
            if self.reader:
                return pd.DataFrame([self._answer(q, c) for q, c in zip(model_input["question"],
                                                                        model_input["context"], strict=True)])
            for text in model_input["text"]:
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

    def _answer(self, question: str, context: str) -> dict[str, Any]:
        """The best span over the context's windows (lowest null score over windows; the null answer where the task
        allows unanswerable questions and it scores higher); white space trimmed off the span."""
        import torch

        qa = (getattr(self.model.config, "task_specific_params", None) or {}).get("question-answering", {})
        enc = self.tokenizer(question, context, truncation="only_second",
                             max_length=int(qa.get("max_seq_len", self.model.config.max_position_embeddings)),
                             stride=int(qa.get("doc_stride", 64)), return_overflowing_tokens=True,
                             return_offsets_mapping=True)
        cls_id, longest = self.tokenizer.cls_token_id, int(qa.get("max_answer_length", 30))
        best: tuple[float, int, int] | None = None
        null_score: float | None = None
        for w, ids in enumerate(enc["input_ids"]):
            out = self.model(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long))
            start, end = out.start_logits[0].float(), out.end_logits[0].float()
            null = ids.index(cls_id) if cls_id is not None and cls_id in ids else 0
            null_score = min(null_score if null_score is not None else math.inf, float(start[null] + end[null]))
            offsets = enc["offset_mapping"][w]
            usable = torch.tensor([s == 1 and bool(context[o[0]:o[1]].strip())
                                   for o, s in zip(offsets, enc.sequence_ids(w), strict=True)])
            gap = torch.arange(len(ids))[None, :] - torch.arange(len(ids))[:, None]
            allowed = usable[:, None] & usable[None, :] & (gap >= 0) & (gap < longest)
            if allowed.any():
                scores = (start[:, None] + end[None, :]).masked_fill(~allowed, -math.inf)
                i, j = divmod(int(scores.argmax()), len(ids))
                if best is None or float(scores[i, j]) > best[0]:
                    best = (float(scores[i, j]), offsets[i][0], offsets[j][1])
        if best is None or (qa.get("handle_impossible_answer") and null_score is not None and null_score > best[0]):
            return {"answer": "", "start": None, "end": None, "score": null_score}
        score, a, b = best
        text = context[a:b]
        a, b = a + len(text) - len(text.lstrip()), b - (len(text) - len(text.rstrip()))
        return {"answer": context[a:b], "start": a, "end": b, "score": score}


mlflow.models.set_model(HFTextModel())
