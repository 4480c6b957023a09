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

from tasks.examples import render_prompt
from tasks.finetune.errors import TokenizerMissingError
from tasks.finetune.items import Bad, Example, Raw, split_name

INPUTS: dict[str, tuple[str, ...]] = {"classification": ("text", "label"), "sft": ("prompt", "response")}
_RECORD_CHARS = 2000  # a quarantined string is cut to this: the row says what was wrong, it is no archive


def check_record(item: Raw, *, task_type: str, labels: list[str] | None, max_chars: int) -> Example | Bad:
    """Field-level checks of one record (everything but duplicates and tokens)."""
    record, fields = item.record, item.fields
    values: dict[str, str] = {}
    for role in INPUTS[task_type]:
        name = fields[role] or role
        value = record.get(name)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return Bad(item.where, "missing_field", f"no {role} field {name!r}; fields: {sorted(record)}",
                       jsonable(record))
        if role == "label" and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # integer class ids are labels too; strings keep one label type throughout
        if not isinstance(value, str):
            return Bad(item.where, "non_string_field", f"{role} field {name!r} is {type(value).__name__}, not a "
                       "string" + (" or integer" if role == "label" else ""), jsonable(record))
        if not value.strip():
            return Bad(item.where, "empty_field", f"{role} field {name!r} is empty", jsonable(record))
        values[role] = value
    if labels is not None and values["label"] not in labels:
        return Bad(item.where, "unknown_label", f"label {values['label']!r} is not one of {labels}", jsonable(record))
    split = item.split
    if fields.get("split"):
        raw = record.get(fields["split"])
        split = split_name(raw)
        if split is None:
            return Bad(item.where, "unknown_split", f"split field {fields['split']!r} is {raw!r}, not one of train, "
                       "val, validation, dev, test", jsonable(record))
    chars = sum(len(v) for role, v in values.items() if role != "label")
    if chars > max_chars:
        return Bad(item.where, "too_long", f"{chars} characters > max_chars {max_chars}", jsonable(record))
    return Example(example_id(task_type, values), values, item.where, split)


def dedup_key(task_type: str, values: Mapping[str, str]) -> str:
    """What makes two examples the same: the text (one text cannot have two labels), or prompt and response."""
    return values["text"] if task_type == "classification" else f"{values['prompt']}\0{values['response']}"


def example_id(task_type: str, values: Mapping[str, str]) -> str:
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


def count_tokens(tokenizer: Any, task_type: str, examples: list[Example], batch_size: int = 1000) -> list[int]:
    """Tokens each example takes in training, EOS included."""
    def lengths(texts: list[str]) -> list[int]:
        out: list[int] = []
        for start in range(0, len(texts), batch_size):
            out += [len(e.ids) for e in tokenizer.encode_batch_fast(texts[start:start + batch_size],
                                                                     add_special_tokens=False)]
        return out

    if task_type == "classification":
        return [n + 1 for n in lengths([e.values["text"] for e in examples])]
    prompts = lengths([render_prompt(e.values["prompt"]) for e in examples])
    responses = lengths([e.values["response"] for e in examples])
    return [p + r + 1 for p, r in zip(prompts, responses, strict=True)]


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


def drop_too_long(tokenizer: Any, task_type: str, examples: list[Example],
                  max_length: int) -> tuple[list[Example], list[Bad]]:
    """Examples of more than ``max_length`` tokens are quarantined (never cut: a cut response teaches cut text)."""
    kept, bad = [], []
    for ex, n in zip(examples, count_tokens(tokenizer, task_type, examples), strict=True):
        if n > max_length:
            bad.append(Bad(ex.where, "too_long_tokens", f"{n} tokens > max_length {max_length}", jsonable(ex.values)))
        else:
            kept.append(ex)
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
