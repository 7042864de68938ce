"""The built pages read well: no progress bars, every figure captioned, with alt text, phone-wide.

Checks the HTML of the strict build (the session fixture ``built_book`` of ``conftest.py``),
page by page of the table of contents; the source-level counterparts (faster, less
complete) are in ``test_chapter_lint.py``, whose docstring says how a chapter states
results and draws figures.

- No progress bar: no Jupyter widget output (a ``tqdm.auto`` bar in a notebook is one) and
  no tqdm text ("37%|███", "12.3it/s]") in the page.
- Every image of the page's content is inside a figure with a non-empty caption and has
  non-empty alt text.
- No figure wider than a phone page can show legibly: at most 7.5 inches (the PNG's own
  resolution says how many pixels an inch is), one panel across.
"""
from __future__ import annotations

import base64
import re
import struct

import pytest

from test_book import toc_files

pytestmark = pytest.mark.slow

MAX_WIDTH_IN = 7.5
TQDM_TEXT = re.compile(r"\d{1,3}%\|[█▏▎▍▌▋▊▉ #]*\||\d+(?:\.\d+)?(?:it/s|s/it)\]")


def _soup(path):
    from bs4 import BeautifulSoup            # installed with jupyter-book's theme
    return BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")


def png_width_inches(data: bytes) -> float | None:
    """Width of a PNG in inches from its IHDR and pHYs chunks (None without a resolution)."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return None
    width = struct.unpack(">I", data[16:20])[0]
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"pHYs":
            ppu_x, _, unit = struct.unpack(">IIB", data[pos + 8:pos + 17])
            if unit == 1 and ppu_x:                   # pixels per metre
                return width / (ppu_x * 0.0254)
        if kind == b"IDAT":
            break
        pos += 12 + length
    return width / 72.0                               # matplotlib writes pHYs; 72 dpi otherwise


def _pages(built_book):
    assert built_book.returncode == 0, "the book did not build; see test_book.py"
    for name in toc_files():
        yield name, built_book.html / f"{name}.html"


def test_no_progress_bars_in_built_pages(built_book):
    bad = []
    for name, html in _pages(built_book):
        text = html.read_text(encoding="utf-8")
        if "application/vnd.jupyter.widget-view+json" in text or "jupyter-widgets" in text:
            bad.append(f"{name}: widget output (a tqdm.auto bar?): pass progress=False")
        for cell in _soup(html).select("div.cell_output"):
            m = TQDM_TEXT.search(cell.get_text())
            if m:
                bad.append(f"{name}: progress text {m.group()!r}: pass progress=False")
    assert not bad, "\n".join(bad)


def test_every_figure_has_caption_and_alt_text(built_book):
    bad = []
    for name, html in _pages(built_book):
        main = _soup(html).select_one("main") or _soup(html)
        for img in main.select("article img, div.cell_output img"):
            src = img.get("src", "")[:60]
            alt = (img.get("alt") or "").strip()
            if not alt or alt == img.get("src") or alt.endswith((".png", ".svg", ".jpg")):
                bad.append(f"{name}: image {src} has no alt text (MyST-NB puts the file name there)")
            fig = img.find_parent("figure")
            cap = fig.find("figcaption") if fig else None
            if cap is None or not cap.get_text(strip=True):
                bad.append(f"{name}: image {src} is not in a figure with a caption")
    assert not bad, "\n".join(bad)


def test_figures_fit_a_phone(built_book):
    bad = []
    for name, html in _pages(built_book):
        for img in _soup(html).select("main img"):
            src = img.get("src", "")
            if src.startswith("data:image/png;base64,"):
                data = base64.b64decode(src.split(",", 1)[1])
            else:
                path = (html.parent / src).resolve()
                if path.suffix.lower() != ".png" or not path.exists():
                    continue
                data = path.read_bytes()
            width = png_width_inches(data)
            if width and width > MAX_WIDTH_IN:
                bad.append(f"{name}: {src[:60]} is {width:.1f} in wide (at most {MAX_WIDTH_IN}): "
                           f"stack or split its panels")
    assert not bad, "\n".join(bad)
