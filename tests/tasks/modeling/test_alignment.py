"""Words to sub-word tokens and back: the first token of each word labelled and the rest ignored, the words encoded as
the running text a tokenizer learned from, long sentences in windows of whole words that cover every word once, and
entity spans with character offsets in raw text. For lmforge's own byte-level BPE and BERT's WordPiece."""

from __future__ import annotations

import random
from typing import Any

import pytest

from tasks.modeling.alignment import IGNORE, char_spans, encode_sentences, join_words, text_words, word_predictions

WORDS = "the cat sat on a mat and the dog ran to the park while birds sang".split()


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """lmforge's tokenizer kind (byte-level BPE, no prefix space, no special tokens added) and a BERT WordPiece
    ([CLS] ... [SEP], lower-cased, long words in ``##`` pieces)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from tests.assets.checkpoints import save_checkpoint

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|bos|>", "<|eos|>", "<|pad|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator([" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))], trainer)
    lmforge = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|bos|>", eos_token="<|eos|>",
                                      pad_token="<|pad|>")
    bert = AutoTokenizer.from_pretrained(str(save_checkpoint("bert", tmp_path_factory.mktemp("bert"))))
    return {"lmforge": lmforge, "bert": bert}


@pytest.mark.parametrize("kind", ["lmforge", "bert"])
def test_the_first_token_of_each_word_carries_its_label(tokenizers: dict[str, Any], kind: str) -> None:
    tokenizer = tokenizers[kind]
    words = ["the", "catsatonamat", "on", "Treehomeflew", "."]
    (windows,), dropped = encode_sentences([words], [[1, 2, 3, 4, 5]], tokenizer=tokenizer, max_length=64)
    assert dropped == [] and len(windows) == 1
    window = windows[0]
    assert window.ids == tokenizer(" ".join(words))["input_ids"]  # the running text, not words encoded one by one
    labelled = [(t, y) for t, y in enumerate(window.targets) if y != IGNORE]
    assert [y for _, y in labelled] == [1, 2, 3, 4, 5]
    assert [t for t, _ in labelled] == window.positions
    assert len(window.ids) > len(words) + (2 if kind == "bert" else 0)  # some words are several tokens
    special = tokenizer(" ".join(words), return_special_tokens_mask=True)["special_tokens_mask"]
    assert all(window.targets[t] == IGNORE for t, s in enumerate(special) if s)
    # each word's tokens, from its first to the next word's first, spell the word
    bounds = [*window.positions, len(window.ids) - (1 if kind == "bert" else 0)]
    for w, word in enumerate(words):
        text = tokenizer.decode(window.ids[bounds[w]:bounds[w + 1]]).replace(" ##", "").replace(" ", "")
        assert text == word.lower() if kind == "bert" else text == word


def test_byte_level_words_keep_the_space_they_had_in_pretraining(tokenizers: dict[str, Any]) -> None:
    tokenizer = tokenizers["lmforge"]
    (windows,), _ = encode_sentences([["the", "cat", "sat", "on"]], [[0, 0, 0, 0]], tokenizer=tokenizer,
                                     max_length=32)
    tokens = tokenizer.convert_ids_to_tokens(windows[0].ids)
    assert tokens[windows[0].positions[3]] == "Ġon"  # pre-split input (is_split_into_words) would give 'o', 'n'


@pytest.mark.parametrize("kind", ["lmforge", "bert"])
def test_long_sentences_become_windows_of_whole_words(tokenizers: dict[str, Any], kind: str) -> None:
    tokenizer = tokenizers[kind]
    rng = random.Random(0)
    sentences = [[rng.choice(WORDS + ["Treehomeflew", "catsatonamat", ","]) for _ in range(rng.randrange(1, 60))]
                 for _ in range(30)]
    labels = [list(range(len(s))) for s in sentences]
    encoded, dropped = encode_sentences(sentences, labels, tokenizer=tokenizer, max_length=12)
    assert dropped == []
    assert any(len(w) > 2 for w in encoded)
    for words, tags, windows in zip(sentences, labels, encoded, strict=True):
        covered = []
        for window in windows:
            assert len(window.ids) <= 12
            own = words[window.first:window.first + len(window.positions)]
            assert window.ids == tokenizer(join_words(own)[0])["input_ids"]  # whole words, nothing cut
            covered += range(window.first, window.first + len(window.positions))
        assert covered == list(range(len(words)))  # every word once, in order
        assert word_predictions(windows, [w.targets for w in windows], len(words), fallback=-1) == tags


def test_a_word_that_cannot_fit_drops_its_sentence_only(tokenizers: dict[str, Any]) -> None:
    encoded, dropped = encode_sentences([["the", "catsatonamatandthedograntothehome"], ["the", "cat"]], None,
                                        tokenizer=tokenizers["bert"], max_length=5)
    assert dropped == [0] and encoded[0] == [] and len(encoded[1]) == 1
    assert encoded[1][0].targets == [IGNORE] * len(encoded[1][0].ids)  # no labels: prediction only


def test_raw_text_words_and_entity_offsets() -> None:
    text = "Angela Merkel visited the U.S. on 2024-05-01, didn't she?"
    offsets = text_words(text)
    assert [text[a:b] for a, b in offsets] == ["Angela", "Merkel", "visited", "the", "U.S", ".", "on", "2024-05-01",
                                               ",", "didn't", "she", "?"]
    entities = [("PER", 0, 1), ("LOC", 4, 5)]
    assert char_spans(entities, offsets, text) == [
        {"entity": "PER", "start": 0, "end": 13, "text": "Angela Merkel"},
        {"entity": "LOC", "start": 26, "end": 30, "text": "U.S."}]
    assert join_words(["New York", "is"]) == ("New York is", [(0, 8), (9, 11)])


@pytest.mark.parametrize("kind", ["lmforge", "bert"])
def test_the_data_step_finds_exactly_the_words_that_cannot_fit(tokenizers: dict[str, Any], kind: str) -> None:
    from tasks.modeling.alignment import unfit_word

    tokenizer = tokenizers[kind]
    sentences = [["the", "cat"], ["the", "catsatonamatandthedograntothehome", "dog"], ["Treehomeflew"] * 3]
    for max_length in (3, 5, 8, 12, 40):
        _, dropped = encode_sentences(sentences, None, tokenizer=tokenizer, max_length=max_length)
        found = [i for i, s in enumerate(sentences) if unfit_word(tokenizer.backend_tokenizer, s, max_length)]
        assert found == dropped, max_length
    assert unfit_word(tokenizer, sentences[1], 5) == (1, len(tokenizer(sentences[1][1])["input_ids"]))
