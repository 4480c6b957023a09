"""``-S/--set KEY=VALUE``: params overrides from the command line, applied to params.yaml itself.

As ``dvc exp run -S`` does, an override is written into params.yaml (comments and layout kept) before anything
runs, so that what ran, what params.yaml says and what dvc.lock records are one thing: a stage whose params an
override changed is stale by DVC's own rules, runs with the new value, and dvc.lock records it. The overrides are
tagged on the MLflow runs (``lmforge.overrides``), and ``.lmforge/overrides.json`` keeps the last ones applied with the
values they replaced, for ``lmforge status`` to explain. ``git diff params.yaml`` shows them; ``git checkout
params.yaml`` undoes them.

A KEY is a dotted path into params.yaml (``finetune.steps``, ``finetune.tasks[0].weight``, ``finetune.tasks.0.weight``;
optionally led by ``params.yaml:``); a VALUE is YAML (``600``, ``3e-4``, ``true``, ``null``, ``[a, b]``,
``{kind: default}``). The result is validated against the schema before anything is written: an error names the
override and the key path.
"""

from __future__ import annotations

import copy
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipelines.config import PARAMS_FILE, Params, ParamsError, check_stage_sections, parse_params
from pipelines.stage_graph import StageSpec, stage_names, topological_order, upstream

OVERRIDES_ENV = "LMFORGE_OVERRIDES"
"""Set by ``lmforge run -S`` to the overrides (JSON ``{key: value}``) for the MLflow runs to tag."""
RECORD = Path(".lmforge/overrides.json")
"""The last overrides ``lmforge run -S`` wrote into params.yaml, with the values they replaced (git-ignored)."""
_MISSING = "(unset)"
_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


class OverrideError(ParamsError):
    """An override that cannot be applied (no ``=``, a path through a value, an index out of range). Exit code 2."""


@dataclass(frozen=True)
class Change:
    """One override: its key path as written, the path's parts, the value before (:data:`_MISSING`: not in
    params.yaml, so its default applied) and after."""

    key: str
    path: tuple[str | int, ...]
    old: Any
    new: Any

    @property
    def changed(self) -> bool:
        """Whether params.yaml says something else after it."""
        return bool(self.old == _MISSING or self.old != self.new)

    def show(self) -> str:
        """``finetune.steps 150 -> 600`` (values as JSON)."""
        old = self.old if self.old == _MISSING else json.dumps(self.old)
        return f"{self.key} {old} -> {json.dumps(self.new)}"


def _value(text: str) -> Any:
    value = yaml.safe_load(text) if text.strip() else ""
    # YAML 1.1 reads 3e-4 (no dot) as a string; a user means the number, as YAML 1.2 and DVC's -S do
    return float(text) if isinstance(value, str) and _EXPONENT.fullmatch(text.strip()) else value


_PIECE = re.compile(r"([^.\[\]]*)((?:\[\d+\])*)")
"""One dotted piece of a key: a name (or a list index written as a number) and any ``[N]`` indexes after it."""


def _path(key: str, given: str) -> tuple[str | int, ...]:
    parts: list[str | int] = []
    for piece in key.split("."):
        match = _PIECE.fullmatch(piece)
        if match is None or not any(match.groups()):
            raise OverrideError(f"-S {given}: {key!r} is not a key path (e.g. finetune.steps, "
                                "finetune.tasks[0].weight)")
        name, indexes = match.groups()
        if name:
            parts.append(int(name) if name.isdigit() else name)
        parts += [int(i) for i in re.findall(r"\d+", indexes)]
    return tuple(parts)


def parse(items: Sequence[str]) -> list[tuple[str, tuple[str | int, ...], Any]]:
    """``KEY=VALUE`` strings as (key, path, value); the last of a key given twice wins.

    Raises:
        OverrideError: no ``=``, an empty key, or a key that is not a path.
    """
    out: dict[str, tuple[str, tuple[str | int, ...], Any]] = {}
    for given in items:
        key, eq, text = given.partition("=")
        key = key.strip().removeprefix(f"{PARAMS_FILE}:")
        if not eq or not key:
            raise OverrideError(f"-S {given}: expected KEY=VALUE, e.g. -S finetune.steps=600")
        try:
            value = _value(text)
        except yaml.YAMLError as err:
            raise OverrideError(f"-S {given}: the value is not YAML ({str(err).splitlines()[0]})") from None
        out[key] = (key, _path(key, given), value)
    return list(out.values())


def _set(doc: Any, key: str, path: tuple[str | int, ...], value: Any) -> Any:
    """Set ``path`` in ``doc`` (maps made on the way where params.yaml leaves a section out); returns the old value."""
    node = doc
    for depth, part in enumerate(path):
        last = depth == len(path) - 1
        where = ".".join(map(str, path[:depth])) or "the top level"
        if isinstance(node, list):
            if not isinstance(part, int) or not 0 <= part < len(node):
                raise OverrideError(f"-S {key}=...: {where} is a list of {len(node)} item(s); index it with 0 to "
                                    f"{len(node) - 1}")
        elif isinstance(node, dict):
            if last:
                old = node.get(part, _MISSING)
                node[part] = value
                return old
            if part not in node or node[part] is None:
                node[part] = {}
        else:
            raise OverrideError(f"-S {key}=...: {where} is a value ({json.dumps(node, default=str)}), not a section")
        if last:
            old = node[part]
            node[part] = value
            return old
        node = node[part]
    raise OverrideError(f"-S {key}=...: empty key")


def _read(root: Path) -> Any:
    try:
        return yaml.safe_load((root / PARAMS_FILE).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ParamsError(f"{PARAMS_FILE} cannot be read: {err}") from None


def resolve(root: Path, items: Sequence[str]) -> tuple[Params, list[Change]]:
    """The params that params.yaml with ``items`` applied would give, validated, and the changes; writes nothing.

    Raises:
        OverrideError, ParamsError: an override that cannot apply, or a result the schema refuses (naming the key).
    """
    check_stage_sections(stage_names(root))
    doc = copy.deepcopy(_read(root))
    changes = [Change(key, path, copy.deepcopy(_set(doc, key, path, value)), value)
               for key, path, value in parse(items)]
    shown = " ".join(f"-S {c.key}={json.dumps(c.new)}" for c in changes)
    return parse_params(doc, f"{PARAMS_FILE} with {shown}"), changes


def apply(root: Path, items: Sequence[str]) -> tuple[Params, list[Change]]:
    """:func:`resolve`, then write params.yaml (comments and layout kept, atomically) and the record; returns the
    validated params and the changes. Call it holding the workspace lock."""
    import io

    from ruamel.yaml import YAML

    from pipelines.artifacts import atomic_write_text

    params, changes = resolve(root, items)
    if any(c.changed for c in changes):
        rt = YAML()
        rt.indent(mapping=2, sequence=4, offset=2)  # params.yaml's layout: a list's dash two in from its key
        rt.preserve_quotes = True
        rt.width = 4096
        # the rest of the file as it was written: `null` stays `null` (not empty), `[{kind: default}]` keeps its braces
        rt.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
        rt.brace_single_entry_mapping_in_flow_sequence = True
        doc = rt.load((root / PARAMS_FILE).read_text(encoding="utf-8"))
        for c in changes:
            _set(doc, c.key, c.path, c.new)
        out = io.StringIO()
        rt.dump(doc, out)
        atomic_write_text(root / PARAMS_FILE, out.getvalue())
        record = {"applied": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "changes": [{"key": c.key, "old": c.old, "new": c.new} for c in changes if c.changed]}
        (root / RECORD).parent.mkdir(exist_ok=True)
        atomic_write_text(root / RECORD, json.dumps(record, indent=1, default=str) + "\n")
    return params, changes


def announce(changes: Sequence[Change]) -> str:
    """What ``lmforge run -S`` did to params.yaml, in one line."""
    done = [c.show() for c in changes if c.changed]
    if not done:
        return "lmforge: -S: params.yaml already says so, nothing changed"
    return (f"lmforge: params.yaml: {'; '.join(done)} (-S: kept in params.yaml, as `dvc exp run -S` does, so that "
            "dvc.lock records what runs; `git diff params.yaml` shows it)")


def covers(section: str, key: str) -> bool:
    """Whether a stage's dvc.yaml params entry (``finetune``, or a key path) covers ``key``."""
    return key == section or key.startswith((f"{section}.", f"{section}["))


def tags(sections: Sequence[str] | None = None) -> dict[str, str]:
    """The ``lmforge.overrides`` tag of a run under ``lmforge run -S`` (only the keys of ``sections`` for a stage's
    run; all for the pipeline's), or nothing."""
    import os

    given: dict[str, Any] = json.loads(os.environ.get(OVERRIDES_ENV) or "{}")
    keys = [f"{k}={json.dumps(v)}" for k, v in given.items() if sections is None or any(covers(s, k)
                                                                                     for s in sections)]
    return {"lmforge.overrides": " ".join(keys)} if keys else {}


def stale_with(graph: dict[str, StageSpec], stale: dict[str, list[str]], changes: Sequence[Change]
               ) -> dict[str, list[str]]:
    """``stale`` (stage: reasons, from DVC) as it would be with ``changes`` written: a stage whose params they change
    is stale, and so is every stage after it."""
    ups = upstream(graph)
    out: dict[str, list[str]] = {}
    for stage in topological_order(graph):
        if stage not in stale:
            continue
        mine = [f"-S would change param {c.show()}" for c in changes if c.changed
                and any(covers(p, c.key) for p in graph[stage].params)]
        reasons = [r for r in stale[stage] if not r.startswith("upstream stage ")] + mine
        if not reasons:
            reasons = [f"upstream stage {u} {'would run' if any(r.startswith('-S') for r in out[u]) else 'is stale'}"
                       ": runs after it when its outputs change" for u in sorted(ups[stage]) if out.get(u)]
        out[stage] = reasons
    return out


def _get(doc: Any, path: tuple[str | int, ...]) -> Any:
    for part in path:
        try:
            doc = doc[part]
        except (KeyError, IndexError, TypeError):
            return _MISSING
    return doc


def explain(root: Path) -> list[str]:
    """Lines for ``lmforge status``: the overrides the last ``lmforge run -S`` wrote that params.yaml still holds."""
    try:
        record = json.loads((root / RECORD).read_text(encoding="utf-8"))
        doc = _read(root)
    except (OSError, ValueError, ParamsError):
        return []
    held = [c for c in record.get("changes", []) if _get(doc, _path(c["key"], c["key"])) == c["new"]]
    if not held:
        return []
    lines = [f"params.yaml holds overrides set by `lmforge run -S` at {record.get('applied', '?')}:"]
    lines += [f"    {Change(c['key'], (), c['old'], c['new']).show()}" for c in held]
    lines.append("  They are what ran (dvc.lock and the MLflow runs' lmforge.overrides tag record them); `git diff "
                 "params.yaml` shows them, `git checkout params.yaml` undoes them (the stages they touch become "
                 "stale).")
    return lines
