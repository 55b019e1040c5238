"""The law of one softmax row, public: `row_law` and the laws and rules it takes.

A small facade over `theory._row_law` (where the formulas, assumptions and the quadrature
are documented): the expectations of one attention row ``m`` whose logits are
``l_k = b_k + sqrt(tau^2 G) s_k x_k`` (offsets ``b``, a random row factor ``G`` of mean 1,
per-key scales ``s`` and i.i.d. standardised key parts ``x`` of a stated law). See
docs/theory.md, "Through depth", the paragraph "The row law".

>>> import numpy as np
>>> from theory.row_law import row_law, sphere_key_law
>>> rows = row_law(np.array([[1], [4]]), 0.0, sphere_key_law(16, 63))   # tau^2 = 0: uniform rows
>>> np.round(rows.sum_sq, 6).tolist()
[1.0, 0.25]
"""

from ._row_law import (KeyLaw, RowMoments, chi2_mixture, gamma_factor_rule, product_rule, radius_key_law, row_law,
                       sphere_key_law)

__all__ = ["row_law", "RowMoments", "KeyLaw", "sphere_key_law", "radius_key_law", "chi2_mixture", "product_rule",
           "gamma_factor_rule"]
