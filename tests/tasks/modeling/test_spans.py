"""Answer windows and span decoding with the tokenizers of three kinds of model: BERT's WordPiece (a CLS token),
GPT-2's byte-level BPE (no CLS, no pad) and lmforge's own byte-level BPE (no special tokens added at all)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tasks.modeling.tasktypes.spans import answer_chars, best_answers, max_question_tokens, windows
from tests.assets.checkpoints import WORDS, save_checkpoint

CONTEXT = ("the cat sat on the mat . the dog ran to the log . a bird flew over the tree . it was at home with "
           "a cat . the dog sat under the tree and the bird ran to the mat . this was that , as it is .")
QUESTION = "what flew over the tree ?"
ANSWER = "a bird"
START = CONTEXT.index("a bird flew")


@pytest.fixture(scope="module", params=["bert", "gpt2", "lmforge"])
def tokenizer(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp(request.param)
    if request.param != "lmforge":
        return AutoTokenizer.from_pretrained(str(save_checkpoint(request.param, out)))
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())  # as the tokenizer stage makes it: byte-level, no post-processor
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))],
                            trainers.BpeTrainer(vocab_size=300, special_tokens=["<|bos|>", "<|eos|>", "<|pad|>"],
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|bos|>", eos_token="<|eos|>",
                                   pad_token="<|pad|>")


def encode(tokenizer: Any, max_length: int = 24, stride: int = 6, **kwargs: Any) -> dict[str, Any]:
    return windows([QUESTION], [CONTEXT], tokenizer=tokenizer, max_length=max_length, stride=stride,
                   answers=[(START, START + len(ANSWER))], **kwargs)


def test_long_contexts_become_overlapping_windows_that_locate_the_answer(tokenizer: Any) -> None:
    data = encode(tokenizer)
    n = len(data["ids"])
    assert n >= 3 and data["example"] == [0] * n and data["kept"] == [0] and data["dropped"] == []
    assert all(len(ids) <= 24 for ids in data["ids"])
    cls = tokenizer.cls_token_id
    assert data["null"] == [0] * n  # BERT: the CLS token; GPT-2 and lmforge's: position 0 of the window
    if cls is not None:
        assert all(ids[0] == cls for ids in data["ids"])
    for w in range(n - 1):  # consecutive windows share `stride` context tokens
        context = [t for t, o in zip(data["ids"][w], data["offsets"][w], strict=True) if o is not None]
        following = [t for t, o in zip(data["ids"][w + 1], data["offsets"][w + 1], strict=True) if o is not None]
        assert context[-6:] == following[:6]
    holding = []
    for w, (start, end) in enumerate(data["targets"]):
        if (start, end) == (0, 0):
            continue
        holding.append(w)
        first, last = data["offsets"][w][start], data["offsets"][w][end]
        assert CONTEXT[first[0]:last[1]].strip() == ANSWER
    assert holding  # the answer is inside at least one window, and windows without it point at the null position
    covered = [w for w in range(n) if data["offsets"][w][_first(data, w)][0] <= START
               and data["offsets"][w][_last(data, w)][1] >= START + len(ANSWER)]
    assert holding == covered


def _first(data: dict[str, Any], w: int) -> int:
    return next(i for i, o in enumerate(data["offsets"][w]) if o is not None)


def _last(data: dict[str, Any], w: int) -> int:
    return max(i for i, o in enumerate(data["offsets"][w]) if o is not None)


def peaked(data: dict[str, Any], spans: dict[int, tuple[int, int, float]], null: float = 0.0) -> list[np.ndarray]:
    """Logits zero everywhere but ``spans`` ({window: (start, end, height)}) and the null position."""
    out = []
    for w, ids in enumerate(data["ids"]):
        logits = np.zeros((len(ids) + 3, 2))  # longer than the window: padding is ignored
        logits[data["null"][w]] = null / 2
        if w in spans:
            s, e, height = spans[w]
            logits[s, 0] += height
            logits[e, 1] += height
        out.append(logits)
    return out


def test_the_gold_positions_decode_to_the_answer_with_its_offsets(tokenizer: Any) -> None:
    data = encode(tokenizer)
    w = next(i for i, t in enumerate(data["targets"]) if t != [0, 0])
    s, e = data["targets"][w]
    logits = peaked(data, {w: (s, e, 8.0)})
    [answer] = best_answers(logits, data, [CONTEXT], max_answer_length=30, allow_null=False)
    assert answer["text"] == ANSWER and (answer["start"], answer["end"]) == (START, START + len(ANSWER))
    assert answer["score"] == pytest.approx(16.0) and 0.5 < answer["probability"] <= 1.0


def usable(data: dict[str, Any], w: int) -> list[int]:
    """A window's context tokens that may start or end an answer (not a lone byte-level space)."""
    return [i for i, o in enumerate(data["offsets"][w]) if o is not None and CONTEXT[o[0]:o[1]].strip()]


def test_the_best_span_wins_across_windows_within_the_length_limit(tokenizer: Any) -> None:
    data = encode(tokenizer)
    n = len(data["ids"])
    u, v = usable(data, 0), usable(data, n - 1)
    logits = peaked(data, {0: (u[0], u[1], 3.0), n - 1: (v[0], v[0], 5.0)})
    [answer] = best_answers(logits, data, [CONTEXT], max_answer_length=30, allow_null=False)
    first, last = data["offsets"][n - 1][v[0]]
    assert answer["text"] == CONTEXT[first:last].strip() and answer["score"] == pytest.approx(10.0)
    # an end before its start never counts; a span longer than max_answer_length neither
    logits = peaked(data, {0: (u[2], u[0], 9.0)})
    logits[0][u[5], 1] = 1.0
    [answer] = best_answers(logits, data, [CONTEXT], max_answer_length=30, allow_null=False)
    assert answer["score"] == pytest.approx(10.0)  # start u[2] (9) with end u[5] (1)
    [short] = best_answers(logits, data, [CONTEXT], max_answer_length=u[5] - u[2], allow_null=False)
    assert short["score"] == pytest.approx(9.0)  # u[2]..u[5] is one token too long: the end falls back to a zero


def test_the_null_answer_only_where_unanswerable_questions_are_allowed(tokenizer: Any) -> None:
    data = encode(tokenizer)
    a = usable(data, 0)[0]
    logits = peaked(data, {0: (a, a, 2.0)}, null=6.0)
    [null] = best_answers(logits, data, [CONTEXT], max_answer_length=30, allow_null=True)
    assert null["text"] == "" and null["start"] is None and null["score"] == pytest.approx(6.0)
    [span] = best_answers(logits, data, [CONTEXT], max_answer_length=30, allow_null=False)
    assert span["text"] and span["score"] == pytest.approx(4.0)
    logits = peaked(data, {0: (a, a, 4.0)}, null=6.0)
    [span] = best_answers(logits, data, [CONTEXT], max_answer_length=30, allow_null=True)
    assert span["text"] and span["score"] == pytest.approx(8.0)


def test_unanswerable_examples_target_the_null_position_everywhere(tokenizer: Any) -> None:
    data = windows([QUESTION, "where ?"], [CONTEXT, "the cat sat ."], tokenizer=tokenizer, max_length=24, stride=6,
                   answers=[None, (4, 7)])
    assert {tuple(t) for t, x in zip(data["targets"], data["example"], strict=True) if x == 0} == {(0, 0)}
    [last] = [t for t, x in zip(data["targets"], data["example"], strict=True) if x == 1]
    w = data["example"].index(1)
    offsets = data["offsets"][w]
    assert "the cat sat ."[offsets[last[0]][0]:offsets[last[1]][1]].strip() == "cat"


def test_a_question_too_long_for_the_window_is_dropped_not_a_crash(tokenizer: Any) -> None:
    limit = max_question_tokens(tokenizer, max_length=24, stride=6)
    long_question = " ".join(["the cat sat"] * 20)
    data = windows([long_question, QUESTION], [CONTEXT, CONTEXT], tokenizer=tokenizer, max_length=24, stride=6)
    assert data["dropped"] == [0] and data["kept"] == [1] and set(data["example"]) == {1} and "targets" not in data
    assert len(tokenizer(long_question, add_special_tokens=False)["input_ids"]) > limit
    answers = best_answers([np.zeros((24, 2))] * len(data["ids"]), data, [CONTEXT, CONTEXT], max_answer_length=5,
                           allow_null=False)
    assert answers[0] == {"text": "", "start": None, "end": None, "score": None, "probability": None}
    assert answers[1]["text"]


def test_settings_that_cannot_work_are_clear_errors(tokenizer: Any, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="doc_stride 24 must be at least 0 and below max_length 24"):
        encode(tokenizer, stride=24)
    from transformers import BertTokenizer

    save_checkpoint("bert", tmp_path / "bert")
    slow = BertTokenizer(vocab_file=str(tmp_path / "bert" / "vocab.txt"))
    if not getattr(slow, "is_fast", False):
        with pytest.raises(ValueError, match="not a fast tokenizer"):
            encode(slow)


def test_answer_chars_takes_the_first_gold_answer() -> None:
    assert answer_chars({"text": ["a bird", "bird"], "answer_start": [40, 42]}) == (40, 46)
    assert answer_chars({"text": [], "answer_start": []}) is None
