"""The experiments built on the engine (`simulate.engine`'s public names only).

* `simulate.experiments.probe`: position probes in frozen random transformers, with and
  without positional embeddings (``python -m simulate probe``; docs/probe.md);
* `simulate.experiments.train`: a byte-level NoPE language model and a learned-position
  twin, trained, then measured (``python -m simulate train``; docs/training.md).
"""
