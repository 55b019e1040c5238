"""simulate train: corpus loader, a few steps lower the loss, bit-identical resume, CLI (issue #9)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from simulate.experiments.train import PRESETS, NoPETransformer, evaluate, load_model, train_model, windows
from simulate.experiments.train.cli import main
from simulate.experiments.train.corpus import CorpusError, html_to_text, load_corpus, unigram_bits_per_byte
from tests.planted_pickle import Exploit, is_live, plant

FIXTURE = Path(__file__).parent / "data" / "tiny_corpus.txt"


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def corpus():
    return load_corpus(FIXTURE, holdout=0.1)


TINY = dataclasses.replace(PRESETS["tiny"], d_model=16, n_heads=2, n_layers=2, seq_len=16, batch_size=8,
                           steps=24, warmup=4, eval_every=6, eval_windows=4, checkpoint_every=4,
                           positionals=("none",))


def test_missing_corpus_message(tmp_path, capsys):
    with pytest.raises(CorpusError) as err:
        load_corpus(tmp_path / "absent")
    message = str(err.value)
    assert "python3.11-doc" in message and "apt-get install" in message and "--corpus" in message
    assert main(["--preset", "tiny", "--out", str(tmp_path / "run"), "--corpus", str(tmp_path / "absent")]) == 2
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert err_lines[-1].startswith("simulate train: error: no corpus at") and "python3.11-doc" in err_lines[-1]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CorpusError, match="no .html/.txt"):
        load_corpus(empty)


def test_bad_cli_input(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--positional", "alibi"]) == 2
    assert "--positional" in capsys.readouterr().err
    assert main(["--out", str(tmp_path / "x"), "--measure-only"]) == 2
    assert "needs a finished run" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["--preset", "huge", "--out", str(tmp_path)])
    assert exit_.value.code == 2


def test_html_to_text_keeps_the_main_part():
    html = ("<html><head><title>t</title><style>x{}</style></head><body><div role='navigation'>NAV</div>"
            "<div role='main'><h1>Title\u00b6</h1><p>Some <b>bold</b>   text.</p><div>inner</div>"
            "<pre>a  =  1\n  b</pre></div><div class='footer'>FOOT</div><script>var a;</script></body></html>")
    text = html_to_text(html)
    assert "Title" in text and "Some bold text." in text and "inner" in text and "a  =  1\n  b" in text
    assert "NAV" not in text and "FOOT" not in text and "var a" not in text and "\u00b6" not in text


def test_directory_split_is_by_file(tmp_path):
    for i in range(40):
        (tmp_path / f"doc{i}.txt").write_text(f"document {i} " * 20)
    (tmp_path / "_static").mkdir()
    (tmp_path / "_static" / "skip.txt").write_text("SKIPPED " * 50)
    c = load_corpus(tmp_path, holdout=0.2)
    assert c.files == 40 and 0 < c.heldout_files < 40
    assert b"SKIPPED" not in c.train.tobytes() + c.heldout.tobytes()
    held = c.heldout.tobytes().decode()
    assert all(f"document {i} " not in c.train.tobytes().decode() for i in range(40) if f"document {i} " in held)


def test_a_few_steps_lower_the_loss(tmp_path, corpus):
    cfg = dataclasses.replace(TINY, steps=30, checkpoint_every=30)
    summary = train_model(cfg, corpus, tmp_path, "none", progress=False)
    batch = windows(corpus.heldout, cfg.seq_len + 1, 16)
    init = evaluate(load_model(tmp_path / "none" / "init.pt"), batch)
    trained = evaluate(load_model(tmp_path / "none" / "checkpoint.pt"), batch)
    assert trained < init - 0.5  # nats: from ~ln 256 = 5.5 towards the byte statistics
    assert np.mean(summary["train_loss"][-5:]) < np.mean(summary["train_loss"][:5]) - 0.5
    assert init / np.log(2) > unigram_bits_per_byte(corpus.train, corpus.heldout)  # the init knows nothing


def test_resume_continues_the_same_curve(tmp_path, corpus):
    full = train_model(TINY, corpus, tmp_path / "a", "learned", progress=False)
    first = train_model(TINY, corpus, tmp_path / "b", "learned", progress=False, stop_after=10)  # not a checkpoint multiple
    assert first["steps"] == 10 and not first["done"]
    resumed = train_model(TINY, corpus, tmp_path / "b", "learned", progress=False)
    assert resumed["steps"] == TINY.steps
    assert resumed["train_loss"] == full["train_loss"]  # bit-identical, float by float
    assert resumed["eval"] == full["eval"]
    a = torch.load(tmp_path / "a" / "learned" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "learned" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = dataclasses.replace(TINY, lr=1e-3)
    with pytest.raises(ValueError, match="different run"):
        train_model(other, corpus, tmp_path / "b", "learned", progress=False)


def test_cli_trains_measures_and_records(tmp_path):
    out = tmp_path / "run"
    argv = ["--preset", "tiny", "--out", str(out), "--corpus", str(FIXTURE), "--steps", "8", "--sequences", "8",
            "--groups", "2", "--no-progress", "--holdout", "0.1", "--positional", "none",
            "--no-figures"]  # matplotlib's rendering would cost more than the rest; the real run makes them
    assert main(argv) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["commands"][0]["command"].startswith("python -m simulate train --preset tiny")
    assert set(run["models"]) == {"none"}
    for name in ("none",):
        m = run["models"][name]
        assert m["steps"] == 8 and m["trained_bits_per_byte"] < m["init_bits_per_byte"]
    assert (out / "commands.txt").read_text().count("python -m simulate train") == 1
    res = json.loads((out / "measure" / "results.json").read_text())
    layer = res["models"]["none"]["trained"]["layers"][0]
    assert set(layer["taps"]) == {"hook_attn_out", "attn.hook_z", "hook_resid_post"}
    assert np.isfinite(layer["taps"]["attn.hook_z"]["slope"]) and np.isfinite(layer["taps"]["attn.hook_z"]["slope_se"])
    init = res["models"]["none"]["init"]["layers"][0]
    assert init["entropy_over_ln_m"] > 0.99  # near-uniform attention at init (logits ~ 1e-3)
    assert (out / "measure" / "report.md").read_text().count("## positional =") == 1
    # issue 20: baselines on the same scored bytes, errors over documents, loss per context position
    base, m = run["baselines"], run["models"]["none"]
    assert set(base["kneser_ney"]) == {str(n) for n in range(1, 8)} and set(base["compressors"]) == {"xz", "bz2", "zlib"}
    assert len(base["kneser_ney"]["3"]["per_position"]) == len(m["per_position"]) == 32
    assert base["kneser_ney"]["3"]["bits_per_byte"] < base["kneser_ney"]["1"]["bits_per_byte"]
    assert m["trained_bits_per_byte_se"] > 0 and m["documents"] >= 2
    assert res["documents"] >= 2 and "jackknife" in res["errors"]
    assert "Kneser-Ney 4-gram" in (out / "measure" / "report.md").read_text()
    assert main(argv[:4] + ["--measure-only", "--sequences", "8", "--groups", "2", "--no-progress", "--no-figures"]) == 0
    assert len(json.loads((out / "run.json").read_text())["commands"]) == 2


# ------------------------------------------------------------------ files of a run folder run no code
CLI = ["--preset", "tiny", "--steps", "8", "--positional", "none", "--corpus", str(FIXTURE), "--holdout", "0.1",
       "--sequences", "8", "--groups", "2", "--no-progress", "--no-figures"]


def _one_error_line(capsys) -> str:
    """The CLI's stderr holds one line of error (besides its "[train] ..." progress notes) and no traceback."""
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if not line.startswith("[train]")]
    assert len(lines) == 1 and lines[0].startswith("simulate train: error: "), err
    return lines[0]


def _valid_init(path: Path) -> None:
    spec = PRESETS["tiny"].spec("none")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"spec": spec.to_dict(), "model": NoPETransformer(spec, seed=0).state_dict(), "seed": 0}, path)


@pytest.mark.parametrize("fmt", ["torch", "pickle"])
@pytest.mark.parametrize("planted", ["checkpoint.pt", "init.pt"])
@pytest.mark.parametrize("mode", ["resume", "measure-only"])
def test_a_planted_pickle_is_refused_not_run(tmp_path, capsys, planted, mode, fmt):
    out, marker = tmp_path / "run", tmp_path / "PWNED"
    path = plant(out / "none" / planted, marker, fmt)
    assert is_live(path, marker)  # torch.load(weights_only=False) would have run it
    if planted == "checkpoint.pt":
        _valid_init(out / "none" / "init.pt")  # so the planted file is the one read
    if mode == "measure-only":
        (out / "none" / {"init.pt": "checkpoint.pt", "checkpoint.pt": "init.pt"}[planted]).touch()
        (out / "run.json").write_text('{"commands": []}')
    assert main(["--out", str(out), *CLI] + (["--measure-only"] if mode == "measure-only" else [])) == 2
    line = _one_error_line(capsys)
    assert planted in line and ("refused without running" in line or "not a torch zip archive" in line)
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_damaged_checkpoint_is_one_line(tmp_path, corpus, capsys, damage):
    out = tmp_path / "run"
    train_model(dataclasses.replace(PRESETS["tiny"], steps=8), corpus, out, "none", progress=False, stop_after=4)
    ckpt = out / "none" / "checkpoint.pt"
    good = ckpt.read_bytes()
    ckpt.write_bytes({"truncated": good[: len(good) // 2], "garbage": b"\x80\x04not a checkpoint", "empty": b""}[damage])
    assert main(["--out", str(out), *CLI]) == 2
    line = _one_error_line(capsys)
    assert "checkpoint.pt" in line and "delete it" in line


def test_the_fingerprint_is_checked_before_the_rest_is_used(tmp_path, corpus):
    out = tmp_path / "run"
    cfg = dataclasses.replace(TINY, steps=8)
    _valid_init(out / "none" / "init.pt")
    ckpt = out / "none" / "checkpoint.pt"
    # another run's fingerprint over unusable contents: refused for the fingerprint, nothing else read
    torch.save({"fingerprint": {"version": 1, "config": {"seed": 7}}, "model": "not weights", "state": None}, ckpt)
    (out / "none" / "init.pt").unlink()
    with pytest.raises(ValueError, match=r"different run \(differs in: config\.") as err:
        train_model(cfg, corpus, out, "none", progress=False)
    assert "\n" not in str(err.value)
    # the right fingerprint over damaged contents: one ValueError saying what is wrong
    train_model(cfg, corpus, out / "ok", "none", progress=False, stop_after=4)
    saved = torch.load(out / "ok" / "none" / "checkpoint.pt", weights_only=True)
    for key, broken, why in (("optimizer", None, "no valid optimizer"), ("state", {"step": 4}, "progress record"),
                             ("torch_rng", torch.zeros(3, dtype=torch.uint8), "RNG state size"),
                             ("model", {"embed.weight": torch.zeros(2)}, "")):
        torch.save({**saved, key: broken}, ckpt)
        with pytest.raises(ValueError, match="is damaged") as err:
            train_model(cfg, corpus, out, "none", progress=False)
        assert why in str(err.value) and "\n" not in str(err.value)


def test_an_init_of_another_model_is_refused(tmp_path, corpus):
    _valid_init(tmp_path / "none" / "init.pt")  # the tiny preset's model, not TINY's
    with pytest.raises(ValueError, match="initialisation of a different model or seed"):
        train_model(TINY, corpus, tmp_path, "none", progress=False)


def test_bad_run_json_and_corpus_cache_are_one_line(tmp_path, capsys):
    out, marker = tmp_path / "run", tmp_path / "PWNED"
    out.mkdir()
    (out / "run.json").write_text("{not json")
    assert main(["--out", str(out), *CLI]) == 2
    assert "run.json" in _one_error_line(capsys)
    (out / "run.json").write_text('["a list"]')
    assert main(["--out", str(out), *CLI]) == 2
    assert "not the record of a simulate train run" in _one_error_line(capsys)
    (out / "run.json").unlink()
    # a corpus cache holding a pickled object array: numpy refuses it (allow_pickle=False), unread
    np.savez(out / "corpus.npz", train=np.zeros(4, np.uint8), heldout=np.zeros(4, np.uint8),
             info=np.array([Exploit(marker)], dtype=object))
    assert main(["--out", str(out), *CLI]) == 2
    assert "corpus.npz" in _one_error_line(capsys) and not marker.exists()
    (out / "corpus.npz").write_bytes(b"garbage")
    assert main(["--out", str(out), *CLI]) == 2
    assert "corpus.npz" in _one_error_line(capsys)
