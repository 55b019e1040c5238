"""simulate: Monte Carlo forward passes of random NoPE transformers (torch).

Realises the `theory.ModelSpec` network and records taps by the shared names of
`theory.taps`. See docs/simulate.md.
"""

__all__: list[str] = []
