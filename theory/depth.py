"""Theory through depth: every tap of every layer as a function of position.

The state carried from layer to layer is the *position kernel* of the residual stream,
``K[m, n] = E[x_m . x_n]/d`` (T x T): its diagonal is the variance of one coordinate at
position m, its off-diagonal the covariance that the causal average creates between
positions (in every layer after the first, the inputs of a layer are no longer independent
across positions). `predict` walks the declared block (`theory.block.block`) and maps the kernel
through each sublayer with the map of its kind (`theory.depth_maps.DEPTH_MAPS`; the
numerical maps are in `theory._kernel_maps`). For the pre-LN block::

    E   = LN(K)                      E[e_m.e_n]/d: nu_1 on the diagonal, the mean cosine off it
    A   = U(E) + diag(v (S_2 - 1/m) + v Xi/(d-1))        E[ebar_m . ebar_n]/d, ebar_m = sum_k a_mk e_k
    K  += sigma_o^2 sigma_v^2 d^2 A                        hook_resid_mid (W_o has mean 0)
    E2  = LN(K)
    K  += sigma_out^2 d_mlp F_phi(sigma_in^2 d E2)         hook_resid_post (W_out has mean 0)

* ``U[m, n] = (1/(mn)) sum_{k<=m, k'<=n} E[k, k']`` is uniform causal attention (the
  paper's picture, now with correlated keys).
* ``v_m`` is the spread of the keys ``k <= m`` about their centroid (`key_spread`): a
  part shared by all keys shifts every logit of a row alike, so only ``v_m`` makes the
  softmax non-uniform. ``S_2(m)`` and the weight-value coupling ``Xi(m)`` are the
  first-layer row expectations (`theory._quadrature.row_expectations`, exact for i.i.d.
  keys) at the effective logit variance ``tau_m^2 = s^2 sigma_q^2 sigma_k^2 d_head d^2
  nu_1(m) v_m``. At layer 0 (``E = nu_1 I``) this is the first-layer result exactly.
* ``F_phi[m, n] = E[phi(u_m) phi(u_n)]`` for Gaussian pre-activations, by Mehler's
  expansion in Hermite coefficients (`theory._activations.mehler_kernel`, any
  activation, truncation bounded); tests hold it against sympy's closed-form
  conditional means (`activation_kernel`) for ReLU and GELU.

Levels. ``best``: the recursion above. ``leading``: the paper's picture carried through
depth -- LayerNorm outputs of variance 1 (eps neglected, cosines equal to correlations),
uniform attention (A = U), the same MLP kernel. Both are *approximate* from layer 1 (the second layer) on:
the Gaussian-channel closure, the softmax rows of correlated keys replaced by i.i.d.
keys with the same spread, off-diagonal attention terms taken uniform, and the
fluctuation of the per-network kernel about its mean neglected. verify measures the
error per layer (docs/theory.md, "Through depth").

>>> from theory import ModelSpec
>>> from theory.depth import predict
>>> spec = ModelSpec(d_model=64, n_heads=4, n_layers=2, seq_len=16)
>>> pred = predict(spec)
>>> pred.var("hook_resid_post", 1).shape
(16,)
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from ._budget import TIME_LIMIT_S, format_bytes, format_count, format_seconds, resolve_memory_limit
from ._domain import check_domain
from .block import block
from .depth_maps import DEPTH_MAPS, entry, softmax_rows  # noqa: F401  (softmax_rows: re-exported, tests use it)
from .depth_maps._state import Layer, Stream
from .prediction import Prediction, TapPrediction
from .spec import ModelSpec
from .taps import block_taps

LEVELS = ("best", "leading")

# The relative error declared for approximate results: derived per tap (`theory.tolerance.depth_tolerance`).

# `theory.depth.predict` returns the one prediction type.
DepthPrediction = Prediction


def _check_spec(spec: ModelSpec, level: str) -> None:
    if spec.is_symbolic:
        raise ValueError(
            "the depth recursion is numeric (a T x T kernel per layer); give numbers for every "
            "spec field. Symbolic first-layer formulas come from theory.derive."
        )
    check_domain(spec, evaluate=True, level=level)


# Peak memory of one layer's recursion beyond the kernels it keeps, in T x T float64
# arrays: measured with tracemalloc at T = 256 and 512 (10.4-11.7), with margin.
WORKING_KERNELS = 16


def memory_estimate(spec: ModelSpec, layers: int, keep_kernels: bool) -> float:
    """Bytes the recursion needs: the working set, the kernels kept (3 per block, 2
    attention-only) and the per-position values of every tap (up to 3 arrays of T, and
    about 1 kB of Python objects each)."""
    T, L = float(spec.seq_len), float(layers)
    kept = (2 if spec.attn_only else 3) * L if keep_kernels else 0.0
    per_layer = len(block_taps(spec))
    return (kept + WORKING_KERNELS) * T * T * 8.0 + L * per_layer * (3 * T * 8.0 + 1000.0)


def _check_memory(spec: ModelSpec, layers: int, keep_kernels: bool, force: bool, memory_limit: float | None) -> None:
    need = memory_estimate(spec, layers, keep_kernels)
    memory_limit, source = resolve_memory_limit(memory_limit)
    if force or memory_limit is None or need <= memory_limit:
        return
    one_layer = memory_estimate(spec, 1, keep_kernels)
    culprit = (f"seq_len = {format_count(spec.seq_len)}" if one_layer > memory_limit
               else f"n_layers = {format_count(layers)}")
    raise ValueError(
        f"{culprit}: the depth recursion needs about {format_bytes(need)} (T x T kernels, T = seq_len = "
        f"{format_count(spec.seq_len)}; {format_count(layers)} layers), limit {format_bytes(memory_limit)} ({source}); "
        f"pass --force (force=True) to try anyway")


def _check_time(first_layer_s: float, layers: int, force: bool, time_limit: float | None,
                progress: Callable[[str], None] | None) -> None:
    """After the first layer (layer 0): say how long the rest takes, and refuse past the time limit (measured, not guessed)."""
    total = first_layer_s * layers
    limit = TIME_LIMIT_S if time_limit is None else float(time_limit)
    if progress and layers > 1:
        progress(f"layer 0 took {format_seconds(first_layer_s)}; {format_count(layers)} layers: about {format_seconds(total)}")
    if not force and total > limit:
        raise ValueError(
            f"n_layers = {format_count(layers)}: the depth recursion would take about {format_seconds(total)} "
            f"(layer 0 took {format_seconds(first_layer_s)}), limit {format_seconds(limit)}; "
            f"ask for fewer layers (--layers) or pass --force (force=True)")


def predict(
    spec: ModelSpec,
    level: str = "best",
    progress: Callable[[str], None] | None = None,
    layers: int | None = None,
    *,
    keep_kernels: bool = True,
    force: bool = False,
    memory_limit: float | None = None,
    time_limit: float | None = None,
) -> DepthPrediction:
    """Predict mean and variance of every tap of every layer at positions 1..T.

    ``level``: ``"best"`` (the kernel recursion with the finite-d LayerNorm, softmax and
    coupling corrections) or ``"leading"`` (the paper's uniform-attention picture carried
    through depth). ``progress`` (optional) is called with one line per layer.
    ``layers`` (optional) stops after that many blocks (the recursion never needs
    deeper ones to predict shallower taps).

    Size guards: the memory (`memory_estimate`: T x T kernels) is checked against
    ``memory_limit`` (bytes; default 80% of the RAM available, `theory._budget`) before
    the first layer, and the time, measured on the first layer and multiplied by the
    number of layers, against ``time_limit`` (seconds; default one day); ``force``
    skips both. ``keep_kernels = False`` keeps no kernels (``kernels`` is empty), for
    callers that only read ``values``.
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}; got {level!r}")
    _check_spec(spec, level)
    L = int(spec.n_layers)
    if layers is not None:
        if isinstance(layers, bool) or not isinstance(layers, int) or not 1 <= layers <= L:
            raise ValueError(f"layers must be an integer in 1..n_layers ({L}), got {layers!r}")
        L = layers
    _check_memory(spec, L, keep_kernels, force, memory_limit)
    T = int(spec.seq_len)
    records: dict[str, TapPrediction] = {}
    kernels: dict[str, np.ndarray] = {}
    stream = Stream(K=float(spec.sigma_embed) ** 2 * np.eye(T))
    started = time.perf_counter()
    for layer in range(L):
        if layer == 1:
            _check_time(time.perf_counter() - started, L, force, time_limit, progress)
        at = Layer(spec, layer, level == "best", records, kernels if keep_kernels else {}, progress)
        _block(spec, layer, stream, at)
    return Prediction(spec, level, tuple(records.values()), kernels)


def _block(spec: ModelSpec, layer: int, stream: Stream, at: Layer) -> None:
    """One declared block (`theory.block.block`): the entry, then each sublayer's kernel map."""
    at.stream = stream
    entry(stream, at)
    sublayers = list(block(spec, layer))
    stream.writes_per_block = sum(1 for sub in sublayers if sub.kind == "residual")
    for i, sub in enumerate(sublayers):
        stream.opens = sublayers[i + 1].kind if i + 1 < len(sublayers) else ""
        DEPTH_MAPS[sub.kind](sub, stream, at)
