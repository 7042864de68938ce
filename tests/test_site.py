"""The reader's side of the book: glossary, paper map, exercises page, notebooks, launch links,
offline MathJax and the publishing workflow.

Fast tests check the sources and the build-time generators of ``book/_ext/llmcourse_book.py``;
the slow ones read the site that the strict build of ``conftest.built_book`` wrote (the real
browser test is ``test_browser.py``).
"""
from __future__ import annotations

import re
import shlex
import sys
import zipfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import nbformat
import pytest
import yaml
from docutils.nodes import make_id

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "book" / "_ext"))
import llmcourse_book as L  # noqa: E402

TOC = L.toc_docnames(ROOT)
CHAPTERS = L.chapter_docs(TOC)                      # written chapters: number -> docname
GLOSSARY = L.load_yaml(ROOT / "book" / "reader" / "glossary.yml")["terms"]
PAPERS = L.load_yaml(ROOT / "book" / "reader" / "papers.yml")
WORKFLOW = ROOT / ".github" / "workflows" / "book.yml"
# Characters that exist only in Simplified Chinese (their Traditional forms are used in the list).
SIMPLIFIED_ONLY = set("语络数码编训练权归样习奖励惩罚关实现记忆体网参头图时个们这对为说国机带级预")


class Tags(HTMLParser):
    """Every start tag of a page, with its attributes, and the text under each id."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def find(self, tag: str, **attrs) -> list[dict]:
        return [a for t, a in self.tags if t == tag and all(a.get(k) == v for k, v in attrs.items())]

    def hrefs(self) -> list[str]:
        return [a["href"] for t, a in self.tags if t == "a" and a.get("href")]


def page(html_dir: Path, docname: str) -> Tags:
    return Tags((html_dir / f"{docname}.html").read_text(encoding="utf-8"))


# ----------------------------------------------------------------------------- glossary

def test_glossary_has_at_least_80_terms_in_english_japanese_and_chinese():
    assert len(GLOSSARY) >= 80, len(GLOSSARY)
    for e in GLOSSARY:
        langs = {lang for lang, _ in L.glossary_terms(e)}
        assert "en" in langs and ({"ja", "ja+zh"} & langs) and ({"zh", "ja+zh"} & langs), e
        for lang in ("ja", "zh"):
            words = [e[lang]] if isinstance(e[lang], str) else e[lang]
            assert all(re.search(r"[\u3040-\u30ff\u4e00-\u9fff]", w) for w in words), (lang, words)
        assert str(e["def"]).strip().endswith("."), e["en"]


def test_glossary_chinese_is_traditional_as_in_the_reading_list():
    for e in GLOSSARY:
        for w in [e["zh"]] if isinstance(e["zh"], str) else e["zh"]:
            assert not (set(w) & SIMPLIFIED_ONLY), f"{w!r} ({e['en']}) uses Simplified characters"


def test_glossary_terms_are_unique_and_name_a_chapter_of_the_24():
    seen = {}
    for e in GLOSSARY:
        assert isinstance(e["chapter"], int) and 1 <= e["chapter"] <= 24, e
        for _, t in L.glossary_terms(e):
            assert t.casefold() not in seen, f"{t!r} is in {seen[t.casefold()]!r} and {e['en']!r}"
            seen[t.casefold()] = e["en"]
    for word in ("attention", "mask", "layer normalization", "fine-tuning", "reward model", "KL penalty",
                 "advantage"):
        assert word.casefold() in seen, f"the glossary lacks {word!r}"


def test_glossary_japanese_and_chinese_written_alike_are_shown_once():
    terms = L.glossary_terms({"en": "win rate", "ja": "勝率", "zh": "勝率"})
    assert terms == [("en", "win rate"), ("ja+zh", "勝率")]


# ----------------------------------------------------------------------------- the map

def test_papers_table_is_the_24_papers_of_the_bibliography():
    bib = L.read_bib(ROOT / "book" / "references.bib")
    assert [p["chapter"] for p in PAPERS["papers"]] == list(range(1, 25))
    for p in PAPERS["papers"]:
        for key in p["keys"]:
            assert key in bib, f"chapter {p['chapter']}: {key} is not in book/references.bib"
        assert L.paper_markers(bib, p["keys"]), p
    covered = [n for part in PAPERS["parts"] for n in range(part["chapters"][0], part["chapters"][1] + 1)]
    assert covered == list(range(1, 25))


def test_map_has_every_written_chapter_and_finds_its_code():
    _, rows = L.build_map(ROOT, ROOT / "book" / "reader" / "papers.yml", TOC)
    by_chapter = {r.chapter: r for r in rows}
    assert len(rows) == 24
    for n, doc in CHAPTERS.items():
        assert by_chapter[n].docname == doc
        assert by_chapter[n].code, f"chapter {n}: no llmcourse module cites {by_chapter[n].keys}"
    # a few facts the generator must find from the headers alone
    assert ("llmcourse.attention", ["mlm_corrupt"]) in by_chapter[6].code
    assert "masking" in by_chapter[2].exercises and "masking" in by_chapter[6].exercises
    if 21 in CHAPTERS:
        assert "ppo_clip_loss" in dict(by_chapter[21].code)["llmcourse.rl.core"]


def test_chapter_uses_reads_imports_and_included_objects():
    mods = L.scan_package(ROOT / "llmcourse")
    md = ("```{code-cell} ipython3\nfrom llmcourse.rl import (compute_gae,\n    train_ppo)  # x\n"
          "from llmcourse.attention import causal_mask as cm\n```\n"
          "```{literalinclude} ../../llmcourse/rl/core.py\n:pyobject: value_loss\n```\n")
    used = L.chapter_uses(md, mods)
    assert used["llmcourse.rl.core"] == {"compute_gae", "value_loss"}
    assert used["llmcourse.rl.ppo"] == {"train_ppo"}
    assert used["llmcourse.attention"] == {"causal_mask"}


# ----------------------------------------------------------------------------- notebooks, launch links

def test_launch_links_open_the_ipynb_on_the_notebooks_branch():
    urls = L.launch_urls("https://github.com/me/fork", "notebooks", "book/part1/01_bahdanau.ipynb",
                         "https://mybinder.org", "https://colab.research.google.com", "jupyterlab")
    assert urls == {
        "Binder": "https://mybinder.org/v2/gh/me/fork/notebooks?urlpath=lab/tree/book/part1/01_bahdanau.ipynb",
        "Colab": "https://colab.research.google.com/github/me/fork/blob/notebooks/book/part1/01_bahdanau.ipynb",
    }
    with pytest.raises(ValueError):
        L.launch_urls("https://example.org/x", "b", "p.ipynb", "https://mybinder.org", "", "jupyterlab")


@pytest.mark.parametrize("docname", sorted(CHAPTERS.values()))
def test_chapter_notebook_is_its_myst_source_plus_a_setup_cell(docname):
    import jupytext

    nb = L.notebook_from_myst(ROOT / f"{docname}.md", "https://github.com/o/r", "main", docname)
    nbformat.validate(nb)
    again = L.notebook_from_myst(ROOT / f"{docname}.md", "https://github.com/o/r", "main", docname)
    assert nbformat.writes(nb) == nbformat.writes(again), "the generated notebook is not deterministic"
    src = jupytext.read(ROOT / f"{docname}.md")
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert code[1:] == [c.source for c in src.cells if c.cell_type == "code"]
    assert 'find_spec("llmcourse") is None' in code[0] and "git+https://github.com/o/r@main" in code[0]
    assert nb.metadata.kernelspec.name == "python3"


# ----------------------------------------------------------------------------- exercises, zip

def test_exercises_zip_holds_every_release_and_is_reproducible(tmp_path):
    names = L.write_exercises_zip(ROOT / "exercises", tmp_path / "a.zip")
    L.write_exercises_zip(ROOT / "exercises", tmp_path / "b.zip")
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()
    released = sorted(p.relative_to(ROOT / "exercises").as_posix() for p in (ROOT / "exercises").glob("*/*.ipynb"))
    assert released and all(f"llmcourse-exercises/{r}" in names for r in released)
    with zipfile.ZipFile(tmp_path / "a.zip") as zf:
        nbformat.reads(zf.read(f"llmcourse-exercises/{released[0]}").decode(), as_version=4)


def test_exercise_parts_and_points_come_from_the_release():
    assignments = {a.name: a for a in L.scan_assignments(ROOT / "exercises")}
    att = assignments["attention"]
    assert [p.names for p in att.parts] == [["scaled_dot_product_attention"], ["split_heads", "merge_heads"],
                                            ["MultiHeadAttention"]]
    nb = nbformat.read(att.notebook, as_version=4)
    assert att.points == sum(c.metadata.get("nbgrader", {}).get("points", 0) for c in nb.cells
                             if c.metadata.get("nbgrader", {}).get("grade"))


def test_introduction_mentions_llmcourse_check_and_the_exercises_page():
    intro = (ROOT / "book" / "intro.md").read_text(encoding="utf-8")
    assert "llmcourse check" in intro and "reader/exercises" in intro


# ----------------------------------------------------------------------------- MathJax, workflow

def test_mathjax_comes_from_a_package_not_a_cdn():
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    path = config["sphinx"]["config"]["mathjax_path"]
    assert "://" not in path and path.startswith("mathjax/")
    src = L.mathjax_source()
    assert (src / path.removeprefix("mathjax/")).is_file()
    assert list((src / "output" / "chtml" / "fonts" / "woff-v2").glob("*.woff"))


def readme_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Two commands\s+```bash\n(.*?)```", readme, re.S).group(1)
    return [line.split("#")[0].strip() for line in block.splitlines() if line.split("#")[0].strip()]


def test_workflow_parses_builds_with_the_readme_commands_and_deploys_pages():
    wf = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    on = wf.get("on", wf.get(True))                    # YAML 1.1 reads a bare `on:` as True
    assert "main" in on["push"]["branches"] and "workflow_dispatch" in on
    jobs = wf["jobs"]
    steps = [s for job in jobs.values() for s in job["steps"]]
    runs = "\n".join(s.get("run", "") for s in steps)
    uses = [s.get("uses", "") for s in steps]
    book_cmd = next(c for c in readme_commands() if c.startswith("make book"))
    assert book_cmd in runs, f"the workflow does not run the README's `{book_cmd}`"
    assert any(shlex.split(line)[:2] == ["make", "book"] for line in runs.splitlines() if line.strip())
    setup_py = next(s for s in steps if s.get("uses", "").startswith("actions/setup-python"))
    assert setup_py["with"]["cache"] == "pip" and setup_py["with"]["python-version"] == "3.11"
    cache = next(s for s in steps if s.get("uses", "").startswith("actions/cache"))
    assert "_build/.jupyter_cache" in cache["with"]["path"]
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-pages-artifact"))
    assert upload["with"]["path"].rstrip("/") in ("_build/html", "./_build/html")
    assert any(u.startswith("actions/deploy-pages") for u in uses)
    deploy = next(j for j in jobs.values() if any(s.get("uses", "").startswith("actions/deploy-pages") for s in j["steps"]))
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert L.ZIP_NAME in runs, "the workflow does not publish llmcourse-exercises.zip"
    assert "notebooks" in runs and "LLMCOURSE_REPOSITORY_URL" in WORKFLOW.read_text(encoding="utf-8")


def test_readme_says_how_to_publish_a_fork():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.search(r"## Publishing.*?(?=\n## )", readme, re.S)
    assert section, "README has no Publishing section"
    assert "fork" in section.group(0) and "GitHub Pages" in section.group(0)


def test_ci_installs_chromium_for_the_browser_test():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"apt-get install[^\n]*\bchromium\b", ci)


# ----------------------------------------------------------------------------- the built site

def _site(built_book) -> Path:
    if built_book.returncode:
        pytest.fail("the book build failed (see test_book_builds_strictly)")
    return built_book.html


@pytest.mark.slow
def test_map_page_lists_every_written_chapter(built_book):
    html = _site(built_book)
    tags = page(html, "book/reader/map")
    targets = {unquote(urlsplit(h).path) for h in tags.hrefs()}
    for n, doc in CHAPTERS.items():
        rel = Path(doc).relative_to("book").as_posix()
        assert f"../{rel}.html" in targets, f"the map does not link chapter {n} ({doc})"


@pytest.mark.slow
def test_glossary_page_links_terms_to_their_chapters(built_book):
    html = _site(built_book)
    text = (html / "book" / "reader" / "glossary.html").read_text(encoding="utf-8")
    tags = Tags(text)
    dts = tags.find("dt")
    assert len([d for d in dts if d.get("id", "").startswith("term-")]) >= len(GLOSSARY)
    assert 'lang="ja"' in text and 'lang="zh-TW"' in text
    written = {f"../{Path(d).relative_to('book').as_posix()}.html" for d in CHAPTERS.values()}
    linked = {unquote(urlsplit(h).path) for h in tags.hrefs()} & written
    wanted = {f"../{Path(CHAPTERS[e['chapter']]).relative_to('book').as_posix()}.html"
              for e in GLOSSARY if e["chapter"] in CHAPTERS}
    assert linked == wanted


@pytest.mark.slow
def test_every_chapter_page_offers_its_notebook_and_launch_links(built_book):
    html = _site(built_book)
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    repo = config["repository"]["url"]
    branch = config["sphinx"]["config"]["llmcourse_notebooks_branch"]
    for n, doc in CHAPTERS.items():
        tags = page(html, doc)
        nb_links = [h for h in tags.hrefs() if h.endswith(".ipynb") and "://" not in h]
        assert nb_links, f"chapter {n}: no .ipynb link on {doc}.html"
        target = (html / doc).parent / nb_links[0]
        nb = nbformat.read(target, as_version=4)
        nbformat.validate(nb)
        assert 'find_spec("llmcourse")' in nb.cells[1].source
        want = L.launch_urls(repo, branch, f"{doc}.ipynb", config["launch_buttons"]["binderhub_url"],
                             config["launch_buttons"]["colab_url"], config["launch_buttons"]["notebook_interface"])
        hrefs = set(tags.hrefs())
        for name, url in want.items():
            assert url in hrefs, f"chapter {n}: no {name} link {url}"
        assert not [h for h in hrefs if ("mybinder" in h or "colab" in h) and h.endswith(".md")]


@pytest.mark.slow
def test_every_page_loads_mathjax_and_every_script_from_the_site(built_book):
    html = _site(built_book)
    assert (html / "_static" / "mathjax" / "tex-mml-chtml.js").is_file()
    with_math = 0
    for path in html.rglob("*.html"):
        if "_static" in path.parts:
            continue
        tags = Tags(path.read_text(encoding="utf-8"))
        srcs = [a["src"].split("?")[0] for a in tags.find("script") if a.get("src")]
        assert not [s for s in srcs if "://" in s], f"{path}: scripts from the network: {srcs}"
        local = [s for s in srcs if s.endswith("_static/mathjax/tex-mml-chtml.js")]
        if local:
            with_math += 1
            assert (path.parent / local[0]).resolve().is_file()
    assert with_math >= len(CHAPTERS)


@pytest.mark.slow
def test_exercises_page_links_each_release_and_the_zip(built_book):
    html = _site(built_book)
    tags = page(html, "book/reader/exercises")
    hrefs = tags.hrefs()
    for a in L.scan_assignments(ROOT / "exercises"):
        link = next((h for h in hrefs if h.endswith(f"/{a.notebook.name}") and "_downloads" in h), None)
        assert link, f"no download of {a.notebook.name}"
        got = (html / "book" / "reader" / link).resolve().read_bytes()
        assert got == a.notebook.read_bytes()
        anchor = make_id(f"exercise-{a.name}")           # docutils' id: flash_attention -> flash-attention
        assert tags.find("section", id=anchor) or f'id="{anchor}"' in \
            (html / "book" / "reader" / "exercises.html").read_text(encoding="utf-8"), anchor
    assert "../../llmcourse-exercises.zip" in hrefs
    with zipfile.ZipFile(html / "llmcourse-exercises.zip") as zf:
        assert any(n.endswith("attention/attention.ipynb") for n in zf.namelist())
