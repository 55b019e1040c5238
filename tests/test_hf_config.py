"""ModelSpec.from_hf_config and the modern-block spec fields (issue 16, item 1)."""

import json
from pathlib import Path

import pytest

from theory import ModelSpec
from theory._hf_config import read_hf_config
from theory._spec_schedule import AttnTemperature

CONFIGS = Path(__file__).resolve().parent / "data" / "hf_configs"


def _config(name):
    return json.loads((CONFIGS / name).read_text())


def test_gpt2_config_is_the_default_spec_with_learned_positions():
    spec = ModelSpec.from_hf_config(CONFIGS / "gpt2.json")
    cfg = _config("gpt2.json")
    assert (spec.d_model, spec.n_heads, spec.n_layers, spec.seq_len) == (cfg["n_embd"], cfg["n_head"], cfg["n_layer"], cfg["n_positions"])
    assert spec.activation == "gelu_tanh" and spec.positional == "learned" and spec.output_scaling == "gpt2"
    assert spec.vocab_size == 50257 and spec.mlp_width == 4 * 768 and spec.normalization == "layernorm"
    assert read_hf_config(CONFIGS / "gpt2.json").not_understood == {}


@pytest.mark.parametrize("name", ["llama-3.2-1b.json", "qwen2.5-0.5b.json", "qwen3-1.7b.json", "smollm3-3b.json"])
def test_llama_family_fields_come_from_the_config(name):
    cfg = _config(name)
    with pytest.warns(UserWarning) if name.startswith("llama") else _no_warning():
        spec = ModelSpec.from_hf_config(CONFIGS / name)
    assert spec.d_model == cfg["hidden_size"] and spec.n_heads == cfg["num_attention_heads"]
    assert spec.kv_heads == cfg["num_key_value_heads"] and spec.n_layers == cfg["num_hidden_layers"]
    assert spec.mlp_width == cfg["intermediate_size"] and spec.seq_len == cfg["max_position_embeddings"]
    assert spec.ln_eps == cfg["rms_norm_eps"] and spec.rope_theta == float(cfg["rope_theta"])
    assert (spec.normalization, spec.mlp) == ("rmsnorm", "swiglu")
    assert all(getattr(spec, s) == cfg["initializer_range"] for s in ("sigma_embed", "sigma_q", "sigma_mlp_out"))
    assert spec.qk_norm is (cfg["model_type"] == "qwen3")


class _no_warning:
    def __enter__(self):
        import warnings
        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)


def test_smollm3_drops_rope_from_every_fourth_layer():
    spec = ModelSpec.from_hf_config(CONFIGS / "smollm3-3b.json", seq_len=128)
    flags = _config("smollm3-3b.json")["no_rope_layers"]
    assert [spec.positional_at(l) for l in range(spec.n_layers)] == ["rope" if f else "none" for f in flags]
    assert spec.positional_at(3) == "none" and spec.positional_at(0) == "rope" and spec.seq_len == 128
    assert spec.temperature_at(3) is None


def test_llama4_irope_schedule_qk_norm_temperature_and_what_it_did_not_understand():
    reading = read_hf_config(CONFIGS / "llama-4-scout-17b-16e.json", seq_len=4096)
    spec = ModelSpec(**reading.fields)
    text = _config("llama-4-scout-17b-16e.json")["text_config"]
    assert spec.kv_heads == 8 and spec.mlp_width == text["intermediate_size_mlp"] and spec.n_layers == 48
    rope = [spec.positional_at(l) == "rope" for l in range(48)]
    assert rope == [bool(f) for f in text["no_rope_layers"]] and rope.count(False) == 12
    assert [spec.qk_norm_at(l) for l in range(48)] == rope  # QK-norm on the RoPE layers only
    assert spec.attn_temperature == AttnTemperature(floor_scale=8192, scale=0.1)
    assert spec.temperature_at(3) == spec.attn_temperature and spec.temperature_at(0) is None
    assert {"num_local_experts", "moe_layers", "rope_scaling"} <= set(reading.not_understood)
    assert "attention_chunk_size" in reading.ignored  # 4096 <= 8192: chunked attention is full attention
    long = read_hf_config(CONFIGS / "llama-4-scout-17b-16e.json", seq_len=16384)
    assert "attention_chunk_size" in long.not_understood


def test_strict_refuses_what_it_did_not_understand_and_names_the_key():
    with pytest.raises(ValueError, match="rope_scaling"):
        ModelSpec.from_hf_config(CONFIGS / "llama-3.2-1b.json", strict=True)
    cfg = _config("qwen2.5-0.5b.json") | {"some_new_key": 3}
    assert "some_new_key" in read_hf_config(cfg).not_understood


@pytest.mark.parametrize("change, match", [
    ({"head_dim": 128}, "head_dim = 128"),
    ({"hidden_act": "gelu"}, "hidden_act"),
    ({"model_type": "mamba"}, "model_type 'mamba' is not read"),
    ({"num_key_value_heads": 3}, "n_kv_heads \\(3\\) must divide n_heads \\(14\\)"),
])
def test_configs_the_spec_cannot_express_are_refused(change, match):
    with pytest.raises(ValueError, match=match):
        ModelSpec.from_hf_config(_config("qwen2.5-0.5b.json") | change)


def test_unreadable_config_files_get_a_clear_error(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="must be a JSON object"):
        ModelSpec.from_hf_config(bad)
    with pytest.raises(ValueError, match="cannot read"):
        ModelSpec.from_hf_config(tmp_path / "missing.json")


# ---------------------------------------------------------------- the fields themselves
MODERN = dict(d_model=64, n_heads=4, n_layers=4, seq_len=32, normalization="rmsnorm", mlp="swiglu", d_mlp=96,
              n_kv_heads=2, qk_norm=[True, True, True, False], positional=["rope", "rope", "rope", "none"],
              rope_theta=500000.0, attn_temperature={"floor_scale": 4, "scale": 0.1})


def test_modern_spec_round_trips_through_json():
    spec = ModelSpec(**MODERN)
    assert ModelSpec.from_json(spec.to_json()) == spec
    assert json.loads(spec.to_json())["positional"] == MODERN["positional"]
    assert spec.positional_schemes == ("rope", "none") and spec.mlp_width == 96 and spec.kv_heads == 2
    assert hash(spec) == hash(ModelSpec.from_dict(spec.to_dict()))
    assert ModelSpec().to_dict()["positional"] == "none" and ModelSpec().d_mlp is None


@pytest.mark.parametrize("change, match", [
    ({"normalization": "batchnorm"}, "normalization must be one of 'layernorm', 'rmsnorm'"),
    ({"mlp": "geglu"}, "mlp must be one of 'standard', 'swiglu'"),
    ({"d_mlp": 0}, "d_mlp must be null"),
    ({"n_kv_heads": 3}, "n_kv_heads \\(3\\) must divide n_heads \\(4\\); allowed n_kv_heads are 1, 2, 4"),
    ({"qk_norm": [True, False]}, "qk_norm: a per-layer list must have one entry per layer \\(n_layers = 4\\), got 2"),
    ({"qk_norm": "yes"}, "qk_norm must be true, false or a list"),
    ({"positional": ["rope", "learned", "none", "none"]}, "positional\\[1\\] must be one of 'none', 'rope', 'alibi'"),
    ({"positional": "rotary"}, "positional must be one of"),
    ({"rope_theta": 0.5}, "rope_theta must be a finite number > 1"),
    ({"attn_temperature": {"floor_scale": 0, "scale": 0.1}}, "attn_temperature.floor_scale must be a finite number > 0"),
    ({"attn_temperature": {"floor": 8}}, "attn_temperature must be null or"),
])
def test_modern_fields_are_validated_with_the_field_named(change, match):
    with pytest.raises(ValueError, match=match):
        ModelSpec(**(MODERN | change))


def test_temperature_is_llama4s_formula():
    # tau(p) = scale * log(floor((p + 1) / floor_scale) + 1) + 1, p 0-based: HF Llama4TextAttention
    import math
    t = AttnTemperature(floor_scale=8192, scale=0.1)
    assert t.factor(0) == 1.0 and t.factor(8190) == 1.0
    assert t.factor(8191) == pytest.approx(1 + 0.1 * math.log(2), rel=1e-15)
    assert t.factor(3 * 8192 - 1) == pytest.approx(1 + 0.1 * math.log(4), rel=1e-15)


# ---------------------------------------------------------------- python -m theory spec --from-hf
def _theory_cli(argv, capsys):
    from theory.cli import main
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_writes_the_spec_of_a_config_and_says_what_it_did_not_understand(tmp_path, capsys):
    target = tmp_path / "smollm3-4.json"
    code, out, err = _theory_cli(["spec", "--from-hf", str(CONFIGS / "smollm3-3b.json"),
                                  "--set", "seq_len=64,n_layers=4", "--out", str(target)], capsys)
    assert code == 0 and "wrote" in out and "used model_type" in err
    spec = ModelSpec.load(str(target))
    assert spec.positional == ("rope", "rope", "rope", "none") and spec.n_layers == 4 and spec.seq_len == 64
    code, out, err = _theory_cli(["spec", "--from-hf", str(CONFIGS / "llama-3.2-1b.json")], capsys)
    assert code == 0 and "not understood: rope_scaling" in err and json.loads(out)["n_kv_heads"] == 8


@pytest.mark.parametrize("argv, match", [
    (["spec", "--from-hf", "missing.json"], "cannot read Hugging Face config"),
    (["spec", "--from-hf", str(CONFIGS / "gpt2.json"), "--set", "seq_len"], "--set takes FIELD=VALUE"),
    (["spec", "--from-hf", str(CONFIGS / "gpt2.json"), "--set", "n_heads=7"], "must be divisible by n_heads"),
])
def test_cli_bad_input_is_one_line_and_status_2(argv, match, capsys):
    code, out, err = _theory_cli(argv, capsys)
    assert code == 2 and match in err and "Traceback" not in err and err.count("\n") == 1


def test_transformers_own_config_dicts_read_cleanly():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2,
                                   intermediate_size=96, max_position_embeddings=32, vocab_size=100)
    reading = read_hf_config(cfg.to_dict())
    spec = ModelSpec(**reading.fields)
    assert (spec.d_model, spec.kv_heads, spec.mlp_width, spec.seq_len) == (64, 2, 96, 32)
    assert reading.not_understood == {}, reading.not_understood
    dense = _config("llama-4-scout-17b-16e.json")["text_config"] | {"moe_layers": []}
    assert not {"moe_layers", "num_local_experts"} & set(read_hf_config(dense, seq_len=64).not_understood)
