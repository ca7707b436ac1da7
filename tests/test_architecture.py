"""The layout keeps its promises: a pure core, layers that only import downwards, no import circles,
and every import inside a function says why it is late (start-up time)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "peersync"

# Lowest first.  A module may import its own layer or lower ones, never a higher one.
LAYERS = [
    {"peersync", "peersync.errors", "peersync.install"},
    {"peersync.core"},
    {"peersync.workspace"},
    {"peersync.replica"},
    {"peersync.transport"},
    {"peersync.cloud"},
    {"peersync.sync"},
    {"peersync.peers", "peersync.discovery", "peersync.backup", "peersync.integrations"},
    {"peersync.daemons", "peersync.dashboard"},
    {"peersync.cli"},
    {"peersync.__main__", "peersync.testing"},
]
# The pure core does no I/O and reads no clock (the clock is a parameter).
IMPURE = {"os", "sys", "subprocess", "socket", "asyncio", "time", "threading", "shutil", "pathlib", "tempfile",
          "io", "select", "signal", "fcntl", "ctypes", "urllib", "http"}
CLOCK_CALLS = {"now", "utcnow", "today", "time", "time_ns", "monotonic", "perf_counter"}


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        out[name] = path
    return out


def layer(module: str) -> int:
    for level, group in enumerate(LAYERS):
        if any(module == g or module.startswith(g + ".") for g in group if g != "peersync") or module in group:
            return level
    raise AssertionError(f"{module} is in no layer: add its package to LAYERS")


def imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, inside a function) for every import of peersync or anything else;
    `line` is the statement's last line when it spans several."""
    tree = ast.parse(path.read_text())
    out = []

    def visit(node, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                out.extend((alias.name, child.end_lineno, inner) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                if child.module == "peersync":  # `from peersync import x`: x may be a module
                    out.extend((f"peersync.{alias.name}" if alias.name != "__version__" else "peersync",
                                child.end_lineno, inner) for alias in child.names)
                else:
                    out.append((child.module, child.end_lineno, inner))
            elif not isinstance(child, ast.If) or not _type_checking(child):
                visit(child, inner)

    visit(tree, False)
    return out


def _type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def own(name: str, known: dict[str, Path]) -> str | None:
    """The peersync module an import names (a package's __init__ when it names a package)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name if name.startswith("peersync") else None


def test_core_is_pure():
    found = []
    for name, path in modules().items():
        if not name.startswith("peersync.core"):
            continue
        for imported, line, _ in imports(path):
            if imported.split(".")[0] in IMPURE:
                found.append(f"{name}:{line} imports {imported}")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in CLOCK_CALLS:
                found.append(f"{name}:{node.lineno} reads a clock (.{node.func.attr}())")
    assert not found, "core/ must do no I/O and read no clock:\n" + "\n".join(found)


def test_no_module_imports_a_higher_layer():
    known = modules()
    found = []
    for name, path in known.items():
        for imported, line, _ in imports(path):
            target = own(imported, known)
            if target and layer(target) > layer(name):
                found.append(f"{name}:{line} imports {target} (layer {layer(target)} > {layer(name)})")
    assert not found, "upward imports:\n" + "\n".join(found)


def test_no_import_circles():
    known = modules()
    graph = {name: {own(i, known) for i, _, late in imports(path) if not late} - {None, name}
             for name, path in known.items()}
    circles, index, low, stack, on = [], {}, {}, [], set()

    def strong(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                on.discard(w)
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                circles.append(sorted(part))

    for v in graph:
        if v not in index:
            strong(v)
    assert not circles, f"import circles: {circles}"


def test_every_late_import_says_why():
    """Imports belong at the top of a module; one inside a function is there for start-up time, and
    a comment says so (on its line, the line above, or once for the module: '# Lazy imports: …')."""
    found = []
    for name, path in modules().items():
        lines = path.read_text().splitlines()
        blanket = any(line.startswith("# Lazy imports:") for line in lines)
        for imported, line, late in imports(path):
            if not late or blanket:
                continue
            here = " ".join(lines[max(0, line - 4):line])  # the statement (up to 3 lines) and the line above
            if not any(word in here.lower() for word in ("lazy", "deferred", "start-up", "startup")):
                found.append(f"{name}:{line} imports {imported} inside a function without saying why")
    assert not found, "\n".join(found)


@pytest.mark.parametrize("package", ["core", "replica", "transport", "sync", "cloud", "workspace", "daemons", "cli"])
def test_every_module_opens_with_what_it_is_for(package):
    for path in (PACKAGE / package).glob("*.py"):
        doc = ast.get_docstring(ast.parse(path.read_text()))
        assert doc and len(doc.split()) >= 4, f"{path.name}: open with one sentence saying what it is responsible for"
