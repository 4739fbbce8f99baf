"""distgan's modules import each other one way: the import graph has no cycle.

The graph is read from the source with ``ast``, not by importing: every ``import`` and
``from ... import`` statement counts, at module level or inside a function (a
function-level import runs later, but a cycle it closes is still a cycle between the
two modules' responsibilities). ``from distgan.x import y`` is an edge to the module
``distgan.x.y`` when that is a module, else to ``distgan.x``. Imports under
``if TYPE_CHECKING:`` count too: they never run, but an annotation that needs the other
module is a dependency of the design all the same. Importing a submodule
also runs its package's ``__init__``; that edge is left out, because the packages'
``__init__`` files here only re-export or import lazily on attribute access.

A function-level import is a last resort: each one carries a comment saying why (a heavy
or optional dependency, a lazy attribute), on its line or the line above.
"""
from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "distgan"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None) if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_modules(path: Path, name: str, known: set[str]) -> set[str]:
    """The distgan modules that ``path`` (module ``name``) imports anywhere in its body."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                pkg = name.split(".")
                pkg = pkg if is_package else pkg[:-1]
                pkg = pkg[:len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        out.update(t for t in targets if t in known and t != name)
    return out


def import_graph() -> dict[str, set[str]]:
    modules = package_modules()
    known = set(modules)
    return {name: imported_modules(path, name, known) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as ``[a, b, ..., a]``, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


def test_cycle_finder_names_a_cycle_and_accepts_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_graph_counts_function_level_relative_type_checking_and_submodule_imports(tmp_path):
    src = tmp_path / "mod.py"
    src.write_text("from typing import TYPE_CHECKING\nfrom . import sib\nimport distgan.a\n\n"
                   "if TYPE_CHECKING:\n    import distgan.c\n\n\ndef f():\n    from distgan.pkg import b, VALUE\n")
    known = {"distgan.a", "distgan.c", "distgan.pkg", "distgan.pkg.b", "distgan.pkg.mod", "distgan.pkg.sib"}
    assert imported_modules(src, "distgan.pkg.mod", known) == {"distgan.a", "distgan.c", "distgan.pkg",
                                                                "distgan.pkg.b", "distgan.pkg.sib"}
    assert "distgan.train.loop" in import_graph()["distgan.train"]  # the lazy import in its __getattr__


def test_the_package_import_graph_has_no_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph between distgan's packages (``distgan.train``, ``distgan.metrics``, ...); a
    top-level module (``distgan.rundir``) is a node of its own."""
    modules = package_modules()

    def unit(name: str) -> str:
        parts = name.split(".")
        is_package = modules[name].name == "__init__.py"
        return ".".join(parts[:2]) if len(parts) > 2 or is_package else name

    out: dict[str, set[str]] = {}
    for a, deps in graph.items():
        out.setdefault(unit(a), set()).update(unit(b) for b in deps if unit(b) != unit(a))
    return out


def test_package_graph_collapses_modules_into_their_package():
    graph = {"distgan.train.loop": {"distgan.metrics.training", "distgan.rundir"},
             "distgan.metrics.training": {"distgan.train.state"}, "distgan.rundir": set(),
             "distgan.train.state": set(), "distgan.metrics.registry": set()}
    assert find_cycle(package_graph(graph)) == ["distgan.metrics", "distgan.train", "distgan.metrics"]


def test_the_packages_depend_on_each_other_one_way():
    cycle = find_cycle(package_graph(import_graph()))
    assert cycle is None, "package cycle: " + " -> ".join(cycle or [])


def test_no_module_imports_a_command_module():
    # a command's __main__ is its argument parsing and output: what other modules share lives in a library module
    graph = import_graph()
    bad = sorted(f"{a} -> {b}" for a, deps in graph.items() for b in deps if b.endswith(".__main__"))
    assert not bad, "modules importing a __main__: " + ", ".join(bad)


NOQA = re.compile(r"\bnoqa\b(:\s*[A-Z]+[0-9]+(\s*,\s*[A-Z]+[0-9]+)*)?", re.IGNORECASE)


def _comments(source: str) -> dict[int, str]:
    """Line number -> the text of the comment on that line (tokenized: a ``#`` inside a string is no comment)."""
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return {t.start[0]: t.string.lstrip("#").strip() for t in tokens if t.type == tokenize.COMMENT}


def _is_reason(comment: str | None) -> bool:
    """A comment that says something besides silencing a linter (``# noqa: PLC0415`` alone is no reason)."""
    return bool(comment) and bool(NOQA.sub("", comment).strip(" -:;,."))



def unexplained_local_imports(path: Path) -> list[int]:
    """Lines of imports inside a function body with no reason in a comment on their line or the line above."""
    source = path.read_text()
    lines, comments = source.splitlines(), _comments(source)
    bad: list[int] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)) and in_function:
                first, last = child.lineno, child.end_lineno or child.lineno
                above = lines[first - 2].strip() if first > 1 else ""
                own = [comments.get(n) for n in range(first, last + 1)]
                if not any(_is_reason(c) for c in own) and not (above.startswith("#") and
                                                                 _is_reason(comments.get(first - 1))):
                    bad.append(first)
            if not _is_type_checking(child):  # annotations only: never runs
                visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(ast.parse(source, str(path)), False)
    return bad


def test_local_import_finder_wants_a_reason(tmp_path):
    src = tmp_path / "mod.py"
    src.write_text('"""Docs:\n\n    from distgan import x\n"""\nimport os\n\n\n'
                   "def f():\n"
                   "    import a\n"                             # 9: no comment
                   "    import b  # noqa: PLC0415\n"            # 10: a bare noqa is no reason
                   "    import c  # noqa: PLC0415 - optional\n"  # 11
                   "    # heavy: only on this path\n"
                   "    import d\n"                             # 13: the reason is on the line above
                   "    x = '# not a comment'; import e\n"      # 14
                   "    from f import (\n        g,  # slow\n    )\n")  # 15: a comment inside the statement
    assert unexplained_local_imports(src) == [9, 10, 14]


def test_function_level_imports_say_why():
    # a function-level import is a last resort: the reason (a heavy or optional dependency, a
    # deliberately lazy attribute) sits on its line or the line above
    bad = [f"{path.relative_to(PACKAGE.parent)}:{line}" for path in sorted(PACKAGE.rglob("*.py"))
           for line in unexplained_local_imports(path)]
    assert not bad, "function-level imports without a reason comment: " + ", ".join(bad)
