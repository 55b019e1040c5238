"""Training a byte-level NoPE model and a learned-position twin, then measuring them
(``python -m simulate train``; docs/training.md).

* `model`: `NoPETransformer`, the trainable ``nn.Module`` whose math is the engine's
  forward, built from the one block declaration (`theory.block`);
* `corpus`: the text, stripped and split;
* `training`: the configuration, the optimiser, the training loop;
* `files`: ``init.pt``, ``checkpoint.pt`` and ``run.json``, read safely;
* `evaluation`: held-out bits/byte and the loss per context position, errors over documents;
* `baselines`: Kneser-Ney byte n-grams and the standard library's compressors;
* `clustered`: standard errors clustered by held-out document (CR1, jackknife);
* `measure`: variance against position, trained against init and along training
  (`simulate.record.record_sequences`); `beyond`: past the training length;
* `seeds`: the spread over seeds at one step;
* `cli`: the command line.
"""

from .corpus import Corpus, CorpusError, load_corpus
from .files import load_model, read_checkpoint, read_run_json
from .measure import fit_positions, measure_run, slope
from .model import NoPETransformer, parameter_count
from .training import POSITIONALS, PRESETS, TrainConfig, evaluate, final_evaluation, train_model, windows

__all__ = [
    "NoPETransformer", "parameter_count", "TrainConfig", "PRESETS", "POSITIONALS", "train_model", "final_evaluation",
    "evaluate", "windows", "load_model", "read_checkpoint", "read_run_json", "Corpus", "CorpusError", "load_corpus",
    "measure_run", "fit_positions", "slope",
]
