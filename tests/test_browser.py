"""The built book in a real browser: every page, from disk, with the network off.

After the strict build (``conftest.built_book``) this opens every HTML page of the site in
Debian's Chromium (``/usr/bin/chromium``, driven by the ``playwright`` Python package through its
``executable_path``: no browser is downloaded) and checks, per page:

- no JavaScript error (uncaught exception or console error) and no request that leaves the
  site (the context is offline and every http(s) request is refused and reported);
- MathJax rendered every math element Sphinx wrote (``span.math``, ``div.math``), with no TeX
  error, and no raw ``$$``, ``\\[``, ``\\(`` or ``\\begin{`` is left in the visible text
  (code blocks aside);
- every image has loaded (non-zero natural width);
- no cell output shows a traceback or an error;
- every link inside the site resolves (the file exists, and so does the ``#fragment``);

and that the search page finds "attention" and "PPO". A screenshot of each page goes to
``_build/screenshots/`` of the repository (full page, PNG).

Outside CI the test skips, saying how to install Chromium, when it is missing; under CI
(``CI`` set, as ``.ci/run`` runs) a missing browser fails it.
"""
from __future__ import annotations

import os
import re
import shutil
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "_build" / "screenshots"
CHROMIUM = os.environ.get("LLMCOURSE_CHROMIUM", "/usr/bin/chromium")
# What Chromium needs on a closed machine, headless, as root (machines/python.md).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
REDIRECT = re.compile(r'<meta[^>]+http-equiv="refresh"[^>]+content="\d+;\s*url=([^"]+)"', re.I)
RAW_TEX = ("$$", "\\[", "\\(", "\\begin{")
ERROR_LINE = re.compile(r"^(?:Traceback \(most recent call last\)|(?:\w+\.)*\w*(?:Error|Exception)(?::|$))", re.M)
INSTALL = ("Debian's Chromium is needed for the browser test: `apt-get install chromium` (as root; "
           ".ci/run does it) and `pip install -r requirements.txt` (playwright); or set "
           "LLMCOURSE_CHROMIUM to another Chromium.")

# Runs in the page once it has loaded: waits for MathJax and the images, then reports.
PAGE_REPORT = r"""
async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  for (const img of document.images) { img.loading = "eager"; }
  await Promise.all(Array.from(document.images).map(img => img.complete ? null :
      new Promise(ok => { img.addEventListener("load", ok); img.addEventListener("error", ok);
                          setTimeout(ok, 5000); })));
  const math = Array.from(document.querySelectorAll("span.math, div.math"));
  const outputs = Array.from(document.querySelectorAll(".cell_output, .output"));
  return {
    title: document.title,
    math: math.length,
    rendered: math.filter(m => m.querySelector("mjx-container")).length,
    tex_errors: document.querySelectorAll("mjx-merror, [data-mjx-error]").length,
    mathjax: !!(window.MathJax && MathJax.version),
    broken_images: Array.from(document.images).filter(i => !i.naturalWidth)
                        .map(i => i.getAttribute("src")),
    images: document.images.length,
    tracebacks: document.querySelectorAll(".cell_output .traceback, .cell_output .error, .output.traceback, .output.error").length,
    output_text: outputs.map(o => o.innerText).join("\n"),
    links: Array.from(document.querySelectorAll("a[href]")).map(a => a.href),
  };
}
"""
# Hides code, scripts and rendered math, then returns the text a reader sees.
VISIBLE_TEXT = r"""
() => {
  for (const el of document.querySelectorAll("pre, code, script, style, textarea, mjx-container, .highlight"))
    el.style.display = "none";
  return document.body.innerText;
}
"""


class _Ids(HTMLParser):
    def __init__(self, text):
        super().__init__()
        self.ids = set()
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k in ("id", "name") and v:
                self.ids.add(v)


def _source_has_math(html: Path, rel: str) -> bool:
    """Whether the page's MyST source (the copy in ``_sources/``) has math outside code."""
    src = html / "_sources" / (rel[:-5] + ".md")
    if not src.is_file():
        return False
    text = re.sub(r"^(```|~~~|:::).*?^\1", "", src.read_text(encoding="utf-8"), flags=re.S | re.M)
    text = re.sub(r"`[^`\n]*`", "", text)
    return bool(re.search(r"\$\$|\$[^$\s][^$\n]*\$|\\begin\{|\{math\}", text))


def _browser():
    if not Path(CHROMIUM).exists():
        return None, f"no Chromium at {CHROMIUM}. {INSTALL}"
    try:
        from playwright.sync_api import sync_playwright  # noqa: F401
    except ImportError:
        return None, f"the playwright package is missing. {INSTALL}"
    return CHROMIUM, ""


def check_site(html: Path, screenshots: Path | None = None, queries=("attention", "PPO")) -> dict:
    """Open every page of the site ``html`` in Chromium and return what went wrong, per page."""
    from playwright.sync_api import sync_playwright

    pages = sorted(p for p in html.rglob("*.html") if not {"_static", "_sources", "_downloads"} & set(p.parts))
    problems: dict[str, list[str]] = {}
    stats = {"pages": len(pages), "math": 0, "images": 0, "links": 0, "external_links": 0}
    ids_cache: dict[Path, set] = {}
    if screenshots is not None:
        shutil.rmtree(screenshots, ignore_errors=True)
        screenshots.mkdir(parents=True)

    def ids_of(path: Path) -> set:
        if path not in ids_cache:
            ids_cache[path] = _Ids(path.read_text(encoding="utf-8", errors="replace")).ids
        return ids_cache[path]

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(offline=True, viewport={"width": 1280, "height": 900})
        network: list[str] = []

        def refuse(route):
            network.append(route.request.url)
            route.abort()

        context.route(re.compile(r"^(https?|wss?)://"), refuse)
        page = context.new_page()
        events: list[str] = []
        page.on("pageerror", lambda e: events.append(f"JavaScript error: {e}"))
        page.on("console", lambda m: events.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("requestfailed", lambda r: events.append(f"failed to load {r.url}: {r.failure}")
                if r.url.startswith("file:") else None)
        for path in pages:
            rel = path.relative_to(html).as_posix()
            events.clear()
            network.clear()
            redirect = REDIRECT.search(path.read_text(encoding="utf-8", errors="replace"))
            if redirect:                                    # Jupyter Book's index.html: a meta refresh
                target = (path.parent / unquote(urlsplit(redirect.group(1)).path))
                if not target.is_file():
                    problems[rel] = [f"redirects to a missing page: {redirect.group(1)}"]
                continue
            page.goto(path.as_uri(), wait_until="load")
            report = page.evaluate(PAGE_REPORT)
            bad = list(events)
            bad += [f"tried the network: {u}" for u in network]
            if not report["math"] and _source_has_math(html, rel):
                bad.append("its source has math but the page has no math element")
            if report["math"]:
                stats["math"] += report["math"]
                if not report["mathjax"]:
                    bad.append(f"{report['math']} math elements but MathJax did not load")
                elif report["rendered"] < report["math"]:
                    bad.append(f"MathJax rendered {report['rendered']} of {report['math']} math elements")
            if report["tex_errors"]:
                bad.append(f"{report['tex_errors']} TeX errors")
            stats["images"] += report["images"]
            bad += [f"image did not load: {src}" for src in report["broken_images"]]
            if report["tracebacks"] or ERROR_LINE.search(report["output_text"]):
                found = ERROR_LINE.search(report["output_text"])
                bad.append(f"a cell output shows an error: {found.group(0) if found else 'traceback'}")
            for url in report["links"]:
                parts = urlsplit(url)
                if parts.scheme != "file":
                    stats["external_links"] += 1
                    continue
                stats["links"] += 1
                target = Path(unquote(parts.path))
                if target.is_dir():
                    target = target / "index.html"
                if not target.exists():
                    bad.append(f"broken link: {url}")
                elif parts.fragment and target.suffix == ".html" and unquote(parts.fragment) not in ids_of(target):
                    bad.append(f"broken anchor: {url}")
            if screenshots is not None:
                page.screenshot(path=str(screenshots / (rel.replace("/", "__")[:-5] + ".png")), full_page=True)
            text = page.evaluate(VISIBLE_TEXT)
            for raw in RAW_TEX:
                if raw in text:
                    i = text.index(raw)
                    bad.append(f"raw TeX {raw!r} in the text: ...{text[max(0, i - 40):i + 40]!r}...")
            if bad:
                problems[rel] = bad
        for q in queries:
            page.goto((html / "search.html").as_uri() + f"?q={q}", wait_until="load")
            try:
                page.wait_for_selector("#search-results ul.search li", timeout=15_000)
            except Exception:
                problems.setdefault("search.html", []).append(f"searching {q!r} found nothing")
                continue
            found = page.eval_on_selector_all("#search-results ul.search li a", "els => els.map(a => a.href)")
            stats[f"search {q}"] = len(found)
            if not found:
                problems.setdefault("search.html", []).append(f"searching {q!r} found nothing")
        browser.close()
    return {"problems": problems, "stats": stats}


@pytest.mark.slow
def test_every_page_works_offline_in_chromium(built_book):
    chromium, why = _browser()
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    if built_book.returncode:
        pytest.fail("the book build failed (see test_book_builds_strictly)")
    start = time.perf_counter()
    result = check_site(built_book.html, SCREENSHOTS)
    seconds = time.perf_counter() - start
    stats, problems = result["stats"], result["problems"]
    print(f"browser test: {stats['pages']} pages in {seconds:.1f} s; {stats}")
    assert stats["pages"] >= 10
    assert stats["math"] > 0 and stats["images"] > 0
    assert not problems, "\n".join(f"{page}: {p}" for page, ps in problems.items() for p in ps)
    chapters = [p for p in SCREENSHOTS.glob("book__part*.png")]
    assert chapters, "no screenshot of a chapter was written"


if __name__ == "__main__":                       # check a built site by hand: python tests/test_browser.py DIR
    import json
    import sys

    t = time.perf_counter()
    out = check_site(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else None)
    print(json.dumps(out, indent=1, ensure_ascii=False))
    print(f"{time.perf_counter() - t:.1f} s")
