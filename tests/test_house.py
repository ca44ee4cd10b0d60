"""Rules of the code's layout that keep it easy to change: short functions, stage 2 and stage 3 apart
(they hand over through the run folder), run-folder names in one module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "acdc_wsss"
#: The longest a function of the package may be, from its ``def`` line to its last line.
MAX_LINES = 80


def _modules(folder: Path = PACKAGE) -> list[Path]:
    return sorted(folder.rglob("*.py"))


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_no_function_is_longer_than_80_lines() -> None:
    long = [
        f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1})"
        for path in _modules()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_LINES
    ]
    assert not long, f"functions over {MAX_LINES} lines: {long}"


@pytest.mark.parametrize("path", _modules(PACKAGE / "pseudo"), ids=lambda p: p.name)
def test_stage2_imports_nothing_of_stage3(path: Path) -> None:
    later = ("acdc_wsss.seg", "acdc_wsss.figures", "acdc_wsss.report", "acdc_wsss.chain")
    assert not [m for m in _imports(path) if m.startswith(later)]


@pytest.mark.parametrize("path", _modules(PACKAGE / "seg"), ids=lambda p: p.name)
def test_stage3_reads_only_the_rules_of_stage2(path: Path) -> None:
    """Stage 3's anatomy fusion runs stage 2's rules; everything else comes through the run folder."""
    stage2 = [m for m in _imports(path) if m.startswith("acdc_wsss.pseudo")]
    assert all(m.startswith("acdc_wsss.pseudo.rules") for m in stage2), stage2


def test_run_folder_names_live_in_the_layout_module() -> None:
    names = ("datalist.json", "manifest.json", "summary.json", "last.pt", "best.pt", "acdc_labels.ctbl")
    spelled = {
        f"{path.relative_to(PACKAGE.parent)}: {node.value}"
        for path in _modules()
        if path.name != "layout.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names
    }
    assert not spelled, spelled
