"""The kernel maps of the depth recursion, one per sublayer kind of `theory.block`.

``DEPTH_MAPS[kind]`` maps the block's kernels (`_state.Stream`) through one declared
sublayer; `theory.depth.predict` walks the declared block with them, and a test holds
the registry's keys equal to `theory.block.KINDS` (and to simulate's forward registry).

=========  ==============================  ===========================================
kind       map                             layer-1 step / forward function
=========  ==============================  ===========================================
layernorm  `layernorm.layernorm`           `theory.steps.layernorm` / simulate's ``layernorm``
attention  `attention.attention`           `theory.steps.attention` / simulate's ``attention``
mlp        `mlp.mlp`                       (this map) / simulate's ``mlp``
residual   `residual.residual`             `theory.steps.residual` / simulate's ``residual``
=========  ==============================  ===========================================
"""

from __future__ import annotations

from .attention import attention, softmax_rows
from .layernorm import layernorm
from .mlp import mlp
from .residual import entry, residual

DEPTH_MAPS = {"layernorm": layernorm, "attention": attention, "mlp": mlp, "residual": residual}

__all__ = ["DEPTH_MAPS", "entry", "softmax_rows", "layernorm", "attention", "mlp", "residual"]
