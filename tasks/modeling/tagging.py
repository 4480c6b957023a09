"""Entity tag schemes: reading tags into entity spans, checking a sentence against its scheme, telling a data set's
scheme, and writing spans back in any scheme.

Tags are ``O`` or ``<prefix>-<type>`` (``B-PER``). The schemes:

- **IOB2** (BIO): every entity starts with ``B-``, goes on with ``I-``. An ``I-`` that follows nothing of its type
  (``O I-PER``) breaks it.
- **IOB1** (CoNLL-2003 as released): an entity starts with ``I-``; ``B-`` only starts an entity right after another
  of the same type (``I-PER B-PER``). A ``B-`` after anything else breaks it.
- **BIOES**: ``B-`` and ``E-`` open and close a multi-word entity with ``I-`` between, ``S-`` is a one-word one.

:func:`spans` reads any tag sequence the way conlleval (and seqeval's default mode) does, so that a model's output
that breaks its scheme is still scored as the standard scorer scores it: a chunk starts at ``B-``/``S-``, at an
``I-``/``E-`` after ``O`` or after another type, or after an ``E-``/``S-``. On a sequence that keeps its scheme the
reading is exact for all three schemes, so :func:`convert` (spans, then tags in the target scheme) loses nothing.
Training uses IOB2 labels (2 per type + ``O``: the smallest complete set); the user's scheme is kept for output.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

SCHEMES: tuple[str, ...] = ("IOB1", "IOB2", "BIOES")
PREFIXES: dict[str, str] = {"IOB1": "BI", "IOB2": "BI", "BIOES": "BIES"}
TRAINING_SCHEME = "IOB2"
Span = tuple[str, int, int]
"""An entity: ``(type, first word, last word)`` (inclusive, as seqeval's ``get_entities``)."""


def split_tag(tag: str) -> tuple[str, str]:
    """``(prefix, type)`` of a tag: ``("O", "")`` for ``O``, ``("B", "PER")`` for ``B-PER``.

    Raises:
        ValueError: not ``O`` and not ``<B|I|E|S>-<type>``.
    """
    if tag == "O":
        return "O", ""
    prefix, sep, kind = tag.partition("-")
    if not sep or prefix not in ("B", "I", "E", "S") or not kind.strip():
        raise ValueError(f"tag {tag!r} is not O or B-/I-/E-/S- followed by an entity type (e.g. B-PER)")
    return prefix, kind


def spans(tags: Sequence[str]) -> list[Span]:
    """The entities of one sentence's tags, read as conlleval reads them (any scheme; see the module docstring).

    Raises:
        ValueError: a tag that :func:`split_tag` refuses.
    """
    found: list[Span] = []
    prev, prev_kind, begin = "O", "", 0
    for i, tag in enumerate([*tags, "O"]):
        prefix, kind = split_tag(tag)
        ends = prev in "ES" or (prev in "BI" and prefix in "BSO") or (prev != "O" and prev_kind != kind)
        if ends and prev != "O":
            found.append((prev_kind, begin, i - 1))
        starts = (prefix in "BS" or (prev in "ES" and prefix in "IE") or (prev == "O" and prefix in "IE")
                  or (prefix != "O" and prev_kind != kind))
        if starts:
            begin = i
        prev, prev_kind = prefix, kind
    return found


def write(entities: Iterable[Span], length: int, scheme: str) -> list[str]:
    """The tags of ``length`` words holding ``entities`` (non-overlapping) in ``scheme``."""
    tags = ["O"] * length
    last_end, last_kind = -2, ""
    for kind, start, end in sorted(entities, key=lambda s: s[1]):
        if scheme == "BIOES":
            if start == end:
                tags[start] = f"S-{kind}"
            else:
                tags[start:end + 1] = [f"B-{kind}"] + [f"I-{kind}"] * (end - start - 1) + [f"E-{kind}"]
        else:
            # IOB1 opens with B- only where an entity of the same type ends on the word before
            first = "B" if scheme == "IOB2" or (last_end == start - 1 and last_kind == kind) else "I"
            tags[start:end + 1] = [f"{first}-{kind}"] + [f"I-{kind}"] * (end - start)
        last_end, last_kind = end, kind
    return tags


def convert(tags: Sequence[str], scheme: str) -> list[str]:
    """``tags`` (any scheme, read by :func:`spans`) written in ``scheme``: lossless for a sequence that keeps its own
    scheme; a broken one is repaired the way conlleval reads it."""
    return write(spans(tags), len(tags), scheme)


def violations(tags: Sequence[str], scheme: str) -> list[tuple[int, str]]:
    """Where ``tags`` (valid tags) break ``scheme``: ``[(word index, why)]``, empty when they keep it."""
    out: list[tuple[int, str]] = []
    parts = [split_tag(t) for t in tags]
    for i, (prefix, kind) in enumerate(parts):
        prev_prefix, prev_kind = parts[i - 1] if i else ("O", "")
        next_prefix, next_kind = parts[i + 1] if i + 1 < len(parts) else ("O", "")
        inside = prev_kind == kind and prev_prefix != "O"  # the word before is part of an entity of this type
        if prefix in "ES" and scheme != "BIOES":
            out.append((i, f"{tags[i]} is not an {scheme} tag (E-/S- are BIOES)"))
        elif scheme == "IOB2" and prefix == "I" and not inside:
            out.append((i, f"{tags[i]} follows {'nothing' if not i else tags[i - 1]}: in IOB2 an entity starts "
                           "with B-"))
        elif scheme == "IOB1" and prefix == "B" and not inside:
            out.append((i, f"{tags[i]} follows {'nothing' if not i else tags[i - 1]}: in IOB1 B- only starts an "
                           "entity right after another of the same type"))
        elif scheme == "BIOES":
            opened = prev_kind == kind and prev_prefix in "BI"
            goes_on = next_kind == kind and next_prefix in "IE"
            if prefix in "IE" and not opened:
                out.append((i, f"{tags[i]} follows {'nothing' if not i else tags[i - 1]}: in BIOES it must follow "
                               f"B-{kind} or I-{kind}"))
            elif prefix in "BI" and not goes_on:
                out.append((i, f"{tags[i]} is not followed by I-{kind} or E-{kind}: in BIOES an entity of several "
                               f"words ends with E-{kind} (one word: S-{kind})"))
    return out


@dataclass(frozen=True)
class SchemeReport:
    """A data set's scheme and how its sentences keep it: ``breaks`` ({scheme: sentences breaking it}) for IOB1 and
    IOB2 (BIOES: its own only), ``sentences`` read."""

    scheme: str
    breaks: dict[str, int]
    sentences: int


def detect_scheme(sentences: Iterable[Sequence[str]]) -> SchemeReport:
    """The scheme of a data set's tag sequences (valid tags): BIOES if any tag is ``E-``/``S-``; otherwise the one of
    IOB1 and IOB2 that fewer sentences break (IOB2 on a tie: the common one, and the only reading of data whose
    entities all start with ``B-`` after ``O``). A clean IOB2 set breaks IOB1 at every entity start, a clean IOB1 set
    breaks IOB2 at every one, so the few sentences that break the chosen scheme are annotation errors."""
    breaks = {"IOB1": 0, "IOB2": 0, "BIOES": 0}
    n, bioes = 0, False
    for tags in sentences:
        n += 1
        bioes = bioes or any(t[:2] in ("E-", "S-") for t in tags)
        for scheme in SCHEMES:
            breaks[scheme] += bool(violations(tags, scheme))
    if bioes:
        return SchemeReport("BIOES", {"BIOES": breaks["BIOES"]}, n)
    scheme = "IOB1" if breaks["IOB1"] < breaks["IOB2"] else "IOB2"
    return SchemeReport(scheme, {"IOB1": breaks["IOB1"], "IOB2": breaks["IOB2"]}, n)


def entity_types(tags: Iterable[str]) -> list[str]:
    """The sorted entity types of ``tags`` (valid tags): ``["LOC", "PER"]`` for ``O B-PER I-LOC``."""
    return sorted({split_tag(t)[1] for t in tags} - {""})


def training_labels(types: Iterable[str]) -> list[str]:
    """The head's labels for entity ``types``: ``O``, then ``B-`` and ``I-`` of each type in sorted order (IOB2)."""
    return ["O", *[f"{p}-{t}" for t in sorted(set(types)) for p in "BI"]]


def label_types(labels: Sequence[str]) -> set[str]:
    """The entity types ``labels`` allow: ``labels`` may list tags (``O``, ``B-PER``, ...: their types) or bare
    entity types (``PER``)."""
    out: set[str] = set()
    for label in labels:
        try:
            out.add(split_tag(label)[1])
        except ValueError:
            out.add(label)
    return out - {""}


def check_sentence(tokens: object, tags: object, *, labels: Sequence[str] | None,
                   scheme: str | None) -> tuple[list[str], list[str]] | tuple[str, str]:
    """One sentence's tokens and tags checked: ``(tokens, tags)`` (integer tags become ``labels[i]``), or a
    quarantine ``(reason, detail)``.

    Reasons: ``non_string_field`` (not a list of strings; integer tags without ``labels`` to name them),
    ``empty_field`` (no token, or a blank one), ``length_mismatch`` (tokens and tags differ in number),
    ``invalid_tag`` (not ``O`` / ``B-``... ``-<type>``), ``unknown_label`` (a type outside ``labels``),
    ``invalid_tag_sequence`` (breaks ``scheme``: an ``I-`` that follows nothing in IOB2, ...; None: not checked).
    """
    for role, value in (("tokens", tokens), ("tags", tags)):
        if not isinstance(value, list | tuple):
            return "non_string_field", f"{role} is {type(value).__name__}, not a list"
    assert isinstance(tokens, list | tuple) and isinstance(tags, list | tuple)  # for the type checker
    if (bad := next((i for i, t in enumerate(tokens) if not isinstance(t, str)), None)) is not None:
        return "non_string_field", f"token {bad} is {type(tokens[bad]).__name__} ({tokens[bad]!r}), not a string"
    if not tokens:
        return "empty_field", "the sentence has no token"
    if (blank := next((i for i, t in enumerate(tokens) if not t.strip()), None)) is not None:
        return "empty_field", f"token {blank} is blank ({tokens[blank]!r})"
    if len(tokens) != len(tags):
        return "length_mismatch", f"{len(tokens)} tokens but {len(tags)} tags"
    named: list[str] = []
    for i, tag in enumerate(tags):
        if isinstance(tag, int) and not isinstance(tag, bool):
            if labels is None or not 0 <= tag < len(labels) or not _is_tag(labels[tag]):
                return "non_string_field", (f"tag {i} is the integer {tag}: integer tags index the task's labels, "
                                            "give labels as the tag names in id order (O, B-PER, I-PER, ...)")
            tag = labels[tag]
        if not isinstance(tag, str):
            return "non_string_field", f"tag {i} is {type(tag).__name__} ({tag!r}), not a string"
        if not _is_tag(tag):
            return "invalid_tag", (f"tag {i} ({tokens[i]!r}) is {tag!r}: tags are O or B-/I-/E-/S- followed by the "
                                   "entity type (IOB1, IOB2 or BIOES)")
        named.append(tag)
    if labels is not None and (unknown := sorted({split_tag(t)[1] for t in named} - {""} - label_types(labels))):
        return "unknown_label", f"entity types {unknown} are not among the labels {list(labels)}"
    if scheme is not None and (broken := violations(named, scheme)):
        i, why = broken[0]
        more = f" (and {len(broken) - 1} more)" if len(broken) > 1 else ""
        return "invalid_tag_sequence", (f"tag {i} ({tokens[i]!r}): {why}{more}; fix the tags or set the task's scheme "
                                        "if the data uses another")
    return list(tokens), named


def _is_tag(tag: str) -> bool:
    try:
        split_tag(tag)
    except ValueError:
        return False
    return True


def head_labels(labels: Sequence[str]) -> list[str]:
    """A task's ``labels`` as the head's IOB2 tags: entity types (``[PER, LOC]``) become :func:`training_labels`;
    IOB2 tags keep their order (integer tags index them, as a dataset's ``ClassLabel`` names) with any tag the head
    needs appended (``I-LOC`` beside ``B-LOC``, ``O``).

    Raises:
        ValueError: tags of another scheme (``E-``/``S-``) or a mix of tags and bare types.
    """
    tags = [label for label in labels if _is_tag(label)]
    if not tags or tags == ["O"]:
        return training_labels(label_types(labels))
    if len(tags) != len(labels):
        raise ValueError(f"labels {list(labels)} mix tags and bare entity types: give one or the other")
    if other := [t for t in tags if t[:2] in ("E-", "S-")]:
        raise ValueError(f"labels {other} are BIOES tags: give the entity types (the head uses IOB2 tags whatever "
                         "the data's scheme) or IOB2 tags")
    return [*labels, *[t for t in training_labels(label_types(labels)) if t not in labels]]
