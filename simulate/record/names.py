"""Name maps: where each tap lives in a torch model (`Site`), by our TransformerLens names.

* ``"hooked"`` (aliases ``"nope"``, ``"transformer_lens"``): modules named exactly like the
  taps, ``blocks.{l}.attn.hook_z`` and so on -- our `NoPETransformer` and TransformerLens'
  ``HookedTransformer`` (whose ``HookPoint`` modules carry these names and shapes). An
  attention-only block ends at ``hook_resid_post`` there (it has no ``hook_resid_mid``),
  as in `theory.block`;
* ``"gpt2"``: Hugging Face ``GPT2Model``/``GPT2LMHeadModel`` (``h.{l}.ln_1``, ``attn.c_attn``, ...);
* ``"llama"``: Hugging Face LLaMA-family decoders (``LlamaModel``, ``MistralModel``,
  ``Qwen2Model``, ``Qwen3Model``, ``SmolLM3Model``, ``Llama4TextModel``, ...:
  ``layers.{l}.input_layernorm``, ``self_attn.q_proj``, ``mlp`` or Llama 4's
  ``feed_forward``, ...);
* ``"auto"`` (default): the first of these whose modules the model has;
* a dict ``{tap: site}`` for anything else (see `resolve_sites`).

Conventions of the built-in Hugging Face maps (the same as TransformerLens'): ``ln1/ln2
.hook_normalized`` is the normalised input *before* the gain and bias (LayerNorm for GPT-2,
RMSNorm ``x / sqrt(mean(x^2) + eps)`` for LLaMA), recomputed from the norm module's input;
q/k/v are the projections before any rotary embedding (TransformerLens' ``hook_q``, not
``hook_rot_q``) and before Qwen3's / Llama 4's QK-norm; with grouped-query attention k and v
have the key/value heads' width; ``hook_z`` is the input of the output projection;
``mlp.hook_pre`` is GPT-2's ``c_fc`` output and LLaMA's gate projection,
``mlp.hook_pre_linear`` LLaMA's up projection (TransformerLens' ``GatedMLP``);
``mlp.hook_post`` is the input of the MLP's down projection. A Llama 4 mixture-of-experts
layer has no single gate or up projection: its MLP taps are left out (the residual taps
stay). Hugging Face computes attention weights inside a function, not a module,
so ``hook_attn_scores``/``hook_pattern`` are not available from its models. (Both model
families have an MLP in every block, so their blocks have ``hook_resid_mid``.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
from torch import nn

from theory.taps import LAYER_TAPS, parse_tap, tap_name

from ..engine import layer_norm

Transform = Callable[[torch.Tensor, nn.Module], torch.Tensor]


@dataclass(frozen=True)
class Site:
    """Where a tap lives: the ``output`` (or first ``input``) of module ``module``, then
    ``transform(tensor, module)`` to our layout: (batch, positions, ...) for every tap but
    scores and pattern, which are (batch, heads, query, key)."""

    module: str
    where: str = "output"
    transform: Transform | None = None

    def __post_init__(self) -> None:
        if self.where not in ("output", "input"):
            raise ValueError(f"Site.where must be 'output' or 'input', got {self.where!r}")

    def describe(self) -> str:
        return f"{self.module}:{self.where}" + (" (transformed)" if self.transform else "")


# ---------------------------------------------------------------------- transforms
def _layer_norm(x: torch.Tensor, module: nn.Module) -> torch.Tensor:
    eps = getattr(module, "eps", getattr(module, "variance_epsilon", 1e-5))
    return layer_norm(x, eps)


def _rms_norm(x: torch.Tensor, module: nn.Module) -> torch.Tensor:
    eps = getattr(module, "variance_epsilon", getattr(module, "eps", 1e-6))
    x32 = x.float()  # as Hugging Face's LlamaRMSNorm: in float32 whatever the model's dtype
    return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def _third(i: int) -> Transform:
    def pick(x: torch.Tensor, module: nn.Module) -> torch.Tensor:
        return x.chunk(3, dim=-1)[i]

    return pick


# ---------------------------------------------------------------------- name maps
def module_names(model: nn.Module) -> dict[str, nn.Module]:
    """Every module of ``model`` by its dotted path."""
    return dict(model.named_modules())


def _find_layers(modules: dict[str, nn.Module], list_name: str, child: str) -> tuple[str, int] | None:
    """The path of the ModuleList ``list_name`` whose items have a child ``child``, and its length."""
    for name, mod in modules.items():
        if (name == list_name or name.endswith("." + list_name)) and isinstance(mod, nn.ModuleList) and len(mod):
            if f"{name}.0.{child}" in modules:
                return name, len(mod)
    return None


def hooked_sites(model: nn.Module) -> dict[str, Site]:
    """Modules named like the taps (`NoPETransformer`, TransformerLens' HookedTransformer)."""
    sites = {}
    for name in module_names(model):
        match = re.match(r"^blocks\.(\d+)\.(.+)$", name)
        if match and match.group(2) in LAYER_TAPS:
            sites[name] = Site(name)
    return sites


def gpt2_sites(model: nn.Module) -> dict[str, Site]:
    """Hugging Face GPT-2 (``transformer.h.{l}`` or ``h.{l}``); see the module docstring."""
    found = _find_layers(module_names(model), "h", "ln_1")
    if found is None:
        return {}
    root, n = found
    sites = {}
    for l in range(n):
        b, p = f"{root}.{l}", f"blocks.{l}."
        sites.update({
            p + "hook_resid_pre": Site(b, "input"),
            p + "ln1.hook_normalized": Site(f"{b}.ln_1", "input", _layer_norm),
            p + "attn.hook_q": Site(f"{b}.attn.c_attn", "output", _third(0)),
            p + "attn.hook_k": Site(f"{b}.attn.c_attn", "output", _third(1)),
            p + "attn.hook_v": Site(f"{b}.attn.c_attn", "output", _third(2)),
            p + "attn.hook_z": Site(f"{b}.attn.c_proj", "input"),
            p + "hook_attn_out": Site(f"{b}.attn.c_proj"),
            p + "hook_resid_mid": Site(f"{b}.ln_2", "input"),
            p + "ln2.hook_normalized": Site(f"{b}.ln_2", "input", _layer_norm),
            p + "mlp.hook_pre": Site(f"{b}.mlp.c_fc"),
            p + "mlp.hook_post": Site(f"{b}.mlp.c_proj", "input"),
            p + "hook_mlp_out": Site(f"{b}.mlp"),
            p + "hook_resid_post": Site(b),
        })
    return sites


def llama_sites(model: nn.Module) -> dict[str, Site]:
    """Hugging Face LLaMA-family decoders (``model.layers.{l}``); see the module docstring."""
    modules = module_names(model)
    found = _find_layers(modules, "layers", "input_layernorm")
    if found is None:
        return {}
    root, n = found
    sites = {}
    for l in range(n):
        b, p = f"{root}.{l}", f"blocks.{l}."
        sites.update({
            p + "hook_resid_pre": Site(b, "input"),
            p + "ln1.hook_normalized": Site(f"{b}.input_layernorm", "input", _rms_norm),
            p + "attn.hook_q": Site(f"{b}.self_attn.q_proj"),
            p + "attn.hook_k": Site(f"{b}.self_attn.k_proj"),
            p + "attn.hook_v": Site(f"{b}.self_attn.v_proj"),
            p + "attn.hook_z": Site(f"{b}.self_attn.o_proj", "input"),
            p + "hook_attn_out": Site(f"{b}.self_attn.o_proj"),
            p + "hook_resid_mid": Site(f"{b}.post_attention_layernorm", "input"),
            p + "ln2.hook_normalized": Site(f"{b}.post_attention_layernorm", "input", _rms_norm),
            p + "hook_resid_post": Site(b),
        })
        mlp = next((f"{b}.{name}" for name in ("mlp", "feed_forward") if f"{b}.{name}.gate_proj" in modules), None)
        if mlp is not None:  # a dense gated MLP (a mixture of experts has no single gate)
            sites.update({
                p + "mlp.hook_pre": Site(f"{mlp}.gate_proj"),
                p + "mlp.hook_pre_linear": Site(f"{mlp}.up_proj"),
                p + "mlp.hook_post": Site(f"{mlp}.down_proj", "input"),
                p + "hook_mlp_out": Site(mlp),
            })
    return sites


NAME_MAPS: dict[str, Callable[[nn.Module], dict[str, Site]]] = {
    "hooked": hooked_sites,
    "gpt2": gpt2_sites,
    "llama": llama_sites,
}
NAME_ALIASES = {"nope": "hooked", "transformer_lens": "hooked", "transformerlens": "hooked"}


def _order(tap: str) -> tuple[int, int]:
    suffix, layer = parse_tap(tap)
    return layer, list(LAYER_TAPS).index(suffix)


def resolve_sites(model: nn.Module, names: Any = "auto") -> tuple[str, dict[str, Site]]:
    """``(map name, {tap: Site})`` in forward order, for a built-in map or a user dict.

    ``names``: a built-in map's name (see the module docstring), or a dict ``{tap: site}``:
    ``tap`` a full name (``"blocks.0.hook_attn_out"``), ``(name, layer)``, or a suffix with
    every layer's module given by a ``{layer}`` template (``{"hook_attn_out":
    "encoder.layers.{layer}.self_attn.out_proj"}``); ``site`` a module path (its output),
    ``"path:input"`` (its first input) or a `Site`.
    """
    modules = module_names(model)
    if isinstance(names, str):
        key = NAME_ALIASES.get(names, names)
        if key == "auto":
            for key, fn in NAME_MAPS.items():
                sites = fn(model)
                if sites:
                    break
            else:
                raise ValueError(
                    f"names='auto' found no known layout in {type(model).__name__} (TransformerLens-style "
                    "'blocks.{l}.hook_*' modules, Hugging Face GPT-2 'h.{l}.ln_1' or LLaMA "
                    "'layers.{l}.input_layernorm'); pass names={tap: module path} for this model"
                )
        elif key in NAME_MAPS:
            sites = NAME_MAPS[key](model)
            if not sites:
                raise ValueError(f"the {names!r} name map found none of its modules in {type(model).__name__}")
        else:
            raise ValueError(
                f"names must be 'auto', one of {', '.join(sorted(set(NAME_MAPS) | set(NAME_ALIASES)))}, "
                f"or a dict {{tap: module path}}; got {names!r}"
            )
    elif isinstance(names, Mapping):
        key, sites = "user", {}
        for tap, site in names.items():
            site = _as_site(site)
            if isinstance(tap, str) and not tap.startswith("blocks.") and "{layer}" in site.module:
                suffix = parse_tap(tap_name(tap, 0))[0]
                layer = 0
                while site.module.format(layer=layer) in modules:
                    sites[f"blocks.{layer}.{suffix}"] = Site(site.module.format(layer=layer), site.where, site.transform)
                    layer += 1
                if layer == 0:
                    raise ValueError(f"names[{tap!r}]: no module {site.module.format(layer=0)!r} in the model")
            else:
                sites[tap_name(tap)] = site
    else:
        raise ValueError(f"names must be a string or a dict {{tap: module path}}, got {type(names).__name__}")
    for tap, site in sites.items():
        if site.module not in modules:
            raise ValueError(f"{tap}: the model has no module {site.module!r}")
    return key, dict(sorted(sites.items(), key=lambda kv: _order(kv[0])))


def _as_site(site: Any) -> Site:
    if isinstance(site, Site):
        return site
    if isinstance(site, str):
        module, _, where = site.partition(":")
        return Site(module, where or "output")
    raise ValueError(f"a name-map value must be a module path, 'path:input' or a Site, got {site!r}")


def select_taps(taps: Any, available: list[str]) -> list[str]:
    """The taps of ``taps`` (as `record` takes it) among ``available``, unique, in order."""
    if taps is None:
        return list(available)
    if callable(taps):
        chosen = [t for t in available if taps(t)]
    else:
        items = [taps] if isinstance(taps, (str, tuple)) else list(taps)
        chosen = []
        for t in items:
            full = tap_name(t) if isinstance(t, tuple) or str(t).startswith("blocks.") else None
            if full is None:
                raise ValueError(f"tap {t!r} needs a layer: give 'blocks.0.{t}' or ({t!r}, 0)")
            if full not in available:
                raise ValueError(f"tap {full!r} is not available from this model; available: {', '.join(available)}")
            chosen.append(full)
    chosen = list(dict.fromkeys(chosen))
    if not chosen:
        raise ValueError("the tap filter selected no taps")
    return chosen
