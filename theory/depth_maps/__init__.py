"""The kernel maps of the depth recursion, one per sublayer kind of `theory.block`.

``DEPTH_MAPS[kind]`` maps the block's kernels (`_state.Stream`) through one declared
sublayer; `theory.depth.predict` walks the declared block with them, and a test holds
the registry's keys equal to `theory.block.KINDS` (and to simulate's forward registry).

=========  ==============================  ===========================================
kind       map                             first-layer step / forward function
=========  ==============================  ===========================================
layernorm  `layernorm.layernorm`           `theory.steps.layernorm` / simulate's ``layernorm``
rmsnorm    `rmsnorm.rmsnorm`               (this map) / simulate's ``rmsnorm``
attention  `attention.attention`           `theory.steps.attention` / simulate's ``attention``
mlp        `mlp.mlp`                       (this map) / simulate's ``mlp``
swiglu     `swiglu.swiglu`                 (this map) / simulate's ``swiglu``
residual   `residual.residual`             `theory.steps.residual` / simulate's ``residual``
=========  ==============================  ===========================================
"""

from __future__ import annotations

from .attention import attention as _nope_attention, softmax_rows
from .layernorm import layernorm
from .mlp import mlp
from .modern_attention import attention_of_layer
from .residual import entry, residual
from .rmsnorm import rmsnorm
from .swiglu import swiglu

# attention: the NoPE map, or `modern_attention` for RMSNorm, QK-norm, RoPE, ALiBi, temperature (issue 16)
attention = attention_of_layer(_nope_attention)

DEPTH_MAPS = {"layernorm": layernorm, "rmsnorm": rmsnorm, "attention": attention, "mlp": mlp,
              "swiglu": swiglu, "residual": residual}

__all__ = ["DEPTH_MAPS", "entry", "softmax_rows", "layernorm", "rmsnorm", "attention", "mlp", "swiglu", "residual"]
