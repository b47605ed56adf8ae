"""The README is executable: every `$ cnnprof ...` example in it is run, and what it shows must be what the
command prints (tables at 100 columns, the width the README's tables are laid out at), so it cannot drift.

An example block is a fenced block whose lines start with `$ cnnprof`; the lines after one, up to the next `$`
line or the block's end, are its output. A line `...` in that output stands for lines left out (an excerpt);
a last line `exit code: N` is the exit code. Examples whose figures depend on the machine (times, measured
peaks, a search's run time) say so with `# machine-dependent` after the command; they are not compared here
(they measure time or run a search), but each must be marked, and their output is still checked for the
columns and labels that do not depend on the machine (`test_machine_dependent_examples_keep_their_shape`).
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
WIDTH = "100"  # the README's tables are laid out for a 100-column terminal
MACHINE = "machine-dependent"
MEASURING = {"bench", "device", "roofline", "search"}  # commands whose output depends on the machine
_EXIT = re.compile(r"^exit code: (\d+)$")


@dataclass(frozen=True)
class Example:
    line: int  # 1-based line of the `$ cnnprof` line in README.md
    command: str  # as written, without the `$ ` and the trailing comment
    comment: str
    output: tuple[str, ...]  # the lines shown after it (right-stripped)

    @property
    def args(self) -> list[str]:
        return shlex.split(self.command)[1:]

    @property
    def exit_code(self) -> int:
        found = _EXIT.match(self.output[-1]) if self.output else None
        return int(found.group(1)) if found else 0

    @property
    def shown(self) -> list[str]:
        return list(self.output[:-1] if self.output and _EXIT.match(self.output[-1]) else self.output)

    @property
    def machine_dependent(self) -> bool:
        return MACHINE in self.comment

    def __str__(self) -> str:
        return f"README.md:{self.line}: $ {self.command}"


def _split_comment(text: str) -> tuple[str, str]:
    """'cnnprof x --y 1   # excerpt' -> ('cnnprof x --y 1', 'excerpt'); a `#` inside quotes is kept."""
    at = re.search(r"\s+#\s", text)
    return (text[:at.start()], text[at.end():].strip()) if at else (text.strip(), "")


def examples(text: str | None = None) -> list[Example]:
    """Every `$ cnnprof` example of the README, with the output shown after it."""
    lines = (README.read_text(encoding="utf-8") if text is None else text).splitlines()
    found: list[Example] = []
    fenced, in_block, current = False, False, None  # in_block: in a fence opened by a bare ``` (not ```yaml)
    for number, line in enumerate(lines, 1):
        if line.startswith("```"):
            if current is not None:
                found.append(current)
            fenced, current = not fenced, None
            in_block = fenced and line.strip() == "```"
            continue
        if not in_block:
            continue
        if line.startswith("$ "):
            if current is not None:
                found.append(current)
            command, comment = _split_comment(line[2:])
            current = Example(number, command, comment, ())
        elif current is not None:
            current = Example(current.line, current.command, current.comment, (*current.output, line.rstrip()))
    return found


def matches(shown: list[str], actual: list[str]) -> str | None:
    """None when `actual` is what `shown` says: equal, or with each `...` standing for any lines in between
    (the pieces in order); else the first line that differs, for the failure message."""
    pieces, piece = [], []
    for line in shown:
        if line.strip() == "...":
            pieces.append(piece)
            piece = []
        else:
            piece.append(line)
    pieces.append(piece)
    if len(pieces) == 1:
        if shown == actual:
            return None
        diff = next((i for i, (a, b) in enumerate(zip(shown, actual)) if a != b), min(len(shown), len(actual)))
        return (f"line {diff + 1}: README {shown[diff] if diff < len(shown) else '<end>'!r}, "
                f"cnnprof {actual[diff] if diff < len(actual) else '<end>'!r}")
    at = 0
    for i, piece in enumerate(pieces):
        if not piece:
            continue
        starts = [j for j in range(at, len(actual) - len(piece) + 1) if actual[j:j + len(piece)] == piece]
        if i == 0 and (not starts or starts[0] != 0):
            return f"the output does not start with {piece[0]!r}"
        if not starts:
            return f"not found in order: {piece[0]!r} ... {piece[-1]!r}"
        at = starts[0] + len(piece)
    return None


ALL = examples()
DETERMINISTIC = [e for e in ALL if not e.machine_dependent]


def _slow(example: Example) -> bool:
    """`cnnprof flops` over the whole zoo takes about 10 s on 2 cores."""
    return example.args[:1] == ["flops"] and (len(example.args) == 1 or example.args[1].startswith("-"))


def _run(cli, example: Example):
    """The example run in-process at the README's width; stderr (errors, notes) before stdout, as a
    terminal shows them."""
    result = cli.runner.invoke(cli_app(), example.args, env={"COLUMNS": WIDTH})
    text = (result.stderr or "") + (result.stdout or "")
    return result, [line.rstrip() for line in text.splitlines()]


def cli_app():
    from cnnprof.cli import app

    return app


def test_the_readme_has_examples_of_every_command():
    commands = {e.args[0] for e in ALL}
    assert {"compare", "list", "params", "flops", "bench", "roofline", "sweep", "match", "search"} <= commands


@pytest.mark.parametrize("example", [e for e in ALL if e.args[0] in MEASURING], ids=str)
def test_examples_that_measure_are_marked_machine_dependent(example):
    assert example.machine_dependent, f"{example}: its figures depend on the machine; say so with # {MACHINE}"


@pytest.mark.parametrize("example", [pytest.param(e, marks=pytest.mark.slow) if _slow(e) else e
                                     for e in DETERMINISTIC], ids=str)
def test_deterministic_examples_print_what_the_readme_shows(cli, example):
    result, actual = _run(cli, example)
    assert result.exit_code == example.exit_code, (str(example), result.stderr)
    if example.shown:
        problem = matches(example.shown, actual)
        assert problem is None, f"{example}: {problem}\n--- cnnprof prints:\n" + "\n".join(actual)


def shape(lines: list[str]) -> list[tuple[str, object]]:
    """What of an output does not depend on the machine: the header of every boxed table, and the label (first
    cell) of every table row, rule-separated tables included, in order."""
    found: list[tuple[str, object]] = []
    in_simple = False
    for line in lines:
        if "┃" in line:
            found.append(("header", tuple(c.strip() for c in line.strip().strip("┃").split("┃"))))
        elif "│" in line:
            found.append(("row", line.strip().strip("│").split("│")[0].strip()))
        elif line.strip() and set(line.strip()) == {"─"}:
            in_simple = True
        elif in_simple and line.strip() and not line.split()[0].endswith(":"):
            found.append(("row", line.split()[0]))
        else:
            in_simple = False
    return found


def _in_order(part: list, whole: list) -> bool:
    it = iter(whole)
    return all(any(x == y for y in it) for x in part)


# Quick timing for the shape check: the figures are not compared, only headers and row labels.
QUICK = {"bench": ["--warmup", "0", "--min-time", "0.05", "--min-runs", "2", "--resolution", "64"]}


@pytest.mark.slow
@pytest.mark.parametrize("example", [e for e in ALL if e.machine_dependent and e.args[0] in QUICK], ids=str)
def test_machine_dependent_examples_keep_their_shape(cli, example):
    """Bench examples are run with quick timing: their tables must have the README's headers, and its row
    labels in its order (rows grouped by batch size, for one)."""
    quick = Example(example.line, example.command + " " + " ".join(QUICK[example.args[0]]), example.comment,
                    example.output)
    result, actual = _run(cli, quick)
    assert result.exit_code == example.exit_code, (str(example), result.stderr)
    shown = shape(example.shown)
    assert shown and _in_order(shown, shape(actual)), f"{example}:\n{shown}\n--- cnnprof prints:\n{shape(actual)}"


def test_the_matcher_reads_excerpts_and_exit_codes():
    text = ("```\n$ cnnprof params x   # a note\nA\n...\nC\nexit code: 2\n$ cnnprof list\n```\n```yaml\n$ no\n```\n"
            "```python\nx\n```\n")
    first, second = examples(text)
    assert (first.command, first.comment, first.exit_code, first.shown) == ("cnnprof params x", "a note", 2,
                                                                            ["A", "...", "C"])
    assert second.args == ["list"] and second.output == ()
    assert matches(["A", "...", "C"], ["A", "B", "B", "C"]) is None
    assert matches(["A", "...", "C"], ["A", "B"]) is not None and matches(["A", "...", "C"], ["B", "A", "C"])
    assert matches(["A", "B"], ["A", "B"]) is None and "line 2" in matches(["A", "B"], ["A", "C"])
    table = ["T", "┃ Model ┃ Batch ┃", "│ a     │     1 │", "│ b     │     1 │", "Model  Batch", "─────", "a  8  1.0",
             "noisy: ..."]
    assert shape(table) == [("header", ("Model", "Batch")), ("row", "a"), ("row", "b"), ("row", "a")]
    assert _in_order(["a", "b"], ["a", "c", "b"]) and not _in_order(["b", "a"], ["a", "b"])
