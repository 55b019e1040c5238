"""Every ```python snippet of the guide pages (docs/*.md) runs (issue 21, item 3), so that a
stale snippet fails CI.

Each snippet is preceded by a marker comment that says what the suite does with it:

* ``<!-- snippet: run -->``: executed; the snippets of one page share one namespace, in page
  order (a later snippet may use an earlier one's names), in a temporary working directory;
* ``<!-- snippet: skip REASON -->``: not executed, for the reason given (it needs a trained
  checkpoint, a running cluster, ...).

A snippet without a marker fails the test, so every new snippet makes that choice. Snippets
must import public names only (no ``theory._x``-style module).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.simulate_helpers import one_thread  # noqa: F401  (fixture)

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = sorted(p for p in DOCS.glob("*.md") if p.name != "formulas.md")   # formulas.md is generated
_BLOCK = re.compile(r"(?:<!--\s*snippet:\s*(?P<marker>[^>]*?)\s*-->\s*\n)?```python\n(?P<code>.*?)```", re.S)
_PRIVATE_IMPORT = re.compile(r"^\s*(?:from|import)\s+(?:theory|simulate|verify)(?:\.\w+)*\.(_\w+)", re.M)


def snippets(page: Path) -> list[tuple[int, str, str]]:
    """(line, marker, code) of each python block of ``page``."""
    text = page.read_text(encoding="utf-8")
    return [(text[:m.start("code")].count("\n") + 1, (m.group("marker") or "").strip(), m.group("code"))
            for m in _BLOCK.finditer(text)]


PAGES_WITH_SNIPPETS = [p for p in PAGES if snippets(p)]


@pytest.mark.parametrize("page", PAGES_WITH_SNIPPETS, ids=lambda p: p.stem)
def test_every_snippet_is_marked_and_imports_public_names(page):
    for line, marker, code in snippets(page):
        assert marker == "run" or marker.startswith("skip "), \
            f"{page.name}:{line}: precede the snippet by <!-- snippet: run --> or <!-- snippet: skip REASON -->"
        private = _PRIVATE_IMPORT.findall(code)
        assert not private, f"{page.name}:{line}: imports the private module(s) {private}; use the public names"


@pytest.mark.parametrize("page", [p for p in PAGES_WITH_SNIPPETS if any(m == "run" for _, m, _ in snippets(p))],
                         ids=lambda p: p.stem)
@pytest.mark.usefixtures("one_thread")
def test_snippets_run(page, tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"snippets_of_{page.stem}"}
    for line, marker, code in snippets(page):
        if marker != "run":
            continue
        try:
            exec(compile(code, f"{page.name}:{line}", "exec"), namespace)
        except Exception as err:  # say which snippet, not only the traceback
            raise AssertionError(f"{page.name}:{line}: the snippet fails: {type(err).__name__}: {err}") from err


def test_the_runner_sees_the_pages():
    assert len(PAGES_WITH_SNIPPETS) >= 5
    assert os.path.basename(PAGES_WITH_SNIPPETS[0]).endswith(".md")


@pytest.mark.parametrize("script", sorted((DOCS / "examples").glob("*.py")), ids=lambda p: p.stem)
def test_example_scripts_import_public_names(script):
    private = _PRIVATE_IMPORT.findall(script.read_text(encoding="utf-8"))
    assert not private, f"docs/examples/{script.name} imports the private module(s) {private}; use the public names"


def test_spec_files_the_pages_name_exist_and_load():
    from theory import ModelSpec

    named = set()
    for page in PAGES:
        named |= set(re.findall(r"docs/specs/([\w.-]+\.json)", page.read_text(encoding="utf-8")))
    assert named, "the pages name their spec files as docs/specs/NAME.json"
    for name in sorted(named):
        ModelSpec.load(DOCS / "specs" / name)   # exists and is a valid spec
