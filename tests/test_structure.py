"""The layering rules of docs/architecture.md §1, read from the code's own imports.

- only ``mousefacelift.shards`` reads or writes tar files (one implementation of the format),
  benchmarks and tests included;
- the library ``mousefacelift`` never imports ``synth``, ``train`` or ``blender``; ``blender``
  and ``train`` import only the library, ``synth`` the library and ``blender``;
- only ``blender`` imports ``bpy``;
- there are no import cycles between the project's modules (lazy imports inside functions
  count too: a cycle there is one refactor away from an import-time failure).
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("mousefacelift", "synth", "train", "blender")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for p in sorted((REPO / pkg).rglob("*.py")):
            parts = list(p.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = p
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every module name ``name`` imports (absolute, relative, and ``from pkg import submodule``)."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base if is_pkg else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            for a in node.names:
                if f"{mod}.{a.name}" in MODULES:
                    found.add(f"{mod}.{a.name}")
    return found


IMPORTS = {name: _imports(name, path) for name, path in MODULES.items()}


def _top(mod: str) -> str:
    return mod.split(".")[0]


def test_only_the_shard_module_touches_tar_files():
    users = sorted(n for n, imps in IMPORTS.items() if "tarfile" in imps)
    assert users and all(n.startswith("mousefacelift.shards") for n in users), users
    # benchmarks and tests make and damage shards through it too
    others = [p for folder in ("benchmarks", "tests") for p in sorted((REPO / folder).glob("*.py"))]
    assert not [str(p) for p in others if "tarfile" in _imports(p.stem, p)]


def test_library_imports_no_program_layer():
    bad = {n: sorted(i for i in imps if _top(i) in ("synth", "train", "blender"))
           for n, imps in IMPORTS.items() if _top(n) == "mousefacelift"}
    assert not {n: v for n, v in bad.items() if v}


def test_programs_import_only_downwards():
    allowed = {"blender": {"blender", "mousefacelift"}, "train": {"train", "mousefacelift"},
               "synth": {"synth", "blender", "mousefacelift"}}
    bad = {n: sorted(i for i in imps if _top(i) in PACKAGES and _top(i) not in allowed[_top(n)])
           for n, imps in IMPORTS.items() if _top(n) in allowed}
    assert not {n: v for n, v in bad.items() if v}


def test_only_blender_imports_bpy():
    users = sorted(n for n, imps in IMPORTS.items() if any(_top(i) == "bpy" for i in imps))
    assert all(_top(n) == "blender" for n in users), users


def test_no_import_cycles():
    graph = {n: sorted(i for i in imps if i in MODULES and i != n) for n, imps in IMPORTS.items()}
    # a package's __init__ re-exporting its own submodules is not a cycle unless a submodule imports it back
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(n: str, stack: list[str]) -> None:
        state[n] = 1
        stack.append(n)
        for m in graph[n]:
            if state.get(m) == 1:
                cycles.append(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m, stack)
        stack.pop()
        state[n] = 2

    for n in graph:
        if n not in state:
            visit(n, [])
    # parent packages are imported implicitly with their children; edges child -> own parent package
    # are therefore real cycles too, and are kept
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)
