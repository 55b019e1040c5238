"""Accuracy through depth: the checks of a run summed up per layer and tap kind, and
where the error grows with depth (with the assumptions the deeper layers add).

`depth_accuracy` gives, per (layer, tap kind, quantity): the largest |relative error|
``theory/sim - 1`` over the recorded positions (with the position, its 2-SE band and
z), the largest |z|, the declared relative error and the failures; and the same largest
relative error of the paper's leading order carried through depth (`theory.depth`,
level ``leading``). `depth_findings` turns them into sentences: for each main tap kind
whose error at some deeper layer exceeds layer 0's by more than the statistical noise,
how much, where, and the assumptions that deeper layer rests on and layer 0 does not.
Layers are 0-based everywhere, as in the tap names: ``blocks.0`` is layer 0.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

from .statistics import critical_z
from .theory import layer_of, suffix_of

# The taps the depth figure and the findings follow (in this order).
MAIN_TAPS = ("hook_resid_mid", "hook_resid_post", "hook_attn_out", "attn.hook_z", "hook_mlp_out")
# The quantity of a tap kind whose relative error is summed up (the pattern has no var).
_PRIMARY = {"attn.hook_pattern": "sum_sq"}
# Growth with depth: a deeper layer's largest |relative error| is resolved -- its |z| beyond
# the two-sided Bonferroni critical value at GROWTH_ALPHA over that tap's checks at the
# deeper layers (the largest of many z-scores is not noise only beyond that) -- and at
# least GROWTH_FACTOR times layer 0's largest.
GROWTH_ALPHA = 0.05
GROWTH_FACTOR = 1.5
# Taps that can clear an assumption (see `depth_findings`): not the residual sums, which
# carry every upstream tap's error diluted.
WITNESS_TAPS = ("attn.hook_z", "hook_attn_out", "hook_mlp_out")


def _finite(x) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


def primary_quantity(suffix: str) -> str:
    return _PRIMARY.get(suffix, "var")


def depth_accuracy(checks: Iterable, leading_rows: Sequence = (), table=None) -> list[dict]:
    """Per (layer, tap kind, quantity): accuracy of the judged ``checks`` (a `CheckSet`).

    Rows cover ``var`` (``sum_sq`` for the pattern) of every tap, and ``mean`` where the
    theory mean is not zero (``mlp.hook_post``). Each row: ``layer`` (0-based),
    ``tap`` (kind, without layer), ``quantity``, ``level``, ``rel_tol`` (declared),
    ``checks``, ``failed``, ``max_abs_rel_error`` with ``position``, ``rel_error``
    (signed), ``rel_se`` (SE of the relative error) and ``z`` at that position,
    ``max_abs_z`` over positions, ``leading_max_abs_rel_error`` (the paper's picture
    through depth) and, with ``table``, ``assumptions`` of the tap.
    """
    groups: dict[tuple[int, str, str], list] = {}
    for c in checks:
        suffix = suffix_of(c.tap)
        if c.quantity == "mean":
            if not (_finite(c.theory) and c.theory != 0.0):
                continue
        elif c.quantity != primary_quantity(suffix):
            continue
        groups.setdefault((layer_of(c.tap), suffix, c.quantity), []).append(c)
    leading: dict[tuple[int, str, str], float] = {}
    for r in leading_rows:
        key = (layer_of(r.tap), suffix_of(r.tap), r.quantity)
        if key in groups and math.isfinite(r.rel_error):
            leading[key] = max(leading.get(key, 0.0), abs(r.rel_error))
    rows = []
    for (layer, suffix, quantity), mine in sorted(groups.items(), key=lambda kv: kv[0][0]):
        rel = [(abs((c.theory - c.sim) / c.sim), c) for c in mine if c.sim and math.isfinite(c.sim)]
        worst_rel, worst = max(rel, key=lambda rc: rc[0]) if rel else (math.nan, mine[0])
        zs = [abs(c.z) for c in mine if math.isfinite(c.z)]
        signed = (worst.theory - worst.sim) / worst.sim if worst.sim else math.nan
        rel_se = worst.se / abs(worst.sim) if worst.sim and math.isfinite(worst.se) else math.nan
        row = {
            "layer": layer, "tap": suffix, "quantity": quantity, "level": mine[0].level,
            "rel_tol": max(c.rel_tol for c in mine) if mine[0].level != "exact" else 0.0,
            "checks": len(mine), "failed": sum(not c.passed for c in mine),
            "max_abs_rel_error": worst_rel, "position": worst.position, "rel_error": signed, "rel_se": rel_se,
            "z": worst.z if math.isfinite(worst.z) else None,
            "max_abs_z": max(zs) if zs else None,
            "leading_max_abs_rel_error": leading.get((layer, suffix, quantity)),
        }
        tap = f"blocks.{layer}.{suffix}"
        if table is not None:
            row["assumptions"] = list(table[tap].assumptions) if tap in table else []
        rows.append(row)
    return rows


def depth_findings(rows: Sequence[dict], taps: Sequence[str] = MAIN_TAPS) -> list[dict]:
    """Where the error grows with depth, for each main tap kind.

    Growth: at some layer ``l >= 1`` (0-based) the largest |relative error| is resolved
    (|z| beyond the Bonferroni critical value at `GROWTH_ALPHA` over the tap's checks at
    the deeper layers, ``z_threshold``) and at least `GROWTH_FACTOR` times layer 0's. Each finding names the layer of the largest error, the
    errors at layer 0 and there, whether it stays within the declared tolerance, and the
    assumptions of that layer's tap that layer 0's does not make (``new_assumptions``):
    the candidates for what breaks. A non-residual main tap (`WITNESS_TAPS`) of the same
    layer that does *not* grow
    and rests on some of those assumptions but not on all of the growing tap's clears
    them (its error would grow too if they broke): what is left is ``suspects``, the
    assumptions the growth singles out. ``sentence`` says it in words.
    """
    findings = []
    grown: dict[str, bool] = {}
    for suffix in taps:
        mine = {r["layer"]: r for r in rows if r["tap"] == suffix and r["quantity"] == primary_quantity(suffix)}
        if len(mine) < 2 or 0 not in mine:
            continue
        base = mine[0]
        deeper = [r for layer, r in mine.items() if layer > 0 and _finite(r["max_abs_rel_error"])]
        if not deeper or not _finite(base["max_abs_rel_error"]):
            continue
        worst = max(deeper, key=lambda r: r["max_abs_rel_error"])
        threshold = critical_z(GROWTH_ALPHA, sum(r["checks"] for r in deeper))
        grows = (worst["max_abs_rel_error"] >= GROWTH_FACTOR * base["max_abs_rel_error"]
                 and _finite(worst["z"]) and abs(worst["z"]) > threshold)
        per_layer = [round(100 * mine[k]["max_abs_rel_error"], 2) for k in sorted(mine)]
        new = [a for a in worst.get("assumptions", []) if a not in set(base.get("assumptions", []))]
        within = worst["max_abs_rel_error"] <= worst["rel_tol"] if worst["level"] != "exact" else False
        grown[suffix] = bool(grows)
        findings.append({
            "tap": suffix, "grows": bool(grows), "layer": worst["layer"], "position": worst["position"],
            "rel_error": worst["rel_error"], "z": worst["z"], "base_max_abs_rel_error": base["max_abs_rel_error"],
            "max_abs_rel_error": worst["max_abs_rel_error"], "rel_tol": worst["rel_tol"],
            "within_tolerance": bool(within), "per_layer_percent": per_layer, "new_assumptions": new,
            "suspects": list(new), "cleared_by": [], "z_threshold": threshold,
        })
    # Clear assumptions shared with taps of the same layer whose error does not grow.
    by_key = {(r["layer"], r["tap"]): r for r in rows if r["quantity"] == primary_quantity(r["tap"])}
    for f in findings:
        if not f["grows"]:
            continue
        mine = set(by_key[(f["layer"], f["tap"])].get("assumptions", []))
        for other in taps:
            row = by_key.get((f["layer"], other))
            if other == f["tap"] or other not in WITNESS_TAPS or row is None or grown.get(other, True):
                continue
            theirs = set(row.get("assumptions", []))
            if mine <= theirs:  # it rests on everything the growing tap does: its error is diluted, not a witness
                continue
            cleared = [a for a in f["suspects"] if a in theirs]
            if cleared:
                f["suspects"] = [a for a in f["suspects"] if a not in theirs]
                f["cleared_by"].append(other)
    for f in findings:
        f["sentence"] = _sentence(f)
    return findings


def _sentence(f: dict) -> str:
    suffix = f["tap"]
    if not f["grows"]:
        return (f"`{suffix}`: no resolved growth with depth (largest |error| per layer: "
                + ", ".join(f"{e:.2f}%" for e in f["per_layer_percent"]) + ").")
    side = "above" if f["rel_error"] > 0 else "below"
    text = (
        f"`{suffix}`: the error grows with depth, from {100 * f['base_max_abs_rel_error']:.2f}% at layer 0 to "
        f"{100 * f['max_abs_rel_error']:.2f}% at layer {f['layer']} (m = {f['position']}, theory {side} "
        f"simulation, z = {f['z']:+.1f}; " + ("within" if f["within_tolerance"] else "beyond")
        + f" the declared {100 * f['rel_tol']:.0f}%). "
    )
    if not f["new_assumptions"]:
        return text + ("The deeper layer makes no assumption that layer 0 does not; the growth comes from the "
                       "approximations the two share, compounded through the recursion.")
    if f["suspects"] and f["cleared_by"]:
        cleared = [a for a in f["new_assumptions"] if a not in f["suspects"]]
        many = len(f["cleared_by"]) > 1
        return text + (
            "Most likely what breaks: " + "; ".join(f["suspects"]) + ". Less likely: " + "; ".join(cleared) + ": "
            + ", ".join(f"`{t}`" for t in f["cleared_by"]) + " at the same layer "
            + ("rest on it too and their errors do not grow" if many else "rests on it too and its error does not grow")
            + " (a hint, not a proof: one assumption can touch two taps unequally, e.g. the shared "
            "off-diagonal part of the kernel that attention passes on and the MLP does not; see "
            "docs/theory.md, \"Measured through depth\").")
    return text + ("What breaks is among what the deeper layer assumes and layer 0 does not: "
                   + "; ".join(f["suspects"] or f["new_assumptions"]) + ".")

