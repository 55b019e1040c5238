"""Sphinx configuration of the nope-theory documentation site (issue 21).

Build it with ``python docs/build.py`` (see docs/site.md): MyST reads the guide pages as they
are (Markdown), autodoc writes the API reference from the docstrings of every public name, and
MathJax renders the equations from a copy in ``_static`` (fetched once from the npm registry by
docs/build.py), so the site needs no network when it is read.
"""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))      # the local extensions below
sys.path.insert(0, str(DOCS.parent))         # the packages, also when not installed

project = "nope-theory"
author = "the nope-theory team"
copyright = "2026, the nope-theory team"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "nope_formulas",      # docs/_ext/nope_formulas.py: the generated page of every step's formulas
    "nope_docstrings",    # docs/_ext/nope_docstrings.py: our "name : description" sections as RST
    "nope_public_names",  # docs/_ext/nope_public_names.py: private paths of public classes -> their public page
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
# evidence/ holds measured artefacts (JSON, figures) that the pages link to; examples/ are scripts.
exclude_patterns = ["_build", "examples", "evidence/**/table.md", "Thumbs.db", ".DS_Store"]  # tables: fragments of their reports

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3
# Every cross-reference must resolve (-n in docs/build.py), except types of other libraries,
# which the offline build has no inventory for.
nitpicky = True
nitpick_ignore_regex = [(r"py:.*", r"(numpy|sympy|torch|scipy|pathlib|enum|collections|typing|dataclasses|xarray)(\..*)?")]
suppress_warnings = [
    "myst.header",                 # pages may skip a heading level (H1 to H3) on purpose
    "misc.highlighting_failure",   # schematic JSON with "..." in docs/verify.md, docs/simulate.md
]     # "#larger-logits-and-small-widths"-style links between pages work

autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": False}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
# `theory` never imports torch; `simulate` and `verify` do, and they are installed for the build.

# MathJax 3, SVG output (no web fonts to load), from the local copy docs/build.py put there.
mathjax_path = "mathjax/tex-svg.js"
mathjax3_config = {"tex": {"tags": "ams"}}

html_theme = "alabaster"
html_static_path = ["_static"]
html_title = "nope-theory"
html_theme_options = {"description": "Positional information in the variance of NoPE attention", "page_width": "1100px"}
