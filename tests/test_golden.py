"""The code reproduces the golden outputs written before the architecture change (issue 14).

tests/golden/make_golden.py wrote them from main before any code moved. Theory must agree
to 1e-12 relative at layer 1 and 1e-10 through depth (`DEPTH_REL`, the recursion's rounding
level; the text and LaTeX exactly); simulation and verify bit-identically on
the machine and torch build that wrote them (tests/golden/machine.json), and elsewhere to
float32 rounding (another CPU may pick another matmul kernel: docs/simulate.md, "Runs you
can trust").

One deliberate difference (issue 14, item 6): an attention-only block now ends at
``hook_resid_post`` as in TransformerLens, so the goldens' ``hook_resid_mid`` of an
attention-only spec is read as ``hook_resid_post``. ``GOLDEN_OLD_NAMES=1`` turns that
reading off, to check the goldens against the code as it was before (commit of the goldens).
One addition: ``theory predict --json`` states a declared ``tolerance`` for the layer-1 taps
as well (verify used to derive it from the error text); the goldens' layer-1 meta had none.
Another (issue 16): a spec written as JSON carries the modern-block fields
(normalization, mlp, d_mlp, n_kv_heads, qk_norm, rope_theta, attn_temperature); at their
defaults they describe the same model, so a spec dict may have them where the golden has not.
Regenerated (issue 15): the six ``predict_*.json`` and ``verify/results_mlp3.json``. The depth
recursion from layer 2 on now averages the softmax rows over the per-network fluctuation of
the keys' spread and corrects rows that share keys (`theory.depth_maps`), so best-level
values at layers >= 2 move (largest relative change 2.3e-3 in attn2, 5.6e-6 in mlp3, 2.0e-6
in relu2; layer 1 unchanged to 1e-12, the leading level unchanged); every approximate depth
tap's tolerance is derived (`theory.tolerance.depth_tolerance`; the leading level: the stated
5% default), which moves verify's tolerances, z-scores, p-values, verdict details and the
x1.02 mutant's failed checks. verify's simulated statistics are bit-identical to the old
golden. ``GOLDEN_OLD_NAMES=1`` no longer applies to these regenerated files.
Regenerated (issue 15 item 2): the three ``predict_*_best.json``. The best level carries the
per-sample Gram fluctuation of the stream to second order (`theory.depth_maps._gram`, for widths
whose smallest effective dimension is 16..256), which lowers each norm's mean cosine off the
diagonal from layer 1's second norm on; per-position values move from layer 2 on (largest
relative change 7.5e-4 in attn2, 4.8e-3 in mlp3, 5.7e-3 in relu2; every layer-1 value (to 1 ulp) and the
leading level unchanged) and the approximate taps' assumptions name the Gram term instead of
"per-network fluctuation ... neglected".
Regenerated again (same session, from a clean tree): the three ``predict_*_best.json``, the
``latex_mlp3_depth`` files and ``verify/results_mlp3.json``. The previous regeneration had been
written while an experiment in the attention depth map (a row law at an effective key dimension,
later withdrawn) sat uncommitted in the working tree; against it the committed code moves by at
most 1.4e-3 (attn2 layer-2 ``hook_z``), 3.7e-6 (mlp3), 6.3e-5 (relu2). ``results_mlp3.json`` now
carries the Gram term (theory values at layers >= 2 move by at most 4.8e-3); its simulated
statistics are bit-identical to the previous golden.
Regenerated (issue 15 items 1-2, from a clean clone at e6fbc3f): every ``predict_*.json``, the
``derive``/``latex`` text and ``verify/results_mlp3.json``. The Gram fluctuation now reaches the
norm by congruence in two views and the softmax rows from layer 1 on sit at the keys' effective
dimension (`theory.depth_maps._gram`, `attention.rows_at_key_dim`), so depth values move; the
text follows issue 21's 0-based layer wording. The text goldens were written with issue 16's
compact spec fields stripped (``_MODERN_COMPACT``), as ``_cli`` reads them.
Regenerated (issue 15 item 3, from a clean clone): the ``predict_*_best.json``, the ``latex``
files and ``verify/results_mlp3.json``. The norm's radius law carries the per-sample fluctuation of
each position's norm where eps > 0 (`theory.kernel_maps.RadialLaw`), and the LaTeX prose follows
issue 21's wording (parentheses outside the math); the text goldens are unchanged.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest

GOLDEN = Path(__file__).resolve().parent / "golden"
SPECS = {p.stem: p for p in sorted((GOLDEN / "specs").glob("*.json"))}
ATTN_ONLY = {name for name, p in SPECS.items() if json.loads(p.read_text()).get("attn_only")}
REL = 1e-12
# The depth recursion (layers >= 2) amplifies rounding: a 1-ulp change in one kernel entry moves
# eps = 0 specs' outputs by up to 8e-11 (measured by jittering the Mehler kernel, issue 19), and
# machines differ in their last bits (BLAS, libm). Depth predictions are held to 1e-10, and
# verify's results, whose z-scores divide a theory-minus-simulation difference by its standard
# error (amplifying a relative change in theory by |theory / (theory - sim)|), to 1e-8 (and 1e-8
# absolute, for z-scores near 0).
DEPTH_REL = 1e-10
VERIFY_REL = 1e-8
_OLD_NAMES = os.environ.get("GOLDEN_OLD_NAMES") == "1"


def _rename(text: str, spec: str) -> str:
    """Item 6: an attention-only block's output tap is hook_resid_post."""
    if spec not in ATTN_ONLY or _OLD_NAMES:
        return text
    return text.replace("hook_resid_mid", "hook_resid_post").replace(r"resid\char95{}mid", r"resid\char95{}post")


# The fields issue 16 added to ModelSpec, at their defaults (a spec dict of the goldens lacks them).
_MODERN_DEFAULTS = {"normalization": "layernorm", "mlp": "standard", "d_mlp": None, "n_kv_heads": None,
                    "qk_norm": False, "rope_theta": 10000.0, "attn_temperature": None}


_MODERN_COMPACT = "".join(f", {json.dumps(k)}: {json.dumps(v)}" for k, v in _MODERN_DEFAULTS.items())


def _cli(module: str, argv: list[str]) -> str:
    main = {"theory": "theory.cli", "simulate": "simulate.__main__", "verify": "verify.cli"}[module]
    mod = __import__(main, fromlist=["main"])
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        status = mod.main(argv)
    assert status in (0, 1, None), f"{module} {' '.join(argv)} exited {status}"
    return buf.getvalue().replace(_MODERN_COMPACT, "")  # a spec printed on one line, issue 16's fields at their defaults


def _assert_close(new, old, path="", rel=REL, abs_=0.0):
    """Same structure, same strings, numbers to ``rel`` relative (``abs_`` absolute)."""
    if isinstance(old, dict) and isinstance(new, dict) and "d_model" in old and "n_heads" in old:
        new = {k: v for k, v in new.items() if not (k not in old and _MODERN_DEFAULTS.get(k, object()) == v)}
    if isinstance(old, dict):
        assert isinstance(new, dict) and set(new) == set(old), f"{path}: keys {sorted(set(new) ^ set(old))[:6]}"
        for k in old:
            _assert_close(new[k], old[k], f"{path}/{k}", rel, abs_)
    elif isinstance(old, list):
        assert isinstance(new, list) and len(new) == len(old), f"{path}: length {len(new)} != {len(old)}"
        for i, (a, b) in enumerate(zip(new, old)):
            _assert_close(a, b, f"{path}[{i}]", rel, abs_)
    elif isinstance(old, float) and not isinstance(old, bool):
        if math.isnan(old):
            assert isinstance(new, float) and math.isnan(new), f"{path}: {new} != nan"
        else:
            assert new == pytest.approx(old, rel=rel, abs=abs_), f"{path}: {new!r} != {old!r}"
    else:
        assert new == old, f"{path}: {new!r} != {old!r}"


def _same_machine() -> bool:
    import torch

    recorded = json.loads((GOLDEN / "machine.json").read_text())
    flags = ""
    with contextlib.suppress(OSError):
        flags = next(l for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("flags"))
    keep = sorted(f for f in flags.split(":", 1)[-1].split() if f.startswith(("avx", "amx", "fma", "sse4")))
    return recorded["torch"] == torch.__version__ and recorded["cpu_flags"] == keep


# ------------------------------------------------------------------ theory
@pytest.mark.parametrize("spec", sorted(SPECS))
@pytest.mark.parametrize("level", ["best", "leading"])
def test_theory_predict_json(spec, level):
    old = json.loads(_rename((GOLDEN / "theory" / f"predict_{spec}_{level}.json").read_text(), spec))
    new = json.loads(_cli("theory", ["predict", "--spec", str(SPECS[spec]), "--level", level,
                                      "--positions", "1,2,3,5,8,13,16", "--json"]))
    for tap, meta in new["meta"].items():
        if "tolerance" not in old["meta"][tap]:  # layer 1 now declares its tolerance as a number too
            assert tap.startswith("blocks.0.") and 0.0 <= meta.pop("tolerance") <= 0.05, tap
    _assert_close(new, old, rel=DEPTH_REL)


@pytest.mark.parametrize("spec", sorted(SPECS))
def test_theory_derive_text(spec):
    old = _rename((GOLDEN / "theory" / f"derive_{spec}.txt").read_text(), spec)
    assert _cli("theory", ["derive", "--spec", str(SPECS[spec])]) == old


@pytest.mark.parametrize("fmt, symbolic", [("json", None), ("latex", None), ("text", "sigma_q,sigma_k,d_model,ln_eps"),
                                           ("latex", "sigma_q,sigma_k,d_model,ln_eps")])
def test_theory_derive_formats(fmt, symbolic):
    suffix = {"json": ".json", "latex": ".tex", "text": ".txt"}[fmt]
    name = "derive_mlp3" + ("_symbolic" if symbolic else "") + suffix
    argv = ["derive", "--spec", str(SPECS["mlp3"]), "--format", fmt] + (["--symbolic", symbolic] if symbolic else [])
    new = _cli("theory", argv)
    old = (GOLDEN / "theory" / name).read_text()
    if fmt == "json":
        _assert_close(json.loads(new), json.loads(old))
    else:
        assert new == old


@pytest.mark.parametrize("name, spec, extra", [("latex_mlp3", "mlp3", []), ("latex_mlp3_depth", "mlp3", ["--depth"]),
                                               ("latex_attn2_symbolic", "attn2", ["--symbolic", "sigma_v,n_heads"])])
def test_theory_latex_files(tmp_path, name, spec, extra):
    _cli("theory", ["latex", "--spec", str(SPECS[spec]), *extra, "--out", str(tmp_path)])
    old_dir = GOLDEN / "theory" / name
    old_files = {_rename(str(p.relative_to(old_dir)), spec): p for p in old_dir.rglob("*") if p.is_file()}
    new_files = {str(p.relative_to(tmp_path)): p for p in tmp_path.rglob("*") if p.is_file()}
    assert sorted(new_files) == sorted(old_files)
    for rel, path in old_files.items():
        assert new_files[rel].read_text() == _rename(path.read_text(), spec), rel


# ------------------------------------------------------------------ simulate
RUNS = [
    ("run_mlp3_f64", "mlp3", ["--samples", "24", "--seed", "7", "--dtype", "float64", "--method", "explicit"]),
    ("run_mlp3_gram", "mlp3", ["--samples", "24", "--seed", "3", "--method", "gram", "--chunk-size", "8"]),
    ("run_attn2_f32", "attn2", ["--samples", "40", "--seed", "1", "--reservoir", "8"]),
    ("run_relu2_quenched", "relu2", ["--samples", "16", "--seed", "5", "--measure", "quenched", "--dtype", "float64"]),
]


def _npz_rename(key: str, spec: str) -> str:
    return _rename(key, spec)


@pytest.mark.parametrize("name, spec, flags", RUNS, ids=[r[0] for r in RUNS])
def test_simulate_run_bit_identical(tmp_path, name, spec, flags):
    out = tmp_path / f"{name}.json"
    _cli("simulate", ["run", "--spec", str(SPECS[spec]), *flags, "--threads", "1", "--no-progress", "--out", str(out)])
    old = json.loads(_rename((GOLDEN / "simulate" / f"{name}.json").read_text(), spec))
    new = json.loads(out.read_text())
    old, new = _strip(old), _strip(new)
    exact = _same_machine()
    rel = 0.0 if exact else 1e-5
    _assert_close(new, old, rel=rel, abs_=0.0 if exact else 1e-9)
    with np.load(GOLDEN / "simulate" / f"{name}.npz", allow_pickle=False) as a, np.load(out.with_suffix(".npz"), allow_pickle=False) as b:
        old_arrays = {_npz_rename(k, spec): a[k] for k in a.files}
        assert sorted(b.files) == sorted(old_arrays)
        for k, v in old_arrays.items():
            if exact:
                np.testing.assert_array_equal(b[k], v, err_msg=k)
            else:
                np.testing.assert_allclose(b[k], v, rtol=1e-5, atol=1e-9, err_msg=k)


# ------------------------------------------------------------------ verify
_VOLATILE = re.compile(r"^(date|versions|device|elapsed.*|.*_s|seconds|wall.*|.*time.*|threads|command|out|spec_file)$")


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if not _VOLATILE.match(k)}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


@pytest.mark.slow
def test_verify_results_json(tmp_path):
    _cli("verify", ["--spec", str(SPECS["mlp3"]), "--samples", "48", "--seed", "2", "--no-calibration", "--quiet",
                    "--threads", "1", "--out", str(tmp_path)])
    old = _strip(json.loads((GOLDEN / "verify" / "results_mlp3.json").read_text()))
    new = _strip(json.loads((tmp_path / "results.json").read_text()))
    old.pop("figures", None), new.pop("figures", None)  # paths of the run's own folder
    exact = _same_machine()
    _assert_close(new, old, rel=VERIFY_REL if exact else 1e-4, abs_=1e-8 if exact else 1e-9)  # abs: z near 0
