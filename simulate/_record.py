"""`record`: per-position statistics of any torch model's activations, by our tap names.

Forward hooks capture the tensors a *name map* points at, convert them to our layout and
stream them through the same statistics as `simulate.run` (`simulate._stats`):

* **the unit is one input sequence**. A trained model is one frozen network, so this is
  the quenched measure: ``mean_se``/``var_se`` are standard errors across sequences (the
  per-sequence summaries are treated as independent draws; windows cut from one corpus
  share documents and style, so read them as lower bounds when windows are adjacent);
* ``mean``/``var`` at position ``m`` pool the coordinates of the tap at ``m`` (all heads
  for q/k/v/z) over the sequences: ``var = E_seq[within-sequence variance over coordinates]
  + Var(coordinate values' mean across sequences)`` -- for a trained model the coordinates
  are not exchangeable, so this is the variance of *one coordinate drawn at random*, the
  quantity the paper plots (Chi et al. 2023, sec. 5: variance of the attention output
  across the hidden dimension, averaged over sequences) up to the small second term;
* ``hook_pattern`` adds ``sum_sq = E[sum_n a_mn^2]`` and ``entropy = E[-sum_n a_mn ln a_mn]``
  (nats, per head; uniform attention over m keys gives ``ln m``), each with its standard
  error across sequences.

Name maps (``names=``):

* ``"hooked"`` (aliases ``"nope"``, ``"transformer_lens"``): modules named exactly like the
  taps, ``blocks.{l}.attn.hook_z`` and so on -- our `NoPETransformer` and TransformerLens'
  ``HookedTransformer`` (whose ``HookPoint`` modules carry these names and shapes);
* ``"gpt2"``: Hugging Face ``GPT2Model``/``GPT2LMHeadModel`` (``h.{l}.ln_1``, ``attn.c_attn``, ...);
* ``"llama"``: Hugging Face LLaMA-family decoders (``LlamaModel``, ``MistralModel``,
  ``Qwen2Model``, ...: ``layers.{l}.input_layernorm``, ``self_attn.q_proj``, ...);
* ``"auto"`` (default): the first of these whose modules the model has;
* a dict ``{tap: site}`` for anything else: ``tap`` a full name (``"blocks.0.hook_attn_out"``),
  ``(name, layer)``, or a suffix with every layer's module given by a ``{layer}`` template
  (``{"hook_attn_out": "encoder.layers.{layer}.self_attn.out_proj"}``); ``site`` a module
  path (its output), ``"path:input"`` (its first input) or a `Site`.

Conventions of the built-in Hugging Face maps (the same as TransformerLens'): ``ln1/ln2
.hook_normalized`` is the normalised input *before* the gain and bias (LayerNorm for GPT-2,
RMSNorm ``x / sqrt(mean(x^2) + eps)`` for LLaMA), recomputed from the norm module's input;
q/k/v are the projections before any rotary embedding (TransformerLens' ``hook_q``, not
``hook_rot_q``); ``hook_z`` is the input of the output projection; ``mlp.hook_pre`` is GPT-2's
``c_fc`` output and LLaMA's gate projection; ``mlp.hook_post`` is the input of the MLP's
down projection. Hugging Face computes attention weights inside a function, not a module,
so ``hook_attn_scores``/``hook_pattern`` are not available from its models.
"""

from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from theory import ModelSpec
from theory.taps import LAYER_TAPS, parse_tap, tap_name

from ._result import SimulationResult
from ._run import Progress, _build_result, resolve_positions, versions
from ._stats import Accumulator, RowValues, extract, row_counts, tap_rows, unit_moments

Transform = Callable[[torch.Tensor, nn.Module], torch.Tensor]
_MASKED = ("attn.hook_attn_scores", "attn.hook_pattern")


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
    return F.layer_norm(x, x.shape[-1:], eps=eps)


def _rms_norm(x: torch.Tensor, module: nn.Module) -> torch.Tensor:
    eps = getattr(module, "variance_epsilon", getattr(module, "eps", 1e-6))
    x32 = x.float()  # as Hugging Face's LlamaRMSNorm: in float32 whatever the model's dtype
    return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def _third(i: int) -> Transform:
    def pick(x: torch.Tensor, module: nn.Module) -> torch.Tensor:
        return x.chunk(3, dim=-1)[i]

    return pick


# ---------------------------------------------------------------------- name maps
def _module_names(model: nn.Module) -> dict[str, nn.Module]:
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
    for name in _module_names(model):
        match = re.match(r"^blocks\.(\d+)\.(.+)$", name)
        if match and match.group(2) in LAYER_TAPS:
            sites[name] = Site(name)
    return sites


def gpt2_sites(model: nn.Module) -> dict[str, Site]:
    """Hugging Face GPT-2 (``transformer.h.{l}`` or ``h.{l}``); see the module docstring."""
    found = _find_layers(_module_names(model), "h", "ln_1")
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
    found = _find_layers(_module_names(model), "layers", "input_layernorm")
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
            p + "mlp.hook_pre": Site(f"{b}.mlp.gate_proj"),
            p + "mlp.hook_post": Site(f"{b}.mlp.down_proj", "input"),
            p + "hook_mlp_out": Site(f"{b}.mlp"),
            p + "hook_resid_post": Site(b),
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
    """``(map name, {tap: Site})`` in forward order, for a built-in map or a user dict."""
    modules = _module_names(model)
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


def _select(taps: Any, available: list[str]) -> list[str]:
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


# ---------------------------------------------------------------------- the recorder
def _first_tensor(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    if hasattr(value, "last_hidden_state"):
        return value.last_hidden_state
    raise ValueError(f"a hooked module returned {type(value).__name__}, not a tensor; give a Site with a transform")


def _batches(inputs: Any, batch_size: int) -> Iterable[Any]:
    if isinstance(inputs, torch.Tensor):
        if inputs.dim() < 2:
            raise ValueError(f"inputs must be (sequences, positions[, ...]), got shape {tuple(inputs.shape)}")
        for i in range(0, inputs.shape[0], batch_size):
            yield inputs[i:i + batch_size]
    else:
        yield from inputs


def _batch_len(batch: Any) -> tuple[int, int]:
    t = batch if isinstance(batch, torch.Tensor) else next(v for v in batch.values() if isinstance(v, torch.Tensor))
    return int(t.shape[0]), int(t.shape[1])


def record(
    model: nn.Module,
    inputs: Any,
    taps: Any = None,
    names: Any = "auto",
    *,
    positions: Any = None,
    batch_size: int = 16,
    call: Callable[[nn.Module, Any], Any] | None = None,
    progress: bool | str = "auto",
    across_inputs: bool = False,
) -> SimulationResult:
    """Per-position statistics of ``model``'s activations on ``inputs``, by our tap names.

    Parameters
    ----------
    model : any ``torch.nn.Module``; run in ``eval()`` mode under ``torch.no_grad()``
        (its mode is restored afterwards).
    inputs : a tensor (sequences, positions) of token ids, cut into ``batch_size`` batches,
        or an iterable of batches (tensors or dicts of keyword arguments). Every sequence is
        one unit; all must have the same length T.
    taps : a full name, ``(name, layer)``, a list of those, a callable filter, or None (every
        tap the name map provides).
    names : ``"auto"``, ``"hooked"``/``"nope"``/``"transformer_lens"``, ``"gpt2"``, ``"llama"``
        or a dict ``{tap: module path | "path:input" | Site}`` (see the module docstring).
    positions : 1-based positions to record (default all 1..T).
    call : how to run a batch (default ``model(batch)``, or ``model(**batch)`` for a dict).
    across_inputs : also compute ``var_across_inputs`` for every tap but scores and pattern:
        ``mean_c Var_seq(x_{m,c})``, the variance across sequences with the coordinate ``c``
        held fixed (unbiased, merged per batch with Chan's formula in float64). ``var``
        equals it plus the variance over ``c`` of the per-coordinate means -- a fixed,
        input-independent vector per position, which a trained model can have.

    Returns
    -------
    SimulationResult
        ``result[tap]`` is a `TapStats` over ``result.positions`` with ``n`` = sequences and
        standard errors across sequences (``meta["unit"] = "sequence"``); ``hook_pattern``
        has ``sum_sq`` and ``entropy`` (nats). ``result.spec`` is the model's ``spec`` when it
        has one (our `NoPETransformer`), else None.

    >>> import torch
    >>> from theory import ModelSpec
    >>> from simulate._model import NoPETransformer
    >>> model = NoPETransformer(ModelSpec(d_model=16, n_heads=2, n_layers=1, seq_len=8, vocab_size=11))
    >>> ids = torch.randint(11, (6, 8), generator=torch.Generator().manual_seed(0))
    >>> result = record(model, ids, taps=[("hook_z", 0), ("pattern", 0)], progress=False)
    >>> result["hook_z", 0].n, result["pattern", 0].entropy.shape
    (6, (8,))
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    map_name, sites = resolve_sites(model, names)
    tap_list = _select(taps, list(sites))
    stat_rows = [(t, r) for t in tap_list for r in tap_rows(t)]
    stat_rows += [(t, "entropy") for t in tap_list if parse_tap(t)[0] == "attn.hook_pattern"]
    modules = _module_names(model)
    captured: dict[str, torch.Tensor] = {}
    handles = []

    def hook_for(tap: str, site: Site):
        module = modules[site.module]

        def grab(value: Any) -> None:
            t = _first_tensor(value).detach()
            captured[tap] = site.transform(t, module) if site.transform else t

        if site.where == "output":
            return module.register_forward_hook(lambda mod, args, out: grab(out))

        def pre(mod, args, kwargs):
            if args:
                grab(args[0])
            else:
                grab(kwargs.get("hidden_states", next((v for v in kwargs.values() if isinstance(v, torch.Tensor)), None)))

        return module.register_forward_pre_hook(pre, with_kwargs=True)

    was_training = model.training
    acc = pos = positions_t = None
    coords: dict[str, dict[str, Any]] = {}
    seq_len, done, nonfinite = None, 0, []
    total = inputs.shape[0] if isinstance(inputs, torch.Tensor) else None
    bar = Progress(total or 0, 0, progress if total else False, unit="sequences")
    t0 = time.perf_counter()
    try:
        for tap in tap_list:
            handles.append(hook_for(tap, sites[tap]))
        model.eval()
        with torch.no_grad():
            for batch in _batches(inputs, batch_size):
                count, T = _batch_len(batch)
                if seq_len is None:
                    seq_len = T
                    pos = resolve_positions(positions, T)
                    acc = Accumulator(stat_rows, len(pos))
                elif T != seq_len:
                    raise ValueError(f"every sequence must have the same length; got {T} after {seq_len}")
                captured.clear()
                if call is not None:
                    call(model, batch)
                elif isinstance(batch, Mapping):
                    model(**batch)
                else:
                    model(batch)
                missing = [t for t in tap_list if t not in captured]
                if missing:
                    raise ValueError(f"the forward pass never reached {', '.join(missing)} (its module was not called)")
                positions_t = torch.as_tensor(pos - 1, device=captured[tap_list[0]].device)
                _accumulate(acc, captured, tap_list, positions_t, done, count, seq_len, nonfinite)
                if across_inputs:
                    _accumulate_coordinates(coords, captured, tap_list, positions_t)
                done += count
                bar.update(done)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
        bar.close()
    if acc is None:
        raise ValueError("inputs held no sequences")
    spec = getattr(model, "spec", None)
    spec = spec if isinstance(spec, ModelSpec) else None
    meta = {
        "spec": spec.to_dict() if spec else None,
        "model": type(model).__name__,
        "names": map_name,
        "sites": {t: sites[t].describe() for t in tap_list},
        "measure": "quenched",
        "unit": "sequence",
        "samples": done,
        "seq_len": seq_len,
        "taps": tap_list,
        "positions": "all" if len(pos) == seq_len else pos.tolist(),
        "nonfinite_samples": len(nonfinite),
        "nonfinite_indices": nonfinite[:100],
        "wall_time_s": round(time.perf_counter() - t0, 3),
        "versions": versions(),
    }
    if across_inputs:
        meta["across_inputs"] = True
    result = _build_result(spec, pos, acc, stat_rows, tap_list, meta)
    for tap, c in coords.items():
        with np.errstate(invalid="ignore", divide="ignore"):
            var_c = c["m2"] / (c["n"] - 1) if c["n"] > 1 else np.full_like(c["m2"], np.nan)
        result.stats[tap] = dataclasses.replace(result.stats[tap], var_across_inputs=var_c.mean(axis=-1))
    return result


def _accumulate_coordinates(coords: dict, captured: dict, tap_list: list[str], positions_t: torch.Tensor) -> None:
    """Per (position, coordinate): count, mean and M2 across sequences (Chan merge, float64)."""
    for tap in tap_list:
        if parse_tap(tap)[0] in _MASKED:
            continue
        t = captured[tap]
        y = t.reshape(t.shape[0], t.shape[1], -1)[:, positions_t].double()  # (B, P, C)
        nb = y.shape[0]
        mean_b = y.mean(dim=0)
        m2_b = ((y - mean_b) ** 2).sum(dim=0)
        mean_b, m2_b = mean_b.cpu().numpy(), m2_b.cpu().numpy()
        c = coords.get(tap)
        if c is None:
            coords[tap] = {"n": nb, "mean": mean_b, "m2": m2_b}
            continue
        n = c["n"] + nb
        delta = mean_b - c["mean"]
        c["mean"] = c["mean"] + delta * nb / n
        c["m2"] = c["m2"] + m2_b + delta**2 * c["n"] * nb / n
        c["n"] = n


def _to_units(tap: str, tensor: torch.Tensor, count: int, seq_len: int) -> torch.Tensor:
    """A captured tensor in our layout with a leading network axis of 1: (1, B, ...)."""
    suffix = parse_tap(tap)[0]
    if tensor.shape[0] != count:
        raise ValueError(f"{tap}: captured shape {tuple(tensor.shape)} does not start with the batch ({count})")
    if suffix in _MASKED:
        if tensor.dim() != 4 or tensor.shape[-1] != seq_len or tensor.shape[-2] != seq_len:
            raise ValueError(f"{tap}: expected (batch, heads, {seq_len}, {seq_len}), got {tuple(tensor.shape)}")
    elif tensor.dim() < 3 or tensor.shape[1] != seq_len:
        raise ValueError(f"{tap}: expected (batch, {seq_len}, ...), got {tuple(tensor.shape)}")
    return tensor.unsqueeze(0)


def _accumulate(acc, captured, tap_list, positions_t, first, count, seq_len, nonfinite) -> None:
    rows, counts = [], []
    for tap in tap_list:
        tensor = _to_units(tap, captured[tap], count, seq_len)
        for row in extract(tap, tensor, positions_t, quenched=True).values():
            rows.append(row)
            counts.append(row_counts(row))
    for tap in tap_list:  # the entropy rows come last, as in `stat_rows`
        if parse_tap(tap)[0] == "attn.hook_pattern":
            p = captured[tap][:, :, positions_t]  # (B, H, P, T); masked keys hold weight 0
            ent = torch.special.entr(p).sum(dim=-1)  # (B, H, P), 0 ln 0 = 0
            rows.append(RowValues(ent.transpose(1, 2).contiguous(), None, 0))  # (B, P, H)
            counts.append(row_counts(rows[-1]))
    moments = np.stack([np.stack([m.cpu().numpy() for m in unit_moments(r)], axis=0) for r in rows], axis=2)  # (4, U, R, P)
    finite = np.isfinite(moments).all(axis=(0, 2, 3))
    units = np.arange(first, first + count)
    if not finite.all():
        nonfinite.extend(int(u) for u in units[~finite])
    acc.add(units[finite], moments[:, finite], np.stack(counts), first + count)
