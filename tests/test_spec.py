"""ModelSpec: validation at the boundary, JSON round trip, symbolic fields."""

import dataclasses
import json
import math

import pytest
import sympy as sp
from hypothesis import given
from hypothesis import strategies as st

from theory import ModelSpec
from theory.spec import SIGMA_FIELDS, SIZE_FIELDS, SYMBOL_NAMES, field_symbol

GPT2_SMALL = dict(d_model=768, n_heads=12, n_layers=12, seq_len=1024, sigma_embed=0.02, ln_eps=1e-5, attn_scale="sqrt", mlp_ratio=4)


def test_defaults_are_gpt2_small():
    spec = ModelSpec()
    for name, value in GPT2_SMALL.items():
        assert getattr(spec, name) == value
    assert spec.d_head == 64 and spec.mlp_width == 3072 and spec.d_mlp is None
    assert spec.vocab_size is None and spec.positional == "none" and spec.norm == "pre"


def test_fields_are_exactly_the_issue_list():
    names = [f.name for f in dataclasses.fields(ModelSpec)]
    assert names == [
        "d_model", "n_heads", "n_layers", "seq_len", "sigma_embed", "sigma_q", "sigma_k", "sigma_v",
        "sigma_o", "sigma_mlp_in", "sigma_mlp_out", "ln_eps", "attn_scale", "mlp_ratio", "activation",
        "norm", "attn_only", "positional", "output_scaling", "vocab_size",
        # modern decoder blocks (issue 16), appended so that existing specs stay unchanged
        "normalization", "mlp", "d_mlp", "n_kv_heads", "qk_norm", "rope_theta", "attn_temperature",
    ]


def test_gpt2_output_scaling_divides_the_residual_writes_by_sqrt_2L():
    spec = ModelSpec(n_layers=6, sigma_o=0.03, sigma_mlp_out=0.04, output_scaling="gpt2")
    assert spec.sigma_o_effective == pytest.approx(0.03 / 12**0.5, rel=1e-15)
    assert spec.sigma_mlp_out_effective == pytest.approx(0.04 / 12**0.5, rel=1e-15)
    assert spec.sigma_q == 0.02 and ModelSpec(sigma_o=0.03).sigma_o_effective == 0.03
    sym = spec.symbolic("n_layers", "sigma_o")
    L, s_o = sp.symbols("L sigma_o", positive=True)
    assert sp.simplify(sym.sigma_o_effective - s_o / sp.sqrt(2 * sym.n_layers)) == 0
    with pytest.raises(ValueError, match="output_scaling must be one of 'none', 'gpt2'"):
        ModelSpec(output_scaling="GPT2")


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        ModelSpec().d_model = 3


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"d_model": 0}, "d_model"),
        ({"d_model": -8}, "d_model"),
        ({"d_model": 64.5}, "d_model"),
        ({"d_model": True}, "d_model"),
        ({"d_model": 100, "n_heads": 3}, "d_model"),
        ({"n_heads": 0}, "n_heads"),
        ({"n_layers": 0}, "n_layers"),
        ({"seq_len": "10"}, "seq_len"),
        ({"mlp_ratio": 0}, "mlp_ratio"),
        ({"sigma_q": -0.1}, "sigma_q"),
        ({"sigma_k": float("nan")}, "sigma_k"),
        ({"sigma_v": float("inf")}, "sigma_v"),
        ({"sigma_embed": "0.02"}, "sigma_embed"),
        ({"ln_eps": -1e-5}, "ln_eps"),
        ({"attn_scale": "cube"}, "attn_scale"),
        ({"activation": "swish"}, "activation"),
        ({"norm": "post"}, "norm"),
        ({"positional": "RoPE"}, "positional"),
        ({"output_scaling": "x"}, "output_scaling"),
        ({"attn_only": "yes"}, "attn_only"),
        ({"vocab_size": 0}, "vocab_size"),
        ({"vocab_size": 2.5}, "vocab_size"),
    ],
)
def test_invalid_values_name_the_field(changes, field):
    with pytest.raises(ValueError, match=field):
        ModelSpec(**changes)


def test_error_lists_allowed_values():
    with pytest.raises(ValueError, match="'sqrt', 'linear'"):
        ModelSpec(attn_scale="log")


def test_json_round_trip_and_unknown_keys(tmp_path):
    spec = ModelSpec(d_model=64, n_heads=4, sigma_q=0.05, attn_scale="linear", vocab_size=100, ln_eps=0.0)
    assert ModelSpec.from_json(spec.to_json()) == spec
    path = tmp_path / "spec.json"
    spec.save(str(path))
    assert ModelSpec.load(str(path)) == spec
    with pytest.raises(ValueError, match="unknown spec field.*'d_modle'"):
        ModelSpec.from_json(json.dumps({"d_modle": 64}))
    with pytest.raises(ValueError, match="not valid JSON"):
        ModelSpec.from_json("{")
    with pytest.raises(ValueError, match="JSON object"):
        ModelSpec.from_json("[1, 2]")


def test_zero_input_scale_without_eps_is_refused():
    # LayerNorm of the zero vector with eps = 0 is 0/0: refuse it at the boundary.
    with pytest.raises(ValueError, match="sigma_embed"):
        ModelSpec(sigma_embed=0.0, ln_eps=0.0)
    assert ModelSpec(sigma_embed=0.0, ln_eps=1e-5).sigma_embed == 0.0


def test_integral_floats_from_json_become_ints():
    assert ModelSpec.from_json('{"d_model": 64.0, "n_heads": 4}').d_model == 64


def test_symbolic_fields():
    spec = ModelSpec().symbolic("d_model", "sigma_q", "ln_eps")
    assert spec.is_symbolic and isinstance(spec.d_model, sp.Symbol)
    assert spec.d_model.is_integer and spec.d_model.is_positive and spec.sigma_q.is_positive
    assert sp.simplify(spec.d_head - spec.d_model / 12) == 0
    assert ModelSpec.from_json(spec.to_json()) == spec
    # Symbols that are definitely invalid are refused; undecided ones are accepted.
    with pytest.raises(ValueError, match="sigma_q"):
        ModelSpec(sigma_q=sp.Symbol("s", negative=True))
    with pytest.raises(ValueError, match="d_model"):
        ModelSpec(d_model=sp.Symbol("d", integer=False))
    with pytest.raises(ValueError, match="cannot be symbolic"):
        ModelSpec().symbolic("attn_scale")
    assert set(SYMBOL_NAMES) == set(SIZE_FIELDS) | set(SIGMA_FIELDS) | {"ln_eps"}


# --- hypothesis: random invalid specs always give a ValueError naming the field -------
_bad_numbers = st.one_of(
    st.integers(max_value=-1),
    st.floats(allow_nan=True, allow_infinity=True).filter(lambda x: not (math.isfinite(x) and x >= 0)),
    st.text(max_size=3),
    st.none(),
    st.lists(st.integers(), max_size=2),
)
_bad_sizes = st.one_of(
    st.integers(max_value=0),
    st.floats().filter(lambda x: not (math.isfinite(x) and x.is_integer() and x >= 1)),
    st.text(max_size=3),
    st.none(),
    st.booleans(),
)
_bad_choice = st.text(max_size=8)


@st.composite
def invalid_field(draw):
    field = draw(st.sampled_from(SIZE_FIELDS + SIGMA_FIELDS + ("ln_eps", "attn_scale", "activation", "norm", "positional", "output_scaling", "vocab_size", "attn_only")))
    if field in SIZE_FIELDS:
        value = draw(_bad_sizes)
    elif field in SIGMA_FIELDS or field == "ln_eps":
        value = draw(_bad_numbers)
    elif field == "vocab_size":
        value = draw(st.one_of(st.integers(max_value=0), st.floats(), st.text(max_size=3), st.booleans()))
    elif field == "attn_only":
        value = draw(st.one_of(st.integers(), st.text(max_size=3), st.none()))
    else:
        value = draw(_bad_choice.filter(lambda s: s not in ("sqrt", "linear", "gelu", "gelu_tanh", "relu", "pre", "none",
                                                      "learned", "sinusoidal", "rope", "alibi", "gpt2")))
    return field, value


@given(invalid_field())
def test_random_invalid_specs_raise_value_error_naming_the_field(case):
    field, value = case
    if field == "d_model":
        # Keep divisibility from being the first complaint about an otherwise valid value.
        kwargs = {"d_model": value, "n_heads": 1}
    else:
        kwargs = {field: value}
    with pytest.raises(ValueError) as err:
        ModelSpec(**kwargs)
    assert field in str(err.value)


@given(st.integers(2, 4096), st.integers(1, 64))
def test_divisibility(d, h):
    if d % h:
        with pytest.raises(ValueError, match="divisible"):
            ModelSpec(d_model=d, n_heads=h)
    else:
        assert ModelSpec(d_model=d, n_heads=h).d_head * h == d


# ---------------------------------------------------------------- hostile input (hardening)
@pytest.mark.parametrize("value", [1e300, 2.0**53, 1e20, float("nan"), float("inf"), "768", [768], 1.5, True])
def test_size_fields_refuse_what_is_not_an_exact_integer(value):
    with pytest.raises(ValueError, match="d_model must be an integer"):
        ModelSpec(d_model=value, n_heads=1)


def test_size_fields_take_exact_integer_floats_and_d_model_needs_two():
    assert ModelSpec(d_model=768.0, n_heads=12.0, vocab_size=100.0).vocab_size == 100
    with pytest.raises(ValueError, match="d_model must be an integer >= 2 .*identically 0"):
        ModelSpec(d_model=1, n_heads=1)
    assert ModelSpec(d_model=2, n_heads=1).d_head == 2


def test_integer_beyond_the_float_range_is_refused_for_a_sigma():
    with pytest.raises(ValueError, match="sigma_q must be .* 401 digits"):
        ModelSpec(sigma_q=10**400)


def test_errors_echo_a_bounded_amount_of_input():
    with pytest.raises(ValueError) as err:
        ModelSpec(activation="x" * 10_000_000)
    assert "activation" in str(err.value) and len(str(err.value)) < 300
    with pytest.raises(ValueError) as err:
        ModelSpec.from_dict({f"unknown_{i}": 1 for i in range(20_000)})
    assert "and 19998 more" in str(err.value) and len(str(err.value)) < 600


def test_deeply_nested_json_is_one_clear_error():
    for text in ["[" * 100_000 + "]" * 100_000, '{"d_model": ' + "[" * 100_000 + "]" * 100_000 + "}"]:
        with pytest.raises(ValueError, match="nested too deeply"):
            ModelSpec.from_json(text)
    with pytest.raises(ValueError, match="d_model must be an integer"):  # nested, but within the parser's depth
        ModelSpec.from_json('{"d_model": ' + "[" * 500 + "]" * 500 + "}")


@pytest.mark.parametrize("name,ok", [("d", True), ("d_model", True), ("D", False), ("", False), (7, False), (["d"], False)])
def test_symbol_names_are_used_or_refused(name, ok):
    data = {"d_model": {"symbol": name}}
    if ok:
        assert ModelSpec.from_dict(data).d_model == field_symbol("d_model")
    else:
        with pytest.raises(ValueError, match="d_model: its symbol is 'd'.*--notation"):
            ModelSpec.from_dict(data)


def test_spec_files_that_are_not_small_utf8_json_are_refused(tmp_path):
    big = tmp_path / "big.json"
    big.write_text(" " * (2 << 20) + "{}")
    binary = tmp_path / "bin.json"
    binary.write_bytes(b"\xff\xfe\x00{")
    for path, words in [(big, "larger than"), (binary, "not UTF-8"), (tmp_path, "cannot read spec file")]:
        with pytest.raises(ValueError, match=words):
            ModelSpec.load(str(path))
