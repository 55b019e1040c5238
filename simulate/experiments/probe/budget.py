"""The probe's size guard: its memory and time estimated before anything is allocated.

The same limits as `simulate.run` (the engine's `refuse_sizes`: 80% of the available
memory, one day of estimated work; ``force=True`` skips them), for the probe's own work:
one frozen network at a time, its hidden states at every layer, the probes' fits.
"""

from __future__ import annotations

import math

from ...engine import RunSizes, layer_projections, nan_to_inf, refuse_sizes, resolve_device, size_value


def probe_estimate(z: RunSizes) -> dict[str, float]:
    """Memory and time of `probe_experiment` (one frozen network at a time).

    ``z`` is a quenched `RunSizes` with ``samples`` = sequences per network, ``batch`` = 1,
    ``reservoir`` = networks x (variants + sigmas), ``chunk_size`` = the probe's chunk of 16,
    and ``positions`` = the MLP probe's hidden width.
    """
    T, d, L, item = z.seq_len, z.d_model, z.n_layers, 4.0
    n = z.samples  # sequences per network
    kinds = layer_projections(z)
    weights = L * sum(o * i for o, i in kinds) * item
    table = 2 * z.vocab_size * d * item if z.vocab_size else 0.0
    c = min(16.0, n)
    R = c * T
    wide = max(3 * d, 0.0 if z.attn_only else z.mlp_ratio * d)
    forward = (4 * R * wide + 6 * R * d) * item + c * L * T * d * item + (T * d * item if z.learned else 0.0)
    states = L * n * T * d * item + L * n * T * 8
    probes = 3 * n * T * d * 8 + 4 * d * d * 8  # float64 copies of one layer, Z^T Z and its eigenvectors
    posterior = 3 * n * T * T * 8  # log-likelihoods and posteriors of the test tokens (n/4 of them), x 4 copies
    hidden = z.positions
    mlp = n * T * (hidden + T) * 4 * 3
    device = weights + table + forward + states + probes + posterior + mlp
    runs = z.reservoir  # networks x (variants + sigmas)
    flops = runs * (n * L * (sum(2 * T * o * i for o, i in kinds) + 4 * T * T * d + 5 * z.n_heads * T * T)
                    + L * (2 * n * T * d * d + 25 * n * T * T * 4 + 10 * 6 * n * T * (d * hidden + hidden * T)))
    normals = runs * (L * sum(o * i for o, i in kinds) + (z.vocab_size * d if z.vocab_size else 0.0) + n * T)
    launches = runs * (math.ceil(n / c) * 30 * L + L * 200)
    largest = max(L * n * T * d, n * T * T, z.vocab_size * d if z.vocab_size else 0.0, R * wide)
    return {"device": nan_to_inf(device), "host": 0.0, "flops": nan_to_inf(flops), "normals": nan_to_inf(normals),
            "launches": nan_to_inf(launches), "host_ops": 0.0, "largest_tensor": nan_to_inf(largest)}


_PROBE_CULPRITS = (("d_model", 8.0), ("n_layers", 1.0), ("seq_len", 8.0), ("vocab_size", 0.0), ("n_heads", 1.0),
                   ("mlp_ratio", 1.0), ("samples", 16.0))


def check_probe_size(cfg, *, force=False, memory_limit=None, time_limit=None, device=None) -> dict:
    """Refuse (ValueError) a probe experiment whose estimated memory or time exceeds the limits."""
    spec = cfg.spec
    vocab = spec.vocab_size
    runs = cfg.networks * (len(cfg.positionals) + len(cfg.sigmas))
    z = RunSizes(
        d_model=size_value(spec.d_model), n_heads=size_value(spec.n_heads), n_layers=size_value(spec.n_layers),
        seq_len=size_value(spec.seq_len), mlp_ratio=size_value(spec.mlp_ratio), vocab_size=size_value(vocab),
        attn_only=bool(spec.attn_only), learned="learned" in cfg.positionals, samples=size_value(cfg.sequences),
        batch=1.0, chunk_size=16.0, positions=size_value(cfg.mlp_hidden), reservoir=size_value(runs), quenched=True,
        method="explicit", item=4.0, taps=(), memory_budget=0.0,
    )
    values = {"d_model": spec.d_model, "n_layers": spec.n_layers, "seq_len": spec.seq_len, "n_heads": spec.n_heads,
              "vocab_size": vocab, "mlp_ratio": spec.mlp_ratio, "samples": cfg.sequences}
    names = {"samples": "sequences"}
    if device is None:
        device = resolve_device(cfg.device)
    dev_type = getattr(device, "type", "cpu")
    try:
        return refuse_sizes(z, probe_estimate, _PROBE_CULPRITS, values, device_type=dev_type, device=device, force=force,
                             memory_limit=memory_limit, time_limit=time_limit, what="probe")
    except ValueError as err:
        text = str(err)
        for internal, public in names.items():
            if text.startswith(internal + " = "):
                text = public + text[len(internal):]
        raise ValueError(text) from None
