"""Sphinx configuration of the nft_pyg documentation.

Build (warnings are errors, as ``make test`` does)::

    sphinx-build -W -b html docs docs/_build/html

The tutorials (``tutorials/*.py``, jupytext "percent" scripts) are rendered
as pages without running them: each stub ``docs/tutorials/<name>.md`` holds a
line ``% tutorial: <name>.py`` that the ``source-read`` hook below replaces
by the script, markdown cells as text and code cells as code blocks.
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from sphinx.domains.python import PyClasslike
from sphinx.util import logging

logger = logging.getLogger(__name__)
DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
TUTORIALS = ROOT / "tutorials"
sys.path.insert(0, str(ROOT))
# Importing torch_geometric / escnn during autodoc must not try to open a display.
os.environ.setdefault("MPLBACKEND", "Agg")

project = "nft_pyg"
author = "the nft_pyg authors"
copyright = "2026, the nft_pyg authors"
try:
    from nft_pyg import __version__ as release
except ImportError:  # the API pages will then fail loudly; the rest still builds
    release = "0.1.0"
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]
nitpicky = False

html_theme = "furo"
html_title = f"nft_pyg {release}"

# --- MyST ----------------------------------------------------------------
# dollarmath: $...$ in the markdown pages; heading anchors let pages link to
# sections as ``page.md#section-title``.
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3

# --- autodoc / napoleon --------------------------------------------------
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True}
# Type hints go into the description, where an unresolvable hint is plain
# text; in the signature they would be cross-references to torch / PyG types.
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
# "Attributes:" sections as :ivar: fields: a NamedTuple / dataclass field is then
# not described twice (once by napoleon, once by autodoc as a member).
napoleon_use_ivar = True
# PyG-style "Shapes:" sections (input / output shapes of an operator).
napoleon_custom_sections = [("Shapes", "notes_style")]

# --- warnings ----------------------------------------------------------------
# None is suppressed: the build passes -W as is. (Duplicate descriptions of
# re-exported classes are avoided by ClassCanonicalOnce below, not hidden.)
suppress_warnings: list[str] = []


# --- tutorials as pages -------------------------------------------------
_MARKER = re.compile(r"^% tutorial: (?P<script>[\w.-]+\.py)\s*$", re.MULTILINE)
_CELL = re.compile(r"^# %%(?P<rest>.*)$")


def percent_script_to_markdown(text: str) -> str:
    """Markdown for a jupytext percent script: ``# %% [markdown]`` cells
    become text (the leading ``# `` of each line removed), other ``# %%``
    cells ``python`` code blocks. Lines before the first cell are dropped
    (module docstring, shebang)."""
    cells: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        match = _CELL.match(line)
        if match:
            kind = "markdown" if "[markdown]" in match.group("rest") else "code"
            cells.append((kind, []))
        elif cells:
            cells[-1][1].append(line)
    parts = []
    for kind, lines in cells:
        while lines and not lines[-1].strip():
            lines.pop()
        while lines and not lines[0].strip():
            lines.pop(0)
        if not lines:
            continue
        if kind == "markdown":
            parts.append("\n".join(line[2:] if line.startswith("# ") else line.lstrip("#")
                                   for line in lines))
        else:
            parts.append("```python\n" + "\n".join(lines) + "\n```")
    return "\n\n".join(parts) + "\n"


def _render_tutorial(app, docname: str, source: list[str]) -> None:
    match = _MARKER.search(source[0])
    if not match:
        return
    script = TUTORIALS / match.group("script")
    app.env.note_dependency(str(script))
    link = (f"\n\n*Source:* `tutorials/{script.name}` — run it with "
            f"`python tutorials/{script.name}` (small settings) or with `--full`.\n")
    body = percent_script_to_markdown(script.read_text(encoding="utf-8"))
    # The script's first markdown cell holds the page title; the source note goes under it.
    title, _, rest = body.partition("\n")
    before = _MARKER.sub("", source[0]).strip()
    source[0] = (before + "\n\n" if before else "") + title + link + rest


# --- the guide's table of contents ---------------------------------------
# Several guide pages are written independently; the index lists those that
# exist (in this order, then any other top-level page), so a page that does
# not exist yet never breaks the build. The index holds ``% guide-pages``
# where the list goes.
GUIDE_ORDER = ["graph_format", "architecture", "cli", "datasets", "mixing", "escnn",
               "distributed", "performance", "results", "tickets"]


def guide_pages() -> list[str]:
    present = {path.stem for path in DOCS.iterdir()
               if path.suffix in (".md", ".rst") and path.stem != "index"}
    return ([name for name in GUIDE_ORDER if name in present]
            + sorted(present - set(GUIDE_ORDER)))


def _fill_guide(app, docname: str, source: list[str]) -> None:
    if docname == root_doc:
        app.env.note_dependency(str(DOCS))  # re-read when a page is added
        source[0] = source[0].replace("% guide-pages", "\n".join(guide_pages()))


# --- API pages of modules that are still being written -------------------
# api/more.rst documents these when they import; a package that does not
# exist yet (or fails to import) is left out instead of breaking the build.
OPTIONAL_API_MODULES = ["nft_pyg.graph.pruning", "nft_pyg.tasks", "nft_pyg.tasks.tickets",
                        "nft_pyg.tickets", "nft_pyg.utils",
                        "nft_pyg.cli"]


def _importable(name: str) -> bool:
    import importlib
    try:
        importlib.import_module(name)
    except Exception as error:  # noqa: BLE001 - any failure means "not ready": leave it out
        logger.info(f"api/more: leaving out {name} ({type(error).__name__}: {error})")
        return False
    return True


def _fill_optional_api(app, docname: str, source: list[str]) -> None:
    if docname != "api/more":
        return
    blocks = []
    for name in OPTIONAL_API_MODULES:
        if _importable(name):
            title = f"``{name}``"
            blocks.append(f"{title}\n{'-' * len(title)}\n\n.. automodule:: {name}\n"
                          f"   :members:\n")
    source[0] = source[0].replace(".. optional-modules", "\n".join(blocks)
                                  or "(none importable at build time)")


# --- re-exported classes ---------------------------------------------------
# autodoc gives a class documented under a re-exporting package (e.g.
# ``nft_pyg.Sine``) the option ``:canonical: nft_pyg.graph.modules.Sine``,
# so that references to the defining module's path resolve too. A class
# re-exported by two documented packages (``nft_pyg.Sine`` and
# ``nft_pyg.inr.Sine``) would register that canonical name twice, which
# Sphinx reports as a duplicate object description (a warning with no type
# that suppress_warnings could name). The first description keeps the
# canonical name, later ones drop it; nothing else changes.
class ClassCanonicalOnce(PyClasslike):
    def run(self):
        canonical = self.options.get("canonical")
        if canonical:
            entry = self.env.domains.python_domain.objects.get(canonical)
            if entry is not None and entry.aliased:
                del self.options["canonical"]
        return super().run()


def _exclude_top_level(app, docname: str, source: list[str]) -> None:
    """api/graph documents nft_pyg.graph minus what nft_pyg re-exports (those
    are on the api/nft_pyg page), whatever that list currently is."""
    if docname == "api/graph":
        import nft_pyg
        names = ", ".join(name for name in nft_pyg.__all__ if name != "__version__")
        source[0] = source[0].replace("NFT_PYG_TOP_LEVEL_NAMES", names)


def _always_reread(app, env, added, changed, removed) -> list[str]:
    """The generated parts of these pages depend on which files / modules
    exist, not on the pages' own sources: read them on every build."""
    return [name for name in (root_doc, "api/more", "api/graph") if name in env.found_docs]


def setup(app):
    app.connect("env-get-outdated", _always_reread)
    app.add_directive_to_domain("py", "class", ClassCanonicalOnce, override=True)
    app.add_directive_to_domain("py", "exception", ClassCanonicalOnce, override=True)
    app.connect("source-read", _fill_optional_api)
    app.connect("source-read", _exclude_top_level)
    app.connect("source-read", _render_tutorial)
    app.connect("source-read", _fill_guide)
    # ClassCanonicalOnce needs the objects of every page read so far
    return {"parallel_read_safe": False}
