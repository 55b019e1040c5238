"""Derive every first-layer step of a spec, and predict taps at query positions.

>>> from theory import ModelSpec, derive, predict
>>> spec = ModelSpec(d_model=64, n_heads=4, n_layers=1, seq_len=256)
>>> derivation = derive(spec)
>>> print(derivation["blocks.0.attn.hook_q"].best.quantities["var"])
0.02494...
>>> predict(spec, [1, 256], taps=["attn.hook_pattern"])["blocks.0.attn.hook_pattern"].at(1)["sum_sq"]
1.0
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator, Mapping


from . import depth
from . import steps as _steps
from ._budget import format_bytes, format_count, resolve_memory_limit
from ._domain import check_domain
from ._result import StepResult
from .positions import check_positions
from .prediction import Prediction, TapPrediction
from .spec import ModelSpec
from .taps import block_taps, parse_tap, tap_name

MEASURE = "annealed"


@dataclass(frozen=True)
class Step:
    """One tap with its two levels side by side."""

    tap: str
    leading: StepResult
    best: StepResult

    def at(self, level: str) -> StepResult:
        if level not in _steps.LEVELS:
            raise ValueError(f"level must be one of {', '.join(_steps.LEVELS)}; got {level!r}")
        return getattr(self, level)


@dataclass(frozen=True)
class Derivation(Mapping[str, Step]):
    """The first-layer (``blocks.0``) derivation of a spec: an ordered mapping tap name -> `Step`.

    ``constants`` are the derived constants the steps use, as sympy expressions (the
    renderers print them and never derive them): ``d_head``, ``s`` (the logit scale),
    ``D = d - 1``, ``c = d eps/sigma_e^2``, ``nu_1``, ``nu_2`` (symbols when they have no
    short closed form: ``nu_symbolic``), ``rho^2 = d nu_1``, ``tau_bar^2``, ``delta``
    (eps > 0 only), and ``sigma_q(tau_bar^2)``: the positive roots sigma_q of
    ``tau_bar^2(spec) = tau_bar2`` when sigma_q is a symbol (`theory.steps.TAU_BAR2`).
    """

    spec: ModelSpec
    steps: tuple[Step, ...]
    constants: Mapping[str, object] = field(default_factory=dict)
    nu_symbolic: bool = False

    def __getitem__(self, key) -> Step:
        name = tap_name(key) if isinstance(key, tuple) else key
        for step in self.steps:
            if step.tap == name:
                return step
        raise KeyError(f"{key!r}: this derivation covers {', '.join(s.tap for s in self.steps)}")

    def __iter__(self) -> Iterator[str]:
        return (s.tap for s in self.steps)

    def __len__(self) -> int:
        return len(self.steps)

    def text(self) -> str:
        """Every step, both levels, as plain text."""
        blocks = [f"First-layer (blocks.0) derivation ({MEASURE} measure) for {self.spec.to_json(None)}"]
        for step in self.steps:
            blocks.append("=" * 78)
            blocks.append("leading (paper): " + step.leading.describe())
            blocks.append("best:            " + step.best.describe())
        return "\n".join(blocks)

    # LaTeX: ``latex()`` (the derivation body) and ``_repr_latex_`` are attached by
    # `theory._facade.install_notebook_methods` on ``import theory``.

    def to_dict(self) -> dict:
        return {
            "spec": self.spec.to_dict(),
            "measure": MEASURE,
            "steps": {s.tap: {"leading": s.leading.to_dict(), "best": s.best.to_dict()} for s in self.steps},
        }


def derive(spec: ModelSpec | None = None) -> Derivation:
    """Derive every first-layer tap of ``spec`` at both levels (defaults: GPT-2 small)."""
    spec = spec or ModelSpec()
    ctx = _steps.LayerOne.from_spec(spec)
    out = []
    for suffix, step in _steps.layer_one_steps(spec):
        tap = f"blocks.0.{suffix}"
        out.append(Step(tap, step(ctx, "leading", tap=tap), step(ctx, "best", tap=tap)))
    return Derivation(spec, tuple(out), ctx.constants(), ctx.nu1 == _steps.NU1)


def predict(
    spec: ModelSpec | None = None,
    positions: Iterable[int] = (1, 2, 8, 256),
    level: str = "best",
    taps: Iterable[str] | None = None,
    layers: Iterable[int] | None = None,
    progress=None,
    *,
    force: bool = False,
    memory_limit: float | None = None,
    time_limit: float | None = None,
) -> dict:
    """Numbers for every tap of every layer at each query position m (1-based).

    Returns a `theory.Prediction`: tap name -> `theory.TapPrediction` (values per
    position, level, error, assumptions, regime, declared tolerance); ``.to_dict()`` is
    the JSON of ``python -m theory predict --json``. ``"mean"``/``"var"`` describe one
    coordinate (scores: one score ``l_mn`` pooled over keys n <= m; pattern: ``"mean"``
    = E[a_mn], ``"sum_sq"`` = E[sum_n a_mn^2]). ``positions`` are sorted and deduplicated
    (`theory.positions.check_positions`).

    The attention taps of layer 0 (``blocks.0``) come from the first-layer derivation
    (`derive`); every other tap from the position-kernel recursion `theory.depth`, run
    up to the deepest layer asked for. ``taps`` (full names; a bare suffix means layer
    0) or ``layers`` (0-based) narrow the output; the default is every tap of every layer.
    ``force``, ``memory_limit``, ``time_limit``: the size guards of `theory.depth.predict`.
    A spec outside the theory (`theory.check_domain`) is one ValueError before any work.
    """
    spec = spec or ModelSpec()
    if spec.is_symbolic:
        raise ValueError("predict needs numbers for every spec field; use derive for symbolic specs")
    if level not in _steps.LEVELS:
        raise ValueError(f"level must be one of {', '.join(_steps.LEVELS)}; got {level!r}")
    check_domain(spec, evaluate=True, level=level)
    pos = check_positions(positions, spec.seq_len)
    if taps is None:
        _check_output_size(spec, layers, pos.size, force, memory_limit)
    chosen = _chosen_taps(spec, taps, layers)
    derived = {f"blocks.0.{suffix}": step for suffix, step in _steps.layer_one_steps(spec)}
    records = {}
    if any(t in derived for t in chosen):
        ctx = _steps.LayerOne.from_spec(spec, with_forms=False)
        for tap in (t for t in chosen if t in derived):
            records[tap] = _layer_one_record(derived[tap](ctx, level, tap=tap), pos)
    rest = [t for t in chosen if t not in derived]
    if rest:
        deepest = max(parse_tap(t)[1] for t in rest)
        pred = depth.predict(spec, level, progress=progress, layers=deepest + 1, keep_kernels=False,
                             force=force, memory_limit=memory_limit, time_limit=time_limit)
        for tap in rest:
            records[tap] = pred[tap].restrict(pos)
    return Prediction(spec, level, tuple(records[t] for t in chosen if t in records), measure=MEASURE)


def _layer_one_record(result: StepResult, pos) -> TapPrediction:
    """A first-layer step's numbers at ``pos`` as a prediction record."""
    values = result.evaluate(pos)  # a variable that is exactly 0 has no kurtosis (0/0): left out
    return TapPrediction(result.tap, result.level, pos, values, result.error, result.assumptions, result.regime,
                         result.tolerance, result.tolerance_source, source="derive")


def _chosen_taps(spec: ModelSpec, taps: Iterable[str] | None, layers: Iterable[int] | None) -> list[str]:
    n_layers = int(spec.n_layers)
    suffixes = block_taps(spec)
    if layers is not None:
        layers = sorted({int(l) for l in layers})
        bad = [l for l in layers if not 0 <= l < n_layers]
        if bad or not layers:
            raise ValueError(f"layers must lie in 0..{n_layers - 1} (0-based), got {bad[:5] or 'none'}")
    if taps is None:
        # built per layer asked for: never a list of every tap of a 10^9-layer network
        return [tap_name(s, l) for l in (layers if layers is not None else range(n_layers)) for s in suffixes]
    chosen = []
    for t in taps:
        full = t if t.startswith("blocks.") else f"blocks.0.{t}"
        suffix, layer = parse_tap(full)  # a clear error for an unknown suffix
        if suffix not in suffixes or not 0 <= layer < n_layers:
            raise ValueError(f"tap {full!r} is not in this network (layers 0..{n_layers - 1}"
                             f"{', attention only' if spec.attn_only else ''})")
        chosen.append(full)
    if layers is not None:
        chosen = [t for t in chosen if parse_tap(t)[1] in layers]
    return chosen


# Bytes one predicted (tap, position) entry costs: a dict of 2-3 floats, its key, and its
# JSON text (measured: about 330 with json.dumps(indent=2) and the Python objects).
BYTES_PER_ENTRY = 500


def _check_output_size(spec: ModelSpec, layers, n_positions: int, force: bool, memory_limit: float | None) -> None:
    """Refuse an answer too large to hold (n_layers = 10^9 asks for 10^10 entries) before building it."""
    per_layer = len(block_taps(spec))
    n_layers = len(set(layers)) if layers is not None else int(spec.n_layers)
    need = float(n_layers) * per_layer * n_positions * BYTES_PER_ENTRY
    memory_limit, source = resolve_memory_limit(memory_limit)
    if not force and memory_limit is not None and need > memory_limit:
        raise ValueError(
            f"n_layers = {format_count(spec.n_layers)}: the answer has {float(n_layers) * per_layer * n_positions:.3g} entries, "
            f"about {format_bytes(need)}, limit {format_bytes(memory_limit)} ({source}); ask for fewer layers "
            f"(--layers) or pass --force (force=True)")
