"""Reading a Hugging Face ``config.json`` into `ModelSpec` fields (`ModelSpec.from_hf_config`).

Families: GPT-2 (``model_type`` ``gpt2``) and the Llama family -- ``llama``, ``qwen2``,
``qwen3``, ``smollm3``, ``llama4_text`` (and a ``llama4`` config, whose ``text_config`` is
read). Every key of the config is sorted into one of three sets, and the reading says
which:

* **used**: it sets a field (width, heads, kv heads, layers, MLP width, norm eps, RoPE
  base, the NoPE schedule, QK-norm, the temperature; ``initializer_range`` is every sigma,
  as both families initialise every matrix and embedding with that std);
* **ignored**: it does not change the model at initialisation (token ids, dtype, cache,
  dropout, tied embeddings, router losses, ...);
* **not understood**: anything else, and known keys with a value the spec cannot express
  (``rope_scaling`` of type llama3/yarn, a sliding window shorter than the context,
  mixture-of-experts layers). The spec is still built; the caller is told.

A config the spec cannot represent at all (a ``head_dim`` other than
``hidden_size / num_attention_heads``, an activation other than SiLU for the Llama family)
is refused with the key named.

The field mapping follows the Hugging Face modelling code (transformers 5.x):

=====================  ===========================  =================================
spec field             GPT-2                        Llama family
=====================  ===========================  =================================
d_model                n_embd                       hidden_size
n_heads                n_head                       num_attention_heads
n_kv_heads             --                           num_key_value_heads
n_layers               n_layer                      num_hidden_layers
seq_len                n_positions (n_ctx)          max_position_embeddings
d_mlp                  n_inner (null: 4 d)          intermediate_size (Llama 4:
                                                    intermediate_size_mlp, dense)
ln_eps                 layer_norm_epsilon           rms_norm_eps
normalization, mlp     layernorm, standard          rmsnorm, swiglu (hidden_act silu)
positional             learned (wpe)                rope, or per layer from
                                                    no_rope_layers (1 RoPE, 0 NoPE)
qk_norm                false                        qwen3: true; llama4: use_qk_norm on
                                                    the RoPE layers
attn_temperature       --                           llama4: attn_temperature_tuning,
                                                    floor_scale, attn_scale
output_scaling         gpt2 (c_proj / sqrt(2 L))    none
=====================  ===========================  =================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._outputs import read_json_file, shown

LLAMA_FAMILY = ("llama", "qwen2", "qwen3", "smollm3", "llama4_text")
FAMILIES = ("gpt2",) + LLAMA_FAMILY

# Keys that do not change the network at initialisation (or only its training).
IGNORED = frozenset({
    "architectures", "model_type", "transformers_version", "torch_dtype", "dtype", "use_cache",
    "bos_token_id", "eos_token_id", "pad_token_id", "tie_word_embeddings", "attention_dropout",
    "output_router_logits", "router_aux_loss_coef", "router_jitter_noise", "pretraining_tp",
    "resid_pdrop", "embd_pdrop", "attn_pdrop", "summary_activation", "summary_first_dropout",
    "summary_proj_to_labels", "summary_type", "summary_use_proj", "task_specific_params",
    "scale_attn_weights", "reorder_and_upcast_attn", "attention_bias", "mlp_bias", "layer_types",
    "max_window_layers", "no_rope_layer_interval", "nope_layer_interval", "id2label", "label2id",
    "_name_or_path", "name_or_path", "initializer_factor", "n_ctx",
    # PretrainedConfig's generic keys (present in config.to_dict()): outputs and heads, not the network
    "return_dict", "output_hidden_states", "output_attentions", "chunk_size_feed_forward",
    "is_encoder_decoder", "problem_type", "torchscript", "use_return_dict", "tokenizer_class",
    "prefix", "sep_token_id", "decoder_start_token_id", "finetuning_task", "add_cross_attention",
    "cross_attention_hidden_size", "tie_encoder_decoder", "is_decoder", "pruned_heads",
})

GPT2_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "relu": "relu"}


@dataclass
class HFConfigReading:
    """What `read_hf_config` made of a config: the spec fields and where every key went."""

    family: str
    fields: dict[str, Any]
    used: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    not_understood: dict[str, str] = field(default_factory=dict)  # key -> why

    def summary(self) -> str:
        """One line per category, for a CLI or a warning."""
        lines = [f"{self.family}: used {', '.join(self.used) or '-'}",
                 f"ignored (no effect at initialisation): {', '.join(self.ignored) or '-'}"]
        if self.not_understood:
            lines.append("not understood: " + "; ".join(f"{k} ({why})" for k, why in self.not_understood.items()))
        return "\n".join(lines)


def load_config(source: Any) -> dict[str, Any]:
    """A config as a dict: a dict itself, or the path of a ``config.json``."""
    if isinstance(source, dict):
        return dict(source)
    data = read_json_file(source, "Hugging Face config")
    if not isinstance(data, dict):
        raise ValueError(f"a Hugging Face config must be a JSON object, got {type(data).__name__}")
    return data


def _take(config: dict, reading: HFConfigReading, key: str, default: Any = None, required: bool = True) -> Any:
    if key in config:
        reading.used.append(key)
        return config[key]
    if required and default is None:
        raise ValueError(f"Hugging Face config: {reading.family} needs the key {key!r}")
    return default


def _rope_theta(config: dict, reading: HFConfigReading) -> float | None:
    """RoPE's base: top-level ``rope_theta`` (public config files) or ``rope_parameters``."""
    params = config.get("rope_parameters") or {}
    scaling = config.get("rope_scaling")
    for key, value in (("rope_parameters", params), ("rope_scaling", scaling)):
        if key not in config:
            continue
        if not value:  # null: the plain rotation
            reading.used.append(key)
            continue
        kind = value.get("rope_type", value.get("type", "default")) if isinstance(value, dict) else value
        if kind not in ("default", None):
            reading.not_understood[key] = (f"rope_type {kind!r} rescales the RoPE frequencies; the spec uses the "
                                           "plain rotation with rope_theta")
        else:
            reading.used.append(key)
    if "rope_theta" in config:
        reading.used.append("rope_theta")
        return float(config["rope_theta"])
    if isinstance(params, dict) and "rope_theta" in params:
        return float(params["rope_theta"])
    return None


def _gpt2(config: dict, reading: HFConfigReading) -> None:
    f = reading.fields
    f["d_model"] = _take(config, reading, "n_embd")
    f["n_heads"] = _take(config, reading, "n_head")
    f["n_layers"] = _take(config, reading, "n_layer")
    f["seq_len"] = _take(config, reading, "n_positions", config.get("n_ctx"))
    inner = _take(config, reading, "n_inner", required=False)
    if inner is not None:
        f["d_mlp"] = inner
    act = _take(config, reading, "activation_function", "gelu_new", required=False)
    if act not in GPT2_ACTIVATIONS:
        raise ValueError(f"Hugging Face config: activation_function {shown(act)} has no spec activation; "
                         f"allowed are {', '.join(GPT2_ACTIVATIONS)}")
    f["activation"] = GPT2_ACTIVATIONS[act]
    f["ln_eps"] = _take(config, reading, "layer_norm_epsilon", 1e-5, required=False)
    f["vocab_size"] = _take(config, reading, "vocab_size", required=False)
    f["positional"] = "learned"
    f["output_scaling"] = "gpt2"  # HF GPT-2 draws c_proj with initializer_range / sqrt(2 n_layer)
    if config.get("scale_attn_by_inverse_layer_idx"):
        reading.not_understood["scale_attn_by_inverse_layer_idx"] = "logits divided by the layer index as well"
    elif "scale_attn_by_inverse_layer_idx" in config:
        reading.ignored.append("scale_attn_by_inverse_layer_idx")
    if config.get("scale_attn_weights") is False:
        reading.not_understood["scale_attn_weights"] = "unscaled logits (the spec divides by sqrt(d_head) or d_head)"


def _llama(config: dict, reading: HFConfigReading) -> None:
    f, family = reading.fields, reading.family
    d = f["d_model"] = _take(config, reading, "hidden_size")
    heads = f["n_heads"] = _take(config, reading, "num_attention_heads")
    L = f["n_layers"] = _take(config, reading, "num_hidden_layers")
    kv = _take(config, reading, "num_key_value_heads", required=False)
    if kv is not None and kv != heads:
        f["n_kv_heads"] = kv
    head_dim = _take(config, reading, "head_dim", required=False)
    if head_dim is not None and isinstance(d, int) and isinstance(heads, int) and heads and head_dim * heads != d:
        raise ValueError(f"Hugging Face config: head_dim = {head_dim} but hidden_size / num_attention_heads = "
                         f"{d}/{heads}; ModelSpec has d_head = d_model / n_heads and cannot express it")
    f["seq_len"] = _take(config, reading, "max_position_embeddings")
    width_key = "intermediate_size_mlp" if family == "llama4_text" and "intermediate_size_mlp" in config else "intermediate_size"
    f["d_mlp"] = _take(config, reading, width_key)
    if width_key != "intermediate_size" and "intermediate_size" in config:
        reading.not_understood["intermediate_size"] = "the experts' width: mixture-of-experts layers are modelled as a dense SwiGLU of width intermediate_size_mlp"
    act = _take(config, reading, "hidden_act", "silu", required=False)
    if act != "silu":
        raise ValueError(f"Hugging Face config: hidden_act {shown(act)}; the Llama family's gated MLP is modelled as SwiGLU (silu) only")
    f["mlp"], f["normalization"] = "swiglu", "rmsnorm"
    f["ln_eps"] = _take(config, reading, "rms_norm_eps", 1e-6, required=False)
    f["vocab_size"] = _take(config, reading, "vocab_size", required=False)
    theta = _rope_theta(config, reading)
    if theta is not None:
        f["rope_theta"] = theta
    schedule = _take(config, reading, "no_rope_layers", required=False)
    if family in ("smollm3", "llama4_text"):
        if not schedule:  # the class default: every interval-th layer is NoPE (0-based: interval-1, 2 interval-1, ...)
            interval = config.get("no_rope_layer_interval", config.get("nope_layer_interval", 4))
            schedule = [int((layer + 1) % interval != 0) for layer in range(L)]
        f["positional"] = ["rope" if flag else "none" for flag in schedule]
    else:
        f["positional"] = "rope"
        if schedule:
            reading.not_understood["no_rope_layers"] = f"{family} does not read it"
    if family == "qwen3":
        f["qk_norm"] = True  # Qwen3 always RMS-normalises q and k per head (q_norm, k_norm; gain 1 at init)
    if family == "llama4_text":
        if _take(config, reading, "use_qk_norm", False, required=False):
            f["qk_norm"] = [p == "rope" for p in f["positional"]]  # Llama 4: on the RoPE layers only
        if _take(config, reading, "attn_temperature_tuning", False, required=False):
            f["attn_temperature"] = {"floor_scale": float(_take(config, reading, "floor_scale", 8192, required=False)),
                                     "scale": float(_take(config, reading, "attn_scale", 0.1, required=False))}
        chunk = config.get("attention_chunk_size")
        if chunk is not None:  # judged against seq_len once the overrides are in
            reading.fields["_chunk"] = chunk
        if config.get("moe_layers") == []:  # every layer dense: the expert keys do not apply
            reading.used.append("moe_layers")
            reading.ignored += [k for k in ("num_local_experts", "num_experts_per_tok", "interleave_moe_layer_step",
                                            "intermediate_size") if k in config]
            reading.not_understood.pop("intermediate_size", None)
        else:
            for key in ("num_local_experts", "num_experts_per_tok", "moe_layers", "interleave_moe_layer_step"):
                if key in config:
                    reading.not_understood[key] = "mixture of experts: modelled as a dense SwiGLU MLP"
    if config.get("use_sliding_window"):  # judged against seq_len once the overrides are in
        reading.fields["_window"] = config.get("sliding_window")
    elif "use_sliding_window" in config:
        reading.ignored += [k for k in ("use_sliding_window", "sliding_window") if k in config]


def read_hf_config(source: Any, **overrides: Any) -> HFConfigReading:
    """Read a Hugging Face config (a dict or a ``config.json`` path) into spec fields.

    ``overrides`` replace fields after reading (``seq_len=256`` to simulate a short context
    of a long-context model; a smaller ``n_layers`` keeps the first layers' schedules). Raises ValueError naming the key for what the spec cannot
    represent; see the module docstring for the mapping.
    """
    config = load_config(source)
    family = config.get("model_type")
    if family == "llama4":  # the multimodal wrapper: its text model
        config = dict(config.get("text_config") or {})
        family = config.get("model_type", "llama4_text")
    if family not in FAMILIES:
        raise ValueError(f"Hugging Face config: model_type {shown(family)} is not read; "
                         f"allowed are {', '.join(FAMILIES)} (and llama4 with a text_config)")
    reading = HFConfigReading(family=family, fields={})
    reading.used.append("model_type")
    sigma = _take(config, reading, "initializer_range", 0.02, required=False)
    (_gpt2 if family == "gpt2" else _llama)(config, reading)
    reading.fields.update({name: sigma for name in (
        "sigma_embed", "sigma_q", "sigma_k", "sigma_v", "sigma_o", "sigma_mlp_in", "sigma_mlp_out")})
    reading.fields.update(overrides)
    layers = overrides.get("n_layers")
    if isinstance(layers, int) and not isinstance(layers, bool):  # the first n_layers layers of the model
        for name in ("positional", "qk_norm"):
            schedule = reading.fields.get(name)
            if name not in overrides and isinstance(schedule, list) and len(schedule) > layers:
                reading.fields[name] = schedule[:layers]
    seq_len = reading.fields.get("seq_len")
    chunk, window = reading.fields.pop("_chunk", None), reading.fields.pop("_window", None)
    if chunk is not None and isinstance(seq_len, int) and seq_len > chunk:
        reading.not_understood["attention_chunk_size"] = (f"chunked attention on the RoPE layers ({chunk} tokens) "
                                                          f"differs from full attention at seq_len {seq_len} > {chunk}")
    elif chunk is not None:  # chunks longer than the context: full attention
        reading.ignored.append("attention_chunk_size")
    if window is not None and isinstance(seq_len, int) and seq_len > window:
        reading.not_understood["sliding_window"] = f"a sliding window of {window} < seq_len {seq_len}"
    elif window is not None:  # a window longer than the context: full attention
        reading.ignored += ["use_sliding_window", "sliding_window"]
    seen = set(reading.used) | set(reading.ignored) | set(reading.not_understood)
    for key in config:
        if key in seen:
            continue
        if key in IGNORED:
            reading.ignored.append(key)
        else:
            reading.not_understood[key] = "not a key the spec reads"
    reading.used = list(dict.fromkeys(reading.used))
    reading.ignored = list(dict.fromkeys(reading.ignored))
    return reading


__all__ = ["HFConfigReading", "read_hf_config", "load_config", "FAMILIES"]
