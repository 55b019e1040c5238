"""Item 4 of issue 20: the variance of the attention output past the training length, and
what the theory predicts there at initialisation.

Li et al. 2025 ("On Vanishing Variance in Transformer Length Generalization", arXiv
2504.02827) plot the std of a fixed coordinate of a trained model's first-layer attention
output against the sequence length and find it keeps shrinking past the training length,
which they tie to the failure to generalise in length. A NoPE (or RoPE) model runs on any
length (`NoPETransformer.embed_input`), so the same is measured here, for the trained model
and for its own initialisation, on ``sequences`` held-out windows of ``factor x seq_len`` bytes:

* per layer and position ``m = 1 .. factor T``: ``Var`` of one coordinate of
  ``blocks.l.hook_attn_out`` (pooled, as in `measure`) with its delete-one-document
  jackknife error, and ``Var across inputs`` (a fixed coordinate's variance across windows,
  averaged over coordinates: the square of Li et al.'s quantity) at log-spaced positions;
* the slopes of ``ln Var`` against ``ln m`` inside the training length (``m <= T``) and past
  it (``T <= m <= factor T``), each with its jackknife error over documents.

**The theory overlay** (`theory_beyond`, `iid_control`): `theory.depth.predict` (level
``best``, the annealed measure: an expectation over weights and inputs) of
``Var(blocks.l.hook_attn_out)`` at m = 1 .. factor T for the model's own spec (its sigmas,
GPT-2 output scaling, eps, MLP, positional scheme) with ``vocab_size = None``: i.i.d.
Gaussian token embeddings, the input law the theory is derived for. Real bytes are not
that: a window repeats bytes, and text repeats them in bursts, so the average over m keys
does not shrink like that of m independent inputs. The control that matches the theory's
assumption as closely as a byte model can is the *same* init network on i.i.d. uniform
random bytes (``iid_control``; a byte table of 256 rows repeats a row with probability 1/256
per pair, which removes a share ~1/256 of the across-inputs variance at uniform attention).
Stored beside the measurement (``beyond["theory"]``, ``beyond["init_iid"]``) with the
ratios measured / theory at the fit positions; the figure renders them (`figures`).
Assumptions of the comparison: one frozen network (quenched) against the annealed law, so
the ratio of one network fluctuates about 1 by more than its jackknife error over windows.

``python -m simulate.experiments.train.beyond DIR`` adds the overlay to a measured run
(``DIR/measure/results.json``) without measuring it again, and redraws the figure.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from theory._argparse import OneLineParser
from theory._guard import guarded
from theory._outputs import atomic_write_text

from ...engine import derive_seed
from ...record import record_sequences
from .clustered import across_inputs_variance, jackknife_se, fit_slope, pooled_variance
from .corpus import PSEUDO_DOCUMENTS, Corpus
from .evaluation import heldout_batch
from .figures import render
from .files import load_model, read_run_json

FACTOR = 4
STREAM_IID = 0x11D  # the seed stream of the i.i.d.-byte control windows
LONG_MODELS = ("none", "rope")  # models whose attention has no table that ends at seq_len


def _slope(pos: np.ndarray, full: np.ndarray, out: np.ndarray | None, lo: int, hi: int) -> tuple[float, float]:
    keep = (pos >= lo) & (pos <= hi)
    se = float("nan") if out is None else float(jackknife_se(fit_slope(pos[keep], out[:, keep])))
    return float(fit_slope(pos[keep], full[keep])), se


def _fit(T: int, length: int) -> np.ndarray:
    fit = np.unique(np.round(np.geomspace(1, length, 32)).astype(int))
    return np.unique(np.append(fit, T))


def _measure(model, ids: torch.Tensor, docs: np.ndarray, factor: int) -> dict:
    """Pooled and across-inputs Var of ``hook_attn_out`` per layer on the windows ``ids`` (N, factor T)."""
    T, length = model.spec.seq_len, ids.shape[1]
    fit = _fit(T, length)
    L = model.spec.n_layers
    seq = record_sequences(model, ids, taps=[f"blocks.{l}.hook_attn_out" for l in range(L)], names="hooked", values_at=fit)
    out = {"factor": factor, "seq_len": T, "sequences": int(ids.shape[0]), "documents": int(np.unique(docs).size),
           "fit_positions": fit.tolist(), "layers": []}
    for l in range(L):
        d = seq[f"blocks.{l}.hook_attn_out"]
        var, var_se, var_out = pooled_variance(d["m1"], d["m2"], docs)
        vin, vin_se, vin_out = across_inputs_variance(d["values"], docs)
        idx = fit - 1
        layer = {"var": var.tolist(), "var_se": var_se.tolist(), "var_across_inputs_at_fit": vin.tolist(),
                 "var_across_inputs_se_at_fit": vin_se.tolist()}
        for key, full, left in (("", var[idx], var_out[:, idx]), ("_in", vin, vin_out)):
            layer["slope_inside" + key], layer["slope_inside" + key + "_se"] = _slope(fit, full, left, 1, T)
            layer["slope_beyond" + key], layer["slope_beyond" + key + "_se"] = _slope(fit, full, left, T, length)
        out["layers"].append(layer)
    out["positions"] = list(range(1, length + 1))
    return out


def variance_beyond(model, corpus: Corpus, factor: int = FACTOR, sequences: int = 64,
                    blocks: int = PSEUDO_DOCUMENTS) -> dict | None:
    """The measurement of the module docstring for one NoPE or RoPE model; None when the held-out
    text has fewer than 4 windows of ``factor x seq_len`` bytes, or too few documents for the errors."""
    if model.pos_embed is not None:
        raise ValueError("variance beyond the training length needs a NoPE or RoPE model (a learned table ends at seq_len)")
    length = factor * model.spec.seq_len
    if corpus.heldout.size // length < 4:
        return None
    ids, docs = heldout_batch(corpus, length, sequences, blocks)
    _, per_doc = np.unique(docs, return_counts=True)
    if per_doc.size < 2 or ids.shape[0] - per_doc.max() < 2:  # the jackknife needs 2 windows left without any document
        return None
    return _measure(model, ids, docs, factor)


def iid_control(model, factor: int = FACTOR, sequences: int = 64, seed: int = 0) -> dict:
    """`variance_beyond` on ``sequences`` windows of i.i.d. uniform random bytes (each window its
    own document), seeded by ``derive_seed(seed, STREAM_IID)``: the input law closest to the theory's."""
    if model.pos_embed is not None:
        raise ValueError("the i.i.d. control past the training length needs a NoPE or RoPE model")
    gen = torch.Generator().manual_seed(derive_seed(seed, STREAM_IID))
    ids = torch.randint(model.spec.vocab_size, (sequences, factor * model.spec.seq_len), generator=gen)  # (N, factor T)
    out = _measure(model, ids, np.arange(sequences), factor)
    out["inputs"] = f"i.i.d. uniform bytes, derive_seed({seed}, STREAM_IID)"
    return out


def theory_beyond(spec, factor: int = FACTOR, level: str = "best") -> dict:
    """``theory.depth.predict`` of ``Var(blocks.l.hook_attn_out)`` at m = 1 .. factor T for
    ``spec`` with i.i.d. Gaussian inputs (``vocab_size = None``), and its slopes inside and past T."""
    from theory.depth import predict  # deferred: the theory recursion is only needed for the overlay

    T = int(spec.seq_len)
    tspec = spec.replace(vocab_size=None, seq_len=factor * T)
    pred = predict(tspec, level, keep_kernels=False)
    fit = _fit(T, factor * T)
    layers = []
    for l in range(int(spec.n_layers)):
        var = np.asarray(pred.var("hook_attn_out", l), dtype=float)
        lay = {"var": var.tolist()}
        lay["slope_inside"], _ = _slope(fit, var[fit - 1], None, 1, T)
        lay["slope_beyond"], _ = _slope(fit, var[fit - 1], None, T, factor * T)
        layers.append(lay)
    return {"level": level, "measure": "annealed", "inputs": "i.i.d. Gaussian token embeddings (vocab_size = None)",
            "spec": tspec.to_dict(), "fit_positions": fit.tolist(), "layers": layers}


def overlay(beyond: dict, init_model, seed: int = 0) -> dict:
    """Add ``theory``, ``init_iid`` and ``ratio_to_theory`` to one model's ``beyond`` entry (in place)."""
    factor = beyond["trained"]["factor"]
    beyond["theory"] = theory_beyond(init_model.spec, factor)
    beyond["init_iid"] = iid_control(init_model, factor, beyond["trained"]["sequences"], seed)
    fit = np.asarray(beyond["trained"]["fit_positions"])
    ratios = {}
    for which in ("init_iid", "init", "trained"):
        rows = []
        for lay, th in zip(beyond[which]["layers"], beyond["theory"]["layers"]):
            t = np.asarray(th["var"])[fit - 1]
            rows.append({"across_inputs": (np.asarray(lay["var_across_inputs_at_fit"]) / t).tolist(),
                         "across_inputs_se": (np.asarray(lay["var_across_inputs_se_at_fit"]) / t).tolist(),
                         "pooled": (np.asarray(lay["var"])[fit - 1] / t).tolist(),
                         "pooled_se": (np.asarray(lay["var_se"])[fit - 1] / t).tolist()})
        ratios[which] = rows
    beyond["ratio_to_theory"] = {"fit_positions": fit.tolist(), **ratios}
    return beyond


def add_overlay(run_dir: str | Path, seed: int | None = None) -> list[str]:
    """`overlay` for every NoPE/RoPE model of a measured run; rewrites ``measure/results.json``."""
    run_dir = Path(run_dir)
    path = run_dir / "measure" / "results.json"
    if not path.is_file():
        raise ValueError(f"no measured run in {str(run_dir)!r} (no measure/results.json; run `python -m simulate train` first)")
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read {str(path)!r} as JSON ({err})") from None
    if not (isinstance(results, dict) and isinstance(results.get("models"), dict)):
        raise ValueError(f"{str(path)!r} is not the results of `simulate train`'s measurement (no models)")
    if seed is None:
        seed = int(read_run_json(run_dir / "run.json").get("config", {}).get("seed", 0)) if (run_dir / "run.json").exists() else 0
    done = []
    for positional, entry in results.get("models", {}).items():
        if positional in LONG_MODELS and entry.get("beyond"):
            overlay(entry["beyond"], load_model(run_dir / positional / "init.pt"), seed)
            done.append(positional)
    if not done:
        raise ValueError(f"{str(path)!r} has no measurement past the training length (measure with --beyond 4)")
    atomic_write_text(path, json.dumps(results, indent=1) + "\n")
    return done


@guarded("simulate.experiments.train.beyond")
def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(error_prefix="beyond", prog="python -m simulate.experiments.train.beyond",
                      description="Add the theory's variance at init past the training length to a measured run, redraw.")
    p.add_argument("run", help="a run directory measured with --beyond")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-figures", action="store_true")
    args = p.parse_args(argv)
    try:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
        done = add_overlay(args.run)
        if not args.no_figures:
            render(args.run)
    except ValueError as err:
        sys.stderr.write(f"beyond: error: {err}\n")
        return 2
    print(f"[beyond] theory overlay added for {', '.join(done)} -> {Path(args.run) / 'measure'}", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


__all__ = ["variance_beyond", "iid_control", "theory_beyond", "overlay", "add_overlay", "FACTOR", "LONG_MODELS"]
