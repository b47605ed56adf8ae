"""Size limits of the code, as a linter would: no function over 60 lines of code, no module over 400 lines.

Lines of code are the non-blank, non-comment lines of a function, its docstring left out (nested functions
count toward the function that holds them). Cyclomatic complexity (at most 15) is ruff's C901, configured
in pyproject.toml and run by `make lint`.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "cnnprof"
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 400
# Entries here are exceptions to the limits (none now); a new one needs a reason in a comment.
KNOWN: set[str] = set()
SOURCES = sorted(PACKAGE.rglob("*.py"))


def code_lines(lines: list[str], node: ast.AST) -> int:
    """Non-blank, non-comment lines of a function, without its docstring."""
    doc = range(0)
    first = node.body[0] if node.body else None
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        doc = range(first.lineno, first.end_lineno + 1)
    return sum(1 for i in range(node.lineno, node.end_lineno + 1)
               if i not in doc and lines[i - 1].strip() and not lines[i - 1].strip().startswith("#"))


def oversized(path: Path) -> list[str]:
    """'module' and 'module:function' keys of everything in `path` over the limits, with their sizes."""
    text = path.read_text()
    lines = text.splitlines()
    rel = path.relative_to(PACKAGE).as_posix()
    found = [(rel, len(lines))] if len(lines) > MAX_MODULE_LINES else []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = code_lines(lines, node)
            if n > MAX_FUNCTION_LINES:
                found.append((f"{rel}:{node.name}", n))
    return [f"{key} ({n} lines)" for key, n in found if key not in KNOWN]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_within_size_limits(path):
    assert oversized(path) == []


def test_known_entries_are_still_oversized():
    """An entry of KNOWN that is now within the limits must leave the list (it cannot grow back unseen)."""
    keys = set()
    for path in SOURCES:
        text = path.read_text()
        lines = text.splitlines()
        rel = path.relative_to(PACKAGE).as_posix()
        if len(lines) > MAX_MODULE_LINES:
            keys.add(rel)
        keys |= {f"{rel}:{n.name}" for n in ast.walk(ast.parse(text))
                 if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and code_lines(lines, n) > MAX_FUNCTION_LINES}
    assert KNOWN - keys == set()


def test_counter_finds_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(61))
    tree = ast.parse(f"def f():\n    '''doc'''\n    # comment\n\n{body}\n")
    lines = f"def f():\n    '''doc'''\n    # comment\n\n{body}\n".splitlines()
    assert code_lines(lines, tree.body[0]) == 62  # the def line and 61 statements
