"""Record checks: a raw record becomes an :class:`Example` or is quarantined with a reason, never a crash.

Order: fields present and strings (an integer label becomes a string), not blank, label in the task's set, split
name known, at most ``max_chars`` characters, not a duplicate of an earlier example of the task (classification:
same text; sft: same prompt and response), at most ``max_length`` tokens. Token counts are what training feeds the
model: sft ``render_prompt(prompt)`` + ``response`` + EOS, classification ``text`` + EOS.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tasks.finetune.errors import TokenizerMissingError
from tasks.finetune.items import Bad, Example, Raw, split_name
from tasks.modeling.tasktypes.base import Reject

_RECORD_CHARS = 2000  # a quarantined string is cut to this: the row says what was wrong, it is no archive


def check_record(item: Raw, *, task_type: str, labels: list[str] | None, max_chars: int,
                 settings: Mapping[str, Any] | None = None) -> Example | Bad:
    """Field-level checks of one record (everything but duplicates and tokens): every field the type reads present,
    then the type's own checks (:meth:`tasks.modeling.tasktypes.base.TaskType.check`, with the task's ``settings``),
    the split, ``max_chars``."""
    from tasks.modeling.tasktypes import task_type as type_of

    kind = type_of(task_type, settings)
    record, fields = item.record, item.fields
    names = {role: fields.get(role) or role for role in kind.roles}
    raw: dict[str, Any] = {}
    for role, name in names.items():
        value = record.get(name)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return Bad(item.where, "missing_field", f"no {role} field {name!r}; fields: {sorted(record)}",
                       jsonable(record))
        raw[role] = value
    values = kind.check(raw, labels=labels, names=names)
    if isinstance(values, Reject):
        return Bad(item.where, values.reason, values.detail, jsonable(record))
    split = item.split
    if fields.get("split"):
        raw_split = record.get(fields["split"])
        split = split_name(raw_split)
        if split is None:
            return Bad(item.where, "unknown_split", f"split field {fields['split']!r} is {raw_split!r}, not one of "
                       "train, val, validation, dev, test", jsonable(record))
    chars = kind.chars(values)
    if chars > max_chars:
        return Bad(item.where, "too_long", f"{chars} characters > max_chars {max_chars}", jsonable(record))
    return Example(example_id(task_type, values), values, item.where, split)


def dedup_key(task_type: str, values: Mapping[str, Any]) -> str:
    """What makes two examples the same, as the task type says (classification: the text, since one text cannot have
    two labels; sft: prompt and response)."""
    from tasks.modeling.tasktypes import task_type as type_of

    return type_of(task_type).dedup_key(values)


def example_id(task_type: str, values: Mapping[str, Any]) -> str:
    """16 hex characters of BLAKE2b of the dedup key: the same example gets the same id wherever it was read."""
    return hashlib.blake2b(dedup_key(task_type, values).encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def load_tokenizer(tokenizer_dir: Path) -> Any:
    """The ``tokenizers.Tokenizer`` of the tokenizer stage or of a checkpoint (a checkpoint saved with a slow
    tokenizer's files only, such as BERT's ``vocab.txt``, is converted by transformers); text spelling a special token
    stays plain text.

    Raises:
        TokenizerMissingError: no tokenizer in ``tokenizer_dir``.
    """
    from tokenizers import Tokenizer

    from tasks.modeling.source import TOKENIZER_FILES

    path = Path(tokenizer_dir) / "tokenizer.json"
    if path.is_file():
        tokenizer = Tokenizer.from_file(str(path))
    elif any((Path(tokenizer_dir) / name).is_file() for name in TOKENIZER_FILES):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir)).backend_tokenizer
    else:
        raise TokenizerMissingError(f"no tokenizer (tokenizer.json, vocab.txt, ...) in {tokenizer_dir}: run the "
                                    "tokenizer stage first, or save the checkpoint's tokenizer with it")
    tokenizer.encode_special_tokens = True  # as training encodes: data can never inject control ids
    return tokenizer


def drop_duplicates(task_type: str, examples: Iterable[Example]) -> tuple[list[Example], list[Bad]]:
    """Keep the first of each dedup key; later ones are quarantined, naming the first."""
    first: dict[str, Example] = {}
    kept, bad = [], []
    for ex in examples:
        key = dedup_key(task_type, ex.values)
        if key in first:
            seen = first[key]
            detail = f"same as {seen.where}" + (f" (label {seen.values['label']!r})" if "label" in seen.values else "")
            bad.append(Bad(ex.where, "duplicate", detail, jsonable(ex.values)))
        else:
            first[key] = ex
            kept.append(ex)
    return kept, bad


def drop_too_long(tokenizer: Any, task_type: str, examples: list[Example], max_length: int,
                  settings: Mapping[str, Any] | None = None) -> tuple[list[Example], list[Bad]]:
    """Each example as training will see it within ``max_length`` tokens, as its type (with the task's ``settings``)
    says (:meth:`~tasks.modeling.tasktypes.base.TaskType.fit`): kept, cut where the type allows it, or quarantined
    (an sft response is never cut: a cut response teaches cut text)."""
    from tasks.modeling.tasktypes import task_type as type_of

    kind = type_of(task_type, settings)
    kept, bad = [], []
    for ex in examples:
        fitted = kind.fit(dict(ex.values), tokenizer=tokenizer, max_length=max_length)
        if isinstance(fitted, Reject):
            bad.append(Bad(ex.where, fitted.reason, fitted.detail, jsonable(ex.values)))
        else:
            kept.append(ex if fitted == ex.values else Example(ex.id, fitted, ex.where, ex.split))
    return kept, bad


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON (strings cut to 2000 characters, NaN and other types as their repr)."""
    if isinstance(value, str):
        return value if len(value) <= _RECORD_CHARS else value[:_RECORD_CHARS] + f"...[{len(value)} chars]"
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return repr(value)[:_RECORD_CHARS]
