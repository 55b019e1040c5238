"""Position probing in frozen random transformers, with and without positional embeddings.

Reproduces the first experiment of Chi et al. (ACL 2023, arXiv 2305.13571): a randomly
initialised, *frozen* causal transformer (the quenched measure: one network, fresh
sequences) is fed token ids drawn uniformly from a vocabulary, its hidden states
``blocks.{l}.hook_resid_post`` are recorded at every layer, and probes are trained to read
the absolute position ``m = 1..T`` from them on some sequences and tested on others.

Probes (each sees the hidden state ``x_m`` (d_model) of one token, never its neighbours):

* ``linear`` -- ridge regression of ``m`` on the standardised full hidden state, closed
  form (SVD), the ridge chosen on validation sequences from a log grid;
* ``mlp`` -- the probe of Haviv et al. 2022: positions as ``T`` classes, a one-hidden-layer
  ReLU MLP trained with cross-entropy (Adam, early stopping on validation loss);
* ``variance_only`` -- sees only the per-token second moment ``s_m = |x_m|^2 / d``: a
  Gaussian class-conditional model of ``log s`` per position (mean and sd fitted on the
  training sequences), inverted by Bayes' rule with a uniform prior over positions;
* ``theory`` -- no training at all: the predicted curve ``v(m) = E|x_m|^2 / d`` of
  ``theory.depth`` (NoPE only), inverted by `invert_variance_curve`.

Every probe yields a posterior-mean (or regression) point estimate ``p`` in ``[1, T]`` and
a class ``c`` (an integer position: the argmax class, or ``round(p)`` for the regression).
Metrics on the test sequences: ``mae = mean |p - m|``, ``mad = mean |c - m|`` (Haviv et al.'s
mean absolute distance), ``r2`` of ``p`` against ``m`` and ``r2_log`` of ``log p`` against
``log m`` (``1 - SS_res / SS_tot``). Each metric is computed per network; the reported value
is the mean over networks and ``*_se`` its standard error (sd / sqrt(K)).
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import torch

from theory import ModelSpec

from ._draw import Drawer, draw_network, sample_plan, unpack
from ._forward import forward
from ._positional import check_positional
from ._run import resolve_device
from ._seeding import derive_seed

PROBES = ("linear", "mlp", "variance_only", "theory")
POSITIONALS = ("none", "learned", "sinusoidal", "rope", "alibi")
DEFAULT_VOCAB = 50257  # GPT-2's vocabulary
STREAM_PROBE_NETWORK = 0x9B0E
STREAM_PROBE_MLP = 0x31F7
SIGMA_FIELDS = ("sigma_embed", "sigma_q", "sigma_k", "sigma_v", "sigma_o", "sigma_mlp_in", "sigma_mlp_out")


def default_spec() -> ModelSpec:
    """The probe's default network: GPT-2's initialisation at a quarter of its width.

    d_model 128, 4 heads of 32, 4 layers with MLP, context 128, every sigma 0.02,
    LayerNorm eps 1e-5, tanh GELU, GPT-2's vocabulary of 50257 ids (uniform). Small enough
    that five variants x three networks finish in a few minutes on two CPU cores; pass
    GPT-2 small itself with ``--spec``.
    """
    return ModelSpec(d_model=128, n_heads=4, n_layers=4, seq_len=128, vocab_size=DEFAULT_VOCAB)


def with_sigma(spec: ModelSpec, sigma: float) -> ModelSpec:
    """``spec`` with every init std (``sigma_embed`` and the six weight sigmas) set to ``sigma``."""
    return spec.replace(**{f: float(sigma) for f in SIGMA_FIELDS})


# ====================================================================== metrics
def position_metrics(point: np.ndarray, cls: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """``mae``, ``mad``, ``r2``, ``r2_log`` of position estimates against 1-based ``true``.

    >>> m = np.arange(1, 5)
    >>> position_metrics(m.astype(float), m, m)["r2"]
    1.0
    """
    point = np.asarray(point, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    cls = np.asarray(cls, dtype=np.float64)

    def r2(pred, y):
        tot = np.sum((y - y.mean()) ** 2)
        return float(1.0 - np.sum((pred - y) ** 2) / tot) if tot > 0 else float("nan")

    return {
        "mae": float(np.mean(np.abs(point - true))),
        "mad": float(np.mean(np.abs(cls - true))),
        "r2": r2(point, true),
        "r2_log": r2(np.log(np.clip(point, 1.0, None)), np.log(true)),
    }


def resolution_length(mae_by_position: np.ndarray, threshold: float = 1.0) -> int | None:
    """The first 1-based position whose mean absolute error reaches ``threshold``.

    With ``threshold = 1`` this is where a probe stops resolving neighbouring positions: its
    typical error there is a whole position. None when the error stays below it.

    >>> resolution_length(np.array([0.0, 0.2, 0.9, 1.3, 0.8]))
    4
    """
    above = np.nonzero(np.asarray(mae_by_position) >= threshold)[0]
    return int(above[0]) + 1 if len(above) else None


# ====================================================================== probes
@dataclass
class Estimate:
    """Position estimates of a probe: ``point`` (float, in [1, T]) and ``cls`` (int)."""

    point: np.ndarray
    cls: np.ndarray
    info: dict = field(default_factory=dict)


def _posterior_estimate(loglik: np.ndarray) -> Estimate:
    """Posterior mean and mode over positions 1..T from log-likelihoods (n, T), uniform prior."""
    loglik = loglik - loglik.max(axis=1, keepdims=True)
    post = np.exp(loglik)
    post /= post.sum(axis=1, keepdims=True)
    positions = np.arange(1, loglik.shape[1] + 1, dtype=np.float64)
    return Estimate(point=post @ positions, cls=np.argmax(loglik, axis=1) + 1)


def invert_variance_curve(curve, observed, dof: float) -> Estimate:
    """Positions whose predicted per-coordinate variance best explains observed second moments.

    ``curve[m-1] = v(m) = E|x_m|^2 / d`` is a predicted variance-vs-position curve (any
    shape: it need not be monotone); ``observed`` holds per-token second moments
    ``s = |x|^2 / d``. Under the model ``s ~ v(m) chi^2_k / k`` (``k = dof``, e.g. ``d`` i.i.d.
    Gaussian channels), the log-likelihood of position ``m`` is

        l(m) = (k/2) (log(s / v(m)) - s / v(m)) + const,

    maximised where ``v(m)`` is nearest ``s`` on the log scale. The estimate is the posterior
    over ``m = 1..T`` with a uniform prior: ``point`` its mean, ``cls`` its mode (the maximum
    likelihood position; for a non-monotone curve, the position whose predicted value is
    nearest, with ties going to the smaller ``m``). No training.

    >>> curve = 1.0 + 1.0 / np.arange(1, 9)
    >>> invert_variance_curve(curve, curve[[0, 3]], dof=1e6).cls.tolist()
    [1, 4]
    """
    curve = np.asarray(curve, dtype=np.float64)
    observed = np.asarray(observed, dtype=np.float64).reshape(-1)
    if curve.ndim != 1 or len(curve) < 1 or not np.all(np.isfinite(curve)) or np.any(curve <= 0):
        raise ValueError("curve must be a 1-D array of positive, finite predicted variances (one per position)")
    if not (dof > 0):
        raise ValueError(f"dof must be > 0, got {dof!r}")
    ratio = np.clip(observed, 1e-300, None)[:, None] / curve[None, :]  # (n, T)
    return _posterior_estimate(0.5 * dof * (np.log(ratio) - ratio))


def fit_variance_only(s_train: np.ndarray, s_test: np.ndarray) -> Estimate:
    """The variance-only probe: a Gaussian model of ``log s`` per position, inverted by Bayes.

    ``s_*`` are second moments ``|x_m|^2 / d``, shape (sequences, T). From the training
    sequences, ``mu_m`` and ``sd_m`` of ``log s`` at each position; a test token's
    log-likelihood of position ``m`` is ``log N(log s; mu_m, sd_m^2)``.
    """
    ls_tr = np.log(np.clip(s_train, 1e-300, None))  # (n, T)
    mu = ls_tr.mean(axis=0)  # (T,)
    sd = np.maximum(ls_tr.std(axis=0, ddof=1), 1e-12)  # (T,)
    ls = np.log(np.clip(s_test, 1e-300, None)).reshape(-1, 1)  # (n*T, 1)
    loglik = -0.5 * ((ls - mu) / sd) ** 2 - np.log(sd)
    est = _posterior_estimate(loglik)
    est.info["dof_effective"] = float(np.mean(2.0 / sd**2))  # Var(log chi^2_k / k) ~ 2/k
    return est


def fit_ridge(X_tr, y_tr, X_va, y_va, X_te, T: int, grid: int = 25) -> Estimate:
    """Ridge regression of position on the standardised hidden state, closed form.

    ``beta(lam) = V diag(1 / (e + lam)) V^T Z^T (y - mean y)`` from the eigen-decomposition
    ``V diag(e) V^T`` of ``Z^T Z`` (``Z`` the standardised training features); ``lam``
    minimises the validation squared error over ``e_max * 10^[-10 .. 2]`` (``grid`` points).
    Predictions are clipped to [1, T].
    """
    mean, sd = X_tr.mean(axis=0), X_tr.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    Z_tr, Z_va, Z_te = ((X - mean) / sd for X in (X_tr, X_va, X_te))
    y_mean = y_tr.mean()
    eig, V = np.linalg.eigh(Z_tr.T @ Z_tr)
    eig = np.clip(eig, 0.0, None)
    Vzy = V.T @ (Z_tr.T @ (y_tr - y_mean))  # (d,)
    ZV_va = Z_va @ V  # (n_va, d)
    lams = (eig[-1] if eig[-1] > 0 else 1.0) * np.logspace(-10, 2, grid)
    errs = [np.mean((ZV_va @ (Vzy / (eig + lam)) + y_mean - y_va) ** 2) for lam in lams]
    lam = float(lams[int(np.argmin(errs))])
    beta = V @ (Vzy / (eig + lam))
    point = np.clip(Z_te @ beta + y_mean, 1.0, T)
    return Estimate(point=point, cls=np.rint(point).astype(np.int64), info={"ridge": lam})


def fit_mlp(X_tr, y_tr, X_va, y_va, X_te, T: int, *, seed: int, hidden: int = 128, epochs: int = 10,
            batch: int = 1024, lr: float = 3e-3, patience: int = 2) -> Estimate:
    """The MLP probe of Haviv et al. 2022: positions as ``T`` classes.

    ``softmax(W_2 relu(W_1 z + b_1) + b_2)`` on the standardised hidden state ``z``, trained
    with cross-entropy by Adam on shuffled mini-batches; the epoch with the lowest
    validation loss is kept (early stopping after ``patience`` epochs without improvement).
    ``point`` is the posterior mean position, ``cls`` the argmax class. Seeded: the same
    ``seed`` gives the same probe (one torch thread).
    """
    mean, sd = X_tr.mean(axis=0), X_tr.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    to_t = lambda X: torch.from_numpy(((X - mean) / sd).astype(np.float32))  # noqa: E731
    Z_tr, Z_va, Z_te = to_t(X_tr), to_t(X_va), to_t(X_te)
    t_tr = torch.from_numpy(y_tr.astype(np.int64) - 1)
    t_va = torch.from_numpy(y_va.astype(np.int64) - 1)
    gen = torch.Generator().manual_seed(seed)
    d = Z_tr.shape[1]

    def init(fan_in, shape):  # PyTorch's default Linear init, from our generator
        bound = 1.0 / math.sqrt(fan_in)
        return (torch.rand(*shape, generator=gen) * 2 - 1).mul_(bound).requires_grad_()

    params = [init(d, (d, hidden)), init(d, (hidden,)), init(hidden, (hidden, T)), init(hidden, (T,))]

    def logits(Z):
        W1, b1, W2, b2 = params
        return torch.relu(Z @ W1 + b1) @ W2 + b2

    opt = torch.optim.Adam(params, lr=lr)
    best_loss, best_state, best_epoch, stale = float("inf"), None, 0, 0
    n = Z_tr.shape[0]
    for epoch in range(epochs):
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, batch):
            idx = order[i:i + batch]
            loss = torch.nn.functional.cross_entropy(logits(Z_tr[idx]), t_tr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            val = float(torch.nn.functional.cross_entropy(logits(Z_va), t_va))
        if val < best_loss - 1e-4:
            best_loss, best_state, best_epoch, stale = val, [p.detach().clone() for p in params], epoch + 1, 0
        else:
            stale += 1
            if stale >= patience:
                break
    with torch.no_grad():
        for p, b in zip(params, best_state):
            p.copy_(b)
        prob = torch.softmax(logits(Z_te), dim=-1).double().numpy()
    positions = np.arange(1, T + 1, dtype=np.float64)
    return Estimate(point=prob @ positions, cls=prob.argmax(axis=1) + 1, info={"epochs": best_epoch})


# ====================================================================== hidden states
def block_output(spec: ModelSpec) -> str:
    """The tap a probe reads: the block's output, ``hook_resid_post``, or ``hook_resid_mid``
    in an attention-only block (it has no MLP, so no ``hook_resid_post``)."""
    return "hook_resid_mid" if spec.attn_only else "hook_resid_post"


def hidden_states(spec: ModelSpec, sequences: int, seed: int, *, device: torch.device,
                  chunk: int = 16, keep_full: bool = True) -> tuple[list[np.ndarray] | None, np.ndarray]:
    """``blocks.{l}.hook_resid_post`` of one frozen network (quenched) for ``sequences`` sequences.

    The network is `simulate`'s quenched network of ``seed`` (weights, embedding table and,
    for ``learned``, position table from the network stream); sequence ``i`` draws its ids
    from its own generator ``(seed, i)``, so the numbers do not depend on ``chunk``.
    Returns the full states per layer, each (sequences, T, d) float32 (None when
    ``keep_full`` is false), and the second moments ``|x|^2 / d``, (L, sequences, T) float64.
    """
    check_positional(spec)
    T, d, L = spec.seq_len, spec.d_model, spec.n_layers
    dtype = torch.float32
    taps = [f"blocks.{l}.{block_output(spec)}" for l in range(L)]
    network, table = draw_network(spec, seed, device, dtype)
    plan = sample_plan(spec, T, with_weights=False, method="explicit")
    drawer = Drawer(plan, seed, device, dtype, workers=1)
    full = [np.empty((sequences, T, d), dtype=np.float32) for _ in range(L)] if keep_full else None
    second = np.empty((L, sequences, T), dtype=np.float64)
    try:
        for first in range(0, sequences, chunk):
            count = min(chunk, sequences - first)
            buffer, ids = drawer.draw(first, count, spec.vocab_size)
            x, _ = unpack(spec, plan, buffer, ids, table)
            x = x.reshape(1, count, T, d)  # one network, `count` sequences
            with torch.no_grad():
                cache = forward(spec, x, network, record=taps)
            for l, tap in enumerate(taps):
                h = cache[tap][0]  # (count, T, d)
                second[l, first:first + count] = h.double().pow(2).mean(dim=-1).cpu().numpy()
                if keep_full:
                    full[l][first:first + count] = h.cpu().numpy()
    finally:
        drawer.close()
    return full, second


# ====================================================================== theory curve
def theory_curves(spec: ModelSpec) -> tuple[list[np.ndarray] | None, str]:
    """Predicted ``E|x_m|^2 / d`` of ``hook_resid_post`` per layer from ``theory.depth``.

    Returns (curves or None, a note). The theory covers Gaussian inputs; a vocabulary of
    i.i.d. Gaussian rows drawn uniformly is that law while ids do not repeat, so when
    ``theory.depth`` refuses a finite vocabulary the curve of ``vocab_size = None`` is used
    (and the note says so).
    """
    try:
        from theory import depth  # lazily: the depth theory is optional here
    except ImportError as err:
        return None, f"theory.depth is not available ({err}); the theory probe was skipped"
    note = "theory.depth.predict(spec)"
    try:
        try:
            pred = depth.predict(spec)
        except (ValueError, NotImplementedError):
            pred = depth.predict(spec.replace(vocab_size=None))
            note = "theory.depth.predict(spec with vocab_size=None: Gaussian inputs)"
        curves = [np.asarray(pred.var(block_output(spec), l), dtype=np.float64) for l in range(spec.n_layers)]
    except Exception as err:  # noqa: BLE001 -- a theory failure must not sink the simulated probes
        return None, f"theory.depth failed ({type(err).__name__}: {err}); the theory probe was skipped"
    if any(c.shape != (spec.seq_len,) or not np.all(np.isfinite(c)) or np.any(c <= 0) for c in curves):
        return None, "theory.depth gave a curve that is not positive and finite at every position; the theory probe was skipped"
    return curves, note


# ====================================================================== the experiment
@dataclass(frozen=True)
class ProbeConfig:
    """What `probe_experiment` runs; see docs/probe.md."""

    spec: ModelSpec
    positionals: tuple[str, ...] = POSITIONALS
    probes: tuple[str, ...] = PROBES
    sequences: int = 256
    networks: int = 3
    seed: int = 0
    val_fraction: float = 0.125
    test_fraction: float = 0.25
    sigmas: tuple[float, ...] = ()  # NoPE sigma sweep (empty: none)
    sweep_probes: tuple[str, ...] = ("linear", "variance_only", "theory")
    theory_dof: float | None = None  # None: d_model
    mlp_hidden: int = 128
    mlp_epochs: int = 10
    device: str = "cpu"

    def __post_init__(self):
        if not isinstance(self.spec, ModelSpec) or self.spec.is_symbolic:
            raise ValueError("spec must be a numeric theory.ModelSpec")
        for p in self.positionals:
            if p not in POSITIONALS:
                raise ValueError(f"positional must be among {', '.join(POSITIONALS)}; got {p!r}")
        if not self.positionals:
            raise ValueError("give at least one positional variant")
        for p in tuple(self.probes) + tuple(self.sweep_probes):
            if p not in PROBES:
                raise ValueError(f"probe must be among {', '.join(PROBES)}; got {p!r}")
        for name, lo in (("sequences", 8), ("networks", 1), ("mlp_hidden", 1), ("mlp_epochs", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        for s in self.sigmas:
            if not (isinstance(s, (int, float)) and math.isfinite(s) and s > 0):
                raise ValueError(f"sigmas must be positive numbers, got {s!r}")
        if self.theory_dof is not None and not self.theory_dof > 0:
            raise ValueError(f"theory_dof must be > 0, got {self.theory_dof!r}")
        n_val, n_test = self.split_sizes()[1:]
        if n_val < 1 or n_test < 1 or self.sequences - n_val - n_test < 4:
            raise ValueError(
                f"sequences = {self.sequences} is too few to split into training, validation "
                f"({self.val_fraction:.0%}) and test ({self.test_fraction:.0%}) sequences; give at least 16"
            )

    def split_sizes(self) -> tuple[int, int, int]:
        n_val = max(1, int(round(self.val_fraction * self.sequences)))
        n_test = max(1, int(round(self.test_fraction * self.sequences)))
        return self.sequences - n_val - n_test, n_val, n_test


def network_seed(seed: int, repetition: int) -> int:
    """The seed of repetition ``r``'s frozen network; shared by all variants (paired comparison:
    the same weights and embedding table, with only the positional mechanism changed)."""
    return derive_seed(seed, STREAM_PROBE_NETWORK, repetition)


def _log(msg: str, progress: bool) -> None:
    if progress:
        sys.stderr.write(f"[probe] {msg}\n")
        sys.stderr.flush()


def _probe_one_network(spec, cfg: ProbeConfig, rep: int, probes, curves, dof, progress, label) -> dict:
    """All probes at all layers for one frozen network: {layer: {probe: (metrics, per-position |err|, info)}}."""
    T = spec.seq_len
    n_tr, n_va, n_te = cfg.split_sizes()
    t0 = time.perf_counter()
    need_full = any(p in probes for p in ("linear", "mlp"))
    full, second = hidden_states(spec, cfg.sequences, network_seed(cfg.seed, rep),
                                 device=resolve_device(cfg.device), keep_full=need_full)
    t_fwd = time.perf_counter() - t0
    positions = np.arange(1, T + 1)
    tr, va, te = slice(0, n_tr), slice(n_tr, n_tr + n_va), slice(n_tr + n_va, cfg.sequences)
    y = lambda n: np.tile(positions, n)  # noqa: E731  (rows are sequence-major)
    out = {}
    for l in range(spec.n_layers):
        layer = {}
        for probe in probes:
            if probe == "theory":
                if curves is None:
                    continue
                est = invert_variance_curve(curves[l], second[l, te], dof)
            elif probe == "variance_only":
                est = fit_variance_only(second[l, tr], second[l, te])
            else:
                X = full[l]
                X_tr = X[tr].reshape(-1, spec.d_model).astype(np.float64)
                X_va = X[va].reshape(-1, spec.d_model).astype(np.float64)
                X_te = X[te].reshape(-1, spec.d_model).astype(np.float64)
                if probe == "linear":
                    est = fit_ridge(X_tr, y(n_tr).astype(np.float64), X_va, y(n_va).astype(np.float64), X_te, T)
                else:
                    est = fit_mlp(X_tr, y(n_tr), X_va, y(n_va), X_te, T,
                                  seed=derive_seed(cfg.seed, STREAM_PROBE_MLP, rep * 10007 + l),
                                  hidden=cfg.mlp_hidden, epochs=cfg.mlp_epochs)
            true = y(n_te)
            err = np.stack([np.abs(est.point - true).reshape(n_te, T).mean(axis=0),  # (T,): |p - m| per position
                            np.abs(est.cls - true).reshape(n_te, T).mean(axis=0)])  # (T,): |c - m| per position
            layer[probe] = (position_metrics(est.point, est.cls, true), err, est.info)
        out[l] = layer
    _log(f"{label} network {rep + 1}/{cfg.networks}: hidden states {t_fwd:.1f}s, probes "
         f"{time.perf_counter() - t0 - t_fwd:.1f}s", progress)
    return out


def _summarise(per_network: list[dict], spec: ModelSpec, probes) -> tuple[list[dict], dict]:
    """Mean and standard error over networks, per layer and probe; per-position error curves."""
    layers, curves = [], {}
    K = len(per_network)
    for l in range(spec.n_layers):
        row = {"layer": l, "tap": f"blocks.{l}.{block_output(spec)}"}
        for probe in probes:
            if probe not in per_network[0][l]:
                continue
            metrics = [net[l][probe][0] for net in per_network]
            entry = {}
            for key in ("mae", "mad", "r2", "r2_log"):
                vals = np.array([m[key] for m in metrics])
                entry[key] = float(vals.mean())
                entry[key + "_se"] = float(vals.std(ddof=1) / math.sqrt(K)) if K > 1 else None
            err = np.mean([net[l][probe][1] for net in per_network], axis=0)  # (2, T): |p - m|, |c - m|
            curves[(l, probe)] = err
            T = err.shape[1]
            entry["resolution"] = resolution_length(err[1])
            marks = sorted({1, 2, 4, 8, 16, 32, 64, 128, 256, 512, T})
            entry["mae_at"] = {str(m): float(err[0, m - 1]) for m in marks if m <= T}
            entry["mad_at"] = {str(m): float(err[1, m - 1]) for m in marks if m <= T}
            entry["n_networks"] = K
            infos = [net[l][probe][2] for net in per_network]
            for key in infos[0]:
                entry[key] = float(np.mean([i[key] for i in infos]))
            row[probe] = entry
        layers.append(row)
    return layers, curves


def probe_experiment(cfg: ProbeConfig, progress: bool = True, *, force: bool = False,
                     memory_limit: float | None = None, time_limit: float | None = None) -> tuple[dict, dict]:
    """Run the experiment; returns (results dict for results.json, per-position error curves).

    ``results["variants"][VARIANT]["layers"][l][PROBE]`` holds ``mae, mad, r2, r2_log`` and
    their ``*_se`` over ``networks`` frozen networks, ``resolution`` (the first position whose
    class error ``mean |c - m|`` is >= 1, pooled over networks: where the probe stops telling
    neighbouring positions apart; None if never), ``mae_at``/``mad_at`` (errors at selected positions) and
    probe details (``ridge``, ``epochs``, ``dof_effective``). The theory probe runs for
    ``none`` only. ``results["sigma_sweep"]`` repeats NoPE at each sigma of ``cfg.sigmas``.

    Before anything is allocated the experiment's memory and time are estimated
    (`simulate._budget.check_probe_size`): over 80% of the available memory (or
    ``memory_limit`` bytes) or one day of estimated work (or ``time_limit`` seconds) it is
    refused with a ValueError naming the field; ``force=True`` skips the limits.
    """
    from ._budget import check_probe_size

    check_probe_size(cfg, force=force, memory_limit=memory_limit, time_limit=time_limit)
    spec = cfg.spec
    dof = float(cfg.theory_dof or spec.d_model)
    results = {"variants": {}, "sigma_sweep": [], "meta": {
        "spec": spec.to_dict(), "sequences": cfg.sequences, "networks": cfg.networks, "seed": cfg.seed,
        "split": dict(zip(("train", "val", "test"), cfg.split_sizes())), "measure": "quenched",
        "tap": block_output(spec), "theory_dof": dof, "probes": list(cfg.probes),
    }}
    all_curves: dict = {}

    theory_cache: dict = {}

    def curves_for(s: ModelSpec):
        key = s.to_json()
        if key not in theory_cache:
            theory_cache[key] = theory_curves(s)
        return theory_cache[key]

    for positional in cfg.positionals:
        vspec = spec.replace(positional=positional)
        probes = [p for p in cfg.probes if p != "theory" or positional == "none"]
        curves, note = curves_for(vspec) if "theory" in probes else (None, "")
        if "theory" in probes:
            results["meta"]["theory"] = note
            if curves is None:
                _log(note, progress)
        per_network = [
            _probe_one_network(vspec, cfg, r, probes, curves, dof, progress, positional) for r in range(cfg.networks)
        ]
        layers, err_curves = _summarise(per_network, vspec, probes)
        results["variants"][positional] = {"layers": layers}
        all_curves.update({(positional, l, p): c for (l, p), c in err_curves.items()})

    for sigma in cfg.sigmas:
        sspec = with_sigma(spec.replace(positional="none"), sigma)
        probes = list(cfg.sweep_probes)
        curves, note = curves_for(sspec) if "theory" in probes else (None, "")
        if "theory" in probes and curves is None:
            _log(f"sigma {sigma:g}: {note}", progress)
        per_network = [
            _probe_one_network(sspec, cfg, r, probes, curves, dof, progress, f"none sigma={sigma:g}")
            for r in range(cfg.networks)
        ]
        layers, err_curves = _summarise(per_network, sspec, probes)
        results["sigma_sweep"].append({"sigma": float(sigma), "layers": layers})
        all_curves.update({(f"sigma={sigma:g}", l, p): c for (l, p), c in err_curves.items()})
    return results, all_curves


def theory_resolution(curve: np.ndarray, dof: float) -> int | None:
    """Where a variance curve stops separating neighbouring positions under chi^2_k noise.

    The position uncertainty at ``m`` is ``sd(log s) / |log v(m+1) - log v(m)|`` with
    ``sd(log s) = sqrt(2 / k)``; returns the first ``m`` where it reaches 1 (None if never).

    >>> theory_resolution(1.0 + 4.0 / np.arange(1, 200), dof=128)
    4
    """
    curve = np.asarray(curve, dtype=np.float64)
    step = np.abs(np.diff(np.log(curve)))
    width = math.sqrt(2.0 / dof) / np.maximum(step, 1e-300)
    above = np.nonzero(width >= 1.0)[0]
    return int(above[0]) + 1 if len(above) else None
