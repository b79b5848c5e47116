"""The host's modules import one way: no import cycle, and the data path's layers stay apart."""

from __future__ import annotations

import ast
from pathlib import Path

EXPORTER = Path(__file__).resolve().parent.parent / "exporter"


def _module(path: Path) -> str:
    parts = path.relative_to(EXPORTER).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Modules of the package `path` imports at import time (not under TYPE_CHECKING, not in functions)."""
    name = _module(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".") if package else []
            base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
            target = ".".join([*base, node.module] if node.module else base)
            found.add(target)
            found.update(f"{target}.{a.name}".lstrip(".") for a in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module(p): p for p in EXPORTER.rglob("*.py")}
    def parents(name: str) -> set[str]:  # a submodule's import of its own package is no edge
        parts = name.split(".")
        return {".".join(parts[:i]) for i in range(len(parts))}

    return {name: {m for m in _imports(path) if m in modules and m not in parents(name) | {name}}
            for name, path in modules.items()}


def test_no_import_cycle():
    graph, state, path = _graph(), {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                raise AssertionError(f"import cycle: {' -> '.join(path[path.index(nxt):] + [nxt])}")
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_layers_do_not_reach_up():
    """Scopes know neither the service nor the poller; the poller knows neither registration nor
    scopes; the store knows nothing of polling; plugins' test support is not imported at run time."""
    graph = _graph()

    def reaches(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        return seen

    assert not reaches("discovery") & {"service", "poller", "registration", "dispatch"}
    assert not reaches("poller") & {"service", "registration", "discovery"}
    assert not reaches("store") & {"poller", "dispatch", "service", "metrics", "lifecycle"}
    assert "testing" not in reaches("service") | reaches("web") | reaches("cli")
