"""Numbers from the stated sympy expressions: ``lambdify`` with the row placeholders implemented.

The best-level formulas of the first layer (layer 0) contain ``S_2(m) = E[sum_n a_mn^2]`` and
``Xi(m) = E[sum_{n != n'} a_mn a_mn' l_mn l_mn'] / tau^2``, which have no closed form. For
numbers they are implemented by the row quadrature (`theory._quadrature.row_expectations`)
at the same positions, so that every number is the value of the printed expression (no
numeric twin of a formula).
"""

from __future__ import annotations

import numpy as np
import sympy as sp

from ._softmax import m_sym

def numbers(expr: sp.Expr, positions: np.ndarray, row) -> np.ndarray:
    """``expr`` (in ``m``, ``S_2(m)``, ``Xi(m)``) at ``positions``, with ``S_2``/``Xi`` from ``row``.

    The placeholders become implemented functions that return the quadrature at the same
    positions (``row.sum_sq``, ``row.coupling``), and sympy's ``lambdify`` evaluates the
    very expression the step states.
    """
    pos = positions.astype(float)

    def at_positions(values):
        def implemented(m):
            if np.shape(m) != pos.shape:
                raise ValueError("S_2 and Xi are evaluated at the step's positions only")
            return values
        return implemented

    table = {"S_2": at_positions(None if row is None else row.sum_sq),
             "Xi": at_positions(None if row is None else row.coupling)}
    f = sp.lambdify(m_sym, expr, modules=[table, "numpy"])
    return np.broadcast_to(np.asarray(f(pos), dtype=float), positions.shape).copy()
