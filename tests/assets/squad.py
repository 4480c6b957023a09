"""A tiny SQuAD-format data set made here (no download): short contexts of "the cat sat on the mat ."-style sentences
and questions a reader answers from one of them, in the words tests/assets/checkpoints.py's tokenizers know.

Each context holds three sentences ``the <subject> <verb> <preposition> the <object> .`` with distinct subjects and
objects; a question asks for a sentence's subject (``what <verb> <preposition> the <object> ?`` -> ``the
<subject>``) or its object (``the <subject> <verb> <preposition> what ?`` -> ``the <object>``). With
``unanswerable``, some questions ask about an object no sentence has (SQuAD 2.0 ``is_impossible``, no answers).
``bad`` adds records the data step must quarantine: an answer_start one character off, and a question without an
answers list.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

SUBJECTS = ("cat", "dog", "bird")
VERBS = ("sat", "ran", "flew")
PREPOSITIONS = ("on", "over", "under", "to")
OBJECTS = ("mat", "log", "tree", "home")


def _paragraph(rng: random.Random, index: int, unanswerable: bool) -> dict[str, Any]:
    subjects = rng.sample(SUBJECTS, 3)
    objects = rng.sample(OBJECTS, 3)
    sentences = [(s, rng.choice(VERBS), rng.choice(PREPOSITIONS), o) for s, o in zip(subjects, objects, strict=True)]
    context = " ".join(f"the {s} {v} {p} the {o} ." for s, v, p, o in sentences)
    qas = []
    for k, (s, v, p, o) in enumerate(sentences):
        start = context.index(f"the {s} {v} {p} the {o} .")
        if (index + k) % 2:
            qas.append({"id": f"p{index}q{k}", "question": f"what {v} {p} the {o} ?",
                        "answers": [{"text": f"the {s}", "answer_start": start}], "is_impossible": False})
        else:
            qas.append({"id": f"p{index}q{k}", "question": f"the {s} {v} {p} what ?", "is_impossible": False,
                        "answers": [{"text": f"the {o}", "answer_start": start + len(f"the {s} {v} {p} ")}]})
    if unanswerable:
        [missing] = sorted(set(OBJECTS) - set(objects))
        qas.append({"id": f"p{index}q3", "question": f"what {rng.choice(VERBS)} on the {missing} ?", "answers": [],
                    "plausible_answers": [{"text": f"the {subjects[0]}", "answer_start": 0}], "is_impossible": True})
    return {"context": context, "qas": qas}


def squad_dataset(paragraphs: int = 40, *, seed: int = 0, unanswerable: bool = False,
                  bad: bool = False) -> dict[str, Any]:
    """A SQuAD json document (``version`` 2.0 with ``unanswerable``, else 1.1) of ``paragraphs`` paragraphs over
    two articles (3 questions each, a fourth unanswerable one with ``unanswerable``)."""
    rng = random.Random(seed)
    items = [_paragraph(rng, i, unanswerable) for i in range(paragraphs)]
    if bad:
        items[0]["qas"][0]["answers"][0]["answer_start"] += 1  # answer_mismatch
        del items[1]["qas"][0]["answers"]                       # missing_field
    half = len(items) // 2
    return {"version": "v2.0" if unanswerable else "1.1",
            "data": [{"title": "pets", "paragraphs": items[:half]}, {"title": "yard", "paragraphs": items[half:]}]}


def write_squad(path: Path, paragraphs: int = 40, **kwargs: Any) -> Path:
    """:func:`squad_dataset` written as one-line json (as SQuAD's files come) to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(squad_dataset(paragraphs, **kwargs)), encoding="utf-8")
    return path
