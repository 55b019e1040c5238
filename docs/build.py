"""Build the documentation site: ``python docs/build.py [--out DIR] [--no-warnings-as-errors]``.

1. MathJax: the equations are rendered in the browser by MathJax 3 (SVG output, one
   self-contained script, no web fonts). The script is taken once from the npm registry
   (``npm pack mathjax@MATHJAX_VERSION``) into ``docs/_static/mathjax/`` and reused; the built
   site then reads it from its own ``_static`` folder, so it works with no network.
2. Sphinx (MyST for the Markdown guide pages, autodoc for the API reference) writes HTML into
   ``DIR`` (default ``docs/_build/html``), warnings as errors unless told otherwise.

Why Sphinx: our pages are Markdown (MyST reads them unchanged), the API reference must come
from the docstrings (autodoc), and ``-W`` turns every broken link or docstring into an error
that the test suite sees (tests/test_docs_site.py).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parent
MATHJAX_VERSION = "3.2.2"
MATHJAX_DIR = DOCS / "_static" / "mathjax"
MATHJAX_SCRIPT = "tex-svg.js"
MATHJAX_STAMP = MATHJAX_DIR / "VERSION"


class BuildError(RuntimeError):
    """The site could not be built; the message says what to install or fix."""


def ensure_mathjax() -> Path:
    """The local MathJax script, fetched from the npm registry the first time."""
    script = MATHJAX_DIR / MATHJAX_SCRIPT
    if script.exists() and MATHJAX_STAMP.exists() and MATHJAX_STAMP.read_text().strip() == MATHJAX_VERSION:
        return script
    npm = shutil.which("npm")
    if npm is None:
        raise BuildError("npm not found: install Node.js (apt-get install npm) to fetch MathJax once, "
                         f"or put MathJax {MATHJAX_VERSION}'s es5/{MATHJAX_SCRIPT} at {script}")
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run([npm, "pack", f"mathjax@{MATHJAX_VERSION}", "--silent"], cwd=tmp,
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise BuildError(f"npm pack mathjax@{MATHJAX_VERSION} failed: {done.stderr.strip()[-500:]}")
        tarball = Path(tmp) / done.stdout.strip().splitlines()[-1]
        with tarfile.open(tarball) as tar:
            member = tar.getmember(f"package/es5/{MATHJAX_SCRIPT}")
            data = tar.extractfile(member).read()
    MATHJAX_DIR.mkdir(parents=True, exist_ok=True)
    script.write_bytes(data)
    MATHJAX_STAMP.write_text(MATHJAX_VERSION + "\n")
    return script


def build(out: Path | None = None, warnings_as_errors: bool = True, quiet: bool = False) -> Path:
    """Build the HTML site into ``out`` (default docs/_build/html) and return that folder."""
    out = Path(out) if out is not None else DOCS / "_build" / "html"
    ensure_mathjax()
    from sphinx.cmd.build import build_main

    args = ["-b", "html", "-E", "-n", "--keep-going", str(DOCS), str(out),
            "-d", str(out.parent / (out.name + ".doctrees"))]
    if warnings_as_errors:
        args.insert(0, "-W")
    if quiet:
        args.insert(0, "-q")
    if build_main(args) != 0:
        raise BuildError("sphinx-build reported errors or warnings (above)")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="output folder (default docs/_build/html)")
    parser.add_argument("--no-warnings-as-errors", action="store_true", help="report warnings without failing")
    args = parser.parse_args(argv)
    try:
        out = build(args.out, warnings_as_errors=not args.no_warnings_as_errors)
    except BuildError as err:
        print(f"docs/build.py: error: {err}", file=sys.stderr)
        return 2
    print(f"site written to {out / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
