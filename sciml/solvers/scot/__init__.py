r"""Poseidon-style scalable operator transformer (scOT).

Herde et al., "Poseidon: Efficient Foundation Models for PDEs", NeurIPS 2024.

* :mod:`~sciml.solvers.scot.layers`: the time-conditioned layer norm, SwinV2 window
  attention and blocks, patch embedding / merging / expanding / recovery, ConvNeXt;
* :mod:`~sciml.solvers.scot.model`: :class:`ScOT`, fields ``(B, C_in, H, W)`` and lead
  times ``(B,)`` → fields ``(B, C_out, H, W)``, its :class:`ScOTConfig` and presets;
* :mod:`~sciml.solvers.scot.checkpoint`: loading the released Poseidon checkpoints
  (Hugging Face layout) into :class:`ScOT`.
"""

from .checkpoint import config_from_poseidon, load_poseidon, load_poseidon_state_dict, poseidon_name
from .layers import (
    ConvNeXtBlock,
    PatchEmbed,
    PatchExpand,
    PatchMerge,
    PatchRecover,
    SwinV2Block,
    SwinV2Stage,
    TimeLayerNorm,
    WindowAttention,
    cyclic_shift,
    relative_coordinates,
    shifted_window_mask,
    window_partition,
    window_reverse,
)
from .model import PRESETS, ParameterGroups, ScOT, ScOTConfig, parameter_count

__all__ = [
    "TimeLayerNorm",
    "WindowAttention",
    "SwinV2Block",
    "SwinV2Stage",
    "PatchEmbed",
    "PatchMerge",
    "PatchExpand",
    "PatchRecover",
    "ConvNeXtBlock",
    "cyclic_shift",
    "window_partition",
    "window_reverse",
    "shifted_window_mask",
    "relative_coordinates",
    "ScOT",
    "ScOTConfig",
    "ParameterGroups",
    "PRESETS",
    "parameter_count",
    "config_from_poseidon",
    "load_poseidon_state_dict",
    "load_poseidon",
    "poseidon_name",
]
