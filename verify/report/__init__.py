"""The report of a run: report.md, results.json, summary.tex, report.tex and the figures.

- `results`: results.json (`results_dict`);
- `markdown`: report.md;
- `latex`: summary.tex and report.tex's depth section; `report_tex`: report.tex itself
  (check table, figures, the derivation as an appendix);
- `figures`: the figures (matplotlib objects) and `save_figure`, the one way to save one;
- `console`: the terminal summary.

`write_report` writes them all.
"""

from __future__ import annotations

import json
from pathlib import Path

from theory._outputs import atomic_write_text

from .console import console_summary
from .figures import depth_variance_tap, save_figure, save_figures
from .latex import depth_section, latex_summary
from .markdown import markdown
from .report_tex import figure_caption, write_report_tex
from .results import results_dict


def write_report(report, out: str | Path = "report") -> dict[str, str]:
    """Write report.md, results.json, summary.tex, report.tex (with the derivation) and the
    figures of a `verify.Report` into ``out``; the paths written, by name."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figures = save_figures(report, out)
    # each file replaced atomically: a killed run leaves the old report or the new one
    atomic_write_text(out / "results.json", json.dumps(results_dict(report, figures), indent=1, allow_nan=False) + "\n")
    atomic_write_text(out / "report.md", markdown(report, figures))
    atomic_write_text(out / "summary.tex", latex_summary(report))
    # The whole report as LaTeX: check table, PDF figures and the derivation as an appendix
    # (`pdflatex report.tex` in `out`). Written last, so that a LaTeX problem never costs
    # the Markdown and JSON results above.
    section = depth_section(report)
    captions = {"depth_variance": figure_caption("depth_variance", depth_variance_tap(report))} if "depth_variance" in figures else {}
    report_tex = write_report_tex(out, report.spec, report.checks, figures, None, sections=[section] if section else [],
                                  captions=captions)
    written = {"report": str(out / "report.md"), "results": str(out / "results.json"), "latex": str(out / "summary.tex"),
               "report_tex": str(report_tex)}
    for name, paths in figures.items():
        for p in paths:
            written[p] = str(out / p)
    return written


__all__ = ["write_report", "results_dict", "markdown", "latex_summary", "console_summary", "save_figure",
           "save_figures", "write_report_tex"]
