"""theory: the NoPE transformer and its mathematics (sympy, scipy; never torch).

>>> from theory import ModelSpec, derive
>>> d = derive(ModelSpec(d_model=64, n_heads=4))
>>> d["blocks.0.attn.hook_pattern"].best.level.value
'approximate'
"""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _installed_version

from . import depth, taps
from ._domain import check_domain
from ._facade import latex
from ._latex.notation import Notation
from ._result import Level, StepResult, StepText
from ._spec_schedule import AttnTemperature
from .derive import Derivation, Step, derive, predict
from .information import position_information
from .laws import Law, law
from .spec import ModelSpec

try:  # one version for the three packages: the installed distribution's
    __version__ = _installed_version("nope-theory")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "ModelSpec", "Level", "StepResult", "Step", "Derivation", "derive", "predict", "law", "Law", "taps", "latex",
    "depth", "position_information", "check_domain", "Notation", "StepText", "AttnTemperature",
]
