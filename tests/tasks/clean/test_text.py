"""Unicode repair and language identification."""

from __future__ import annotations

import pytest

from tasks.clean.text import LanguageDetector, fix_text


def test_fix_text_repairs_mojibake() -> None:
    fixed = fix_text("The Mona Lisa doesnÃ¢â‚¬â„¢t have eyebrows.")
    assert fixed == "The Mona Lisa doesn't have eyebrows."
    assert "\u2019" not in fixed and "Ã" not in fixed  # the apostrophe is the plain ASCII one


def test_fix_text_is_nfc_and_idempotent() -> None:
    decomposed = "Cafe\u0301 cre\u0300me"
    fixed = fix_text(decomposed)
    assert fixed == "Caf\u00e9 cr\u00e8me"
    for text in ("The Mona Lisa doesnÃ¢â‚¬â„¢t have eyebrows.", decomposed, "plain text stays"):
        assert fix_text(fix_text(text)) == fix_text(text)
    assert fix_text("plain text stays") == "plain text stays"


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("The weather is lovely today, and we are going to walk to the park after lunch.", "en"),
        ("Le chat dort sur le canapé depuis ce matin, et il ne veut pas sortir.", "fr"),
        ("Der Hund spielt im Garten mit dem Ball, während die Kinder in der Schule sind.", "de"),
    ],
)
def test_detects_language_with_high_probability(text: str, lang: str) -> None:
    code, prob = LanguageDetector().detect(text)
    assert code == lang and 0.9 < prob <= 1.0


def test_restricted_languages_and_prefix() -> None:
    detector = LanguageDetector(languages=["fr", "de"])
    code, prob = detector.detect("The weather is lovely today, and we are going to the park.")
    assert code in {"fr", "de"} and 0.0 <= prob <= 1.0
    # only the first characters count: English first, French after the cut
    english_then_french = "The weather is lovely today. " * 3 + "Le chat dort sur le canapé depuis ce matin. " * 20
    assert LanguageDetector(max_chars=80).detect(english_then_french)[0] == "en"
    assert LanguageDetector().detect(english_then_french)[0] == "fr"
