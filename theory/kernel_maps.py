"""The position kernel's maps through one block, public (a facade over `theory._kernel_maps`).

The state of the depth recursion (`theory.depth`) is the position kernel of the residual
stream, ``K[m, n] = E[x_m . x_n] / d``; these are its maps through LayerNorm and causal
uniform attention, as `theory.depth` uses them (formulas, assumptions and sources in
`theory._kernel_maps`):

* `layernorm_kernel(K, d, eps)`: the LayerNorm output's kernel ``E`` and radii (``radial=``
  a `RadialLaw`: the per-sample spread of each position's norm beyond ``chi^2_D``);
* `uniform_average(E)`: the kernel of the causal uniform average ``(1/m) sum_{n<=m} e_n``;
* `key_spread(E, U)`: the keys' spread about their row centroid;
* `gaussian_cosine_mean(r, dim)`: the mean cosine of two Gaussian vectors of correlation r;
* `correlation(K)`: ``K[m, n] / sqrt(K[m, m] K[n, n])``.

>>> import numpy as np
>>> from theory.kernel_maps import uniform_average
>>> uniform_average(np.eye(3)).round(3).tolist()   # i.i.d. tokens: E[zbar_m . zbar_n] = 1/max(m, n)
[[1.0, 0.5, 0.333], [0.5, 0.5, 0.333], [0.333, 0.333, 0.333]]
"""

from ._kernel_maps import RadialLaw, correlation, gaussian_cosine_mean, key_spread, layernorm_kernel, uniform_average

__all__ = ["layernorm_kernel", "RadialLaw", "uniform_average", "key_spread", "gaussian_cosine_mean", "correlation"]
