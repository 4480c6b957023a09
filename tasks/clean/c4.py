"""C4 quality rules: Raffel et al. 2020, section 2.2, with the line order of the reference cleaner
(TFDS `c4_utils.clean_page`). A rule whose threshold is None is off."""

from __future__ import annotations

import re

from tasks.clean.base import Doc, DocFilter

_CITATION_RE = re.compile(r"\[\d*\]|\[edit\]|\[citation needed\]", re.IGNORECASE)
_END_MARKS = (".", "!", "?", '"', "'", "”", "’")
_POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
# A sentence ends at . ! ? (a "." after a lowercase letter, digit, quote or bracket, or after two capitals: not
# "e.g." or "Mr.") when more words follow on the same line; each kept line counts one sentence more than that.
_SENTENCE_END_RE = re.compile(r"(?:(?<=[a-z0-9%)\]\"'”’])\.|(?<=[A-Z]{2})\.|[!?])(?=[^\w\s]*[ \t]+[^\w\s]*\w)")


class C4QualityFilter(DocFilter):
    """C4's line edits and page drops; keeps the edited text (kept lines joined by "\\n")."""

    name = "c4"

    def __init__(
        self,
        *,
        remove_citations: bool = True,
        filter_no_terminal_punct: bool = True,
        min_words_per_line: int | None = 3,
        max_word_length: int | None = 1000,
        filter_javascript: bool = True,
        filter_policy: bool = True,
        filter_lorem_ipsum: bool = True,
        filter_curly_bracket: bool = True,
        min_num_sentences: int | None = 5,
    ) -> None:
        """Args: each flag switches its rule; a None threshold switches it off (defaults are the published ones)."""
        super().__init__()
        self.remove_citations, self.filter_no_terminal_punct = remove_citations, filter_no_terminal_punct
        self.min_words_per_line, self.max_word_length = min_words_per_line, max_word_length
        self.filter_javascript, self.filter_policy = filter_javascript, filter_policy
        self.filter_lorem_ipsum, self.filter_curly_bracket = filter_lorem_ipsum, filter_curly_bracket
        self.min_num_sentences = min_num_sentences

    def _drop_line(self, rule: str) -> None:
        key = f"c4.lines_dropped.{rule}"
        self.counters[key] = self.counters.get(key, 0) + 1

    def filter(self, doc: Doc) -> Doc | str:
        text = doc.text
        # what is absent from the whole page is absent from each line: most pages skip most line checks
        lower = text.lower()
        lorem = self.filter_lorem_ipsum and "lorem ipsum" in lower
        javascript = self.filter_javascript and "javascript" in lower
        policies = [p for p in _POLICY if p in lower] if self.filter_policy else []
        curly = self.filter_curly_bracket and "{" in text
        citations = self.remove_citations and "[" in text
        max_len, min_words = self.max_word_length, self.min_words_per_line
        kept: list[str] = []
        for line in doc.lines:
            line = line.strip()
            # a line shorter than the limit cannot hold a longer word: skip the split for nearly every line
            if max_len is not None and len(line) > max_len and any(len(w) > max_len for w in line.split()):
                self._drop_line("too_long_word")
                continue
            if citations and "[" in line:
                line = _CITATION_RE.sub("", line)
            if self.filter_no_terminal_punct and (not line.endswith(_END_MARKS) or line.endswith("...")):
                self._drop_line("no_terminal_punct")
                continue
            if min_words and len(line.split(None, min_words - 1)) < min_words:
                self._drop_line("too_few_words")
                continue
            line_lower = line.lower() if lorem or javascript or policies else ""
            if lorem and "lorem ipsum" in line_lower:
                return "lorem_ipsum"
            if javascript and "javascript" in line_lower:
                self._drop_line("javascript")
                continue
            # the reference checks "{" only on lines that survived the line rules above, as here
            if curly and "{" in line:
                return "curly_bracket"
            if policies and any(p in line_lower for p in policies):
                self._drop_line("policy")
                continue
            kept.append(line)
        edited = "\n".join(kept).strip()
        if self.min_num_sentences is not None:
            sentences = len(kept) + len(_SENTENCE_END_RE.findall(edited))
            if sentences < self.min_num_sentences:
                return "too_few_sentences"
        return doc if edited == text else Doc(edited)
