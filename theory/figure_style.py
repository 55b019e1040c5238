"""One figure style for every figure the toolkit draws (verify's report, the probe, training).

Sizes are those of a paper: `ONE_COLUMN` (3.4 in, the width of a column of a two-column
article) and `TWO_COLUMNS` (7.0 in, a full page width); fonts are readable when a figure is
printed at that width (8-9 pt, never below 7). Colours are Okabe and Ito's palette (2008),
which stays distinct for the common colour-vision deficiencies and in greyscale with the
markers of `MARKERS`. Series that play the same role in every figure keep their colour:
`ROLE_COLOURS` (simulation black, the best theory blue, the paper's leading order vermilion).

`rc()` is the matplotlib settings as a dict; `style()` the context to draw and save in, and
`styled` a decorator that runs a figure-making function inside it. This module imports
matplotlib only inside those functions, so importing `theory` does not load it.

>>> from theory.figure_style import ONE_COLUMN, PALETTE, colour
>>> ONE_COLUMN, len(PALETTE), colour(0) == PALETTE[0], colour(len(PALETTE)) == PALETTE[0]
(3.4, 8, True, True)
"""

from __future__ import annotations

import functools

ONE_COLUMN = 3.4     # inches: one column of a two-column article (ACL, NeurIPS two-column, IEEE)
TWO_COLUMNS = 7.0    # inches: the full text width
FONT_SIZE = 8.0      # points at print size; titles +1, legends and ticks -1

# Okabe & Ito (2008), "Color Universal Design": black first, then the seven colours.
PALETTE = ("#000000", "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
ROLE_COLOURS = {"simulation": PALETTE[0], "best": PALETTE[1], "leading": PALETTE[2], "tolerance": "#DDDDDD"}


def colour(i: int) -> str:
    """The i-th colour of the palette (cycling)."""
    return PALETTE[i % len(PALETTE)]


def marker(i: int) -> str:
    return MARKERS[i % len(MARKERS)]


def rc() -> dict:
    """matplotlib settings of the style (fonts, lines, a colour cycle of `PALETTE` with markers)."""
    from cycler import cycler  # matplotlib's dependency; imported here so theory needs no matplotlib

    return {
        "font.size": FONT_SIZE,
        "axes.titlesize": FONT_SIZE + 1,
        "axes.labelsize": FONT_SIZE,
        "xtick.labelsize": FONT_SIZE - 1,
        "ytick.labelsize": FONT_SIZE - 1,
        "legend.fontsize": FONT_SIZE - 1,
        "legend.frameon": False,
        "figure.titlesize": FONT_SIZE + 1,
        "axes.prop_cycle": cycler(color=list(PALETTE[1:]) + [PALETTE[0]]) + cycler(marker=list(MARKERS)),
        "lines.linewidth": 1.2,
        "lines.markersize": 3.5,
        "errorbar.capsize": 1.5,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "savefig.bbox": "tight",
        "savefig.pad_inches": 0.02,
        "pdf.fonttype": 42,   # TrueType in PDFs: journals' checks accept it, text stays selectable
    }


def style():
    """A context in which figures are drawn and saved in this style (``matplotlib.rc_context``).

    matplotlib reads its settings when an artist is made and when a file is written, so the
    whole drawing and the saving happen inside it (`styled` does that for a function)."""
    import matplotlib  # optional for theory itself: only figure makers call this

    return matplotlib.rc_context(rc())


def styled(make):
    """Decorator: run a figure-making function inside `style()`."""
    @functools.wraps(make)
    def wrapper(*args, **kwargs):
        with style():
            return make(*args, **kwargs)

    return wrapper


__all__ = ["ONE_COLUMN", "TWO_COLUMNS", "FONT_SIZE", "PALETTE", "MARKERS", "ROLE_COLOURS", "colour", "marker", "rc",
           "style", "styled"]
