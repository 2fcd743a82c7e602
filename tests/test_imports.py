"""The package's import graph has no circle: read from the source (``ast``), nothing imported.

Every import counts, also one inside a function: a lazy import keeps TensorFlow or Beam out of a
command that does not need them, but the two modules still need each other, and a reader
following the code meets the knot all the same. An import of ``a.b.c`` does not count as an
import of its packages ``a`` and ``a.b`` (Python runs their ``__init__`` first, which is how
packages work, not a dependency one module chose): ``from a.b import c`` is an edge to the
module ``a.b.c`` when that is a module, else to ``a.b``. Imports under ``if TYPE_CHECKING:`` do
not count: they never run, and they exist so that tools can follow a name-based load (a registry
naming the modules that register in it, which import the registry), the opposite of a knot.
"""
import ast
import os

import pytest

PACKAGE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "ganpipe")


def module_files(package_dir: str) -> dict[str, str]:
    """Module name -> source file of every module under ``package_dir``."""
    base = os.path.dirname(package_dir)
    modules = {}
    for directory, _, files in os.walk(package_dir):
        for name in files:
            if name.endswith(".py"):
                dotted = os.path.relpath(os.path.join(directory, name), base)[:-3].replace(os.sep, ".")
                modules[dotted.removesuffix(".__init__")] = os.path.join(directory, name)
    return modules


def imported_modules(module: str, path: str, modules: dict[str, str]) -> set[str]:
    """The package's modules that ``module`` imports anywhere in its source."""
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    tree = ast.parse(open(path).read(), path)
    typing_only = {id(inner) for node in ast.walk(tree) if isinstance(node, ast.If) and _is_type_checking(node.test)
                   for statement in node.body for inner in ast.walk(statement)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: climb from the importing module's package
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            found |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names}
    return {name for name in found if name in modules and name != module}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def import_cycles(modules: dict[str, str]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each sorted."""
    graph = {module: imported_modules(module, path, modules) for module, path in modules.items()}
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(module):
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in sorted(graph[module]):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = []
            while not group or group[-1] != module:
                group.append(stack.pop())
                on_stack.discard(group[-1])
            if len(group) > 1:
                cycles.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return cycles


def test_no_module_of_ganpipe_imports_itself_through_others():
    assert import_cycles(module_files(PACKAGE_DIR)) == []


@pytest.mark.parametrize("sources, expected", [
    # a circle through an import inside a function counts
    ({"a/__init__.py": "", "a/x.py": "from a import y\n", "a/y.py": "def f():\n    from a.x import g\n"},
     [["a.x", "a.y"]]),
    # relative imports are resolved; `from a import b` where b is a module is an edge to a.b
    ({"a/__init__.py": "from a import b\n", "a/b.py": "from . import c\n", "a/c.py": "from .b import thing\n"},
     [["a.b", "a.c"]]),
    # typed references under TYPE_CHECKING never run: no circle
    ({"a/__init__.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from a import b\n",
      "a/b.py": "import a\n"}, []),
    # a package's __init__ importing its modules, which import from the package's modules: no circle
    ({"a/__init__.py": "from a.b import thing\n", "a/b.py": "from a import c\n", "a/c.py": "X = 1\n"}, []),
])
def test_import_cycles_are_found_through_functions_and_relative_imports(tmp_path, sources, expected):
    for relative, text in sources.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text)
    assert import_cycles(module_files(str(tmp_path / "a"))) == expected
