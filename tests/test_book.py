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
