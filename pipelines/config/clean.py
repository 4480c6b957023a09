"""Params of the clean stage: Unicode repair, language id, C4/Gopher rules, PII masking, its gate."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from pipelines.config.base import ParallelParams, Section, ValidationParams


class LanguageParams(Section):
    """Language identification with py3langid (model shipped in the package, no download)."""

    enabled: bool = Field(True, description="Drop documents not in `languages` (reason `language`).")
    languages: list[str] = Field(["en"], min_length=1, description="ISO 639-1 codes to keep.")
    min_score: float = Field(0.5, ge=0.0, le=1.0, description="Lowest normalised probability of the language.")
    max_chars: int = Field(2000, ge=50, description="Characters of each document the identifier looks at.")


class C4Params(Section):
    """C4 quality rules (Raffel et al. 2020); null switches a rule off. Published defaults."""

    enabled: bool = Field(True, description="Run this rule family.")
    remove_citations: bool = Field(True, description="Remove [1], [citation needed], [edit] markers.")
    filter_no_terminal_punct: bool = Field(True, description="Drop lines not ending in terminal punctuation.")
    min_words_per_line: int | None = Field(3, ge=1, description="Drop lines with fewer words.")
    max_word_length: int | None = Field(1000, ge=1, description="Drop lines with a longer word.")
    filter_javascript: bool = Field(True, description="Drop lines mentioning javascript.")
    filter_policy: bool = Field(True, description="Drop terms-of-use / privacy / cookie policy lines.")
    filter_lorem_ipsum: bool = Field(True, description="Drop documents containing lorem ipsum.")
    filter_curly_bracket: bool = Field(True, description="Drop documents containing '{'.")
    min_num_sentences: int | None = Field(5, ge=1, description="Drop documents with fewer sentences left.")


class GopherQualityParams(Section):
    """Gopher quality rules (Rae et al. 2021, appendix A); null switches a rule off. Published defaults."""

    enabled: bool = Field(True, description="Run this rule family.")
    min_doc_words: int | None = Field(50, ge=0, description="Fewest words.")
    max_doc_words: int | None = Field(100_000, ge=1, description="Most words.")
    min_avg_word_length: float | None = Field(3, ge=0, description="Shortest mean word length.")
    max_avg_word_length: float | None = Field(10, ge=0, description="Longest mean word length.")
    max_symbol_word_ratio: float | None = Field(0.1, ge=0, description="Most '#' and ellipsis per word.")
    max_bullet_lines_ratio: float | None = Field(0.9, ge=0, le=1, description="Most lines starting with a bullet.")
    max_ellipsis_lines_ratio: float | None = Field(0.3, ge=0, le=1, description="Most lines ending in an ellipsis.")
    min_alpha_words_ratio: float | None = Field(0.8, ge=0, le=1, description="Fewest words with a letter.")
    min_stop_words: int | None = Field(2, ge=0, description="Fewest English stop words (the, be, to, of, ...).")


class GopherRepetitionParams(Section):
    """Gopher repetition rules (Rae et al. 2021, table A1); null switches a rule off. Published defaults."""

    enabled: bool = Field(True, description="Run this rule family.")
    dup_line_frac: float | None = Field(0.30, ge=0, le=1, description="Most duplicated lines (fraction of lines).")
    dup_para_frac: float | None = Field(0.30, ge=0, le=1, description="Most duplicated paragraphs.")
    dup_line_char_frac: float | None = Field(0.20, ge=0, le=1, description="Most characters in duplicated lines.")
    dup_para_char_frac: float | None = Field(0.20, ge=0, le=1, description="Most characters in duplicated paras.")
    top_n_grams: dict[int, float] = Field({2: 0.20, 3: 0.18, 4: 0.16},
                                          description="n -> most characters in the most frequent n-gram.")
    dup_n_grams: dict[int, float] = Field({5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10},
                                          description="n -> most characters in duplicated n-grams.")


class PIIParams(Section):
    """Masking of personal data: e-mail -> <EMAIL>, IP -> <IP_ADDRESS>, phone -> <PHONE>."""

    enabled: bool = Field(False, description="Mask PII in kept documents (counted per kind).")
    emails: bool = Field(True, description="Mask e-mail addresses.")
    ips: bool = Field(True, description="Mask IPv4 and IPv6 addresses.")
    phones: bool = Field(True, description="Mask phone numbers.")


class CleanValidationParams(ValidationParams):
    """Great Expectations gate on the clean output."""

    min_chars: int = Field(1, ge=1, description="Shortest document (characters) allowed in the output.")
    max_chars: int | None = Field(None, ge=1, description="Longest document allowed (null: no limit).")
    min_language_share: float = Field(0.95, ge=0, le=1, description="Least share of rows in a kept language.")


FilterFamily = Literal["gopher_repetition", "gopher_quality", "c4"]


class CleanParams(Section):
    """The clean stage: Unicode repair, language id, C4 and Gopher rules, PII masking; rejects kept with reason."""

    fix_unicode: bool = Field(True, description="Repair mojibake and NFC-normalise with ftfy.")
    language: LanguageParams = Field(default_factory=LanguageParams, description="Language identification.")
    order: list[FilterFamily] = Field(["gopher_repetition", "gopher_quality", "c4"], min_length=0,
                                      description="Order of the rule families (FineWeb's by default).")
    c4: C4Params = Field(default_factory=C4Params, description="C4 quality rules.")
    gopher_quality: GopherQualityParams = Field(default_factory=GopherQualityParams, description="Gopher quality.")
    gopher_repetition: GopherRepetitionParams = Field(default_factory=GopherRepetitionParams,
                                                      description="Gopher repetition.")
    pii: PIIParams = Field(default_factory=PIIParams, description="PII masking.")
    parallel: ParallelParams = Field(default_factory=ParallelParams, description="Shard parallelism.")
    validation: CleanValidationParams = Field(default_factory=CleanValidationParams, description="Output gate.")

    @field_validator("order")
    @classmethod
    def _unique_order(cls, order: list[str]) -> list[str]:
        if len(set(order)) != len(order):
            raise ValueError(f"each rule family may appear once; got {order}")
        return order

    def status_notes(self, root: Path) -> list[str]:
        """Lines for `lmforge status`: how many of the shards in data/raw are new, changed, removed or reusable from
        the stage's cache, nothing when all are reusable (the shards as they are now: before collect re-runs, its
        last output)."""
        from pipelines.incremental import shard_notes

        return shard_notes(root, "clean", "data/raw", "raw shards")
