"""The instrument: `record` measures any torch model by our tap names (`theory.taps`).

* `simulate.record.names`: where each tap lives in a model (`Site`, the built-in name
  maps for TransformerLens-style, Hugging Face GPT-2 and LLaMA models, user maps);
* `simulate.record.recorder`: `record`, hooks -> the engine's streaming statistics;
* `simulate.record.sequences`: `record_sequences`, each sequence's own summaries (for
  errors clustered by document).
"""

from .names import NAME_ALIASES, NAME_MAPS, Site, gpt2_sites, hooked_sites, llama_sites, resolve_sites
from .recorder import record
from .sequences import record_sequences

__all__ = ["record", "record_sequences", "Site", "resolve_sites", "NAME_MAPS", "NAME_ALIASES", "hooked_sites", "gpt2_sites", "llama_sites"]
