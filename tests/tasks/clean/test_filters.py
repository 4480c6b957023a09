"""C4 and Gopher rule families and the filter chain, on small hand-made documents with known answers."""

from __future__ import annotations

import pytest

from tasks.clean.base import WORD_RE, Doc
from tasks.clean.c4 import C4QualityFilter
from tasks.clean.chain import DEFAULT_ORDER, FilterChain, build_filter_chain
from tasks.clean.gopher_quality import GopherQualityFilter
from tasks.clean.gopher_repetition import GopherRepetitionFilter

SENTENCES = [
    "The city council voted on Tuesday to extend the bike lane network across the northern districts.",
    "Researchers found that the new coating reduced corrosion by nearly forty percent in the harbour.",
    "She had never seen the ocean before, and the sound of the waves kept her awake that first night.",
    "Most gardeners agree that tomatoes need at least six hours of direct sunlight every day.",
    "The museum will reopen in March after a renovation that took longer than anyone had planned.",
    "Local farmers say that the dry weather has already damaged much of this year's wheat harvest.",
]
GOOD = " ".join(SENTENCES)  # 95 words, kept by every family


def _reason(f: object, text: str) -> str | None:
    result = f.filter(Doc(text))  # type: ignore[attr-defined]
    return result if isinstance(result, str) else None


def test_words_split_like_spacy_english() -> None:
    text = "I don't know. U.S. Mr. Smith's well-known e.g. 3.5 1,000 covid-19 (see [1]) ok?!"
    assert WORD_RE.findall(text) == [
        "I", "don", "'t", "know", ".", "U.S.", "Mr.", "Smith", "'s", "well", "-", "known", "e.g.", "3.5",
        "1,000", "covid-19", "(", "see", "[", "1", "]", ")", "ok", "?", "!",
    ]  # fmt: skip


def test_c4_line_edits_give_the_exact_text() -> None:
    text = "\n".join(
        [
            "Home",
            "  Welcome to our bakery. We bake fresh bread every single day.[1]  ",
            "This site uses cookies to improve your experience.",
            "Please enable JavaScript to see the comments below.",
            "Too short.",
            "A word " + "x" * 1001 + " is far too long.",
            "He said it would be fine...",
            "Our rolls are made by hand[citation needed] with local flour.",
            'She asked, "Is the shop open on Sundays?"',
            "It is, from eight until noon.",
        ]
    )
    c4 = C4QualityFilter()
    kept = c4.filter(Doc(text))
    assert isinstance(kept, Doc)
    assert kept.text == (
        "Welcome to our bakery. We bake fresh bread every single day.\n"
        "Our rolls are made by hand with local flour.\n"
        'She asked, "Is the shop open on Sundays?"\n'
        "It is, from eight until noon."
    )
    assert c4.counters == {
        "c4.lines_dropped.no_terminal_punct": 2,
        "c4.lines_dropped.policy": 1,
        "c4.lines_dropped.javascript": 1,
        "c4.lines_dropped.too_few_words": 1,
        "c4.lines_dropped.too_long_word": 1,
    }


@pytest.mark.parametrize(
    ("text", "kwargs", "reason"),
    [
        (GOOD + "\nLorem ipsum dolor sit amet, consectetur adipiscing elit.", {}, "lorem_ipsum"),
        (GOOD + "\nThe template writes {name} in the greeting line.", {}, "curly_bracket"),
        ("Only one sentence survives here.\nmenu", {}, "too_few_sentences"),
        (GOOD, {"min_num_sentences": 7}, "too_few_sentences"),
    ],
)
def test_c4_page_drops(text: str, kwargs: dict, reason: str) -> None:
    assert _reason(C4QualityFilter(), GOOD) is None
    assert _reason(C4QualityFilter(**kwargs), text) == reason


def test_c4_rules_switch_off() -> None:
    text = GOOD + "\nThe template writes {name} in the greeting line."
    assert _reason(C4QualityFilter(filter_curly_bracket=False), text) is None
    kept = C4QualityFilter(filter_no_terminal_punct=False).filter(Doc(GOOD + "\nno end mark here"))
    assert isinstance(kept, Doc) and kept.text.endswith("no end mark here")


LIST_DOC = "\n".join("- " + s for s in SENTENCES)
SHORT_WORDS = " ".join(["to of a i an is it on at we"] * 7)
LONG_WORDS = "the and " + " ".join(["internationalization"] * 60)
NUMBERS = GOOD + " " + " ".join(str(n) for n in range(100, 140))
NO_STOP = " ".join(s.replace("the ", "").replace("The ", "") for s in SENTENCES[:1]) + " " + " ".join(
    ["Apples bananas cherries dates figs grapes."] * 10
)


@pytest.mark.parametrize(
    ("text", "kwargs", "reason"),
    [
        ("The cat sat on the mat with the dog.", {}, "min_doc_words"),
        (GOOD, {"max_doc_words": 90}, "max_doc_words"),
        (SHORT_WORDS, {}, "min_avg_word_length"),
        (LONG_WORDS, {}, "max_avg_word_length"),
        (GOOD + " " + " ".join(["#news"] * 15), {}, "hash_word_ratio"),
        (GOOD + " " + " ".join(["so … then"] * 20) + ".", {}, "ellipsis_word_ratio"),
        (LIST_DOC, {}, "bullet_lines_ratio"),
        ("\n".join(s[:-1] + "..." for s in SENTENCES), {}, "ellipsis_lines_ratio"),
        (NUMBERS, {}, "alpha_words_ratio"),
        (NO_STOP, {}, "min_stop_words"),
    ],
)
def test_gopher_quality_rules(text: str, kwargs: dict, reason: str) -> None:
    assert _reason(GopherQualityFilter(**kwargs), " ".join(SENTENCES[:4])) is None  # 63 words
    assert _reason(GopherQualityFilter(**kwargs), text) == reason


def test_gopher_quality_thresholds_switch_off() -> None:
    assert _reason(GopherQualityFilter(max_bullet_lines_ratio=None), LIST_DOC) is None
    assert _reason(GopherQualityFilter(), SENTENCES[0]) == "min_doc_words"
    assert _reason(GopherQualityFilter(min_doc_words=None), SENTENCES[0]) is None


UNIQUE = [f"Line number {word} says something different about the {word} topic." for word in
          ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth")]
LONG_LINE = "This long line is repeated once and " + "holds many characters of ordinary text " * 8 + "today."


@pytest.mark.parametrize(
    ("text", "kwargs", "reason"),
    [
        ("\n".join(UNIQUE[:3] * 3), {}, "dup_line_frac"),
        ("\n".join(UNIQUE + [LONG_LINE, LONG_LINE]), {}, "dup_line_char_frac"),
        ("\n\n".join(["\n".join(UNIQUE[:2])] * 3), {"dup_line_frac": None, "dup_line_char_frac": None},
         "dup_para_frac"),
        ("\n\n".join(UNIQUE + [LONG_LINE, LONG_LINE]), {"dup_line_frac": None, "dup_line_char_frac": None},
         "dup_para_char_frac"),
        (" ".join(f"hello world {w}" for w in "alpha beta gamma delta epsilon zeta eta theta".split()), {},
         "top_2_gram"),
        (" ".join(f"one two three {w}" for w in "alpha beta gamma delta epsilon zeta".split()),
         {"top_n_grams": {3: 0.18}}, "top_3_gram"),
        (GOOD + " " + SENTENCES[0] + " " + SENTENCES[1], {"top_n_grams": None}, "dup_5_gram"),
        (GOOD + " " + SENTENCES[0], {"top_n_grams": None, "dup_n_grams": {10: 0.05}}, "dup_10_gram"),
        ("", {}, "empty"),
    ],
)
def test_gopher_repetition_rules(text: str, kwargs: dict, reason: str) -> None:
    assert _reason(GopherRepetitionFilter(**kwargs), GOOD) is None
    assert _reason(GopherRepetitionFilter(**kwargs), text) == reason


def test_duplicate_ngram_chars_skip_overlaps() -> None:
    # "a b a b a b": 2-grams at 0..4 are ab ba ab ba ab; the scan counts "ab" at 2, jumps to 4, counts "ab" again
    hashes_doc = GopherRepetitionFilter(top_n_grams=None, dup_n_grams={2: 0.0})
    assert _reason(hashes_doc, "a b a b a b") == "dup_2_gram"
    assert _reason(GopherRepetitionFilter(top_n_grams=None, dup_n_grams={2: 4 / 11}), "a b a b a b") is None
    assert _reason(GopherRepetitionFilter(top_n_grams=None, dup_n_grams={2: 3.9 / 11}), "a b a b a b") == "dup_2_gram"


def test_chain_reasons_and_funnel_add_up() -> None:
    docs = [GOOD, " ".join(SENTENCES[:2]), "\n".join(UNIQUE[:3] * 3), GOOD + "\nLorem ipsum dolor sit amet, it is.",
            "\n".join(SENTENCES + ["Menu", "Home"])]
    chain = build_filter_chain()
    results = [chain(d) for d in docs]
    assert [r for _, r in results] == [None, "gopher_quality.min_doc_words", "gopher_repetition.dup_line_frac",
                                       "c4.lorem_ipsum", None]
    assert results[0][0] == GOOD and results[4][0] == "\n".join(SENTENCES)  # C4 removed the menu lines
    c = chain.counters
    dropped = sum(v for k, v in c.items() if k.startswith("dropped_"))
    assert c["docs_in"] == 5 and c["kept"] == 2 and c["docs_in"] == c["kept"] + dropped
    funnel = [c[f"funnel.{name}.docs"] for name in DEFAULT_ORDER]
    assert funnel == [4, 3, 2] and c["kept"] == funnel[-1]
    assert c["chars_kept"] == c[f"funnel.{DEFAULT_ORDER[-1]}.chars"] == len(GOOD) + len("\n".join(SENTENCES))
    assert c["chars_in"] == sum(map(len, docs))
    assert c["c4.lines_dropped.no_terminal_punct"] == 2


def test_chain_order_and_validation() -> None:
    chain = FilterChain([C4QualityFilter()])
    assert chain("menu\nhome") == (None, "c4.too_few_sentences")
    with pytest.raises(ValueError, match="unknown rule families"):
        build_filter_chain(["c4", "fineweb"])
    with pytest.raises(ValueError, match="once"):
        FilterChain([C4QualityFilter(), C4QualityFilter()])
