"""Issue 20: the baselines, the document-clustered errors and the loss-per-position report of
`simulate.experiments.train`, each against an independent computation."""

from __future__ import annotations

import bz2
import dataclasses
import lzma
import math
import zlib
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

from simulate.experiments.train import TrainConfig, load_corpus, train_model
from simulate.experiments.train.baselines import KneserNey, compressor_bits_per_byte
from simulate.experiments.train.clustered import (
    across_inputs_variance, clustered_mean, fit_slope, jackknife_se, leave_one_out_means, pooled_variance, slope_with_se,
)
from simulate.experiments.train.corpus import Corpus
from simulate.experiments.train.evaluation import evaluate_checkpoint, heldout_batch, per_position_loss, summarise
from simulate.experiments.train.training import evaluate, final_evaluation

TINY = Path(__file__).parent / "data" / "tiny_corpus.txt"


# ------------------------------------------------------------------ Kneser-Ney, by dictionaries
def naive_kneser_ney(train: bytes, order: int):
    """Interpolated Kneser-Ney written from the formula with Python dicts and byte strings:
    raw counts at a byte's highest usable order, continuation counts below it, one discount
    n1/(n1 + 2 n2) per order and kind of count, uniform 1/256 at the bottom."""
    raw, cont = {}, {}
    for n in range(1, order + 1):
        c = defaultdict(int)
        for i in range(len(train) - n + 1):
            c[train[i:i + n]] += 1
        raw[n] = dict(c)
    for n in range(1, order):
        c = defaultdict(int)
        for gram in raw[n + 1]:
            c[gram[1:]] += 1  # one more distinct left neighbour
        cont[n] = dict(c)

    def stats(counts):
        n1 = sum(v == 1 for v in counts.values())
        n2 = sum(v == 2 for v in counts.values())
        tot, types = defaultdict(float), defaultdict(float)
        for gram, v in counts.items():
            tot[gram[:-1]] += v
            types[gram[:-1]] += 1
        return (n1 / (n1 + 2 * n2) if n1 + n2 else 0.5), tot, types

    levels = {("raw", n): (raw[n], *stats(raw[n])) for n in raw}
    levels.update({("cont", n): (cont[n], *stats(cont[n])) for n in cont})

    def prob(history: bytes, w: int) -> float:
        p = 1 / 256
        top = min(order, len(history) + 1)
        for n in range(1, top + 1):
            counts, D, tot, types = levels[("raw" if n == top else "cont", n)]
            h = history[len(history) - (n - 1):] if n > 1 else b""
            if tot.get(h, 0) == 0:
                continue
            p = max(counts.get(h + bytes([w]), 0) - D, 0) / tot[h] + D * types[h] / tot[h] * p
        return p

    return prob


@pytest.mark.parametrize("order", [1, 2, 3, 5])
def test_kneser_ney_matches_a_dictionary_count(order):
    text = TINY.read_bytes()
    train, held = text[:5000], text[5000:5000 + 8 * 33]
    windows = np.frombuffer(held, dtype=np.uint8).reshape(8, 33)
    ours = KneserNey(np.frombuffer(train, dtype=np.uint8), order).per_position(windows)  # (8, 32)
    prob = naive_kneser_ney(train, order)
    ref = np.array([[-math.log2(prob(bytes(row[max(0, j - order + 1):j]), int(row[j]))) for j in range(1, 33)]
                    for row in windows])
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12)
    # a distribution: over the 256 next bytes the probabilities sum to 1, for a seen and an unseen history
    for history in (train[100:100 + order - 1], b"\x00\x01\x02\x03"[:order - 1]):
        assert sum(prob(history, w) for w in range(256)) == pytest.approx(1.0, abs=1e-12)
        hist = np.frombuffer(history.rjust(order - 1, b"\x00"), dtype=np.uint8)
        lp = KneserNey(np.frombuffer(train, dtype=np.uint8), order).log2prob(
            np.tile(hist, (256, 1)).reshape(256, order - 1), np.arange(256), np.full(256, len(history)))
        assert np.exp2(lp).sum() == pytest.approx(1.0, abs=1e-12)


def test_kneser_ney_orders_improve_and_bad_order_is_refused():
    text = np.frombuffer(TINY.read_bytes(), dtype=np.uint8)
    windows = text[5000:5000 + 8 * 33].reshape(8, 33)
    bits = [KneserNey(text[:5000], n).bits_per_byte(windows) for n in (1, 2, 3)]
    assert bits[0] > bits[1] > bits[2]  # more context helps on English text
    with pytest.raises(ValueError, match="order must be an integer in 1..8"):
        KneserNey(text, 9)


def test_compressors_are_the_standard_library_sizes():
    data = np.frombuffer(b"abracadabra " * 50, dtype=np.uint8)
    raw = data.tobytes()
    got = compressor_bits_per_byte(data)
    assert got["zlib"] == 8 * len(zlib.compress(raw, 9)) / len(raw)
    assert got["bz2"] == 8 * len(bz2.compress(raw, 9)) / len(raw)
    assert got["xz"] == 8 * len(lzma.compress(raw, preset=9 | lzma.PRESET_EXTREME)) / len(raw)
    assert got["zlib"] < 2  # a repeated phrase compresses far below 8 bits per byte


# ------------------------------------------------------------------ clustered errors
def test_clustered_mean_against_a_hand_computation():
    y = np.array([1.0, 2, 3, 4, 5, 6])
    docs = np.array([7, 7, 3, 3, 3, 9])  # three documents of 2, 3 and 1 windows
    mean, se = clustered_mean(y, docs)
    # by hand: mean 3.5; residual sums per document: -4, +1.5, +2.5; G = 3, N = 6
    assert mean == 3.5
    assert se == pytest.approx(math.sqrt(3 / 2 * (16 + 2.25 + 6.25) / 36), rel=1e-14)
    # one window per document: CR1 is the usual standard error of a mean
    _, se_iid = clustered_mean(y, np.arange(6))
    assert se_iid == pytest.approx(y.std(ddof=1) / math.sqrt(6), rel=1e-14)


def test_jackknife_equals_cr1_for_a_mean_with_equal_documents():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(40, 3)) + np.repeat(rng.normal(size=(8, 3)), 5, axis=0)  # 8 documents x 5 windows
    docs = np.repeat(np.arange(8), 5)
    _, se = clustered_mean(y, docs)
    _, out = leave_one_out_means(y, docs)
    np.testing.assert_allclose(jackknife_se(out), se, rtol=1e-12)


def test_pooled_and_across_inputs_variances_by_loops():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(12, 4, 5)) * np.arange(1, 5)[None, :, None]  # (windows, positions, coordinates)
    docs = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 3])
    var, var_se, var_out = pooled_variance(x.mean(-1), (x * x).mean(-1), docs)
    np.testing.assert_allclose(var, x.transpose(1, 0, 2).reshape(4, -1).var(axis=1), rtol=1e-12)
    loops = np.array([x[docs != g].transpose(1, 0, 2).reshape(4, -1).var(axis=1) for g in range(4)])
    np.testing.assert_allclose(var_out, loops, rtol=1e-12)
    np.testing.assert_allclose(var_se, np.sqrt(3 / 4 * ((loops - loops.mean(0)) ** 2).sum(0)), rtol=1e-12)
    vin, _, vin_out = across_inputs_variance(x, docs)
    np.testing.assert_allclose(vin, x.var(axis=0, ddof=1).mean(-1), rtol=1e-12)
    np.testing.assert_allclose(vin_out[2], x[docs != 2].var(axis=0, ddof=1).mean(-1), rtol=1e-12)


def test_slope_and_its_jackknife():
    m = np.array([1, 2, 4, 8, 16, 32, 64])
    assert fit_slope(m, 3.0 * m ** -0.7) == pytest.approx(-0.7, abs=1e-12)
    assert fit_slope(m, 3.0 * m ** -0.7, lo=16) == pytest.approx(-0.7, abs=1e-12)
    leave = np.array([m ** -0.6, m ** -0.8, m ** -0.7])
    b, se = slope_with_se(m, m ** -0.7, leave)
    assert b == pytest.approx(-0.7) and se == pytest.approx(math.sqrt(2 / 3 * 0.02), rel=1e-10)
    mean, se = clustered_mean(np.array([1.0, 2.0, 4.0]), np.zeros(3))  # one document: no error over documents
    assert mean == pytest.approx(7 / 3) and np.isnan(se)
    assert np.isnan(jackknife_se(np.ones((1, 2)))).all()
    with pytest.raises(ValueError, match="one id per window"):
        clustered_mean(np.ones(3), np.zeros(2))


# ------------------------------------------------------------------ documents and the loss per position
def test_windows_carry_their_document(tmp_path):
    for i, text in enumerate(["alpha " * 200, "beta " * 300, "gamma " * 250]):
        (tmp_path / f"page{i}.txt").write_text(text)
    corpus = load_corpus(tmp_path, holdout=0.999)  # every file but (rarely) none held out
    held = Corpus(corpus.train, corpus.heldout, "x", 3, 3, np.array([0, 100, 400]))
    np.testing.assert_array_equal(held.documents([0, 99, 100, 399, 400, 900]), [0, 0, 1, 1, 2, 2])
    one_file = Corpus(corpus.train, np.zeros(800, dtype=np.uint8), "x", 1, 0)
    np.testing.assert_array_equal(one_file.documents([0, 99, 100, 799], blocks=8), [0, 0, 1, 7])


def test_loss_per_position_report(tmp_path):
    corpus = load_corpus(TINY, holdout=0.1)
    cfg = TrainConfig(preset="tiny", d_model=32, n_heads=2, n_layers=2, seq_len=32, batch_size=8, steps=30, warmup=5,
                      eval_every=10, eval_windows=4, final_eval_windows=16, checkpoint_every=10, positionals=("none",),
                      snapshot_every=15)
    torch.manual_seed(0)
    train_model(cfg, corpus, tmp_path, "none", progress=False)
    assert sorted(p.name for p in (tmp_path / "none").glob("step_*.pt")) == ["step_000015.pt", "step_000030.pt"]
    batch, docs = heldout_batch(corpus, cfg.seq_len + 1, 16, blocks=4)
    from simulate.experiments.train import load_model
    model = load_model(tmp_path / "none" / "checkpoint.pt")
    nats = per_position_loss(model, batch)  # (N, T)
    assert nats.shape == (batch.shape[0], cfg.seq_len)
    assert nats.mean() == pytest.approx(evaluate(model, batch), rel=1e-6)  # the same loss, split by position
    report = evaluate_checkpoint(tmp_path / "none" / "checkpoint.pt", batch, docs)
    assert report["bits_per_byte"] == pytest.approx(nats.mean() / math.log(2), rel=1e-6)
    np.testing.assert_allclose(report["per_position"], nats.mean(0) / math.log(2), rtol=1e-6)
    assert [(b["from"], b["to"]) for b in report["context_bands"]] == [(1, 4), (5, 16), (17, 32)]
    band = report["context_bands"][1]
    assert band["bits_per_byte"] == pytest.approx(nats[:, 4:16].mean() / math.log(2), rel=1e-6)
    _, se = clustered_mean(nats[:, 4:16].mean(1) / math.log(2), docs)
    assert band["se"] == pytest.approx(se, rel=1e-6)
    final = final_evaluation(cfg, corpus, tmp_path, "none", blocks=4)
    assert final["trained_bits_per_byte"] < final["init_bits_per_byte"]
    assert final["documents"] == np.unique(docs).size and len(final["per_position"]) == cfg.seq_len
    s = summarise(np.ones((4, 8)), np.array([0, 0, 1, 1]))
    assert s["bits_per_byte"] == 1.0 and s["bits_per_byte_se"] == 0.0


def test_variance_beyond_the_training_length():
    """A NoPE model runs past seq_len (a learned table refuses); the measurement returns curves
    of 4 x T positions and finite slopes inside and past T."""
    from theory import ModelSpec
    from simulate.experiments.train import NoPETransformer
    from simulate.experiments.train.beyond import variance_beyond

    corpus = load_corpus(TINY, holdout=0.3)
    spec = ModelSpec(d_model=16, n_heads=2, n_layers=1, seq_len=16, vocab_size=256)
    out = variance_beyond(NoPETransformer(spec, seed=0), corpus, factor=4, sequences=16, blocks=4)
    lay = out["layers"][0]
    assert len(lay["var"]) == 64 and out["fit_positions"][-1] == 64 and 16 in out["fit_positions"]
    assert all(np.isfinite(lay[k]) for k in ("slope_inside", "slope_inside_se", "slope_beyond", "slope_beyond_in"))
    assert lay["slope_inside_in"] < -0.3  # uniform attention at init averages the inputs: variance falls
    learned = NoPETransformer(dataclasses.replace(spec, positional="learned"), seed=0)
    with pytest.raises(ValueError, match="longer than seq_len"):
        learned(torch.zeros(1, 17, dtype=torch.long))
