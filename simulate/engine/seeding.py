"""Seeds: every Monte Carlo sample owns a generator derived from (seed, stream, index).

A sample's random numbers depend only on the run seed and the sample's index, never on
how samples are grouped into chunks, so a run gives the same numbers for any chunk size
and a resumed run continues exactly where the killed one stopped.
"""

from __future__ import annotations

import torch

_MASK64 = (1 << 64) - 1

# Independent streams: per-sample inputs/weights, the frozen network of a quenched run,
# and the choice of which coordinate a reservoir keeps.
STREAM_SAMPLE = 0x5A11
STREAM_NETWORK = 0x4E37
STREAM_RESERVOIR = 0x7E5E


def splitmix64(x: int) -> int:
    """One step of Vigna's splitmix64 finaliser: a well-mixed 64-bit hash of ``x``."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def derive_seed(seed: int, stream: int, index: int = 0) -> int:
    """A 63-bit seed for ``(seed, stream, index)``; distinct inputs give unrelated seeds."""
    h = splitmix64(seed & _MASK64)
    h = splitmix64(h ^ (stream & _MASK64))
    h = splitmix64(h ^ (index & _MASK64))
    return h & ((1 << 63) - 1)


def sample_generator(seed: int, index: int, device: torch.device) -> torch.Generator:
    """The generator of Monte Carlo sample ``index`` (a network, or a sequence when quenched)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(seed, STREAM_SAMPLE, index))
    return gen


def network_generator(seed: int, device: torch.device) -> torch.Generator:
    """The generator of the one frozen network of a quenched run."""
    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(seed, STREAM_NETWORK))
    return gen
