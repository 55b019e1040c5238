"""Write the golden outputs that the architecture change must reproduce (issue 14, item 7).

Run once on the code *before* a refactor, from the repository root::

    python tests/golden/make_golden.py

It writes, under tests/golden/: the specs; ``theory predict --json`` for each spec at
both levels (every layer, depth included); ``theory derive`` text and ``theory latex``
output for the layer-1 spec; ``simulate run`` results at fixed seeds (float64 and
float32, explicit and Gram paths); ``python -m verify`` results.json with its timings
removed; and machine.json (CPU flags, torch version: simulation is bit-identical only on
the machine and torch build that wrote it). tests/test_golden.py compares.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

SPECS = {
    # three layers with MLP, GPT-2 sigmas: layer 1 derived, layers 2-3 by the depth recursion
    "mlp3": {"d_model": 64, "n_heads": 4, "n_layers": 3, "seq_len": 32},
    # attention only, linear scale, eps 0 (layer 1 exact), larger logits
    "attn2": {"d_model": 32, "n_heads": 2, "n_layers": 2, "seq_len": 16, "attn_only": True,
              "attn_scale": "linear", "ln_eps": 0.0, "sigma_q": 0.5, "sigma_k": 0.4},
    # unequal sigmas, relu, mlp_ratio 2
    "relu2": {"d_model": 48, "n_heads": 3, "n_layers": 2, "seq_len": 24, "activation": "relu", "mlp_ratio": 2,
              "sigma_embed": 0.05, "sigma_q": 0.08, "sigma_k": 0.03, "sigma_v": 0.04, "sigma_o": 0.06,
              "sigma_mlp_in": 0.03, "sigma_mlp_out": 0.05, "ln_eps": 1e-4},
}

# simulate run cases: (name, spec, extra CLI flags)
RUNS = [
    ("run_mlp3_f64", "mlp3", ["--samples", "24", "--seed", "7", "--dtype", "float64", "--method", "explicit"]),
    ("run_mlp3_gram", "mlp3", ["--samples", "24", "--seed", "3", "--method", "gram", "--chunk-size", "8"]),
    ("run_attn2_f32", "attn2", ["--samples", "40", "--seed", "1", "--reservoir", "8"]),
    ("run_relu2_quenched", "relu2", ["--samples", "16", "--seed", "5", "--measure", "quenched", "--dtype", "float64"]),
]


def sh(args: list[str], **kw) -> str:
    env = dict(os.environ, PYTHONHASHSEED="0")
    out = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, **kw)
    if out.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(args)} failed:\n{out.stderr}")
    return out.stdout


def machine() -> dict:
    import platform
    import torch
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    keep = sorted(f for f in flags.split() if f.startswith(("avx", "amx", "fma", "sse4")))
    return {"torch": torch.__version__, "machine": platform.machine(), "cpu_flags": keep,
            "threads": torch.get_num_threads()}


def main() -> None:
    specs = HERE / "specs"
    specs.mkdir(exist_ok=True)
    for name, spec in SPECS.items():
        (specs / f"{name}.json").write_text(json.dumps(spec, indent=2) + "\n")
    theory = HERE / "theory"
    theory.mkdir(exist_ok=True)
    for name in SPECS:
        for level in ("best", "leading"):
            text = sh(["-m", "theory", "predict", "--spec", f"tests/golden/specs/{name}.json", "--level", level,
                       "--positions", "1,2,3,5,8,13,16", "--json"])
            (theory / f"predict_{name}_{level}.json").write_text(text)
        (theory / f"derive_{name}.txt").write_text(sh(["-m", "theory", "derive", "--spec", f"tests/golden/specs/{name}.json"]))
    mlp3 = "tests/golden/specs/mlp3.json"
    (theory / "derive_mlp3.json").write_text(sh(["-m", "theory", "derive", "--spec", mlp3, "--format", "json"]))
    (theory / "derive_mlp3.tex").write_text(sh(["-m", "theory", "derive", "--spec", mlp3, "--format", "latex"]))
    symbolic = "sigma_q,sigma_k,d_model,ln_eps"
    (theory / "derive_mlp3_symbolic.txt").write_text(sh(["-m", "theory", "derive", "--spec", mlp3, "--symbolic", symbolic]))
    (theory / "derive_mlp3_symbolic.tex").write_text(
        sh(["-m", "theory", "derive", "--spec", mlp3, "--symbolic", symbolic, "--format", "latex"]))
    for name, extra in (("latex_mlp3", []), ("latex_mlp3_depth", ["--depth"]), ("latex_attn2_symbolic", ["--symbolic", "sigma_v,n_heads"])):
        out = theory / name
        shutil.rmtree(out, ignore_errors=True)
        spec = mlp3 if "mlp3" in name else "tests/golden/specs/attn2.json"
        sh(["-m", "theory", "latex", "--spec", spec, *extra, "--out", str(out)])
    sim = HERE / "simulate"
    shutil.rmtree(sim, ignore_errors=True)
    sim.mkdir()
    for name, spec, flags in RUNS:
        sh(["-m", "simulate", "run", "--spec", f"tests/golden/specs/{spec}.json", *flags, "--threads", "1",
            "--no-progress", "--out", str(sim / f"{name}.json")])
    ver = HERE / "verify"
    shutil.rmtree(ver, ignore_errors=True)
    tmp = HERE / "_verify_tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    sh(["-m", "verify", "--spec", "tests/golden/specs/mlp3.json", "--samples", "48", "--seed", "2",
        "--no-calibration", "--quiet", "--threads", "1", "--out", str(tmp)])
    ver.mkdir()
    shutil.copy(tmp / "results.json", ver / "results_mlp3.json")
    shutil.rmtree(tmp)
    (HERE / "machine.json").write_text(json.dumps(machine(), indent=2) + "\n")


if __name__ == "__main__":
    main()
