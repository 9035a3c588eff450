"""The shape of the package, checked: no import circle, no private name used across modules,
no module over 400 lines without the reason in its docstring, every module docstring's named
tests exist, and the front of the package exports the tamper-evidence API.

A reader should find each concept in the module named after it; these rules keep it so.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import reasoning_trace

SRC = Path(reasoning_trace.__file__).parent
TESTS = Path(__file__).parent
PACKAGE = "reasoning_trace"
MAX_LINES = 400
LONG_REASON = "Longer than 400 lines because"


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    found: dict[str, Path] = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join([PACKAGE, *parts])] = path
    return found


MODULES = _modules()


def _resolve(module: str, path: Path, level: int, name: str | None) -> str:
    """The absolute module a relative import in ``module`` names."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for _ in range(level - 1):
        package = package.rsplit(".", 1)[0]
    return f"{package}.{name}" if name else package


def _imports(module: str, path: Path) -> set[str]:
    """The package's modules that ``module`` imports: at run time, lazily inside functions,
    or for type checking only (a dependency either way)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = (
                _resolve(module, path, node.level, node.module) if node.level else node.module or ""
            )
            if not base.startswith(PACKAGE):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES else base)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith(PACKAGE))
    found.discard(module)
    # A module's own package __init__ is imported by Python first anyway; the package front
    # imports lazily (PEP 562), so an edge to it is not an edge of the design.
    found.discard(PACKAGE)
    return {m for m in found if m in MODULES}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle in ``graph``, or ``None``."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_circle() -> None:
    """No module of the package imports itself through others (type-only imports count)."""
    graph = {m: _imports(m, p) for m, p in MODULES.items()}
    assert _cycle(graph) is None, f"import circle: {' -> '.join(_cycle(graph) or [])}"


def test_cycle_finder_finds_a_circle() -> None:
    """The circle finder this file relies on finds a circle and passes a line."""
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


#: The original module's private helpers, which its users' tests monkeypatch (SPEC section 5):
#: the package front keeps them importable by name.
ORIGINAL_API = {(PACKAGE, "_file_for"), (PACKAGE, "_resolve_trace_dir")}


def _private_defined(tree: ast.AST) -> set[str]:
    """Private names a module defines: functions, classes, methods, attributes it assigns."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def _private_uses() -> list[str]:
    """Every private name of one module that another module imports or reaches into."""
    trees = {m: ast.parse(p.read_text()) for m, p in MODULES.items()}
    defined = {m: _private_defined(t) for m, t in trees.items()}
    everywhere = set().union(*defined.values())
    problems: list[str] = []
    for module, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (
                node.level or (node.module or "").startswith(PACKAGE)
            ):
                problems += [
                    f"{module}: imports {a.name}"
                    for a in node.names
                    if a.name.startswith("_")
                    and not a.name.startswith("__")
                    and (module, a.name) not in ORIGINAL_API
                ]
            elif isinstance(node, ast.Attribute):
                name = node.attr
                if not name.startswith("_") or name.startswith("__"):
                    continue
                if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                    continue
                if name in defined[module] or name not in everywhere:
                    continue  # its own private name, or a private name of another library
                problems.append(f"{module}:{node.lineno}: uses .{name} of another module")
    return problems


def test_no_private_name_used_across_modules() -> None:
    """What a module needs of another is that module's public name."""
    assert _private_uses() == []


def test_modules_are_short_or_say_why() -> None:
    """A module over 400 lines says in its docstring why it is one."""
    long = []
    for module, path in MODULES.items():
        lines = len(path.read_text().splitlines())
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        if lines > MAX_LINES and LONG_REASON not in " ".join(doc.split()):
            long.append(f"{module}: {lines} lines")
    assert long == []


_NAMED_TEST = re.compile(r"tests/[A-Za-z0-9_/]+\.py")


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_docstring_names_existing_tests(module: str) -> None:
    """Each module has a docstring, and the test files it names exist."""
    doc = ast.get_docstring(ast.parse(MODULES[module].read_text())) or ""
    assert doc, f"{module} has no docstring"
    for named in _NAMED_TEST.findall(doc):
        assert (TESTS.parent / named).is_file(), f"{module} names {named}, which does not exist"


def test_front_exports_the_tamper_evidence_api() -> None:
    """An auditor finds verification, reports, proofs and checkpoints at the front."""
    for name in (
        "verify",
        "Report",
        "Finding",
        "InclusionProof",
        "ConsistencyProof",
        "Checkpoint",
        "verify_inclusion_proof",
        "verify_consistency_proof",
    ):
        assert name in reasoning_trace.__all__, name
        assert getattr(reasoning_trace, name) is not None
