"""The layering holds: imports point down, and no module imports itself back in a circle.

Read from the source with ``ast`` (every import, at the top of a module or inside a
function), so a lazy import that runs upward fails here as surely as a top-level one.
The layers are the ones the README's architecture section draws.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("corelane", "pipeline", "agents", "storage", "api", "config")

# Bottom to top. A module may import from its own layer and the layers below it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("ground", ("config", "pipeline", "pipeline.events", "pipeline.settings", "pipeline.policy",
                "pipeline.vocabulary", "pipeline.topology", "pipeline.procfs",
                "pipeline.hostpaths", "pipeline.patterns", "pipeline.stats",
                "pipeline.health")),
    ("domain", ("agents.classification", "agents.allocation", "agents.enforcement")),
    ("transport", ("pipeline.bus", "pipeline.kafka", "storage")),
    ("parts", ("agents", "pipeline.collectors", "api")),
    ("top", ("corelane",)),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def layer_of(module: str) -> int:
    """The layer of the longest prefix that names the module or a package holding it."""
    best, found = -1, None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, found = len(prefix), index
    if found is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS and the README")
    return found


def imports(module: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``module`` imports (``from a import b`` names a.b if that is a
    module, else a)."""
    out = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                out.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {m for m in out if m.split(".")[0] in PACKAGES and m != module}


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports(name, path, known) for name, path in found.items()}


def test_every_module_is_in_a_layer() -> None:
    for name in modules():
        layer_of(name)


def test_imports_point_down() -> None:
    upward = []
    for module, targets in graph().items():
        for target in targets:
            if layer_of(target) > layer_of(module):
                upward.append(f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} "
                              f"({LAYERS[layer_of(target)][0]})")
    assert not upward, "imports that run upward:\n  " + "\n  ".join(sorted(upward))


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}   # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycles() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, "an import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("edges, expected", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
])
def test_the_cycle_finder_finds_cycles(edges: dict[str, set[str]],
                                       expected: list[str] | None) -> None:
    assert find_cycle(edges) == expected


def test_an_upward_import_would_be_seen(tmp_path: Path) -> None:
    # The check reads lazy imports inside functions too.
    source = tmp_path / "events.py"
    source.write_text("def f():\n    from corelane.runtime import up\n    return up\n")
    found = imports("pipeline.events", source, {"corelane.runtime"})
    assert found == {"corelane.runtime"}
    assert layer_of("corelane.runtime") > layer_of("pipeline.events")
