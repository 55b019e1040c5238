"""`ModelSpec`: the one description of a random NoPE transformer.

Theory owns the spec because the theory defines the object being studied; `simulate`
realises the same spec in torch. The spec is a frozen dataclass validated on
construction (nanoGPT's ``GPTConfig``, made immutable); variants are made with
``dataclasses.replace``.

Every numeric field may be a sympy expression in symbolic mode. For symbolic values we
raise only when a condition is *definitely* false (sympy.stats' ``_value_check`` rule):
``sigma_q = Symbol("sigma_q", positive=True)`` is accepted, ``sigma_q = -1`` is not.

Example
-------
>>> from theory import ModelSpec
>>> spec = ModelSpec(d_model=64, n_heads=4, n_layers=1, seq_len=32)
>>> spec.d_head
16
>>> ModelSpec.from_json(spec.to_json()) == spec
True
>>> sym = spec.symbolic("d_model", "sigma_q")
>>> sym.d_model
d
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import warnings
from dataclasses import dataclass
from typing import Any, Union

import sympy as sp

from ._hf_config import read_hf_config
from ._outputs import atomic_write_text, shown
from ._spec_schedule import AttnTemperature, at_layer, check_positional, check_qk_norm

Number = Union[int, float, sp.Expr]

ATTN_SCALES = ("sqrt", "linear")
ACTIVATIONS = ("gelu", "gelu_tanh", "relu")
NORMS = ("pre",)
POSITIONALS = ("none", "learned", "sinusoidal", "rope", "alibi")
OUTPUT_SCALINGS = ("none", "gpt2")
NORMALIZATIONS = ("layernorm", "rmsnorm")
MLPS = ("standard", "swiglu")

# Fields that count things (positive integers) and fields that are standard deviations.
SIZE_FIELDS = ("d_model", "n_heads", "n_layers", "seq_len", "mlp_ratio")
SIGMA_FIELDS = (
    "sigma_embed",
    "sigma_q",
    "sigma_k",
    "sigma_v",
    "sigma_o",
    "sigma_mlp_in",
    "sigma_mlp_out",
)

# Smallest value of a size field other than 1, and why.
MIN_SIZES = {
    "d_model": (2, "LayerNorm of a single coordinate is identically 0 (x - mean(x) = 0)"),
}

# Floats above 2^53 are not exact integers: an integer field written as 1e300 is refused.
EXACT_FLOAT_INTEGER = 2**53

# A spec is a small JSON object; a file larger than this is refused before it is parsed.
MAX_SPEC_BYTES = 1 << 20

# The name each field takes as a sympy symbol (short, as it reads in a paper).
SYMBOL_NAMES = {
    "d_model": "d",
    "n_heads": "H",
    "n_layers": "L",
    "seq_len": "T",
    "mlp_ratio": "r",
    "sigma_embed": "sigma_e",
    "sigma_q": "sigma_q",
    "sigma_k": "sigma_k",
    "sigma_v": "sigma_v",
    "sigma_o": "sigma_o",
    "sigma_mlp_in": "sigma_in",
    "sigma_mlp_out": "sigma_out",
    "ln_eps": "epsilon",
}


def field_symbol(field: str) -> sp.Symbol:
    """The sympy symbol standing for a numeric spec field, with its assumptions."""
    if field not in SYMBOL_NAMES:
        raise ValueError(
            f"field {field!r} cannot be symbolic; symbolic fields are: {', '.join(SYMBOL_NAMES)}"
        )
    if field in SIZE_FIELDS:
        return sp.Symbol(SYMBOL_NAMES[field], positive=True, integer=True)
    if field == "ln_eps":
        return sp.Symbol(SYMBOL_NAMES[field], nonnegative=True)
    return sp.Symbol(SYMBOL_NAMES[field], positive=True)


def _is_symbolic(value: Any) -> bool:
    return isinstance(value, sp.Basic) and not value.is_number


def _as_integer(value: Any, allowed: str) -> int:
    """``value`` as an int: an int, or a float that is exactly an integer (JSON may carry
    768.0); a float beyond 2^53 (1e300) is not an exact integer and is refused."""
    if isinstance(value, bool):
        raise ValueError(f"{allowed}, got {value!r}")
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        if abs(value) >= EXACT_FLOAT_INTEGER:
            raise ValueError(f"{allowed}, got the float {value!r}, which is beyond 2^53 and not an exact integer")
        return int(value)
    raise ValueError(f"{allowed}, got {shown(value)}")


def _definitely(condition: Any) -> bool | None:
    """True/False when a (possibly symbolic) relational is decided, None otherwise."""
    if isinstance(condition, (bool,)):
        return condition
    if condition is sp.true:
        return True
    if condition is sp.false:
        return False
    return None


@dataclass(frozen=True)
class ModelSpec:
    """A causal, pre-LN transformer without positional embeddings, at random init.

    Defaults follow GPT-2 small (Radford et al. 2019): width 768, 12 heads of 64,
    12 layers, context 1024, all weights N(0, 0.02^2), LayerNorm eps 1e-5, logits
    scaled by 1/sqrt(d_head), MLP ratio 4 with the tanh-approximate GELU. Token
    inputs are continuous Gaussian, ``x_m ~ N(0, sigma_embed^2 I)`` i.i.d. over
    positions (``vocab_size=None``); biases are zero and LayerNorm gains are one, as
    at GPT-2's initialisation.

    Fields
    ------
    d_model, n_heads, n_layers, seq_len, mlp_ratio : positive integers
        ``d_model`` must be divisible by ``n_heads``; ``d_head = d_model / n_heads``.
    sigma_embed, sigma_q, sigma_k, sigma_v, sigma_o, sigma_mlp_in, sigma_mlp_out : float >= 0
        Standard deviation of the entries of each weight matrix (and of the inputs).
    ln_eps : float >= 0
        LayerNorm's epsilon: ``LN(x) = (x - mean) / sqrt(var_biased + eps)``.
    attn_scale : "sqrt" | "linear"
        Logits divided by ``sqrt(d_head)`` or by ``d_head``.
    activation : "gelu" | "gelu_tanh" | "relu"
        The MLP's nonlinearity: "gelu" is the exact erf form, "gelu_tanh" GPT-2's.
    norm : "pre"
        LayerNorm placement.
    attn_only : bool
        No MLP sub-block when true.
    positional : "none" | "learned" | "sinusoidal" | "rope" | "alibi"
        "none" is the subject of this toolkit (and the only one theory covers); the
        others exist in `simulate` for comparison experiments.
    output_scaling : "none" | "gpt2"
        "gpt2" divides the std of the two projections that write into the residual
        stream (``W_o`` and the MLP's ``W_out``) by ``sqrt(2 * n_layers)``, as GPT-2's
        initialisation does; see `sigma_o_effective`, `sigma_mlp_out_effective`.
    vocab_size : int | None
        None: continuous Gaussian token embeddings; an integer: ids drawn uniformly
        from a random embedding table of that many rows.

    Modern decoder blocks (Llama, Qwen, SmolLM3, Llama 4; docs/modern-blocks.md):

    positional : also a list with one entry per layer from "none" | "rope" | "alibi"
        (SmolLM3 and Llama 4 make every fourth layer "none"); see `positional_at`.
    normalization : "layernorm" | "rmsnorm"
        RMSNorm is ``x / sqrt(mean(x^2) + eps)`` (no mean removal, gain 1; ``ln_eps`` is its eps).
    mlp : "standard" | "swiglu"
        "standard" is ``W_out phi(W_in x)`` with ``activation``; "swiglu" is
        ``W_down (silu(W_gate x) * (W_up x))``, ``W_gate``, ``W_up`` with std ``sigma_mlp_in``
        and ``W_down`` with ``sigma_mlp_out``.
    d_mlp : int | None
        The MLP's hidden width; None means ``mlp_ratio * d_model``. `mlp_width` is the width used.
    n_kv_heads : int | None
        Grouped-query attention: the number of key/value heads, a divisor of ``n_heads``
        (None: ``n_heads``, ordinary multi-head attention). See `kv_heads`.
    qk_norm : bool | list of bool
        RMS-normalise each head's q and k over ``d_head`` (gain 1, eps ``ln_eps``) before RoPE,
        for the whole model or per layer (Llama 4: on the RoPE layers only). See `qk_norm_at`.
    rope_theta : float > 0
        RoPE's base (rotate-half convention as in Hugging Face Llama, positions 0..T-1).
    attn_temperature : None | {"floor_scale": F, "scale": s}
        Llama 4's query temperature on the "none" layers, `AttnTemperature`.
    """

    d_model: Number = 768
    n_heads: Number = 12
    n_layers: Number = 12
    seq_len: Number = 1024
    sigma_embed: Number = 0.02
    sigma_q: Number = 0.02
    sigma_k: Number = 0.02
    sigma_v: Number = 0.02
    sigma_o: Number = 0.02
    sigma_mlp_in: Number = 0.02
    sigma_mlp_out: Number = 0.02
    ln_eps: Number = 1e-5
    attn_scale: str = "sqrt"
    mlp_ratio: Number = 4
    activation: str = "gelu_tanh"
    norm: str = "pre"
    attn_only: bool = False
    positional: str = "none"
    output_scaling: str = "none"
    vocab_size: int | None = None
    normalization: str = "layernorm"
    mlp: str = "standard"
    d_mlp: int | None = None
    n_kv_heads: int | None = None
    qk_norm: bool | tuple[bool, ...] = False
    rope_theta: float = 10000.0
    attn_temperature: AttnTemperature | None = None

    # ------------------------------------------------------------------ validation
    def __post_init__(self) -> None:
        for name in SIZE_FIELDS:
            self._check_size(name)
        for name in SIGMA_FIELDS:
            self._check_nonnegative(name, "a finite number >= 0")
        self._check_nonnegative("ln_eps", "a finite number >= 0 (GPT-2 uses 1e-5)")
        self._check_divisible()
        if self.sigma_embed == 0 and self.ln_eps == 0:
            raise ValueError(
                "sigma_embed must be > 0 when ln_eps = 0 (LayerNorm of a zero input is 0/0); "
                "give sigma_embed > 0 or ln_eps > 0"
            )
        self._check_choice("attn_scale", ATTN_SCALES)
        self._check_choice("activation", ACTIVATIONS)
        self._check_choice("norm", NORMS)
        object.__setattr__(self, "positional", check_positional(self.positional, self.n_layers, POSITIONALS))
        self._check_choice("output_scaling", OUTPUT_SCALINGS)
        self._check_modern_block()
        if not isinstance(self.attn_only, bool):
            raise ValueError(f"attn_only must be true or false, got {shown(self.attn_only)}")
        self._check_optional_count("vocab_size", "vocab_size must be null (continuous Gaussian inputs) or an integer >= 1")

    def _check_modern_block(self) -> None:
        """The fields of modern decoder blocks (see the class docstring)."""
        self._check_choice("normalization", NORMALIZATIONS)
        self._check_choice("mlp", MLPS)
        self._check_optional_count("d_mlp", "d_mlp must be null (mlp_ratio * d_model) or an integer >= 1")
        kv = self._check_optional_count(
            "n_kv_heads", "n_kv_heads must be null (= n_heads) or an integer >= 1 that divides n_heads")
        if kv is not None and not _is_symbolic(self.n_heads) and self.n_heads % kv:
            divisors = [k for k in range(1, self.n_heads + 1) if self.n_heads % k == 0]
            raise ValueError(f"n_kv_heads ({kv}) must divide n_heads ({self.n_heads}); "
                             f"allowed n_kv_heads are {', '.join(map(str, divisors))}")
        object.__setattr__(self, "qk_norm", check_qk_norm(self.qk_norm, self.n_layers))
        theta = self.rope_theta
        if isinstance(theta, bool) or not isinstance(theta, numbers.Real) or not math.isfinite(float(theta)) or theta <= 1:
            raise ValueError(f"rope_theta must be a finite number > 1 (Llama uses 10000 or 500000), got {shown(theta)}")
        object.__setattr__(self, "rope_theta", float(theta))
        object.__setattr__(self, "attn_temperature", AttnTemperature.parse(self.attn_temperature))

    def _check_optional_count(self, name: str, allowed: str) -> int | None:
        """A field that is null or an integer >= 1 (``allowed`` says so): stored as an int."""
        value = getattr(self, name)
        if value is None:
            return None
        count = _as_integer(value, allowed)
        if count < 1:
            raise ValueError(f"{allowed}, got {count}")
        object.__setattr__(self, name, count)
        return count

    def _check_size(self, name: str) -> None:
        value = getattr(self, name)
        minimum, why = MIN_SIZES.get(name, (1, ""))
        allowed = f"{name} must be an integer >= {minimum}" + (f" ({why})" if why else "")
        if isinstance(value, sp.Basic):
            if _is_symbolic(value):
                if value.is_positive is False or value.is_integer is False:
                    raise ValueError(f"{allowed}, got the symbol {shown(value)} which is not")
                return
            if not value.is_Integer:
                raise ValueError(f"{allowed}, got {shown(value)}")
            value = int(value)
        value = _as_integer(value, allowed)
        if value < minimum:
            raise ValueError(f"{allowed}, got {value}")
        object.__setattr__(self, name, value)

    def _check_nonnegative(self, name: str, allowed: str) -> None:
        value = getattr(self, name)
        if isinstance(value, bool):
            raise ValueError(f"{name} must be {allowed}, got {value!r}")
        if isinstance(value, sp.Basic):
            if _is_symbolic(value):
                if value.is_nonnegative is False or value.is_finite is False:
                    raise ValueError(f"{name} must be {allowed}, got the symbol {shown(value)} which is not")
                return
            if not value.is_real:
                raise ValueError(f"{name} must be {allowed}, got {shown(value)}")
        if not isinstance(value, numbers.Real):
            raise ValueError(f"{name} must be {allowed}, got {shown(value)}")
        try:
            value = float(value)
        except OverflowError:  # an integer beyond the float range
            raise ValueError(f"{name} must be {allowed}, got an integer of {len(str(abs(int(value))))} digits") from None
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be {allowed}, got {value!r}")
        object.__setattr__(self, name, value)

    def _check_divisible(self) -> None:
        d, h = self.d_model, self.n_heads
        if _is_symbolic(d) or _is_symbolic(h):
            if (sp.sympify(d) / h).is_integer is False:
                raise ValueError(f"d_model ({d}) must be divisible by n_heads ({h})")
            return
        if d % h:
            raise ValueError(
                f"d_model ({d}) must be divisible by n_heads ({h}); "
                f"allowed n_heads are divisors of {d}"
            )

    def _check_choice(self, name: str, allowed: tuple[str, ...]) -> None:
        value = getattr(self, name)
        if not isinstance(value, str) or value not in allowed:
            raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {shown(value)}")

    # ------------------------------------------------------------------ derived
    @property
    def d_head(self) -> Number:
        """Width of one attention head, ``d_model / n_heads``."""
        if self.is_symbolic:
            return sp.sympify(self.d_model) / self.n_heads
        return self.d_model // self.n_heads

    @property
    def mlp_width(self) -> Number:
        """Width of the MLP hidden layer: ``d_mlp`` when given, else ``mlp_ratio * d_model``."""
        return self.d_mlp if self.d_mlp is not None else self.mlp_ratio * self.d_model

    @property
    def kv_heads(self) -> Number:
        """The number of key/value heads: ``n_kv_heads``, or ``n_heads`` when it is null."""
        return self.n_kv_heads if self.n_kv_heads is not None else self.n_heads

    def positional_at(self, layer: int) -> str:
        """The positional scheme of 0-based ``layer`` (the whole-model string, or its list entry)."""
        return at_layer(self.positional, layer)

    def qk_norm_at(self, layer: int) -> bool:
        """Whether 0-based ``layer`` RMS-normalises its queries and keys."""
        return at_layer(self.qk_norm, layer)

    def temperature_at(self, layer: int) -> AttnTemperature | None:
        """The query temperature of 0-based ``layer``: `attn_temperature` on "none" layers, else None."""
        return self.attn_temperature if self.positional_at(layer) == "none" else None

    @property
    def positional_schemes(self) -> tuple[str, ...]:
        """The distinct positional schemes the model uses, in order of first appearance."""
        layers = self.positional if isinstance(self.positional, tuple) else (self.positional,)
        return tuple(dict.fromkeys(layers))

    @property
    def residual_write_scale(self) -> Number:
        """Factor on the std of ``W_o`` and ``W_out``: 1, or ``1/sqrt(2 n_layers)`` for "gpt2"."""
        if self.output_scaling == "gpt2":
            return 1 / sp.sqrt(2 * sp.sympify(self.n_layers)) if self.is_symbolic else 1 / math.sqrt(2 * self.n_layers)
        return 1

    @property
    def sigma_o_effective(self) -> Number:
        """The std the entries of ``W_o`` are drawn with: ``sigma_o`` times `residual_write_scale`."""
        return self.sigma_o * self.residual_write_scale

    @property
    def sigma_mlp_out_effective(self) -> Number:
        """The std of the entries of the MLP's ``W_out``: ``sigma_mlp_out`` times `residual_write_scale`."""
        return self.sigma_mlp_out * self.residual_write_scale

    @property
    def is_symbolic(self) -> bool:
        """True when any numeric field is a sympy symbol (or expression)."""
        return any(_is_symbolic(getattr(self, f)) for f in SYMBOL_NAMES)

    def symbolic(self, *fields: str) -> "ModelSpec":
        """A copy in which each named numeric field is its sympy symbol.

        >>> ModelSpec().symbolic("sigma_q").sigma_q
        sigma_q
        """
        return dataclasses.replace(self, **{f: field_symbol(f) for f in fields})

    def replace(self, **changes: Any) -> "ModelSpec":
        """``dataclasses.replace`` as a method, validated like the constructor."""
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; a symbolic field is written as ``{"symbol": name}``."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, sp.Basic):
                value = {"symbol": str(value)} if _is_symbolic(value) else float(value)
            elif isinstance(value, tuple):  # a per-layer schedule
                value = list(value)
            elif isinstance(value, AttnTemperature):
                value = value.to_dict()
            out[f.name] = value
        return out

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelSpec":
        if not isinstance(data, dict):
            raise ValueError(f"a spec must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known, key=str)
        if unknown:
            # one line of at most ~400 characters whatever the input: two names, then a count
            listed = ", ".join(shown(k, 24) for k in unknown[:2])
            more = f" and {len(unknown) - 2} more" if len(unknown) > 2 else ""
            raise ValueError(
                f"unknown spec field(s) {listed}{more}; allowed fields are: {','.join(sorted(known))}"
            )
        kwargs = {}
        for name, value in data.items():
            if isinstance(value, dict) and name != "attn_temperature":
                value = _symbol_from_json(name, value)
            kwargs[name] = value
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str) -> "ModelSpec":
        """Parse a spec from JSON text (or a path to a JSON file)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"spec is not valid JSON: {err}") from None
        except RecursionError:
            raise ValueError("spec is nested too deeply to be a ModelSpec (a flat JSON object of fields)") from None
        except ValueError as err:  # e.g. an integer literal of more than 4300 digits
            raise ValueError(f"spec is not valid JSON: {shown(str(err))}") from None
        return cls.from_dict(data)

    @classmethod
    def from_hf_config(cls, source: Any, *, strict: bool = False, **overrides: Any) -> "ModelSpec":
        """The spec of a Hugging Face model at initialisation, from its ``config.json``.

        ``source``: a dict or the path of a config of the GPT-2, Llama, Qwen2/Qwen3,
        SmolLM3 or Llama-4-text families (`theory._hf_config` has the key mapping).
        ``overrides`` replace fields (``seq_len=512`` for a short context of a
        long-context model). Keys the spec does not express are reported in a
        ``UserWarning`` (``strict=True``: a ValueError); `theory._hf_config.read_hf_config`
        returns the full reading (used / ignored / not understood).

        >>> spec = ModelSpec.from_hf_config({"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4,
        ...     "num_key_value_heads": 2, "num_hidden_layers": 2, "intermediate_size": 128,
        ...     "max_position_embeddings": 32, "rms_norm_eps": 1e-6, "rope_theta": 500000.0})
        >>> spec.normalization, spec.mlp, spec.kv_heads, spec.positional, spec.rope_theta
        ('rmsnorm', 'swiglu', 2, 'rope', 500000.0)
        """
        reading = read_hf_config(source, **overrides)
        if reading.not_understood:
            message = (f"Hugging Face config ({reading.family}): not understood: "
                       + "; ".join(f"{k} ({why})" for k, why in reading.not_understood.items()))
            if strict:
                raise ValueError(message)
            warnings.warn(message, UserWarning, stacklevel=2)
        return cls(**reading.fields)

    @classmethod
    def load(cls, path: str) -> "ModelSpec":
        """Read a spec from a JSON file."""
        try:
            with open(path, "rb") as fh:
                raw = fh.read(MAX_SPEC_BYTES + 1)
        except OSError as err:
            raise ValueError(f"cannot read spec file {shown(str(path))}: {err.strerror or err}") from None
        if len(raw) > MAX_SPEC_BYTES:
            raise ValueError(f"spec file {shown(str(path))} is larger than {MAX_SPEC_BYTES} bytes; a spec is a small JSON object")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"spec file {shown(str(path))} is not UTF-8 text (byte {err.start})") from None
        return cls.from_json(text)

    def save(self, path: str) -> None:
        """Write the spec as JSON, atomically (temporary file and rename)."""
        atomic_write_text(path, self.to_json() + "\n")


def _symbol_from_json(name: str, value: dict) -> sp.Symbol:
    """``{"symbol": NAME}`` -> the field's sympy symbol.

    A field's symbol carries its assumptions and the name the derivations use (d, sigma_q,
    ...): ``NAME`` must be that name (as `to_dict` writes it) or the field's own name. Other
    names are refused rather than silently ignored; rename symbols in LaTeX with
    ``theory latex --notation``.
    """
    if name not in SYMBOL_NAMES:
        raise ValueError(f"{name} cannot be symbolic; symbolic fields are: {', '.join(SYMBOL_NAMES)}")
    example = f'{{"symbol": "{SYMBOL_NAMES[name]}"}}'
    if set(value) != {"symbol"}:
        raise ValueError(f"{name}: a symbolic field is written {example}; got {shown(value)}")
    given = value["symbol"]
    if given not in (SYMBOL_NAMES[name], name):
        raise ValueError(
            f"{name}: its symbol is {SYMBOL_NAMES[name]!r} (write {example}); got {shown(given)}; "
            "to print another name in LaTeX use theory latex --notation"
        )
    return field_symbol(name)
