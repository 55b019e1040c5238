"""Hypothesis strategies for `theory.ModelSpec`, for property-based tests of the theory.

`specs` draws valid one-layer, attention-only specs within a compute budget and a regime
of logit variance, the quantity that decides how far attention is from uniform and so
which formulas hold where:

>>> from hypothesis import given, settings
>>> from verify.strategies import specs, SMALL_LOGITS
>>> @settings(max_examples=5)
... @given(specs(max_d_model=32, max_seq_len=8, logit_variance=SMALL_LOGITS))
... def test_spec(spec):
...     assert spec.d_model <= 32 and spec.seq_len <= 8
>>> test_spec()

The regime is hit by construction, not by filtering: the strategy draws a target mean
logit variance ``tau_bar^2`` in the range and sets ``sigma_q sigma_k`` so that
``s^2 sigma_q^2 sigma_k^2 d_head (d nu_1)^2 = tau_bar^2``, with ``nu_1 = E|e|^2/d``
estimated as ``(d-1)/(d-1+c)``, ``c = d eps/sigma_e^2`` (exact at ``eps = 0``; relative
error below 1% here). The split between ``sigma_q`` and ``sigma_k`` is drawn too.
"""

from __future__ import annotations

import math
from typing import Sequence

from hypothesis import strategies as st

from theory import ModelSpec
from theory.quantities import logit_scale_squared

# Regimes of the mean logit variance tau_bar^2.
SMALL_LOGITS = (0.0, 0.1)  # nearly uniform attention: the paper's leading order is close
MODERATE_LOGITS = (0.1, 0.6)  # the softmax and the weight-value coupling matter
GPT2_INIT_LOGITS = (0.08, 0.1)  # GPT-2 small at initialisation: tau_bar^2 = 0.0898

DEFAULT_D_HEADS = (2, 4, 8, 16)


def attention_flops(spec: ModelSpec) -> int:
    """Multiply-adds of one network's attention layer on one sequence: the four
    projections ``4 T d^2`` and the two attention products ``2 T^2 d``."""
    d, t = int(spec.d_model), int(spec.seq_len)
    return 4 * t * d * d + 2 * t * t * d


def _log_uniform(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(math.log(lo), math.log(hi)).map(math.exp)


def _nu1_estimate(d: int, eps: float, sigma_e: float) -> float:
    if eps == 0.0:
        return 1.0
    c = d * eps / sigma_e**2
    return (d - 1) / (d - 1 + c)


@st.composite
def _specs(draw, max_d_model, min_d_model, max_seq_len, min_seq_len, max_heads, d_heads, logit_variance, ln_eps,
           attn_scale, sigma_range, max_flops):
    d_head = draw(st.sampled_from([h for h in d_heads if h <= max_d_model]))
    heads = [h for h in range(1, max_heads + 1) if min_d_model <= h * d_head <= max_d_model]
    n_heads = draw(st.sampled_from(heads))
    d = n_heads * d_head
    t_cap = max_seq_len
    if max_flops is not None:
        while t_cap > min_seq_len and 4 * t_cap * d * d + 2 * t_cap * t_cap * d > max_flops:
            t_cap -= 1
    seq_len = draw(st.integers(min_seq_len, t_cap))
    eps = draw(st.sampled_from(list(ln_eps)))
    scale = draw(st.sampled_from(list(attn_scale)))
    sigma_embed = draw(_log_uniform(*sigma_range))
    sigma_v = draw(_log_uniform(*sigma_range))
    sigma_o = draw(_log_uniform(*sigma_range))
    tau2 = draw(st.floats(*logit_variance))
    ratio = draw(_log_uniform(0.25, 4.0))  # sigma_q / sigma_k
    s2 = logit_scale_squared(d_head, scale)
    rho2 = d * _nu1_estimate(d, eps, sigma_embed)
    product = math.sqrt(tau2 / (s2 * d_head * rho2**2))  # sigma_q sigma_k
    sigma_q, sigma_k = math.sqrt(product * ratio), math.sqrt(product / ratio)
    return ModelSpec(
        d_model=d, n_heads=n_heads, n_layers=1, seq_len=seq_len, attn_only=True, ln_eps=eps, attn_scale=scale,
        sigma_embed=sigma_embed, sigma_q=sigma_q, sigma_k=sigma_k, sigma_v=sigma_v, sigma_o=sigma_o,
    )


def specs(
    *,
    max_d_model: int = 64,
    min_d_model: int = 8,
    max_seq_len: int = 16,
    min_seq_len: int = 2,
    max_heads: int = 4,
    d_heads: Sequence[int] = DEFAULT_D_HEADS,
    logit_variance: tuple[float, float] = MODERATE_LOGITS,
    ln_eps: Sequence[float] = (0.0, 1e-5),
    attn_scale: Sequence[str] = ("sqrt", "linear"),
    sigma_range: tuple[float, float] = (0.02, 1.0),
    max_flops: int | None = None,
) -> st.SearchStrategy[ModelSpec]:
    """Valid one-layer, attention-only `ModelSpec`s with continuous Gaussian inputs.

    - size: ``d_model = n_heads * d_head`` in ``[min_d_model, max_d_model]`` with
      ``d_head`` from ``d_heads`` and ``n_heads <= max_heads``; ``seq_len`` in
      ``[min_seq_len, max_seq_len]``, lowered until `attention_flops` fits ``max_flops``;
    - regime: the mean logit variance in ``logit_variance`` (e.g. `SMALL_LOGITS`,
      `MODERATE_LOGITS`); ``ln_eps`` from ``ln_eps`` (``(0.0,)`` keeps every best-level
      result exact); ``attn_scale`` from ``attn_scale``;
    - ``sigma_embed``, ``sigma_v``, ``sigma_o`` log-uniform in ``sigma_range``.
    """
    if min_d_model < 4 or max_d_model < min_d_model:
        raise ValueError(f"need 4 <= min_d_model <= max_d_model, got {min_d_model}, {max_d_model}")
    if not any(min_d_model <= h * dh <= max_d_model for dh in d_heads for h in range(1, max_heads + 1)):
        raise ValueError(f"no n_heads <= {max_heads} and d_head in {list(d_heads)} give d_model in "
                         f"[{min_d_model}, {max_d_model}]")
    if min_seq_len < 1 or max_seq_len < min_seq_len:
        raise ValueError(f"need 1 <= min_seq_len <= max_seq_len, got {min_seq_len}, {max_seq_len}")
    lo, hi = logit_variance
    if not 0 <= lo <= hi:
        raise ValueError(f"logit_variance must be a range 0 <= lo <= hi, got {logit_variance!r}")
    if not ln_eps or any(e < 0 for e in ln_eps):
        raise ValueError(f"ln_eps must be a non-empty list of values >= 0, got {ln_eps!r}")
    if not 0 < sigma_range[0] <= sigma_range[1]:
        raise ValueError(f"sigma_range must be 0 < lo <= hi, got {sigma_range!r}")
    return _specs(max_d_model, min_d_model, max_seq_len, min_seq_len, max_heads, tuple(d_heads), (float(lo), float(hi)),
                  tuple(ln_eps), tuple(attn_scale), sigma_range, max_flops)


@st.composite
def _modern_specs(draw, base, n_layers, positionals, mixed):
    spec = draw(base)
    d_head, n_heads = int(spec.d_head), int(spec.n_heads)
    schemes = [p for p in positionals if p != "rope" or d_head % 2 == 0]
    if mixed:
        positional = draw(st.lists(st.sampled_from(schemes), min_size=n_layers, max_size=n_layers))
        qk_norm = draw(st.lists(st.booleans(), min_size=n_layers, max_size=n_layers)) if d_head >= 2 else False
    else:
        positional = draw(st.sampled_from(schemes))
        qk_norm = draw(st.booleans()) and d_head >= 2
    kv = draw(st.sampled_from([k for k in range(1, n_heads + 1) if n_heads % k == 0]))
    temperature = draw(st.none() | st.builds(lambda f, s: {"floor_scale": f, "scale": s},
                                             st.sampled_from([2.0, 4.0, 8.0]), st.floats(0.0, 0.5)))
    fields = {f: getattr(spec, f) for f in ("d_model", "n_heads", "seq_len", "ln_eps", "attn_scale", "sigma_embed",
                                            "sigma_q", "sigma_k", "sigma_v", "sigma_o")}
    return ModelSpec(**fields, n_layers=n_layers, attn_only=draw(st.booleans()),
                     normalization=draw(st.sampled_from(["layernorm", "rmsnorm"])),
                     mlp=draw(st.sampled_from(["standard", "swiglu"])), n_kv_heads=kv, qk_norm=qk_norm,
                     positional=positional, rope_theta=draw(st.sampled_from([10000.0, 500000.0])),
                     attn_temperature=temperature)


def modern_specs(*, n_layers: int = 2, positionals: Sequence[str] = ("none", "rope", "alibi"), mixed: bool = True,
                 **kwargs) -> st.SearchStrategy[ModelSpec]:
    """`ModelSpec`s of modern decoder blocks (docs/modern-blocks.md) that the theory covers.

    Sizes and the logit regime as `specs` (``kwargs`` go to it: ``max_d_model``,
    ``logit_variance``, ...); then drawn: ``normalization`` (LayerNorm or RMSNorm), ``mlp``
    (standard or SwiGLU), ``n_kv_heads`` (a divisor of ``n_heads``), ``positional`` and
    ``qk_norm`` (per layer when ``mixed``; RoPE only with an even ``d_head``),
    ``rope_theta``, ``attn_temperature`` (None or a small ``floor_scale``), with ``n_layers``
    layers (with or without the MLP).

    >>> from hypothesis import given, settings
    >>> @settings(max_examples=3)
    ... @given(modern_specs(max_d_model=16, max_seq_len=4))
    ... def test_spec(spec):
    ...     assert spec.n_layers == 2
    >>> test_spec()
    """
    if n_layers < 1:
        raise ValueError(f"n_layers must be >= 1, got {n_layers}")
    bad = [p for p in positionals if p not in ("none", "rope", "alibi")]
    if bad or not positionals:
        raise ValueError(f"positionals must be a non-empty list from 'none', 'rope', 'alibi'; got {list(positionals)!r}")
    return _modern_specs(specs(**kwargs), n_layers, tuple(positionals), bool(mixed))


__all__ = ["specs", "modern_specs", "attention_flops", "SMALL_LOGITS", "MODERATE_LOGITS", "GPT2_INIT_LOGITS", "DEFAULT_D_HEADS"]
