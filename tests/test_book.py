"""The book builds strictly: every notebook executes without error, no Sphinx warning.

This is the same command as `make book` (`-W -n --keep-going`), so a chapter that stops
executing, a broken cross-reference or a missing citation fails `make test`. It builds into a
temporary folder (the ``built_book`` fixture of ``conftest.py``): no execution cache, so a
change to the package that breaks a chapter fails here, and nothing lands in the repository.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def toc_files() -> list[str]:
    text = (ROOT / "_toc.yml").read_text(encoding="utf-8")
    return re.findall(r"^\s*-?\s*(?:file|root):\s*([^\s#]+)", text, re.M)


def test_toc_lists_existing_pages():
    for name in toc_files():
        assert (ROOT / f"{name}.md").exists(), f"_toc.yml names {name}, which has no .md file"


def test_every_chapter_is_in_the_toc():
    listed = set(toc_files())
    for md in (ROOT / "book").rglob("*.md"):
        rel = md.relative_to(ROOT).with_suffix("").as_posix()
        assert rel in listed, f"{rel}.md is not in _toc.yml (only written chapters, all of them)"


@pytest.mark.slow
def test_book_builds_strictly(built_book):
    log = built_book.log
    warnings = [line for line in log.splitlines() if "WARNING" in line or "ERROR" in line]
    assert built_book.returncode == 0, "book build failed:\n" + "\n".join(warnings[-40:]) + "\n" + log[-3000:]
    for name in toc_files():
        html = built_book.html / f"{name}.html"
        assert html.exists(), f"{html} was not written"


@pytest.mark.slow
def test_book_build_writes_nothing_into_the_repository(built_book):
    assert not built_book.repo_changes, built_book.repo_changes


@pytest.mark.slow
def test_every_chapter_was_executed_and_its_time_is_on_the_build_page(built_book, capsys):
    """The build page's execution table (MyST-NB's record of this build) lists every chapter as
    executed successfully; its run times are printed here (they are measured on whatever machine
    builds, so they are reported, not asserted: the course's 90 s rule is checked by hand and
    quoted in the notes)."""
    html = (built_book.html / "book" / "reader" / "build.html").read_text(encoding="utf-8")
    body = html.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    rows = {}
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, flags=re.S):
        cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, flags=re.S)]
        rows[cells[0]] = cells
    executed = [name for name in toc_files() if (ROOT / f"{name}.md").read_text(encoding="utf-8").count("{code-cell}")]
    missing = [name for name in executed if name not in rows]
    assert not missing, f"not in the execution table: {missing}; table: {sorted(rows)}"
    failed = [name for name, cells in rows.items() if "✅" not in cells[-1]]
    assert not failed, f"chapters whose execution did not succeed: {failed}"
    with capsys.disabled():                   # into the test log (pytest hides a passing test's output)
        print("\nchapter execution times of this build (s):")
        for name in executed:
            print(f"  {rows[name][3]:>8}  {name}")
