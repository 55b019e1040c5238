"""The documentation site (issue 21, item 1): it builds with warnings as errors, the API page
of `theory.ModelSpec` exists, and a real headless browser (Debian's chromium) renders the
equations of the generated formulas page.

The build takes ~20 s (autodoc imports the three packages; the formulas page derives the
symbolic GPT-2 spec). MathJax comes from the npm registry on the first build (docs/build.py).
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("sphinx") is None or importlib.util.find_spec("myst_parser") is None,
    reason='the docs extra is not installed (pip install -e ".[docs]")',
)


def _load_build_module():
    spec = importlib.util.spec_from_file_location("docs_build", ROOT / "docs" / "build.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["docs_build"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    build = _load_build_module()
    if shutil.which("npm") is None and not (build.MATHJAX_DIR / build.MATHJAX_SCRIPT).exists():
        pytest.skip("npm is needed once to fetch MathJax (apt-get install npm)")
    # Warnings are errors: a broken link, an unresolved reference or a malformed docstring fails here.
    return build.build(tmp_path_factory.mktemp("site") / "html", warnings_as_errors=True, quiet=True)


def test_site_has_the_guide_the_api_and_mathjax(site):
    for page in ("index.html", "getting-started.html", "theory.html", "modern-blocks.html", "formulas.html",
                 "api/theory.html", "api/simulate.html", "api/verify.html"):
        assert (site / page).is_file(), page
    assert (site / "_static" / "mathjax" / "tex-svg.js").stat().st_size > 100_000
    html = (site / "formulas.html").read_text(encoding="utf-8")
    assert "_static/mathjax/tex-svg.js" in html and "cdn" not in html.lower()


def test_api_page_of_model_spec(site):
    html = (site / "api" / "theory.html").read_text(encoding="utf-8")
    assert 'id="theory.ModelSpec"' in html
    assert 'id="theory.ModelSpec.from_hf_config"' in html
    # the docstring is there, not only the signature
    assert "GPT-2 small" in html


def _chromium(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--virtual-time-budget=20000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _visible_text(dom: str) -> str:
    dom = re.sub(r"<(script|style|mjx-assistive-mml)\b.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"<[^>]+>", " ", dom)


@pytest.mark.skipif(CHROMIUM is None, reason="no headless browser: apt-get install chromium (.ci/run does)")
def test_browser_renders_the_equations(site, tmp_path):
    page = (site / "formulas.html").as_uri()
    html = (site / "formulas.html").read_text(encoding="utf-8")
    n_math = html.count('class="math notranslate nohighlight"')
    assert n_math >= 10

    on = _chromium("--dump-dom", page)
    assert on.returncode == 0, on.stderr[-2000:]
    rendered = on.stdout.count("<mjx-container")
    assert rendered >= n_math, f"{rendered} of {n_math} equations rendered"
    assert "data-mjx-error" not in on.stdout and "merror" not in _visible_text(on.stdout)
    assert "\\operatorname" not in _visible_text(on.stdout)          # no raw TeX left on the page

    # The same page without MathJax (its script tag removed) shows the raw TeX.
    raw = site / "formulas_without_mathjax.html"
    raw.write_text(re.sub(r'<script[^>]*mathjax/tex-svg\.js[^>]*></script>', "", html), encoding="utf-8")
    off = _chromium("--dump-dom", raw.as_uri())
    assert off.returncode == 0 and "<mjx-container" not in off.stdout
    assert "\\operatorname" in _visible_text(off.stdout)

    import matplotlib.image

    shots = {}
    for name, uri in (("on", page), ("off", raw.as_uri())):
        png = tmp_path / f"{name}.png"
        done = _chromium("--window-size=1100,1400", f"--screenshot={png}", uri)
        assert done.returncode == 0 and png.is_file(), done.stderr[-2000:]
        shots[name] = matplotlib.image.imread(png)[..., :3]
    assert shots["on"].shape == shots["off"].shape
    # Below the title and the introduction (the same in both), the equations' region differs:
    # typeset SVG against lines of raw TeX.
    lower = slice(shots["on"].shape[0] // 4, None)
    differs = np.abs(shots["on"][lower] - shots["off"][lower]).max(axis=-1) > 0.1
    assert differs.mean() > 0.01, f"only {differs.mean():.4f} of the pixels differ"
