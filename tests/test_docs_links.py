"""Every internal link of the documentation lands where it says: no Sphinx build needed.

Checked in ``README.md`` and ``docs/**/*.md`` (the tutorials' sources are the notebooks in ``tutorials/``, which
``docs/conf.py`` mirrors into ``docs/tutorials/``):

- Markdown links and images to local files (``[text](../configs/her2st.toml)``), with their ``#anchor``;
- ``[text](#anchor)`` within a page, and ``{ref}`label``` / ``{doc}`page``` roles;
- ``toctree`` entries;
- the module pages of the API reference: each public module's ``.. module::`` directive comes first under the
  page title, so that its anchor (``#module-sepal_tl.pp``, where the general index and ``{mod}`` links point) is
  the page's own; a paragraph in between leaves the anchor on an empty target that the HTML does not show.

Anchors are what MyST generates: explicit ``(label)=`` targets, and GitHub-style slugs of the headings down to
``myst_heading_anchors`` in ``docs/conf.py``.
"""

from __future__ import annotations

import bisect
import itertools
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
TUTORIALS = ROOT / "tutorials"  # mirrored into docs/tutorials/ by docs/conf.py at build time
PUBLIC_MODULES = ("io", "datasets", "pp", "tl", "pl")

FENCE = re.compile(r"^(\s*)(`{3,}|~{3,}|:{3,})\s*(\{([\w-]+)\})?(.*)$")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
LABEL = re.compile(r"^\(([^()\s]+)\)=\s*$")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
ROLE = re.compile(r"\{(ref|doc)\}`([^`]+)`")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def heading_depth() -> int:
    """``myst_heading_anchors`` from docs/conf.py (0 when unset: no heading anchors)."""
    match = re.search(r"^myst_heading_anchors\s*=\s*(\d+)", (DOCS / "conf.py").read_text(), re.MULTILINE)
    return int(match.group(1)) if match else 0


def slugify(title: str) -> str:
    """MyST's default (GitHub) slug of a heading's text."""
    text = re.sub(r"\{[\w:-]+\}`([^`]*)`", r"\1", title)  # roles: their text
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # links: their text
    text = re.sub(r"[`*_]{1,2}(?=\S)|(?<=\S)[`*_]{1,2}", "", text)  # inline markup
    return re.sub(r"[^\w\u4e00-\u9fff\- ]", "", text.lower().replace(" ", "-"))


def prose_lines(text: str) -> tuple[list[tuple[int, str]], list[tuple[int, str, str, list[str]]]]:
    """Split Markdown into prose lines (outside code fences) and directives ``(line, name, argument, body)``."""
    prose, directives = [], []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            prose.append((i + 1, lines[i]))
            i += 1
            continue
        fence, name, argument, start = match.group(2), match.group(4), match.group(5).strip(), i
        i += 1
        body = []
        while i < len(lines) and lines[i].strip() != fence:
            body.append(lines[i])
            i += 1
        i += 1
        if name:
            directives.append((start + 1, name, argument, body))
            if name not in {"eval-rst", "code-block", "code", "math", "toctree", "bibliography"}:
                prose += [(start + 2 + k, line) for k, line in enumerate(body) if not line.startswith(":")]
    return prose, directives


class Page:
    """One Markdown page (or a notebook's Markdown cells): its anchors, links and directives.

    ``folder`` is where the page is built, which relative links start from: a tutorial's is docs/tutorials/.
    """

    def __init__(self, path: Path, text: str, depth: int, folder: Path | None = None) -> None:
        self.path = path
        self.folder = folder or path.parent
        self.prose, self.directives = prose_lines(text)
        self.labels = {m.group(1) for _, line in self.prose if (m := LABEL.match(line))}
        self.slugs: set[str] = set()
        for _, line in self.prose:
            match = HEADING.match(line)
            if match and len(match.group(1)) <= depth:
                slug = base = slugify(match.group(2))
                k = 0
                while slug in self.slugs:  # MyST numbers repeated headings: a, a-1, a-2
                    k += 1
                    slug = f"{base}-{k}"
                self.slugs.add(slug)

    @property
    def anchors(self) -> set[str]:
        return self.labels | self.slugs


def read_page(path: Path, depth: int) -> Page:
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text())["cells"]
        text = "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
        return Page(path, text, depth, folder=DOCS / "tutorials")
    return Page(path, path.read_text(), depth)


def source_of(path: Path) -> Path:
    """The file a docs path stands for: docs/tutorials/X is the mirror of tutorials/X."""
    if path.is_relative_to(DOCS / "tutorials"):
        return TUTORIALS / path.relative_to(DOCS / "tutorials")
    return path


def find_doc(folder: Path, name: str) -> Path | None:
    """The source file of the Sphinx document ``name`` written in a page of ``folder`` (``/name``: from docs/)."""
    base = DOCS / name.lstrip("/") if name.startswith("/") else folder / name
    for suffix in ("", ".md", ".ipynb", ".rst"):
        candidate = source_of(Path(str(base) + suffix).resolve())
        if candidate.is_file():
            return candidate
    return None


@pytest.fixture(scope="module")
def site() -> dict[Path, Page]:
    depth = heading_depth()
    paths = [ROOT / "README.md", *sorted(DOCS.rglob("*.md")), *sorted(TUTORIALS.glob("*.ipynb"))]
    skip = {DOCS / "_build", DOCS / "generated", DOCS / "tutorials"}
    return {p.resolve(): read_page(p, depth) for p in paths if not any(p.is_relative_to(s) for s in skip)}


def all_labels(site: dict[Path, Page]) -> set[str]:
    return set().union(*(page.labels for page in site.values()))


def broken_links(page: Page, site: dict[Path, Page]) -> list[str]:
    """Problems with one page's links, as ``file:line: message``."""
    problems = []
    where = page.path.relative_to(ROOT)
    labels = all_labels(site)
    text = "\n".join(line for _, line in page.prose)  # links and roles may span lines
    starts = list(itertools.accumulate((len(line) + 1 for _, line in page.prose), initial=0))

    def line_of(match: re.Match) -> int:
        return page.prose[bisect.bisect_right(starts, match.start()) - 1][0]

    for match in LINK.finditer(text):
        target = match.group(1)
        if SCHEME.match(target):
            continue
        path, _, anchor = target.partition("#")
        linked = page
        if path:
            file = source_of((page.folder / path).resolve())
            if not file.exists():
                problems.append(f"{where}:{line_of(match)}: {target!r}: no file {file}")
                continue
            markdown = file.suffix in {".md", ".ipynb"}
            linked = (site.get(file) or read_page(file, heading_depth())) if markdown else None
        if anchor and linked is not None and anchor not in linked.anchors:
            name = linked.path.name
            problems.append(f"{where}:{line_of(match)}: {target!r}: no heading or label {anchor!r} in {name}")
    for match in ROLE.finditer(text):
        role, content = match.groups()
        target = re.search(r"<([^<>]+)>\s*$", content)
        target = target.group(1) if target else content.strip()
        if role == "ref" and target not in labels:
            problems.append(f"{where}:{line_of(match)}: {{ref}}`{target}`: no such label")
        if role == "doc" and find_doc(page.folder, target) is None:
            problems.append(f"{where}:{line_of(match)}: {{doc}}`{target}`: no such page")
    for lineno, name, argument, body in page.directives:
        if name in {"figure", "image", "include"} and not source_of((page.folder / argument).resolve()).is_file():
            problems.append(f"{where}:{lineno}: {name} {argument!r}: no such file")
        if name != "toctree":
            continue
        for entry in body:
            entry = entry.strip()
            if not entry or entry.startswith(":") or SCHEME.match(entry):
                continue
            entry = re.sub(r"^.*<([^<>]+)>$", r"\1", entry)
            if find_doc(page.folder, entry) is None:
                problems.append(f"{where}:{lineno}: toctree entry {entry!r}: no such page")
    return problems


def test_every_internal_link_resolves(site):
    problems = [problem for page in site.values() for problem in broken_links(page, site)]
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_readme_is_the_landing_page():
    index = (DOCS / "index.md").read_text()
    assert "```{include} ../README.md" in index and ":relative-docs: docs/" in index


def test_readme_code_fits_the_page():
    """Code in the README (the landing page) is read without scrolling: lines of at most 88 characters."""
    long, in_code = [], False
    for lineno, line in enumerate((ROOT / "README.md").read_text().splitlines(), start=1):
        if line.startswith("```"):
            in_code = not in_code
        elif in_code and len(line) > 88:
            long.append(f"README.md:{lineno} ({len(line)} characters)")
    assert not long, "code lines over 88 characters: " + ", ".join(long)


@pytest.mark.parametrize("module", PUBLIC_MODULES)
def test_module_anchor_heads_its_api_page(module):
    directive = f".. module:: sepal_tl.{module}"
    pages = [p for p in sorted((DOCS / "api").glob("*.md")) if directive in p.read_text().splitlines()]
    assert len(pages) == 1, f"'{directive}' must be on exactly one page of docs/api/, found {pages}"
    lines = [line.strip() for line in pages[0].read_text().splitlines() if line.strip()]
    assert HEADING.match(lines[0]) and lines[1:3] == ["```{eval-rst}", directive], (
        f"{pages[0].name}: '{directive}' must come right after the page title, in the first block; text before it "
        "leaves the module's anchor on an empty target, and index links to the module land at the top of the page"
    )


# -- the checker itself -------------------------------------------------------------------------------------


def test_slugs_follow_myst():
    assert slugify("Moran's I on the lattice graph") == "morans-i-on-the-lattice-graph"
    assert slugify("The `her2st` and `synthetic` presets are ours") == "the-her2st-and-synthetic-presets-are-ours"
    assert slugify('A "center" pooling option') == "a-center-pooling-option"
    assert slugify("Reading data: `io`") == "reading-data-io"


def test_checker_finds_broken_anchors_and_pages():
    page_path = DOCS / "_probe.md"  # never written: the text is parsed in memory
    text = (
        "# Probe\n\n(real-label)=\n## Real section\n\n"
        "[ok](#real-section) [ok](#real-label) [bad](#missing-section) [bad file](nowhere.md)\n"
        "{ref}`real-label` {ref}`missing-label` {doc}`method` {doc}`not-a-page`\n\n"
        "```{toctree}\n:hidden: true\n\nmethod\nnot-a-page\n```\n\n```{figure} _static/no-such.png\n:alt: x\n```\n"
    )
    page = Page(page_path, text, depth=3)
    problems = broken_links(page, {page_path: page})
    messages = " | ".join(problems)
    assert len(problems) == 6, messages
    for bad in ("missing-section", "nowhere.md", "missing-label", "`not-a-page`", "entry 'not-a-page'", "no-such.png"):
        assert bad in messages
