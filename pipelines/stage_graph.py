"""The stage graph of ``dvc.yaml``: the stages (the one list of them), their deps and outs, and their order.

Read as plain YAML (cheap; no DVC import): the CLI plans a run, and params validation checks its schema against
the stage list, from this module alone. What DVC itself says about the stages (staleness, recording) is
:mod:`pipelines.versioning`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

DVC_FILE = "dvc.yaml"
CODE_PACKAGES = ("flows", "tasks", "pipelines")
"""Top-level packages of the code; a dep inside one is code, any other dep is data."""


class StageGraphError(Exception):
    """dvc.yaml does not describe a valid stage graph, or names an unknown stage. Exit code 2."""

    exit_code = 2


@dataclass(frozen=True)
class StageSpec:
    """One dvc.yaml stage, as declared."""

    name: str
    cmd: str
    deps: tuple[str, ...]
    outs: tuple[str, ...]
    params: tuple[str, ...]

    @property
    def data_deps(self) -> tuple[str, ...]:
        """Deps that are data, not code (anything outside the code packages)."""
        return tuple(d for d in self.deps if Path(d).parts[0] not in CODE_PACKAGES)


def _names(entries: list[Any] | None) -> tuple[str, ...]:
    # dvc.yaml lists entries as plain strings or as one-key mappings ({path: {cache: false}}).
    out: list[str] = []
    for e in entries or []:
        out.extend(e.keys() if isinstance(e, dict) else [str(e)])
    return tuple(out)


def read_stages(root: Path) -> dict[str, StageSpec]:
    """All stages of ``dvc.yaml`` in file order."""
    try:
        doc = yaml.safe_load((root / DVC_FILE).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise StageGraphError(f"cannot read {DVC_FILE}: {err}") from None
    stages = {}
    for name, body in (doc.get("stages") or {}).items():
        stages[name] = StageSpec(
            name=name,
            cmd=str(body.get("cmd", "")),
            deps=_names(body.get("deps")),
            outs=_names(body.get("outs")) + _names(body.get("metrics")) + _names(body.get("plots")),
            params=_names(body.get("params")),
        )
    return stages


def _under(path: str, parent: str) -> bool:
    p, q = Path(path).parts, Path(parent).parts
    return p[: len(q)] == q


def upstream(stages: dict[str, StageSpec]) -> dict[str, set[str]]:
    """For each stage, the stages whose outputs it depends on."""
    return {
        s.name: {o.name for o in stages.values() if o.name != s.name and any(_under(d, out) for d in s.deps
                                                                             for out in o.outs)}
        for s in stages.values()
    }


def topological_order(stages: dict[str, StageSpec]) -> list[str]:
    """Stage names so that every stage follows the stages it depends on (file order breaks ties)."""
    ups = upstream(stages)
    order: list[str] = []
    pending = list(stages)
    while pending:
        ready = [n for n in pending if ups[n] <= set(order)]
        if not ready:
            raise StageGraphError(f"{DVC_FILE} has a dependency cycle among: {', '.join(pending)}")
        order.append(ready[0])
        pending.remove(ready[0])
    return order


def downstream_closure(stages: dict[str, StageSpec], start: set[str]) -> set[str]:
    """``start`` and every stage that (transitively) depends on it."""
    ups = upstream(stages)
    out = set(start)
    changed = True
    while changed:
        changed = False
        for name, deps in ups.items():
            if name not in out and deps & out:
                out.add(name)
                changed = True
    return out


def check_stage_names(names: list[str], known: list[str]) -> None:
    """Raise :class:`StageGraphError` naming every unknown stage."""
    unknown = [n for n in names if n not in known]
    if unknown:
        raise StageGraphError(f"unknown stage(s): {', '.join(unknown)}; stages are: {', '.join(known)}")


def plan_run(root: Path, stages: list[str], force: bool, from_stage: str | None) -> tuple[list[str], list[str]]:
    """Which stages to consider and which to force, in DAG order: the named ones (all by default), ``from_stage``
    and everything downstream of it, and the upstream stages they need (those run only if stale)."""
    graph = read_stages(root)
    order = topological_order(graph)
    check_stage_names(stages + ([from_stage] if from_stage else []), order)
    if from_stage:
        forced = downstream_closure(graph, {from_stage})
        selected = forced | set(stages)
    else:
        selected = set(stages or order)
        forced = set(selected) if force else set()
    # a named stage needs its upstream stages up to date: consider them too (they run only if stale)
    ups = upstream(graph)
    closure = set(selected)
    for name in reversed(order):
        if name in closure:
            closure |= ups[name]
    plan = [n for n in order if n in closure]
    return plan, [n for n in plan if n in forced]


def stage_names(root: Path) -> tuple[str, ...]:
    """The stages of ``dvc.yaml`` at ``root``, in DAG order."""
    return tuple(topological_order(read_stages(root)))
