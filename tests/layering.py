"""Reads every import of the project's own code (with `ast`, lazy imports inside functions included) into
a graph of modules, for tests/test_layering.py: circles, private names taken across modules, product
code that imports a benchmark, and modules that must stay torch-free."""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

# Where the project's modules live, and the import name of each folder's modules. The plug-in folders
# are put on sys.path by GIMP (or by the plug-in itself), so their modules import each other by bare name.
SOURCE_ROOTS: dict[str, str] = {
    "nst_core": "nst_core",
    "nst_install": "nst_install",
    "plug-ins/neural_style": "",
    "plug-ins/neural_style_gimp2": "",
    ".": "",  # install.py
}


@dataclass(frozen=True)
class Import:
    """One import statement's target module and the names it takes from it (empty for `import x`)."""

    importer: str
    target: str
    names: tuple[str, ...]
    line: int


@dataclass
class Graph:
    modules: dict[str, Path] = field(default_factory=dict)
    imports: list[Import] = field(default_factory=list)
    # For `import x` / `from pkg import x`: the local alias of a project module, per importer.
    aliases: dict[str, dict[str, str]] = field(default_factory=dict)
    # `alias._private` attribute uses, per importer: (module, attribute, line).
    attributes: list[tuple[str, str, str, int]] = field(default_factory=list)

    def edges(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {name: set() for name in self.modules}
        for imp in self.imports:
            if imp.target != imp.importer:
                out[imp.importer].add(imp.target)
        return out


def module_name(root: Path, path: Path) -> str | None:
    """The import name of `path`, or None when it is not one of the project's modules."""
    relative = path.relative_to(root)
    for folder, package in SOURCE_ROOTS.items():
        base = root / folder
        if folder == ".":
            if len(relative.parts) == 1:
                return path.stem
            continue
        if base in path.parents:
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            return ".".join(p for p in [package, *parts] if p)
    return None


def project_files(root: Path) -> Iterator[Path]:
    for folder in SOURCE_ROOTS:
        base = root / folder
        paths = base.glob("*.py") if folder == "." else base.rglob("*.py")
        yield from sorted(paths)


def read_graph(root: Path) -> Graph:
    graph = Graph()
    for path in project_files(root):
        name = module_name(root, path)
        if name is not None:
            graph.modules[name] = path
    for name, path in graph.modules.items():
        _read_module(graph, name, path)
    return graph


def _resolve(graph: Graph, importer: str, module: str | None, level: int) -> str | None:
    if level == 0:
        return module
    package = importer if graph.modules[importer].name == "__init__.py" else importer.rpartition(".")[0]
    for _ in range(level - 1):
        package = package.rpartition(".")[0]
    return ".".join(p for p in (package, module) if p)


def _read_module(graph: Graph, name: str, path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    aliases = graph.aliases.setdefault(name, {})
    for node in ast.walk(tree):  # every level: imports inside functions count as much as the top ones
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in graph.modules:
                    graph.imports.append(Import(name, alias.name, (), node.lineno))
                    aliases[alias.asname or alias.name.split(".")[0]] = alias.name
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(graph, name, node.module, node.level)
            if base is None:
                continue
            taken: list[str] = []
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                if submodule in graph.modules:  # `from pkg import module`
                    graph.imports.append(Import(name, submodule, (), node.lineno))
                    aliases[alias.asname or alias.name] = submodule
                else:
                    taken.append(alias.name)
            if taken and base in graph.modules:
                graph.imports.append(Import(name, base, tuple(taken), node.lineno))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and is_private(node.attr)
        ):
            graph.attributes.append((name, aliases[node.value.id], node.attr, node.lineno))


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def private_imports(graph: Graph) -> list[str]:
    """`from x import _name` or `x._name` where x is another of the project's modules."""
    problems = [
        f"{imp.importer} (line {imp.line}) takes {name} from {imp.target}"
        for imp in graph.imports
        for name in imp.names
        if is_private(name) and imp.target != imp.importer
    ]
    problems += [
        f"{importer} (line {line}) uses {module}.{attr}"
        for importer, module, attr, line in graph.attributes
        if module != importer
    ]
    return problems


def reachable(edges: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        node = todo.pop()
        for nxt in edges.get(node, ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def third_party(path: Path) -> set[str]:
    """The top-level names of what `path` imports from outside the project (anywhere in the file)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def importers_of(graph: Graph, targets: Iterable[str]) -> dict[str, set[str]]:
    wanted = set(targets)
    found: dict[str, set[str]] = {}
    for imp in graph.imports:
        if imp.target in wanted:
            found.setdefault(imp.importer, set()).add(imp.target)
    return found
