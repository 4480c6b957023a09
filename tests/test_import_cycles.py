"""No import cycle among lmforge's modules: each module can be read (and type-checked) after the ones it imports.

pipelines.config and pipelines.versioning once imported each other, the cycle hidden in function-level imports;
grimp (the engine of import-linter) sees those too, so a cycle comes back as a failure here, named module by module.
"""

from __future__ import annotations

import grimp

PACKAGES = ("flows", "tasks", "pipelines")


def import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The groups of modules of :data:`PACKAGES` that import one another, each sorted (Tarjan's strongly connected
    components of the import graph, iteratively: the graph is deeper than a default recursion limit allows)."""
    modules = sorted(m for m in graph.modules if m.split(".")[0] in PACKAGES)
    ours = set(modules)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    for start in modules:
        if start in index:
            continue
        work = [(start, iter(sorted(graph.find_modules_directly_imported_by(start) & ours)))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            module, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[module])
                if low[module] == index[module]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == module:
                            break
                    if len(group) > 1:
                        cycles.append(sorted(group))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child) & ours))))
            elif child in on_stack:
                low[module] = min(low[module], index[child])
    return sorted(cycles)


def test_no_module_imports_itself_through_others() -> None:
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    assert import_cycles(graph) == [], "break these import cycles (move what both sides need to a third module)"


def test_the_check_finds_a_cycle_hidden_in_a_function_level_import() -> None:
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    # the cycle this test was written for: config read the stage list through versioning, which imports config
    graph.add_import(importer="pipelines.config", imported="pipelines.versioning")
    assert import_cycles(graph) == [["pipelines.config", "pipelines.versioning"]]
    graph.add_import(importer="pipelines.stage_graph", imported="pipelines.tracking")  # a longer one, on top
    # (tracking reads the overrides, which validate through config: overrides is inside that loop too)
    assert import_cycles(graph) == [["pipelines.config", "pipelines.overrides", "pipelines.stage_graph",
                                     "pipelines.tracking", "pipelines.versioning"]]
