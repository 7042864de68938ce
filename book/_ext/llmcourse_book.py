"""The reader's side of the llmcourse book, as a Sphinx extension loaded by ``_config.yml``.

It lives beside the book (``sphinx: local_extensions``) rather than in the ``llmcourse``
package: it is tooling of the book build, it imports Sphinx and docutils (which the package
learners import must not need), and it reads the package's source files without importing
them (building the map imports no torch).

What it adds, all generated at build time into the build's output (never into the source
tree, so ``make book`` and a ``--path-output`` build behave the same):

1. **MathJax offline.** MathJax 3, from the PyPI package ``sphinx-mathjax-offline``, is
   copied into ``_static/mathjax/``; ``_config.yml`` points ``mathjax_path`` at it, so math
   renders with no network.
2. **Notebooks.** Every notebook page (a MyST notebook in ``book/``) gets
   ``_sources/<page>.ipynb``, made from its MyST source by jupytext, offered by the page's
   download button; the Binder and Colab launch buttons open the same ``.ipynb`` on the
   repository's notebooks branch (filled by ``.github/workflows/book.yml``).
3. **Directives** for the reader's guide: ``course-glossary`` (a Sphinx glossary in English,
   Japanese and Chinese), ``paper-map`` (paper -> chapter -> code -> exercise, from the table of
   contents, the modules' headers and the exercises) and ``exercise-list`` (each assignment
   with its chapter, parts, points and download).
4. ``llmcourse-exercises.zip``: the released exercises, at the site's root.

The functions above the Sphinx part are plain Python, shared with ``tests/test_site.py``.
"""
from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

BOOK_EXT_VERSION = "1"
MATHJAX_DIST = "sphinx-mathjax-offline"
# What tex-mml-chtml.js (Sphinx's default component) loads: the combined component, the TeX
# and MathML extensions it autoloads, the CHTML fonts, the menu, the accessibility components
# and their speech rules. The other combined components (SVG output) are not copied.
MATHJAX_PARTS = ("tex-mml-chtml.js", "input/tex/", "input/mml/", "output/chtml/", "a11y/", "ui/", "adaptors/", "sre/")
ZIP_NAME = "llmcourse-exercises.zip"
CSS = """/* llmcourse_book: the glossary's language tags */
dl.course-glossary dt.course-term-translation { font-weight: 500; }
dl.course-glossary .course-term-lang { font-size: 0.7em; font-weight: normal; margin-left: 0.6em;
  padding: 0 0.35em; border: 1px solid var(--pst-color-border, #ccc); border-radius: 0.25em;
  color: var(--pst-color-text-muted, #666); }
"""
CHAPTER_RE = re.compile(r"^book/part\d+/(\d\d)_[\w-]+$")


# --------------------------------------------------------------------------- plain helpers

def chapter_docs(docnames) -> dict[int, str]:
    """Chapter number -> docname for the written chapters (``book/partN/NN_name``)."""
    out = {}
    for doc in docnames:
        m = CHAPTER_RE.match(doc)
        if m:
            out[int(m.group(1))] = doc
    return dict(sorted(out.items()))


def toc_docnames(root: Path) -> list[str]:
    """Every file the table of contents lists, in order."""
    text = (root / "_toc.yml").read_text(encoding="utf-8")
    return re.findall(r"^\s*-?\s*(?:file|root):\s*([^\s#]+)", text, re.M)


def _norm(text: str) -> str:
    text = re.sub(r"\\[a-zA-Z]+\s*", " ", text)          # LaTeX commands in bib titles
    return " " + re.sub(r"[^a-z0-9]+", " ", text.lower()).strip() + " "


def read_bib(path: Path) -> dict[str, dict]:
    """Key -> {title, eprint, authors, year} of a BibTeX file (pybtex, as sphinxcontrib-bibtex)."""
    from pybtex.database import parse_file

    data = parse_file(str(path))
    out = {}
    for key, entry in data.entries.items():
        f = entry.fields
        authors = [p.last_names[0] if p.last_names else str(p) for p in entry.persons.get("author", [])]
        out[key] = {"title": str(f.get("title", "")).replace("{", "").replace("}", ""),
                    "eprint": str(f.get("eprint", "")), "year": str(f.get("year", "")),
                    "authors": [a.replace("{", "").replace("}", "") for a in authors]}
    return out


def paper_markers(bib: dict, keys) -> list[str]:
    """Normalised strings whose presence in a text means it cites one of these papers."""
    marks = []
    for key in keys:
        e = bib.get(key, {})
        if e.get("eprint"):
            marks.append(_norm(e["eprint"]))
        if len(e.get("title", "")) >= 20:                 # a short title would match by accident
            marks.append(_norm(e["title"].split(":")[0] if len(e["title"].split(":")[0]) >= 20 else e["title"]))
    return marks


def cites(text: str, markers) -> bool:
    t = _norm(text)
    return any(m in t for m in markers)


@dataclass
class Member:
    name: str
    doc: str


@dataclass
class Module:
    name: str                 # llmcourse.rl.core
    path: Path
    doc: str
    members: list[Member] = field(default_factory=list)


def scan_package(package_dir: Path) -> list[Module]:
    """Every module of the package but the grading engine and the command line, with its header
    (module docstring) and its public top-level functions and classes, read with ``ast``."""
    mods = []
    for path in sorted(package_dir.rglob("*.py")):
        rel = path.relative_to(package_dir.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        name = ".".join(parts)
        if name.startswith(("llmcourse.grading", "llmcourse.cli")) or "__pycache__" in path.parts:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        members = [Member(n.name, ast.get_docstring(n) or "") for n in tree.body
                   if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and not n.name.startswith("_")]
        mods.append(Module(name, path, ast.get_docstring(tree) or "", members))
    return mods


_IMPORT_RE = re.compile(r"^\s*from\s+(llmcourse(?:\.\w+)*)\s+import\s+(\([^)]*\)|[^\n]+)", re.M)
_INCLUDE_RE = re.compile(r"```\{literalinclude\}\s+(\S*llmcourse/\S+\.py)\s*\n((?::[^\n]*\n)*)")


def chapter_uses(md_text: str, modules: list[Module]) -> dict[str, set[str]]:
    """Module name -> names a chapter imports from ``llmcourse`` or shows with
    ``literalinclude :pyobject:``. A name imported from a package is put under the module that
    defines it."""
    defined = {}
    for mod in modules:
        for m in mod.members:
            defined.setdefault(m.name, []).append(mod.name)
    used: dict[str, set[str]] = {}

    def put(modname: str, name: str):
        homes = [h for h in defined.get(name, []) if h == modname or h.startswith(modname + ".")]
        for home in homes[:1]:
            used.setdefault(home, set()).add(name)

    for m in _IMPORT_RE.finditer(md_text):
        for name in re.split(r"[\s,()]+", m.group(2).split("#")[0]):
            if name and name != "as":
                put(m.group(1), name)
    for m in _INCLUDE_RE.finditer(md_text):
        modname = "llmcourse." + m.group(1).split("llmcourse/", 1)[1][:-3].replace("/", ".")
        modname = modname.removesuffix(".__init__")
        obj = re.search(r":pyobject:\s*(\w+)", m.group(2))
        if obj:
            put(modname, obj.group(1))
    return used


@dataclass
class Part:
    title: str
    names: list[str]
    points: float


@dataclass
class Assignment:
    name: str
    title: str
    intro: str
    notebook: Path
    parts: list[Part]

    @property
    def points(self) -> float:
        return sum(p.points for p in self.parts)


def scan_assignments(exercises_dir: Path) -> list[Assignment]:
    """The released assignments (``exercises/<name>/<name>.ipynb``): title, first cell, and the
    parts (``## `` headings) with the names the learner writes and the points of their tests."""
    out = []
    if not exercises_dir.is_dir():
        return out
    for nb_path in sorted(exercises_dir.glob("*/*.ipynb")):
        if nb_path.stem != nb_path.parent.name:
            continue
        nb = json.loads(nb_path.read_text(encoding="utf-8"))
        title, intro, parts = nb_path.stem, "", []
        for cell in nb["cells"]:
            src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            meta = cell.get("metadata", {}).get("nbgrader", {})
            if cell["cell_type"] == "markdown":
                head = src.lstrip().splitlines()[0] if src.strip() else ""
                if head.startswith("# ") and not intro:
                    title, intro = head[2:].strip(), src
                elif head.startswith("## "):
                    parts.append(Part(head[3:].strip(), [], 0.0))
            elif parts and meta.get("solution"):
                try:
                    tree = ast.parse(src)
                except SyntaxError:
                    continue
                parts[-1].names += [n.name for n in tree.body
                                    if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and not n.name.startswith("_")]
            elif parts and meta.get("grade") and meta.get("points"):
                parts[-1].points += float(meta["points"])
        out.append(Assignment(nb_path.stem, title.removeprefix("Exercise:").strip(), intro, nb_path, parts))
    return out


@dataclass
class MapRow:
    chapter: int
    short: str
    keys: list[str]
    docname: str | None
    code: list[tuple[str, list[str]]]       # (module, names)
    exercises: list[str]


def load_yaml(path: Path):
    import yaml

    return yaml.safe_load(path.read_text(encoding="utf-8"))


def build_map(root: Path, papers_file: Path, docnames) -> tuple[list[dict], list[MapRow]]:
    """The rows of the paper -> code -> exercise map, and the parts they fall in."""
    spec = load_yaml(papers_file)
    bib = read_bib(root / "book" / "references.bib")
    modules = scan_package(root / "llmcourse")
    assignments = scan_assignments(root / "exercises")
    chapters = chapter_docs(docnames)
    rows = []
    for paper in spec["papers"]:
        n, keys = paper["chapter"], paper["keys"]
        marks = paper_markers(bib, keys)
        doc = chapters.get(n)
        used = chapter_uses((root / f"{doc}.md").read_text(encoding="utf-8"), modules) if doc else {}
        code = []
        for mod in modules:
            named = [m.name for m in mod.members if cites(m.doc, marks)]
            if not (cites(mod.doc, marks) or named):
                continue
            names = [m.name for m in mod.members if m.name in named or m.name in used.get(mod.name, ())]
            code.append((mod.name, names))
        exercises = [a.name for a in assignments if cites(a.intro, marks)]
        rows.append(MapRow(n, paper["short"], keys, doc, code, exercises))
    return spec["parts"], rows


def glossary_terms(entry: dict) -> list[tuple[str, str]]:
    """(language, term) of one glossary entry: English, Japanese, Chinese. A Chinese word written
    like a Japanese one is given once, as ``ja+zh``; a word written like the English one is dropped."""
    def words(lang):
        w = entry.get(lang) or []
        return [str(x).strip() for x in ([w] if isinstance(w, str) else w)]

    out = [("en", w) for w in words("en")]
    seen = {w.casefold() for w in words("en")}
    for w in words("ja"):
        if w.casefold() not in seen:
            out.append(("ja", w))
            seen.add(w.casefold())
    for w in words("zh"):
        key = w.casefold()
        if key in seen:
            out = [("ja+zh" if (lang == "ja" and t.casefold() == key) else lang, t) for lang, t in out]
        else:
            out.append(("zh", w))
            seen.add(key)
    return out


def notebook_from_myst(md_path: Path, repo_url: str, branch: str, docname: str):
    """The chapter as a Jupyter notebook (jupytext), with a first cell that installs the course's
    package where it is missing (Colab, Binder) and deterministic cell ids."""
    import jupytext
    import nbformat

    nb = jupytext.read(md_path)
    nb.metadata.pop("jupytext", None)
    nb.metadata.setdefault("language_info", {"name": "python"})
    note = nbformat.v4.new_markdown_cell(
        f"*This notebook is generated from the book's MyST source `{docname}.md`: the book's page "
        "renders its citations, cross-references and included code, which appear here as markup. "
        "The code cells run as they do when the book is built.*")
    setup = nbformat.v4.new_code_cell(
        "# Set-up where the course is not installed (Colab, Binder): install its package.\n"
        "import importlib.util\n"
        "if importlib.util.find_spec(\"llmcourse\") is None:\n"
        f"    %pip install -q \"llmcourse @ git+{repo_url.rstrip('/')}@{branch}\"")
    setup.metadata["tags"] = ["setup"]
    nb.cells[:0] = [note, setup]
    nb.nbformat, nb.nbformat_minor = 4, max(int(nb.get("nbformat_minor", 0)), 5)   # cell ids
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"c{i:03d}-" + hashlib.sha1(cell.source.encode()).hexdigest()[:8]
    nbformat.validate(nb)
    return nb


def write_exercises_zip(exercises_dir: Path, dest: Path) -> list[str]:
    """``exercises/`` as a zip (fixed timestamps, so the same release gives the same bytes)."""
    names = []
    files = sorted(p for p in exercises_dir.rglob("*") if p.is_file()
                   and ".ipynb_checkpoints" not in p.parts and "__pycache__" not in p.parts)
    tmp = dest.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in files:
            arc = "llmcourse-exercises/" + p.relative_to(exercises_dir).as_posix()
            info = zipfile.ZipInfo(arc, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, p.read_bytes())
            names.append(arc)
    os.replace(tmp, dest)
    return names


def mathjax_source() -> Path:
    """The ``mathjax`` folder the PyPI package ``sphinx-mathjax-offline`` ships (MathJax 3.2.2)."""
    dist = importlib.metadata.distribution(MATHJAX_DIST)
    for f in dist.files or []:
        if f.as_posix().endswith("static/mathjax/tex-mml-chtml.js"):
            return Path(f.locate()).parent
    raise FileNotFoundError(f"{MATHJAX_DIST} is installed but has no static/mathjax/tex-mml-chtml.js")


def copy_mathjax(dest: Path) -> int:
    src = mathjax_source()
    copied = 0
    for p in src.rglob("*"):
        rel = p.relative_to(src).as_posix()
        if not p.is_file() or not any(rel == part or rel.startswith(part) for part in MATHJAX_PARTS):
            continue
        out = dest / rel
        st = p.stat()
        if out.exists() and out.stat().st_size == st.st_size and int(out.stat().st_mtime) == int(st.st_mtime):
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, out)
        copied += 1
    return copied


def repo_parts(url: str) -> tuple[str, str]:
    m = re.match(r"https://github\.com/([^/]+)/([^/#?]+?)(?:\.git)?/?$", url or "")
    if not m:
        raise ValueError(f"repository url {url!r} is not https://github.com/OWNER/NAME")
    return m.group(1), m.group(2)


def launch_urls(repo_url: str, branch: str, path: str, binderhub: str, colab: str,
                interface: str = "lab") -> dict[str, str]:
    """Binder and Colab links that open the notebook ``path`` (``.ipynb``) on ``branch``."""
    owner, name = repo_parts(repo_url)
    ui = {"classic": "tree", "jupyterlab": "lab/tree", "lab": "lab/tree"}[interface]
    out = {}
    if binderhub:
        out["Binder"] = f"{binderhub.rstrip('/')}/v2/gh/{owner}/{name}/{branch}?urlpath={ui}/{path}"
    if colab:
        out["Colab"] = f"{colab.rstrip('/')}/github/{owner}/{name}/blob/{branch}/{path}"
    return out


# --------------------------------------------------------------------------- Sphinx side

from docutils import nodes  # noqa: E402
from sphinx import addnodes  # noqa: E402
from sphinx.domains.std import make_glossary_term  # noqa: E402
from sphinx.util import logging  # noqa: E402
from sphinx.util.docutils import SphinxDirective  # noqa: E402

LANG_LABEL = {"ja": "日本語", "zh": "中文", "ja+zh": "日本語・中文"}
LANG_TAG = {"ja": "ja", "zh": "zh-TW", "ja+zh": "ja"}   # docutils knows zh-TW (Traditional)


def _generated(env) -> set:
    if not hasattr(env, "llmcourse_generated"):
        env.llmcourse_generated = set()
    return env.llmcourse_generated


class _Generated(SphinxDirective):
    """A directive whose output depends on files outside its page (the table of contents, the
    package, the exercises): its page is re-read at every build (``_outdated``), which is cheap."""

    def note(self):
        _generated(self.env).add(self.env.docname)

    @property
    def root(self) -> Path:
        return Path(self.env.srcdir)

    def chapter_ref(self, n: int, docname: str | None, title: bool = False) -> str:
        """A link to chapter ``n`` ("Chapter n", or its title), or plain text until it is written."""
        if docname:
            return f"{{doc}}`/{docname}`" if title else f"{{doc}}`Chapter {n} </{docname}>`"
        return "to come" if title else f"chapter {n} (not yet written)"

    def github(self, relpath: str) -> str:
        url = self.config.html_theme_options.get("repository_url", "").rstrip("/")
        branch = self.config.html_theme_options.get("repository_branch", "main")
        return f"{url}/blob/{branch}/{relpath}" if url else ""


class CourseGlossary(_Generated):
    """``{course-glossary} glossary.yml``: the entries of a YAML file as a Sphinx glossary."""

    required_arguments = 1

    def run(self):
        rel, path = self.env.relfn2path(self.arguments[0], self.env.docname)
        self.note()
        data = load_yaml(Path(path))
        chapters = chapter_docs(self.env.found_docs)
        gloss = addnodes.glossary()
        gloss["sorted"] = False                   # sorted here, by the English term
        dlist = nodes.definition_list(classes=["glossary", "course-glossary"])
        gloss += dlist
        entries = sorted(data["terms"], key=lambda e: str(e["en"] if isinstance(e["en"], str) else e["en"][0]).casefold())
        for entry in entries:
            item = nodes.definition_list_item()
            for lang, word in glossary_terms(entry):
                term = make_glossary_term(self.env, [nodes.Text(word)], None, self.env.docname,
                                          self.lineno, None, self.state.document)
                if lang != "en":
                    term["classes"] += [f"language-{LANG_TAG[lang]}", "course-term-translation"]
                    term += nodes.inline("", LANG_LABEL[lang], classes=["course-term-lang"])
                item += term
            n = int(entry["chapter"])
            text = str(entry["def"]).strip() + " Defined in " + self.chapter_ref(n, chapters.get(n)) + "."
            definition = nodes.definition("", *self.parse_text_to_nodes(text))
            item += definition
            dlist += item
        return [gloss]


class PaperMap(_Generated):
    """``{paper-map} papers.yml``: one table per part, a row per paper."""

    required_arguments = 1

    def run(self):
        rel, path = self.env.relfn2path(self.arguments[0], self.env.docname)
        parts, rows = build_map(self.root, Path(path), self.env.found_docs)
        self.note()
        exercises_doc = next((d for d in self.env.found_docs if d.endswith("/exercises") and d.startswith("book/")), None)
        lines = []
        for part in parts:
            lo, hi = part["chapters"]
            lines += [f"## Part {part['part']}: {part['caption']}", "",
                      "| # | paper | chapter | code in `llmcourse` | exercise |", "|---|---|---|---|---|"]
            for r in rows:
                if not lo <= r.chapter <= hi:
                    continue
                cite = "{cite:p}`" + ",".join(r.keys) + "`"
                chapter = self.chapter_ref(r.chapter, r.docname, title=True)
                code = "<br>".join(self._code(mod, names) for mod, names in r.code) or "–"
                ex = ", ".join(f"{{ref}}`{a} <exercise-{a}>`" if exercises_doc else f"`{a}`" for a in r.exercises) or "–"
                lines.append(f"| {r.chapter} | {r.short} {cite} | {chapter} | {code} | {ex} |")
            lines.append("")
        return self.parse_text_to_nodes("\n".join(lines), allow_section_headings=True)

    def _code(self, module: str, names: list[str]) -> str:
        path = module.replace(".", "/")
        rel = f"{path}/__init__.py" if (self.root / path).is_dir() else f"{path}.py"
        url = self.github(rel)
        head = f"[`{module}`]({url})" if url else f"`{module}`"
        return head + (": " + ", ".join(f"`{n}`" for n in names) if names else "")


class ExerciseList(_Generated):
    """``{exercise-list}``: each released assignment with its chapters, parts, points, download."""

    def run(self):
        root = self.root
        spec = load_yaml(root / "book" / "reader" / "papers.yml")
        bib = read_bib(root / "book" / "references.bib")
        chapters = chapter_docs(self.env.found_docs)
        assignments = scan_assignments(root / "exercises")
        self.note()
        lines = []
        for a in assignments:
            chs = [p["chapter"] for p in spec["papers"] if cites(a.intro, paper_markers(bib, p["keys"]))]
            chs = list(dict.fromkeys(chs))
            rel = a.notebook.relative_to(root).as_posix()
            lines += [f"(exercise-{a.name})=", f"## `{a.name}`: {a.title}", "",
                      "Goes with " + (" and ".join(
                          f"{{doc}}`/{chapters[n]}` (chapter {n})" if n in chapters else f"chapter {n} (not yet written)"
                          for n in chs) or "no chapter yet")
                      + f". Download the notebook: {{download}}`{a.notebook.name} </{rel}>`;"
                      + f" check your work with `llmcourse check {a.notebook.name}`.", "",
                      "| part | you write | points |", "|---|---|---|"]
            for p in a.parts:
                names = ", ".join(f"`{n}`" for n in p.names) or "–"
                pts = f"{p.points:g}" if p.points else "not graded"
                lines.append(f"| {p.title} | {names} | {pts} |")
            lines += [f"| **total** | | **{a.points:g}** |", ""]
        if not assignments:
            lines.append("No exercise is released yet.")
        out = self.parse_text_to_nodes("\n".join(lines), allow_section_headings=True)
        return out


class ExercisesZip(_Generated):
    """``{exercises-zip}``: a link to ``llmcourse-exercises.zip`` at the site's root."""

    def run(self):
        self.note()
        depth = self.env.docname.count("/")
        para = nodes.paragraph()
        para += nodes.reference("", ZIP_NAME, refuri="../" * depth + ZIP_NAME, classes=["course-zip"])
        para += nodes.Text(": every released assignment, in one archive.")
        return [para]


def _outdated(app, env, added, changed, removed):
    return sorted(_generated(env) & env.found_docs)


def _purge(app, env, docname):
    _generated(env).discard(docname)


def _merge(app, env, docnames, other):
    _generated(env).update(getattr(other, "llmcourse_generated", set()))


def _config_inited(app, config):
    override = os.environ.get("LLMCOURSE_REPOSITORY_URL")
    if override:
        config.html_theme_options["repository_url"] = override
    # pydata-sphinx-theme starts a first visit in mode "" and logs "Got invalid theme mode" as a
    # console error (seen by the browser test); "auto" is what it falls back to anyway.
    config.html_context.setdefault("default_mode", "auto")


def _dedupe_scripts(app, pagename, templatename, context, doctree):
    """Jupyter Book 1 pages carry sphinx-thebe's inline configuration twice (Sphinx registers it
    once with the file name None and once with ""), and the second ``const THEBE_JS_URL`` is a
    JavaScript error on every page (seen by the browser test): keep the first of identical
    scripts."""
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, out = set(), []
    for js in scripts:
        key = (getattr(js, "filename", str(js)) or "", tuple(sorted((k, str(v)) for k, v in getattr(js, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            out.append(js)
    if len(out) != len(scripts):
        context["script_files"] = out


def _builder_inited(app):
    if app.builder.format != "html":
        return
    static = Path(app.outdir) / "_static"
    n = copy_mathjax(static / "mathjax")
    css = static / "llmcourse-book.css"
    if not css.exists() or css.read_text(encoding="utf-8") != CSS:
        css.write_text(CSS, encoding="utf-8")
    logging.getLogger(__name__).info(f"llmcourse_book: MathJax from {MATHJAX_DIST} ({n} files copied)")


def _is_notebook(app, pagename: str) -> bool:
    return pagename in app.env.found_docs and "kernelspec" in app.env.metadata.get(pagename, {})


def _page_context(app, pagename, templatename, context, doctree):
    """Notebook pages: write ``_sources/<page>.ipynb`` (jupytext), make the download button
    offer it and point the launch buttons at the same file on the notebooks branch."""
    if app.builder.format != "html" or not _is_notebook(app, pagename):
        return
    opts = app.config.html_theme_options
    repo_url = opts.get("repository_url", "")
    src = Path(app.env.doc2path(pagename))
    if src.suffix == ".md":
        nb = notebook_from_myst(src, repo_url, opts.get("repository_branch", "main"), pagename)
        out = Path(app.outdir) / "_sources" / f"{pagename}.ipynb"
        out.parent.mkdir(parents=True, exist_ok=True)
        import nbformat

        text = nbformat.writes(nb) + "\n"
        if not out.exists() or out.read_text(encoding="utf-8") != text:
            out.write_text(text, encoding="utf-8")
    context["ipynb_source"] = f"{pagename}.ipynb"
    buttons = context.get("header_buttons", [])
    downloads = next((b for b in buttons if b.get("label") == "download-buttons"), None)
    if downloads is not None and not any(b.get("label") == "download-notebook-button" for b in downloads["buttons"]):
        downloads["buttons"].insert(0, {
            "type": "link", "url": f"{context['pathto']('_sources', 1)}/{pagename}.ipynb", "text": ".ipynb",
            "icon": "fas fa-code", "tooltip": "Download notebook file", "label": "download-notebook-button"})
    launch = next((b for b in buttons if b.get("label") == "launch-buttons"), None)
    cfg = opts.get("launch_buttons", {})
    if launch is not None and repo_url:
        urls = launch_urls(repo_url, app.config.llmcourse_notebooks_branch, f"{pagename}.ipynb",
                           cfg.get("binderhub_url", ""), cfg.get("colab_url", ""),
                           cfg.get("notebook_interface", "jupyterlab"))
        for b in launch["buttons"]:
            if b.get("text") in urls:
                b["url"] = urls[b["text"]]


def _build_finished(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    exercises = Path(app.srcdir) / "exercises"
    if exercises.is_dir():
        write_exercises_zip(exercises, Path(app.outdir) / ZIP_NAME)


def setup(app):
    app.add_config_value("llmcourse_notebooks_branch", "notebooks", "html")
    app.add_directive("course-glossary", CourseGlossary)
    app.add_directive("paper-map", PaperMap)
    app.add_directive("exercise-list", ExerciseList)
    app.add_directive("exercises-zip", ExercisesZip)
    app.connect("config-inited", _config_inited)
    app.connect("builder-inited", _builder_inited)
    app.connect("env-get-outdated", _outdated)
    app.connect("env-purge-doc", _purge)
    app.connect("env-merge-info", _merge)
    # after sphinx-book-theme's launch and download buttons (priority 501)
    app.connect("html-page-context", _page_context, priority=600)
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    app.connect("build-finished", _build_finished)
    app.add_css_file("llmcourse-book.css")
    return {"version": BOOK_EXT_VERSION, "parallel_read_safe": True, "parallel_write_safe": True,
            "env_version": 1}
