"""Named-entity recognition quality: entity-level precision, recall and F1 (micro and per type) and token accuracy with
bootstrap intervals over sentences, the classic most-frequent-tag baseline, and the tags an exported token classifier
predicts.

The figures are conlleval's (:mod:`tasks.modeling.entity_metrics`). Intervals resample whole sentences, as the
entities of a sentence are not independent of each other; they are percentile intervals from
:func:`tasks.evaluate.classification.bootstrap_intervals`, the resampler every task type's intervals share.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

BASELINE = "most_frequent_tag"


def ner_metrics(*, references: Sequence[Sequence[str]], predictions: Sequence[Sequence[str]], bootstrap: int = 1000,
                level: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """:func:`tasks.modeling.entity_metrics.entity_scores` with ``ci`` ({figure: [low, high]} for entity precision,
    recall and F1 and token accuracy, plus ``bootstrap`` and ``level``) from ``bootstrap`` seeded resamples of the
    sentences.

    Raises:
        EntityScoreError: the numbers of sentences or of words differ.
    """
    import numpy as np

    from tasks.evaluate.classification import bootstrap_intervals
    from tasks.modeling.entity_metrics import entity_scores, micro_from_counts, sentence_counts

    out = entity_scores(references, predictions)
    out["examples"] = out["sentences"]  # what every task's row counts its test examples by
    if bootstrap and references:
        counts = np.array(sentence_counts(references, predictions), dtype=np.int64)
        out["ci"] = bootstrap_intervals(len(counts), lambda pick: micro_from_counts(counts[pick].sum(0).tolist()),
                                        bootstrap=bootstrap, level=level, seed=seed)
    return out


def most_frequent_tag(*, train: Sequence[tuple[Sequence[str], Sequence[str]]], sentences: Sequence[Sequence[str]],
                      scheme: str) -> list[list[str]]:
    """The classic NER baseline: each word gets the tag it carried most often in training (exact spelling; ties go
    to the tag seen first), a word never seen gets ``O``.

    Tags are counted in IOB2 (the training scheme: ``B-`` where an entity starts, whatever the data's scheme), and
    the predictions are written back in ``scheme``, read as conlleval reads them.

    Args:
        train: the training sentences as ``(words, tags)``, tags in ``scheme``.
        sentences: the words of the sentences to tag.
        scheme: the data's scheme (IOB1, IOB2 or BIOES).
    """
    from tasks.modeling.tagging import TRAINING_SCHEME, convert

    seen: dict[str, Counter[str]] = {}
    for words, tags in train:
        for word, tag in zip(words, convert(tags, TRAINING_SCHEME), strict=True):
            seen.setdefault(word, Counter())[tag] += 1
    best = {word: counts.most_common(1)[0][0] for word, counts in seen.items()}
    return [convert([best.get(w, "O") for w in words], scheme) for words in sentences]


def predict_tags(*, model_dir: Path, sentences: Sequence[Sequence[str]], scheme: str, batch_size: int = 16,
                 max_length: int | None = None, model: Any = None) -> list[list[str]]:
    """The tags an exported token classifier (``AutoModelForTokenClassification`` with its tokenizer and
    ``id2label``) predicts for each word of ``sentences``, in ``scheme``.

    Encoded as training encodes (:mod:`tasks.modeling.alignment`: the words as running text, a long sentence in
    windows of whole words), each word's tag read at its first token. A sentence with a word that alone takes more
    than ``max_length`` tokens (which the data step quarantines) is tagged ``O`` throughout.

    Args:
        model_dir: the model directory.
        sentences: each sentence's words.
        scheme: the scheme of the returned tags (the model's IOB2 output rewritten).
        batch_size: windows per forward pass.
        max_length: the longest window (None: the model's ``max_position_embeddings``).
        model: the model already loaded (an int8 one); None: load ``model_dir``'s.
    """
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from tasks.modeling.alignment import encode_sentences, word_predictions
    from tasks.modeling.encoding import special_ids
    from tasks.modeling.tagging import convert

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if model is None:
        model = AutoModelForTokenClassification.from_pretrained(str(model_dir), dtype=torch.float32)
    model = model.eval()
    _, pad_id = special_ids(tokenizer)
    limit = int(max_length or model.config.max_position_embeddings)
    windows, dropped = encode_sentences(sentences, None, tokenizer=tokenizer, max_length=limit)
    flat = [(s, w) for s, ws in enumerate(windows) for w in ws]
    per_window: list[list[int]] = []
    with torch.no_grad():
        for i in range(0, len(flat), batch_size):
            chunk = [w for _, w in flat[i:i + batch_size]]
            width = max(len(w.ids) for w in chunk)
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, w in enumerate(chunk):
                ids[row, :len(w.ids)] = torch.tensor(w.ids)
                mask[row, :len(w.ids)] = 1
            per_window += model(input_ids=ids, attention_mask=mask).logits.argmax(-1).tolist()
    id2label = {int(k): v for k, v in model.config.id2label.items()}
    outside = next((k for k, v in id2label.items() if v == "O"), 0)
    out: list[list[str]] = []
    at = 0
    for s, words in enumerate(sentences):
        n = len(windows[s])
        ids_per_word = word_predictions(windows[s], per_window[at:at + n], len(words), fallback=outside)
        at += n
        out.append(convert([id2label[i] for i in ids_per_word], scheme) if s not in dropped else ["O"] * len(words))
    return out


def score_taggers(*, models: Mapping[str, Path], splits: Mapping[str, Sequence[Mapping[str, Any]]], scheme: str,
                  batch_size: int = 32, bootstrap: int = 1000, level: float = 0.95, seed: int = 0,
                  loaders: Mapping[str, Callable[[Path], Any]] | None = None) -> dict[str, dict[str, Any]]:
    """Every token classifier of a task and the most-frequent-tag baseline, scored on its test split.

    Args:
        models: ``{name: model directory}`` (``finetuned``, ``student``, variants).
        splits: the task's ``train`` and ``test`` rows (``tokens``, ``tags`` in ``scheme``); the baseline learns from
            train.
        scheme: the task's tag scheme.
        batch_size: windows per forward pass.
        bootstrap: resamples of the intervals; level: their coverage; seed: seeds them.
        loaders: ``{name: load(model_dir)}`` for models plain ``from_pretrained`` does not load; None: the int8
            variant by the model layer's loader (``tasks.modeling.quantize.load_int8``).

    Returns:
        ``{name: ner_metrics(...)}``, the baseline as ``most_frequent_tag``.
    """
    from tasks.modeling.quantize import load_int8

    test = splits["test"]
    refs, words = [list(r["tags"]) for r in test], [list(r["tokens"]) for r in test]
    predictions = {}
    for name, model_dir in models.items():
        load = (loaders if loaders is not None else {"int8": load_int8}).get(name)
        predictions[name] = predict_tags(model_dir=model_dir, sentences=words, scheme=scheme, batch_size=batch_size,
                                         model=load(model_dir) if load else None)
    predictions[BASELINE] = most_frequent_tag(train=[(r["tokens"], r["tags"]) for r in splits["train"]],
                                              sentences=words, scheme=scheme)
    return {name: ner_metrics(references=refs, predictions=p, bootstrap=bootstrap, level=level, seed=seed)
            for name, p in predictions.items()}
