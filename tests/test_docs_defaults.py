"""The defaults the docs state are the estimator's: every default written in README.md or docs/
(a table's "default" column, a `"value"` (default) row under a parameter's table, or an inline
`name=value` (default)) equals ``HTLNetRegressor().get_params()[name]``, so the docs cannot drift."""

import ast
import pathlib
import re

import pytest

from sk_htlnet import HTLNetRegressor

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").rglob("*.md"))
PARAMS = HTLNetRegressor().get_params()


def _value(text):
    """A documented value: a Python literal in backticks ("linear", 1e-3, (128, 64, 32), None)."""
    return ast.literal_eval(text.strip().strip("`"))


def _split(cell):
    """Split a cell on the commas outside parentheses and backticks."""
    parts, depth, quoted, start = [], 0, False, 0
    for i, ch in enumerate(cell):
        if ch == "`":
            quoted = not quoted
        elif ch == "(" and not quoted:
            depth += 1
        elif ch == ")" and not quoted:
            depth -= 1
        elif ch == "," and depth == 0 and not quoted:
            parts.append(cell[start:i])
            start = i + 1
    return [p.strip() for p in parts + [cell[start:]]]


def _cells(line):
    return [c.strip() for c in line.strip().strip("|").split("|")]


def documented_defaults(text):
    """(parameter, value as written, line number) for every default the page states."""
    found = []
    lines = text.splitlines()
    header = None
    for number, line in enumerate(lines, 1):
        if not line.lstrip().startswith("|"):
            header = None
        elif header is None:
            header = _cells(line)
        elif not set(line.replace("|", "").strip()) <= set("-: "):
            cells = _cells(line)
            if header[-1] == "default":  # | `a`, `b` | why | 1, 2 |
                names = re.findall(r"`([a-z_]+)`", cells[0])
                values = _split(cells[-1])
                if len(names) == len(values):
                    found += [(n, v, number) for n, v in zip(names, values)]
            first = re.fullmatch(r"`([a-z_]+)`", header[0])
            marked = re.fullmatch(r"(`[^`]+`) \(default\)", cells[0])
            if first and marked:  # | `core_loss` | ... then | `"auto"` (default) | ...
                found.append((first.group(1), marked.group(1), number))
        for name, value in re.findall(r"`([a-z_]+)=([^`]+)` \(default\)", line):
            found.append((name, value, number))
    return [(n, v, i) for n, v, i in found if n in PARAMS]


def test_the_parser_finds_each_form():
    page = "\n".join([
        "| parameter | why | default |", "|---|---|---|", "| `batch_size`, `tower_units` | x | 7, (1, 2) |", "",
        "| `core_loss` | what |", "|---|---|", '| `"ziln"` (default) | y |', "",
        'text `retransformation="none"` (default) text',
    ])
    assert documented_defaults(page) == [
        ("batch_size", "7", 3), ("tower_units", "(1, 2)", 3), ("core_loss", '`"ziln"`', 7),
        ("retransformation", '"none"', 9),
    ]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_documented_defaults_are_the_estimators(page):
    wrong = []
    for name, written, line in documented_defaults(page.read_text(encoding="utf-8")):
        try:
            value = _value(written)
        except (ValueError, SyntaxError):
            wrong.append(f"line {line}: {name} = {written} is not a literal")
            continue
        actual = PARAMS[name]
        same = (tuple(value) == tuple(actual)) if isinstance(actual, (list, tuple)) else value == actual
        if not same or isinstance(value, bool) != isinstance(actual, bool):  # True is not 1
            wrong.append(f"line {line}: {name} documented as {value!r}, the estimator's default is {actual!r}")
    assert not wrong, f"{page.relative_to(ROOT)}: " + "; ".join(wrong)


def test_the_docs_state_the_defaults_that_matter():
    # the table of docs/user_guide/tuning.md is where users look: it must keep stating these
    stated = {n for n, _, _ in documented_defaults((ROOT / "docs/user_guide/tuning.md").read_text(encoding="utf-8"))}
    assert {"learning_rate", "max_iter", "batch_size", "numeric_encoding", "core_loss", "target_transform"} <= stated
