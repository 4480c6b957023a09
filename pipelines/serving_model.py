"""The MLflow pyfunc of a registered lmforge model: a Hugging Face model directory answering text in, text out.

MLflow runs this file as "models from code" (``pipelines.registry`` hands its path to ``mlflow.pyfunc.log_model``
and MLflow copies it into the logged model), so a registered model loads with ``mlflow.pyfunc.load_model`` without
lmforge installed. It is never imported by lmforge itself: running it registers the model with MLflow, the one side
effect a models-from-code file must have.

A classification model (``LlamaForSequenceClassification``) answers each text with its label and that label's
probability; a token classifier (``...ForTokenClassification``, NER) answers each raw text with its entities as
character spans (``entity``, ``start``, ``end``, ``text``, ``score``); a causal LM (the sft model, or a student)
answers each prompt with its greedy continuation, through the tokenizer's chat template when it has one. A chat model
also takes conversations (a ``messages`` column of ``[{"role", "content"}]`` lists) and answers each with the next
assistant turn, its prompt tokenized as training tokenized the text before a reply (``tasks.modeling.chat.prompt_ids``,
which this file must not import: the same steps, checked against it by ``tests/pipelines/test_serving_chat.py``).

The token classifier reads text as training read its sentences (``tasks.modeling.alignment``, which this file may not
import): the text split into words (runs of letters and digits, single punctuation marks), the words joined by single
spaces and tokenized as running text, each word tagged at its first token, a text over the model's positions in
windows of whole words; the tags read into entities as conlleval reads them (``tasks.modeling.tagging.spans``). A test
holds the two implementations to the same answers.
An extractive QA model (``...ForQuestionAnswering``) answers each question about its context with the answer's text,
character offsets and score (start + end logit), decoded as training's validation decodes it
(``tasks.modeling.tasktypes.spans``, restated here: this file imports no lmforge code), with the task's settings from
the model's ``config.task_specific_params["question-answering"]``.
"""

from __future__ import annotations

import math
import re
from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

_WORD = re.compile(r"\w+(?:['’.\-]\w+)*|[^\w\s]")


class HFTextModel(PythonModel):
    """Text in (a ``text`` column), label and score out for a classifier, entities out for a token classifier,
    generated text out for a causal LM; conversations in (a ``messages`` column) for a chat model."""

    def load_context(self, context: Any) -> None:
        """Load the model directory logged as the ``model`` artifact."""
        import transformers

        path = context.artifacts["model"]
        architectures = transformers.AutoConfig.from_pretrained(path).architectures or []
        self.classifier = any(a.endswith("ForSequenceClassification") for a in architectures)
        self.tagger = any(a.endswith("ForTokenClassification") for a in architectures)
        self.reader = any(a.endswith("ForQuestionAnswering") for a in architectures)
        auto = ("AutoModelForSequenceClassification" if self.classifier else "AutoModelForTokenClassification"
                if self.tagger else "AutoModelForQuestionAnswering" if self.reader else "AutoModelForCausalLM")
        self.model = getattr(transformers, auto).from_pretrained(path).eval()
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(path)

    # a DataFrame hint, not a list one: MLflow then validates input against the signature given at logging instead
    # of deriving (and warning about) a schema from the hints
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """One answer per row of ``model_input`` (a DataFrame with a ``text`` or a ``messages`` column; ``question``
        and ``context`` for an extractive QA model)."""
        import torch

        rows = []
        with torch.inference_mode():
            # one input at a time: no padding side to get wrong, and these models answer in milliseconds
            if self.reader:
                return pd.DataFrame([self._answer(q, c) for q, c in zip(model_input["question"],
                                                                        model_input["context"], strict=True)])
            for item in model_input["messages" if "messages" in model_input.columns else "text"]:
                rows.append(self._classify(item) if self.classifier else self._tag(item) if self.tagger
                            else self._generate(item, params or {}))
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

    def _tag(self, text: str) -> dict[str, Any]:
        offsets = [m.span() for m in _WORD.finditer(text)]
        words = [text[a:b] for a, b in offsets]
        tags: list[str] = []
        scores: list[float] = []
        for first, end in _windows(self.tokenizer, words, int(self.model.config.max_position_embeddings)):
            joined = " ".join(words[first:end])
            enc = self.tokenizer(joined, return_offsets_mapping=True, return_special_tokens_mask=True,
                                 return_tensors="pt")
            if enc["input_ids"].shape[1] > self.model.config.max_position_embeddings:  # one word over it: unread
                tags += ["O"] * (end - first)
                scores += [0.0] * (end - first)
                continue
            probs = self.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits[0]
            probs = probs.float().softmax(-1)
            starts = _first_tokens(joined, words[first:end], enc["offset_mapping"][0].tolist(),
                                   enc["special_tokens_mask"][0].tolist())
            for t in starts:
                best = int(probs[t].argmax()) if t >= 0 else None
                tags.append(self.model.config.id2label[best] if best is not None else "O")
                scores.append(float(probs[t, best]) if best is not None else 1.0)
        return {"entities": [{"entity": kind, "start": offsets[a][0], "end": offsets[b][1],
                              "text": text[offsets[a][0]:offsets[b][1]],
                              "score": sum(scores[a:b + 1]) / (b + 1 - a)} for kind, a, b in _spans(tags)]}

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


def _first_tokens(text: str, words: list[str], offsets: list[list[int]], special: list[int]) -> list[int]:
    """The index of each word's first token in ``text`` (the words joined by spaces), -1 where none starts in it."""
    owner, at = [-1] * len(text), 0
    for w, word in enumerate(words):
        owner[at:at + len(word)] = [w] * len(word)
        at += len(word) + 1
    first = [-1] * len(words)
    for t, ((start, end), is_special) in enumerate(zip(offsets, special, strict=True)):
        owned = -1 if is_special else next((owner[c] for c in range(start, min(end, len(text))) if owner[c] >= 0), -1)
        if owned >= 0 and first[owned] < 0:
            first[owned] = t
    return first


def _windows(tokenizer: Any, words: list[str], limit: int) -> list[tuple[int, int]]:
    """``(first, end)`` word ranges whose joined text fits ``limit`` tokens: packed by each word's tokens in the whole
    text, then shortened a word at a time until the window's own encoding fits (as training packs them)."""
    text = " ".join(words)
    enc = tokenizer(text, return_offsets_mapping=True, return_special_tokens_mask=True)
    if len(enc["input_ids"]) <= limit:
        return [(0, len(words))] if words else []
    per_word, specials = [0] * len(words), sum(enc["special_tokens_mask"])
    owner, at = [-1] * len(text), 0
    for w, word in enumerate(words):
        owner[at:at + len(word)] = [w] * len(word)
        at += len(word) + 1
    for (start, end), is_special in zip(enc["offset_mapping"], enc["special_tokens_mask"], strict=True):
        owned = -1 if is_special else next((owner[c] for c in range(start, min(end, len(text))) if owner[c] >= 0), -1)
        if owned >= 0:
            per_word[owned] += 1
    out, start = [], 0
    while start < len(words):
        end, used = start, 0
        while end < len(words) and (end == start or used + per_word[end] <= limit - specials):
            used, end = used + per_word[end], end + 1
        while end - start > 1 and len(tokenizer(" ".join(words[start:end]))["input_ids"]) > limit:
            end -= 1
        out.append((start, end))
        start = end
    return out


def _spans(tags: list[str]) -> list[tuple[str, int, int]]:
    """The entities ``(type, first word, last word)`` of a tag sequence in any of IOB1, IOB2, BIOES, read as conlleval
    reads them."""
    found, prev, prev_kind, begin = [], "O", "", 0
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, kind = tag.partition("-") if tag != "O" else ("O", "", "")
        if prev != "O" and (prev in "ES" or (prev in "BI" and prefix in "BSO") or prev_kind != kind):
            found.append((prev_kind, begin, i - 1))
        if prefix in "BS" or (prefix in "IE" and (prev in "ESO" or prev_kind != kind)):
            begin = i
        prev, prev_kind = prefix, kind
    return found


mlflow.models.set_model(HFTextModel())
