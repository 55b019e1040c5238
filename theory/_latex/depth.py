"""LaTeX for the depth recursion (`theory.depth`): the kernel maps and, for a numeric spec,
the predicted residual variance per layer.

``depth_section(spec, notation, prediction)`` returns an ``\\input``-able section
(amsmath, booktabs) with numbered equations labelled ``eq:depth:<name>`` and, when the
spec is numeric, a table ``tab:depth`` of the predicted variance of the block output
(``hook_resid_post``; attention-only blocks end there too, as in TransformerLens) at a few
positions for every layer with each result's level, read from ``prediction`` (what
`theory.depth.predict` returns; the caller predicts). Symbols follow the same `Notation`
as the first-layer document, so a renamed ``sigma_o`` is renamed here too.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from ..block import block
from ..spec import ModelSpec
from .notation import Notation


_MAPS = r"""\section{Through depth: the position kernel}\label{sec:depth}
From layer~1 (the second layer) on, the inputs of a layer are no longer independent across positions: the
causal average makes positions share value vectors, and every MLP writes one vector shared
by all positions. The recursion carries the position kernel of the residual stream,
\begin{equation}
K_{<<m>><<n>>} = <<E>>\big[<<x>>_{<<m>>}\cdot <<x>>_{<<n>>}\big]/<<d_model>>, \qquad 1\le <<m>>,<<n>>\le <<seq_len>>,
\label{eq:depth:kernel}
\end{equation}
block by block (annealed measure; every coordinate has mean zero). With the channels of
$<<x>>$ i.i.d.\ Gaussian over positions given $K$ (the closure of signal-propagation
theory), LayerNorm maps it to
\begin{equation}
E_{<<m>><<n>>} = \begin{cases} <<nu_1>>(<<m>>) & <<m>> = <<n>>,\\
\rho_{<<m>><<n>>}\,\tfrac{2}{<<D>>}\Big(\tfrac{\Gamma((<<D>>+1)/2)}{\Gamma(<<D>>/2)}\Big)^{2}
{}_{2}F_{1}\big(\tfrac12,\tfrac12;\tfrac{<<D>>}{2}+1;\rho_{<<m>><<n>>}^{2}\big)\, g_{<<m>>} g_{<<n>>} & <<m>> \ne <<n>>,
\end{cases}
\label{eq:depth:layernorm}
\end{equation}
with $\rho_{<<m>><<n>>} = K_{<<m>><<n>>}/\sqrt{K_{<<m>><<m>>}K_{<<n>><<n>>}}$ and
$g_{<<m>>} = <<E>>\sqrt{<<X>>/(<<X>>+<<c>>_{<<m>>})}$, $<<X>>\sim\chi^{2}_{<<D>>}$,
$<<c>>_{<<m>>} = <<d_model>><<ln_eps>>/K_{<<m>><<m>>}$ (the mean cosine of two Gaussian vectors
in $<<D>>$ dimensions, times the LayerNorm radii). Causal attention averages the keys:
\begin{align}
U_{<<m>><<n>>} &= \frac{1}{<<m>><<n>>}\sum_{k\le <<m>>}\sum_{k'\le <<n>>} E_{kk'}, \label{eq:depth:uniform}\\
v_{<<m>>} &= \frac{<<m>>}{<<m>>-1}\Big(\frac{1}{<<m>>}\sum_{k\le <<m>>} E_{kk} - U_{<<m>><<m>>}\Big), \label{eq:depth:spread}\\
A_{<<m>><<n>>} &= U_{<<m>><<n>>} + \delta_{<<m>><<n>>}\, v_{<<m>>}\Big(<<S_2>>(<<m>>;<<tau>>_{<<m>>}^{2}) - \frac{1}{<<m>>}
 + \frac{<<Xi>>(<<m>>;<<tau>>_{<<m>>}^{2})}{<<D>>}\Big), \label{eq:depth:attention}
\end{align}
where a part shared by all keys shifts every logit of a row alike, so only the spread
$v_{<<m>>}$ of the keys about their centroid makes the softmax non-uniform, at the
effective logit variance
$<<tau>>_{<<m>>}^{2} = <<s>>^{2}<<sigma_q>>^{2}<<sigma_k>>^{2}<<d_head>><<d_model>>^{2}<<nu_1>>(<<m>>)\,v_{<<m>>}$;
$<<S_2>>$ and $<<Xi>>$ are the first-layer row expectations. The writes into the residual
stream go through zero-mean matrices independent of $<<x>>$, so covariances add:
\begin{align}
K &\leftarrow K + <<sigma_o>>^{2}<<sigma_v>>^{2}<<d_model>>^{2} A, \label{eq:depth:resid_mid}\\
K &\leftarrow K + <<sigma_out>>^{2}<<mlp_ratio>><<d_model>>\, F_{\phi}\big(<<sigma_in>>^{2}<<d_model>> E'\big), \label{eq:depth:mlp}\\
F_{\phi}(\Sigma)_{<<m>><<n>>} &= \sum_{j\ge 0} \rho_{<<m>><<n>>}^{j}\, b_{j}(s_{<<m>>})\, b_{j}(s_{<<n>>}),
\qquad b_{j}(s) = \frac{<<E>>[\phi(sZ)\,\mathrm{He}_{j}(Z)]}{\sqrt{j!}}, \label{eq:depth:mehler}
\end{align}
with $E'$ the LayerNorm map~\eqref{eq:depth:layernorm} of the kernel after attention and
$s_{<<m>>}^{2} = \Sigma_{<<m>><<m>>}$: Mehler's expansion of
$<<E>>[\phi(u_{<<m>>})\phi(u_{<<n>>})]$ for Gaussian $u$. At layer~0
($E = <<nu_1>> I$) equation~\eqref{eq:depth:attention} is the first-layer result exactly.
From layer~1 on the recursion is approximate: besides the closure, softmax rows of
correlated keys are treated as i.i.d.\ keys of the same spread, the off-diagonal
attention terms as uniform, and the per-network fluctuation of the kernel is neglected.
"""


def _latex_float(value: float) -> str:
    text = f"{value:.4g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        return f"{mantissa}\\times 10^{{{int(exponent)}}}"
    return text


def depth_section(
    spec: ModelSpec,
    notation: Notation | Mapping | None = None,
    prediction=None,
    positions: Sequence[int] | None = None,
) -> str:
    """The depth recursion as a LaTeX section; for a numeric spec with a table of ``prediction``
    (required then: the `theory.prediction.Prediction` of `theory.depth.predict(spec)`; only
    ``.var(tap, layer)`` and ``prediction[tap].level`` are read)."""
    notation = Notation.coerce(notation)
    filled = notation.fill(_MAPS.replace("<<sigma_out>>", "<<sigma_mlp_out>>").replace("<<sigma_in>>", "<<sigma_mlp_in>>"))
    if spec.is_symbolic:
        return filled
    if prediction is None:
        raise ValueError("depth_section: a numeric spec needs its prediction (theory.depth.predict(spec)) for the table")
    T = int(spec.seq_len)
    if positions is None:
        positions = sorted({1, 2, max(1, T // 16), max(1, T // 4), T})
    tap = block(spec).output_tap
    head = " & ".join(f"${notation['m']}={p}$" for p in positions)
    rows = []
    for layer in range(int(spec.n_layers)):
        var = prediction.var(tap, layer)
        level = prediction[f"blocks.{layer}.{tap}"].level.value
        cells = " & ".join(f"${_latex_float(float(var[p - 1]))}$" for p in positions)
        rows.append(f"{layer} & {cells} & {level} \\\\")
    table = (
        "\\begin{table}[h]\n\\centering\n\\small\n"
        f"\\begin{{tabular}}{{r{'r' * len(positions)}l}}\n\\toprule\n"
        f"layer & {head} & level \\\\\n\\midrule\n" + "\n".join(rows) + "\n\\bottomrule\n\\end{tabular}\n"
        f"\\caption{{Predicted variance of one coordinate of \\texttt{{{tap.replace('_', chr(92) + '_')}}} "
        "(best level) against position, layer by layer (layers 0-based, as in the tap names): the position kernel's diagonal, "
        "equations~\\eqref{eq:depth:layernorm}--\\eqref{eq:depth:mlp}.}\\label{tab:depth}\n\\end{table}\n"
    )
    return filled + "\n" + table
