"""The per-step prose of the derivation document, keyed by tap suffix (``attn.hook_z``).

These tables are the text of each layer-1 step: its section heading (`HEADINGS`), the
coordinate its quantities describe (`SUBJECT`, the left-hand sides ``Var[z_{m,j}]``) and
its derivation in words and numbered equations (`DERIVATIONS`, docs/theory.md as LaTeX).
They belong next to each step: they will move to the ``heading``, ``subject`` and
``derivation`` attributes of the step entries of theory's step catalogue, and the
renderers will read them from there. Until then they live here, in one module, so they
move in one go.

Templates use ``<<key>>`` for every symbol (filled by :class:`theory._latex.notation.Notation`),
``@label(name)`` for a numbered equation's label (``eq:<tap>:derivation:<name>``),
``@ref(tap-suffix:name)`` for a reference to another step's derivation equation,
``@scale`` for the logit scale of the spec (``d_h^{-1/2}`` or ``d_h^{-1}``) and
``@series_sum_sq`` for the conditional softmax series (``Derivation.constants["S_2 | tau^2"]``).
Spec-dependent numbers never appear here: they come from the `StepResult`s.

An attention-only block ends at ``hook_resid_post`` (TransformerLens' naming): its last
step is the attention's residual write, with the text of ``hook_resid_mid``.
"""

from __future__ import annotations

# The left-hand side of each quantity: the coordinate the law describes.
SUBJECT: dict[str, str] = {
    "hook_resid_pre": "<<x>>_{<<m>>,i}",
    "ln1.hook_normalized": "<<e>>_{<<m>>,i}",
    "attn.hook_q": "<<q>>_{<<m>>,j}",
    "attn.hook_k": "<<k>>_{<<n>>,j}",
    "attn.hook_v": "<<v>>_{<<n>>,j}",
    "attn.hook_attn_scores": "<<l>>_{<<m>><<n>>}",
    "attn.hook_pattern": "<<a>>_{<<m>><<n>>}",
    "attn.hook_z": "<<z>>_{<<m>>,j}",
    "hook_attn_out": "<<o>>_{<<m>>,i}",
    "hook_resid_mid": "<<x>>'_{<<m>>,i}",
}

HEADINGS: dict[str, str] = {
    "hook_resid_pre": "Embedding",
    "ln1.hook_normalized": "LayerNorm",
    "attn.hook_q": "Query projection",
    "attn.hook_k": "Key projection",
    "attn.hook_v": "Value projection",
    "attn.hook_attn_scores": "Query--key product (attention logits)",
    "attn.hook_pattern": "Softmax (attention weights)",
    "attn.hook_z": "Value aggregation",
    "hook_attn_out": "Output projection",
    "hook_resid_mid": "Residual connection",
}

DERIVATIONS: dict[str, str] = {
    "hook_resid_pre": r"""The inputs are i.i.d.\ over positions and coordinates,
\begin{align}
<<x>>_{<<m>>} \sim \mathcal{N}\bigl(0, <<sigma_embed>>^{2} I_{<<d_model>>}\bigr), \label{@label(input)}
\end{align}
so one coordinate is Gaussian with mean $0$ and variance $<<sigma_embed>>^{2}$, exactly.""",
    "ln1.hook_normalized": r"""LayerNorm (gain $1$, bias $0$, biased variance in the normaliser) maps
$<<x>>$ to
\begin{align}
<<e>> = \frac{<<x>> - \bar{<<x>>}\mathbf{1}}{\sqrt{\tfrac{1}{<<d_model>>}\lVert <<x>> - \bar{<<x>>}\mathbf{1}\rVert^{2} + <<ln_eps>>}},
\qquad \bar{<<x>>} = \frac{1}{<<d_model>>}\sum_{i} <<x>>_{i}. \label{@label(layernorm)}
\end{align}
The centred vector is an isotropic Gaussian in the $(<<d_model>>-1)$-dimensional subspace
orthogonal to $\mathbf{1}$, so $<<e>> = \lVert <<e>>\rVert\, w$ with $w$ uniform on the unit
sphere of that subspace and independent of
\begin{align}
\lVert <<e>>\rVert^{2} &= \frac{<<d_model>> <<X>>}{<<X>> + <<c>>}, \qquad <<X>> \sim \chi^{2}_{<<d_model>>-1}, \qquad <<c>> = \frac{<<d_model>> <<ln_eps>>}{<<sigma_embed>>^{2}}. \label{@label(norm)}
\end{align}
One coordinate of $w$ satisfies $\tfrac{<<d_model>>}{<<d_model>>-1} w_i^{2} \sim \mathrm{Beta}\bigl(\tfrac12, \tfrac{<<d_model>>-2}{2}\bigr)$, hence
\begin{align}
<<Var>>[<<e>>_{<<m>>,i}] &= \frac{<<E>>\lVert <<e>>\rVert^{2}}{<<d_model>>} = <<nu_1>>, &
<<E>>[<<e>>_{<<m>>,i}^{4}] &= <<E>>\lVert <<e>>\rVert^{4}\, <<E>>[w_i^{4}] = \frac{3(<<d_model>>-1)}{<<d_model>>+1}\, <<nu_2>>, \label{@label(moments)}
\end{align}
with $<<nu_1>> = <<E>>[<<X>>/(<<X>>+<<c>>)]$ and $<<nu_2>> = <<E>>[(<<X>>/(<<X>>+<<c>>))^{2}]$, which the
Laplace identity $1/(<<X>>+<<c>>) = \int_{0}^{\infty} e^{-t(<<X>>+<<c>>)}\,dt$ and the chi-square
moment generating function turn into upper incomplete gamma functions
(equation~\eqref{eq:constants:nu}). The coordinates sum to zero, so
\begin{align}
0 = <<Var>>\Bigl[\sum_{i} <<e>>_{<<m>>,i}\Bigr] = <<d_model>>\,<<Var>>[<<e>>_{<<m>>,i}] + <<d_model>>(<<d_model>>-1)\,<<Cov>>[<<e>>_{<<m>>,i}, <<e>>_{<<m>>,j}]. \label{@label(sum-zero)}
\end{align}
With $<<ln_eps>> = 0$, $<<e>>_{<<m>>,i}^{2}/(<<d_model>>-1) \sim \mathrm{Beta}\bigl(\tfrac12, \tfrac{<<d_model>>-2}{2}\bigr)$:
variance $1$ and excess kurtosis $-6/(<<d_model>>+1)$.""",
    "attn.hook_q": r"""Given $<<e>>_{<<m>>}$, one coordinate of the query is a sum of independent Gaussians,
\begin{align}
<<q>>_{<<m>>,j} = \sum_{i} (<<W>>_{q})_{ji}\, <<e>>_{<<m>>,i} \;\Big|\; <<e>>_{<<m>>} \sim \mathcal{N}\bigl(0, <<sigma_q>>^{2}\lVert <<e>>_{<<m>>}\rVert^{2}\bigr), \label{@label(conditional)}
\end{align}
a Gaussian scale mixture over $\lVert <<e>>\rVert$ (Gaussian when $<<ln_eps>> = 0$):
$<<Var>>[<<q>>_{<<m>>,j}] = <<sigma_q>>^{2}\, <<E>>\lVert <<e>>\rVert^{2}$ and excess kurtosis
$3\,<<E>>\lVert <<e>>\rVert^{4}/(<<E>>\lVert <<e>>\rVert^{2})^{2} - 3 = 3<<nu_2>>/<<nu_1>>^{2} - 3$.""",
    "attn.hook_k": r"""As for the query (equation~\eqref{@ref(attn.hook_q:conditional)}), with $<<W>>_{k}$ and $<<sigma_k>>$.""",
    "attn.hook_v": r"""As for the query (equation~\eqref{@ref(attn.hook_q:conditional)}), with $<<W>>_{v}$ and $<<sigma_v>>$.""",
    "attn.hook_attn_scores": r"""The logit of query $<<m>>$ and key $<<n>> \le <<m>>$ is a scaled sum of $<<d_head>>$ products,
\begin{align}
<<l>>_{<<m>><<n>>} = <<s>> \sum_{j=1}^{<<d_head>>} <<q>>_{<<m>>,j}\, <<k>>_{<<n>>,j}, \qquad <<s>> = @scale. \label{@label(product)}
\end{align}
Given the two radii the terms are i.i.d.\ products of independent Gaussians, so $<<l>>_{<<m>><<n>>}$ is
variance-gamma (a modified Bessel $K$ density) with excess kurtosis $6/<<d_head>>$ when $<<ln_eps>>=0$.
For $<<n>> \ne <<m>>$ the radii are independent, for $<<n>> = <<m>>$ the same radius appears twice:
\begin{align}
<<Var>>[<<l>>_{<<m>><<n>>}] &= <<s>>^{2}<<sigma_q>>^{2}<<sigma_k>>^{2}<<d_head>> \times
\begin{cases} (<<E>>\lVert <<e>>\rVert^{2})^{2} = <<d_model>>^{2}<<nu_1>>^{2}, & <<n>> \ne <<m>>,\\
<<E>>\lVert <<e>>\rVert^{4} = <<d_model>>^{2}<<nu_2>>, & <<n>> = <<m>>, \end{cases} \label{@label(radii)}
\end{align}
and pooled over the $<<m>>$ keys $<<n>> \le <<m>>$ the variance is
$<<s>>^{2}<<sigma_q>>^{2}<<sigma_k>>^{2}<<d_head>><<d_model>>^{2}\bigl((<<m>>-1)<<nu_1>>^{2} + <<nu_2>>\bigr)/<<m>>$.""",
    "attn.hook_pattern": r"""The weights $<<a>>_{<<m>><<n>>} = e^{<<l>>_{<<m>><<n>>}}/\sum_{<<n>>'\le <<m>>} e^{<<l>>_{<<m>><<n>>'}}$ of one row are exchangeable, so
$<<E>>[<<a>>_{<<m>><<n>>}] = 1/<<m>>$ exactly. Their spread is measured by
\begin{align}
<<S_2>>(<<m>>) = <<E>>\Bigl[\sum_{<<n>>\le <<m>>} <<a>>_{<<m>><<n>>}^{2}\Bigr], \qquad <<S_2>>(1) = 1. \label{@label(s2)}
\end{align}
The query-side vector $u = <<s>> <<W>>_{k}^{\top} <<q>>_{<<m>>}$ is independent of every key direction
(when $<<ln_eps>>=0$, $<<q>>_{<<m>>}$ depends on $<<e>>_{<<m>>}$ only through $\lVert <<e>>_{<<m>>}\rVert$), so given $u$ the logits of
row $<<m>>$ are i.i.d.:
\begin{align}
<<l>>_{<<m>><<n>>} = \sqrt{<<D>> <<tau>>^{2}}\, c_{<<n>>}, \qquad
<<tau>>^{2} = <<tau_bar>>^{2}\, \frac{\chi^{2}_{<<d_head>>}}{<<d_head>>}\,\frac{\chi^{2}_{<<D>>}}{<<D>>}, \qquad <<D>> = <<d_model>> - 1, \label{@label(row)}
\end{align}
with $c_{<<n>>}$ one coordinate of a uniform unit vector in $\mathbb{R}^{<<D>>}$. Expanding
$\sum_{<<n>>} <<a>>_{<<m>><<n>>}^{2}$ in the logits and taking the moments of the i.i.d.\ sums by set
partitions gives, given $<<tau>>^{2}$,
\begin{align}
@series_sum_sq \label{@label(series)}
\end{align}
and the law of large numbers gives $<<m>> <<S_2>>(<<m>>) \to <<E>>[e^{<<tau>>^{2}}]$, which averaged over
$\chi^{2}_{<<d_head>>}$ is $\bigl(1 - 2<<tau_bar>>^{2}/<<d_head>>\bigr)^{-<<d_head>>/2}$. For numeric specifications
$<<S_2>>(<<m>>)$ is computed by quadrature from $1/S^{2} = \int_{0}^{\infty} t\, e^{-tS}\,dt$:
\begin{align}
<<S_2>>(<<m>>) = <<m>> \int_{0}^{\infty} t\, \psi(t)\, \phi(t)^{<<m>>-1}\, dt, \qquad
\phi(t) = <<E>>\bigl[e^{-t e^{<<l>>}}\bigr], \quad \psi(t) = <<E>>\bigl[e^{2<<l>>} e^{-t e^{<<l>>}}\bigr], \label{@label(quadrature)}
\end{align}
with a relative error below $10^{-8}$.""",
    "attn.hook_z": r"""With $<<v>>_{<<n>>} = <<W>>_{v} <<e>>_{<<n>>}$ and $<<W>>_{v}$ averaged first,
\begin{align}
<<Var>>[<<z>>_{<<m>>,j}] = <<sigma_v>>^{2}\, <<E>>\Bigl[\sum_{<<n>>} <<a>>_{<<m>><<n>>}^{2} \lVert <<e>>_{<<n>>}\rVert^{2}
 + \sum_{<<n>> \ne <<n>>'} <<a>>_{<<m>><<n>>} <<a>>_{<<m>><<n>>'} \langle <<e>>_{<<n>>}, <<e>>_{<<n>>'}\rangle\Bigr]. \label{@label(split)}
\end{align}
Treating the weights as independent of the values keeps only the first term,
$<<sigma_v>>^{2}<<rho>>^{2}<<S_2>>(<<m>>)$; uniform attention then gives the paper's $<<sigma_v>>^{2}<<d_model>>/<<m>>$.
But a weight and the key it multiplies share the direction $<<e>>_{<<n>>}$. Writing
$<<e>>_{<<n>>} = <<rho>>\bigl(c_{<<n>>}\hat u + \sqrt{1-c_{<<n>>}^{2}}\, w_{<<n>>}\bigr)$ with $w_{<<n>>}$ uniform and independent of
the logits, $\langle <<e>>_{<<n>>}, <<e>>_{<<n>>'}\rangle$ averages to $<<rho>>^{2} c_{<<n>>} c_{<<n>>'}$ given the weights, and
$c_{<<n>>} = <<l>>_{<<m>><<n>>}/\sqrt{<<D>><<tau>>^{2}}$ (equation~\eqref{@ref(attn.hook_pattern:row)}):
\begin{align}
<<Var>>[<<z>>_{<<m>>,j}] &= <<sigma_v>>^{2}<<rho>>^{2}\Bigl(<<S_2>>(<<m>>) + \frac{<<Xi>>(<<m>>)}{<<d_model>>-1}\Bigr), \label{@label(coupling)}\\
<<Xi>>(<<m>>) &= <<E>>\Bigl[\sum_{<<n>> \ne <<n>>'} <<a>>_{<<m>><<n>>} <<a>>_{<<m>><<n>>'}\, \frac{<<l>>_{<<m>><<n>>} <<l>>_{<<m>><<n>>'}}{<<tau>>^{2}}\Bigr]. \label{@label(xi)}
\end{align}
$<<Xi>>(1) = 0$ and $<<Xi>>(<<m>>) \to <<tau_bar>>^{2}$ as $<<m>>\to\infty$: the weighted average leans towards each
query's direction $\hat u$, and this part of the variance does not shrink with $<<m>>$. The
shrinkage flattens into the floor $<<sigma_v>>^{2}<<rho>>^{2}<<tau_bar>>^{2}/(<<d_model>>-1)$ once $<<m>>$ exceeds about
$(<<d_model>>-1)/<<tau_bar>>^{2}$.""",
    "hook_attn_out": r"""The heads are concatenated and $<<o>>_{<<m>>} = <<W>>_{o} <<z>>_{<<m>>}$ with $<<W>>_{o}$ independent and of mean zero:
\begin{align}
<<Var>>[<<o>>_{<<m>>,i}] = <<sigma_o>>^{2}\, <<d_model>>\, <<Var>>[<<z>>_{<<m>>,j}]. \label{@label(projection)}
\end{align}""",
    "hook_resid_mid": r"""$<<E>>[<<x>>_{<<m>>,i}<<o>>_{<<m>>,i}] = 0$ because $<<W>>_{o}$ has mean zero and is independent of $<<x>>$, so the variances add:
\begin{align}
<<Var>>[<<x>>'_{<<m>>,i}] = <<sigma_embed>>^{2} + <<Var>>[<<o>>_{<<m>>,i}]. \label{@label(add)}
\end{align}""",
}


# An attention-only block's residual write is its output, hook_resid_post.
SUBJECT["hook_resid_post"] = SUBJECT["hook_resid_mid"]
HEADINGS["hook_resid_post"] = HEADINGS["hook_resid_mid"]
DERIVATIONS["hook_resid_post"] = DERIVATIONS["hook_resid_mid"]
