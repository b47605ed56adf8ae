"""The package layout: imports point one way (cli -> report/design/profiling -> predict/timing -> counting,
models beside them), and the counting, timing, predict and models packages name no CLI flag.

Every import counts, module-level or inside a function (a lazy import is still a dependency). The one
exception is cnnprof.results: the mixin that lets any result print itself imports cnnprof.report when a
result is printed (torchinfo's ModelStatistics and its formatter), so that counting/ never does.
"""
import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "cnnprof"
BASE = {"errors", "inputs", "results"}  # torch-free leaves every package may use
ALLOWED = {
    "counting": BASE | {"counting"},
    "models": {"errors", "inputs", "models"},
    "timing": BASE | {"counting", "timing", "models"},
    "predict": BASE | {"counting", "timing", "predict", "models"},
    "report": BASE | {"counting", "report"},
    "design": BASE | {"counting", "timing", "predict", "models", "report", "design"},
    "profiling": BASE | {"counting", "timing", "predict", "models", "report", "profiling"},
    "cli": None,  # the top: anything
}
FLAG = re.compile(r"""["'`]--[a-z]""")


def imported_packages(path: Path) -> set[str]:
    """The cnnprof subpackages or top-level modules `path` imports (cnnprof.x.y -> x)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names if node.module == "cnnprof"]
        found |= {n.split(".")[1] for n in names if n.startswith("cnnprof.")}
    return found


def files(package: str) -> list[Path]:
    return sorted((PACKAGE / package).rglob("*.py"))


@pytest.mark.parametrize("package", [p for p, allowed in ALLOWED.items() if allowed is not None])
def test_imports_point_one_way(package):
    wrong = {f"{path.relative_to(PACKAGE)} imports cnnprof.{dep}"
             for path in files(package) for dep in imported_packages(path) - ALLOWED[package]}
    assert wrong == set()


def test_every_package_is_placed():
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages == set(ALLOWED)


def test_leaves_import_no_package():
    assert imported_packages(PACKAGE / "errors.py") == set()
    assert imported_packages(PACKAGE / "inputs.py") <= {"errors"}
    assert imported_packages(PACKAGE / "results.py") <= {"report"}


@pytest.mark.parametrize("package", ["counting", "timing", "predict", "models"])
def test_library_packages_name_no_cli_flag(package):
    """Messages there name Python parameters (`min_runs=0`); the CLI turns them into flags (cli/options.py)."""
    found = [f"{path.relative_to(PACKAGE)}:{i}" for path in files(package)
             for i, line in enumerate(path.read_text().splitlines(), 1) if FLAG.search(line)]
    assert found == []
