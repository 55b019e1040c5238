"""Item 4 of issue 20: the variance of the attention output past the training length.

Li et al. 2025 ("On Vanishing Variance in Transformer Length Generalization", arXiv
2504.02827) plot the std of a fixed coordinate of a trained model's first-layer attention
output against the sequence length and find it keeps shrinking past the training length,
which they tie to the failure to generalise in length. A NoPE model runs on any length
(`NoPETransformer.embed_input`), so the same is measured here, for the trained model and
for its own initialisation, on ``sequences`` held-out windows of ``factor x seq_len`` bytes:

* per layer and position ``m = 1 .. factor T``: ``Var`` of one coordinate of
  ``blocks.l.hook_attn_out`` (pooled, as in `measure`) with its delete-one-document
  jackknife error, and ``Var across inputs`` (a fixed coordinate's variance across windows,
  averaged over coordinates: the square of Li et al.'s quantity) at log-spaced positions;
* the slopes of ``ln Var`` against ``ln m`` inside the training length (``m <= T``) and past
  it (``T <= m <= factor T``), each with its jackknife error over documents.

The initialisation's curve stands for the theory at init (uniform attention: slope -1 for
the across-inputs variance over i.i.d. inputs; real bytes repeat, so it is shallower); the
theory's own formula is not overlaid here.
"""

from __future__ import annotations

import numpy as np

from theory._outputs import atomic_savefig

from ...record import record_sequences
from .clustered import across_inputs_variance, jackknife_se, fit_slope, pooled_variance
from .corpus import PSEUDO_DOCUMENTS, Corpus
from .evaluation import heldout_batch

FACTOR = 4


def _slope(pos: np.ndarray, full: np.ndarray, out: np.ndarray, lo: int, hi: int) -> tuple[float, float]:
    keep = (pos >= lo) & (pos <= hi)
    return float(fit_slope(pos[keep], full[keep])), float(jackknife_se(fit_slope(pos[keep], out[:, keep])))


def variance_beyond(model, corpus: Corpus, factor: int = FACTOR, sequences: int = 64,
                    blocks: int = PSEUDO_DOCUMENTS) -> dict | None:
    """The measurement of the module docstring for one NoPE model; None when the held-out text
    has fewer than 4 windows of ``factor x seq_len`` bytes, or too few documents for the errors."""
    if model.pos_embed is not None:
        raise ValueError("variance beyond the training length needs a NoPE model (a learned table ends at seq_len)")
    T = model.spec.seq_len
    length = factor * T
    if corpus.heldout.size // length < 4:
        return None
    ids, docs = heldout_batch(corpus, length, sequences, blocks)
    _, per_doc = np.unique(docs, return_counts=True)
    if per_doc.size < 2 or ids.shape[0] - per_doc.max() < 2:  # the jackknife needs 2 windows left without any document
        return None
    pos_all = np.arange(1, length + 1)
    fit = np.unique(np.round(np.geomspace(1, length, 32)).astype(int))
    fit = np.unique(np.append(fit, T))
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
    out["positions"] = pos_all.tolist()
    return out


def beyond_figure(plt, entry: dict, dest, name: str = "beyond_training_length.png") -> None:
    """Var of ``hook_attn_out`` against position up to ``factor x T``, per layer, init and trained."""
    b = entry["trained"]
    L, T = len(b["layers"]), b["seq_len"]
    m = np.asarray(b["positions"], dtype=float)
    fig, axes = plt.subplots(1, L, figsize=(3.0 * L, 3.2), squeeze=False)
    for l, ax in enumerate(axes[0]):
        for which, color in (("init", "C7"), ("trained", "C0")):
            lay = entry[which]["layers"][l]
            ax.plot(m, lay["var"], color=color, lw=1,
                    label=f"{which}: Var (inside {lay['slope_inside']:+.2f}, beyond {lay['slope_beyond']:+.2f})")
            ax.errorbar(entry[which]["fit_positions"], lay["var_across_inputs_at_fit"], yerr=lay["var_across_inputs_se_at_fit"],
                        color=color, ls="--", marker=".", ms=3, lw=0.8, elinewidth=0.6,
                        label=f"{which}: across inputs ({lay['slope_inside_in']:+.2f}, {lay['slope_beyond_in']:+.2f})")
        ax.axvline(T, color="k", lw=0.6, ls=":")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"NoPE blocks.{l}.hook_attn_out, to {b['factor']}x T", fontsize=8)
        ax.set_xlabel("position m (dotted: training length)")
        ax.legend(fontsize=5)
        ax.grid(alpha=0.3, which="both", lw=0.3)
    fig.tight_layout()
    atomic_savefig(fig, dest / name, dpi=110)
    plt.close(fig)
