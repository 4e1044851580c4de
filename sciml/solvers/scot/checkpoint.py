r"""Load the released Poseidon checkpoints (Hugging Face layout) into :class:`~sciml.solvers.scot.model.ScOT`.

The Poseidon models (Herde et al., "Poseidon: Efficient Foundation Models for PDEs",
NeurIPS 2024; camlab-ethz/poseidon, ``scOT/model.py``) are saved as ``config.json`` +
``model.safetensors`` of a Hugging Face ``Swinv2PreTrainedModel``. Their parameter
names correspond to ours as follows (``ℓ`` a level, ``L`` levels, ``N`` a norm):

=====================================================  ==========================================
Poseidon                                               :class:`ScOT`
=====================================================  ==========================================
``embeddings.patch_embeddings.projection.*``           ``embed.proj.*``
``embeddings.norm.N``                                  ``embed.norm.N``
``encoder.layers.ℓ.blocks.i.*``                        ``encoder.ℓ.blocks.i.*``
``encoder.layers.ℓ.downsample.{reduction,norm}.*``     ``merges.ℓ.{reduction,norm}.*``
``decoder.layers.k.blocks.i.*``                        ``decoder.(L-1-k).blocks.i.*``
``decoder.layers.k.upsample.{upsample,norm,mixup}.*``  ``expands.(L-2-k).{expand,norm,mix}.*``
``residual_blocks.ℓ.j.{dwconv,norm,pwconv1,pwconv2}``  ``skips.ℓ.j.{dwconv,norm,fc1,fc2}``
``residual_blocks.ℓ.j.weight``                         ``skips.ℓ.j.layer_scale``
``patch_recovery.{projection,mixup}.*``                ``recover.{proj,mix}.*``
=====================================================  ==========================================

Inside a block: ``attention.self.{query,key,value,logit_scale}`` →
``attention.{query,key,value,logit_scale}``, ``attention.self.continuous_position_bias_mlp``
→ ``attention.cpb_mlp``, ``attention.output.dense`` → ``attention.proj``,
``layernorm_before`` / ``layernorm_after`` → ``norm_attention`` / ``norm_mlp``,
``intermediate.dense`` / ``output.dense`` → ``fc1`` / ``fc2``. A conditional norm's
``weight`` / ``bias`` (``Linear(1, C)`` each) are our ``gamma`` / ``beta``; a plain
``LayerNorm`` (``use_conditioning: false``) loads as :math:`\gamma \equiv` weight,
:math:`\beta \equiv` bias, independent of t.

Differences that remain: Poseidon Fourier-resamples inputs of another size to
``image_size`` and back, while :class:`ScOT` runs at the input's resolution (feed
``image_size``² fields for identical results); its shifted-window mask adds −200
where ours removes the pair (a difference of order :math:`e^{-200}`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .model import ScOT, ScOTConfig

__all__ = ["config_from_poseidon", "load_poseidon_state_dict", "poseidon_name", "load_poseidon",
           "POSEIDON_FLUID_MEAN", "POSEIDON_FLUID_STD"]

#: Poseidon's fixed normalisation ``(x - mean) / std`` of its fluid data's channels (ρ, u, v, p), with
#: which the released models were pretrained (its ``problems/fluids/normalization_constants.py``).
POSEIDON_FLUID_MEAN = (0.80, 0.0, 0.0, 0.0)
POSEIDON_FLUID_STD = (0.31, 0.391, 0.356, 0.185)

#: Buffers Poseidon recomputes (non-persistent in current transformers, saved by old versions).
_IGNORED = re.compile(r".*\.(relative_coords_table|relative_position_index)$")

_BLOCK = {
    "attention.query": "attention.self.query",
    "attention.key": "attention.self.key",
    "attention.value": "attention.self.value",
    "attention.logit_scale": "attention.self.logit_scale",
    "attention.cpb_mlp": "attention.self.continuous_position_bias_mlp",
    "attention.proj": "attention.output.dense",
    "norm_attention": "layernorm_before",
    "norm_mlp": "layernorm_after",
    "fc1": "intermediate.dense",
    "fc2": "output.dense",
}
_SKIP = {"dwconv": "dwconv", "norm": "norm", "fc1": "pwconv1", "fc2": "pwconv2", "layer_scale": "weight"}
_EXPAND = {"expand": "upsample.upsample", "norm": "upsample.norm", "mix": "upsample.mixup"}
_MERGE = {"reduction": "downsample.reduction", "norm": "downsample.norm"}
_RECOVER = {"proj": "projection", "mix": "mixup"}


def _rename(rest: str, table: Mapping[str, str]) -> str:
    """Replace the longest dotted prefix of ``rest`` found in ``table``."""
    for key in sorted(table, key=len, reverse=True):
        if rest == key or rest.startswith(key + "."):
            return table[key] + rest[len(key):]
    raise KeyError(rest)


def poseidon_name(name: str, num_levels: int) -> str:
    """Poseidon's name of our parameter ``name`` (conditional norms), for a model of ``num_levels`` levels.

    Examples
    --------
    >>> poseidon_name("decoder.3.blocks.1.attention.proj.weight", 4)
    'decoder.layers.0.blocks.1.attention.output.dense.weight'
    >>> poseidon_name("expands.0.norm.gamma.bias", 4)
    'decoder.layers.2.upsample.norm.weight.bias'
    """
    rules: list[tuple[str, Callable[[re.Match], str]]] = [
        (r"embed\.proj\.(.+)", lambda m: f"embeddings.patch_embeddings.projection.{m[1]}"),
        (r"embed\.norm\.(.+)", lambda m: f"embeddings.norm.{m[1]}"),
        (r"encoder\.(\d+)\.blocks\.(\d+)\.(.+)",
         lambda m: f"encoder.layers.{m[1]}.blocks.{m[2]}.{_rename(m[3], _BLOCK)}"),
        (r"merges\.(\d+)\.(.+)", lambda m: f"encoder.layers.{m[1]}.{_rename(m[2], _MERGE)}"),
        (r"decoder\.(\d+)\.blocks\.(\d+)\.(.+)",
         lambda m: f"decoder.layers.{num_levels - 1 - int(m[1])}.blocks.{m[2]}.{_rename(m[3], _BLOCK)}"),
        (r"expands\.(\d+)\.(.+)", lambda m: f"decoder.layers.{num_levels - 2 - int(m[1])}.{_rename(m[2], _EXPAND)}"),
        (r"skips\.(\d+)\.(\d+)\.(.+)", lambda m: f"residual_blocks.{m[1]}.{m[2]}.{_rename(m[3], _SKIP)}"),
        (r"recover\.(.+)", lambda m: f"patch_recovery.{_rename(m[1], _RECOVER)}"),
    ]
    for pattern, build in rules:
        match = re.fullmatch(pattern, name)
        if match:
            their = re.sub(r"\.gamma\.(weight|bias)$", r".weight.\1", build(match))
            return re.sub(r"\.beta\.(weight|bias)$", r".bias.\1", their)
    raise KeyError(f"no Poseidon counterpart for parameter {name!r}")


def _lookup(their: str, state_dict: Mapping[str, Tensor], shape: torch.Size) -> tuple[str, Tensor]:
    """The source of one parameter: ``(Poseidon name, tensor)``.

    A conditional-norm key ``X.{weight,bias}.{weight,bias}`` missing from a checkpoint
    with a plain ``LayerNorm`` ``X.{weight,bias}`` takes the plain value as its
    intercept (``….bias``) and zero as its t-slope (``….weight``, source ``"<zero>"``).
    """
    if their in state_dict:
        value = state_dict[their]
    else:
        match = re.fullmatch(r"(.+)\.(weight|bias)\.(weight|bias)", their)
        plain = f"{match[1]}.{match[2]}" if match else None
        if plain not in state_dict:
            raise KeyError(f"Poseidon state dict has no {their!r}")
        if match[3] == "weight":
            return "<zero>", torch.zeros(shape)
        their, value = plain, state_dict[plain]
    if tuple(value.shape) != tuple(shape):
        raise ValueError(f"{their!r} has shape {tuple(value.shape)}, expected {tuple(shape)}")
    return their, value


def load_poseidon_state_dict(model: ScOT, state_dict: Mapping[str, Tensor]) -> dict[str, str]:
    """Copy a Poseidon state dict into ``model``, strictly: every entry is matched and checked before
    any parameter changes, so a refused state dict leaves ``model`` as it was.

    Parameters
    ----------
    model : ScOT
        Built with the matching configuration (:func:`config_from_poseidon`).
    state_dict : mapping of str to Tensor
        Poseidon's parameters (e.g. ``safetensors.torch.load_file("model.safetensors")``).

    Returns
    -------
    dict
        Our parameter name → the Poseidon name it was set from (``"<zero>"`` for the
        t-slopes of plain layer norms).

    Raises
    ------
    KeyError
        A parameter of ours has no source, or the state dict has entries we do not use.
    ValueError
        A shape differs.
    """
    levels = model.config.num_levels
    sources: dict[str, str] = {}
    values = {}
    for name, param in model.named_parameters():
        try:
            sources[name], values[name] = _lookup(poseidon_name(name, levels), state_dict, param.shape)
        except (KeyError, ValueError) as err:
            raise type(err)(f"loading {name!r}: {err.args[0]}") from None
    used = set(sources.values())
    unused = sorted(k for k in state_dict if k not in used and not _IGNORED.fullmatch(k))
    if unused:
        raise KeyError(f"{len(unused)} Poseidon entries have no counterpart, e.g. {unused[:5]}")
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(values[name])
    return sources


def config_from_poseidon(config: Mapping[str, Any]) -> ScOTConfig:
    """Our configuration for a Poseidon ``config.json`` (as a dict).

    Settings :class:`ScOT` does not implement (absolute position embeddings, a ResNet
    skip model, learning the residual, no q/v bias, an activation other than GELU,
    non-square images) raise ``ValueError``; Hugging Face's generic keys are ignored.

    Examples
    --------
    >>> cfg = config_from_poseidon({"image_size": 128, "patch_size": 4, "num_channels": 4,
    ...     "num_out_channels": 4, "embed_dim": 48, "depths": [4, 4, 4, 4],
    ...     "num_heads": [3, 6, 12, 24], "skip_connections": [2, 2, 2, 0], "window_size": 16})
    >>> cfg == ScOTConfig.preset("T")
    True
    """
    c = dict(config)
    unsupported = {
        "use_absolute_embeddings": (False, c.get("use_absolute_embeddings", False)),
        "residual_model": ("convnext", c.get("residual_model", "convnext")),
        "learn_residual": (False, bool(c.get("learn_residual", False)) and bool(c.get("use_conditioning", False))),
        "qkv_bias": (True, c.get("qkv_bias", True)),
        "hidden_act": ("gelu", c.get("hidden_act", "gelu")),
    }
    for key, (expected, got) in unsupported.items():
        if got != expected:
            raise ValueError(f"Poseidon config: {key}={got!r} is not supported (expected {expected!r})")
    image, patch = c.get("image_size", 224), c.get("patch_size", 4)
    for key, value in (("image_size", image), ("patch_size", patch)):
        if isinstance(value, (list, tuple)) and len(set(value)) != 1:
            raise ValueError(f"Poseidon config: non-square {key}={value!r} is not supported")
    image = image[0] if isinstance(image, (list, tuple)) else image
    patch = patch[0] if isinstance(patch, (list, tuple)) else patch
    depths = tuple(int(d) for d in c.get("depths", (2, 2, 6, 2)))
    skips = [int(s) for s in c.get("skip_connections", (True, True, True))]  # bools mean 1 block
    skips = tuple(skips + [0] * (len(depths) - len(skips)))
    return ScOTConfig(
        image_size=int(image), patch_size=int(patch), in_channels=int(c.get("num_channels", 3)),
        out_channels=int(c.get("num_out_channels", 1)), embed_dim=int(c.get("embed_dim", 96)), depths=depths,
        num_heads=tuple(int(h) for h in c.get("num_heads", (3, 6, 12, 24))), window_size=int(c.get("window_size", 7)),
        mlp_ratio=float(c.get("mlp_ratio", 4.0)), skip_connections=skips,
        layer_norm_eps=float(c.get("layer_norm_eps", 1e-5)), init_std=float(c.get("initializer_range", 0.02)),
    )


def load_poseidon(directory: str | Path, map_location: str | torch.device = "cpu") -> ScOT:
    """Build a :class:`ScOT` from a Poseidon checkpoint folder (``config.json`` + ``model.safetensors``).

    Parameters
    ----------
    directory : path
        E.g. a local copy of ``camlab-ethz/Poseidon-T``.
    map_location : device
    """
    from safetensors.torch import load_file

    directory = Path(directory)
    for required in ("config.json", "model.safetensors"):
        if not (directory / required).is_file():
            raise FileNotFoundError(f"expected a Poseidon checkpoint folder with {required}, not found in {directory}")
    config = config_from_poseidon(json.loads((directory / "config.json").read_text()))
    model = ScOT(config).to(map_location)
    load_poseidon_state_dict(model, load_file(directory / "model.safetensors", device=str(map_location)))
    return model
